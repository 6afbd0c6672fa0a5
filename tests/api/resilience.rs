//! Bad days: retry timing, Retry-After, exhaustion, 410, time-based disable and its clearing,
//! the enable/disable/retry routes, a hanging host next to a healthy one, and retention.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{
    self, Backend, TestDb, TestServer, WAIT, assert_error, backend_tests, start_delivering as start,
};
use crate::receiver::{Answer, Receiver};

backend_tests!(
    retries_follow_the_schedule_and_end_failed,
    retry_after_is_honoured,
    gone_disables_the_callback_at_once,
    failing_too_long_disables_and_a_success_clears_the_clock,
    enable_disable_and_retry_routes,
    a_hanging_host_does_not_slow_a_healthy_one,
    old_history_and_deliveries_are_pruned,
);

async fn callbacks(server: &TestServer) -> Vec<Value> {
    let (_, body) = server.list("demo", "alice", "").await;
    body["data"]["records"].as_array().unwrap().clone()
}

async fn history(server: &TestServer, query: &str) -> Vec<Value> {
    let (status, body) = server
        .history("demo", "alice", &format!("pageSize=100&{query}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["records"].as_array().unwrap().clone()
}

async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, condition: F) {
    common::wait_until(what, WAIT, condition).await
}

async fn retries_follow_the_schedule_and_end_failed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start(&db, &[("DELIVERY_RETRY_SCHEDULE", "400ms,800ms")]).await;
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Answer::Status(500));
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/down"), None)
        .await;
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;

    receiver.wait_for(3, WAIT).await;
    let rows = server.wait_for_history("demo", "alice", 3).await;
    // Oldest first; the gaps are the server's own: one attempt's end to the next one's start.
    let gaps: Vec<i64> = rows
        .windows(2)
        .map(|w| w[0]["startTime"].as_i64().unwrap() - w[1]["endTime"].as_i64().unwrap())
        .rev()
        .collect();
    eprintln!("[{backend:?}] retry gaps (ms) for a 400ms,800ms schedule: {gaps:?}");
    // ±20 % jitter; late by at most the wake-up and a claim (no poll: the retry's due time wakes
    // the dispatcher).
    assert!((320..=480 + 1000).contains(&gaps[0]), "{gaps:?}");
    assert!((640..=960 + 1000).contains(&gaps[1]), "{gaps:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.count(),
        3,
        "no attempt after the schedule is used up"
    );
    let rows = history(&server, "").await;
    let attempts: Vec<_> = rows
        .iter()
        .map(|r| (r["attempt"].clone(), r["status"].clone()))
        .collect();
    assert_eq!(
        attempts,
        vec![
            (json!(3), json!("FAILED")),
            (json!(2), json!("FAILED")),
            (json!(1), json!("FAILED"))
        ]
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'FAILED' AND attempts = 3")
            .await,
        1
    );
}

async fn retry_after_is_honoured(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start(&db, &[("DELIVERY_RETRY_SCHEDULE", "100ms,100ms")]).await;
    let receiver = Receiver::start().await;
    receiver.script("/seconds", vec![Answer::RetryAfter(503, "2".into())]);
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3));
    receiver.script("/date", vec![Answer::RetryAfter(429, date)]);
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/seconds"),
            None,
        )
        .await;
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/date"), None)
        .await;
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;

    let received = receiver.wait_for(4, WAIT).await;
    for path in ["/seconds", "/date"] {
        let mine: Vec<_> = received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect();
        let gap = mine[1].at - mine[0].at;
        eprintln!("[{backend:?}] {path}: Retry-After kept the retry back {gap:?}");
        assert!(
            gap >= Duration::from_millis(1900),
            "{path}: {gap:?} despite Retry-After"
        );
    }
}

/// `failureTime` as bk-ci writes it: a local date-time in `zone`, to the second, about now.
#[track_caller]
fn assert_failure_time_is_about_now(callback: &Value, zone: chrono_tz::Tz) {
    let text = callback["failureTime"]
        .as_str()
        .unwrap_or_else(|| panic!("no failureTime text in {callback}"));
    let at = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
        .unwrap_or_else(|e| panic!("failureTime {text:?}: {e}"));
    assert_eq!(text.len(), "2026-08-21T10:00:00".len(), "{text}");
    let now = chrono::Utc::now().with_timezone(&zone).naive_local();
    assert!(
        (now - at).num_seconds().abs() < 60,
        "failureTime {text} is not now ({now}) in {zone}"
    );
}

