//! Where each delivery stands, in the deliveries view and in history: PENDING, RETRYING with
//! its next attempt, SUCCESS, FAILED, CANCELLED with the reason; manual re-sends are marked and
//! settle their delivery.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{
    Backend, TestDb, TestServer, WAIT, backend_tests, start_delivering, wait_until,
};
use crate::receiver::{Answer, Receiver};
use crate::recovery::{callback_id, publish_many, wait_for_deliveries};

backend_tests!(
    the_deliveries_view_shows_where_each_delivery_stands,
    a_manual_resend_is_marked_and_settles_its_delivery,
);

/// A page of the callback's deliveries as alice sees it.
async fn view(server: &TestServer, callback: i64, query: &str) -> Value {
    let (status, body) = server
        .v4(
            Method::GET,
            "demo",
            &format!("/callback_deliveries?id={callback}&{query}"),
            Some("alice"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

async fn the_deliveries_view_shows_where_each_delivery_stands(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[("DELIVERY_RETRY_SCHEDULE", "100ms")]).await;
    let receiver = Receiver::start().await;
    receiver.script("/hang", vec![Answer::Hang; 3]);
    receiver.script(
        "/later",
        vec![Answer::RetryAfter(503, "3600".to_owned()); 3],
    );
    receiver.answer_by_default(Answer::Status(200));
    receiver.script("/fail", vec![Answer::Status(500); 6]);
    let mut ids = std::collections::HashMap::new();
    for path in ["/ok", "/hang", "/later", "/fail"] {
        let url = receiver.url(path);
        server
            .register("demo", "alice", "BUILD_END", &url, None)
            .await;
        ids.insert(path, callback_id(&server, &url).await);
    }
    let before = chrono::Utc::now().timestamp_millis();
    publish_many(&server, 3).await;

    // Delivered, newest first, paged like every list.
    wait_for_deliveries(&server, ids["/ok"], "SUCCESS", 3).await;
    let page = view(&server, ids["/ok"], "page=1&pageSize=2").await;
    assert_eq!(
        (&page["count"], &page["pageSize"], &page["totalPages"]),
        (&json!(3), &json!(2), &json!(2))
    );
    let records = page["records"].as_array().unwrap();
    assert!(
        records[0]["id"].as_i64() > records[1]["id"].as_i64(),
        "{page}"
    );
    let ok = &records[0];
    assert_eq!(
        (
            &ok["status"],
            &ok["attempts"],
            &ok["event"],
            &ok["lastResponseCode"]
        ),
        (
            &json!("SUCCESS"),
            &json!(1),
            &json!("BUILD_END"),
            &json!(200)
        ),
        "{ok}"
    );
    assert!(
        ok["eventId"].is_string() && ok.get("lastError").is_none(),
        "{ok}"
    );
    assert!(ok["createdTime"].as_i64().unwrap() >= before, "{ok}");
    assert!(ok["updatedTime"].as_i64() >= ok["createdTime"].as_i64());
    assert!(ok.get("nextAttemptAt").is_none(), "{ok}");
    let delivered: Vec<i64> = receiver
        .received()
        .iter()
        .filter(|r| r.path == "/ok")
        .map(|r| r.header("x-devops-webhook-unique-id").parse().unwrap())
        .collect();
    assert!(
        delivered.contains(&ok["id"].as_i64().unwrap()),
        "the id is the unique id sent"
    );

    // Still in its first attempt (the receiver holds it): PENDING, due already.
    wait_until("the held attempts", WAIT, async || {
        receiver
            .received()
            .iter()
            .filter(|r| r.path == "/hang")
            .count()
            == 3
    })
    .await;
    let pending = view(&server, ids["/hang"], "status=PENDING").await;
    assert_eq!(pending["count"], 3, "{pending}");
    let held = &pending["records"][0];
    assert_eq!(
        (&held["status"], &held["attempts"]),
        (&json!("PENDING"), &json!(0))
    );
    assert!(held["nextAttemptAt"].as_i64().unwrap() <= chrono::Utc::now().timestamp_millis());

    // Failed once, the receiver asked for an hour: RETRYING, with the next attempt.
    wait_for_deliveries(&server, ids["/later"], "RETRYING", 3).await;
    let retrying = &view(&server, ids["/later"], "").await["records"][0];
    assert_eq!(
        (&retrying["attempts"], &retrying["lastResponseCode"]),
        (&json!(1), &json!(503))
    );
    assert!(
        retrying["lastError"].as_str().unwrap().contains("503"),
        "{retrying}"
    );
    let due = retrying["nextAttemptAt"].as_i64().unwrap() - chrono::Utc::now().timestamp_millis();
    assert!(due > 3_000_000 && due <= 3_600_000, "due in {due} ms");

    // Given up after the schedule: FAILED; the status filter finds only those.
    wait_for_deliveries(&server, ids["/fail"], "FAILED", 3).await;
    let failed = view(&server, ids["/fail"], "").await;
    for record in failed["records"].as_array().unwrap() {
        assert_eq!(
            (&record["status"], &record["attempts"]),
            (&json!("FAILED"), &json!(2))
        );
        assert_eq!(
            record["lastError"], "HTTP 500 Internal Server Error",
            "{record}"
        );
    }
    assert_eq!(
        view(&server, ids["/fail"], "status=SUCCESS").await["count"],
        0
    );

    // Disabled: the retrying ones are CANCELLED at once, with the reason.
    let (status, body) = server
        .v4(
            Method::PUT,
            "demo",
            &format!("/callback_disable?id={}", ids["/later"]),
            Some("alice"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cancelled = view(&server, ids["/later"], "status=CANCELLED").await;
    assert_eq!(cancelled["count"], 3, "{cancelled}");
    let record = &cancelled["records"][0];
    assert_eq!(record["cancelReason"], "disabled by alice", "{record}");
    assert!(record.get("nextAttemptAt").is_none(), "{record}");

    // History shows each attempt's delivery as it stands now.
    let (_, history) = server.history("demo", "alice", "pageSize=100").await;
    let states: Vec<(&str, &str)> = history["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let path = r["callBackUrl"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap();
            (path, r["delivery"]["status"].as_str().unwrap_or("none"))
        })
        .collect();
    for (path, state) in [
        ("ok", "SUCCESS"),
        ("later", "CANCELLED"),
        ("fail", "FAILED"),
    ] {
        assert!(
            states.contains(&(path, state)),
            "{path} {state} in {states:?}"
        );
    }
    let later = history["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["callBackUrl"] == receiver.url("/later"))
        .unwrap();
    assert_eq!(
        later["delivery"]["cancelReason"], "disabled by alice",
        "{later}"
    );
}

async fn a_manual_resend_is_marked_and_settles_its_delivery(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[("DELIVERY_RETRY_SCHEDULE", "none")]).await;
    let receiver = Receiver::start().await;
    receiver.script("/once", vec![Answer::Status(500)]);
    let url = receiver.url("/once");
    server
        .register("demo", "alice", "BUILD_END", &url, None)
        .await;
    let callback = callback_id(&server, &url).await;
    publish_many(&server, 1).await;
    wait_for_deliveries(&server, callback, "FAILED", 1).await;
    let attempt = &server.wait_for_history("demo", "alice", 1).await[0];
    assert_eq!(attempt["manual"], false);
    assert_eq!(attempt["delivery"]["status"], "FAILED", "{attempt}");

    let (status, body) = server
        .v4(
            Method::POST,
            "demo",
            &format!("/callback_retry?id={}", attempt["id"]),
            Some("alice"),
        )
        .await;
    assert_eq!(
        (status, &body["data"]),
        (StatusCode::OK, &json!(true)),
        "{body}"
    );
    let history = server.wait_for_history("demo", "alice", 2).await;
    let resent = &history[0];
    assert_eq!(
        (&resent["manual"], &resent["status"]),
        (&json!(true), &json!("SUCCESS"))
    );
    assert_eq!(
        resent["delivery"]["status"], "SUCCESS",
        "the re-send settled it: {resent}"
    );
    // Both show the event's body: the scheduled attempt reads it from the event, the re-send
    // stored what it sent.
    assert_eq!(resent["requestBody"], history[1]["requestBody"]);
    assert!(
        resent["requestBody"].as_str().unwrap().starts_with('{'),
        "{resent}"
    );
    let last = receiver.received().last().cloned().unwrap();
    assert_eq!(
        std::str::from_utf8(&last.body).ok(),
        resent["requestBody"].as_str()
    );
    let delivery = &view(&server, callback, "").await["records"][0];
    assert_eq!(
        (
            &delivery["status"],
            &delivery["attempts"],
            &delivery["lastResponseCode"]
        ),
        (&json!("SUCCESS"), &json!(1), &json!(200)),
        "a re-send is not an attempt of the schedule: {delivery}"
    );
}
