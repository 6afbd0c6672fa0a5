//! Hostile input, as property tests run in the normal suite with a bounded number of cases:
//! arbitrary bytes in every path segment, query parameter, header and body of every route must
//! get the JSON envelope and never a 5xx; and the domain parsers keep their promises on
//! arbitrary text.
//!
//! The router is called in process (`app(state)` with `oneshot`), once on a SQLite file and once
//! on PostgreSQL. No user is an admin, so no request reaches the URL check's DNS lookup: the only
//! traffic is in process (and to the test database). Every property counts the cases that reached
//! its assertions and requires a minimum, so a generator that stops producing them fails.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use devops_callbacks::auth::gateway::GatewayVerifier;
use devops_callbacks::config::Config;
use devops_callbacks::delivery::ssrf::SsrfGuard;
use devops_callbacks::domain::{CallbackUrl, EventId, ProjectId, UserId};
use devops_callbacks::{AppState, store};
use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestCaseError, TestRunner};
use serde_json::Value;
use tower::ServiceExt;

use crate::common::{Backend, SERVICE_TOKEN, TestDb, enc};
use crate::keys::{self, claims, sign};

const CASES: u32 = 256;

fn cases() -> Cases {
    Cases {
        cases: CASES,
        failure_persistence: None,
        ..Cases::default()
    }
}

/// Routes with the query parameters each one reads.
const ROUTES: &[(&str, &str, &[&str])] = &[
    (
        "POST",
        "/{a}/v4/projects/{p}/callbacks",
        &["event", "region", "url", "secretToken"],
    ),
    (
        "POST",
        "/{a}/v4/projects/{p}/callbacks/batch",
        &["event", "region", "url", "secretToken"],
    ),
    (
        "GET",
        "/{a}/v4/projects/{p}/callbacks/callback_list",
        &["page", "pageSize"],
    ),
    ("DELETE", "/{a}/v4/projects/{p}/callbacks/callback", &["id"]),
    (
        "PUT",
        "/{a}/v4/projects/{p}/callbacks/callback_enable",
        &["id"],
    ),
    (
        "PUT",
        "/{a}/v4/projects/{p}/callbacks/callback_disable",
        &["id"],
    ),
    (
        "GET",
        "/{a}/v4/projects/{p}/callbacks/callback_history",
        &["url", "event", "startTime", "endTime", "page", "pageSize"],
    ),
    (
        "POST",
        "/{a}/v4/projects/{p}/callbacks/callback_retry",
        &["id"],
    ),
    ("POST", "/service/callbacks/projects/{p}/events", &[]),
    ("POST", "/service/callbacks/events:batch", &[]),
    ("PUT", "/op/projects/{p}/members/{u}", &["role"]),
    ("DELETE", "/op/projects/{p}/members/{u}", &[]),
    ("GET", "/op/projects/{p}/members", &[]),
    // Creating a global callback is left out: it needs no admin, so generated host names would
    // be resolved through the system's DNS.
    ("GET", "/op/callbacks/global", &["page", "pageSize"]),
    ("DELETE", "/op/callbacks/global/{u}", &[]),
];

/// Valid-looking values, so cases also get past the first check to the later ones.
const WORDS: &[&str] = &[
    "apigw-user",
    "apigw-app",
    "apigw",
    "demo",
    "bob",
    "BUILD_END",
    "PROJECT_CREATE",
    "IDC",
    "1",
    "0",
    "-1",
    "100",
    "99999999999999999999",
    "2026-01-01 00:00:00",
    "member",
    "http://93.184.215.14/hook",
    "http://127.0.0.1:6379/",
    "whsec_abc",
    "enc:v1:AAAA",
    r#"{"event":"BUILD_END","data":{}}"#,
    r#"[{"projectId":"demo","event":"BUILD_END","data":1}]"#,
];

fn text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..48),
        3 => prop::sample::select(WORDS).prop_map(|w| w.as_bytes().to_vec()),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => tainted(),
    ]
}

