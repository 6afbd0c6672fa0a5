//! Hostile input and hostile receivers: one bad row never hurts anyone else. A row the database
//! refuses fails alone in every batched write (coalesced creates, intake batches, outcome
//! recording); control characters, reserved ids, deep JSON, junk methods, slow clients and the
//! special-purpose address ranges are stopped at the edge.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::common::{
    Backend, DELIVERY_VARS, SERVICE_TOKEN, TestDb, TestServer, assert_error, backend_tests, cli,
    enc, envelope_of, header_value, public_url,
};
use crate::receiver::{Answer, Receiver};

backend_tests!(
    a_refused_registration_fails_alone_in_its_coalesced_batch,
    a_refused_event_fails_alone_in_its_intake_batch,
    a_hostile_answer_is_stored_sanitised_and_costs_no_one_else,
    a_refused_outcome_is_recorded_without_the_receivers_answer,
    control_characters_are_refused_where_text_is_stored,
    the_global_scope_is_not_a_project_id,
    deeply_nested_event_data_is_refused,
    history_masks_the_signature,
    special_purpose_ranges_are_refused_at_registration,
);

const WAIT: Duration = Duration::from_secs(20);

/// Makes the database refuse rows of `table` whose `column` contains `marker`, as a constraint
/// it enforces would (SQLSTATE 23514 on PostgreSQL, SQLITE_CONSTRAINT on SQLite): a 409.
async fn refuse_rows(db: &TestDb, table: &str, column: &str, marker: &str) {
    match db.backend {
        Backend::Postgres => {
            db.execute(&format!(
                "CREATE FUNCTION refuse_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.{column} LIKE '%{marker}%' THEN \
                   RAISE EXCEPTION 'the test refuses {marker}' USING ERRCODE = '23514'; \
                 END IF; RETURN NEW; END $$"
            ))
            .await;
            db.execute(&format!(
                "CREATE TRIGGER refuse_{table} BEFORE INSERT OR UPDATE ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION refuse_{table}()"
            ))
            .await;
        }
        Backend::Sqlite => {
            db.execute(&format!(
                "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} \
                 WHEN NEW.{column} LIKE '%{marker}%' \
                 BEGIN SELECT RAISE(ABORT, 'the test refuses {marker}'); END"
            ))
            .await;
        }
    }
}

/// A server for delivery tests with `alice` admin of `victim` and `mallory` admin of `hostile`;
/// alice may read `hostile` too (the history helpers ask as her).
async fn two_projects(backend: Backend) -> (TestDb, TestServer) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, DELIVERY_VARS).await;
    server.set_member("victim", "alice", "admin").await;
    server.set_member("hostile", "mallory", "admin").await;
    server.set_member("hostile", "alice", "member").await;
    (db, server)
}

