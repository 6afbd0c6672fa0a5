//! README promises that no other test pins down: the 16 KiB response-body cut, the one-hour cap
//! on `Retry-After`, CANCELLED deliveries of a deleted callback, retention in batches and
//! `eventId` reuse after the sweep, the graceful drain, `/service` without `SERVICE_TOKEN`, the
//! start-up warnings, `.env` loading, "set but unusable stops the start", and every SSRF range.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use devops_callbacks::config::Config;
use devops_callbacks::delivery::intake;
use devops_callbacks::delivery::ssrf::SsrfGuard;
use devops_callbacks::domain::CallbackUrl;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{
    Backend, DELIVERY_VARS, SERVICE_TOKEN, TestDb, TestServer, WAIT, assert_error, backend_tests,
    binary_command, cli, start_delivering as start, strip_ansi, wait_until,
};
use crate::processes::ServerProcess;
use crate::receiver::{Answer, Receiver};

backend_tests!(
    the_response_body_is_cut_at_16_kib,
    an_endless_response_body_is_read_no_further_than_16_kib,
    retry_after_is_capped_at_an_hour,
    pending_deliveries_of_a_deleted_callback_are_cancelled_with_the_reason,
    retention_deletes_in_batches_and_frees_the_event_id,
    the_drain_records_attempts_in_flight_and_stops_taking_requests,
    service_routes_answer_503_without_the_service_token,
    the_start_warns_about_plaintext_tokens_and_a_missing_gateway_key,
    retries_get_at_most_a_quarter_of_the_slots_while_fresh_events_wait,
    a_stalled_hosts_backlog_is_moved_ahead,
);

async fn the_response_body_is_cut_at_16_kib(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start(&db, &[]).await;
    let receiver = Receiver::start().await;
    let long = "abcdefgh".repeat(5 * 1024);
    receiver.script("/long", vec![Answer::Body(200, long.clone().into_bytes())]);
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/long"), None)
        .await;
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    let records = server.wait_for_history("demo", "alice", 1).await;
    let body = records[0]["responseBody"]
        .as_str()
        .expect("a response body");
    assert_eq!(body.len(), 16 * 1024);
    assert_eq!(body, &long[..16 * 1024]);
    assert_eq!(records[0]["responseCode"], 200);
}

/// A receiver that answers 200 and then never stops sending its body: the sender reads the
/// first 16 KiB and no more, so the attempt is a success, not a timeout.
async fn an_endless_response_body_is_read_no_further_than_16_kib(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start(&db, &[("DELIVERY_RETRY_SCHEDULE", "none")]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\
                            content-length: 100000000000\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = [b'x'; 8192];
                while socket.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &format!("http://{addr}/endless"),
            None,
        )
        .await;
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    let records = server.wait_for_history("demo", "alice", 1).await;
    assert_eq!(records[0]["status"], "SUCCESS", "{}", records[0]);
    assert_eq!(
        records[0]["responseBody"].as_str().map(str::len),
        Some(16 * 1024)
    );
}

/// A receiver asks for two hours: the retry is due one hour after the attempt ended, exactly.
async fn retry_after_is_capped_at_an_hour(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start(&db, &[("DELIVERY_RETRY_SCHEDULE", "1s")]).await;
    let receiver = Receiver::start().await;
    receiver.script("/later", vec![Answer::RetryAfter(503, "7200".into())]);
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/later"), None)
        .await;
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    let records = server.wait_for_history("demo", "alice", 1).await;
    let ended = records[0]["endTime"].as_i64().unwrap();
    let due = db
        .scalar("SELECT next_attempt_at FROM deliveries WHERE status = 'PENDING'")
        .await;
    assert_eq!(due - ended, 3_600_000, "due {due}, attempt ended {ended}");
}

async fn pending_deliveries_of_a_deleted_callback_are_cancelled_with_the_reason(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start(&db, &[("DELIVERY_RETRY_SCHEDULE", "1s")]).await;
    let receiver = Receiver::start().await;
    receiver.script("/gone-soon", vec![Answer::Status(500)]);
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/gone-soon"),
            None,
        )
        .await;
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    server.wait_for_history("demo", "alice", 1).await;
    let (_, list) = server.list("demo", "alice", "").await;
    let id = list["data"]["records"][0]["id"].as_i64().unwrap();
    let deleted = server
        .v4(
            Method::DELETE,
            "demo",
            &format!("/callback?id={id}"),
            Some("alice"),
        )
        .await;
    assert_eq!(deleted.0, StatusCode::OK, "{deleted:?}");
    wait_until("the delivery to be cancelled", WAIT, async || {
        db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'CANCELLED'")
            .await
            == 1
    })
    .await;
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM deliveries WHERE status = 'CANCELLED' \
             AND cancel_reason = 'the callback was deleted'"
        )
        .await,
        1,
        "the reason is recorded"
    );
    assert_eq!(receiver.count(), 1, "nothing was sent after the delete");
}

