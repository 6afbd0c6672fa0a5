//! The op API that manages the local authority's members.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{Backend, SERVICE_TOKEN, TestDb, TestServer, assert_error, backend_tests};

backend_tests!(
    members_can_be_added_changed_listed_and_removed,
    the_op_api_wants_the_service_token,
    bad_member_input_is_rejected,
);

const TOKEN: (&str, &str) = ("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN);

async fn members_can_be_added_changed_listed_and_removed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    server.set_member("demo", "bob", "member").await;
    server.set_member("demo", "alice", "member").await;
    // Warm the decision cache: alice, a member, is refused the admin's create (kept a fifth of
    // the 5 s TTL) and allowed the member's list.
    let query = "event=BUILD_END&region=IDC&url=http%3A%2F%2F93.184.215.14%2F";
    assert_error(
        &server.create("demo", "alice", query).await,
        403,
        2101104,
        &[],
    );
    assert_eq!(server.list("demo", "alice", "").await.0, StatusCode::OK);
    server.set_member("demo", "alice", "admin").await;
    server.set_member("other", "zed", "admin").await;

    let (status, body) = server
        .call(Method::GET, "/op/projects/demo/members", &[TOKEN])
        .await;
    assert_eq!(status, StatusCode::OK);
    let members = body["data"].as_array().unwrap();
    let summary: Vec<_> = members
        .iter()
        .map(|m| (m["userId"].clone(), m["role"].clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (json!("alice"), json!("admin")),
            (json!("bob"), json!("member"))
        ]
    );
    assert_eq!(members[0]["projectId"], "demo");
    assert!(
        members[0]["createdTime"].as_i64().unwrap() <= members[0]["updatedTime"].as_i64().unwrap()
    );

    // The promotion took effect at once, despite the decision cache.
    assert_eq!(
        server.create("demo", "alice", query).await.0,
        StatusCode::OK
    );

    let remove = server
        .call(Method::DELETE, "/op/projects/demo/members/alice", &[TOKEN])
        .await;
    assert_eq!(remove, (StatusCode::OK, json!({"status": 0, "data": true})));
    let again = server
        .call(Method::DELETE, "/op/projects/demo/members/alice", &[TOKEN])
        .await;
    assert_eq!(again, (StatusCode::OK, json!({"status": 0, "data": false})));
    assert_error(
        &server.create("demo", "alice", query).await,
        403,
        2101104,
        &[],
    );
    assert_error(&server.list("demo", "alice", "").await, 403, 2101133, &[]);
}

async fn the_op_api_wants_the_service_token(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let path = "/op/projects/demo/members/alice?role=admin";
    assert_error(
        &server.call(Method::PUT, path, &[]).await,
        401,
        401,
        &["X-DEVOPS-BK-TOKEN"],
    );
    assert_error(
        &server
            .call(Method::PUT, path, &[("X-DEVOPS-BK-TOKEN", "guess")])
            .await,
        401,
        401,
        &["X-DEVOPS-BK-TOKEN"],
    );
    assert_error(
        &server
            .call(Method::GET, "/op/projects/demo/members", &[])
            .await,
        401,
        401,
        &[],
    );
    server.stop().await;

    let server = TestServer::start_with(&db, &[("SERVICE_TOKEN", "")]).await;
    assert_error(
        &server.call(Method::PUT, path, &[TOKEN]).await,
        503,
        503,
        &["SERVICE_TOKEN"],
    );
}

async fn bad_member_input_is_rejected(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let cases = [
        ("/op/projects/demo/members/alice", vec!["role"]),
        (
            "/op/projects/demo/members/alice?role=owner",
            vec!["role", "admin", "member"],
        ),
        ("/op/projects/demo/members/alice?role=ADMIN", vec!["role"]),
        (
            "/op/projects/bad%20id/members/alice?role=admin",
            vec!["projectId"],
        ),
    ];
    for (path, words) in cases {
        assert_error(
            &server.call(Method::PUT, path, &[TOKEN]).await,
            400,
            400,
            &words,
        );
    }
    let long_user = format!("/op/projects/demo/members/{}?role=admin", "u".repeat(65));
    assert_error(
        &server.call(Method::PUT, &long_user, &[TOKEN]).await,
        400,
        400,
        &["userId"],
    );
    let (_, body) = server
        .call(Method::GET, "/op/projects/demo/members", &[TOKEN])
        .await;
    assert_eq!(body["data"], json!([]));
}