/// A valid-looking value with a control character (NUL, ESC, DEL, …) somewhere inside: text
/// columns of PostgreSQL refuse NUL, so these must be refused before they reach the database.
fn tainted() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(WORDS),
        prop::sample::select(&[0u8, 1, 9, 10, 13, 27, 127][..]),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(word, control, at)| {
            let mut bytes = word.as_bytes().to_vec();
            bytes.insert(at.index(bytes.len() + 1), control);
            bytes
        })
}

/// Mostly one of `words`, sometimes anything.
fn mostly(words: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(words).prop_map(|w| w.as_bytes().to_vec()),
        1 => text(),
    ]
}

/// Where a case puts an oversized value: the query or a header.
#[derive(Debug, Clone, Copy)]
enum Oversized {
    Query(usize),
    Header(usize),
}

#[derive(Debug, Clone)]
struct Hostile {
    route: usize,
    gated: bool,
    segments: [Vec<u8>; 3],
    params: Vec<(Option<usize>, Vec<u8>, Vec<u8>)>,
    uid: Option<Vec<u8>>,
    jwt: Option<Vec<u8>>,
    /// Sends a token the gateway really signed for bob, so cases get past the gateway too.
    signed_jwt: bool,
    bk_token: Option<Vec<u8>>,
    body: Vec<u8>,
    oversized: Option<Oversized>,
}

fn hostile() -> impl Strategy<Value = Hostile> {
    (
        (0..ROUTES.len(), any::<bool>()),
        [
            mostly(&["apigw-user", "apigw-app", "apigw"]),
            mostly(&["demo"]),
            mostly(&["bob"]),
        ],
        prop::collection::vec((prop::option::of(0..6usize), text(), text()), 0..6),
        (
            prop::option::weighted(0.8, mostly(&["bob"])),
            prop::option::of(text()),
            any::<bool>(),
            prop::option::weighted(0.8, mostly(&[SERVICE_TOKEN])),
        ),
        text(),
        prop::option::weighted(
            0.1,
            prop_oneof![
                (8_200..40_000usize).prop_map(Oversized::Query),
                (33_000..60_000usize).prop_map(Oversized::Header),
            ],
        ),
    )
        .prop_map(
            |(
                (route, gated),
                segments,
                params,
                (uid, jwt, signed_jwt, bk_token),
                body,
                oversized,
            )| {
                Hostile {
                    route,
                    gated,
                    segments,
                    params,
                    uid,
                    jwt,
                    signed_jwt,
                    bk_token,
                    body,
                    oversized,
                }
            },
        )
}

fn segment(bytes: &[u8]) -> String {
    enc(&String::from_utf8_lossy(bytes))
}

/// Percent-encodes every byte as it is, so invalid UTF-8 reaches the parsers.
fn raw(bytes: &[u8]) -> String {
    url::form_urlencoded::byte_serialize(bytes).collect()
}

fn request(input: &Hostile) -> Option<Request<Body>> {
    let (method, template, names) = ROUTES[input.route];
    let path = template
        .replace("{a}", &segment(&input.segments[0]))
        .replace("{p}", &segment(&input.segments[1]))
        .replace("{u}", &segment(&input.segments[2]));
    let mut query: Vec<String> = input
        .params
        .iter()
        .map(|(known, name, value)| {
            let name = match known.and_then(|i| names.get(i)) {
                Some(known) => (*known).to_owned(),
                None => raw(name),
            };
            format!("{name}={}", raw(value))
        })
        .collect();
    if let Some(Oversized::Query(n)) = input.oversized {
        query.push(format!(
            "{}={}",
            names.first().unwrap_or(&"q"),
            "x".repeat(n)
        ));
    }
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    };
    let mut builder = Request::builder().method(method).uri(uri);
    let headers = [
        ("x-devops-uid", input.uid.clone()),
        ("x-devops-bk-token", input.bk_token.clone()),
        (
            "x-bkapi-jwt",
            if input.signed_jwt {
                Some(sign(&claims(Some("ci"), Some("bob"))).into_bytes())
            } else {
                input.jwt.clone()
            },
        ),
    ];
    for (name, value) in headers {
        // Bytes no HTTP client can send (CR, LF, NUL, …) are left out.
        if let Some(value) = value.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
            builder = builder.header(name, value);
        }
    }
    if let Some(Oversized::Header(n)) = input.oversized {
        builder = builder.header("x-filler", "y".repeat(n));
    }
    builder
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(input.body.clone()))
        .ok()
}

