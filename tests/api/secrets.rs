//! Secret tokens at rest and in logs: sealed in the database when `SECRET_ENCRYPTION_KEY` is
//! set, still delivered in clear, sealed by `migrate` when they were stored before, checked at
//! start, and never written to a log line.

use std::process::Output;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{
    self, Backend, DELIVERY_VARS, SERVICE_TOKEN, TestDb, TestServer, WAIT, assert_error,
    backend_tests, enc, history_window, wait_until,
};
use crate::processes::ServerProcess;
use crate::receiver::{Answer, Receiver};

backend_tests!(
    tokens_are_sealed_at_rest_and_delivered_in_clear,
    batch_and_global_tokens_are_sealed_too,
    migrate_seals_tokens_stored_in_plaintext,
    a_wrong_or_missing_key_stops_the_start,
    no_secret_reaches_the_log_of_a_full_run,
);

const KEY: &str = "qU2rJr4b3tQ0c8cq9m3S8m9m1vB2Yx7kq0k1yX3N8T4=";
const OTHER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const PLAIN: &str = "plain-token-7f3a9c";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn with_key(key: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut vars = DELIVERY_VARS.to_vec();
    vars.push(("SECRET_ENCRYPTION_KEY", key));
    vars
}

/// Rows of `table` whose text contains `token` anywhere in `column`.
async fn rows_containing(db: &TestDb, table: &str, column: &str, token: &str) -> i64 {
    db.scalar(&format!(
        "SELECT COUNT(*) FROM {table} WHERE {column} LIKE '%{token}%'"
    ))
    .await
}

