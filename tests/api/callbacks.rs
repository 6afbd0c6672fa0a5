//! Create, list and delete on the v4 resource, with permissions and validation.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, TestDb, TestServer, assert_error, backend_tests, enc, public_url};

backend_tests!(
    create_answers_true_and_lists_the_record,
    create_is_an_upsert_that_keeps_one_row_and_its_id,
    recreate_re_enables_a_disabled_callback,
    permissions_separate_admin_member_and_stranger,
    projects_cannot_reach_each_others_callbacks,
    paging_counts_pages_and_caps_page_size,
    bad_query_parameters_are_400s_naming_the_parameter,
    a_bad_parameter_is_a_400_before_the_permission_check,
    bad_urls_get_their_bk_ci_codes,
    delete_removes_and_reports_missing_ids,
    the_secret_token_never_appears_in_a_response,
    data_survives_a_restart,
);

fn create_query(event: &str, region: &str, url: &str, token: Option<&str>) -> String {
    let mut query = format!("event={event}&region={region}&url={}", enc(url));
    if let Some(token) = token {
        query.push_str(&format!("&secretToken={}", enc(token)));
    }
    query
}

async fn admin_server(backend: Backend) -> (TestDb, TestServer) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    server.set_member("demo", "alice", "admin").await;
    (db, server)
}

fn records(body: &Value) -> &Vec<Value> {
    body["data"]["records"].as_array().expect("records")
}