/// Two routers on one test database: headers trusted, and gateway JWT required.
async fn routers(db: &TestDb, key: &std::path::Path) -> (Router, Router) {
    let mut vars = HashMap::from([
        ("DATABASE_URL".to_owned(), db.url.clone()),
        ("SERVICE_TOKEN".to_owned(), SERVICE_TOKEN.to_owned()),
        ("REQUEST_TIMEOUT_SECS".to_owned(), "20".to_owned()),
        ("DATABASE_MAX_CONNECTIONS".to_owned(), "5".to_owned()),
    ]);
    let plain = Config::from_map(&vars).unwrap();
    vars.insert(
        "APIGW_PUBLIC_KEY_FILE".to_owned(),
        key.to_str().unwrap().to_owned(),
    );
    let gated = Config::from_map(&vars).unwrap();
    let gateway = GatewayVerifier::from_config(&gated).unwrap();
    let store = store::open(&plain).await.unwrap();
    let (demo, bob) = ("demo".parse().unwrap(), "bob".parse().unwrap());
    store
        .set_member(&demo, &bob, devops_callbacks::domain::MemberRole::Member)
        .await
        .unwrap();
    (
        devops_callbacks::app(AppState::new(plain, store.clone(), None).unwrap()),
        devops_callbacks::app(AppState::new(gated, store, gateway).unwrap()),
    )
}

/// Checks one answer; returns its HTTP status.
async fn check(
    router: Router,
    request: Request<Body>,
) -> Result<axum::http::StatusCode, TestCaseError> {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    prop_assert!(!status.is_server_error(), "{status}: {text}");
    prop_assert!(
        content_type.starts_with("application/json"),
        "{status} {content_type}: {text}"
    );
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {text}")))?;
    prop_assert!(body["status"].is_i64(), "{text}");
    if status.is_success() {
        prop_assert_eq!(&body["status"], 0, "{}", text);
    } else {
        prop_assert_ne!(&body["status"], 0, "{}", text);
        prop_assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{text}"
        );
    }
    Ok(status)
}

/// How many cases were sent, answered with a success, and got past the first 4xx checks
/// (anything but 400/401/404/405).
#[derive(Default)]
struct Hits {
    sent: AtomicUsize,
    succeeded: AtomicUsize,
    deep: AtomicUsize,
}