async fn gone_disables_the_callback_at_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    // UTC+14: a failureTime written in UTC or in the default zone would be hours off.
    let server = start(&db, &[("TIME_ZONE", "Pacific/Kiritimati")]).await;
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Answer::Status(410));
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/gone"), None)
        .await;
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;

    wait_until("the callback to be disabled", async || {
        callbacks(&server).await[0]["enable"] == false
    })
    .await;
    let callback = &callbacks(&server).await[0];
    assert!(
        callback["disabledReason"].as_str().unwrap().contains("410"),
        "{callback}"
    );
    assert_failure_time_is_about_now(callback, chrono_tz::Pacific::Kiritimati);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.count(), 1, "a 410 is not retried");
    let (_, answer) = server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    assert_eq!(
        answer["data"]["deliveries"], 0,
        "a disabled callback gets nothing"
    );
}

async fn failing_too_long_disables_and_a_success_clears_the_clock(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start(
        &db,
        &[
            ("CALLBACK_DISABLE_AFTER", "1s"),
            (
                "DELIVERY_RETRY_SCHEDULE",
                "300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms",
            ),
        ],
    )
    .await;
    let receiver = Receiver::start().await;
    receiver.script("/flaky", vec![Answer::Status(500)]);
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/flaky"), None)
        .await;
    server
        .register("demo", "alice", "BUILD_START", &receiver.url("/dead"), None)
        .await;
    receiver.script("/dead", (0..20).map(|_| Answer::Status(500)).collect());
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    server
        .publish("demo", r#"{"event":"BUILD_START","data":{"first":true}}"#)
        .await;
    server
        .publish("demo", r#"{"event":"BUILD_START","data":{"second":true}}"#)
        .await;

    let dead = receiver.url("/dead");
    let find = |records: Vec<Value>, url: &str| {
        records
            .into_iter()
            .find(|c| c["callBackUrl"] == url)
            .unwrap()
    };
    wait_until("the failing callback's clock to start", async || {
        find(callbacks(&server).await, &dead)["failureTime"].is_string()
    })
    .await;
    wait_until("the failing callback to be disabled", async || {
        find(callbacks(&server).await, &dead)["enable"] == false
    })
    .await;
    let disabled = find(callbacks(&server).await, &dead);
    assert_failure_time_is_about_now(&disabled, chrono_tz::Asia::Shanghai);
    let reason = disabled["disabledReason"].as_str().unwrap();
    assert!(reason.contains("without a success for 1s"), "{reason}");

    // The flaky one failed once, then succeeded: its clock was cleared.
    let flaky = find(callbacks(&server).await, &receiver.url("/flaky"));
    assert_eq!(flaky["enable"], true);
    assert!(flaky.get("failureTime").is_none(), "{flaky}");

    // The disabled callback's remaining deliveries stop, visibly.
    wait_until("the stopped deliveries to be cancelled", async || {
        db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'PENDING'")
            .await
            == 0
    })
    .await;
    assert!(
        db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'CANCELLED'")
            .await
            >= 1
    );
    let sent = receiver
        .received()
        .iter()
        .filter(|r| r.path == "/dead")
        .count();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        receiver
            .received()
            .iter()
            .filter(|r| r.path == "/dead")
            .count(),
        sent,
        "nothing more was sent"
    );
}

async fn enable_disable_and_retry_routes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start(&db, &[("DELIVERY_RETRY_SCHEDULE", "none")]).await;
    server.set_member("demo", "mary", "member").await;
    server.set_member("other", "olga", "admin").await;
    let receiver = Receiver::start().await;
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/r"),
            Some("old-token"),
        )
        .await;
    let id = callbacks(&server).await[0]["id"].as_i64().unwrap();
    let call = |method: Method, route: &str, user: &'static str| {
        let server = &server;
        let tail = format!("/{route}");
        async move { server.v4(method, "demo", &tail, Some(user)).await }
    };

    // Disable: nothing more is delivered; enable: deliveries resume.
    let ok = (StatusCode::OK, json!({"status": 0, "data": true}));
    assert_eq!(
        call(Method::PUT, &format!("callback_disable?id={id}"), "alice").await,
        ok
    );
    let callback = &callbacks(&server).await[0];
    assert_eq!(
        (
            callback["enable"].clone(),
            callback["disabledReason"].clone()
        ),
        (json!(false), json!("disabled by alice"))
    );
    let (_, answer) = server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    assert_eq!(answer["data"]["deliveries"], 0);
    assert_eq!(
        call(Method::PUT, &format!("callback_enable?id={id}"), "alice").await,
        ok
    );
    let callback = &callbacks(&server).await[0];
    assert_eq!(callback["enable"], true);
    assert!(callback.get("disabledReason").is_none());

    // A failed attempt, re-sent by hand with the callback's current token.
    receiver.script("/r", vec![Answer::Status(500)]);
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{"n":1}}"#)
        .await;
    receiver.wait_for(1, WAIT).await;
    wait_until("the failed attempt in history", async || {
        history(&server, "").await.len() == 1
    })
    .await;
    let failed = history(&server, "").await[0].clone();
    assert_eq!(failed["status"], "FAILED");
    let history_id = failed["id"].as_i64().unwrap();
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/r"),
            Some("new-token"),
        )
        .await;
    let answer = call(
        Method::POST,
        &format!("callback_retry?id={history_id}"),
        "alice",
    )
    .await;
    assert_eq!(answer, ok);
    let resent = receiver.received().last().unwrap().clone();
    assert_eq!(resent.header("x-devops-webhook-token"), "new-token");
    assert_eq!(
        resent.header("x-devops-webhook-unique-id"),
        receiver.received()[0].header("x-devops-webhook-unique-id")
    );
    let verifier = standardwebhooks::Webhook::from_bytes(b"new-token".to_vec()).unwrap();
    verifier
        .verify(&resent.body, &resent.headers)
        .expect("fresh signature with the current token");
    assert_eq!(&resent.body[..], br#"{"event":"BUILD_END","data":{"n":1}}"#);
    let rows = history(&server, "").await;
    assert_eq!(rows.len(), 2, "the re-send is a new history row");
    assert_eq!(
        (rows[0]["status"].clone(), rows[0]["attempt"].clone()),
        (json!("SUCCESS"), json!(2))
    );

    // A re-send that fails says why, with data false.
    receiver.script("/r", vec![Answer::Status(502)]);
    let (status, body) = call(
        Method::POST,
        &format!("callback_retry?id={history_id}"),
        "alice",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["status"].clone(), body["data"].clone()),
        (json!(0), json!(false))
    );
    assert!(body["message"].as_str().unwrap().contains("502"), "{body}");

    // Permissions and bad input.
    for route in [
        format!("callback_enable?id={id}"),
        format!("callback_disable?id={id}"),
    ] {
        assert_error(
            &call(Method::PUT, &route, "mary").await,
            403,
            2101104,
            &["mary"],
        );
        assert_error(&call(Method::PUT, &route, "sam").await, 403, 2101104, &[]);
    }
    assert_error(
        &call(
            Method::POST,
            &format!("callback_retry?id={history_id}"),
            "mary",
        )
        .await,
        403,
        2101104,
        &[],
    );
    assert_error(
        &call(Method::PUT, "callback_enable?id=987654", "alice").await,
        404,
        2101136,
        &["987654"],
    );
    assert_error(
        &call(Method::PUT, "callback_disable", "alice").await,
        400,
        400,
        &["id"],
    );
    assert_error(
        &call(Method::POST, "callback_retry?id=987654", "alice").await,
        404,
        2101134,
        &["987654"],
    );
    assert_error(
        &call(Method::POST, "callback_retry?id=x", "alice").await,
        400,
        400,
        &["id"],
    );
    // Another project's history row is not found from here.
    let other = server
        .v4(
            Method::POST,
            "other",
            &format!("/callback_retry?id={history_id}"),
            Some("olga"),
        )
        .await;
    assert_error(&other, 404, 2101134, &[]);
}