/// Sends every `(user, project, query)` create at once, each on its own task.
async fn create_all(
    server: &TestServer,
    creates: Vec<(&str, &str, String)>,
) -> Vec<(StatusCode, Value)> {
    let client = reqwest::Client::new();
    let mut tasks = JoinSet::new();
    for (index, (user, project, query)) in creates.into_iter().enumerate() {
        let request = client
            .post(server.url(&format!(
                "/apigw-user/v4/projects/{project}/callbacks?{query}"
            )))
            .header("X-DEVOPS-UID", user);
        tasks.spawn(async move {
            let response = request.send().await.expect("request reaches the server");
            (index, envelope_of(response).await)
        });
    }
    let mut answers = tasks.join_all().await;
    answers.sort_by_key(|(index, _)| *index);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

async fn a_refused_registration_fails_alone_in_its_coalesced_batch(backend: Backend) {
    let (db, server) = two_projects(backend).await;
    refuse_rows(&db, "callbacks", "url", "poison").await;
    // Interleaved, so that hostile and valid rows share coalesced statements.
    let mut creates = Vec::new();
    for i in 0..200 {
        let url = enc(&public_url(&format!("valid-{i}")));
        creates.push((
            "alice",
            "victim",
            format!("event=BUILD_END&region=IDC&url={url}"),
        ));
        if i % 4 == 0 {
            let url = enc(&public_url(&format!("poison-{i}")));
            creates.push((
                "mallory",
                "hostile",
                format!("event=BUILD_END&region=IDC&url={url}"),
            ));
        }
    }
    let answers = create_all(&server, creates.clone()).await;
    let mut refused = 0;
    for ((_, project, _), answer) in creates.iter().zip(&answers) {
        if *project == "victim" {
            assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
        } else {
            assert_error(answer, 409, 409, &["refused", "the test refuses poison"]);
            refused += 1;
        }
    }
    assert_eq!(refused, 50);
    let (status, listed) = server.list("victim", "alice", "pageSize=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        listed["data"]["count"], 200,
        "every valid create was stored"
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM callbacks WHERE project_id = 'hostile'")
            .await,
        0
    );
}

async fn a_refused_event_fails_alone_in_its_intake_batch(backend: Backend) {
    let (db, server) = two_projects(backend).await;
    let receiver = Receiver::start().await;
    server
        .register(
            "victim",
            "alice",
            "BUILD_END",
            &receiver.url("/victim"),
            None,
        )
        .await;
    refuse_rows(&db, "events", "event_id", "poison").await;
    let batch = json!([
        {"projectId": "victim", "event": "BUILD_END", "data": {"n": 1}, "eventId": "v-1"},
        {"projectId": "hostile", "event": "BUILD_END", "data": {"n": 2}, "eventId": "poison-1"},
        {"projectId": "victim", "event": "BUILD_END", "data": {"n": 3}, "eventId": "v-2"},
    ]);
    let answer = server
        .service_post("/service/callbacks/events:batch", &batch.to_string())
        .await;
    assert_error(
        &answer,
        400,
        400,
        &["1 of 3 events", "event [1]", "the test refuses poison"],
    );
    let data = &answer.1["data"];
    assert_eq!(data[0], json!({"eventId": "v-1", "deliveries": 1}));
    assert_eq!(data[1]["eventId"], "poison-1");
    assert!(
        data[1]["error"]
            .as_str()
            .unwrap()
            .contains("the test refuses poison")
    );
    assert_eq!(data[2], json!({"eventId": "v-2", "deliveries": 1}));
    let received = receiver.wait_for(2, WAIT).await;
    let mut bodies: Vec<String> = received
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        [
            r#"{"event":"BUILD_END","data":{"n":1}}"#,
            r#"{"event":"BUILD_END","data":{"n":3}}"#
        ]
    );
    // Alone, the refused event is a 400 naming the reason; the stored ones stay stored.
    let alone = server
        .publish(
            "hostile",
            r#"{"event":"BUILD_END","data":{},"eventId":"poison-2"}"#,
        )
        .await;
    assert_error(&alone, 409, 409, &["refused", "the test refuses poison"]);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM events").await, 2);
}

/// Waits until every delivery is finished and returns how many are not SUCCESS.
async fn unfinished_or_failed(db: &TestDb) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let pending = db
            .scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'PENDING'")
            .await;
        if pending == 0 {
            return db
                .scalar("SELECT COUNT(*) FROM deliveries WHERE status <> 'SUCCESS'")
                .await;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} deliveries still pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `victims` callbacks in `victim` and the hostile ones in `hostile`, all for BUILD_END; one