fn arbitrary_requests_get_an_envelope_and_never_a_5xx(backend: Backend, cases: u32) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let key = keys::public_key_file();
    let db = runtime.block_on(TestDb::new(backend));
    let (plain, gated) = runtime.block_on(routers(&db, key.path()));
    let hits = Hits::default();
    let mut runner = TestRunner::new(Cases {
        cases,
        ..self::cases()
    });
    let outcome = runner.run(&hostile(), |input| {
        let Some(request) = request(&input) else {
            return Ok(());
        };
        let router = if input.gated { &gated } else { &plain };
        let status = runtime.block_on(check(router.clone(), request))?;
        hits.sent.fetch_add(1, Ordering::Relaxed);
        if status.is_success() {
            hits.succeeded.fetch_add(1, Ordering::Relaxed);
        }
        if !matches!(status.as_u16(), 400 | 401 | 404 | 405) {
            hits.deep.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("[{backend:?}] {failure}");
    }
    let (sent, succeeded, deep) = (
        hits.sent.into_inner(),
        hits.succeeded.into_inner(),
        hits.deep.into_inner(),
    );
    eprintln!(
        "[{backend:?}] {sent} requests sent, {succeeded} succeeded, {deep} past the first checks"
    );
    let cases = usize::try_from(cases).unwrap();
    assert!(
        sent >= cases * 9 / 10,
        "only {sent} of {cases} cases were sent"
    );
    assert!(succeeded >= cases / 50, "only {succeeded} cases succeeded");
    assert!(
        deep >= cases / 20,
        "only {deep} cases got past the first checks"
    );
    drop(db);
}

#[test]
fn arbitrary_requests_on_sqlite() {
    arbitrary_requests_get_an_envelope_and_never_a_5xx(Backend::Sqlite, CASES);
}

#[test]
fn arbitrary_requests_on_postgres() {
    arbitrary_requests_get_an_envelope_and_never_a_5xx(Backend::Postgres, CASES);
}

/// Control characters in every text parameter a member or the service token reaches, sent
/// percent-encoded (as no client can send them raw): refused with a 4xx envelope, never a 5xx
/// from a database that refuses NUL in text.
fn control_characters_are_refused(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let key = keys::public_key_file();
    let db = runtime.block_on(TestDb::new(backend));
    let (plain, _) = runtime.block_on(routers(&db, key.path()));
    let v4 = "/apigw-user/v4/projects/demo/callbacks";
    let intake = "/service/callbacks/projects/demo/events";
    let mut cases: Vec<(&str, String, String)> = Vec::new();
    for control in ["%00", "%01", "%1B", "%7F"] {
        for query in [
            format!("url=a{control}b"),
            format!("event=BUILD_END{control}"),
            format!("startTime=2026-01-01{control}00:00:00"),
            format!("url=http%3A%2F%2Fh{control}%2F&event=BUILD_END"),
        ] {
            cases.push((
                "GET",
                format!("{v4}/callback_history?{query}"),
                String::new(),
            ));
        }
        cases.push((
            "GET",
            format!("/apigw-user/v4/projects/de{control}mo/callbacks/callback_list"),
            String::new(),
        ));
        cases.push((
            "PUT",
            format!("/op/projects/demo/members/b{control}ob?role=member"),
            String::new(),
        ));
        cases.push((
            "GET",
            format!("/op/projects/de{control}mo/members"),
            String::new(),
        ));
    }
    for body in [
        r#"{"event":"BUILD_END","data":{},"eventId":"a\u0000b"}"#,
        r#"{"event":"BUILD_END","data":"a\u0000b"}"#,
        r#"{"event":"BUILD_END","data":{"k\u0000":1}}"#,
        r#"{"event":"BUILD_END\u0000","data":{}}"#,
    ] {
        cases.push(("POST", intake.to_owned(), body.to_owned()));
    }
    let mut failures = Vec::new();
    for (method, uri, body) in &cases {
        let request = Request::builder()
            .method(*method)
            .uri(uri)
            .header("x-devops-uid", "bob")
            .header("x-devops-bk-token", SERVICE_TOKEN)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        match runtime.block_on(check(plain.clone(), request)) {
            Ok(status) if status.is_client_error() || body.contains("data") => {}
            Ok(status) => failures.push(format!("{method} {uri} {body}: {status}")),
            Err(failure) => failures.push(format!("{method} {uri} {body}: {failure}")),
        }
    }
    assert!(
        failures.is_empty(),
        "[{backend:?}]\n{}",
        failures.join("\n")
    );
    drop(db);
}

#[test]
fn control_characters_are_refused_on_sqlite() {
    control_characters_are_refused(Backend::Sqlite);
}

#[test]
fn control_characters_are_refused_on_postgres() {
    control_characters_are_refused(Backend::Postgres);
}

/// URL-shaped text, to get past the first characters of the URL parser.
fn url_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(https?|HTTP|ftp|file|javascript|)(:|://|:///)[a-zA-Z0-9.:@%\\[\\]_~-]{0,40}(:[0-9]{0,7})?(/[ -~]{0,40})?",
        (0..1100usize).prop_map(|n| format!("http://x.example/{}", "a".repeat(n))),
    ]
}