async fn tokens_are_sealed_at_rest_and_delivered_in_clear(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, &with_key(KEY)).await;
    server.set_member("demo", "alice", "admin").await;
    let receiver = Receiver::start().await;
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/plain"),
            Some(PLAIN),
        )
        .await;
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/whsec"),
            Some(WHSEC),
        )
        .await;
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/none"), None)
        .await;

    // The prefix of sealed values is refused as a token, so no plaintext can pass for one.
    let query = format!(
        "event=BUILD_END&region=IDC&url={}&secretToken=enc%3Av1%3Aabc",
        enc(&receiver.url("/fake"))
    );
    assert_error(
        &server.create("demo", "alice", &query).await,
        400,
        400,
        &["secretToken", "enc:v1:"],
    );

    let sealed = db
        .scalar("SELECT COUNT(*) FROM callbacks WHERE secret_token LIKE 'enc:v1:%'")
        .await;
    assert_eq!(sealed, 2);
    for token in [PLAIN, WHSEC] {
        assert_eq!(
            rows_containing(&db, "callbacks", "secret_token", token).await,
            0
        );
    }
    let (_, list) = server.list("demo", "alice", "").await;
    let with_token = list["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["hasSecretToken"] == true)
        .count();
    assert_eq!(with_token, 2);

    receiver.script("/plain", vec![Answer::Status(500)]);
    let (status, answer) = server
        .publish("demo", r#"{"event":"BUILD_END","data":{"n":1}}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // /plain fails once and is retried: four requests in all.
    let received = receiver.wait_for(4, WAIT).await;
    for request in &received {
        let expected = match request.path.as_str() {
            "/plain" => PLAIN,
            "/whsec" => WHSEC,
            _ => "NONE",
        };
        assert_eq!(request.header("x-devops-webhook-token"), expected);
        if request.path == "/whsec" {
            let verifier = standardwebhooks::Webhook::new(WHSEC).unwrap();
            verifier.verify(&request.body, &request.headers).unwrap();
        }
    }

    // A manual re-send reads the token through the other path (`delivery_target`).
    let history = wait_for_history(&server, 4).await;
    let failed = history
        .iter()
        .find(|h| h["status"] == "FAILED")
        .expect("the failed attempt");
    let (status, answer) = server
        .v4(
            Method::POST,
            "demo",
            &format!("/callback_retry?id={}", failed["id"]),
            Some("alice"),
        )
        .await;
    assert_eq!(
        (status, &answer["data"]),
        (StatusCode::OK, &Value::Bool(true))
    );
    let resent = receiver.wait_for(5, WAIT).await.pop().unwrap();
    assert_eq!(resent.header("x-devops-webhook-token"), PLAIN);

    let history = wait_for_history(&server, 5).await;
    for token in [PLAIN, WHSEC] {
        assert!(!Value::from(history.clone()).to_string().contains(token));
        assert_eq!(
            rows_containing(&db, "callback_history", "request_headers", token).await,
            0
        );
    }
}

/// The other two ways a token is written — batch create (one multi-row upsert) and global
/// callbacks (op API) — seal it as well, refuse the sealed prefix, and deliver it in clear.
async fn batch_and_global_tokens_are_sealed_too(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, &with_key(KEY)).await;
    server.set_member("demo", "alice", "admin").await;
    let receiver = Receiver::start().await;
    let batch = |token: &str| {
        format!(
            "/batch?event=BUILD_START,BUILD_END&region=IDC&url={}&secretToken={}",
            enc(&receiver.url("/batch")),
            enc(token)
        )
    };
    let global = |token: &str| {
        format!(
            "/op/callbacks/global?event=PROJECT_UPDATE&region=IDC&url={}&secretToken={}",
            enc(&receiver.url("/global")),
            enc(token)
        )
    };
    let op = [
        ("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN),
        ("X-DEVOPS-UID", "ops"),
    ];

    for answer in [
        server
            .v4(Method::POST, "demo", &batch("enc:v1:abc"), Some("alice"))
            .await,
        server.call(Method::POST, &global("enc:v1:abc"), &op).await,
    ] {
        assert_error(&answer, 400, 400, &["secretToken", "enc:v1:"]);
    }
    let (status, answer) = server
        .v4(Method::POST, "demo", &batch(PLAIN), Some("alice"))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = server.call(Method::POST, &global(WHSEC), &op).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let sealed = db
        .scalar("SELECT COUNT(*) FROM callbacks WHERE secret_token LIKE 'enc:v1:%'")
        .await;
    assert_eq!(sealed, 3);
    for token in [PLAIN, WHSEC] {
        assert_eq!(
            rows_containing(&db, "callbacks", "secret_token", token).await,
            0
        );
    }

    for body in [
        r#"{"event":"BUILD_END","data":{}}"#,
        r#"{"event":"PROJECT_UPDATE","data":{}}"#,
    ] {
        let (status, answer) = server.publish("demo", body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["data"]["deliveries"], 1, "{body}: {answer}");
    }
    let received = receiver.wait_for(2, WAIT).await;
    for request in &received {
        let expected = if request.path == "/batch" {
            PLAIN
        } else {
            WHSEC
        };
        assert_eq!(request.header("x-devops-webhook-token"), expected);
    }
    let global = received
        .iter()
        .find(|r| r.path == "/global")
        .expect("the global delivery");
    let verifier = standardwebhooks::Webhook::new(WHSEC).unwrap();
    verifier.verify(&global.body, &global.headers).unwrap();
}

async fn wait_for_history(server: &TestServer, n: usize) -> Vec<Value> {
    server.wait_for_history("demo", "alice", n).await
}

/// Runs the binary against the test database with `SECRET_ENCRYPTION_KEY` set to `key` (or unset).
async fn cli(db: &TestDb, key: Option<&str>, args: &[&str]) -> Output {
    let vars: Vec<(&str, &str)> = key
        .map(|key| ("SECRET_ENCRYPTION_KEY", key))
        .into_iter()
        .collect();
    common::cli(db, &vars, args).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn migrate_seals_tokens_stored_in_plaintext(backend: Backend) {
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await;
    let server = TestServer::start_with(&db, DELIVERY_VARS).await;
    server.set_member("demo", "alice", "admin").await;
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/a"),
            Some(PLAIN),
        )
        .await;
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/b"),
            Some(WHSEC),
        )
        .await;
    server.stop().await;
    assert_eq!(
        rows_containing(&db, "callbacks", "secret_token", PLAIN).await,
        1
    );
    // Custom headers stored before there was a key are sealed too.
    db.execute(
        r#"UPDATE callbacks SET secret_headers = '[["X-Tenant","t-plain-1"]]' WHERE url LIKE '%/a'"#,
    )
    .await;

    let migrated = cli(&db, Some(KEY), &["migrate"]).await;
    assert!(migrated.status.success(), "{migrated:?}");
    assert!(
        text(&migrated.stdout)
            .contains("3 plaintext secret(s) encrypted (tokens and custom headers)"),
        "{migrated:?}"
    );
    assert_eq!(
        rows_containing(&db, "callbacks", "secret_headers", "t-plain-1").await,
        0
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM callbacks WHERE secret_headers LIKE 'enc:v1:%'")
            .await,
        1
    );
    for token in [PLAIN, WHSEC] {
        assert_eq!(
            rows_containing(&db, "callbacks", "secret_token", token).await,
            0
        );
    }
    let sealed = db
        .scalar("SELECT COUNT(*) FROM callbacks WHERE secret_token LIKE 'enc:v1:%'")
        .await;
    assert_eq!(sealed, 2);
    let again = cli(&db, Some(KEY), &["migrate"]).await;
    assert!(text(&again.stdout).contains("0 plaintext"), "{again:?}");

    let server = TestServer::start_with(&db, &with_key(KEY)).await;
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    let received = receiver.wait_for(2, WAIT).await;
    for request in received {
        let expected = if request.path == "/a" { PLAIN } else { WHSEC };
        assert_eq!(request.header("x-devops-webhook-token"), expected);
        if request.path == "/a" {
            assert_eq!(
                request.header("x-tenant"),
                "t-plain-1",
                "sealed headers open to send"
            );
        }
    }
}

