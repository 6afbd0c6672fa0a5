//! Recovery across processes: a server killed with SIGKILL mid-job, and two servers on one
//! database sharing a job. Each failed delivery must be delivered exactly once more.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::common::{Backend, TestDb, WAIT, backend_tests, enc, strip_ansi, wait_until};
use crate::processes::ServerProcess;
use crate::receiver::{Answer, Receiver};
use crate::recovery::local_ago;

backend_tests!(
    a_killed_server_resumes_the_recovery_where_it_was,
    two_servers_share_one_recovery_job,
);

const COUNT: usize = 500;
const PATH: &str = "/crash";

/// Settings of every server here: recovery in batches of 50, quick polls, one retry 3 s after
/// a failure (long enough that the attempts a kill interrupts are still pending afterwards).
const VARS: &[(&str, &str)] = &[
    ("RECOVER_BATCH_SIZE", "50"),
    ("DELIVERY_POLL_MS", "100"),
    ("DELIVERY_RETRY_SCHEDULE", "3s"),
    ("DELIVERY_TIMEOUT_MS", "1000"),
    ("DELIVERY_LEASE_SECS", "3"),
];

async fn count(db: &TestDb, status: &str) -> i64 {
    db.scalar(&format!(
        "SELECT COUNT(*) FROM deliveries WHERE status = '{status}'"
    ))
    .await
}

/// Registers the callback, publishes `COUNT` events that all fail for good, and returns the
/// callback's id.
async fn fail_everything(server: &ServerProcess, db: &TestDb, receiver: &Receiver) -> i64 {
    receiver.answer_by_default(Answer::Status(500));
    server.register(&receiver.url(PATH)).await;
    server.publish(0, COUNT).await;
    wait_until(
        "every delivery to fail",
        Duration::from_secs(30),
        async || count(db, "FAILED").await == COUNT as i64,
    )
    .await;
    db.scalar("SELECT MIN(callback_id) FROM deliveries").await
}

async fn recover(server: &ServerProcess, callback: i64) -> i64 {
    let since = enc(&local_ago(chrono::Duration::minutes(1)));
    let path = format!(
        "/apigw-user/v4/projects/demo/callbacks/callback_recover?id={callback}&since={since}"
    );
    let body = server.post(&path, Some(String::new())).await;
    body["data"]["jobId"].as_i64().unwrap()
}

async fn job(server: &ServerProcess, id: i64) -> Value {
    let path = format!("/apigw-user/v4/projects/demo/callbacks/recover_jobs/{id}");
    let (status, body) = server.send(Method::GET, &path, None).await;
    assert!(status.is_success(), "{body}");
    body["data"].clone()
}

/// Waits until the job is done and every delivery succeeded; returns the job.
async fn wait_for_the_end(server: &ServerProcess, db: &TestDb, id: i64) -> Value {
    let mut last = Value::Null;
    wait_until("the job to be done", Duration::from_secs(60), async || {
        last = job(server, id).await;
        last["state"] == "DONE" && count(db, "SUCCESS").await == COUNT as i64
    })
    .await;
    last
}

/// Every delivery was answered 2xx exactly once.
#[track_caller]
fn assert_each_delivered_once(delivered: &HashMap<String, usize>) {
    assert_eq!(delivered.len(), COUNT, "distinct deliveries answered 2xx");
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
}

async fn a_killed_server_resumes_the_recovery_where_it_was(backend: Backend) {
    let db = TestDb::new(backend).await;
    let logs = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let mut first = ServerProcess::start(&db, logs.path(), "first", VARS).await;
    let callback = fail_everything(&first, &db, &receiver).await;

    // The receiver is back for 150 deliveries, then holds every request unanswered: the job
    // is mid-way, with attempts in flight, when the server is killed.
    receiver.script(PATH, vec![Answer::Status(200); 150]);
    receiver.answer_by_default(Answer::Hang);
    let id = recover(&first, callback).await;
    wait_until("150 deliveries recorded", WAIT, async || {
        count(&db, "SUCCESS").await == 150
    })
    .await;
    wait_until("requests held", WAIT, async || {
        receiver.received().iter().any(|r| r.status.is_none())
    })
    .await;
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    let at_kill = db
        .scalar(&format!("SELECT done FROM recover_jobs WHERE id = {id}"))
        .await;
    assert!(
        (150..COUNT as i64).contains(&at_kill),
        "the kill did not land mid-job: {at_kill} re-queued"
    );

    receiver.answer_by_default(Answer::Status(200));
    let second = ServerProcess::start(&db, logs.path(), "second", VARS).await;
    let done = wait_for_the_end(&second, &db, id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("[{backend:?}] killed with {at_kill} of {COUNT} re-queued; resumed: {done}");
    assert_eq!(
        (done["done"].as_u64(), done["failed"].as_u64()),
        (Some(COUNT as u64), Some(0))
    );
    assert_each_delivered_once(&receiver.delivered());
    // Each delivery was re-queued once, by this job, after its two attempts before it.
    assert_eq!(
        db.scalar(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE recover_job_id = {id} AND retry_base = 2"
        ))
        .await,
        COUNT as i64
    );
}

/// The batches a server's log says it re-queued: (job, requeued, through).
fn batches(log: &std::path::Path) -> Vec<(i64, i64, i64)> {
    strip_ansi(&std::fs::read_to_string(log).unwrap())
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "re-queued a recovery batch")
        .map(|line| {
            let field = |name: &str| line[name].as_i64().unwrap();
            (field("job"), field("requeued"), field("through"))
        })
        .collect()
}

async fn two_servers_share_one_recovery_job(backend: Backend) {
    let db = TestDb::new(backend).await;
    let logs = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let mut vars = VARS.to_vec();
    vars.extend([
        ("RECOVER_BATCH_SIZE", "20"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "devops_callbacks=debug"),
    ]);
    let one = ServerProcess::start(&db, logs.path(), "one", &vars).await;
    let two = ServerProcess::start(&db, logs.path(), "two", &vars).await;
    let callback = fail_everything(&one, &db, &receiver).await;

    // Slow enough that the job spans many polls of both servers.
    receiver.answer_by_default(Answer::Slow(Duration::from_millis(20)));
    let id = recover(&one, callback).await;
    let done = wait_for_the_end(&two, &db, id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(done["done"].as_u64(), Some(COUNT as u64), "{done}");
    assert_each_delivered_once(&receiver.delivered());

    // The batches split between the servers, none run twice, together the whole job.
    let (by_one, by_two) = (batches(&one.log), batches(&two.log));
    eprintln!(
        "[{backend:?}] batches: {} by one, {} by two",
        by_one.len(),
        by_two.len()
    );
    let all: Vec<(i64, i64, i64)> = by_one.iter().chain(&by_two).copied().collect();
    assert!(all.iter().all(|(job, ..)| *job == id));
    assert_eq!(all.iter().map(|(_, n, _)| n).sum::<i64>(), COUNT as i64);
    let mut ends: Vec<i64> = all
        .iter()
        .filter(|(_, requeued, _)| *requeued > 0)
        .map(|(.., through)| *through)
        .collect();
    let batches = ends.len();
    ends.sort_unstable();
    ends.dedup();
    assert_eq!(
        ends.len(),
        batches,
        "two batches ended at the same delivery"
    );
    assert!(
        !by_one.is_empty() && !by_two.is_empty(),
        "both servers run batches of the job"
    );
}
