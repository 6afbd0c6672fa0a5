//! The envelope at the edges: unknown routes, wrong methods, big bodies, health, request ids,
//! and the database going away.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{Backend, TestDb, TestServer, assert_error, backend_tests, envelope_of};

backend_tests!(
    unknown_routes_and_gateway_types_are_404_envelopes,
    wrong_methods_are_405_envelopes,
    oversized_bodies_are_413_envelopes,
    health_and_readiness_answer,
    request_ids_are_kept_or_generated,
);

async fn unknown_routes_and_gateway_types_are_404_envelopes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    for path in [
        "/",
        "/nothing/here",
        "/apigw-user/v3/projects/demo/callbacks",
        "/apigw-user/v4/projects/demo/callbacks/nope",
        "/apigw-robot/v4/projects/demo/callbacks/callback_list",
        "/APIGW-USER/v4/projects/demo/callbacks/callback_list",
    ] {
        let answer = server
            .call(Method::GET, path, &[("X-DEVOPS-UID", "alice")])
            .await;
        assert_error(&answer, 404, 404, &[]);
    }
    // An unknown gateway type is not found even before the caller is known.
    let answer = server
        .call(Method::POST, "/robots/v4/projects/demo/callbacks", &[])
        .await;
    assert_error(&answer, 404, 404, &["/robots/v4"]);
}

async fn wrong_methods_are_405_envelopes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let client = reqwest::Client::new();
    for (method, path) in [
        (Method::GET, "/apigw-user/v4/projects/demo/callbacks"),
        (
            Method::POST,
            "/apigw-user/v4/projects/demo/callbacks/callback_list",
        ),
        (
            Method::PUT,
            "/apigw-user/v4/projects/demo/callbacks/callback",
        ),
        (Method::POST, "/healthz"),
    ] {
        let response = client
            .request(method.clone(), server.url(path))
            .send()
            .await
            .unwrap();
        assert!(response.headers().contains_key("allow"), "{method} {path}");
        let answer = envelope_of(response).await;
        assert_error(&answer, 405, 405, &[]);
    }
}

async fn oversized_bodies_are_413_envelopes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, &[("MAX_BODY_BYTES", "1024")]).await;
    let response = reqwest::Client::new()
        .post(server.url("/apigw-user/v4/projects/demo/callbacks?event=BUILD_END"))
        .header("X-DEVOPS-UID", "alice")
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_error(&envelope_of(response).await, 413, 413, &["too large"]);
}

async fn health_and_readiness_answer(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    for path in ["/healthz", "/readyz"] {
        let (status, body) = server.call(Method::GET, path, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"]["status"], "UP");
        assert_eq!(body["data"]["version"], env!("CARGO_PKG_VERSION"));
    }
}

async fn request_ids_are_kept_or_generated(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let client = reqwest::Client::new();
    let kept = client
        .get(server.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-me-42");
    let generated = client
        .get(server.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
}

/// PostgreSQL going away mid-run: 503 envelopes (and a failing readiness), then recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unavailable_is_a_503_envelope_and_recovers() {
    let db = TestDb::new(Backend::Postgres).await;
    let server = TestServer::start(&db).await;
    server.set_member("demo", "alice", "admin").await;
    let (admin_url, name) = db.pg().clone();
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    let away = format!("{name}_away");
    // Renaming needs the database idle: cut the service's connections (its workers reconnect
    // within a second, so try until the rename wins the race).
    let mut renamed = false;
    for _ in 0..50 {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .execute(&admin)
            .await
            .unwrap();
        if sqlx::query(&format!("ALTER DATABASE {name} RENAME TO {away}"))
            .execute(&admin)
            .await
            .is_ok()
        {
            renamed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(renamed, "could not take the database away");

    let answer = server.list("demo", "alice", "").await;
    assert_error(&answer, 503, 503, &["database unavailable"]);
    assert_error(
        &server.call(Method::GET, "/readyz", &[]).await,
        503,
        503,
        &["database"],
    );
    assert_eq!(
        server.call(Method::GET, "/healthz", &[]).await.0,
        StatusCode::OK,
        "liveness needs no database"
    );

    sqlx::query(&format!("ALTER DATABASE {away} RENAME TO {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let (status, body) = server.list("demo", "alice", "").await;
    assert_eq!(
        (status, body["data"]["count"].clone()),
        (StatusCode::OK, json!(0))
    );
}