/// The store's sweep statement removes at most one batch per table; the sweep repeats it until
/// nothing is left; an event id can be used again once its event is gone.
async fn retention_deletes_in_batches_and_frees_the_event_id(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start(&db, &[]).await;
    let receiver = Receiver::start().await;
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/kept"), None)
        .await;
    let (_, first) = server
        .publish(
            "demo",
            r#"{"event":"BUILD_END","data":{"n":1},"eventId":"reused"}"#,
        )
        .await;
    assert_eq!(first["data"]["deliveries"], 1, "{first}");
    server.wait_for_history("demo", "alice", 1).await;
    wait_until("the delivery to be finished", WAIT, async || {
        db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'SUCCESS'")
            .await
            == 1
    })
    .await;
    // Everything is 40 days old, and 1,200 more old history rows join it.
    let old = chrono::Utc::now().timestamp_millis() - 40 * 86_400_000;
    db.execute(&format!("UPDATE events SET created_at = {old}"))
        .await;
    db.execute(&format!(
        "UPDATE deliveries SET created_at = {old}, updated_at = {old}"
    ))
    .await;
    db.execute(&format!("UPDATE callback_history SET created_at = {old}"))
        .await;
    let mut values = Vec::new();
    for i in 0..1200 {
        values.push(format!(
            "(1, 1, 'demo', 'http://x/{i}', 'BUILD_END', 'SUCCESS', 1, '[]', '{{}}', {old}, {old}, {old})"
        ));
    }
    db.execute(&format!(
        "INSERT INTO callback_history (delivery_id, callback_id, project_id, url, event, status, \
         attempt, request_headers, request_body, start_time, end_time, created_at) VALUES {}",
        values.join(",")
    ))
    .await;

    let config = Config::from_map(&HashMap::from([(
        "DATABASE_URL".to_owned(),
        db.url.clone(),
    )]))
    .unwrap();
    let store = devops_callbacks::store::open(&config).await.unwrap();
    let before = chrono::Utc::now().timestamp_millis() - 30 * 86_400_000;
    let removed = store.prune(before, 500).await.unwrap();
    assert_eq!(
        removed, 500,
        "one batch of history; the finished delivery (and its event) stays while history names it"
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM callback_history").await,
        701
    );

    // The sweep itself (every second here) repeats batches until nothing old is left: its first
    // run removes the 701 history rows, then the delivery and its event, as its log line says.
    server.stop().await;
    let logs = tempfile::tempdir().unwrap();
    let vars: Vec<(&str, &str)> = DELIVERY_VARS
        .iter()
        .copied()
        .chain([("RETENTION_SWEEP_SECS", "1")])
        .collect();
    let server = ServerProcess::start(&db, logs.path(), "sweep", &vars).await;
    let mut swept = Vec::new();
    wait_until("the first sweep", WAIT, async || {
        let log = strip_ansi(&std::fs::read_to_string(&server.log).unwrap());
        swept = log
            .lines()
            .filter(|line| line.contains("retention sweep deleted old rows"))
            .map(str::to_owned)
            .collect();
        !swept.is_empty()
    })
    .await;
    assert!(swept[0].contains("removed=703"), "{swept:?}");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM callback_history").await, 0);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM events").await, 0);
    let again = server
        .post(
            "/service/callbacks/projects/demo/events",
            Some(r#"{"event":"BUILD_END","data":{"n":2},"eventId":"reused"}"#.to_owned()),
        )
        .await;
    assert_eq!(again["data"]["deliveries"], 1, "{again}");
    let received = receiver.wait_for(2, WAIT).await;
    assert_eq!(
        &received[1].body[..],
        br#"{"event":"BUILD_END","data":{"n":2}}"#,
        "the reused id was accepted as a new event"
    );
}

