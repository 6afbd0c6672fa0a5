//! The gateway's backend paths: every v4 route answers under `/api/…` (bk-ci nginx's upstream
//! path) and `/openapi/api/…` (the BlueKing API gateway's backend path) exactly as it does under
//! its own `/{apigwType}/v4/…`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{
    Backend, DELIVERY_VARS, TestDb, TestServer, assert_error, backend_tests, enc, history_window,
};
use crate::receiver::Receiver;

backend_tests!(
    each_prefix_answers_like_the_bare_path,
    an_unknown_gateway_type_under_a_prefix_is_a_404_envelope,
);

/// The bare path first, then the gateway prefixes.
const BASES: [&str; 3] = ["", "/api", "/openapi/api"];

/// A v4 call under `base`, as `user` (no header when `None`).
async fn v4(
    server: &TestServer,
    base: &str,
    method: Method,
    tail: &str,
    user: Option<&str>,
) -> (StatusCode, Value) {
    let path = format!("{base}/apigw-user/v4/projects/demo/callbacks{tail}");
    let headers: Vec<(&str, &str)> = user
        .map(|user| ("X-DEVOPS-UID", user))
        .into_iter()
        .collect();
    server.call(method, &path, &headers).await
}

/// The same request under every base: the answers must be equal, whole; returns the bare one.
async fn same_under_every_base(
    server: &TestServer,
    method: Method,
    tail: &str,
    user: Option<&str>,
) -> (StatusCode, Value) {
    let bare = v4(server, "", method.clone(), tail, user).await;
    for base in &BASES[1..] {
        let prefixed = v4(server, base, method.clone(), tail, user).await;
        assert_eq!(prefixed, bare, "{method} {base}…{tail}");
    }
    bare
}

async fn each_prefix_answers_like_the_bare_path(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, DELIVERY_VARS).await;
    server.set_member("demo", "alice", "admin").await;
    let receiver = Receiver::start().await;
    let url = enc(&receiver.url("/hook"));

    // Create (an upsert, so every base answers the same and one row remains) and batch create.
    let create = format!("?event=BUILD_END&region=IDC&url={url}");
    assert_eq!(
        same_under_every_base(&server, Method::POST, &create, Some("alice")).await,
        (StatusCode::OK, json!({"status": 0, "data": true}))
    );
    let batch = format!("/batch?event=BUILD_START,BUILD_TASK_END&region=IDC&url={url}");
    assert_eq!(
        same_under_every_base(&server, Method::POST, &batch, Some("alice"))
            .await
            .1["data"],
        json!({"successEvents": ["BUILD_START", "BUILD_TASK_END"], "failureEvents": {}})
    );

    // The list, paged or not.
    let (_, list) =
        same_under_every_base(&server, Method::GET, "/callback_list", Some("alice")).await;
    assert_eq!(list["data"]["count"], 3, "{list}");
    same_under_every_base(
        &server,
        Method::GET,
        "/callback_list?page=2&pageSize=2",
        Some("alice"),
    )
    .await;

    // History, once an attempt is recorded.
    let (status, body) = server
        .publish("demo", r#"{"event":"BUILD_END","data":{"buildId":"b-1"}}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.wait_for_history("demo", "alice", 1).await;
    let history = format!("/callback_history?{}&event=BUILD_END", history_window());
    let (_, answer) = same_under_every_base(&server, Method::GET, &history, Some("alice")).await;
    assert_eq!(answer["data"]["count"], 1, "{answer}");
    assert_eq!(
        answer["data"]["records"][0]["status"], "SUCCESS",
        "{answer}"
    );

    // Errors too: a bad parameter, no caller, a stranger, a missing id.
    assert_error(
        &same_under_every_base(
            &server,
            Method::GET,
            "/callback_list?pageSize=x",
            Some("alice"),
        )
        .await,
        400,
        400,
        &["pageSize"],
    );
    assert_error(
        &same_under_every_base(&server, Method::GET, "/callback_list", None).await,
        401,
        401,
        &["X-DEVOPS-UID"],
    );
    assert_error(
        &same_under_every_base(&server, Method::GET, "/callback_history", Some("sam")).await,
        403,
        2101133,
        &["sam"],
    );
    assert_error(
        &same_under_every_base(
            &server,
            Method::DELETE,
            "/callback?id=999999",
            Some("alice"),
        )
        .await,
        404,
        2101136,
        &["999999"],
    );

    // The other routes are there too: disable under one prefix, enable under the other,
    // delete under the bare path.
    let id = list["data"]["records"][0]["id"].as_i64().unwrap();
    let ok = (StatusCode::OK, json!({"status": 0, "data": true}));
    let tail = |route: &str| format!("/{route}?id={id}");
    assert_eq!(
        v4(
            &server,
            "/api",
            Method::PUT,
            &tail("callback_disable"),
            Some("alice")
        )
        .await,
        ok
    );
    assert_eq!(
        v4(
            &server,
            "/openapi/api",
            Method::PUT,
            &tail("callback_enable"),
            Some("alice")
        )
        .await,
        ok
    );
    assert_eq!(
        v4(
            &server,
            "",
            Method::DELETE,
            &tail("callback"),
            Some("alice")
        )
        .await,
        ok
    );
}

async fn an_unknown_gateway_type_under_a_prefix_is_a_404_envelope(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    server.set_member("demo", "alice", "admin").await;
    let alice = [("X-DEVOPS-UID", "alice")];
    for base in BASES {
        for (method, path) in [
            (
                Method::GET,
                format!("{base}/apigw-nope/v4/projects/demo/callbacks/callback_list"),
            ),
            (
                Method::POST,
                format!("{base}/nope/v4/projects/demo/callbacks?event=BUILD_END"),
            ),
        ] {
            let answer = server.call(method, &path, &alice).await;
            // The message names the path as sent, prefix included.
            assert_error(&answer, 404, 404, &[path.split('?').next().unwrap()]);
        }
    }
    // Only the v4 routes are under the prefixes; unknown paths there are the usual 404.
    for path in [
        "/api/op/projects/demo/members",
        "/openapi/api/healthz",
        "/openapi/api/apigw-user/v3/projects/demo/callbacks/callback_list",
        "/ms/openapi/api/apigw-user/v4/projects/demo/callbacks/callback_list",
    ] {
        assert_error(&server.call(Method::GET, path, &alice).await, 404, 404, &[]);
    }
}
