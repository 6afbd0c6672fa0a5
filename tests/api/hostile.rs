//! Hostile input, as property tests run in the normal suite with a bounded number of cases:
//! arbitrary bytes in every path segment, query parameter, header and body of every route must
//! get the JSON envelope and never a 5xx; and the domain parsers keep their promises on
//! arbitrary text.
//!
//! The router is called in process (`app(state)` with `oneshot`) on a SQLite file. No user is an
//! admin, so no request reaches the URL check's DNS lookup: the only traffic is in process.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use devops_callbacks::config::Config;
use devops_callbacks::delivery::ssrf::SsrfGuard;
use devops_callbacks::domain::{CallbackUrl, EventId, ProjectId, UserId};
use devops_callbacks::{AppState, store};
use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestCaseError, TestRunner};
use serde_json::Value;
use tower::ServiceExt;

use crate::common::{SERVICE_TOKEN, enc};
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
    ]
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

/// Two routers on one SQLite database: headers trusted, and gateway JWT required.
async fn routers(dir: &std::path::Path, key: &std::path::Path) -> (Router, Router) {
    let url = format!("sqlite://{}", dir.join("hostile.db").display());
    let mut vars = HashMap::from([
        ("DATABASE_URL".to_owned(), url),
        ("SERVICE_TOKEN".to_owned(), SERVICE_TOKEN.to_owned()),
        ("REQUEST_TIMEOUT_SECS".to_owned(), "20".to_owned()),
    ]);
    let plain = Config::from_map(&vars).unwrap();
    vars.insert(
        "APIGW_PUBLIC_KEY_FILE".to_owned(),
        key.to_str().unwrap().to_owned(),
    );
    let gated = Config::from_map(&vars).unwrap();
    let store = store::open(&plain).await.unwrap();
    let (demo, bob) = ("demo".parse().unwrap(), "bob".parse().unwrap());
    store
        .set_member(&demo, &bob, devops_callbacks::domain::MemberRole::Member)
        .await
        .unwrap();
    (
        devops_callbacks::app(AppState::new(plain, store.clone())),
        devops_callbacks::app(AppState::new(gated, store)),
    )
}

async fn check(router: Router, request: Request<Body>) -> Result<(), TestCaseError> {
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
    Ok(())
}

#[test]
fn arbitrary_requests_get_an_envelope_and_never_a_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = keys::public_key_file();
    let (plain, gated) = runtime.block_on(routers(dir.path(), key.path()));
    let mut runner = TestRunner::new(cases());
    let outcome = runner.run(&hostile(), |input| {
        let Some(request) = request(&input) else {
            return Ok(());
        };
        let router = if input.gated { &gated } else { &plain };
        runtime.block_on(check(router.clone(), request))
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

/// URL-shaped text, to get past the first characters of the URL parser.
fn url_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(https?|HTTP|ftp|file|javascript|)(:|://|:///)[a-zA-Z0-9.:@%\\[\\]_~-]{0,40}(:[0-9]{0,7})?(/[ -~]{0,40})?",
        (0..1100usize).prop_map(|n| format!("http://x.example/{}", "a".repeat(n))),
    ]
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn callback_urls_that_parse_keep_every_rule(raw in url_like()) {
        let blocked = [22, 6379];
        if let Ok(url) = CallbackUrl::parse(raw.clone(), &blocked) {
            prop_assert!(raw.len() <= CallbackUrl::MAX_LEN);
            prop_assert_eq!(url.as_str(), raw.as_str());
            // What the sender will parse and dial: http(s), a host, no blocked port.
            let dialled = url::Url::parse(&raw).unwrap();
            prop_assert!(matches!(dialled.scheme(), "http" | "https"), "{raw}");
            prop_assert!(!url.host().to_string().is_empty(), "{raw}");
            prop_assert!(!blocked.contains(&url.port()));
        }
    }

    #[test]
    fn identifiers_that_parse_are_bounded_and_printable(raw in any::<String>()) {
        if let Ok(project) = raw.parse::<ProjectId>() {
            prop_assert!(!project.as_str().is_empty() && project.as_str().len() <= ProjectId::MAX_LEN);
            prop_assert!(project.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)));
        }
        if let Ok(user) = raw.parse::<UserId>() {
            prop_assert!(!user.as_str().is_empty() && user.as_str().chars().count() <= UserId::MAX_LEN);
            prop_assert!(!user.as_str().chars().any(char::is_control));
        }
        if let Ok(event) = raw.parse::<EventId>() {
            prop_assert!(event.as_str().chars().count() <= EventId::MAX_LEN);
            prop_assert!(!event.as_str().chars().any(char::is_control));
        }
    }

    #[test]
    fn a_blocked_ipv4_stays_blocked_inside_ipv6(octets in any::<[u8; 4]>()) {
        let guard = SsrfGuard::new(Vec::new(), false);
        let v4 = Ipv4Addr::from(octets);
        if guard.check_ip(IpAddr::V4(v4)).is_err() {
            prop_assert!(guard.check_ip(IpAddr::V6(v4.to_ipv6_mapped())).is_err());
            let nat64 = std::net::Ipv6Addr::from(
                (0x0064_ff9b_u128 << 96) | u128::from(u32::from(v4)),
            );
            prop_assert!(guard.check_ip(IpAddr::V6(nat64)).is_err(), "{nat64}");
        }
    }
}
