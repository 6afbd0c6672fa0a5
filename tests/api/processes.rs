//! The service as separate processes: killed with SIGKILL mid-delivery and restarted, and two
//! processes sharing one PostgreSQL. Every event must reach the receiver.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::common::{
    Backend, SERVICE_TOKEN, TestDb, WAIT, backend_tests, binary_command, envelope_of,
    listening_addr, wait_until,
};
use crate::receiver::{Answer, Receiver};

backend_tests!(
    a_killed_server_loses_nothing_after_restart,
    sigterm_under_load_loses_nothing
);

const EVENTS: usize = 2000;

/// The service binary as a child process on a free port, its stderr (the log) in a file.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub base: String,
    pub log: std::path::PathBuf,
}

impl ServerProcess {
    /// Starts `devops-callbacks serve` on `db` (loopback callbacks allowed) with `vars` over the
    /// defaults and waits until it is ready.
    pub async fn start(
        db: &TestDb,
        log_dir: &std::path::Path,
        name: &str,
        vars: &[(&str, &str)],
    ) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let mut command = binary_command();
        command
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            // The child binds a free port itself and logs it: no probe-then-release race.
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("SERVICE_TOKEN", SERVICE_TOKEN)
            .env("CALLBACK_ALLOWED_CIDRS", "127.0.0.0/8,::1/128")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        for (name, value) in vars {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start the server binary");
        let mut addr = None;
        wait_until("the server to log its address", WAIT, async || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the server exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            addr = listening_addr(&std::fs::read_to_string(&log).unwrap_or_default());
            addr.is_some()
        })
        .await;
        let server = Self {
            child,
            base: format!("http://{}", addr.expect("an address")),
            log,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        wait_until("the server to be ready", WAIT, async || {
            client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success())
        })
        .await;
    }

    /// Sends as alice with the service token; a body is sent as JSON.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .header("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN)
            .header("X-DEVOPS-UID", "alice");
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        envelope_of(request.send().await.unwrap()).await
    }

    /// POSTs `body`, or PUTs without one; the answer must be a success.
    pub async fn post(&self, path: &str, body: Option<String>) -> serde_json::Value {
        let method = if body.is_some() {
            reqwest::Method::POST
        } else {
            reqwest::Method::PUT
        };
        let (status, body) = self.send(method, path, body).await;
        assert!(status.is_success(), "{path}: {body}");
        body
    }

    /// Makes alice admin of demo and registers one BUILD_TASK_END callback to `url`.
    pub async fn register(&self, url: &str) {
        self.register_event("BUILD_TASK_END", url).await;
    }

    /// Makes alice admin of demo and registers one callback of `event` to `url`.
    pub async fn register_event(&self, event: &str, url: &str) {
        self.post("/op/projects/demo/members/alice?role=admin", None)
            .await;
        let query = format!("event={event}&region=IDC&url={}", crate::common::enc(url));
        self.post(
            &format!("/apigw-user/v4/projects/demo/callbacks?{query}"),
            Some(String::new()),
        )
        .await;
    }

    /// Publishes `count` events in batches of 500 and checks every one was accepted.
    pub async fn publish(&self, first: usize, count: usize) {
        for start in (first..first + count).step_by(500) {
            let end = (start + 500).min(first + count);
            let batch: Vec<_> = (start..end)
                .map(|i| json!({"projectId": "demo", "event": "BUILD_TASK_END", "data": {"i": i}, "eventId": format!("e{i}")}))
                .collect();
            let body = self
                .post(
                    "/service/callbacks/events:batch",
                    Some(json!(batch).to_string()),
                )
                .await;
            let answers = body["data"].as_array().unwrap();
            assert_eq!(answers.len(), end - start);
            assert!(answers.iter().all(|a| a["deliveries"] == 1), "{body}");
        }
    }
}

