//! Delivery end to end: intake, the worker, the HTTP request a receiver sees, retries, the SSRF
//! guard at connect time, idempotent event ids, and the history API.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{
    Backend, DELIVERY_VARS, TestDb, TestServer, WAIT, assert_error, backend_tests, cli, enc,
    header_value, wait_until, window_in,
};
use crate::receiver::{Answer, Receiver};

backend_tests!(
    a_delivery_carries_the_exact_body_and_headers,
    only_enabled_matching_callbacks_receive,
    a_500_then_200_ends_in_success_with_both_attempts_in_history,
    a_redirect_is_a_failure_and_is_not_followed,
    a_hanging_receiver_times_out,
    loopback_is_refused_at_connect_time_without_the_allowlist,
    a_repeated_event_id_is_accepted_once,
    batch_intake_answers_in_order_and_rejects_bad_items,
    intake_rejects_bad_events,
    history_filters_pages_and_guards,
    history_windows_are_read_in_the_time_zone,
    the_cli_publishes_events,
);

async fn setup(backend: Backend) -> (TestDb, TestServer, Receiver) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, DELIVERY_VARS).await;
    server.set_member("demo", "alice", "admin").await;
    (db, server, Receiver::start().await)
}

async fn history(server: &TestServer, project: &str, query: &str) -> Value {
    let (status, body) = server.history(project, "alice", query).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

/// Waits until history shows `n` attempts of the project.
async fn wait_for_history(server: &TestServer, project: &str, n: u64) -> Vec<Value> {
    server
        .wait_for_history(project, "alice", usize::try_from(n).unwrap())
        .await
}

async fn a_delivery_carries_the_exact_body_and_headers(backend: Backend) {
    let (db, server, receiver) = setup(backend).await;
    let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/whsec"),
            Some(whsec),
        )
        .await;
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/plain"),
            Some("plain-token"),
        )
        .await;
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/none"), None)
        .await;

    // Odd spacing, key order, escapes and non-ASCII text must arrive untouched.
    let data =
        r#"{ "z": 1,  "a": [true, null, 2.50], "text": "caf\u00e9 ✓ \"q\"", "buildId": "b-1" }"#;
    let (status, answer) = server
        .publish(
            "demo",
            &format!(r#"{{"event":"BUILD_END","data":{data},"eventId":"evt-1"}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({"status": 0, "data": {"eventId": "evt-1", "deliveries": 3}})
    );

    let received = receiver.wait_for(3, WAIT).await;
    let expected_body = format!(r#"{{"event":"BUILD_END","data":{data}}}"#);
    let mut unique_ids = Vec::new();
    for request in &received {
        assert_eq!(
            std::str::from_utf8(&request.body).unwrap(),
            expected_body,
            "{}",
            request.path
        );
        assert_eq!(
            request.header("content-type"),
            "application/json; charset=utf-8"
        );
        assert_eq!(
            request.header("user-agent"),
            concat!("devops-callbacks/", env!("CARGO_PKG_VERSION"))
        );
        assert!(
            request
                .header("x-devops-trace-biz-id")
                .starts_with("bizId-")
        );
        let unique_id = request.header("x-devops-webhook-unique-id");
        assert!(unique_id.parse::<i64>().is_ok(), "{unique_id}");
        unique_ids.push(unique_id.to_owned());
        let headers = &request.headers;
        match request.path.as_str() {
            "/whsec" => {
                assert_eq!(request.header("x-devops-webhook-token"), whsec);
                assert_eq!(request.header("webhook-id"), unique_id);
                let verifier = standardwebhooks::Webhook::new(whsec).unwrap();
                verifier
                    .verify(&request.body, headers)
                    .expect("whsec_ signature verifies");
            }
            "/plain" => {
                assert_eq!(request.header("x-devops-webhook-token"), "plain-token");
                let verifier =
                    standardwebhooks::Webhook::from_bytes(b"plain-token".to_vec()).unwrap();
                verifier
                    .verify(&request.body, headers)
                    .expect("plain-token signature verifies");
                let forged =
                    standardwebhooks::Webhook::from_bytes(b"other-token".to_vec()).unwrap();
                assert!(
                    forged.verify(&request.body, headers).is_err(),
                    "a wrong key must not verify"
                );
            }
            "/none" => {
                assert_eq!(request.header("x-devops-webhook-token"), "NONE");
                assert!(!headers.contains_key("webhook-signature"));
                assert!(!headers.contains_key("webhook-id"));
            }
            other => panic!("unexpected path {other}"),
        }
    }
    unique_ids.sort();
    unique_ids.dedup();
    assert_eq!(unique_ids.len(), 3, "one delivery id per callback");

    // History keeps the request with the token masked.
    let records = wait_for_history(&server, "demo", 3).await;
    for record in &records {
        assert_eq!(record["status"], "SUCCESS");
        assert_eq!(record["attempt"], 1);
        assert_eq!(record["responseCode"], 200);
        assert_eq!(record["responseBody"], "answered 200");
        assert_eq!(record["requestBody"], expected_body.as_str());
        assert_eq!(record["events"], "BUILD_END");
        let token = header_value(record, "X-DEVOPS-WEBHOOK-TOKEN");
        assert!(token == "******" || token == "NONE", "{token}");
        assert!(record["endTime"].as_i64() >= record["startTime"].as_i64());
    }
    let everything = history(&server, "demo", "").await.to_string();
    assert!(!everything.contains("plain-token") && !everything.contains(whsec));
    // The body is stored once, with the event: the attempts shown above read it from there.
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM callback_history WHERE body_from_event AND request_body = ''"
        )
        .await,
        3
    );
}

