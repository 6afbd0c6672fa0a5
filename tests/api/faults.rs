//! Database faults, made from the test against real databases: while a fault lasts every answer
//! that needs a write is a 503 envelope (never a 500), readiness says 503, and afterwards the
//! same server serves again by itself, with every acknowledged event delivered.
//!
//! PostgreSQL faults are made on the test's own database (ALTER DATABASE, terminated sessions);
//! the cluster restart runs on a private throwaway cluster, never the shared one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

use crate::common::{Backend, DELIVERY_VARS, TestDb, TestServer, assert_error, enc};
use crate::receiver::{Answer, Receiver};

/// Longest wait for the service to serve again, or for deliveries to arrive.
const HEAL: Duration = Duration::from_secs(60);

/// A server with one callback for BUILD_END to a receiver, and the event ids it acknowledged.
struct Fixture {
    server: TestServer,
    receiver: Receiver,
    acked: Vec<String>,
    created: usize,
}

impl Fixture {
    async fn start(db: &TestDb) -> Self {
        let receiver = Receiver::start().await;
        let server = TestServer::start_with(db, DELIVERY_VARS).await;
        server.set_member("demo", "alice", "admin").await;
        server
            .register("demo", "alice", "BUILD_END", &receiver.url("/hook"), None)
            .await;
        Self {
            server,
            receiver,
            acked: Vec::new(),
            created: 0,
        }
    }

