//! The harness: a fresh database per test (a SQLite file or a PostgreSQL database), the real
//! server on 127.0.0.1:0, and a client that checks every answer is the JSON envelope.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use devops_callbacks::auth::gateway::GatewayVerifier;
use devops_callbacks::config::Config;
use devops_callbacks::{AppState, store};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub const SERVICE_TOKEN: &str = "test-service-token";
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn name(backend: Backend)` once per backend.
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )+
        }
    };
}
pub(crate) use backend_tests;

/// A database that exists only for one test.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    _dir: Option<TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("callbacks.db").display());
                Self {
                    backend,
                    url,
                    _dir: Some(dir),
                    pg: None,
                }
            }
            Backend::Postgres => {
                let admin_url = std::env::var("TEST_DATABASE_URL")
                    .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned());
                let name = format!("dc_test_{}", uuid::Uuid::new_v4().simple());
                let admin = sqlx::PgPool::connect(&admin_url).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL at {admin_url} is unreachable ({e}); start it or set \
                         TEST_DATABASE_URL to a server where this role may CREATE DATABASE"
                    )
                });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&admin)
                    .await
                    .expect("CREATE DATABASE for the test");
                admin.close().await;
                let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
                url.set_path(&format!("/{name}"));
                Self {
                    backend,
                    url: url.to_string(),
                    _dir: None,
                    pg: Some((admin_url, name)),
                }
            }
        }
    }

    /// A database the test made itself (a private cluster's); left as it is when dropped.
    pub fn external(backend: Backend, url: String) -> Self {
        Self {
            backend,
            url,
            _dir: None,
            pg: None,
        }
    }

    /// Runs raw SQL against the test database, for set-ups the API cannot make.
    pub async fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
                sqlx::query(sql).execute(&pool).await.unwrap();
                pool.close().await;
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                sqlx::query(sql).execute(&pool).await.unwrap();
                pool.close().await;
            }
        }
    }

    /// One integer from raw SQL against the test database (counts, states).
    pub async fn scalar(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
                let value = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                value
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                let value = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                value
            }
        }
    }

    /// The PostgreSQL admin URL and database name (PostgreSQL only).
    pub fn pg(&self) -> &(String, String) {
        self.pg.as_ref().expect("a PostgreSQL test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.pg.take() else {
            return;
        };
        // Drop runs inside the test's runtime, so the clean-up gets a thread and runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// The real server, in this process, on an ephemeral port.
pub struct TestServer {
    pub addr: SocketAddr,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Settings every test server gets unless the test overrides them.
fn base_vars(db: &TestDb) -> HashMap<String, String> {
    HashMap::from([
        ("DATABASE_URL".to_owned(), db.url.clone()),
        ("SERVICE_TOKEN".to_owned(), SERVICE_TOKEN.to_owned()),
        ("DATABASE_MAX_CONNECTIONS".to_owned(), "5".to_owned()),
    ])
}

impl TestServer {
    pub async fn start(db: &TestDb) -> Self {
        Self::start_with(db, &[]).await
    }

    /// Starts with extra variables; a value of "" unsets one of the defaults.
    pub async fn start_with(db: &TestDb, vars: &[(&str, &str)]) -> Self {
        let mut all = base_vars(db);
        for (name, value) in vars {
            all.insert((*name).to_owned(), (*value).to_owned());
        }
        let config = Config::from_map(&all).expect("test config");
        let gateway = GatewayVerifier::from_config(&config).expect("test gateway key");
        let store = store::open(&config)
            .await
            .expect("open and migrate the test database");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(devops_callbacks::serve(
            AppState::new(config, store, gateway).expect("test state"),
            listener,
            async {
                let _ = rx.await;
            },
        ));
        Self {
            addr,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Graceful stop; returns once the server has let go of the listener.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request and returns the status and the parsed envelope, asserting its shape.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request reaches the server");
        envelope_of(response).await
    }

    /// POSTs a raw body to a service route with the service token.
    pub async fn service_post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(path))
            .header("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request reaches the server");
        envelope_of(response).await
    }

    /// Publishes one event of `project` through the intake API.
    pub async fn publish(&self, project: &str, body: &str) -> (StatusCode, Value) {
        self.service_post(
            &format!("/service/callbacks/projects/{project}/events"),
            body,
        )
        .await
    }

    /// Registers a callback as the project's admin (who must exist).
    pub async fn register(
        &self,
        project: &str,
        admin: &str,
        event: &str,
        url: &str,
        token: Option<&str>,
    ) {
        let mut query = format!("event={event}&region=IDC&url={}", enc(url));
        if let Some(token) = token {
            query.push_str(&format!("&secretToken={}", enc(token)));
        }
        let (status, body) = self.create(project, admin, &query).await;
        assert_eq!(status, StatusCode::OK, "register {url}: {body}");
    }

    /// A call on the v4 resource as `user` (no header when `None`).
    pub async fn v4(
        &self,
        method: Method,
        project: &str,
        tail: &str,
        user: Option<&str>,
    ) -> (StatusCode, Value) {
        let path = format!("/apigw-user/v4/projects/{project}/callbacks{tail}");
        match user {
            Some(user) => self.call(method, &path, &[("X-DEVOPS-UID", user)]).await,
            None => self.call(method, &path, &[]).await,
        }
    }

    pub async fn create(&self, project: &str, user: &str, query: &str) -> (StatusCode, Value) {
        self.v4(Method::POST, project, &format!("?{query}"), Some(user))
            .await
    }

    /// The project's history as `user`, always with an explicit window around now (the default
    /// window is "today" in `TIME_ZONE`, which misses rows written just before midnight).
    /// A query that names its own window is sent as it is.
    pub async fn history(&self, project: &str, user: &str, query: &str) -> (StatusCode, Value) {
        let query = if query.contains("startTime=") || query.contains("endTime=") {
            query.to_owned()
        } else {
            format!("{}&{query}", history_window())
        };
        self.v4(
            Method::GET,
            project,
            &format!("/callback_history?{query}"),
            Some(user),
        )
        .await
    }

    /// Waits until the project's history (read as `user`) holds at least `n` attempts; returns
    /// them newest first.
    pub async fn wait_for_history(&self, project: &str, user: &str, n: usize) -> Vec<Value> {
        let mut records = Vec::new();
        wait_until(&format!("{n} attempts in history"), WAIT, async || {
            let (status, body) = self.history(project, user, "pageSize=100").await;
            assert_eq!(status, StatusCode::OK, "{body}");
            records = body["data"]["records"].as_array().unwrap().clone();
            records.len() >= n
        })
        .await;
        records
    }

    pub async fn list(&self, project: &str, user: &str, query: &str) -> (StatusCode, Value) {
        self.v4(
            Method::GET,
            project,
            &format!("/callback_list?{query}"),
            Some(user),
        )
        .await
    }

    /// Through the op API, as the service token holder.
    pub async fn set_member(&self, project: &str, user: &str, role: &str) {
        let (status, body) = self
            .call(
                Method::PUT,
                &format!("/op/projects/{project}/members/{user}?role={role}"),
                &[("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN)],
            )
            .await;
        assert_eq!(
            (status, &body),
            (
                StatusCode::OK,
                &serde_json::json!({"status": 0, "data": true})
            )
        );
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Status and body of a response that must be the envelope: JSON, with an integer `status`.
pub async fn envelope_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{status} answered {content_type:?}: {text}"
    );
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert!(body["status"].is_i64(), "no integer status in {text}");
    if status.is_success() {
        assert_eq!(body["status"], 0, "{text}");
    } else {
        assert_ne!(body["status"], 0, "{text}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message in {text}"
        );
    }
    (status, body)
}

/// Asserts an error envelope: HTTP status, `status` code, and words the message must contain.
#[track_caller]
pub fn assert_error(answer: &(StatusCode, Value), http: u16, code: i64, words: &[&str]) {
    let (status, body) = answer;
    assert_eq!(status.as_u16(), http, "{body}");
    assert_eq!(body["status"], code, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    for word in words {
        assert!(message.contains(word), "message {message:?} lacks {word:?}");
    }
}

/// Settings for delivery tests: loopback receivers allowed, quick retries and polls.
pub const DELIVERY_VARS: &[(&str, &str)] = &[
    ("CALLBACK_ALLOWED_CIDRS", "127.0.0.0/8,::1/128"),
    ("DELIVERY_RETRY_SCHEDULE", "300ms,300ms"),
    ("DELIVERY_POLL_MS", "100"),
    ("DELIVERY_TIMEOUT_MS", "2000"),
    ("DELIVERY_LEASE_SECS", "5"),
];

/// A server with `DELIVERY_VARS` and `extra` over them, where alice is an admin of `demo`.
pub async fn start_delivering(db: &TestDb, extra: &[(&str, &str)]) -> TestServer {
    let vars: Vec<(&str, &str)> = DELIVERY_VARS.iter().chain(extra).copied().collect();
    let server = TestServer::start_with(db, &vars).await;
    server.set_member("demo", "alice", "admin").await;
    server
}

/// A certificate authority made for one test, and a receiver certificate it signed for
/// `127.0.0.1` and `localhost`: a private receiver's TLS, unknown to the default roots.
pub struct TestCa {
    /// The CA's certificate as PEM: what `DELIVERY_CA_FILE` names.
    pub ca_file: tempfile::NamedTempFile,
    /// The receiver's certificate followed by the CA's, and the receiver's key.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "devops-callbacks test CA");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let mut ca_file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut ca_file, ca.pem().as_bytes()).unwrap();
        Self {
            ca_file,
            chain: vec![leaf.der().clone(), ca.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }

    pub fn ca_path(&self) -> &str {
        self.ca_file.path().to_str().unwrap()
    }
}

/// A URL the SSRF guard accepts without a DNS lookup (a public address literal).
pub fn public_url(path: &str) -> String {
    format!("http://93.184.215.14/{path}")
}

pub fn enc(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// How long a test waits for something that should happen "soon" before it fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// Polls `condition` until it holds, failing the test after `limit`.
pub async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, limit: Duration, mut condition: F) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `startTime=…&endTime=…` from two days ago to two days ahead, in the default `TIME_ZONE`.
pub fn history_window() -> String {
    window_in(chrono_tz::Asia::Shanghai, chrono::Duration::days(2))
}

/// `startTime=…&endTime=…` for now ± `around`, written in `zone`.
pub fn window_in(zone: chrono_tz::Tz, around: chrono::Duration) -> String {
    let now = chrono::Utc::now().with_timezone(&zone);
    let format =
        |at: chrono::DateTime<chrono_tz::Tz>| enc(&at.format("%Y-%m-%d %H:%M:%S").to_string());
    format!(
        "startTime={}&endTime={}",
        format(now - around),
        format(now + around)
    )
}

/// A command for a child process: a cleared environment (only `PATH`, so a developer's
/// variables do not leak in) and an empty working directory (so no `.env` is read).
pub fn child_command(program: &str) -> tokio::process::Command {
    static EMPTY: OnceLock<TempDir> = OnceLock::new();
    let empty = EMPTY.get_or_init(|| tempfile::tempdir().expect("an empty directory"));
    let mut command = tokio::process::Command::new(program);
    command.env_clear().current_dir(empty.path());
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
}

/// The service binary as a child command (see `child_command`).
pub fn binary_command() -> tokio::process::Command {
    child_command(env!("CARGO_BIN_EXE_devops-callbacks"))
}

/// The `host:port` a server child logged it listens on ("listening addr=…"), once it has.
pub fn listening_addr(log: &str) -> Option<SocketAddr> {
    strip_ansi(log)
        .lines()
        .filter(|line| line.contains("listening"))
        .find_map(|line| {
            // Text (`addr=…`) or JSON (`"addr":"…"`) logs.
            let (_, tail) = line
                .split_once("addr=")
                .or_else(|| line.split_once(r#""addr":""#))?;
            tail.split(|c: char| c == '"' || c.is_whitespace())
                .find(|part| !part.is_empty())?
                .parse()
                .ok()
        })
}

/// The text without ANSI colour sequences (`ESC [ … m`), as the text log may carry them.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs the binary with `args` against `db`, with `vars` over a cleared environment; fails the
/// test if it does not end within 30 s.
pub async fn cli(db: &TestDb, vars: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut command = binary_command();
    command
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .kill_on_drop(true);
    for (name, value) in vars {
        command.env(name, value);
    }
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the command ends by itself")
        .expect("run the devops-callbacks binary")
}

/// The value of request header `name` in a history record; fails the test when it is absent.
#[track_caller]
pub fn header_value<'a>(record: &'a Value, name: &str) -> &'a str {
    record["requestHeaders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .and_then(|h| h["value"].as_str())
        .unwrap_or_else(|| panic!("history row without {name}: {record}"))
}
