//! Gateway trust: with `APIGW_PUBLIC_KEY_FILE` set, `/{apigwType}/…` requests are identified by
//! the verified `X-Bkapi-JWT`, and every unverifiable token is a 401 with status 2112005.

use jsonwebtoken::Algorithm;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, TestDb, TestServer, assert_error, backend_tests};
use crate::keys::{self, claims, keys, now, sign, sign_with};

backend_tests!(
    a_verified_user_token_overrides_a_forged_uid_header,
    an_app_token_lets_the_header_name_the_user,
    the_default_gateway_type_takes_the_user_claim_or_the_header,
    unverifiable_tokens_are_refused,
    without_a_key_the_header_is_trusted,
    bk_claim_names_and_clock_leeway_are_accepted,
    the_gateway_backend_path_keeps_the_identity_rules,
);

const CREATE: &str = "?event=BUILD_END&region=IDC&url=http%3A%2F%2F93.184.215.14%2F";

struct Gateway {
    server: TestServer,
    _db: TestDb,
    _key: tempfile::NamedTempFile,
}

/// A server that trusts the test gateway's key; alice is admin of demo, bob a member.
async fn start(backend: Backend) -> Gateway {
    let db = TestDb::new(backend).await;
    let key = keys::public_key_file();
    let server = TestServer::start_with(
        &db,
        &[("APIGW_PUBLIC_KEY_FILE", key.path().to_str().unwrap())],
    )
    .await;
    server.set_member("demo", "alice", "admin").await;
    server.set_member("demo", "bob", "member").await;
    Gateway {
        server,
        _db: db,
        _key: key,
    }
}

async fn call(
    server: &TestServer,
    method: Method,
    apigw: &str,
    tail: &str,
    uid: Option<&str>,
    jwt: Option<&str>,
) -> (StatusCode, Value) {
    let path = format!("/{apigw}/v4/projects/demo/callbacks{tail}");
    let mut headers = Vec::new();
    if let Some(uid) = uid {
        headers.push(("X-DEVOPS-UID", uid));
    }
    if let Some(jwt) = jwt {
        headers.push(("X-Bkapi-JWT", jwt));
    }
    server.call(method, &path, &headers).await
}

