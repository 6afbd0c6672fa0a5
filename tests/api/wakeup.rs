//! The wake-up path, with the backstop poll set to a minute so that only a wake-up can deliver
//! in time: an intake is delivered at once (in process, and from another process through
//! PostgreSQL's LISTEN/NOTIFY), a retry fires at its due time, not at the next poll, and a
//! backlog larger than a host may hold drains through the workers' own wake-ups.
//! Times are compared on the server's own records (event creation, attempt start and end).

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{
    Backend, DELIVERY_VARS, TestDb, TestServer, WAIT, backend_tests, cli, wait_until,
};
use crate::receiver::{Answer, Receiver};

backend_tests!(
    an_intake_is_delivered_at_once_not_at_the_next_poll,
    a_retry_fires_at_its_due_time_not_at_the_next_poll,
    a_backlog_beyond_a_hosts_cap_drains_without_the_poll,
);

/// The backstop poll: far longer than any wait below.
const POLL: (&str, &str) = ("DELIVERY_POLL_MS", "60000");
/// Longest commit-to-attempt time accepted for a wake-up.
const AT_ONCE_MS: i64 = 1000;

async fn start(db: &TestDb, extra: &[(&str, &str)]) -> TestServer {
    let vars: Vec<(&str, &str)> = DELIVERY_VARS
        .iter()
        .copied()
        .chain([POLL])
        .chain(extra.iter().copied())
        .collect();
    let server = TestServer::start_with(db, &vars).await;
    server.set_member("demo", "alice", "admin").await;
    server
}

/// Waits for the `n` attempts and returns them oldest first.
async fn attempts(server: &TestServer, n: usize) -> Vec<Value> {
    let mut records = server.wait_for_history("demo", "alice", n).await;
    records.reverse();
    records
}

/// Milliseconds from the event's commit (its `created_at`) to the start of its first attempt.
async fn commit_to_attempt(db: &TestDb, attempt: &Value, event_id: &str) -> i64 {
    let created = db
        .scalar(&format!(
            "SELECT created_at FROM events WHERE event_id = '{event_id}'"
        ))
        .await;
    attempt["startTime"].as_i64().expect("a start time") - created
}

/// Publishes `event_id` after the workers have gone to sleep: a first event is delivered and
/// recorded first, so the dispatcher has computed its wait (the poll) before the one measured.
async fn an_intake_is_delivered_at_once_not_at_the_next_poll(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start(&db, &[]).await;
    let receiver = Receiver::start().await;
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/now"), None)
        .await;
    for (n, event_id) in [(1, "first"), (2, "second")] {
        let body = format!(r#"{{"event":"BUILD_END","data":{{}},"eventId":"{event_id}"}}"#);
        let (status, answer) = server.publish("demo", &body).await;
        assert!(status.is_success(), "{answer}");
        let records = attempts(&server, n).await;
        let took = commit_to_attempt(&db, &records[n - 1], event_id).await;
        eprintln!("[{backend:?}] {event_id}: commit to attempt {took} ms");
        assert!(
            (0..AT_ONCE_MS).contains(&took),
            "{event_id} waited {took} ms: the intake did not wake the workers"
        );
        // Let the dispatcher finish its round and go to sleep on the poll.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(receiver.count(), 2);
}

/// Another process (the CLI) commits the event: only NOTIFY can wake this server in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_from_another_process_wakes_a_postgres_server_at_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let server = start(&db, &[]).await;
    let receiver = Receiver::start().await;
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/other"), None)
        .await;
    // Let the workers go to sleep on the poll.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let published = cli(
        &db,
        &[],
        &[
            "events",
            "publish",
            "--project",
            "demo",
            "--event",
            "BUILD_END",
            "--data",
            "{}",
            "--event-id",
            "elsewhere",
        ],
    )
    .await;
    assert!(published.status.success(), "{published:?}");
    let records = attempts(&server, 1).await;
    let took = commit_to_attempt(&db, &records[0], "elsewhere").await;
    eprintln!("published by another process: commit to attempt {took} ms");
    assert!(
        (0..AT_ONCE_MS).contains(&took),
        "waited {took} ms: NOTIFY did not wake the server"
    );
}

/// A 500, then the retry one second later by the schedule: its start follows the failed
/// attempt's end by the delay (±20 % jitter), not by the minute-long poll.
async fn a_retry_fires_at_its_due_time_not_at_the_next_poll(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start(&db, &[("DELIVERY_RETRY_SCHEDULE", "1s")]).await;
    let receiver = Receiver::start().await;
    // The failure comes late, so the dispatcher has long gone to sleep when it is recorded.
    receiver.script(
        "/retry",
        vec![Answer::Late(Duration::from_millis(300), 500)],
    );
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/retry"), None)
        .await;
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    let records = attempts(&server, 2).await;
    let (first, second) = (&records[0], &records[1]);
    assert_eq!(
        (&first["status"], &second["status"]),
        (&Value::from("FAILED"), &Value::from("SUCCESS"))
    );
    let gap = second["startTime"].as_i64().unwrap() - first["endTime"].as_i64().unwrap();
    eprintln!("[{backend:?}] retry 1s ±20 % started {gap} ms after the failure");
    assert!(
        (800..1200 + AT_ONCE_MS).contains(&gap),
        "the retry started {gap} ms after the failure"
    );
    wait_until("both attempts at the receiver", WAIT, async || {
        receiver.count() == 2
    })
    .await;
}

/// 300 events for one host that may hold 2 attempts and 2 queued deliveries: the claims that feed
/// it are rung by its queue draining and by its leaving the workers' map; if one were missed the
/// rest would wait for the minute-long poll. Beside it, another host (`localhost`, so it has caps
/// of its own) answers nothing while the test runs and keeps its places taken, so the workers'
/// map never empties while the first host drains.
async fn a_backlog_beyond_a_hosts_cap_drains_without_the_poll(backend: Backend) {
    const EVENTS: usize = 300;
    let db = TestDb::new(backend).await;
    // Attempts to the stuck host outlast the test, so no outcome of theirs wakes the workers.
    let vars = [
        ("DELIVERY_MAX_IN_FLIGHT_PER_HOST", "2"),
        ("DELIVERY_TIMEOUT_MS", "30000"),
        ("DELIVERY_LEASE_SECS", "60"),
    ];
    let server = start(&db, &vars).await;
    let receiver = Receiver::start().await;
    let hanging = Receiver::start().await;
    hanging.answer_by_default(Answer::Slow(Duration::from_secs(60)));
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/fast"), None)
        .await;
    server.set_member("stuck", "alice", "admin").await;
    let slow = format!("http://localhost:{}/slow", hanging.addr.port());
    server
        .register("stuck", "alice", "BUILD_END", &slow, None)
        .await;
    publish_batch(&server, "stuck", 4).await;
    publish_batch(&server, "demo", EVENTS).await;
    // Far below the poll; the deliveries themselves take about a second.
    receiver.wait_for(EVENTS, WAIT).await;
    let (distinct, duplicates) = receiver.distinct_and_duplicates();
    assert_eq!((distinct, duplicates), (EVENTS, 0));
}

/// Publishes `count` BUILD_END events of `project` in one intake batch.
async fn publish_batch(server: &TestServer, project: &str, count: usize) {
    let batch: Vec<Value> = (0..count)
        .map(|i| json!({"projectId": project, "event": "BUILD_END", "data": {"i": i}}))
        .collect();
    let (status, body) = server
        .service_post(
            "/service/callbacks/events:batch",
            &Value::from(batch).to_string(),
        )
        .await;
    assert!(status.is_success(), "{body}");
}