async fn only_enabled_matching_callbacks_receive(backend: Backend) {
    let (db, server, receiver) = setup(backend).await;
    server.set_member("other", "alice", "admin").await;
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/yes"), None)
        .await;
    server
        .register(
            "demo",
            "alice",
            "BUILD_START",
            &receiver.url("/other-event"),
            None,
        )
        .await;
    server
        .register(
            "other",
            "alice",
            "BUILD_END",
            &receiver.url("/other-project"),
            None,
        )
        .await;
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/disabled"),
            None,
        )
        .await;
    db.execute("UPDATE callbacks SET enabled = FALSE WHERE url LIKE '%/disabled'")
        .await;

    let (_, answer) = server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    assert_eq!(answer["data"]["deliveries"], 1);
    assert!(
        answer["data"]["eventId"]
            .as_str()
            .is_some_and(|id| id.len() == 36),
        "generated: {answer}"
    );
    receiver.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paths: Vec<_> = receiver.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/yes"]);

    // An event nobody listens to is accepted with no deliveries.
    let (_, answer) = server
        .publish("demo", r#"{"event":"BUILD_TASK_PAUSE","data":{}}"#)
        .await;
    assert_eq!(answer["data"]["deliveries"], 0);
}

async fn a_500_then_200_ends_in_success_with_both_attempts_in_history(backend: Backend) {
    let (_db, server, receiver) = setup(backend).await;
    receiver.script("/flaky", vec![Answer::Status(500)]);
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/flaky"),
            Some("t"),
        )
        .await;
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{"n":1}}"#)
        .await;

    let received = receiver.wait_for(2, WAIT).await;
    assert_eq!(
        received[0].header("x-devops-webhook-unique-id"),
        received[1].header("x-devops-webhook-unique-id")
    );
    assert_ne!(
        received[0].header("x-devops-trace-biz-id"),
        received[1].header("x-devops-trace-biz-id")
    );
    let gap = received[1].at - received[0].at;
    assert!(
        gap >= Duration::from_millis(200),
        "the retry waited for the schedule: {gap:?}"
    );

    let records = wait_for_history(&server, "demo", 2).await;
    let (second, first) = (&records[0], &records[1]);
    assert_eq!(
        (first["status"].clone(), first["attempt"].clone()),
        (json!("FAILED"), json!(1))
    );
    assert_eq!(first["responseCode"], 500);
    assert!(first["errorMsg"].as_str().unwrap().contains("500"));
    assert_eq!(
        (second["status"].clone(), second["attempt"].clone()),
        (json!("SUCCESS"), json!(2))
    );
    assert!(second.get("errorMsg").is_none());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.count(), 2, "no attempt after the success");
}