/// Eight first attempts and eight retries are due when a server with four slots starts: its
/// first wave (the attempts that started together, before any slot came free) holds at most one
/// retry.
async fn retries_get_at_most_a_quarter_of_the_slots_while_fresh_events_wait(backend: Backend) {
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Answer::Slow(Duration::from_millis(1000)));
    let server = start(&db, &[]).await;
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/lanes"), None)
        .await;
    server.stop().await;
    // Published with no workers running; every other delivery made a retry.
    let config = Config::from_map(&HashMap::from([(
        "DATABASE_URL".to_owned(),
        db.url.clone(),
    )]))
    .unwrap();
    let store = devops_callbacks::store::open(&config).await.unwrap();
    let events = (0..16)
        .map(|i| {
            let data = serde_json::value::RawValue::from_string(format!("{{\"i\":{i}}}")).unwrap();
            intake::accept(
                "demo".parse().unwrap(),
                "BUILD_END".parse().unwrap(),
                &data,
                None,
            )
            .unwrap()
        })
        .collect();
    intake::publish(store.clone(), &tokio::sync::Notify::new(), events)
        .await
        .unwrap();
    db.execute("UPDATE deliveries SET attempts = 1 WHERE id % 2 = 0")
        .await;
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM deliveries WHERE attempts = 1")
            .await,
        8
    );

    let server = start(
        &db,
        &[
            ("DELIVERY_CONCURRENCY", "4"),
            ("DELIVERY_TIMEOUT_MS", "5000"),
            ("DELIVERY_LEASE_SECS", "20"),
        ],
    )
    .await;
    let mut rows = server.wait_for_history("demo", "alice", 4).await;
    rows.sort_by_key(|r| r["startTime"].as_i64().unwrap());
    let first_start = rows[0]["startTime"].as_i64().unwrap();
    // The next wave can only start when an attempt of the first (1 s each) ended.
    let first_end = rows
        .iter()
        .map(|r| r["endTime"].as_i64().unwrap())
        .min()
        .unwrap();
    let wave: Vec<i64> = rows
        .iter()
        .filter(|r| r["startTime"].as_i64().unwrap() < first_end)
        .map(|r| r["attempt"].as_i64().unwrap())
        .collect();
    eprintln!("[{backend:?}] first wave from {first_start}: attempts {wave:?}");
    assert_eq!(wave.len(), 4, "{wave:?}");
    let retries = wave.iter().filter(|&&attempt| attempt == 2).count();
    assert!(
        retries <= 1,
        "{retries} retries in the first four slots: {wave:?}"
    );
}

/// A host at its cap that finishes nothing for a second is stalled: its due backlog is moved a
/// delivery timeout ahead, so claims stop walking past it.
async fn a_stalled_hosts_backlog_is_moved_ahead(backend: Backend) {
    const EVENTS: i64 = 20;
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Answer::Slow(Duration::from_secs(10)));
    let server = start(
        &db,
        &[
            ("DELIVERY_CONCURRENCY", "4"),
            ("DELIVERY_MAX_IN_FLIGHT_PER_HOST", "2"),
            ("DELIVERY_TIMEOUT_MS", "3000"),
            ("DELIVERY_LEASE_SECS", "10"),
            ("DELIVERY_RETRY_SCHEDULE", "none"),
        ],
    )
    .await;
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/stall"), None)
        .await;
    let batch: Vec<_> = (0..EVENTS)
        .map(|i| json!({"projectId": "demo", "event": "BUILD_END", "data": {"i": i}}))
        .collect();
    let (status, body) = server
        .service_post("/service/callbacks/events:batch", &json!(batch).to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Two in flight, four queued for the host; the rest of the backlog moves 3 s ahead.
    let moved = "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.id = d.event_pk \
                 WHERE d.status = 'PENDING' AND d.attempts = 0 \
                   AND d.next_attempt_at - e.created_at >= 2500";
    wait_until(
        "the stalled host's backlog to move ahead",
        WAIT,
        async || db.scalar(moved).await >= EVENTS - 2 - 4,
    )
    .await;
}