    /// Publishes one event; its id counts as acknowledged when the answer is 200.
    async fn publish(&mut self) -> (StatusCode, Value) {
        let id = format!("ev-{}", uuid::Uuid::new_v4().simple());
        let answer = self
            .server
            .publish(
                "demo",
                &format!(r#"{{"event":"BUILD_END","data":{{"n":"{id}"}},"eventId":"{id}"}}"#),
            )
            .await;
        if answer.0 == StatusCode::OK {
            assert_eq!(answer.1["data"]["deliveries"], 1, "{}", answer.1);
            self.acked.push(id);
        }
        answer
    }

    /// Registers one more callback (for another event, so publishing does not reach it).
    async fn create(&mut self) -> (StatusCode, Value) {
        self.created += 1;
        let url = self.receiver.url(&format!("/other/{}", self.created));
        self.server
            .create(
                "demo",
                "alice",
                &format!("event=BUILD_START&region=IDC&url={}", enc(&url)),
            )
            .await
    }

    async fn list(&self) -> (StatusCode, Value) {
        self.server.list("demo", "alice", "").await
    }

    async fn ready(&self) -> (StatusCode, Value) {
        self.server.call(Method::GET, "/readyz", &[]).await
    }

    /// During a fault: writes and readiness answer the 503 envelope.
    async fn writes_are_unavailable(&mut self) {
        let unavailable = &["database unavailable"];
        assert_error(&self.create().await, 503, 503, unavailable);
        assert_error(&self.publish().await, 503, 503, unavailable);
        assert_error(&self.ready().await, 503, 503, &["database"]);
        assert_eq!(
            self.server.call(Method::GET, "/healthz", &[]).await.0,
            StatusCode::OK,
            "liveness needs no database"
        );
    }

    /// Every kind of call answers 200 at once.
    async fn serves(&mut self) {
        for (what, (status, body)) in [
            ("create", self.create().await),
            ("publish", self.publish().await),
            ("list", self.list().await),
            ("readyz", self.ready().await),
        ] {
            assert_eq!(status, StatusCode::OK, "{what}: {body}");
        }
    }

    /// After a fault: creates answer 503 until the service has its database back, then 200;
    /// never anything else.
    async fn serves_again(&mut self) {
        let deadline = tokio::time::Instant::now() + HEAL;
        loop {
            let answer = self.create().await;
            if answer.0 == StatusCode::OK {
                break;
            }
            assert_error(&answer, 503, 503, &["database unavailable"]);
            assert!(
                tokio::time::Instant::now() < deadline,
                "still unavailable after {HEAL:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.serves().await;
    }

    /// Every acknowledged event reaches the receiver (at least once).
    async fn nothing_lost(&self) {
        let deadline = tokio::time::Instant::now() + HEAL;
        loop {
            let arrived: HashSet<String> = self
                .receiver
                .received()
                .iter()
                .filter(|r| r.path == "/hook")
                .map(|r| {
                    let body: Value = serde_json::from_slice(&r.body).unwrap();
                    body["data"]["n"].as_str().unwrap().to_owned()
                })
                .collect();
            let missing: Vec<&String> = self
                .acked
                .iter()
                .filter(|id| !arrived.contains(*id))
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {} acknowledged events never arrived, e.g. {}",
                missing.len(),
                self.acked.len(),
                missing[0]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The admin connection to the shared cluster, for faults on the test's own database.
async fn admin(db: &TestDb) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.pg().0)
        .await
        .unwrap()
}

async fn admin_sql(admin: &sqlx::PgPool, sql: &str) {
    sqlx::query(sql).execute(admin).await.unwrap();
}

/// Ends every session of the test database, twice, to catch one opened in between.
async fn terminate_sessions(admin: &sqlx::PgPool, name: &str) {
    for _ in 0..2 {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(name)
        .execute(admin)
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `ALLOW_CONNECTIONS false` and its sessions terminated, as before maintenance. Which pooled
/// connection a request gets is a race, so the round is repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refused_connections_answer_503_then_heal() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut fixture = Fixture::start(&db).await;
    let admin = admin(&db).await;
    let name = db.pg().1.clone();
    for _ in 0..5 {
        fixture.serves().await;
        admin_sql(
            &admin,
            &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
        )
        .await;
        terminate_sessions(&admin, &name).await;
        fixture.writes_are_unavailable().await;
        assert_error(&fixture.list().await, 503, 503, &["database unavailable"]);
        admin_sql(
            &admin,
            &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"),
        )
        .await;
        fixture.serves_again().await;
    }
    fixture.nothing_lost().await;
}

/// Sessions ended under the pool (a pooler restart, an admin): the requests that meet a dead
/// connection are retried on a fresh one, so callers see nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_terminated_sessions_are_retried_on_fresh_connections() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut fixture = Fixture::start(&db).await;
    let admin = admin(&db).await;
    let name = db.pg().1.clone();
    for _ in 0..5 {
        fixture.serves().await;
        terminate_sessions(&admin, &name).await;
        fixture.serves().await;
    }
    fixture.nothing_lost().await;
}

/// A switchover that leaves the sessions on a read-only server: writes answer 503 and readiness
/// fails, reads go on; once writable again the read-only sessions are replaced, not reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_only_switchover_answers_503_then_heals() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut fixture = Fixture::start(&db).await;
    let admin = admin(&db).await;
    let name = db.pg().1.clone();
    for _ in 0..2 {
        fixture.serves().await;
        admin_sql(
            &admin,
            &format!("ALTER DATABASE {name} SET default_transaction_read_only = on"),
        )
        .await;
        terminate_sessions(&admin, &name).await;
        fixture.writes_are_unavailable().await;
        let (status, body) = fixture.list().await;
        assert_eq!(status, StatusCode::OK, "reads are served: {body}");
        // Back to writable, without ending the read-only sessions the pool holds now.
        admin_sql(
            &admin,
            &format!("ALTER DATABASE {name} RESET default_transaction_read_only"),
        )
        .await;
        fixture.serves().await;
    }
    fixture.nothing_lost().await;
}

/// A whole PostgreSQL cluster of the test's own, in a temporary directory, run as the
/// `postgres` OS user on a free port; stopped and removed when dropped (a panic included).
struct PrivateCluster {
    dir: TempDir,
    port: u16,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl PrivateCluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        run("chown", &["-R", "postgres:", path_str(dir.path())]);
        let data = dir.path().join("data");
        as_postgres(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self { dir, port };
        cluster.pg_ctl_start();
        cluster
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            path_str(self.dir.path())
        );
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("log");
        as_postgres(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    fn stop(&self, mode: &str) {
        let data = self.dir.path().join("data");
        as_postgres("pg_ctl", &["-D", path_str(&data), "-m", mode, "-w", "stop"]);
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Path::new(PG_BIN).join("pg_ctl"))
            .args(["-D", path_str(&data), "-m", "immediate", "stop"])
            .output();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

fn as_postgres(program: &str, args: &[&str]) {
    let program = Path::new(PG_BIN).join(program);
    let mut all = vec!["-u", "postgres", "--", path_str(&program)];
    all.extend(args);
    run("runuser", &all);
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} could not be run: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The cluster stopped and started again while deliveries are in flight: 503 while it is down,
/// serving again after, and every acknowledged event delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cluster_restart_mid_delivery_loses_nothing() {
    let cluster = tokio::task::spawn_blocking(PrivateCluster::start)
        .await
        .unwrap();
    let db = TestDb::external(Backend::Postgres, cluster.url());
    let mut fixture = Fixture::start(&db).await;
    // Slow answers keep attempts in flight when the cluster goes.
    fixture
        .receiver
        .answer_by_default(Answer::Slow(Duration::from_millis(200)));
    for _ in 0..20 {
        let (status, body) = fixture.publish().await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    tokio::task::block_in_place(|| cluster.stop("fast"));
    fixture.writes_are_unavailable().await;
    tokio::task::block_in_place(|| cluster.pg_ctl_start());
    fixture.serves_again().await;
    fixture.nothing_lost().await;
    fixture.server.stop().await;
}

/// Makes the SQLite database and its WAL immutable, the one read-only that binds root too;
/// undone when dropped. (Not the shared-memory index: SQLite maps it, and a write to a mapped
/// page the file system refuses is a SIGBUS, not an error.)
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(database: &Path) -> Self {
        let files: Vec<PathBuf> = ["", "-wal"]
            .iter()
            .map(|suffix| PathBuf::from(format!("{}{suffix}", database.display())))
            .filter(|path| path.exists())
            .collect();
        let mut args = vec!["+i"];
        args.extend(files.iter().map(|f| path_str(f)));
        run("chattr", &args);
        Self(files)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.0).output();
    }
}

fn sqlite_file(db: &TestDb) -> PathBuf {
    PathBuf::from(db.url.strip_prefix("sqlite://").expect("a SQLite URL"))
}

/// The database file made read-only under a running server: 503 and not ready; writable again:
/// the read-only connections are replaced and it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_read_only_file_answers_503_then_serves() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut fixture = Fixture::start(&db).await;
    for _ in 0..2 {
        fixture.serves().await;
        let read_only = Immutable::set(&sqlite_file(&db));
        fixture.writes_are_unavailable().await;
        drop(read_only);
        fixture.serves_again().await;
    }
    fixture.nothing_lost().await;
}

/// Another process holding the write lock past the busy timeout: 503, then served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_busy_beyond_the_busy_timeout_answers_503() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut fixture = Fixture::start(&db).await;
    fixture.serves().await;
    let mut other = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    assert_error(&fixture.create().await, 503, 503, &["database unavailable"]);
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    fixture.serves_again().await;
    fixture.nothing_lost().await;
}
