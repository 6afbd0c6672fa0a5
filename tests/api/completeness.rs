//! The rest of the v4 resource and the op API: batch create, global callbacks.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{
    Backend, DELIVERY_VARS, SERVICE_TOKEN, TestDb, TestServer, WAIT, assert_error, backend_tests,
    enc, wait_until,
};
use crate::processes::ServerProcess;
use crate::receiver::Receiver;

backend_tests!(
    batch_create_registers_each_event_once,
    global_callbacks_receive_project_events_of_every_project,
    metrics_move_after_a_delivery,
);

async fn batch_create_registers_each_event_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    server.set_member("demo", "alice", "admin").await;
    server.set_member("demo", "mary", "member").await;
    let url = enc("http://93.184.215.14/batch");
    let batch = |user: &'static str, events: &str| {
        let server = &server;
        let tail = format!(
            "/batch?event={}&region=OSS&url={url}&secretToken=t",
            enc(events)
        );
        async move { server.v4(Method::POST, "demo", &tail, Some(user)).await }
    };

    let (status, body) = batch("alice", " BUILD_START,\tBUILD_END,BUILD_START ").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"status": 0, "data": {"successEvents": ["BUILD_START", "BUILD_END"], "failureEvents": {}}})
    );
    let (_, list) = server.list("demo", "alice", "").await;
    assert_eq!(list["data"]["count"], 2);

    assert_error(
        &batch("alice", "BUILD_END,NOPE,BUILD_TASK_END").await,
        400,
        400,
        &["NOPE", "event"],
    );
    assert_error(&batch("alice", " , ").await, 400, 400, &["event"]);
    assert_error(
        &batch("alice", "BUILD_END,").await,
        400,
        400,
        &["event", "empty"],
    );
    assert_error(&batch("alice", "").await, 400, 400, &["event"]);
    assert_error(&batch("mary", "BUILD_END").await, 403, 2101104, &["mary"]);
    let (_, list) = server.list("demo", "alice", "").await;
    assert_eq!(list["data"]["count"], 2, "refused batches wrote nothing");

    // Again with one more event: the existing rows are updated in place, one is added.
    let (_, body) = batch("alice", "BUILD_END,BUILD_TASK_END").await;
    assert_eq!(
        body["data"]["successEvents"],
        json!(["BUILD_END", "BUILD_TASK_END"])
    );
    let (_, list) = server.list("demo", "alice", "").await;
    assert_eq!(list["data"]["count"], 3);
}

