//! `AUTH_MODE=bkci` against a fake bk-ci auth service on 127.0.0.1:0: its answers decide, they
//! are cached for the TTL (refusals for a fifth of it), anything but a clean answer is a 503, and
//! the local member table cannot be managed (op API or CLI).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{Backend, SERVICE_TOKEN, TestDb, TestServer, assert_error, backend_tests};

backend_tests!(
    the_service_decides_admin_and_member,
    anything_but_a_clean_answer_is_a_503,
    a_dead_service_is_a_503,
    decisions_are_cached_for_the_ttl,
    local_members_cannot_be_managed,
    concurrent_identical_questions_share_one_lookup,
);

const AUTH_TOKEN: &str = "bk-auth-token-for-tests";
const CREATE: &str = "event=BUILD_END&region=IDC&url=http%3A%2F%2F93.184.215.14%2F";

/// How the fake answers one (user, question).
#[derive(Clone)]
enum Reply {
    Says(bool),
    /// A status and a raw body.
    Raw(u16, &'static str),
    /// Answers yes after this long.
    Slow(Duration),
}

#[derive(Default)]
struct Inner {
    /// (user, "checkProjectManager" | "isProjectUsers") → reply; unknown: `false`.
    replies: HashMap<(String, String), Reply>,
    calls: HashMap<(String, String), usize>,
    tokens: Vec<String>,
    projects: Vec<String>,
}

#[derive(Clone)]
struct FakeAuth {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl FakeAuth {
    async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route(
                "/bkci/service/auth/projects/{project}/users/{user}/{question}",
                get(answer),
            )
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, inner }
    }

    fn url(&self) -> String {
        format!("http://{}/bkci", self.addr)
    }

    fn set(&self, user: &str, question: &str, reply: Reply) {
        self.inner
            .lock()
            .unwrap()
            .replies
            .insert((user.to_owned(), question.to_owned()), reply);
    }

    fn calls(&self, user: &str, question: &str) -> usize {
        let inner = self.inner.lock().unwrap();
        let key = (user.to_owned(), question.to_owned());
        inner.calls.get(&key).copied().unwrap_or_default()
    }
}

async fn answer(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path((project, user, question)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let reply = {
        let mut inner = inner.lock().unwrap();
        let key = (user, question);
        *inner.calls.entry(key.clone()).or_default() += 1;
        let token = headers
            .get("x-devops-bk-token")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        inner.tokens.push(token);
        inner.projects.push(project);
        inner.replies.get(&key).cloned()
    };
    match reply.unwrap_or(Reply::Says(false)) {
        Reply::Says(yes) => axum::Json(json!({"status": 0, "data": yes})).into_response(),
        Reply::Raw(code, body) => (AxumStatus::from_u16(code).unwrap(), body).into_response(),
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            axum::Json(json!({"status": 0, "data": true})).into_response()
        }
    }
}

const ADMIN: &str = "checkProjectManager";
const MEMBER: &str = "isProjectUsers";

async fn start(db: &TestDb, url: &str, ttl: &str) -> TestServer {
    TestServer::start_with(
        db,
        &[
            ("AUTH_MODE", "bkci"),
            ("BKCI_AUTH_URL", url),
            ("BKCI_AUTH_TOKEN", AUTH_TOKEN),
            ("BKCI_AUTH_TIMEOUT_MS", "500"),
            ("AUTH_CACHE_TTL_SECS", ttl),
        ],
    )
    .await
}

async fn the_service_decides_admin_and_member(backend: Backend) {
    let db = TestDb::new(backend).await;
    let auth = FakeAuth::start().await;
    let server = start(&db, &auth.url(), "0").await;
    auth.set("alice", ADMIN, Reply::Says(true));
    auth.set("alice", MEMBER, Reply::Says(true));
    auth.set("bob", MEMBER, Reply::Says(true));
    // A user id with characters that mean something in a URL path travels as one segment.
    let odd = "a/b c?d#e";
    auth.set(odd, MEMBER, Reply::Says(true));

    assert_eq!(
        server.create("demo", "alice", CREATE).await.0,
        StatusCode::OK
    );
    assert_eq!(server.list("demo", "alice", "").await.0, StatusCode::OK);
    assert_error(
        &server.create("demo", "bob", CREATE).await,
        403,
        2101104,
        &["bob"],
    );
    assert_eq!(server.list("demo", "bob", "").await.0, StatusCode::OK);
    assert_error(
        &server.create("demo", "carol", CREATE).await,
        403,
        2101104,
        &[],
    );
    assert_error(&server.list("demo", "carol", "").await, 403, 2101133, &[]);
    assert_eq!(server.list("demo", odd, "").await.0, StatusCode::OK);
    assert_eq!(auth.calls(odd, MEMBER), 1);

    let inner = auth.inner.lock().unwrap();
    assert!(
        inner.tokens.iter().all(|t| t == AUTH_TOKEN),
        "{:?}",
        inner.tokens
    );
    assert!(inner.projects.iter().all(|p| p == "demo"));
}

