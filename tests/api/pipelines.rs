//! Pipeline-level callbacks (`…/callbacks/pipelines/{pipelineId}`): the reference's examples,
//! upsert by name, all-or-nothing URL vetting, permissions, and delivery of BUILD_* events to
//! the callbacks of their pipeline only.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{
    Backend, DELIVERY_VARS, TestDb, TestServer, WAIT, assert_error, backend_tests, envelope_of,
    public_url,
};
use crate::receiver::Receiver;

backend_tests!(
    the_reference_examples_round_trip,
    a_repost_updates_by_name_and_repeated_names_collapse,
    a_refused_url_writes_nothing,
    permissions_and_bad_input_are_refused,
    project_routes_do_not_see_pipeline_rows,
    build_events_reach_the_callbacks_of_their_pipeline_only,
);

const PIPELINE: &str = "p-7e1c2b3a4d5e4f60a1b2c3d4e5f60718";

/// A call on `/apigw-app/v4/projects/{project}/callbacks/pipelines/{pipeline}{tail}` as `user`,
/// with a JSON body when given.
async fn call(
    server: &TestServer,
    method: Method,
    pipeline: &str,
    tail: &str,
    user: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let url = server.url(&format!(
        "/apigw-app/v4/projects/demo/callbacks/pipelines/{pipeline}{tail}"
    ));
    let mut request = reqwest::Client::new()
        .request(method, url)
        .header("X-DEVOPS-UID", user);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    envelope_of(request.send().await.expect("request reaches the server")).await
}

async fn post(
    server: &TestServer,
    pipeline: &str,
    user: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let body = body.to_string();
    call(server, Method::POST, pipeline, "", user, Some(&body)).await
}

/// The pipeline's callbacks as alice (an admin), asserting success.
async fn listed(server: &TestServer, pipeline: &str, query: &str) -> Value {
    let (status, body) = call(server, Method::GET, pipeline, query, "alice", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

/// How many callbacks `PIPELINE` has.
async fn count(server: &TestServer) -> usize {
    listed(server, PIPELINE, "").await.as_array().unwrap().len()
}

async fn setup(backend: Backend, vars: &[(&str, &str)]) -> (TestDb, TestServer) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, vars).await;
    server.set_member("demo", "alice", "admin").await;
    server.set_member("demo", "mary", "member").await;
    (db, server)
}

const OK_TRUE: fn() -> Value = || json!({"status": 0, "data": true});

/// §1.2–1.4, with a public address literal for the example's host (no DNS in tests) and
/// `hasSecretToken` where bk-ci returns the token in clear.
async fn the_reference_examples_round_trip(backend: Backend) {
    let (_db, server) = setup(backend, &[]).await;
    let url = public_url("ci");
    let example = json!([{"callbackEvent": "BUILD_END", "callbackUrl": url, "secretToken": "s3cr3t",
        "callbackName": "notify-end", "region": "IDC"}]);
    let (status, body) = post(&server, PIPELINE, "alice", &example).await;
    assert_eq!((status, body), (StatusCode::OK, OK_TRUE()));

    let (status, body) = call(&server, Method::GET, PIPELINE, "", "alice", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"status": 0, "data": [{"callbackEvent": "BUILD_END", "callbackUrl": url,
            "callbackName": "notify-end", "region": "IDC", "hasSecretToken": true, "enable": true}]})
    );
    assert!(!body.to_string().contains("s3cr3t"), "{body}");
    assert_eq!(
        listed(&server, PIPELINE, "?event=BUILD_END")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        listed(&server, PIPELINE, "?event=BUILD_START").await,
        json!([])
    );
    assert_eq!(listed(&server, "p-other", "").await, json!([]));

    for _ in 0..2 {
        let answer = call(
            &server,
            Method::DELETE,
            PIPELINE,
            "?callbackName=notify-end",
            "alice",
            None,
        )
        .await;
        assert_eq!(
            answer,
            (StatusCode::OK, OK_TRUE()),
            "deleting is idempotent"
        );
    }
    assert_eq!(listed(&server, PIPELINE, "").await, json!([]));
}