async fn global_callbacks_receive_project_events_of_every_project(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, DELIVERY_VARS).await;
    let receiver = Receiver::start().await;
    let token = ("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN);
    let op = ("X-DEVOPS-UID", "ops");
    let create = |event: &str| {
        format!(
            "/op/callbacks/global?event={event}&region=IDC&url={}&secretToken=g",
            enc(&receiver.url("/global"))
        )
    };
    let ok = (StatusCode::OK, json!({"status": 0, "data": true}));
    assert_eq!(
        server
            .call(Method::POST, &create("PROJECT_UPDATE"), &[token, op])
            .await,
        ok
    );
    assert_error(
        &server
            .call(Method::POST, &create("BUILD_END"), &[token, op])
            .await,
        400,
        400,
        &["PROJECT_"],
    );
    assert_error(
        &server
            .call(Method::POST, &create("PROJECT_UPDATE"), &[op])
            .await,
        401,
        401,
        &[],
    );

    let (status, list) = server
        .call(Method::GET, "/op/callbacks/global", &[token])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"]["count"], 1);
    let record = &list["data"]["records"][0];
    assert_eq!(
        (record["projectId"].clone(), record["events"].clone()),
        (json!("DEVOPS_ALL_PROJECT"), json!("PROJECT_UPDATE"))
    );
    // The creator is the one X-DEVOPS-UID named.
    assert_eq!(
        (record["creator"].clone(), record["updater"].clone()),
        (json!("ops"), json!("ops")),
        "{record}"
    );

    // Project events of two projects reach it; other events and other project events do not.
    for project in ["alpha", "beta"] {
        let (_, answer) = server
            .publish(
                project,
                r#"{"event":"PROJECT_UPDATE","data":{"enable":true}}"#,
            )
            .await;
        assert_eq!(answer["data"]["deliveries"], 1, "{project}");
    }
    let (_, answer) = server
        .publish("alpha", r#"{"event":"PROJECT_DISABLE","data":{}}"#)
        .await;
    assert_eq!(answer["data"]["deliveries"], 0);
    let (_, answer) = server
        .publish("alpha", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    assert_eq!(answer["data"]["deliveries"], 0);
    let received = receiver.wait_for(2, Duration::from_secs(15)).await;
    assert!(
        received
            .iter()
            .all(|r| r.header("x-devops-webhook-token") == "g")
    );

    // A failing global callback shows when the failing began, as bk-ci writes it. Once the two
    // successes are recorded: recording a success clears the failure clock.
    wait_until("the two deliveries to be recorded", WAIT, async || {
        db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'SUCCESS'")
            .await
            == 2
    })
    .await;
    let id = record["id"].as_i64().unwrap();
    db.execute(&format!(
        "UPDATE callbacks SET failure_time = 1787277600999 WHERE id = {id}"
    ))
    .await;
    let (_, list) = server
        .call(Method::GET, "/op/callbacks/global", &[token])
        .await;
    assert_eq!(
        list["data"]["records"][0]["failureTime"], "2026-08-21T10:00:00",
        "{list}"
    );

    let path = format!("/op/callbacks/global/{id}");
    assert_eq!(server.call(Method::DELETE, &path, &[token]).await, ok);
    assert_error(
        &server.call(Method::DELETE, &path, &[token]).await,
        404,
        2101136,
        &[],
    );
    assert_error(
        &server
            .call(Method::DELETE, "/op/callbacks/global/x", &[token])
            .await,
        400,
        400,
        &[],
    );
}

/// The value of one sample in Prometheus text; a missing series fails the test.
#[track_caller]
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

async fn scrape(server: &ServerProcess) -> String {
    let response = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    response.text().await.unwrap()
}

/// A server process of its own, so its recorder counts only what this test did: exact values.
async fn metrics_move_after_a_delivery(backend: Backend) {
    let db = TestDb::new(backend).await;
    let logs = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&db, logs.path(), "metrics", DELIVERY_VARS).await;
    let receiver = Receiver::start().await;
    server
        .post("/op/projects/demo/members/alice?role=admin", None)
        .await;
    let query = format!(
        "event=BUILD_END&region=IDC&url={}",
        enc(&receiver.url("/m"))
    );
    server
        .post(
            &format!("/apigw-user/v4/projects/demo/callbacks?{query}"),
            Some(String::new()),
        )
        .await;
    server
        .post(
            &format!("/openapi/api/apigw-user/v4/projects/demo/callbacks?{query}"),
            Some(String::new()),
        )
        .await;
    let before = scrape(&server).await;
    let create = r#"devops_callbacks_http_requests_total{method="POST",route="/{apigw_type}/v4/projects/{project_id}/callbacks",status="200"}"#;
    assert_eq!(sample(&before, create), 1.0, "{before}");
    // Under a gateway prefix, the route template names the prefix.
    let gateway_create = r#"devops_callbacks_http_requests_total{method="POST",route="/openapi/api/{apigw_type}/v4/projects/{project_id}/callbacks",status="200"}"#;
    assert_eq!(sample(&before, gateway_create), 1.0, "{before}");
    assert!(
        !before.contains("devops_callbacks_deliveries_total"),
        "nothing delivered yet: {before}"
    );

    server
        .post(
            "/service/callbacks/projects/demo/events",
            Some(r#"{"event":"BUILD_END","data":{}}"#.to_owned()),
        )
        .await;
    receiver.wait_for(1, WAIT).await;
    let success = r#"devops_callbacks_deliveries_total{outcome="success"}"#;
    let mut after = String::new();
    wait_until("the success counted", WAIT, async || {
        after = scrape(&server).await;
        after.contains(success)
    })
    .await;
    assert_eq!(sample(&after, success), 1.0, "{after}");
    assert_eq!(
        sample(&after, "devops_callbacks_events_accepted_total"),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "devops_callbacks_delivery_attempt_duration_seconds_count"
        ),
        1.0
    );
    assert_eq!(
        sample(&after, r#"devops_callbacks_delivery_queue{state="due"}"#),
        0.0
    );
    assert_eq!(sample(&after, "devops_callbacks_callbacks_disabled"), 0.0);

    let (_, list) = server
        .send(
            Method::GET,
            "/apigw-user/v4/projects/demo/callbacks/callback_list",
            None,
        )
        .await;
    let id = list["data"]["records"][0]["id"].as_i64().unwrap();
    server
        .post(
            &format!("/apigw-user/v4/projects/demo/callbacks/callback_disable?id={id}"),
            None,
        )
        .await;
    assert_eq!(
        sample(
            &scrape(&server).await,
            "devops_callbacks_callbacks_disabled"
        ),
        1.0
    );
}

/// The document is generated from the handlers: every route is in it, once, with the envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_covers_every_route() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    let response = reqwest::get(server.url("/openapi.json")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let document: serde_json::Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut operations: Vec<String> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|key| *key != "servers")
                .map(move |method| format!("{method} {path}"))
        })
        .collect();
    operations.sort();
    let v4 = "/{apigw_type}/v4/projects/{project_id}/callbacks";
    let mut expected: Vec<String> = [
        format!("post {v4}"),
        format!("post {v4}/batch"),
        format!("get {v4}/callback_list"),
        format!("delete {v4}/callback"),
        format!("put {v4}/callback_enable"),
        format!("put {v4}/callback_disable"),
        format!("get {v4}/callback_history"),
        format!("post {v4}/callback_retry"),
        format!("get {v4}/callback_deliveries"),
        format!("post {v4}/callback_recover"),
        format!("get {v4}/recover_jobs/{{job_id}}"),
        format!("delete {v4}/recover_jobs/{{job_id}}"),
        format!("post {v4}/pipelines/{{pipeline_id}}"),
        format!("get {v4}/pipelines/{{pipeline_id}}"),
        format!("delete {v4}/pipelines/{{pipeline_id}}"),
        "post /service/callbacks/projects/{project_id}/events".to_owned(),
        "post /service/callbacks/events:batch".to_owned(),
        "post /op/callbacks/global".to_owned(),
        "get /op/callbacks/global".to_owned(),
        "delete /op/callbacks/global/{id}".to_owned(),
        "get /op/callbacks/global/{id}/deliveries".to_owned(),
        "post /op/callbacks/global/{id}/recover".to_owned(),
        "get /op/callbacks/global/recover_jobs/{job_id}".to_owned(),
        "delete /op/callbacks/global/recover_jobs/{job_id}".to_owned(),
        "post /op/pipeline/callback/create".to_owned(),
        "get /op/pipeline/callback/list".to_owned(),
        "delete /op/pipeline/callback/delete/{id}".to_owned(),
        "put /op/pipeline/callback/{project_id}/enableCallback/byId".to_owned(),
        "put /op/pipeline/callback/enableCallback/byUrl".to_owned(),
        "put /op/pipeline/callback/{project_id}/disable/byId".to_owned(),
        "put /op/projects/{project_id}/members/{user_id}".to_owned(),
        "delete /op/projects/{project_id}/members/{user_id}".to_owned(),
        "get /op/projects/{project_id}/members".to_owned(),
        "get /healthz".to_owned(),
        "get /readyz".to_owned(),
        "get /metrics".to_owned(),
        "get /openapi.json".to_owned(),
    ]
    .into();
    expected.sort();
    assert_eq!(operations, expected);
    let create = &document["paths"][v4]["post"];
    let names: Vec<&str> = create["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "apigw_type",
            "project_id",
            "X-DEVOPS-UID",
            "X-Bkapi-JWT",
            "event",
            "region",
            "url",
            "secretToken"
        ]
    );
    assert_eq!(
        create["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorEnvelope"
    );
    // Every v4 route documents the gateway token, as an optional header, and the gateway
    // prefixes it is served under, as the path's servers; no other path has servers.
    for (path, item) in document["paths"].as_object().unwrap() {
        if !path.starts_with("/{apigw_type}/") {
            assert!(item.get("servers").is_none(), "{path}");
            continue;
        }
        assert_eq!(
            item["servers"],
            serde_json::json!([{"url": "/"}, {"url": "/api"}, {"url": "/openapi/api"}]),
            "{path}"
        );
        for (method, operation) in item.as_object().unwrap() {
            if method == "servers" {
                continue;
            }
            let jwt = operation["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "X-Bkapi-JWT")
                .unwrap_or_else(|| panic!("{method} {path} does not document X-Bkapi-JWT"));
            assert_eq!(jwt["in"], "header", "{method} {path}");
            assert_ne!(jwt["required"], true, "{method} {path}");
        }
    }
    let events = &document["components"]["schemas"]["CallbackEvent"]["enum"];
    assert_eq!(events.as_array().unwrap().len(), 18);
    let pipeline_body = &document["paths"][format!("{v4}/pipelines/{{pipeline_id}}")]["post"]["requestBody"]
        ["content"]["application/json"]["schema"];
    let body = match pipeline_body["$ref"].as_str() {
        Some(reference) => {
            &document["components"]["schemas"][reference.rsplit('/').next().unwrap()]
        }
        None => pipeline_body,
    };
    assert_eq!(body["maxItems"], 100, "{body}");
    let required = &body["items"]["required"];
    for field in ["callbackEvent", "callbackUrl", "callbackName"] {
        assert!(
            required.as_array().unwrap().contains(&json!(field)),
            "{body}"
        );
    }
    // Every reference resolves (some schemas are written by hand).
    let text = document.to_string();
    for reference in text.split(r##""$ref":"#/components/schemas/"##).skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            document["components"]["schemas"][name].is_object(),
            "unresolved reference to {name}"
        );
    }
}