async fn a_redirect_is_a_failure_and_is_not_followed(backend: Backend) {
    let (_db, server, receiver) = setup(backend).await;
    receiver.script("/moved", vec![Answer::Redirect(receiver.url("/target"))]);
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/moved"), None)
        .await;
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;

    let records = wait_for_history(&server, "demo", 2).await;
    let first = records.last().unwrap();
    assert_eq!(first["status"], "FAILED");
    assert_eq!(first["responseCode"], 302);
    assert!(
        first["errorMsg"].as_str().unwrap().contains("redirect"),
        "{first}"
    );
    assert!(
        receiver.received().iter().all(|r| r.path == "/moved"),
        "the Location was never requested"
    );
}

async fn a_hanging_receiver_times_out(backend: Backend) {
    let (_db, server, receiver) = setup(backend).await;
    receiver.script("/hang", vec![Answer::Slow(Duration::from_secs(5))]);
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/hang"), None)
        .await;
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    let records = wait_for_history(&server, "demo", 2).await;
    let first = records.last().unwrap();
    assert_eq!(first["status"], "FAILED");
    assert!(
        first["errorMsg"].as_str().unwrap().contains("timed out"),
        "{first}"
    );
    let took = first["endTime"].as_i64().unwrap() - first["startTime"].as_i64().unwrap();
    assert!(
        (1900..4000).contains(&took),
        "DELIVERY_TIMEOUT_MS=2000 cut it off after {took} ms"
    );
    assert_eq!(
        records[0]["status"], "SUCCESS",
        "the retry got the default 200"
    );
}

async fn loopback_is_refused_at_connect_time_without_the_allowlist(backend: Backend) {
    let (db, server, receiver) = setup(backend).await;
    // Registered while the allowlist was open (or, for the name, resolving elsewhere then).
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/literal"),
            None,
        )
        .await;
    let by_name = format!("http://localhost:{}/by-name", receiver.addr.port());
    server
        .register("demo", "alice", "BUILD_END", &by_name, None)
        .await;
    server.stop().await;

    let no_allowlist: Vec<(&str, &str)> = DELIVERY_VARS
        .iter()
        .map(|&(k, v)| {
            if k == "CALLBACK_ALLOWED_CIDRS" {
                (k, "")
            } else {
                (k, v)
            }
        })
        .chain([("DELIVERY_RETRY_SCHEDULE", "none")])
        .collect();
    let server = TestServer::start_with(&db, &no_allowlist).await;
    let (_, answer) = server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    assert_eq!(answer["data"]["deliveries"], 2);
    let records = wait_for_history(&server, "demo", 2).await;
    for record in &records {
        assert_eq!(record["status"], "FAILED");
        let error = record["errorMsg"].as_str().unwrap();
        assert!(
            error.contains("SSRF") && error.contains("loopback"),
            "{error}"
        );
        assert!(record.get("responseCode").is_none());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 0, "nothing reached the loopback receiver");
}

async fn a_repeated_event_id_is_accepted_once(backend: Backend) {
    let (_db, server, receiver) = setup(backend).await;
    server
        .register("demo", "alice", "BUILD_START", &receiver.url("/once"), None)
        .await;
    let body = r#"{"event":"BUILD_START","data":{"try":1},"eventId":"build-42-start"}"#;
    let first = server.publish("demo", body).await;
    assert_eq!(
        first.1,
        json!({"status": 0, "data": {"eventId": "build-42-start", "deliveries": 1}})
    );
    // A second callback now matches, but the replay answers what was answered the first time.
    server
        .register("demo", "alice", "BUILD_START", &receiver.url("/late"), None)
        .await;
    let again = server
        .publish("demo", &body.replace("\"try\":1", "\"try\":2"))
        .await;
    assert_eq!(again, first);
    // The same id in another project is another event.
    server.set_member("other", "alice", "admin").await;
    let (_, other) = server.publish("other", body).await;
    assert_eq!(other["data"]["deliveries"], 0);

    receiver.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert!(
        std::str::from_utf8(&received[0].body)
            .unwrap()
            .contains("\"try\":1")
    );
}

