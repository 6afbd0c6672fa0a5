//! Bulk recovery in one server: every failed delivery of a window is sent exactly once more,
//! a second job over the same window finds nothing, a cancel stops a job, a disable cancels
//! pending deliveries that a recovery then brings back, and the routes check their callers
//! and their input.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{
    Backend, SERVICE_TOKEN, TestDb, TestServer, WAIT, assert_error, backend_tests, enc,
    start_delivering, wait_until,
};
use crate::receiver::{Answer, Receiver};

backend_tests!(
    recovery_sends_every_failed_delivery_exactly_once_more,
    cancelling_stops_a_recovery,
    a_disable_cancels_pending_deliveries_and_a_recovery_brings_them_back,
    global_callbacks_are_recovered_through_the_op_api,
    pipeline_level_callbacks_are_listed_and_recovered_too,
    recovery_routes_check_the_caller_and_the_input,
);

/// Deliveries of the big tests.
const MANY: usize = 500;

/// `yyyy-MM-dd HH:mm:ss` in the default `TIME_ZONE`, `ago` before now.
pub fn local_ago(ago: chrono::Duration) -> String {
    (chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai) - ago)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The window every recovery here starts from: a minute ago.
fn since() -> String {
    enc(&local_ago(chrono::Duration::minutes(1)))
}