/// SIGTERM while attempts run: they finish within the grace period and are recorded, and the
/// process stops taking requests at once.
async fn the_drain_records_attempts_in_flight_and_stops_taking_requests(backend: Backend) {
    const COUNT: usize = 4;
    let db = TestDb::new(backend).await;
    let logs = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Answer::Slow(Duration::from_millis(1500)));
    let vars = [
        ("DELIVERY_TIMEOUT_MS", "5000"),
        ("DELIVERY_LEASE_SECS", "60"),
        ("SHUTDOWN_GRACE_SECS", "20"),
    ];
    let mut server = ServerProcess::start(&db, logs.path(), "drain", &vars).await;
    server
        .register_event("BUILD_END", &receiver.url("/drain"))
        .await;
    for i in 0..COUNT {
        server
            .post(
                "/service/callbacks/projects/demo/events",
                Some(json!({"event": "BUILD_END", "data": {"i": i}}).to_string()),
            )
            .await;
    }
    receiver.wait_for(COUNT, WAIT).await;
    let pid = server.child.id().expect("running").to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(signalled.success());
    // The listener is closed while the attempts still run (they take 1.5 s).
    let refused = async {
        loop {
            let answer = reqwest::Client::new()
                .get(format!("{}/healthz", server.base))
                .send()
                .await;
            if answer.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("the stopping server refuses new requests");
    let status = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'SUCCESS' AND attempts = 1")
            .await,
        COUNT as i64,
        "every attempt in flight finished and was recorded"
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM callback_history WHERE status = 'SUCCESS'")
            .await,
        COUNT as i64
    );
    assert_eq!(
        receiver.count(),
        COUNT,
        "no attempt was cut off and repeated"
    );
}

async fn service_routes_answer_503_without_the_service_token(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, &[("SERVICE_TOKEN", "")]).await;
    let token = ("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN);
    let body = r#"{"event":"BUILD_END","data":{}}"#;
    for path in [
        "/service/callbacks/projects/demo/events",
        "/service/callbacks/events:batch",
    ] {
        let response = reqwest::Client::new()
            .post(server.url(path))
            .header(token.0, token.1)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let answer = crate::common::envelope_of(response).await;
        assert_error(&answer, 503, 503, &["SERVICE_TOKEN"]);
    }
    assert_error(
        &server
            .call(Method::GET, "/op/callbacks/global", &[token])
            .await,
        503,
        503,
        &["SERVICE_TOKEN"],
    );
}

/// Plaintext tokens left under a key, and no gateway key: both logged at start; neither once
/// fixed.
async fn the_start_warns_about_plaintext_tokens_and_a_missing_gateway_key(backend: Backend) {
    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let db = TestDb::new(backend).await;
    let logs = tempfile::tempdir().unwrap();
    let server = TestServer::start(&db).await;
    server.set_member("demo", "alice", "admin").await;
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            "http://93.184.215.14/hook",
            Some("plain-token"),
        )
        .await;
    server.stop().await;

    let plaintext = "stored unencrypted";
    let no_gateway = "APIGW_PUBLIC_KEY_FILE is unset";
    let mut first = ServerProcess::start(
        &db,
        logs.path(),
        "warned",
        &[("SECRET_ENCRYPTION_KEY", KEY)],
    )
    .await;
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    let log = strip_ansi(&std::fs::read_to_string(&first.log).unwrap());
    assert!(log.contains(plaintext), "{log}");
    assert!(log.contains(no_gateway), "{log}");

    let migrated = cli(&db, &[("SECRET_ENCRYPTION_KEY", KEY)], &["migrate"]).await;
    assert!(migrated.status.success(), "{migrated:?}");
    let key = crate::keys::public_key_file();
    let vars = [
        ("SECRET_ENCRYPTION_KEY", KEY),
        ("APIGW_PUBLIC_KEY_FILE", key.path().to_str().unwrap()),
    ];
    let mut second = ServerProcess::start(&db, logs.path(), "quiet", &vars).await;
    second.child.start_kill().unwrap();
    second.child.wait().await.unwrap();
    let log = strip_ansi(&std::fs::read_to_string(&second.log).unwrap());
    assert!(log.contains("listening"), "{log}");
    assert!(!log.contains(plaintext), "{log}");
    assert!(!log.contains(no_gateway), "{log}");
}

/// `.env` in the working directory is read, and a real environment variable wins over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dot_env_file_is_read() {
    let db = TestDb::new(Backend::Sqlite).await;
    let other = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!("# development settings\nDATABASE_URL={}\n", db.url),
    )
    .unwrap();
    let run = |args: &'static [&'static str], database_url: Option<String>| {
        let mut command = binary_command();
        command.current_dir(dir.path()).args(args);
        if let Some(url) = database_url {
            command.env("DATABASE_URL", url);
        }
        async move { command.output().await.unwrap() }
    };
    let added = run(
        &[
            "members",
            "add",
            "--project",
            "demo",
            "--user",
            "dot",
            "--role",
            "admin",
        ],
        None,
    )
    .await;
    assert!(added.status.success(), "{added:?}");
    let listed = cli(&db, &[], &["members", "list", "--project", "demo"]).await;
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "dot\tadmin\n");

    let elsewhere = run(
        &["members", "list", "--project", "demo"],
        Some(other.url.clone()),
    )
    .await;
    assert!(elsewhere.status.success(), "{elsewhere:?}");
    assert_eq!(
        String::from_utf8_lossy(&elsewhere.stdout),
        "",
        "the environment's DATABASE_URL wins over .env"
    );
}