async fn a_repost_updates_by_name_and_repeated_names_collapse(backend: Backend) {
    let (db, server) = setup(backend, &[]).await;
    let first = json!([
        {"callbackEvent": "BUILD_END", "callbackUrl": public_url("a1"), "secretToken": "t-a",
         "callbackName": "a", "region": "DEVNET"},
        {"callbackEvent": "BUILD_START", "callbackUrl": public_url("b"), "callbackName": "b"},
    ]);
    assert_eq!(
        post(&server, PIPELINE, "alice", &first).await.0,
        StatusCode::OK
    );
    let id_of_a = "SELECT id FROM callbacks WHERE pipeline_id IS NOT NULL AND name = 'a'";
    let id_before = db.scalar(id_of_a).await;

    // bk-ci keeps a name's first event and region; here a re-POST updates everything.
    let second = json!([
        {"callbackEvent": "BUILD_TASK_END", "callbackUrl": public_url("a2"), "callbackName": "a",
         "region": "OSS", "secretToken": null},
        {"callbackEvent": "BUILD_END", "callbackUrl": public_url("c1"), "callbackName": "c"},
        {"callbackEvent": "BUILD_END", "callbackUrl": public_url("c2"), "callbackName": "c",
         "region": null},
    ]);
    assert_eq!(
        post(&server, PIPELINE, "alice", &second).await,
        (StatusCode::OK, OK_TRUE())
    );
    assert_eq!(
        listed(&server, PIPELINE, "").await,
        json!([
            {"callbackEvent": "BUILD_TASK_END", "callbackUrl": public_url("a2"), "callbackName": "a",
             "region": "OSS", "hasSecretToken": false, "enable": true},
            {"callbackEvent": "BUILD_START", "callbackUrl": public_url("b"), "callbackName": "b",
             "region": "IDC", "hasSecretToken": false, "enable": true},
            {"callbackEvent": "BUILD_END", "callbackUrl": public_url("c2"), "callbackName": "c",
             "region": "IDC", "hasSecretToken": false, "enable": true},
        ])
    );
    assert_eq!(
        db.scalar(id_of_a).await,
        id_before,
        "an update keeps the row"
    );
    assert_eq!(
        listed(&server, PIPELINE, "?event=BUILD_START").await[0]["callbackName"],
        "b"
    );

    // An empty array is `true` and changes nothing; names are free text, "" included.
    assert_eq!(
        post(&server, PIPELINE, "alice", &json!([])).await,
        (StatusCode::OK, OK_TRUE())
    );
    assert_eq!(count(&server).await, 3);
    let odd = json!([{"callbackEvent": "PROJECT_CREATE", "callbackUrl": public_url("e"),
        "callbackName": ""}, {"callbackEvent": "BUILD_END", "callbackUrl": public_url("s"),
        "callbackName": "with space & ✓"}]);
    assert_eq!(
        post(&server, PIPELINE, "alice", &odd).await.0,
        StatusCode::OK
    );
    let names: Vec<Value> = listed(&server, PIPELINE, "")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["callbackName"].clone())
        .collect();
    assert_eq!(
        names,
        [
            json!(""),
            json!("a"),
            json!("b"),
            json!("c"),
            json!("with space & ✓")
        ]
    );
    let tail = format!("?callbackName={}", crate::common::enc("with space & ✓"));
    assert_eq!(
        call(&server, Method::DELETE, PIPELINE, &tail, "alice", None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(
            &server,
            Method::DELETE,
            PIPELINE,
            "?callbackName=",
            "alice",
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(count(&server).await, 3);
}

async fn a_refused_url_writes_nothing(backend: Backend) {
    let (_db, server) = setup(backend, &[]).await;
    let keep = json!([{"callbackEvent": "BUILD_END", "callbackUrl": public_url("keep"),
        "callbackName": "keep"}]);
    assert_eq!(
        post(&server, PIPELINE, "alice", &keep).await.0,
        StatusCode::OK
    );
    let before = listed(&server, PIPELINE, "").await;

    for (bad, code, word) in [
        ("ftp://93.184.215.14/x", 2101132, "scheme"),
        ("http://93.184.215.14:22/x", 2101286, "22"),
        ("http://127.0.0.1/x", 2101366, "127.0.0.1"),
    ] {
        // A good update, a good create, then the bad URL, then another bad one: the first
        // refusal answers and nothing is written.
        let body = json!([
            {"callbackEvent": "BUILD_START", "callbackUrl": public_url("changed"), "callbackName": "keep"},
            {"callbackEvent": "BUILD_END", "callbackUrl": public_url("new"), "callbackName": "new"},
            {"callbackEvent": "BUILD_END", "callbackUrl": bad, "callbackName": "bad"},
            {"callbackEvent": "BUILD_END", "callbackUrl": "not a url", "callbackName": "worse"},
        ]);
        assert_error(
            &post(&server, PIPELINE, "alice", &body).await,
            400,
            code,
            &[word],
        );
        assert_eq!(listed(&server, PIPELINE, "").await, before, "after {bad}");
    }
    // A bad URL overwritten later in the same request is still refused (every URL is vetted).
    let body = json!([
        {"callbackEvent": "BUILD_END", "callbackUrl": "ftp://93.184.215.14/x", "callbackName": "keep"},
        {"callbackEvent": "BUILD_END", "callbackUrl": public_url("fine"), "callbackName": "keep"},
    ]);
    assert_error(
        &post(&server, PIPELINE, "alice", &body).await,
        400,
        2101132,
        &[],
    );
    assert_eq!(listed(&server, PIPELINE, "").await, before);
}

async fn permissions_and_bad_input_are_refused(backend: Backend) {
    let (_db, server) = setup(backend, &[]).await;
    let good = json!([{"callbackEvent": "BUILD_END", "callbackUrl": public_url("x"),
        "callbackName": "x"}]);
    assert_error(
        &post(&server, PIPELINE, "mary", &good).await,
        403,
        2101104,
        &["mary"],
    );
    assert_error(
        &call(
            &server,
            Method::DELETE,
            PIPELINE,
            "?callbackName=x",
            "mary",
            None,
        )
        .await,
        403,
        2101104,
        &["mary"],
    );
    assert_error(
        &call(&server, Method::GET, PIPELINE, "", "olga", None).await,
        403,
        2101133,
        &["olga"],
    );
    let (status, body) = call(&server, Method::GET, PIPELINE, "", "mary", None).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": 0, "data": []}))
    );
    let no_user = reqwest::Client::new()
        .get(server.url(&format!(
            "/apigw-user/v4/projects/demo/callbacks/pipelines/{PIPELINE}"
        )))
        .send()
        .await
        .unwrap();
    assert_error(&envelope_of(no_user).await, 401, 401, &["X-DEVOPS-UID"]);

    // Bad bodies are a 400 naming the problem, before the permission check (mary is no admin).
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"callbackEvent": "BUILD_END", "callbackUrl": public_url("m"), "callbackName": i.to_string()}))
        .collect();
    let long_name = "n".repeat(256);
    for (user, body, words) in [
        ("alice", "not json".to_owned(), vec!["JSON"]),
        ("mary", "{}".to_owned(), vec!["sequence"]),
        ("mary", r#"[{"callbackEvent":"BUILD_END","callbackUrl":"http://93.184.215.14/"}]"#.to_owned(), vec!["callbackName"]),
        ("alice", r#"[{"callbackEvent":"BUILD_END","callbackName":"x"}]"#.to_owned(), vec!["callbackUrl"]),
        ("alice", r#"[{"callbackEvent":"BUILD_OVER","callbackUrl":"http://93.184.215.14/","callbackName":"x"}]"#.to_owned(), vec!["callbackEvent", "BUILD_END"]),
        ("alice", r#"[{"callbackEvent":"BUILD_END","callbackUrl":"http://93.184.215.14/","callbackName":"x","region":"MARS"}]"#.to_owned(), vec!["region", "IDC"]),
        ("alice", r#"[{"callbackEvent":"BUILD_END","callbackUrl":"http://93.184.215.14/","callbackName":"x","secretToken":"enc:v1:abc"}]"#.to_owned(), vec!["secretToken", "enc:v1:"]),
        ("alice", format!(r#"[{{"callbackEvent":"BUILD_END","callbackUrl":"http://93.184.215.14/","callbackName":"{long_name}"}}]"#), vec!["callbackName", "255"]),
        ("alice", Value::from(too_many).to_string(), vec!["at most 100"]),
    ] {
        let answer = call(&server, Method::POST, PIPELINE, "", user, Some(&body)).await;
        assert_error(&answer, 400, 400, &words);
    }
    assert_error(
        &post(&server, "a%20b", "alice", &good).await,
        400,
        400,
        &["pipelineId"],
    );
    assert_error(
        &post(&server, &"p".repeat(65), "alice", &good).await,
        400,
        400,
        &["pipelineId"],
    );
    assert_error(
        &call(&server, Method::DELETE, PIPELINE, "", "alice", None).await,
        400,
        400,
        &["callbackName"],
    );
    assert_error(
        &call(
            &server,
            Method::GET,
            PIPELINE,
            "?event=build_end",
            "alice",
            None,
        )
        .await,
        400,
        400,
        &["event", "BUILD_END"],
    );
    assert_eq!(listed(&server, PIPELINE, "").await, json!([]));
}

async fn project_routes_do_not_see_pipeline_rows(backend: Backend) {
    let (db, server) = setup(backend, &[]).await;
    let url = public_url("same");
    let pipeline = json!([{"callbackEvent": "BUILD_END", "callbackUrl": url, "callbackName": "n"}]);
    assert_eq!(
        post(&server, PIPELINE, "alice", &pipeline).await.0,
        StatusCode::OK
    );
    let (_, list) = server.list("demo", "alice", "").await;
    assert_eq!(list["data"]["count"], 0, "{list}");

    // The same URL and event at project level is a row of its own.
    server
        .register("demo", "alice", "BUILD_END", &url, None)
        .await;
    let (_, list) = server.list("demo", "alice", "").await;
    assert_eq!(list["data"]["count"], 1, "{list}");
    assert_eq!(list["data"]["records"][0]["callBackUrl"], url);

    let id = db
        .scalar("SELECT id FROM callbacks WHERE pipeline_id IS NOT NULL")
        .await;
    for tail in [
        format!("/callback_disable?id={id}"),
        format!("/callback_enable?id={id}"),
    ] {
        assert_error(
            &server.v4(Method::PUT, "demo", &tail, Some("alice")).await,
            404,
            2101136,
            &[],
        );
    }
    assert_error(
        &server
            .v4(
                Method::DELETE,
                "demo",
                &format!("/callback?id={id}"),
                Some("alice"),
            )
            .await,
        404,
        2101136,
        &[],
    );
    assert_eq!(count(&server).await, 1);
}

async fn build_events_reach_the_callbacks_of_their_pipeline_only(backend: Backend) {
    let (_db, server) = setup(backend, DELIVERY_VARS).await;
    let receiver = Receiver::start().await;
    let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let ours = json!([
        {"callbackEvent": "BUILD_END", "callbackUrl": receiver.url("/p-end"), "secretToken": whsec,
         "callbackName": "end"},
        {"callbackEvent": "BUILD_START", "callbackUrl": receiver.url("/p-start"), "callbackName": "start"},
        {"callbackEvent": "CREATE_PIPELINE", "callbackUrl": receiver.url("/p-create"), "callbackName": "create"},
        // The project's URL again: bk-ci sends to it twice, and so do we.
        {"callbackEvent": "BUILD_END", "callbackUrl": receiver.url("/project"), "callbackName": "again"},
    ]);
    assert_eq!(
        post(&server, PIPELINE, "alice", &ours).await.0,
        StatusCode::OK
    );
    let theirs = json!([{"callbackEvent": "BUILD_END", "callbackUrl": receiver.url("/q-end"),
        "callbackName": "end"}]);
    assert_eq!(
        post(&server, "p-other", "alice", &theirs).await.0,
        StatusCode::OK
    );
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/project"),
            None,
        )
        .await;
    server
        .register(
            "demo",
            "alice",
            "CREATE_PIPELINE",
            &receiver.url("/project-create"),
            None,
        )
        .await;

    let data = format!(r#"{{"buildId":"b-1","pipelineId":"{PIPELINE}","status":"SUCCEED"}}"#);
    let (status, answer) = server
        .publish(
            "demo",
            &format!(r#"{{"event":"BUILD_END","data":{data},"eventId":"e-1"}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"]["deliveries"], 3, "{answer}");
    // A non-BUILD event naming the pipeline reaches only the project's callback.
    let (_, answer) = server
        .publish(
            "demo",
            &format!(r#"{{"event":"CREATE_PIPELINE","data":{{"pipelineId":"{PIPELINE}"}},"eventId":"e-2"}}"#),
        )
        .await;
    assert_eq!(answer["data"]["deliveries"], 1, "{answer}");
    // Another project's build of a pipeline with the same id reaches nothing of demo's.
    let (_, answer) = server
        .publish(
            "elsewhere",
            &format!(r#"{{"event":"BUILD_END","data":{data},"eventId":"e-3"}}"#),
        )
        .await;
    assert_eq!(answer["data"]["deliveries"], 0, "{answer}");

    let received = receiver.wait_for(4, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut paths: Vec<String> = receiver.received().iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/p-end", "/project", "/project", "/project-create"]);
    let signed = received.iter().find(|r| r.path == "/p-end").unwrap();
    assert_eq!(
        std::str::from_utf8(&signed.body).unwrap(),
        format!(r#"{{"event":"BUILD_END","data":{data}}}"#)
    );
    assert_eq!(signed.header("x-devops-webhook-token"), whsec);
    standardwebhooks::Webhook::new(whsec)
        .unwrap()
        .verify(&signed.body, &signed.headers)
        .expect("the pipeline callback's delivery is signed with its token");

    let history = server.wait_for_history("demo", "alice", 4).await;
    let urls: Vec<&str> = history
        .iter()
        .map(|h| h["callBackUrl"].as_str().unwrap())
        .collect();
    assert!(urls.contains(&receiver.url("/p-end").as_str()), "{urls:?}");
    assert!(
        history.iter().all(|h| h["status"] == "SUCCESS"),
        "{history:?}"
    );
    let masked = history
        .iter()
        .find(|h| h["callBackUrl"] == receiver.url("/p-end"))
        .unwrap();
    assert!(!masked.to_string().contains(whsec), "{masked}");
}