/// Publishes `count` BUILD_END events of demo in one batch.
pub async fn publish_many(server: &TestServer, count: usize) {
    let batch: Vec<Value> = (0..count)
        .map(|i| json!({"projectId": "demo", "event": "BUILD_END", "data": {"i": i}}))
        .collect();
    let (status, body) = server
        .service_post("/service/callbacks/events:batch", &json!(batch).to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The id of demo's callback to `url`.
pub async fn callback_id(server: &TestServer, url: &str) -> i64 {
    let (_, list) = server.list("demo", "alice", "pageSize=100").await;
    list["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["callBackUrl"] == url)
        .unwrap_or_else(|| panic!("no callback to {url}: {list}"))["id"]
        .as_i64()
        .unwrap()
}

/// How many of the callback's deliveries stand so (`None`: all of them), as alice sees them.
pub async fn deliveries_in(server: &TestServer, callback: i64, status: Option<&str>) -> i64 {
    let filter = status.map_or(String::new(), |s| format!("&status={s}"));
    let (code, body) = server
        .v4(
            Method::GET,
            "demo",
            &format!("/callback_deliveries?id={callback}{filter}&pageSize=1"),
            Some("alice"),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    body["data"]["count"].as_i64().unwrap()
}

/// Waits until `n` of the callback's deliveries stand so.
pub async fn wait_for_deliveries(server: &TestServer, callback: i64, status: &str, n: i64) {
    wait_until(&format!("{n} {status} deliveries"), WAIT, async || {
        deliveries_in(server, callback, Some(status)).await == n
    })
    .await;
}

/// Starts a recovery of demo's callback as alice; returns the job id.
async fn recover(server: &TestServer, callback: i64, query: &str) -> i64 {
    let (status, body) = server
        .v4(
            Method::POST,
            "demo",
            &format!("/callback_recover?id={callback}&{query}"),
            Some("alice"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["jobId"].as_i64().unwrap()
}

async fn job(server: &TestServer, job: i64) -> Value {
    let (status, body) = server
        .v4(
            Method::GET,
            "demo",
            &format!("/recover_jobs/{job}"),
            Some("alice"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

async fn wait_until_done(server: &TestServer, id: i64) -> Value {
    let mut last = Value::Null;
    wait_until(&format!("job {id} to be done"), WAIT, async || {
        last = job(server, id).await;
        last["state"] == "DONE"
    })
    .await;
    last
}

/// A server whose deliveries give up after one attempt, recovering in batches of 100, and a
/// receiver that fails everything until told otherwise, with `MANY` failed deliveries to it.
async fn failed_many(db: &TestDb) -> (TestServer, Receiver, i64) {
    let server = start_delivering(
        db,
        &[
            ("DELIVERY_RETRY_SCHEDULE", "none"),
            ("RECOVER_BATCH_SIZE", "100"),
        ],
    )
    .await;
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Answer::Status(500));
    let url = receiver.url("/down");
    server
        .register("demo", "alice", "BUILD_END", &url, None)
        .await;
    let callback = callback_id(&server, &url).await;
    publish_many(&server, MANY).await;
    wait_for_deliveries(&server, callback, "FAILED", MANY as i64).await;
    (server, receiver, callback)
}

/// Each delivery id the receiver answered 2xx, with how often, must be exactly `expected`.
#[track_caller]
fn assert_each_delivered_once(delivered: &HashMap<String, usize>, expected: usize) {
    assert_eq!(
        delivered.len(),
        expected,
        "distinct deliveries answered 2xx"
    );
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
}

async fn recovery_sends_every_failed_delivery_exactly_once_more(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (server, receiver, callback) = failed_many(&db).await;
    assert_eq!(receiver.count(), MANY);
    assert!(receiver.delivered().is_empty());

    receiver.answer_by_default(Answer::Status(200));
    let id = recover(&server, callback, &format!("since={}", since())).await;
    let done = wait_until_done(&server, id).await;
    assert_eq!(
        (
            &done["jobId"],
            &done["callbackId"],
            &done["total"],
            &done["done"],
            &done["failed"]
        ),
        (
            &json!(id),
            &json!(callback),
            &json!(MANY),
            &json!(MANY),
            &json!(0)
        ),
        "{done}"
    );
    assert_eq!(done["creator"], "alice");
    wait_for_deliveries(&server, callback, "SUCCESS", MANY as i64).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_each_delivered_once(&receiver.delivered(), MANY);
    assert_eq!(receiver.count(), 2 * MANY, "nothing else was sent");

    // The recovered attempts are marked in history, with where their delivery stands.
    let (_, history) = server.history("demo", "alice", "pageSize=100").await;
    let newest = &history["data"]["records"][0];
    assert_eq!(newest["recoverJobId"], id, "{newest}");
    assert_eq!(newest["manual"], false);
    assert_eq!(newest["delivery"]["status"], "SUCCESS", "{newest}");
    assert_eq!(newest["delivery"]["recoverJobId"], id);

    // A second job over the same window finds nothing left to do, and sends nothing.
    let again = recover(&server, callback, &format!("since={}", since())).await;
    let rerun = job(&server, again).await;
    assert_eq!(
        (&rerun["state"], &rerun["total"], &rerun["done"]),
        (&json!("DONE"), &json!(0), &json!(0)),
        "{rerun}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 2 * MANY);
    assert_eq!(
        job(&server, id).await,
        done,
        "a finished job stays as it is"
    );
}

async fn cancelling_stops_a_recovery(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (server, receiver, callback) = failed_many(&db).await;
    // Slow enough that the job is still going when it is cancelled.
    receiver.answer_by_default(Answer::Slow(Duration::from_millis(200)));
    let id = recover(&server, callback, &format!("since={}", since())).await;
    wait_until("the first batch", WAIT, async || {
        job(&server, id).await["done"].as_i64().unwrap() > 0
    })
    .await;

    let cancel = |user: &'static str| {
        let server = &server;
        async move {
            server
                .v4(
                    Method::DELETE,
                    "demo",
                    &format!("/recover_jobs/{id}"),
                    Some(user),
                )
                .await
        }
    };
    let (status, body) = cancel("alice").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cancelled = body["data"].clone();
    assert_eq!(cancelled["state"], "CANCELLED", "{cancelled}");
    assert_eq!(cancelled["reason"], "cancelled by alice");
    let queued = cancelled["done"].as_u64().unwrap() as usize;
    assert!(
        queued < MANY,
        "the cancel came after the whole job: {cancelled}"
    );

    // What was queued is delivered; nothing more is queued.
    wait_for_deliveries(&server, callback, "SUCCESS", queued as i64).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        deliveries_in(&server, callback, Some("SUCCESS")).await,
        queued as i64
    );
    assert_eq!(
        deliveries_in(&server, callback, Some("FAILED")).await,
        (MANY - queued) as i64
    );
    assert_each_delivered_once(&receiver.delivered(), queued);
    assert_eq!(job(&server, id).await["done"], cancelled["done"]);

    // Cancelling again changes nothing; a finished job is not cancelled.
    let (_, again) = cancel("alice").await;
    assert_eq!(again["data"], job(&server, id).await);
    let empty = recover(
        &server,
        callback,
        // The window in the other forms the history API takes: ISO-8601 and epoch milliseconds.
        "since=2020-01-01T00:00:00Z&until=1577923200000",
    )
    .await;
    let (_, finished) = server
        .v4(
            Method::DELETE,
            "demo",
            &format!("/recover_jobs/{empty}"),
            Some("alice"),
        )
        .await;
    assert_eq!(finished["data"]["state"], "DONE", "{finished}");
}

async fn a_disable_cancels_pending_deliveries_and_a_recovery_brings_them_back(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(
        &db,
        &[
            ("DELIVERY_RETRY_SCHEDULE", "1m"),
            ("RECOVER_BATCH_SIZE", "1"),
        ],
    )
    .await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/flaky");
    receiver.script("/flaky", vec![Answer::Status(500); 3]);
    server
        .register("demo", "alice", "BUILD_END", &url, None)
        .await;
    let callback = callback_id(&server, &url).await;
    publish_many(&server, 3).await;
    wait_for_deliveries(&server, callback, "RETRYING", 3).await;

    let switch = |what: &'static str| {
        let server = &server;
        async move {
            let (status, body) = server
                .v4(
                    Method::PUT,
                    "demo",
                    &format!("/callback_{what}?id={callback}"),
                    Some("alice"),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    // Disabling cancels the pending deliveries at once, with the reason.
    switch("disable").await;
    let (_, view) = server
        .v4(
            Method::GET,
            "demo",
            &format!("/callback_deliveries?id={callback}"),
            Some("alice"),
        )
        .await;
    for delivery in view["data"]["records"].as_array().unwrap() {
        assert_eq!(delivery["status"], "CANCELLED", "{delivery}");
        assert_eq!(delivery["cancelReason"], "disabled by alice", "{delivery}");
        assert_eq!(
            delivery["lastResponseCode"], 500,
            "the last attempt's answer stays"
        );
        assert!(delivery.get("nextAttemptAt").is_none(), "{delivery}");
    }

    // A disabled callback's deliveries are not recovered: they would only be cancelled again.
    assert_error(
        &server
            .v4(
                Method::POST,
                "demo",
                &format!("/callback_recover?id={callback}&since={}", since()),
                Some("alice"),
            )
            .await,
        409,
        409,
        &["disabled", "enable"],
    );
    switch("enable").await;
    let id = recover(&server, callback, &format!("since={}", since())).await;
    wait_for_deliveries(&server, callback, "SUCCESS", 3).await;
    assert_eq!(wait_until_done(&server, id).await["done"], 3);
    assert_eq!(receiver.delivered().len(), 3);

    // A job whose callback is disabled meanwhile stops: the receiver holds the first delivery
    // it re-queues (a batch is one delivery here) while the callback is disabled.
    receiver.answer_by_default(Answer::Status(500));
    publish_many(&server, 2).await;
    wait_for_deliveries(&server, callback, "RETRYING", 2).await;
    switch("disable").await;
    switch("enable").await;
    receiver.answer_by_default(Answer::Hang);
    let stopped = recover(&server, callback, &format!("since={}", since())).await;
    wait_until("the held delivery", WAIT, async || {
        receiver
            .received()
            .last()
            .is_some_and(|r| r.status.is_none())
    })
    .await;
    switch("disable").await;
    let mut last = Value::Null;
    wait_until("the job to stop", WAIT, async || {
        last = job(&server, stopped).await;
        last["state"] == "CANCELLED"
    })
    .await;
    assert_eq!(last["reason"], "the callback was disabled", "{last}");
    assert_eq!(last["done"], 1, "{last}");
}

async fn global_callbacks_are_recovered_through_the_op_api(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[("DELIVERY_RETRY_SCHEDULE", "none")]).await;
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Answer::Status(503));
    let token = ("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN);
    let ops = ("X-DEVOPS-UID", "ops");
    let created = server
        .call(
            Method::POST,
            &format!(
                "/op/callbacks/global?event=PROJECT_CREATE&region=IDC&url={}",
                enc(&receiver.url("/global"))
            ),
            &[token, ops],
        )
        .await;
    assert_eq!(created.0, StatusCode::OK, "{created:?}");
    let (_, list) = server
        .call(Method::GET, "/op/callbacks/global", &[token])
        .await;
    let global = list["data"]["records"][0]["id"].as_i64().unwrap();
    for project in ["p1", "p2"] {
        server
            .publish(project, r#"{"event":"PROJECT_CREATE","data":{}}"#)
            .await;
    }
    let deliveries = format!("/op/callbacks/global/{global}/deliveries?status=FAILED");
    wait_until("the global deliveries to fail", WAIT, async || {
        server.call(Method::GET, &deliveries, &[token]).await.1["data"]["count"] == 2
    })
    .await;

    receiver.answer_by_default(Answer::Status(200));
    let start = format!("/op/callbacks/global/{global}/recover?since={}", since());
    assert_error(
        &server.call(Method::POST, &start, &[token]).await,
        401,
        401,
        &["X-DEVOPS-UID"],
    );
    assert_error(
        &server.call(Method::POST, &start, &[ops]).await,
        401,
        401,
        &["X-DEVOPS-BK-TOKEN"],
    );
    let (status, body) = server.call(Method::POST, &start, &[token, ops]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["data"]["jobId"].as_i64().unwrap();
    let path = format!("/op/callbacks/global/recover_jobs/{id}");
    wait_until("the global job to be done", WAIT, async || {
        server.call(Method::GET, &path, &[token]).await.1["data"]["state"] == "DONE"
    })
    .await;
    let (_, done) = server.call(Method::GET, &path, &[token]).await;
    assert_eq!(
        (&done["data"]["done"], &done["data"]["creator"]),
        (&json!(2), &json!("ops"))
    );
    wait_until("both to arrive", WAIT, async || {
        receiver.delivered().len() == 2
    })
    .await;

    // A global job is not a project's, and a project's callback is not global.
    assert_error(
        &server
            .v4(
                Method::GET,
                "demo",
                &format!("/recover_jobs/{id}"),
                Some("alice"),
            )
            .await,
        404,
        404,
        &[&id.to_string()],
    );
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/demo"), None)
        .await;
    let project_level = callback_id(&server, &receiver.url("/demo")).await;
    assert_error(
        &server
            .call(
                Method::POST,
                &format!(
                    "/op/callbacks/global/{project_level}/recover?since={}",
                    since()
                ),
                &[token, ops],
            )
            .await,
        404,
        2101136,
        &[],
    );
    assert_error(
        &server
            .call(
                Method::GET,
                &format!("/op/callbacks/global/{project_level}/deliveries"),
                &[token],
            )
            .await,
        404,
        2101136,
        &[],
    );
}

async fn pipeline_level_callbacks_are_listed_and_recovered_too(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[("DELIVERY_RETRY_SCHEDULE", "none")]).await;
    let receiver = Receiver::start().await;
    receiver.script("/pipeline", vec![Answer::Status(500); 2]);
    let pipeline = "p-7e1c2b3a4d5e4f60a1b2c3d4e5f60718";
    let body = json!([{"callbackEvent": "BUILD_END", "callbackUrl": receiver.url("/pipeline"), "callbackName": "ci"}]);
    let response = reqwest::Client::new()
        .post(server.url(&format!(
            "/apigw-user/v4/projects/demo/callbacks/pipelines/{pipeline}"
        )))
        .header("X-DEVOPS-UID", "alice")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    for build in ["b-1", "b-2"] {
        let event =
            json!({"event": "BUILD_END", "data": {"pipelineId": pipeline, "buildId": build}});
        server.publish("demo", &event.to_string()).await;
    }
    // Its id is history's callbackId (`callback_list` shows project-level callbacks only).
    let history = server.wait_for_history("demo", "alice", 2).await;
    let callback = history[0]["callbackId"].as_i64().unwrap();
    wait_for_deliveries(&server, callback, "FAILED", 2).await;
    let id = recover(&server, callback, &format!("since={}", since())).await;
    wait_for_deliveries(&server, callback, "SUCCESS", 2).await;
    assert_eq!(wait_until_done(&server, id).await["done"], 2);
    assert_each_delivered_once(&receiver.delivered(), 2);
}

async fn recovery_routes_check_the_caller_and_the_input(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    server.set_member("demo", "alice", "admin").await;
    server.set_member("demo", "mary", "member").await;
    server.set_member("other", "olga", "admin").await;
    let url = "http://93.184.215.14/recover";
    server
        .register("demo", "alice", "BUILD_END", url, None)
        .await;
    let callback = callback_id(&server, url).await;
    server
        .register("other", "olga", "BUILD_END", url, None)
        .await;
    let start = |user: &'static str, query: String| {
        let server = &server;
        async move {
            server
                .v4(
                    Method::POST,
                    "demo",
                    &format!("/callback_recover?{query}"),
                    Some(user),
                )
                .await
        }
    };
    let ok = format!("id={callback}&since={}", since());

    // Only admins start or cancel; members follow a job; others see nothing.
    assert_error(&start("mary", ok.clone()).await, 403, 2101104, &["mary"]);
    assert_error(&start("olga", ok.clone()).await, 403, 2101104, &["olga"]);
    let (status, body) = start("alice", ok.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["data"]["jobId"].as_i64().unwrap();
    let job_path = format!("/recover_jobs/{id}");
    let (status, seen) = server
        .v4(Method::GET, "demo", &job_path, Some("mary"))
        .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["data"]["state"], "DONE", "nothing to recover: {seen}");
    assert_error(
        &server
            .v4(Method::DELETE, "demo", &job_path, Some("mary"))
            .await,
        403,
        2101104,
        &[],
    );
    assert_error(
        &server
            .v4(Method::GET, "demo", &job_path, Some("olga"))
            .await,
        403,
        2101133,
        &[],
    );
    assert_error(
        &server.v4(Method::GET, "demo", &job_path, None).await,
        401,
        401,
        &[],
    );
    // A job of another project is not found there, nor is an unknown one.
    assert_error(
        &server
            .v4(Method::GET, "other", &job_path, Some("olga"))
            .await,
        404,
        404,
        &["recovery job"],
    );
    assert_error(
        &server
            .v4(Method::GET, "demo", "/recover_jobs/999999", Some("alice"))
            .await,
        404,
        404,
        &["999999"],
    );
    assert_error(
        &server
            .v4(
                Method::DELETE,
                "demo",
                "/recover_jobs/999999",
                Some("alice"),
            )
            .await,
        404,
        404,
        &["999999"],
    );
    assert_error(
        &server
            .v4(Method::GET, "demo", "/recover_jobs/x", Some("alice"))
            .await,
        400,
        400,
        &["job_id"],
    );

    // Bad windows and ids are 400s naming the parameter, whoever asks; unknown callbacks 404.
    let since = since();
    for (query, words) in [
        (format!("id={callback}"), vec!["since"]),
        (
            format!("id={callback}&since=yesterday"),
            vec!["since", "ISO-8601", "epoch milliseconds"],
        ),
        (
            format!("id={callback}&since={since}&until=2024-13-01%2000:00:00"),
            vec!["until"],
        ),
        (
            format!("id={callback}&since=2024-05-02%2000:00:00&until=2024-05-01%2000:00:00"),
            vec!["since", "until"],
        ),
        (
            format!(
                "id={callback}&since={}",
                enc(&local_ago(-chrono::Duration::hours(1)))
            ),
            vec!["since", "until"],
        ),
        (format!("since={since}"), vec!["id"]),
        (format!("id=abc&since={since}"), vec!["id"]),
    ] {
        for user in ["alice", "mary"] {
            assert_error(&start(user, query.clone()).await, 400, 400, &words);
        }
    }
    let olgas = callback_id_of(&server, "other", "olga").await;
    for missing in [olgas, 999_999] {
        assert_error(
            &start("alice", format!("id={missing}&since={since}")).await,
            404,
            2101136,
            &[&missing.to_string()],
        );
    }

    // The deliveries view: members only, a known callback, a known status.
    let view = |user: &'static str, query: String| {
        let server = &server;
        async move {
            server
                .v4(
                    Method::GET,
                    "demo",
                    &format!("/callback_deliveries?{query}"),
                    Some(user),
                )
                .await
        }
    };
    let (status, page) = view("mary", format!("id={callback}")).await;
    assert_eq!(
        (status, &page["data"]["count"]),
        (StatusCode::OK, &json!(0))
    );
    assert_error(
        &view("olga", format!("id={callback}")).await,
        403,
        2101133,
        &[],
    );
    assert_error(
        &view("mary", format!("id={olgas}")).await,
        404,
        2101136,
        &[],
    );
    assert_error(
        &view("mary", "status=FAILED".to_owned()).await,
        400,
        400,
        &["id"],
    );
    assert_error(
        &view("mary", format!("id={callback}&status=failed")).await,
        400,
        400,
        &["status", "RETRYING"],
    );
    assert_error(
        &view("mary", format!("id={callback}&pageSize=x")).await,
        400,
        400,
        &["pageSize"],
    );
}

/// The id of `project`'s only callback, as `user` lists it.
async fn callback_id_of(server: &TestServer, project: &str, user: &str) -> i64 {
    let (_, list) = server.list(project, user, "").await;
    list["data"]["records"][0]["id"].as_i64().unwrap()
}