/// Every variable, set to something unusable, stops the start with a message naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_unusable_variable_stops_the_start() {
    let db = TestDb::new(Backend::Sqlite).await;
    let bkci = [
        ("AUTH_MODE", "bkci"),
        ("BKCI_AUTH_URL", "http://127.0.0.1:9/"),
        ("BKCI_AUTH_TOKEN", "t"),
    ];
    let bridge = [
        ("BKCI_AMQP_URL", "amqp://guest:guest@127.0.0.1:9/%2f"),
        ("BKCI_SERVICE_URL", "http://127.0.0.1:9/"),
        ("BKCI_SERVICE_USER", "svc"),
    ];
    type Vars<'a> = &'a [(&'a str, &'a str)];
    let cases: Vec<(&str, &str, Vars)> = vec![
        ("DATABASE_URL", "mysql://db/callbacks", &[]),
        ("DATABASE_MAX_CONNECTIONS", "many", &[]),
        ("LISTEN_ADDR", "here", &[]),
        ("LOG_FORMAT", "xml", &[]),
        ("CALLBACK_ALLOWED_CIDRS", "10.0.0.0/33", &[]),
        ("CALLBACK_ALLOWLIST_ONLY", "yes please", &[]),
        ("CALLBACK_BLOCKED_PORTS", "22,ssh", &[]),
        ("TIME_ZONE", "Mars/Olympus", &[]),
        ("AUTH_MODE", "ldap", &[]),
        ("BKCI_AUTH_URL", "ftp://auth/", &bkci[..1]),
        ("BKCI_AUTH_TOKEN", "two\nlines", &bkci[..2]),
        ("BKCI_AUTH_TIMEOUT_MS", "0", &bkci),
        ("AUTH_CACHE_TTL_SECS", "-1", &[]),
        ("APIGW_PUBLIC_KEY_FILE", "/nonexistent/gateway.pem", &[]),
        ("SECRET_ENCRYPTION_KEY", "short", &[]),
        ("REQUEST_TIMEOUT_SECS", "soon", &[]),
        ("MAX_BODY_BYTES", "big", &[]),
        ("MAX_URI_BYTES", "0", &[]),
        ("MAX_HEADER_BYTES", "0", &[]),
        ("HEADER_READ_TIMEOUT_MS", "0", &[]),
        ("MAX_CONNECTIONS", "lots", &[]),
        ("DELIVERY_CONCURRENCY", "0", &[]),
        ("DELIVERY_MAX_IN_FLIGHT_PER_HOST", "0", &[]),
        ("DELIVERY_TIMEOUT_MS", "0", &[]),
        ("DELIVERY_SUCCESS", "3xx", &[]),
        ("DELIVERY_CA_FILE", "/nonexistent/receivers-ca.pem", &[]),
        ("DELIVERY_TLS_VERIFY", "maybe", &[]),
        ("DELIVERY_RETRY_SCHEDULE", "5s,later", &[]),
        ("DELIVERY_LEASE_SECS", "1", &[]),
        ("DELIVERY_POLL_MS", "0", &[]),
        ("CALLBACK_DISABLE_AFTER", "a while", &[]),
        ("SHUTDOWN_GRACE_SECS", "-5", &[]),
        ("HISTORY_RETENTION_DAYS", "forever", &[]),
        ("RETENTION_SWEEP_SECS", "0", &[]),
        ("RECOVER_BATCH_SIZE", "0", &[]),
        ("BKCI_AMQP_URL", "http://rabbit:5672/", &[]),
        ("BKCI_AMQP_QUEUE_PREFIX", "my queues", &bridge),
        ("BKCI_AMQP_DECLARE", "fanout", &bridge),
        ("BKCI_AMQP_PREFETCH", "0", &bridge),
        ("BKCI_SERVICE_URL", "ftp://bk-ci/", &bridge[..1]),
        ("BKCI_SERVICE_USER", " ", &bridge[..2]),
        ("BKCI_MYSQL_URL", "not a url", &bridge),
        ("BKCI_LOOKUP_TIMEOUT_MS", "0", &bridge),
        ("BKCI_ENRICH_ATTEMPTS", "0", &bridge),
        ("BKCI_ENRICH_BACKOFF_MS", "soon", &bridge),
        ("RUST_LOG", "devops_callbacks=loud", &[]),
    ];
    // Every variable of the README's configuration table has a case (SERVICE_TOKEN takes any
    // text).
    let readme = include_str!("../../README.md");
    let table =
        &readme[readme.find("## Configuration").unwrap()..readme.find("## Architecture").unwrap()];
    for line in table.lines() {
        let Some(name) = line
            .strip_prefix("| `")
            .and_then(|rest| rest.split('`').next())
        else {
            continue;
        };
        assert!(
            name == "SERVICE_TOKEN" || cases.iter().any(|(case, _, _)| *case == name),
            "no unusable value tried for {name}"
        );
    }
    for (name, value, with) in cases {
        let mut vars: Vec<(&str, &str)> = with.to_vec();
        vars.push((name, value));
        let output = cli(&db, &vars, &["serve"]).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}={value:?} started");
        assert!(stderr.contains(name), "{name}={value:?}: {stderr}");
    }
    // An address that is taken is unusable too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = cli(&db, &[("LISTEN_ADDR", &addr)], &["serve"]).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("LISTEN_ADDR"));
}