async fn a_hanging_host_does_not_slow_a_healthy_one(backend: Backend) {
    const HEALTHY: usize = 120;
    const HANGING: usize = 40;
    let db = TestDb::new(backend).await;
    let server = start(
        &db,
        &[
            ("DELIVERY_CONCURRENCY", "8"),
            ("DELIVERY_MAX_IN_FLIGHT_PER_HOST", "4"),
            ("DELIVERY_TIMEOUT_MS", "2000"),
            ("DELIVERY_RETRY_SCHEDULE", "none"),
        ],
    )
    .await;
    let receiver = Receiver::start().await;
    receiver.script(
        "/hang",
        (0..HANGING)
            .map(|_| Answer::Slow(Duration::from_secs(10)))
            .collect(),
    );
    // Two hosts: the hanging receiver by address, the healthy one by name.
    server
        .register(
            "demo",
            "alice",
            "BUILD_TASK_START",
            &receiver.url("/hang"),
            None,
        )
        .await;
    let healthy = format!("http://localhost:{}/healthy", receiver.addr.port());
    server
        .register("demo", "alice", "BUILD_TASK_END", &healthy, None)
        .await;

    let publish = |event: &'static str, count: usize| {
        let batch: Vec<Value> = (0..count)
            .map(|i| json!({"projectId": "demo", "event": event, "data": {"i": i}}))
            .collect();
        let server = &server;
        async move {
            let (status, body) = server
                .service_post("/service/callbacks/events:batch", &json!(batch).to_string())
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    let healthy_arrivals = || {
        receiver
            .received()
            .iter()
            .filter(|r| r.path == "/healthy")
            .count()
    };

    // The hanging host's events first, then the healthy ones.
    publish("BUILD_TASK_START", HANGING).await;
    publish("BUILD_TASK_END", HEALTHY).await;
    wait_until(
        "the healthy deliveries beside the hanging host",
        async || healthy_arrivals() >= HEALTHY,
    )
    .await;
    // Wait for a few hanging attempts to time out, so history shows their whole span.
    let mut rows = Vec::new();
    wait_until("hanging attempts in history", async || {
        rows = history(&server, "event=BUILD_TASK_START").await;
        rows.len() >= 8
    })
    .await;
    // From the server's records: the hanging host never held more than its cap of attempts at
    // once, and healthy attempts started while it held them (their slots were not taken).
    let spans: Vec<(i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["startTime"].as_i64().unwrap(),
                r["endTime"].as_i64().unwrap(),
            )
        })
        .collect();
    let most_at_once = spans
        .iter()
        .map(|&(start, _)| {
            spans
                .iter()
                .filter(|&&(s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most_at_once <= 4,
        "{most_at_once} hanging attempts at once, over the host's cap of 4"
    );
    let first_hang_end = spans.iter().map(|&(_, end)| end).min().unwrap();
    let healthy_rows = history(&server, "event=BUILD_TASK_END").await;
    let healthy_beside = healthy_rows
        .iter()
        .filter(|r| r["startTime"].as_i64().unwrap() < first_hang_end)
        .count();
    eprintln!(
        "[{backend:?}] at most {most_at_once} hanging attempts at once; {healthy_beside} healthy \
         attempts started before the first hanging one ended"
    );
    assert!(
        healthy_beside >= 10,
        "only {healthy_beside} healthy attempts ran beside the hanging ones"
    );
}

async fn old_history_and_deliveries_are_pruned(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start(&db, &[]).await;
    server.stop().await;
    let day = 86_400_000_i64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (old, recent) = (now - 31 * day, now - 29 * day);
    let mut statements = Vec::new();
    // Each event's finished delivery (ids 1 and 3) has one attempt in history.
    for (tag, at, attempted) in [("old", old, 1), ("recent", recent, 3)] {
        statements.push(format!(
            "INSERT INTO events (project_id, event_id, event, body, deliveries, created_at) \
             VALUES ('demo', '{tag}', 'BUILD_END', '{{}}', 2, {at})"
        ));
        for (status, suffix) in [("SUCCESS", "done"), ("PENDING", "waiting")] {
            statements.push(format!(
                "INSERT INTO deliveries (event_pk, callback_id, host, status, attempts, next_attempt_at, \
                     created_at, updated_at) \
                 SELECT id, 1, 'h-{suffix}', '{status}', 1, {far}, {at}, {at} FROM events WHERE event_id = '{tag}'",
                far = now + day
            ));
        }
        statements.push(format!(
            "INSERT INTO callback_history (delivery_id, callback_id, project_id, url, event, status, attempt, \
                 request_headers, request_body, start_time, end_time, created_at) \
             VALUES ({attempted}, 1, 'demo', 'http://x/{tag}', 'BUILD_END', 'SUCCESS', 1, '[]', '{{}}', {at}, {at}, {at})"
        ));
    }
    for statement in &statements {
        db.execute(statement).await;
    }
    let _server = start(
        &db,
        &[
            ("HISTORY_RETENTION_DAYS", "30"),
            ("RETENTION_SWEEP_SECS", "1"),
        ],
    )
    .await;
    wait_until("the sweep", async || {
        db.scalar("SELECT COUNT(*) FROM callback_history").await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM callback_history WHERE url = 'http://x/recent'")
            .await,
        1
    );
    let left = "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.id = d.event_pk";
    assert_eq!(
        db.scalar(&format!(
            "{left} WHERE e.event_id = 'old' AND d.status = 'SUCCESS'"
        ))
        .await,
        0,
        "old and finished: gone"
    );
    assert_eq!(
        db.scalar(&format!(
            "{left} WHERE e.event_id = 'old' AND d.status = 'PENDING'"
        ))
        .await,
        1,
        "still pending: kept"
    );
    assert_eq!(
        db.scalar(&format!("{left} WHERE e.event_id = 'recent'"))
            .await,
        2,
        "recent: kept"
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM events").await,
        2,
        "events with a pending delivery stay"
    );
}