async fn create_answers_true_and_lists_the_record(backend: Backend) {
    let (_db, server) = admin_server(backend).await;
    let url = public_url("hooks/build?x=1");
    let before = chrono_now();
    let answer = server
        .create(
            "demo",
            "alice",
            &create_query("BUILD_END", "IDC", &url, Some("tok")),
        )
        .await;
    assert_eq!(answer, (StatusCode::OK, json!({"status": 0, "data": true})));

    let (status, body) = server.list("demo", "alice", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["count"], 1);
    assert_eq!(body["data"]["page"], 1);
    assert_eq!(body["data"]["pageSize"], 20);
    assert_eq!(body["data"]["totalPages"], 1);
    let record = &records(&body)[0];
    assert!(record["id"].as_i64().unwrap() > 0);
    assert_eq!(record["projectId"], "demo");
    assert_eq!(record["callBackUrl"], url.as_str());
    assert_eq!(record["events"], "BUILD_END");
    assert_eq!(record["region"], "IDC");
    assert_eq!(record["enable"], true);
    assert_eq!(record["creator"], "alice");
    assert_eq!(record["updater"], "alice");
    assert_eq!(record["hasSecretToken"], true);
    assert!(record["createdTime"].as_i64().unwrap() >= before);
    assert_eq!(record["createdTime"], record["updatedTime"]);
    assert!(
        record.get("failureTime").is_none(),
        "null fields are left out: {record}"
    );
    assert!(record.get("disabledReason").is_none());
    assert!(record.get("secretToken").is_none());

    // Another event on the same URL is another registration.
    let answer = server
        .create(
            "demo",
            "alice",
            &create_query("BUILD_START", "OSS", &url, None),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK);
    let (_, body) = server.list("demo", "alice", "").await;
    assert_eq!(body["data"]["count"], 2);
    let newest = &records(&body)[0];
    assert_eq!(newest["events"], "BUILD_START");
    assert_eq!(newest["hasSecretToken"], false);
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn create_is_an_upsert_that_keeps_one_row_and_its_id(backend: Backend) {
    let (_db, server) = admin_server(backend).await;
    server.set_member("demo", "bob", "admin").await;
    let url = public_url("hook");
    server
        .create(
            "demo",
            "alice",
            &create_query("BUILD_END", "IDC", &url, Some("one")),
        )
        .await;
    let (_, first) = server.list("demo", "alice", "").await;
    let first = records(&first)[0].clone();

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let answer = server
        .create(
            "demo",
            "bob",
            &create_query("BUILD_END", "DEVNET", &url, None),
        )
        .await;
    assert_eq!(answer, (StatusCode::OK, json!({"status": 0, "data": true})));

    let (_, body) = server.list("demo", "alice", "").await;
    assert_eq!(body["data"]["count"], 1, "{body}");
    let second = &records(&body)[0];
    assert_eq!(
        second["id"].as_i64().expect("an id"),
        first["id"].as_i64().expect("an id")
    );
    assert_eq!(second["region"], "DEVNET");
    assert_eq!(
        second["hasSecretToken"], false,
        "the token is replaced, here by none"
    );
    assert_eq!(second["creator"], "alice");
    assert_eq!(second["updater"], "bob");
    assert_eq!(second["createdTime"], first["createdTime"]);
    assert!(second["updatedTime"].as_i64() > first["updatedTime"].as_i64());
}

async fn recreate_re_enables_a_disabled_callback(backend: Backend) {
    let (db, server) = admin_server(backend).await;
    let url = public_url("flaky");
    server
        .create(
            "demo",
            "alice",
            &create_query("BUILD_END", "IDC", &url, None),
        )
        .await;
    db.execute("UPDATE callbacks SET enabled = FALSE, failure_time = 1, disabled_reason = 'failing for 12h'")
        .await;
    let (_, body) = server.list("demo", "alice", "").await;
    let disabled = &records(&body)[0];
    assert_eq!(disabled["enable"], false);
    assert_eq!(
        disabled["failureTime"], "1970-01-01T08:00:00",
        "bk-ci's local date-time, in TIME_ZONE (Asia/Shanghai)"
    );
    assert_eq!(disabled["disabledReason"], "failing for 12h");

    server
        .create(
            "demo",
            "alice",
            &create_query("BUILD_END", "IDC", &url, None),
        )
        .await;
    let (_, body) = server.list("demo", "alice", "").await;
    let enabled = &records(&body)[0];
    assert_eq!(enabled["id"], disabled["id"]);
    assert_eq!(enabled["enable"], true);
    assert!(enabled.get("failureTime").is_none(), "{enabled}");
    assert!(enabled.get("disabledReason").is_none(), "{enabled}");
}

async fn permissions_separate_admin_member_and_stranger(backend: Backend) {
    let (_db, server) = admin_server(backend).await;
    server.set_member("demo", "mary", "member").await;
    let query = create_query("BUILD_END", "IDC", &public_url("p"), None);

    assert_error(
        &server.create("demo", "mary", &query).await,
        403,
        2101104,
        &["mary", "demo"],
    );
    assert_error(
        &server.create("demo", "sam", &query).await,
        403,
        2101104,
        &["sam"],
    );
    assert_error(
        &server
            .v4(Method::POST, "demo", &format!("?{query}"), None)
            .await,
        401,
        401,
        &["X-DEVOPS-UID"],
    );
    assert_error(
        &server
            .call(
                Method::POST,
                &format!("/apigw-user/v4/projects/demo/callbacks?{query}"),
                &[("X-DEVOPS-UID", "   ")],
            )
            .await,
        401,
        401,
        &["X-DEVOPS-UID"],
    );
    let long_user = "u".repeat(65);
    assert_error(
        &server.create("demo", &long_user, &query).await,
        400,
        400,
        &["X-DEVOPS-UID"],
    );

    assert_eq!(
        server.create("demo", "alice", &query).await.0,
        StatusCode::OK
    );
    // The header is trimmed before it is used.
    assert_eq!(server.list("demo", "  alice  ", "").await.0, StatusCode::OK);
    let (status, body) = server.list("demo", "mary", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["count"], 1);
    assert_error(
        &server.list("demo", "sam", "").await,
        403,
        2101133,
        &["sam", "demo"],
    );

    let id = records(&body)[0]["id"].as_i64().unwrap();
    assert_eq!(records(&body)[0]["creator"], "alice", "{body}");

    // Every gateway flavour reaches the same resource: the same record, by id.
    for apigw in ["apigw-app", "apigw"] {
        let (status, other) = server
            .call(
                Method::GET,
                &format!("/{apigw}/v4/projects/demo/callbacks/callback_list"),
                &[("X-DEVOPS-UID", "mary")],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{apigw}");
        assert_eq!(records(&other), records(&body), "{apigw}");
    }
    let delete = |user: &'static str| {
        let server = &server;
        async move {
            server
                .v4(
                    Method::DELETE,
                    "demo",
                    &format!("/callback?id={id}"),
                    Some(user),
                )
                .await
        }
    };
    assert_error(&delete("mary").await, 403, 2101104, &["mary"]);
    assert_error(&delete("sam").await, 403, 2101104, &["sam"]);
    assert_eq!(
        delete("alice").await,
        (StatusCode::OK, json!({"status": 0, "data": true}))
    );
}

async fn projects_cannot_reach_each_others_callbacks(backend: Backend) {
    let (_db, server) = admin_server(backend).await;
    server.set_member("other", "olga", "admin").await;
    let query = create_query("BUILD_END", "IDC", &public_url("x"), None);
    server.create("other", "olga", &query).await;
    let (_, body) = server.list("other", "olga", "").await;
    let other_id = records(&body)[0]["id"].as_i64().unwrap();

    assert_error(&server.list("other", "alice", "").await, 403, 2101133, &[]);
    assert_error(
        &server.create("other", "alice", &query).await,
        403,
        2101104,
        &[],
    );
    assert_error(
        &server
            .v4(
                Method::DELETE,
                "other",
                &format!("/callback?id={other_id}"),
                Some("alice"),
            )
            .await,
        403,
        2101104,
        &[],
    );
    // Alice is admin of demo, but the id belongs to another project.
    assert_error(
        &server
            .v4(
                Method::DELETE,
                "demo",
                &format!("/callback?id={other_id}"),
                Some("alice"),
            )
            .await,
        404,
        2101136,
        &[&other_id.to_string()],
    );
    let (_, body) = server.list("other", "olga", "").await;
    assert_eq!(body["data"]["count"], 1, "still there");
    let (_, body) = server.list("demo", "alice", "").await;
    assert_eq!(body["data"]["count"], 0);
}

async fn paging_counts_pages_and_caps_page_size(backend: Backend) {
    let (_db, server) = admin_server(backend).await;
    for i in 0..45 {
        let query = create_query(
            "BUILD_END",
            "IDC",
            &public_url(&format!("hook/{i:02}")),
            None,
        );
        assert_eq!(
            server.create("demo", "alice", &query).await.0,
            StatusCode::OK
        );
    }
    let (_, body) = server.list("demo", "alice", "").await;
    assert_eq!(body["data"]["count"], 45);
    assert_eq!(body["data"]["totalPages"], 3);
    assert_eq!(records(&body).len(), 20);
    assert_eq!(
        records(&body)[0]["callBackUrl"],
        public_url("hook/44"),
        "newest first"
    );

    let (_, body) = server.list("demo", "alice", "page=3&pageSize=20").await;
    assert_eq!(body["data"]["page"], 3);
    assert_eq!(records(&body).len(), 5);
    assert_eq!(records(&body)[4]["callBackUrl"], public_url("hook/00"));

    let (_, body) = server.list("demo", "alice", "page=2&pageSize=7").await;
    assert_eq!(body["data"]["totalPages"], 7);
    let urls: Vec<_> = records(&body)
        .iter()
        .map(|r| r["callBackUrl"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(urls.first().unwrap(), &public_url("hook/37"));
    assert_eq!(urls.last().unwrap(), &public_url("hook/31"));

    let (_, body) = server.list("demo", "alice", "page=4").await;
    assert!(records(&body).is_empty(), "past the end is an empty page");
    assert_eq!(body["data"]["count"], 45);

    let (_, body) = server.list("demo", "alice", "pageSize=1000").await;
    assert_eq!(body["data"]["pageSize"], 100, "capped like bk-ci");
    assert_eq!(records(&body).len(), 45);
    assert_eq!(body["data"]["totalPages"], 1);

    // Zero or less means the default, as in bk-ci; the page shows the values used.
    let (_, first_page) = server.list("demo", "alice", "").await;
    for query in [
        "page=0",
        "pageSize=0",
        "page=0&pageSize=0",
        "page=-1&pageSize=-20",
        "page=-9223372036854775808&pageSize=-1",
    ] {
        let answer = server.list("demo", "alice", query).await;
        assert_eq!(answer, (StatusCode::OK, first_page.clone()), "{query}");
    }
    assert_eq!(first_page["data"]["page"], 1);
    assert_eq!(first_page["data"]["pageSize"], 20);
    let (_, body) = server.list("demo", "alice", "page=-1&pageSize=7").await;
    assert_eq!(
        (&body["data"]["page"], &body["data"]["pageSize"]),
        (&json!(1), &json!(7))
    );
    let (_, body) = server.list("demo", "alice", "page=2&pageSize=0").await;
    assert_eq!(
        (&body["data"]["page"], &body["data"]["pageSize"]),
        (&json!(2), &json!(20))
    );
    assert_eq!(records(&body)[0]["callBackUrl"], public_url("hook/24"));
    // Anything but an integer is still a 400.
    for query in [
        "pageSize=abc",
        "pageSize=1.5",
        "pageSize=-1.5",
        "pageSize=",
        "page=--1",
    ] {
        assert_error(
            &server.list("demo", "alice", query).await,
            400,
            400,
            &[query.split('=').next().unwrap(), "an integer"],
        );
    }
    for query in ["page=4294967296", "pageSize=-9223372036854775809"] {
        assert_error(
            &server.list("demo", "alice", query).await,
            400,
            400,
            &[
                query.split('=').next().unwrap(),
                "from -9223372036854775808 to 4294967295",
            ],
        );
    }
}

async fn bad_query_parameters_are_400s_naming_the_parameter(backend: Backend) {
    let (_db, server) = admin_server(backend).await;
    let url = enc(&public_url("x"));
    let cases = [
        (format!("region=IDC&url={url}"), vec!["event"]),
        (format!("event=BUILD_END&url={url}"), vec!["region"]),
        ("event=BUILD_END&region=IDC".to_owned(), vec!["url"]),
        (
            format!("event=build_end&region=IDC&url={url}"),
            vec!["event", "build_end", "BUILD_END", "PROJECT_DISABLE"],
        ),
        (
            format!("event=NOPE&region=IDC&url={url}"),
            vec!["event", "NOPE"],
        ),
        (
            format!("event=BUILD_END&region=idc&url={url}"),
            vec!["region", "DEVNET", "OSS", "IDC"],
        ),
        (
            format!(
                "event=BUILD_END&region=IDC&url={url}&secretToken={}",
                "t".repeat(1025)
            ),
            vec!["secretToken"],
        ),
    ];
    for (query, words) in cases {
        assert_error(
            &server.create("demo", "alice", &query).await,
            400,
            400,
            &words,
        );
    }
    // A project id that cannot be one.
    let (status, body) = server
        .call(
            Method::GET,
            "/apigw-user/v4/projects/bad%20project/callbacks/callback_list",
            &[("X-DEVOPS-UID", "alice")],
        )
        .await;
    assert_error(&(status, body), 400, 400, &["projectId"]);
    let long_project = "p".repeat(65);
    assert_error(
        &server.list(&long_project, "alice", "").await,
        400,
        400,
        &["projectId"],
    );
    let (_, body) = server.list("demo", "alice", "").await;
    assert_eq!(body["data"]["count"], 0, "nothing was written");
}

/// The permission is checked last: whoever asks, a bad query parameter is a 400 with the same
/// words as for an admin. A missing caller or an unknown gateway type still comes first.
async fn a_bad_parameter_is_a_400_before_the_permission_check(backend: Backend) {
    let (_db, server) = admin_server(backend).await;
    server.set_member("demo", "mary", "member").await;
    let url = enc(&public_url("x"));
    let exactly = |answer: (StatusCode, Value), message: &str| {
        assert_error(&answer, 400, 400, &[]);
        assert_eq!(answer.1["message"], message);
    };
    // Admin routes, as a member and as a stranger.
    for user in ["mary", "sam"] {
        exactly(
            server
                .create(
                    "demo",
                    user,
                    &create_query("BUILD_END", "IDC", &public_url("x"), Some("a b")),
                )
                .await,
            "query parameter secretToken may only contain visible ASCII characters (no spaces or control characters)",
        );
        exactly(
            server
                .create(
                    "demo",
                    user,
                    &create_query(
                        "BUILD_END",
                        "IDC",
                        &public_url("x"),
                        Some("t".repeat(1025).as_str()),
                    ),
                )
                .await,
            "query parameter secretToken must be at most 1024 bytes",
        );
        exactly(
            server
                .create(
                    "demo",
                    user,
                    &create_query("BUILD_END", "IDC", &public_url("x"), Some("enc:v1:abc")),
                )
                .await,
            "query parameter secretToken must not start with `enc:v1:`",
        );
        let batch = |events: &str| format!("/batch?event={events}&region=IDC&url={url}");
        exactly(
            server
                .v4(
                    Method::POST,
                    "demo",
                    &batch("BUILD_START,,BUILD_END"),
                    Some(user),
                )
                .await,
            "query parameter event must be event names separated by commas, none empty",
        );
        let (status, body) = server
            .v4(Method::POST, "demo", &batch("BUILD_START,NOPE"), Some(user))
            .await;
        assert_error(&(status, body.clone()), 400, 400, &["NOPE", "BUILD_END"]);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("invalid query parameter: event: unknown value `NOPE`"),
            "{body}"
        );
        for tail in [
            "/callback?id=x",
            "/callback_enable?id=",
            "/callback_disable",
            "/callback_retry?id=1.5",
        ] {
            let method = match tail {
                "/callback?id=x" => Method::DELETE,
                "/callback_retry?id=1.5" => Method::POST,
                _ => Method::PUT,
            };
            assert_error(
                &server.v4(method, "demo", tail, Some(user)).await,
                400,
                400,
                &["id"],
            );
        }
    }
    // Member routes, as a stranger.
    exactly(
        server.list("demo", "sam", "page=x").await,
        "query parameter page must be an integer, got \"x\"",
    );
    exactly(
        server.list("demo", "sam", "pageSize=1.5").await,
        "query parameter pageSize must be an integer, got \"1.5\"",
    );
    exactly(
        server.history("demo", "sam", "page=x").await,
        "query parameter page must be an integer, got \"x\"",
    );
    exactly(
        server.history("demo", "sam", "startTime=2024-05-01").await,
        "query parameter startTime must be yyyy-MM-dd HH:mm:ss (2024-05-01 13:45:00, in TIME_ZONE), \
         ISO-8601 (2024-05-01T13:45:00+08:00, or without an offset in TIME_ZONE) \
         or epoch milliseconds (1714542300000), got \"2024-05-01\"",
    );
    exactly(
        server
            .history(
                "demo",
                "sam",
                &format!(
                    "startTime={}&endTime={}",
                    enc("2024-05-02 00:00:00"),
                    enc("2024-05-01 00:00:00")
                ),
            )
            .await,
        "query parameter startTime must not be after endTime",
    );
    exactly(
        server.history("demo", "sam", "url=a%0Ab").await,
        "query parameter url must not contain control characters",
    );
    // The permission is still refused once the query is good.
    assert_error(
        &server.list("demo", "sam", "page=1").await,
        403,
        2101133,
        &["sam"],
    );
    // The caller and the route are checked before the query.
    assert_error(
        &server
            .v4(Method::GET, "demo", "/callback_list?page=x", None)
            .await,
        401,
        401,
        &["X-DEVOPS-UID"],
    );
    let (status, _) = server
        .call(
            Method::GET,
            "/apigw-nope/v4/projects/demo/callbacks/callback_list?page=x",
            &[("X-DEVOPS-UID", "sam")],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A value that only looks like a refusal of ours is answered as any other bad value.
    let (status, body) = server
        .create(
            "demo",
            "alice",
            &format!("event=BUILD_END&region=%1Eidc&url={url}"),
        )
        .await;
    assert_error(&(status, body.clone()), 400, 400, &["region", "DEVNET"]);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid query parameter: "),
        "{body}"
    );
}

async fn bad_urls_get_their_bk_ci_codes(backend: Backend) {
    let (_db, server) = admin_server(backend).await;
    let long = format!("http://93.184.215.14/{}", "a".repeat(1024));
    let cases: Vec<(String, i64, &str)> = vec![
        ("ftp://93.184.215.14/x".into(), 2101132, "scheme"),
        ("not a url".into(), 2101132, "illegal"),
        ("http://".into(), 2101132, "illegal"),
        (long, 2101132, "1024"),
        ("http://93.184.215.14:22/x".into(), 2101286, "22"),
        ("https://93.184.215.14:6379/x".into(), 2101286, "6379"),
        ("http://127.0.0.1:8080/x".into(), 2101366, "loopback"),
        ("http://localhost:8080/x".into(), 2101366, "loopback"),
        ("http://10.0.0.8/x".into(), 2101366, "private"),
        ("http://192.168.1.1/x".into(), 2101366, "private"),
        (
            "http://169.254.169.254/latest/meta-data".into(),
            2101366,
            "link-local",
        ),
        ("http://100.64.1.1/x".into(), 2101366, "carrier-grade"),
        ("http://[::1]:8080/x".into(), 2101366, "loopback"),
        ("http://[fd00::1]/x".into(), 2101366, "unique local"),
        ("http://[::ffff:127.0.0.1]/x".into(), 2101366, "loopback"),
        ("http://0.0.0.0/x".into(), 2101366, "unspecified"),
        (
            "http://metadata.google.internal/x".into(),
            2101366,
            "metadata",
        ),
        ("http://no-such-host.invalid/x".into(), 2101366, "resolved"),
    ];
    for (url, code, word) in cases {
        let query = format!("event=BUILD_END&region=IDC&url={}", enc(&url));
        let answer = server.create("demo", "alice", &query).await;
        assert_error(&answer, 400, code, &[word]);
    }
    let (_, body) = server.list("demo", "alice", "").await;
    assert_eq!(body["data"]["count"], 0, "nothing was written");
}

async fn delete_removes_and_reports_missing_ids(backend: Backend) {
    let (_db, server) = admin_server(backend).await;
    server
        .create(
            "demo",
            "alice",
            &create_query("BUILD_END", "IDC", &public_url("a"), None),
        )
        .await;
    server
        .create(
            "demo",
            "alice",
            &create_query("BUILD_END", "IDC", &public_url("b"), None),
        )
        .await;
    let (_, body) = server.list("demo", "alice", "").await;
    let id = records(&body)[0]["id"].as_i64().unwrap();

    let delete = |tail: String| {
        let server = &server;
        async move {
            server
                .v4(Method::DELETE, "demo", &tail, Some("alice"))
                .await
        }
    };
    assert_eq!(
        delete(format!("/callback?id={id}")).await,
        (StatusCode::OK, json!({"status": 0, "data": true}))
    );
    assert_error(
        &delete(format!("/callback?id={id}")).await,
        404,
        2101136,
        &[&id.to_string()],
    );
    assert_error(&delete("/callback".to_owned()).await, 400, 400, &["id"]);
    assert_error(
        &delete("/callback?id=abc".to_owned()).await,
        400,
        400,
        &["id"],
    );
    assert_error(
        &delete("/callback?id=99999999999999999999".to_owned()).await,
        400,
        400,
        &["id"],
    );

    let (_, body) = server.list("demo", "alice", "").await;
    assert_eq!(body["data"]["count"], 1);
    assert_eq!(records(&body)[0]["callBackUrl"], public_url("a"));
}

async fn the_secret_token_never_appears_in_a_response(backend: Backend) {
    let (_db, server) = admin_server(backend).await;
    let tokens = [
        "plain-s3cr3t-token",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ];
    let mut seen = String::new();
    for (i, token) in tokens.iter().enumerate() {
        let query = create_query(
            "BUILD_END",
            "IDC",
            &public_url(&format!("t{i}")),
            Some(token),
        );
        seen.push_str(&server.create("demo", "alice", &query).await.1.to_string());
        // Errors after the token was read must not echo it either.
        let bad = format!("{query}&page=x").replace("region=IDC", "region=bad");
        seen.push_str(&server.create("demo", "alice", &bad).await.1.to_string());
        let blocked = create_query("BUILD_END", "IDC", "http://10.0.0.1/", Some(token));
        seen.push_str(&server.create("demo", "alice", &blocked).await.1.to_string());
    }
    seen.push_str(&server.list("demo", "alice", "").await.1.to_string());
    assert!(seen.contains("hasSecretToken"));
    for token in tokens {
        assert!(!seen.contains(token), "{token} leaked in {seen}");
    }
}

async fn data_survives_a_restart(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    server.set_member("demo", "alice", "admin").await;
    server
        .create(
            "demo",
            "alice",
            &create_query("BUILD_END", "IDC", &public_url("kept"), Some("t")),
        )
        .await;
    let (_, before) = server.list("demo", "alice", "").await;
    server.stop().await;

    let server = TestServer::start(&db).await;
    let (status, after) = server.list("demo", "alice", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after, before);
    assert_eq!(after["data"]["count"], 1);
}