async fn anything_but_a_clean_answer_is_a_503(backend: Backend) {
    let db = TestDb::new(backend).await;
    let auth = FakeAuth::start().await;
    let server = start(&db, &auth.url(), "30").await;
    let broken = [
        Reply::Raw(200, "yes"),
        Reply::Raw(200, r#"{"status":0}"#),
        Reply::Raw(200, r#"{"status":0,"data":"true"}"#),
        Reply::Raw(200, r#"{"status":2100001,"data":true}"#),
        Reply::Raw(200, r#"{"data":true}"#),
        Reply::Raw(200, ""),
        Reply::Raw(500, r#"{"status":0,"data":true}"#),
        Reply::Raw(403, r#"{"status":0,"data":true}"#),
        Reply::Raw(302, ""),
        Reply::Slow(Duration::from_secs(3)),
    ];
    for (case, reply) in broken.into_iter().enumerate() {
        auth.set("alice", MEMBER, reply);
        let answer = server.list("demo", "alice", "").await;
        assert_error(&answer, 503, 503, &["auth service"]);
        assert!(
            !answer.1.to_string().contains(AUTH_TOKEN),
            "case {case}: {}",
            answer.1
        );
    }
    // Failures are not cached: a clean answer counts at once.
    auth.set("alice", MEMBER, Reply::Says(true));
    assert_eq!(server.list("demo", "alice", "").await.0, StatusCode::OK);
}

async fn a_dead_service_is_a_503(backend: Backend) {
    let db = TestDb::new(backend).await;
    // A port bound but never listened on: held by this test (no other process can take it in
    // between), and every connection to it is refused.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = reserved.local_addr().unwrap();
    let server = start(&db, &format!("http://{closed}/"), "30").await;
    assert_error(
        &server.list("demo", "alice", "").await,
        503,
        503,
        &["auth service"],
    );
    assert_error(&server.create("demo", "alice", CREATE).await, 503, 503, &[]);
}

async fn decisions_are_cached_for_the_ttl(backend: Backend) {
    let db = TestDb::new(backend).await;
    let auth = FakeAuth::start().await;
    // Three seconds: long enough that "still cached" holds on a loaded machine.
    let server = start(&db, &auth.url(), "3").await;
    auth.set("alice", MEMBER, Reply::Says(true));
    for _ in 0..3 {
        assert_eq!(server.list("demo", "alice", "").await.0, StatusCode::OK);
    }
    assert_eq!(auth.calls("alice", MEMBER), 1, "answered from the cache");

    // Revoked: still allowed from the cache, then refused once the TTL is over.
    auth.set("alice", MEMBER, Reply::Says(false));
    assert_eq!(server.list("demo", "alice", "").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_error(&server.list("demo", "alice", "").await, 403, 2101133, &[]);
    assert_eq!(auth.calls("alice", MEMBER), 2);

    // A refusal is kept for a fifth of the TTL (0.6 s) only: granted again, allowed well within
    // the TTL.
    auth.set("alice", MEMBER, Reply::Says(true));
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(server.list("demo", "alice", "").await.0, StatusCode::OK);
    assert_eq!(auth.calls("alice", MEMBER), 3);
}

async fn local_members_cannot_be_managed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let auth = FakeAuth::start().await;
    let server = start(&db, &auth.url(), "30").await;
    let token = ("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN);
    for (method, path) in [
        (Method::PUT, "/op/projects/demo/members/alice?role=admin"),
        (Method::DELETE, "/op/projects/demo/members/alice"),
        (Method::GET, "/op/projects/demo/members"),
    ] {
        assert_error(
            &server.call(method, path, &[token]).await,
            409,
            409,
            &["AUTH_MODE=bkci"],
        );
    }
    let auth_url = auth.url();
    let vars = [
        ("AUTH_MODE", "bkci"),
        ("BKCI_AUTH_URL", auth_url.as_str()),
        ("BKCI_AUTH_TOKEN", AUTH_TOKEN),
    ];
    let cli = crate::common::cli(
        &db,
        &vars,
        &[
            "members",
            "add",
            "--project",
            "demo",
            "--user",
            "x",
            "--role",
            "admin",
        ],
    )
    .await;
    assert!(!cli.status.success());
    assert!(String::from_utf8_lossy(&cli.stderr).contains("AUTH_MODE=bkci"));
}

/// Eight requests at once ask the same slow question: one lookup answers them all.
async fn concurrent_identical_questions_share_one_lookup(backend: Backend) {
    let db = TestDb::new(backend).await;
    let auth = FakeAuth::start().await;
    let server = start(&db, &auth.url(), "30").await;
    auth.set("alice", MEMBER, Reply::Slow(Duration::from_millis(300)));
    let url = server.url("/apigw-user/v4/projects/demo/callbacks/callback_list");
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = reqwest::Client::new()
            .get(&url)
            .header("X-DEVOPS-UID", "alice");
        requests.spawn(async move { request.send().await.unwrap().status() });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        auth.calls("alice", MEMBER),
        1,
        "one lookup for eight requests"
    );
}