async fn a_verified_user_token_overrides_a_forged_uid_header(backend: Backend) {
    let gateway = start(backend).await;
    let server = &gateway.server;
    let alice = sign(&claims(Some("ci"), Some("alice")));
    let answer = call(
        server,
        Method::POST,
        "apigw-user",
        CREATE,
        Some("mallory"),
        Some(&alice),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let (_, list) = call(
        server,
        Method::GET,
        "apigw-user",
        "/callback_list",
        None,
        Some(&alice),
    )
    .await;
    assert_eq!(list["data"]["records"][0]["creator"], "alice");

    // The header cannot lend bob alice's rights: the token says bob.
    let bob = sign(&claims(None, Some("bob")));
    assert_error(
        &call(
            server,
            Method::POST,
            "apigw-user",
            CREATE,
            Some("alice"),
            Some(&bob),
        )
        .await,
        403,
        2101104,
        &["bob"],
    );
    // bk_username is read too, and RS512 is accepted.
    let mut legacy = claims(None, None);
    legacy["user"] = json!({"bk_username": "alice", "verified": true});
    let legacy = sign_with(Algorithm::RS512, &keys().private_pem, &legacy);
    let answer = call(
        server,
        Method::GET,
        "apigw-user",
        "/callback_list",
        None,
        Some(&legacy),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
}

async fn an_app_token_lets_the_header_name_the_user(backend: Backend) {
    let gateway = start(backend).await;
    let server = &gateway.server;
    let app = sign(&claims(Some("ci-robot"), None));
    let answer = call(
        server,
        Method::POST,
        "apigw-app",
        CREATE,
        Some("alice"),
        Some(&app),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_error(
        &call(
            server,
            Method::POST,
            "apigw-app",
            CREATE,
            Some("bob"),
            Some(&app),
        )
        .await,
        403,
        2101104,
        &["bob"],
    );
    assert_error(
        &call(server, Method::POST, "apigw-app", CREATE, None, Some(&app)).await,
        401,
        401,
        &["X-DEVOPS-UID"],
    );
    // No verified app: refused, whatever the header says.
    let user_only = sign(&claims(None, Some("alice")));
    let mut unverified = claims(Some("ci-robot"), None);
    unverified["app"]["verified"] = json!(false);
    for token in [user_only, sign(&unverified)] {
        assert_error(
            &call(
                server,
                Method::POST,
                "apigw-app",
                CREATE,
                Some("alice"),
                Some(&token),
            )
            .await,
            401,
            2112005,
            &["app"],
        );
    }
}

async fn the_default_gateway_type_takes_the_user_claim_or_the_header(backend: Backend) {
    let gateway = start(backend).await;
    let server = &gateway.server;
    let list = "/callback_list";
    let app_only = sign(&claims(Some("ci"), None));
    let answer = call(
        server,
        Method::GET,
        "apigw",
        list,
        Some("bob"),
        Some(&app_only),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let carol = sign(&claims(Some("ci"), Some("carol")));
    assert_error(
        &call(
            server,
            Method::GET,
            "apigw",
            list,
            Some("bob"),
            Some(&carol),
        )
        .await,
        403,
        2101133,
        &["carol"],
    );
    assert_error(
        &call(server, Method::GET, "apigw", list, Some("bob"), None).await,
        401,
        2112005,
        &["X-Bkapi-JWT"],
    );
    // A token that vouches for no one (nobody, or only unverified claims) must not let the
    // header name anyone.
    let mut unverified = claims(Some("ci"), Some("bob"));
    unverified["app"]["verified"] = json!(false);
    unverified["user"]["verified"] = json!(false);
    for token in [sign(&claims(None, None)), sign(&unverified)] {
        assert_error(
            &call(
                server,
                Method::GET,
                "apigw",
                list,
                Some("bob"),
                Some(&token),
            )
            .await,
            401,
            2112005,
            &["neither a verified user", "nor a verified app"],
        );
    }
}

async fn unverifiable_tokens_are_refused(backend: Backend) {
    let gateway = start(backend).await;
    let server = &gateway.server;
    let mut expired = claims(None, Some("alice"));
    expired["exp"] = json!(now() - 3600);
    let mut early = claims(None, Some("alice"));
    early["nbf"] = json!(now() + 3600);
    let mut no_exp = claims(None, Some("alice"));
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut unverified = claims(None, Some("alice"));
    unverified["user"]["verified"] = json!(false);
    let mut unmarked = claims(None, Some("alice"));
    unmarked["user"].as_object_mut().unwrap().remove("verified");
    let mut bad_name = claims(None, Some("alice"));
    bad_name["user"]["username"] = json!("a\u{7}b");
    let good = claims(None, Some("alice"));
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "required"),
        ("garbage", Some("not-a-jwt".to_owned()), "not valid"),
        ("expired", Some(sign(&expired)), "Expired"),
        ("not yet valid", Some(sign(&early)), "Immature"),
        ("without exp", Some(sign(&no_exp)), "exp"),
        (
            "signed by another key",
            Some(sign_with(Algorithm::RS256, &keys().stranger_pem, &good)),
            "InvalidSignature",
        ),
        ("alg none", Some(keys::unsigned(&good)), "not valid"),
        (
            "HS256 with the public key",
            Some(keys::hmac_with_public_key(&good)),
            "InvalidAlgorithm",
        ),
        ("user not verified", Some(sign(&unverified)), "verified"),
        ("verified missing", Some(sign(&unmarked)), "verified"),
        ("bad user name", Some(sign(&bad_name)), "user name"),
    ];
    for (case, token, words) in cases {
        let answer = call(
            server,
            Method::GET,
            "apigw-user",
            "/callback_list",
            Some("alice"),
            token.as_deref(),
        )
        .await;
        assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{case}: {}", answer.1);
        assert_eq!(answer.1["status"], 2112005, "{case}: {}", answer.1);
        let message = answer.1["message"].as_str().unwrap();
        assert!(message.contains(words), "{case}: {message}");
        if let Some(token) = token {
            assert!(!message.contains(&token), "{case}: the token is echoed");
        }
    }
    // Routes outside /{apigwType}/ are not gateway routes.
    let (status, _) = server.call(Method::GET, "/healthz", &[]).await;
    assert_eq!(status, StatusCode::OK);
}

async fn without_a_key_the_header_is_trusted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = &TestServer::start(&db).await;
    server.set_member("demo", "alice", "admin").await;
    let forged = sign_with(
        Algorithm::RS256,
        &keys().stranger_pem,
        &claims(None, Some("x")),
    );
    let answer = call(
        server,
        Method::GET,
        "apigw-user",
        "/callback_list",
        Some("alice"),
        Some(&forged),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
}

/// `bk_app_code` and `bk_username` name the app and user as `app_code` and `username` do; `exp`
/// and `nbf` get 30 s of leeway, and no more.
async fn bk_claim_names_and_clock_leeway_are_accepted(backend: Backend) {
    let gateway = start(backend).await;
    let server = &gateway.server;
    let list = "/callback_list";
    let mut app = claims(None, None);
    app["app"] = json!({"bk_app_code": "ci-robot", "verified": true});
    let answer = call(
        server,
        Method::POST,
        "apigw-app",
        CREATE,
        Some("alice"),
        Some(&sign(&app)),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let mut user = claims(None, None);
    user["user"] = json!({"bk_username": "bob", "verified": true});
    let (status, body) = call(
        server,
        Method::GET,
        "apigw-user",
        list,
        Some("mallory"),
        Some(&sign(&user)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["records"][0]["creator"], "alice", "{body}");

    let shifted = |field: &str, by: i64| {
        let mut claims = claims(None, Some("bob"));
        claims[field] = json!(now() + by);
        sign(&claims)
    };
    for (field, by) in [("exp", -10), ("nbf", 10)] {
        let answer = call(
            server,
            Method::GET,
            "apigw-user",
            list,
            None,
            Some(&shifted(field, by)),
        )
        .await;
        assert_eq!(answer.0, StatusCode::OK, "{field} {by:+} s: {}", answer.1);
    }
    for (field, by) in [("exp", -60), ("nbf", 60)] {
        assert_error(
            &call(
                server,
                Method::GET,
                "apigw-user",
                list,
                None,
                Some(&shifted(field, by)),
            )
            .await,
            401,
            2112005,
            &[],
        );
    }
}

/// The gateway calls `/openapi/api/{apigwType}/v4/…` (and nginx `/api/…`): the same token rules.
async fn the_gateway_backend_path_keeps_the_identity_rules(backend: Backend) {
    let gateway = start(backend).await;
    let server = &gateway.server;
    for base in ["/openapi/api", "/api"] {
        let path = format!("{base}/apigw-user/v4/projects/demo/callbacks");
        assert_error(
            &server
                .call(
                    Method::POST,
                    &format!("{path}{CREATE}"),
                    &[("X-DEVOPS-UID", "alice")],
                )
                .await,
            401,
            2112005,
            &["X-Bkapi-JWT"],
        );
        let alice = sign(&claims(Some("ci"), Some("alice")));
        let answer = server
            .call(
                Method::POST,
                &format!("{path}{CREATE}"),
                &[("X-DEVOPS-UID", "mallory"), ("X-Bkapi-JWT", &alice)],
            )
            .await;
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
        let (_, list) = server
            .call(
                Method::GET,
                &format!("{path}/callback_list"),
                &[("X-Bkapi-JWT", &alice)],
            )
            .await;
        assert_eq!(list["data"]["records"][0]["updater"], "alice", "{list}");
    }
}