/// Runs `test` over `strategy` for `CASES` cases; `test` says whether a case reached its
/// assertions, and at least `min_hits` must have.
fn run_counting<S: Strategy>(
    name: &str,
    strategy: S,
    min_hits: usize,
    test: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) {
    let hits = AtomicUsize::new(0);
    let outcome = TestRunner::new(cases()).run(&strategy, |value| {
        if test(value)? {
            hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{name}: {failure}");
    }
    let hits = hits.into_inner();
    assert!(
        hits >= min_hits,
        "{name}: only {hits} of {CASES} cases reached the assertions"
    );
}

#[test]
fn callback_urls_that_parse_keep_every_rule() {
    run_counting("callback URLs", url_like(), 32, |raw| {
        let blocked = [22, 6379];
        let Ok(url) = CallbackUrl::parse(raw.clone(), &blocked) else {
            return Ok(false);
        };
        prop_assert!(raw.len() <= CallbackUrl::MAX_LEN);
        prop_assert_eq!(url.as_str(), raw.as_str());
        // What the sender will parse and dial: http(s), a host, no blocked port.
        let dialled = url::Url::parse(&raw).unwrap();
        prop_assert!(matches!(dialled.scheme(), "http" | "https"), "{raw}");
        prop_assert!(!url.host().to_string().is_empty(), "{raw}");
        prop_assert!(!blocked.contains(&url.port()));
        Ok(true)
    });
}

/// Mostly identifier-shaped text, sometimes anything.
fn identifier_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9_.-]{0,70}",
        "[ -~\u{a0}-\u{3000}]{0,70}",
    ]
}

#[test]
fn identifiers_that_parse_are_bounded_and_printable() {
    run_counting("identifiers", identifier_like(), 32, |raw| {
        let mut hit = false;
        if let Ok(project) = raw.parse::<ProjectId>() {
            hit = true;
            prop_assert!(
                !project.as_str().is_empty() && project.as_str().len() <= ProjectId::MAX_LEN
            );
            prop_assert!(
                project
                    .as_str()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            );
        }
        if let Ok(user) = raw.parse::<UserId>() {
            hit = true;
            prop_assert!(
                !user.as_str().is_empty() && user.as_str().chars().count() <= UserId::MAX_LEN
            );
            prop_assert!(!user.as_str().chars().any(char::is_control));
        }
        if let Ok(event) = raw.parse::<EventId>() {
            hit = true;
            prop_assert!(event.as_str().chars().count() <= EventId::MAX_LEN);
            prop_assert!(!event.as_str().chars().any(char::is_control));
        }
        Ok(hit)
    });
}

/// Any IPv4 address, or one from the ranges the guard refuses.
fn ipv4() -> impl Strategy<Value = [u8; 4]> {
    let first =
        prop::sample::select(&[0u8, 10, 100, 127, 169, 172, 192, 198, 203, 224, 240, 255][..]);
    prop_oneof![
        any::<[u8; 4]>(),
        (first, any::<[u8; 3]>()).prop_map(|(a, [b, c, d])| [a, b, c, d]),
    ]
}

#[test]
fn a_blocked_ipv4_stays_blocked_inside_ipv6() {
    let guard = SsrfGuard::new(Vec::new(), false);
    run_counting("IPv4 inside IPv6", ipv4(), 32, |octets| {
        let v4 = Ipv4Addr::from(octets);
        if guard.check_ip(IpAddr::V4(v4)).is_ok() {
            return Ok(false);
        }
        prop_assert!(guard.check_ip(IpAddr::V6(v4.to_ipv6_mapped())).is_err());
        let nat64 = std::net::Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(u32::from(v4)));
        prop_assert!(guard.check_ip(IpAddr::V6(nat64)).is_err(), "{nat64}");
        Ok(true)
    });
}