/// Waits until the receiver has seen every delivery at least once.
async fn wait_for_all(receiver: &Receiver, limit: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (distinct, duplicates) = receiver.distinct_and_duplicates();
        if distinct >= EVENTS {
            return duplicates;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {distinct} of {EVENTS} deliveries arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_killed_server_loses_nothing_after_restart(backend: Backend) {
    let db = TestDb::new(backend).await;
    let logs = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    // Slow enough that the kill lands mid-delivery.
    receiver.answer_by_default(Answer::Slow(Duration::from_millis(40)));
    let vars = [
        ("DELIVERY_CONCURRENCY", "16"),
        ("DELIVERY_TIMEOUT_MS", "1000"),
        ("DELIVERY_LEASE_SECS", "3"),
        ("DELIVERY_RETRY_SCHEDULE", "200ms"),
        ("DELIVERY_POLL_MS", "200"),
    ];
    let mut first = ServerProcess::start(&db, logs.path(), "first", &vars).await;
    first.register(&receiver.url("/crash")).await;
    first.publish(0, EVENTS).await;
    receiver.wait_for(300, Duration::from_secs(30)).await;
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    let at_kill = receiver.distinct_and_duplicates().0;
    assert!(
        at_kill < EVENTS,
        "the kill came too late to test anything ({at_kill} delivered)"
    );

    let second = ServerProcess::start(&db, logs.path(), "second", &vars).await;
    let duplicates = wait_for_all(&receiver, Duration::from_secs(90)).await;
    eprintln!(
        "[{backend:?}] killed after {at_kill} of {EVENTS} deliveries; all {EVENTS} arrived, {duplicates} duplicate(s)"
    );
    // In flight at the kill were at most DELIVERY_CONCURRENCY attempts plus an unrecorded batch.
    assert!(duplicates <= 64, "{duplicates} duplicates");
    drop(second);
}

/// Two processes on one PostgreSQL share the work without loss or double sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_postgres() {
    let db = TestDb::new(Backend::Postgres).await;
    let logs = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Answer::Slow(Duration::from_millis(5)));
    let vars = [("DELIVERY_CONCURRENCY", "16")];
    let one = ServerProcess::start(&db, logs.path(), "one", &vars).await;
    let two = ServerProcess::start(&db, logs.path(), "two", &vars).await;
    one.register(&receiver.url("/shared")).await;
    let (a, b) = tokio::join!(
        one.publish(0, EVENTS / 2),
        two.publish(EVENTS / 2, EVENTS / 2)
    );
    let ((), ()) = (a, b);
    let duplicates = wait_for_all(&receiver, Duration::from_secs(60)).await;
    eprintln!("two processes delivered all {EVENTS} events with {duplicates} duplicate(s)");
    assert_eq!(
        duplicates, 0,
        "no delivery is sent twice while its lease holds"
    );
}

/// SIGTERM mid-load: the process stops claiming, lets attempts finish within the grace period,
/// hands back the leases of those it cut off, and exits; a new process delivers the rest at once.
async fn sigterm_under_load_loses_nothing(backend: Backend) {
    const COUNT: usize = 500;
    let db = TestDb::new(backend).await;
    let logs = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    // Slower than the grace period: the attempts in flight at the signal must be cut off.
    receiver.answer_by_default(Answer::Slow(Duration::from_millis(1500)));
    let vars = [
        ("DELIVERY_CONCURRENCY", "32"),
        ("DELIVERY_MAX_IN_FLIGHT_PER_HOST", "32"),
        ("DELIVERY_TIMEOUT_MS", "5000"),
        ("DELIVERY_LEASE_SECS", "60"),
        ("SHUTDOWN_GRACE_SECS", "1"),
    ];
    let mut first = ServerProcess::start(&db, logs.path(), "first", &vars).await;
    first.register(&receiver.url("/drain")).await;
    first.publish(0, COUNT).await;
    receiver.wait_for(32, Duration::from_secs(20)).await;

    let signalled = std::time::Instant::now();
    let pid = first.child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), first.child.wait())
        .await
        .expect("exits")
        .unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "clean exit: {status:?}");
    // The server's own account: it cut off the attempts still running after the grace period and
    // handed their deliveries back (no wall-clock upper bound: the machine may be loaded).
    let log = crate::common::strip_ansi(&std::fs::read_to_string(&first.log).unwrap());
    assert!(
        log.contains("attempts still running after the grace period were stopped")
            && log.contains("handing unfinished deliveries back"),
        "{log}"
    );

    // Nothing stays leased by the stopped process; nothing was lost.
    let leased = db
        .scalar("SELECT COUNT(*) FROM deliveries WHERE lease_until IS NOT NULL")
        .await;
    assert_eq!(leased, 0, "every cut-off delivery was handed back");
    let known = db
        .scalar("SELECT COUNT(*) FROM deliveries WHERE status IN ('SUCCESS', 'PENDING')")
        .await;
    assert_eq!(known, COUNT as i64);

    receiver.answer_by_default(Answer::Status(200));
    let _second = ServerProcess::start(&db, logs.path(), "second", &vars).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while receiver.distinct_and_duplicates().0 < COUNT {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every event arrived after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let success = db
        .scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'SUCCESS'")
        .await;
    eprintln!(
        "[{backend:?}] SIGTERM after {took:?}: all {COUNT} delivered; {success} recorded as SUCCESS so far"
    );
}