/// Every range the README lists, v4 and v6, and the IPv4-in-IPv6 forms, is refused; public
/// addresses pass; metadata names are refused whatever they resolve to.
#[tokio::test]
async fn every_ssrf_range_the_readme_lists_is_refused() {
    let guard = SsrfGuard::new(Vec::new(), false);
    let refused = [
        ("loopback", "127.0.0.1"),
        ("loopback", "127.255.255.254"),
        ("loopback", "::1"),
        ("RFC 1918", "10.0.0.1"),
        ("RFC 1918", "172.16.0.1"),
        ("RFC 1918", "172.31.255.254"),
        ("RFC 1918", "192.168.0.1"),
        ("link-local", "169.254.169.254"),
        ("link-local", "fe80::1"),
        ("CGNAT", "100.64.0.1"),
        ("CGNAT", "100.127.255.254"),
        ("ULA", "fc00::1"),
        ("ULA", "fd12:3456::1"),
        ("multicast", "224.0.0.1"),
        ("multicast", "239.255.255.250"),
        ("multicast", "ff02::1"),
        ("unspecified", "0.0.0.0"),
        ("unspecified", "::"),
        ("reserved", "240.0.0.1"),
        ("reserved", "255.255.255.255"),
        ("documentation", "192.0.2.1"),
        ("documentation", "198.51.100.1"),
        ("documentation", "203.0.113.1"),
        ("documentation", "2001:db8::1"),
        ("benchmarking", "198.18.0.1"),
        ("benchmarking", "198.19.255.254"),
        ("benchmarking", "2001:2::1"),
        ("mapped", "::ffff:10.0.0.1"),
        ("mapped", "::ffff:127.0.0.1"),
        ("compatible", "::10.0.0.1"),
        ("compatible", "::169.254.169.254"),
        ("NAT64", "64:ff9b::a00:1"),
        ("NAT64", "64:ff9b::7f00:1"),
        ("6to4", "2002:a00:1::1"),
        ("6to4", "2002:7f00:1::1"),
        ("Teredo", "2001:0:4136:e378:8000:63bf:3fff:fdd2"),
    ];
    let mut passed = Vec::new();
    for (range, ip) in refused {
        let ip: IpAddr = ip.parse().unwrap();
        if guard.check_ip(ip).is_ok() {
            passed.push(format!("{range} {ip}"));
        }
    }
    assert!(passed.is_empty(), "let through: {passed:?}");
    for ip in [
        "93.184.215.14",
        "8.8.8.8",
        "172.32.0.1",
        "100.128.0.1",
        "198.20.0.1",
        "2606:4700::1111",
        "::ffff:93.184.215.14",
        "64:ff9b::5db8:d70e",
        "2002:5db8:d70e::1",
    ] {
        assert!(guard.check_ip(ip.parse().unwrap()).is_ok(), "{ip} refused");
    }
    for name in [
        "metadata",
        "metadata.google.internal",
        "Metadata.Google.Internal.",
        "metadata.tencentyun.com",
        "kubernetes.default.svc",
    ] {
        let url = CallbackUrl::parse(format!("http://{name}/hook"), &[]).unwrap();
        assert!(guard.check_url(&url).await.is_err(), "{name} allowed");
    }
}