async fn batch_intake_answers_in_order_and_rejects_bad_items(backend: Backend) {
    let (_db, server, receiver) = setup(backend).await;
    server.set_member("other", "alice", "admin").await;
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/demo"), None)
        .await;
    server
        .register(
            "other",
            "alice",
            "BUILD_END",
            &receiver.url("/other-1"),
            None,
        )
        .await;
    server
        .register(
            "other",
            "alice",
            "BUILD_END",
            &receiver.url("/other-2"),
            None,
        )
        .await;
    let batch = json!([
        {"projectId": "demo", "event": "BUILD_END", "data": {"i": 0}, "eventId": "a"},
        {"projectId": "other", "event": "BUILD_END", "data": {"i": 1}},
        {"projectId": "demo", "event": "BUILD_START", "data": {"i": 2}, "eventId": "c"},
        {"projectId": "demo", "event": "BUILD_END", "data": {"i": 3}, "eventId": "a"},
    ]);
    let (status, body) = server
        .service_post("/service/callbacks/events:batch", &batch.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answers = body["data"].as_array().unwrap();
    assert_eq!(answers.len(), 4);
    assert_eq!(answers[0], json!({"eventId": "a", "deliveries": 1}));
    assert_eq!(answers[1]["deliveries"], 2);
    assert_eq!(answers[2], json!({"eventId": "c", "deliveries": 0}));
    assert_eq!(
        answers[3],
        json!({"eventId": "a", "deliveries": 1}),
        "a repeat inside the batch"
    );
    receiver.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 3);

    let path = "/service/callbacks/events:batch";
    assert_error(
        &server.service_post(path, "[]").await,
        400,
        400,
        &["1 to 1000"],
    );
    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"projectId": "demo", "event": "BUILD_END", "data": {}}))
        .collect();
    assert_error(
        &server
            .service_post(path, &json!(too_many).to_string())
            .await,
        400,
        400,
        &["1001"],
    );
    let bad = json!([
        {"projectId": "demo", "event": "BUILD_END", "data": {}},
        {"projectId": "no such project!", "event": "BUILD_END", "data": {}},
    ]);
    assert_error(
        &server.service_post(path, &bad.to_string()).await,
        400,
        400,
        &["[1]", "projectId"],
    );
    let unknown = json!([{"projectId": "demo", "event": "BUILD_NOPE", "data": {}}]);
    assert_error(
        &server.service_post(path, &unknown.to_string()).await,
        400,
        400,
        &["BUILD_NOPE"],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 3, "rejected batches wrote nothing");
}