async fn a_wrong_or_missing_key_stops_the_start(backend: Backend) {
    let db = TestDb::new(backend).await;
    let first = cli(&db, Some(KEY), &["migrate"]).await;
    assert!(first.status.success(), "{first:?}");

    // Every command that opens the database checks the key.
    let commands: [&[&str]; 6] = [
        &["serve"],
        &["migrate"],
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
        &["members", "remove", "--project", "demo", "--user", "x"],
        &["members", "list", "--project", "demo"],
        &[
            "events",
            "publish",
            "--project",
            "demo",
            "--event",
            "BUILD_END",
            "--data",
            "{}",
        ],
    ];
    for command in commands {
        let wrong = cli(&db, Some(OTHER_KEY), command).await;
        assert!(
            !wrong.status.success(),
            "{command:?} started with another key"
        );
        let stderr = text(&wrong.stderr);
        assert!(
            stderr.contains("SECRET_ENCRYPTION_KEY is not the key"),
            "{command:?}: {stderr}"
        );
        assert!(!stderr.contains(OTHER_KEY) && !stderr.contains(KEY));
    }

    // Sealed tokens and no key: the start fails too, naming the variable.
    let server = TestServer::start_with(&db, &with_key(KEY)).await;
    server.set_member("demo", "alice", "admin").await;
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            "http://93.184.215.14/hook",
            Some(PLAIN),
        )
        .await;
    server.stop().await;
    let keyless = cli(&db, None, &["serve"]).await;
    assert!(!keyless.status.success());
    assert!(
        text(&keyless.stderr).contains("SECRET_ENCRYPTION_KEY is not set"),
        "{keyless:?}"
    );
    // The right key still starts.
    let right = TestServer::start_with(&db, &with_key(KEY)).await;
    right.stop().await;
}

/// A full run with debug logging: every token the run used must be absent from the log.
async fn no_secret_reaches_the_log_of_a_full_run(backend: Backend) {
    let db = TestDb::new(backend).await;
    let logs = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.script("/plain", vec![Answer::Status(503)]);
    let vars = [
        ("RUST_LOG", "debug"),
        ("LOG_FORMAT", "json"),
        ("SECRET_ENCRYPTION_KEY", KEY),
        ("DELIVERY_RETRY_SCHEDULE", "200ms"),
        ("DELIVERY_POLL_MS", "100"),
    ];
    let mut server = ServerProcess::start(&db, logs.path(), "debug", &vars).await;
    server
        .post("/op/projects/demo/members/alice?role=admin", None)
        .await;
    let create = |url: String, token: &str| {
        format!(
            "/apigw-user/v4/projects/demo/callbacks?event=BUILD_END&region=IDC&url={}&secretToken={}",
            enc(&url),
            enc(token)
        )
    };
    server
        .post(&create(receiver.url("/plain"), PLAIN), Some(String::new()))
        .await;
    server
        .post(&create(receiver.url("/whsec"), WHSEC), Some(String::new()))
        .await;
    // Refused creates carry tokens too.
    let refused_token = "refused-token-51e0";
    let (status, _) = server
        .send(
            Method::POST,
            &create("ftp://nowhere/".to_owned(), refused_token),
            Some(String::new()),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    server
        .post(
            "/service/callbacks/projects/demo/events",
            Some(r#"{"event":"BUILD_END","data":{"n":1}}"#.to_owned()),
        )
        .await;
    receiver.wait_for(3, WAIT).await;
    let base = "/apigw-user/v4/projects/demo/callbacks";
    let mut history = Vec::new();
    wait_until("three attempts in history", WAIT, async || {
        let (_, body) = server
            .send(
                Method::GET,
                &format!("{base}/callback_history?pageSize=100&{}", history_window()),
                None,
            )
            .await;
        history = body["data"]["records"].as_array().unwrap().clone();
        history.len() >= 3
    })
    .await;
    let (_, list) = server
        .send(Method::GET, &format!("{base}/callback_list"), None)
        .await;
    let failed = history.iter().find(|h| h["status"] == "FAILED").unwrap();
    server
        .post(
            &format!("{base}/callback_retry?id={}", failed["id"]),
            Some(String::new()),
        )
        .await;
    receiver.wait_for(4, WAIT).await;
    for answer in [list.to_string(), Value::from(history).to_string()] {
        assert!(
            !answer.contains(PLAIN) && !answer.contains(WHSEC),
            "{answer}"
        );
    }

    let pid = server.child.id().expect("running").to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(stopped.success());
    tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .expect("exits")
        .unwrap();

    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.lines().count() > 20 && log.contains(r#""level":"DEBUG""#),
        "debug logging was on: {log}"
    );
    for secret in [PLAIN, WHSEC, refused_token, SERVICE_TOKEN, KEY] {
        for form in [secret.to_owned(), enc(secret)] {
            assert!(
                !log.contains(&form),
                "{form} is in the log:\n{}",
                log.lines()
                    .filter(|line| line.contains(&form))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}
