//! Compatibility switches for receivers migrating from bk-ci: `DELIVERY_SUCCESS`,
//! `DELIVERY_CA_FILE` and `DELIVERY_TLS_VERIFY`, against a real HTTPS receiver whose certificate
//! a certificate authority made in the test signed. Redirects stay refused whatever is set.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{
    Backend, TestCa, TestDb, TestServer, backend_tests, cli, start_delivering, strip_ansi,
};
use crate::processes::ServerProcess;
use crate::receiver::{Answer, Receiver};

backend_tests!(
    the_default_refuses_a_receiver_signed_by_an_unknown_ca,
    the_ca_file_makes_a_private_receiver_trusted,
    tls_verify_false_trusts_any_certificate,
    any_response_counts_a_500_as_delivered_where_the_default_retries_it,
    redirects_are_refused_in_every_mode,
);

const ONE_ATTEMPT: (&str, &str) = ("DELIVERY_RETRY_SCHEDULE", "none");

/// Registers `url` for BUILD_END in demo, publishes one event, and waits for `attempts` rows of
/// history; returns them newest first.
async fn deliver(server: &TestServer, url: &str, attempts: usize) -> Vec<Value> {
    server
        .register("demo", "alice", "BUILD_END", url, None)
        .await;
    let (status, body) = server
        .publish("demo", r#"{"event":"BUILD_END","data":{"n":1}}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.wait_for_history("demo", "alice", attempts).await
}

/// Re-sends history row `id` by hand: `data` is whether it was delivered.
async fn resend(server: &TestServer, id: &Value) -> Value {
    let (status, body) = server
        .v4(
            Method::POST,
            "demo",
            &format!("/callback_retry?id={id}"),
            Some("alice"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn the_default_refuses_a_receiver_signed_by_an_unknown_ca(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[ONE_ATTEMPT]).await;
    let ca = TestCa::new();
    let receiver = Receiver::start_https(&ca).await;

    let records = deliver(&server, &receiver.url("/private"), 1).await;
    let attempt = &records[0];
    assert_eq!(attempt["status"], "FAILED", "{attempt}");
    assert!(attempt.get("responseCode").is_none(), "{attempt}");
    let error = attempt["errorMsg"].as_str().unwrap();
    assert!(
        error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
        "history names the TLS error: {error}"
    );
    assert_eq!(receiver.count(), 0, "nothing was sent over the refused TLS");
}

async fn the_ca_file_makes_a_private_receiver_trusted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let ca = TestCa::new();
    let server = start_delivering(&db, &[ONE_ATTEMPT, ("DELIVERY_CA_FILE", ca.ca_path())]).await;
    let receiver = Receiver::start_https(&ca).await;

    let records = deliver(&server, &receiver.url("/private"), 1).await;
    assert_eq!(records[0]["status"], "SUCCESS", "{}", records[0]);
    assert_eq!(records[0]["responseCode"], 200);
    assert_eq!(receiver.count(), 1);

    // Another CA's receiver is still refused: the file adds roots, it does not turn checks off.
    // The second event goes to both callbacks of the project: three attempts in all.
    let stranger = Receiver::start_https(&TestCa::new()).await;
    let stranger_url = stranger.url("/stranger");
    let records = deliver(&server, &stranger_url, 3).await;
    let refused = records
        .iter()
        .find(|record| record["callBackUrl"] == stranger_url.as_str())
        .unwrap_or_else(|| panic!("no attempt to the stranger: {records:?}"));
    assert_eq!(refused["status"], "FAILED", "{refused}");
    assert_eq!(stranger.count(), 0);
    assert_eq!(receiver.count(), 2);
}

async fn tls_verify_false_trusts_any_certificate(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[ONE_ATTEMPT, ("DELIVERY_TLS_VERIFY", "false")]).await;
    let receiver = Receiver::start_https(&TestCa::new()).await;

    let records = deliver(&server, &receiver.url("/anyone"), 1).await;
    assert_eq!(records[0]["status"], "SUCCESS", "{}", records[0]);
    assert_eq!(receiver.count(), 1);
}

/// The same receiver, answering 500 to everything, under each rule. The manual re-send judges
/// by the same rule as the worker.
async fn any_response_counts_a_500_as_delivered_where_the_default_retries_it(backend: Backend) {
    let strict_db = TestDb::new(backend).await;
    let strict = start_delivering(&strict_db, &[]).await;
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Answer::Status(500));
    // DELIVERY_VARS: two retries, 300 ms apart.
    let records = deliver(&strict, &receiver.url("/strict"), 3).await;
    for attempt in &records {
        assert_eq!(attempt["status"], "FAILED", "{attempt}");
        assert_eq!(attempt["responseCode"], 500);
        assert!(attempt["errorMsg"].as_str().unwrap().contains("HTTP 500"));
    }
    let body = resend(&strict, &records[0]["id"]).await;
    assert_eq!(body["data"], false, "{body}");
    strict.stop().await;

    let lenient_db = TestDb::new(backend).await;
    let lenient = start_delivering(&lenient_db, &[("DELIVERY_SUCCESS", "any-response")]).await;
    let records = deliver(&lenient, &receiver.url("/lenient"), 1).await;
    assert_eq!(records[0]["status"], "SUCCESS", "{}", records[0]);
    assert_eq!(records[0]["responseCode"], 500);
    assert!(records[0].get("errorMsg").is_none(), "{}", records[0]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let lenient_calls = receiver
        .received()
        .iter()
        .filter(|r| r.path == "/lenient")
        .count();
    assert_eq!(lenient_calls, 1, "a delivered event is not retried");
    let body = resend(&lenient, &records[0]["id"]).await;
    assert_eq!(body["data"], true, "{body}");

    // A 410 is an answer like any other here: it does not disable the callback.
    receiver.answer_by_default(Answer::Status(410));
    let records = deliver(&lenient, &receiver.url("/gone"), 3).await;
    assert_eq!(records[0]["status"], "SUCCESS", "{}", records[0]);
    assert_eq!(records[0]["responseCode"], 410);
    let (_, list) = lenient.list("demo", "alice", "").await;
    let gone = list["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|callback| callback["callBackUrl"] == receiver.url("/gone"))
        .unwrap();
    assert_eq!(gone["enable"], true, "{gone}");
}

async fn redirects_are_refused_in_every_mode(backend: Backend) {
    let ca = TestCa::new();
    let modes: [(&[(&str, &str)], bool); 4] = [
        (&[], false),
        (&[("DELIVERY_SUCCESS", "any-response")], false),
        (
            &[
                ("DELIVERY_SUCCESS", "any-response"),
                ("DELIVERY_TLS_VERIFY", "false"),
            ],
            true,
        ),
        (&[("DELIVERY_CA_FILE", ca.ca_path())], true),
    ];
    for (vars, https) in modes {
        let db = TestDb::new(backend).await;
        let vars: Vec<(&str, &str)> = vars.iter().copied().chain([ONE_ATTEMPT]).collect();
        let server = start_delivering(&db, &vars).await;
        let receiver = if https {
            Receiver::start_https(&ca).await
        } else {
            Receiver::start().await
        };
        receiver.script("/moved", vec![Answer::Redirect(receiver.url("/target"))]);

        let records = deliver(&server, &receiver.url("/moved"), 1).await;
        let attempt = &records[0];
        assert_eq!(attempt["status"], "FAILED", "{vars:?}: {attempt}");
        assert_eq!(attempt["responseCode"], 302, "{vars:?}");
        assert!(
            attempt["errorMsg"]
                .as_str()
                .unwrap()
                .contains("redirects are not followed"),
            "{vars:?}: {attempt}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let paths: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
        assert_eq!(
            paths,
            ["/moved"],
            "{vars:?}: the Location was never requested"
        );
        server.stop().await;
    }
}

/// A CA file that cannot be read, holds no certificate or holds a broken one stops `serve`
/// with a message naming the variable and saying what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_ca_file_stops_the_start() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for (path, reason) in [
        (&missing, "cannot read it"),
        (&empty, "no PEM certificate"),
        (&broken, "its certificates cannot be used"),
    ] {
        let path = path.to_str().unwrap();
        let output = cli(&db, &[("DELIVERY_CA_FILE", path)], &["serve"]).await;
        assert!(!output.status.success(), "{path} was accepted");
        let stderr = strip_ansi(&String::from_utf8_lossy(&output.stderr));
        assert!(
            stderr.contains(&format!("DELIVERY_CA_FILE=\"{path}\"")) && stderr.contains(reason),
            "{stderr}"
        );
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}

/// Trusting any certificate is said loudly at start, and only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_false_is_warned_at_start() {
    let db = TestDb::new(Backend::Sqlite).await;
    let logs = tempfile::tempdir().unwrap();
    for (name, verify, warned) in [("unchecked", "false", true), ("checked", "true", false)] {
        let mut server =
            ServerProcess::start(&db, logs.path(), name, &[("DELIVERY_TLS_VERIFY", verify)]).await;
        server.child.start_kill().unwrap();
        server.child.wait().await.unwrap();
        let log = strip_ansi(&std::fs::read_to_string(&server.log).unwrap());
        let warning = log
            .lines()
            .any(|line| line.contains("WARN") && line.contains("DELIVERY_TLS_VERIFY=false"));
        assert_eq!(warning, warned, "{log}");
    }
}