async fn intake_rejects_bad_events(backend: Backend) {
    let (_db, server, _receiver) = setup(backend).await;
    let path = "/service/callbacks/projects/demo/events";
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("not json".into(), vec!["JSON"]),
        (r#"{"data":{}}"#.into(), vec!["event"]),
        (r#"{"event":"BUILD_END"}"#.into(), vec!["data"]),
        (
            r#"{"event":"build_end","data":{}}"#.into(),
            vec!["event", "BUILD_END"],
        ),
        (
            format!(
                r#"{{"event":"BUILD_END","data":{{}},"eventId":"{}"}}"#,
                "x".repeat(129)
            ),
            vec!["eventId", "128"],
        ),
        (
            r#"{"event":"BUILD_END","data":{},"eventId":"  "}"#.into(),
            vec!["eventId"],
        ),
        (r#"[1,2]"#.into(), vec!["JSON"]),
        (
            r#"{"event":"BUILD_END","data":[1]}"#.into(),
            vec!["data", "object"],
        ),
        (
            r#"{"event":"BUILD_END","data":"text"}"#.into(),
            vec!["data", "object"],
        ),
    ];
    for (body, words) in cases {
        assert_error(&server.service_post(path, &body).await, 400, 400, &words);
    }
    assert_error(
        &server
            .service_post(
                "/service/callbacks/projects/bad%20project/events",
                r#"{"event":"BUILD_END","data":{}}"#,
            )
            .await,
        400,
        400,
        &["projectId"],
    );
    let unauthenticated = reqwest::Client::new()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(r#"{"event":"BUILD_END","data":{}}"#)
        .send()
        .await
        .unwrap();
    assert_error(
        &crate::common::envelope_of(unauthenticated).await,
        401,
        401,
        &["X-DEVOPS-BK-TOKEN"],
    );
}

async fn history_filters_pages_and_guards(backend: Backend) {
    let (_db, server, receiver) = setup(backend).await;
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/a"), None)
        .await;
    server
        .register("demo", "alice", "BUILD_START", &receiver.url("/b"), None)
        .await;
    for i in 0..3 {
        let answer = server
            .publish(
                "demo",
                &format!(r#"{{"event":"BUILD_END","data":{{"i":{i}}}}}"#),
            )
            .await;
        assert_eq!(answer.0, StatusCode::OK, "{answer:?}");
    }
    let answer = server
        .publish("demo", r#"{"event":"BUILD_START","data":{}}"#)
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{answer:?}");
    let all = wait_for_history(&server, "demo", 4).await;
    assert_eq!(all.len(), 4);
    assert!(
        all.windows(2)
            .all(|w| w[0]["createdTime"].as_i64() >= w[1]["createdTime"].as_i64()),
        "newest first"
    );

    let by_url = history(
        &server,
        "demo",
        &format!("url={}", enc(&receiver.url("/a"))),
    )
    .await;
    assert_eq!(by_url["count"], 3);
    let by_event = history(&server, "demo", "event=BUILD_START").await;
    assert_eq!(by_event["count"], 1);
    assert_eq!(by_event["records"][0]["callBackUrl"], receiver.url("/b"));
    let paged = history(&server, "demo", "pageSize=3&page=2").await;
    assert_eq!(
        (
            paged["totalPages"].clone(),
            paged["records"].as_array().unwrap().len()
        ),
        (json!(2), 1)
    );
    let future = history(
        &server,
        "demo",
        &format!(
            "startTime={}&endTime={}",
            enc("2999-01-01 00:00:00"),
            enc("2999-01-02 00:00:00")
        ),
    )
    .await;
    assert_eq!(future["count"], 0);
    let window = history(
        &server,
        "demo",
        &format!(
            "startTime={}&endTime={}",
            enc("2000-01-01 00:00:00"),
            enc("2999-12-31 23:59:59")
        ),
    )
    .await;
    assert_eq!(window["count"], 4);

    let get = |query: String| {
        let server = &server;
        async move {
            server
                .v4(
                    Method::GET,
                    "demo",
                    &format!("/callback_history?{query}"),
                    Some("alice"),
                )
                .await
        }
    };
    assert_error(
        &get(format!("startTime={}", enc("2024-13-01 00:00:00"))).await,
        400,
        400,
        &["startTime"],
    );
    assert_error(
        &get("endTime=yesterday".to_owned()).await,
        400,
        400,
        &["endTime", "yyyy-MM-dd HH:mm:ss"],
    );
    assert_error(
        &get(format!(
            "startTime={}&endTime={}",
            enc("2024-02-02 00:00:00"),
            enc("2024-02-01 00:00:00")
        ))
        .await,
        400,
        400,
        &["startTime", "endTime"],
    );
    assert_error(&get("event=NOPE".to_owned()).await, 400, 400, &["event"]);
    assert_error(&get("pageSize=x".to_owned()).await, 400, 400, &["pageSize"]);
    // Zero or less means the defaults, as in bk-ci.
    let defaults = history(&server, "demo", "page=0&pageSize=-1").await;
    assert_eq!(
        (&defaults["page"], &defaults["pageSize"], &defaults["count"]),
        (&json!(1), &json!(20), &json!(4))
    );
    let stranger = server
        .v4(Method::GET, "demo", "/callback_history", Some("sam"))
        .await;
    assert_error(&stranger, 403, 2101133, &["sam"]);
    server.set_member("demo", "mary", "member").await;
    assert_eq!(
        server
            .v4(Method::GET, "demo", "/callback_history", Some("mary"))
            .await
            .0,
        StatusCode::OK
    );
}

/// `startTime`/`endTime` are read in `TIME_ZONE`: a ten-minute window around now written in
/// the configured zone (UTC+14) finds the attempt, the same wall-clock window in UTC does not.
async fn history_windows_are_read_in_the_time_zone(backend: Backend) {
    let db = TestDb::new(backend).await;
    let vars: Vec<(&str, &str)> = DELIVERY_VARS
        .iter()
        .copied()
        .chain([("TIME_ZONE", "Pacific/Kiritimati")])
        .collect();
    let server = TestServer::start_with(&db, &vars).await;
    server.set_member("demo", "alice", "admin").await;
    let receiver = Receiver::start().await;
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/tz"), None)
        .await;
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    let ten_minutes = chrono::Duration::minutes(10);
    let local = window_in(chrono_tz::Pacific::Kiritimati, ten_minutes);
    let mut page = Value::Null;
    wait_until("the attempt in the local window", WAIT, async || {
        page = history(&server, "demo", &local).await;
        page["count"] == 1
    })
    .await;
    assert_eq!(page["records"][0]["callBackUrl"], receiver.url("/tz"));
    let utc = window_in(chrono_tz::UTC, ten_minutes);
    assert_eq!(history(&server, "demo", &utc).await["count"], 0, "{utc}");

    // The same window as instants (epoch milliseconds, ISO-8601 with an offset) and as ISO-8601
    // local times (read in the zone); mixed forms too.
    let now = chrono::Utc::now();
    let (from, to) = (now - ten_minutes, now + ten_minutes);
    let local = |at: chrono::DateTime<chrono::Utc>| {
        at.with_timezone(&chrono_tz::Pacific::Kiritimati)
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    };
    for (start, end) in [
        (
            from.timestamp_millis().to_string(),
            to.timestamp_millis().to_string(),
        ),
        (from.to_rfc3339(), to.to_rfc3339()),
        (
            from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            to.with_timezone(&chrono::FixedOffset::east_opt(-5 * 3600).unwrap())
                .to_rfc3339(),
        ),
        (local(from), local(to)),
        (from.timestamp_millis().to_string(), local(to)),
    ] {
        let window = format!("startTime={}&endTime={}", enc(&start), enc(&end));
        assert_eq!(
            history(&server, "demo", &window).await["count"],
            1,
            "{window}"
        );
    }
    // (With an end: alone, the window would end at midnight in the zone, which `to` may pass.)
    let later = format!(
        "startTime={}&endTime={}",
        to.timestamp_millis(),
        (to + ten_minutes).timestamp_millis()
    );
    assert_eq!(history(&server, "demo", &later).await["count"], 0);
    // An offset's + sent as it is arrives as a space: the message says how to send it.
    let raw_plus = format!("startTime={}", from.to_rfc3339().replace('+', "%20"));
    let refused = server
        .v4(
            Method::GET,
            "demo",
            &format!("/callback_history?{raw_plus}"),
            Some("alice"),
        )
        .await;
    assert_error(&refused, 400, 400, &["startTime", "ISO-8601", "%2B"]);
}

async fn the_cli_publishes_events(backend: Backend) {
    let (db, server, receiver) = setup(backend).await;
    server
        .register(
            "demo",
            "alice",
            "PROJECT_UPDATE",
            &receiver.url("/cli"),
            None,
        )
        .await;
    let output = cli(
        &db,
        &[],
        &[
            "events",
            "publish",
            "--project",
            "demo",
            "--event",
            "PROJECT_UPDATE",
            "--data",
            r#"{"projectId":"demo","enable":true}"#,
            "--event-id",
            "cli-1",
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer, json!({"eventId": "cli-1", "deliveries": 1}));
    let received = receiver.wait_for(1, WAIT).await;
    assert_eq!(
        &received[0].body[..],
        br#"{"event":"PROJECT_UPDATE","data":{"projectId":"demo","enable":true}}"#
    );

    let bad = cli(
        &db,
        &[],
        &[
            "events",
            "publish",
            "--project",
            "demo",
            "--event",
            "PROJECT_UPDATE",
            "--data",
            "{not json",
        ],
    )
    .await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--data"));
}