/// event published to each project in one batch, so their outcomes share recording batches.
async fn fan_out(server: &TestServer, receiver: &Receiver, victims: usize, hostile: &[&str]) {
    for i in 0..victims {
        server
            .register(
                "victim",
                "alice",
                "BUILD_END",
                &receiver.url(&format!("/v{i}")),
                None,
            )
            .await;
    }
    for path in hostile {
        server
            .register("hostile", "mallory", "BUILD_END", &receiver.url(path), None)
            .await;
    }
    let batch = json!([
        {"projectId": "hostile", "event": "BUILD_END", "data": {}},
        {"projectId": "victim", "event": "BUILD_END", "data": {}},
    ]);
    let (status, body) = server
        .service_post("/service/callbacks/events:batch", &batch.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Waits until the receiver saw every request (`distinct` deliveries plus `duplicates` repeats)
/// and every delivery finished SUCCESS, then checks the `victims` attempts of the other project
/// all succeeded with the receiver's answer.
async fn assert_all_succeeded(
    db: &TestDb,
    server: &TestServer,
    receiver: &Receiver,
    (distinct, duplicates): (usize, usize),
    victims: usize,
) {
    receiver.wait_for(distinct + duplicates, WAIT).await;
    assert_eq!(unfinished_or_failed(db).await, 0);
    assert_eq!(receiver.distinct_and_duplicates(), (distinct, duplicates));
    let records = server.wait_for_history("victim", "alice", victims).await;
    assert_eq!(records.len(), victims);
    assert!(
        records
            .iter()
            .all(|r| r["status"] == "SUCCESS" && r["responseBody"] == "answered 200")
    );
}

fn response_bodies(records: &[Value]) -> Vec<(String, Value)> {
    let mut bodies: Vec<(String, Value)> = records
        .iter()
        .map(|r| {
            let path = r["callBackUrl"].as_str().unwrap();
            (
                path[path.rfind('/').unwrap()..].to_owned(),
                r["responseBody"].clone(),
            )
        })
        .collect();
    bodies.sort_by(|a, b| a.0.cmp(&b.0));
    bodies
}

async fn a_hostile_answer_is_stored_sanitised_and_costs_no_one_else(backend: Backend) {
    let (db, server) = two_projects(backend).await;
    let receiver = Receiver::start().await;
    receiver.script("/nul", vec![Answer::Body(200, b"ok\0".to_vec())]);
    receiver.script("/latin1", vec![Answer::Body(200, b"caf\xe9 \xff".to_vec())]);
    receiver.script("/nul-500", vec![Answer::Body(500, b"\0\0".to_vec())]);
    fan_out(&server, &receiver, 30, &["/nul", "/latin1", "/nul-500"]).await;
    // Only the 500 is sent twice (it retries, then succeeds).
    assert_all_succeeded(&db, &server, &receiver, (33, 1), 30).await;
    let hostile = server.wait_for_history("hostile", "alice", 4).await;
    let bodies = response_bodies(&hostile);
    assert_eq!(bodies.len(), 4, "{hostile:?}");
    assert_eq!(
        bodies[0],
        ("/latin1".to_owned(), json!("caf\u{FFFD} \u{FFFD}"))
    );
    assert_eq!(bodies[1], ("/nul".to_owned(), json!("ok\u{FFFD}")));
    let nul_500: Vec<&Value> = bodies[2..].iter().map(|(_, body)| body).collect();
    assert!(nul_500.contains(&&json!("\u{FFFD}\u{FFFD}")), "{nul_500:?}");
    assert!(nul_500.contains(&&json!("answered 200")), "{nul_500:?}");
}

async fn a_refused_outcome_is_recorded_without_the_receivers_answer(backend: Backend) {
    let (db, server) = two_projects(backend).await;
    let receiver = Receiver::start().await;
    refuse_rows(&db, "callback_history", "response_body", "poison").await;
    receiver.script(
        "/poison",
        vec![Answer::Body(200, b"a poison pill".to_vec())],
    );
    fan_out(&server, &receiver, 20, &["/poison"]).await;
    assert_all_succeeded(&db, &server, &receiver, (21, 0), 20).await;
    let hostile = server.wait_for_history("hostile", "alice", 1).await;
    assert_eq!(hostile.len(), 1);
    assert_eq!(hostile[0]["status"], "SUCCESS");
    assert_eq!(hostile[0]["responseCode"], 200);
    assert!(hostile[0].get("responseBody").is_none(), "{}", hostile[0]);
    let note = hostile[0]["errorMsg"].as_str().unwrap();
    assert!(
        note.contains("the receiver's answer could not be stored"),
        "{note}"
    );
}

async fn control_characters_are_refused_where_text_is_stored(backend: Backend) {
    let (db, server) = two_projects(backend).await;
    let public = public_url("hook");
    for bad in [
        "http://h/a\0b",
        "http://h/a\r\nX-Injected: 1",
        "http://h/\tx",
        "http://h/\u{85}",
    ] {
        let query = format!("event=BUILD_END&region=IDC&url={}", enc(bad));
        assert_error(
            &server.create("victim", "alice", &query).await,
            400,
            2101132,
            &["control character"],
        );
        let batch = format!(
            "/batch?event=BUILD_START,BUILD_END&region=IDC&url={}",
            enc(bad)
        );
        assert_error(
            &server
                .v4(Method::POST, "victim", &batch, Some("alice"))
                .await,
            400,
            2101132,
            &["control character"],
        );
        assert_error(
            &create_global(&server, &format!("url={}", enc(bad))).await,
            400,
            2101132,
            &["control character"],
        );
    }
    for bad in [
        "ab\0cd",
        "ab\r\nX-Injected: 1",
        "two words",
        "tab\there",
        "caf\u{e9}",
    ] {
        let query = format!(
            "event=BUILD_END&region=IDC&url={}&secretToken={}",
            enc(&public),
            enc(bad)
        );
        assert_error(
            &server.create("victim", "alice", &query).await,
            400,
            400,
            &["secretToken", "visible ASCII"],
        );
        let global = format!("url={}&secretToken={}", enc(&public), enc(bad));
        assert_error(
            &create_global(&server, &global).await,
            400,
            400,
            &["secretToken", "visible ASCII"],
        );
    }
    assert_eq!(db.scalar("SELECT COUNT(*) FROM callbacks").await, 0);
    // A filter can never match a stored URL with a control character: a 400, on both backends.
    assert_error(
        &server
            .v4(
                Method::GET,
                "victim",
                "/callback_history?url=a%00b",
                Some("alice"),
            )
            .await,
        400,
        400,
        &["url", "control characters"],
    );
}

/// A PROJECT_CREATE global callback through the op API, as `ops`; `query` adds url and token.
async fn create_global(server: &TestServer, query: &str) -> (StatusCode, Value) {
    server
        .call(
            Method::POST,
            &format!("/op/callbacks/global?event=PROJECT_CREATE&region=IDC&{query}"),
            &[
                ("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN),
                ("X-DEVOPS-UID", "ops"),
            ],
        )
        .await
}

async fn the_global_scope_is_not_a_project_id(backend: Backend) {
    let (db, server) = two_projects(backend).await;
    let global = "DEVOPS_ALL_PROJECT";
    let query = format!("event=BUILD_END&region=IDC&url={}", enc(&public_url("g")));
    assert_error(
        &server.create(global, "alice", &query).await,
        400,
        400,
        &["projectId", "reserved"],
    );
    assert_error(
        &server
            .v4(Method::GET, global, "/callback_history", Some("alice"))
            .await,
        400,
        400,
        &["reserved"],
    );
    assert_error(
        &server
            .call(
                Method::PUT,
                &format!("/op/projects/{global}/members/mallory?role=admin"),
                &[("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN)],
            )
            .await,
        400,
        400,
        &["reserved"],
    );
    assert_error(
        &server
            .publish(global, r#"{"event":"BUILD_END","data":{}}"#)
            .await,
        400,
        400,
        &["reserved"],
    );
    let batch = json!([{"projectId": global, "event": "PROJECT_UPDATE", "data": {}}]);
    assert_error(
        &server
            .service_post("/service/callbacks/events:batch", &batch.to_string())
            .await,
        400,
        400,
        &["event [0]", "reserved"],
    );
    let added = cli(
        &db,
        &[],
        &[
            "members",
            "add",
            "--project",
            global,
            "--user",
            "mallory",
            "--role",
            "admin",
        ],
    )
    .await;
    assert!(!added.status.success(), "{added:?}");
    assert!(
        String::from_utf8_lossy(&added.stderr).contains("reserved"),
        "{added:?}"
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM project_members WHERE project_id = 'DEVOPS_ALL_PROJECT'")
            .await,
        0
    );
    // The op API still manages the global scope.
    let (status, body) = create_global(&server, &format!("url={}", enc(&public_url("g")))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .call(
            Method::GET,
            "/op/callbacks/global",
            &[("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["records"][0]["projectId"], global);
}

fn nested(levels: usize) -> String {
    format!(
        r#"{{"event":"BUILD_END","data":{{"a":{}{}}}}}"#,
        "[".repeat(levels - 1),
        "]".repeat(levels - 1)
    )
}

async fn deeply_nested_event_data_is_refused(backend: Backend) {
    let (db, server) = two_projects(backend).await;
    let (status, body) = server.publish("victim", &nested(64)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for levels in [65, 100_000] {
        assert_error(
            &server.publish("victim", &nested(levels)).await,
            400,
            400,
            &["data is nested more than 64 levels"],
        );
    }
    let batch = format!(
        r#"[{{"projectId":"victim","event":"BUILD_END","data":{{}}}},{{"projectId":"victim","event":"BUILD_END","data":{{"a":{}{}}}}}]"#,
        "[".repeat(70),
        "]".repeat(70)
    );
    assert_error(
        &server
            .service_post("/service/callbacks/events:batch", &batch)
            .await,
        400,
        400,
        &["event [1]", "nested more than 64"],
    );
    assert_eq!(db.scalar("SELECT COUNT(*) FROM events").await, 1);
}

async fn history_masks_the_signature(backend: Backend) {
    let (_db, server) = two_projects(backend).await;
    let receiver = Receiver::start().await;
    server
        .register(
            "victim",
            "alice",
            "BUILD_END",
            &receiver.url("/signed"),
            Some("weak"),
        )
        .await;
    let (status, body) = server
        .publish("victim", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sent = receiver.wait_for(1, WAIT).await;
    let signature = sent[0].header("webhook-signature");
    assert!(
        signature.starts_with("v1,"),
        "the receiver gets the signature: {signature:?}"
    );
    let records = server.wait_for_history("victim", "alice", 1).await;
    assert_eq!(header_value(&records[0], "webhook-signature"), "******");
    assert_eq!(
        header_value(&records[0], "X-DEVOPS-WEBHOOK-TOKEN"),
        "******"
    );
    assert!(!header_value(&records[0], "webhook-id").is_empty());
    let (_, everything) = server.history("victim", "alice", "").await;
    let everything = everything.to_string();
    assert!(!everything.contains(signature) && !everything.contains("weak"));
}

async fn special_purpose_ranges_are_refused_at_registration(backend: Backend) {
    let (_db, server) = two_projects(backend).await;
    for (url, kind) in [
        ("http://[64:ff9b:1::7f00:1]/x", "RFC 8215"),
        ("http://[::ffff:0:7f00:1]/x", "RFC 2765"),
        ("http://[100::1]/x", "RFC 6666"),
        ("http://192.88.99.1/x", "RFC 7526"),
        ("http://[64:ff9b::a00:1]/x", "RFC 1918"),
        ("http://[2002:7f00:1::]/x", "RFC 1122"),
    ] {
        let query = format!("event=BUILD_END&region=IDC&url={}", enc(url));
        assert_error(
            &server.create("victim", "alice", &query).await,
            400,
            2101366,
            &[kind],
        );
    }
}

/// The metrics recorder is process-wide, so this runs once, not per backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_methods_and_paths_do_not_grow_the_metrics() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    let client = reqwest::Client::new();
    let scrape = || async {
        client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // Every route and status this test touches gets its series first.
    client.get(server.url("/healthz")).send().await.unwrap();
    client
        .get(server.url("/no-such-route"))
        .send()
        .await
        .unwrap();
    let method = Method::from_bytes(b"JUNK0").unwrap();
    client
        .request(method, server.url("/healthz"))
        .send()
        .await
        .unwrap();
    let before = scrape().await;
    for i in 0..300 {
        let method =
            Method::from_bytes(format!("M{i:06}XYZ{}", "Q".repeat(2_000)).as_bytes()).unwrap();
        let answer = client
            .request(method, server.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
        let answer = client
            .get(server.url(&format!("/junk/{i}/{}", "p".repeat(1_000))))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    }
    let after = scrape().await;
    assert!(!after.contains("M000001XYZ") && !after.contains("/junk/"));
    assert!(after.contains(r#"method="other""#) && after.contains(r#"route="unmatched""#));
    // Other tests in this process may add a few series of real routes meanwhile; 600 junk
    // requests with their own labels would add megabytes.
    assert!(
        after.len() < before.len() + 64 * 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
}

/// Reads until the server closes the connection; returns when it did, relative to `from`.
async fn closed_after(stream: &mut TcpStream, from: Instant) -> Duration {
    let mut buffer = [0u8; 1024];
    let deadline = from + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return from.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection open for {WAIT:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_connections_are_cut_off() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start_with(&db, &[("HEADER_READ_TIMEOUT_MS", "500")]).await;

    // Headers dripped a line at a time never finish.
    let mut drip = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    drip.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let dripping = tokio::spawn(async move {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if drip
                .write_all(format!("X-Drip-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return drip;
            }
            let mut probe = [0u8; 1];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), drip.read(&mut probe)).await
            {
                return drip;
            }
        }
        unreachable!()
    });
    let mut drip = tokio::time::timeout(WAIT, dripping)
        .await
        .expect("the dripping connection is cut off")
        .unwrap();
    let _ = closed_after(&mut drip, started).await;
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "cut off after {:?}",
        started.elapsed()
    );

    // A connection that sends nothing, and one left idle after a request, are closed too.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    assert!(closed_after(&mut silent, started).await >= Duration::from_millis(450));
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    idle.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let started = Instant::now();
    assert!(closed_after(&mut idle, started).await >= Duration::from_millis(450));

    // Ordinary requests are unaffected.
    let (status, _) = server.call(Method::GET, "/healthz", &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_one() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start_with(
        &db,
        &[("MAX_CONNECTIONS", "2"), ("HEADER_READ_TIMEOUT_MS", "1000")],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).await.unwrap();
        held.push(stream);
    }
    // Both slots are held by idle keep-alive connections: a third client waits until the
    // header read timeout frees one, then is served.
    let started = Instant::now();
    let (status, _) = server.call(Method::GET, "/healthz", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "served after {:?} although both slots were held",
        started.elapsed()
    );
}
