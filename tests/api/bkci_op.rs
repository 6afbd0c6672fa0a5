//! bk-ci's op routes, `/op/pipeline/callback/…` (reference §3): the examples as written there,
//! custom headers on deliveries (sealed at rest, masked in history and in the list), and the
//! bulk enable/disable.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{
    Backend, DELIVERY_VARS, SERVICE_TOKEN, TestDb, TestServer, WAIT, assert_error, backend_tests,
    enc, envelope_of, public_url, wait_until,
};
use crate::receiver::Receiver;

backend_tests!(
    create_and_list_answer_as_the_reference,
    create_refuses_bad_bodies_headers_users_and_urls,
    custom_headers_are_delivered_sealed_at_rest_and_replaced_by_a_recreate,
    a_manual_resend_sends_the_custom_headers,
    delete_removes_global_callbacks_only,
    enable_and_disable_in_bulk,
    every_route_needs_the_service_token,
);

const TOKEN: (&str, &str) = ("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN);
const OPS: (&str, &str) = ("X-DEVOPS-UID", "ops");
const KEY: &str = "qU2rJr4b3tQ0c8cq9m3S8m9m1vB2Yx7kq0k1yX3N8T4=";
/// The reference's example body.
const EXAMPLE: &str =
    r#"{"@type":"header","headers":{"Authorization":"Bearer abc","X-Tenant":"t1"}}"#;

/// POSTs `body` to bk-ci's op create with `headers` (no service token unless given).
async fn create(
    server: &TestServer,
    event: &str,
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(server.url(&format!(
            "/op/pipeline/callback/create?event={event}&url={}",
            enc(url)
        )))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    envelope_of(request.send().await.expect("the server answers")).await
}

/// Creates as the service token holder and user `ops`; the answer must be the reference's.
async fn create_ok(server: &TestServer, event: &str, url: &str, body: &str) {
    assert_eq!(
        create(server, event, url, body, &[TOKEN, OPS]).await,
        (
            StatusCode::OK,
            json!({"status": 0, "data": {"successEvents": [event], "failureEvents": {}}})
        )
    );
}

async fn list(server: &TestServer, event: &str) -> Vec<Value> {
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/op/pipeline/callback/list?event={event}"),
            &[TOKEN, OPS],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].as_array().unwrap().clone()
}

async fn put(server: &TestServer, path: &str) -> (StatusCode, Value) {
    server.call(Method::PUT, path, &[TOKEN]).await
}

fn ok_true() -> (StatusCode, Value) {
    (StatusCode::OK, json!({"status": 0, "data": true}))
}

async fn create_and_list_answer_as_the_reference(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let url = public_url("prj");
    create_ok(&server, "PROJECT_UPDATE", &url, EXAMPLE).await;

    // The reference's list answer, with the header values masked (ours never shows them).
    let listed = list(&server, "PROJECT_UPDATE").await;
    let id = listed[0]["id"].as_i64().expect("an id");
    assert_eq!(
        Value::from(listed),
        json!([{
            "id": id,
            "projectId": "DEVOPS_ALL_PROJECT",
            "callBackUrl": url,
            "events": "PROJECT_UPDATE",
            "enable": true,
            "secretParam": {"@type": "header", "headers": {"Authorization": "******", "X-Tenant": "******"}}
        }])
    );
    assert_eq!(list(&server, "PROJECT_DISABLE").await, Vec::<Value>::new());
    assert_eq!(list(&server, "BUILD_END").await, Vec::<Value>::new());
    assert_error(
        &server
            .call(Method::GET, "/op/pipeline/callback/list", &[TOKEN])
            .await,
        400,
        400,
        &["event"],
    );

    // Our own global list shows the same row; an empty header set is no secretParam at all.
    let (_, ours) = server
        .call(Method::GET, "/op/callbacks/global", &[TOKEN])
        .await;
    assert_eq!(ours["data"]["records"][0]["id"], id);
    create_ok(
        &server,
        "PROJECT_ENABLE",
        &public_url("bare"),
        r#"{"@type":"header","headers":{}}"#,
    )
    .await;
    let bare = list(&server, "PROJECT_ENABLE").await;
    assert!(bare[0].get("secretParam").is_none(), "{}", bare[0]);

    // A failing callback shows when its failures began, as bk-ci writes it: local time, no offset.
    db.execute(&format!(
        "UPDATE callbacks SET failure_time = 1787277600000 WHERE id = {id}"
    ))
    .await;
    let listed = list(&server, "PROJECT_UPDATE").await;
    assert_eq!(listed[0]["failureTime"], "2026-08-21T10:00:00");
}

async fn create_refuses_bad_bodies_headers_users_and_urls(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let url = public_url("prj");
    let refused = async |body: &str, headers: &[(&str, &str)]| {
        create(&server, "PROJECT_UPDATE", &url, body, headers).await
    };

    for body in [
        r#"{"headers":{"X-A":"1"}}"#,
        r#"{"@type":"token","headers":{"X-A":"1"}}"#,
        r#"{"@type":"header","headers":{"X-A":1}}"#,
        r#"{"@type":"header"}"#,
        "",
    ] {
        assert_error(&refused(body, &[TOKEN, OPS]).await, 400, 400, &[]);
    }
    // Any header a delivery sets itself is refused by name, whatever its case.
    for name in [
        "Content-Type",
        "content-length",
        "Host",
        "X-DEVOPS-WEBHOOK-TOKEN",
        "webhook-signature",
        "Webhook-Id",
        "webhook-timestamp",
        "X-DEVOPS-WEBHOOK-UNIQUE-ID",
    ] {
        let body = json!({"@type": "header", "headers": {name: "x"}}).to_string();
        assert_error(&refused(&body, &[TOKEN, OPS]).await, 400, 400, &[name]);
    }
    for (headers, words) in [
        (json!({"Bad Name": "x"}), &["Bad Name"][..]),
        (json!({"X-A": "a\r\nInjected: 1"}), &["X-A"][..]),
        (json!({"X-A": "1", "x-a": "2"}), &["x-a", "twice"][..]),
        (json!({"X-A": "v".repeat(5000)}), &["X-A"][..]),
    ] {
        let body = json!({"@type": "header", "headers": headers}).to_string();
        assert_error(&refused(&body, &[TOKEN, OPS]).await, 400, 400, words);
    }
    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("X-{i}"), json!("v"))).collect();
    let body = json!({"@type": "header", "headers": many}).to_string();
    assert_error(&refused(&body, &[TOKEN, OPS]).await, 400, 400, &["32"]);

    // X-DEVOPS-UID: missing or blank is bk-ci's 400 "invalid userId".
    assert_error(
        &refused(EXAMPLE, &[TOKEN]).await,
        400,
        400,
        &["invalid userId"],
    );
    assert_error(
        &refused(EXAMPLE, &[TOKEN, ("X-DEVOPS-UID", "  ")]).await,
        400,
        400,
        &["invalid userId"],
    );

    // The URL is vetted with the codes of the project create; only PROJECT_* events.
    let with = [TOKEN, OPS];
    assert_error(
        &create(
            &server,
            "PROJECT_UPDATE",
            "ftp://x.example/",
            EXAMPLE,
            &with,
        )
        .await,
        400,
        2101132,
        &[],
    );
    assert_error(
        &create(
            &server,
            "PROJECT_UPDATE",
            "http://127.0.0.1/",
            EXAMPLE,
            &with,
        )
        .await,
        400,
        2101366,
        &[],
    );
    assert_error(
        &create(&server, "BUILD_END", &url, EXAMPLE, &with).await,
        400,
        400,
        &["PROJECT_"],
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM callbacks").await,
        0,
        "nothing refused was stored"
    );
}

/// With `SECRET_ENCRYPTION_KEY`: the headers are sealed in the row, reach the receiver in
/// clear on a PROJECT_UPDATE delivery, are masked in history, and a re-create replaces them.
async fn custom_headers_are_delivered_sealed_at_rest_and_replaced_by_a_recreate(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut vars = DELIVERY_VARS.to_vec();
    vars.push(("SECRET_ENCRYPTION_KEY", KEY));
    let server = TestServer::start_with(&db, &vars).await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/global");
    create_ok(&server, "PROJECT_UPDATE", &url, EXAMPLE).await;

    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM callbacks WHERE secret_headers LIKE 'enc:v1:%'")
            .await,
        1
    );
    // Quoted as JSON would hold it: a bare "t1" turns up in one sealed (base64) value in forty.
    for clear in ["Bearer abc", "X-Tenant", "\"t1\""] {
        assert_eq!(
            db.scalar(&format!(
                "SELECT COUNT(*) FROM callbacks WHERE secret_headers LIKE '%{clear}%'"
            ))
            .await,
            0,
            "{clear} is stored in clear"
        );
    }

    let (_, answer) = server
        .publish(
            "alpha",
            r#"{"event":"PROJECT_UPDATE","data":{"enable":true}}"#,
        )
        .await;
    assert_eq!(answer["data"]["deliveries"], 1, "{answer}");
    let first = receiver.wait_for(1, WAIT).await.pop().unwrap();
    assert_eq!(first.header("authorization"), "Bearer abc");
    assert_eq!(first.header("x-tenant"), "t1");
    assert_eq!(
        first.header("content-type"),
        "application/json; charset=utf-8"
    );
    assert_eq!(first.header("x-devops-webhook-token"), "NONE");

    // History keeps the names, never the values.
    wait_until("the attempt in history", WAIT, async || {
        db.scalar("SELECT COUNT(*) FROM callback_history").await == 1
    })
    .await;
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM callback_history WHERE request_headers LIKE '%Bearer abc%' OR request_headers LIKE '%\"t1\"%'")
            .await,
        0
    );
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM callback_history WHERE request_headers LIKE '%Authorization%'"
        )
        .await,
        1
    );

    // Re-creating (url, event) replaces the headers (bk-ci silently keeps the old ones) and
    // keeps the id.
    let id = list(&server, "PROJECT_UPDATE").await[0]["id"].clone();
    create_ok(
        &server,
        "PROJECT_UPDATE",
        &url,
        r#"{"@type":"header","headers":{"X-Tenant":"t2"}}"#,
    )
    .await;
    let listed = list(&server, "PROJECT_UPDATE").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id);
    assert_eq!(
        listed[0]["secretParam"]["headers"],
        json!({"X-Tenant": "******"})
    );
    server
        .publish(
            "beta",
            r#"{"event":"PROJECT_UPDATE","data":{"enable":true}}"#,
        )
        .await;
    let second = receiver.wait_for(2, WAIT).await.pop().unwrap();
    assert_eq!(second.header("x-tenant"), "t2");
    assert!(second.headers.get("authorization").is_none());
}

/// The re-send route reads the callback through another query (`delivery_target`): it sends
/// the custom headers too. (Global history is not under any project's routes, so the headers
/// are put on a project callback directly, in plaintext, as a row written before the key.)
async fn a_manual_resend_sends_the_custom_headers(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, DELIVERY_VARS).await;
    server.set_member("demo", "alice", "admin").await;
    let receiver = Receiver::start().await;
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/p"), None)
        .await;
    db.execute(r#"UPDATE callbacks SET secret_headers = '[["X-Resend","r1"]]'"#)
        .await;
    server
        .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
        .await;
    assert_eq!(receiver.wait_for(1, WAIT).await[0].header("x-resend"), "r1");
    let history = server.wait_for_history("demo", "alice", 1).await;
    let (status, answer) = server
        .v4(
            Method::POST,
            "demo",
            &format!("/callback_retry?id={}", history[0]["id"]),
            Some("alice"),
        )
        .await;
    assert_eq!((status, &answer["data"]), (StatusCode::OK, &json!(true)));
    let resent = receiver.wait_for(2, WAIT).await.pop().unwrap();
    assert_eq!(resent.header("x-resend"), "r1");
    let history = server.wait_for_history("demo", "alice", 2).await;
    assert!(
        !Value::from(history).to_string().contains("r1"),
        "history shows a custom header's value"
    );
}

async fn delete_removes_global_callbacks_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    server.set_member("demo", "alice", "admin").await;
    server
        .register("demo", "alice", "BUILD_END", &public_url("p"), None)
        .await;
    create_ok(&server, "PROJECT_UPDATE", &public_url("g"), EXAMPLE).await;
    let id = list(&server, "PROJECT_UPDATE").await[0]["id"]
        .as_i64()
        .unwrap();
    let project_id = db
        .scalar("SELECT id FROM callbacks WHERE project_id = 'demo'")
        .await;
    let delete = async |id: i64, headers: &[(&str, &str)]| {
        server
            .call(
                Method::DELETE,
                &format!("/op/pipeline/callback/delete/{id}"),
                headers,
            )
            .await
    };

    assert_error(&delete(id, &[TOKEN]).await, 400, 400, &["invalid userId"]);
    assert_error(
        &delete(id, &[TOKEN, ("X-DEVOPS-UID", " ")]).await,
        400,
        400,
        &["invalid userId"],
    );
    assert_error(&delete(project_id, &[TOKEN, OPS]).await, 404, 2101136, &[]);
    assert_eq!(delete(id, &[TOKEN, OPS]).await, ok_true());
    assert_error(&delete(id, &[TOKEN, OPS]).await, 404, 2101136, &[]);
    assert_eq!(list(&server, "PROJECT_UPDATE").await, Vec::<Value>::new());
    assert_eq!(db.scalar("SELECT COUNT(*) FROM callbacks").await, 1);
    assert_error(
        &server
            .call(
                Method::DELETE,
                "/op/pipeline/callback/delete/x",
                &[TOKEN, OPS],
            )
            .await,
        400,
        400,
        &[],
    );
}

async fn enable_and_disable_in_bulk(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, DELIVERY_VARS).await;
    server.set_member("demo", "alice", "admin").await;
    let receiver = Receiver::start().await;
    let (one, two) = (receiver.url("/one"), receiver.url("/two"));
    create_ok(&server, "PROJECT_UPDATE", &one, EXAMPLE).await;
    create_ok(&server, "PROJECT_UPDATE", &two, EXAMPLE).await;
    server
        .register("demo", "alice", "BUILD_END", &two, None)
        .await;
    let id_of = async |url: &str, project: &str| {
        db.scalar(&format!(
            "SELECT id FROM callbacks WHERE url = '{url}' AND project_id = '{project}'"
        ))
        .await
    };
    let (g1, g2, p2) = (
        id_of(&one, "DEVOPS_ALL_PROJECT").await,
        id_of(&two, "DEVOPS_ALL_PROJECT").await,
        id_of(&two, "demo").await,
    );
    let failing = async || {
        db.execute(
            "UPDATE callbacks SET enabled = FALSE, failure_time = 1, disabled_reason = 'failing'",
        )
        .await
    };
    // Enabled, with no failure state left.
    let healthy = async |id: i64| {
        db.scalar(&format!(
            "SELECT COUNT(*) FROM callbacks WHERE id = {id} AND enabled \
             AND failure_time IS NULL AND disabled_reason IS NULL"
        ))
        .await
            == 1
    };

    let by_id = async |scope: &str, action: &str, ids: String| {
        put(
            &server,
            &format!("/op/pipeline/callback/{scope}/{action}/byId?callbackIds={ids}"),
        )
        .await
    };

    // By id: only the listed ids of that scope.
    failing().await;
    assert_eq!(
        by_id("DEVOPS_ALL_PROJECT", "enableCallback", format!("{g1},{p2}")).await,
        ok_true()
    );
    assert!(healthy(g1).await);
    assert!(
        !healthy(g2).await && !healthy(p2).await,
        "another scope's id"
    );
    assert_eq!(
        by_id("demo", "enableCallback", format!("%20{p2}%20,999999")).await,
        ok_true()
    );
    assert!(healthy(p2).await);
    let listed: Vec<Value> = list(&server, "PROJECT_UPDATE").await;
    assert_eq!(listed.len(), 1, "the list shows enabled rows only");
    assert_eq!(listed[0]["id"], g1);

    // By URL: in one scope, then everywhere.
    failing().await;
    let by_url = |query: String| format!("/op/pipeline/callback/enableCallback/byUrl?{query}");
    assert_eq!(
        put(
            &server,
            &by_url(format!("projectId=DEVOPS_ALL_PROJECT&url={}", enc(&two)))
        )
        .await,
        ok_true()
    );
    assert!(healthy(g2).await);
    assert!(!healthy(g1).await && !healthy(p2).await);
    assert_eq!(
        put(&server, &by_url(format!("url={}", enc(&two)))).await,
        ok_true()
    );
    assert!(healthy(p2).await && !healthy(g1).await);
    assert_eq!(
        put(
            &server,
            &by_url(format!("url={}", enc("http://nowhere.example/")))
        )
        .await,
        ok_true(),
        "no match is still true, as in bk-ci"
    );

    // Disable by id stops deliveries.
    assert_eq!(
        by_id("DEVOPS_ALL_PROJECT", "enableCallback", format!("{g1},{g2}")).await,
        ok_true()
    );
    assert_eq!(
        by_id("DEVOPS_ALL_PROJECT", "disable", g1.to_string()).await,
        ok_true()
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT COUNT(*) FROM callbacks WHERE id = {g1} AND NOT enabled"
        ))
        .await,
        1
    );
    let (_, answer) = server
        .publish(
            "alpha",
            r#"{"event":"PROJECT_UPDATE","data":{"enable":true}}"#,
        )
        .await;
    assert_eq!(answer["data"]["deliveries"], 1, "only /two: {answer}");
    let received = receiver.wait_for(1, WAIT).await;
    assert_eq!(received[0].path, "/two");

    // Bad id lists and scopes are 400s that change nothing.
    for ids in ["", "%20", "1,,2", "x", "0", "-1", "1.5"] {
        assert_error(
            &by_id("demo", "disable", ids.to_owned()).await,
            400,
            400,
            &["callbackIds"],
        );
    }
    assert_error(
        &put(&server, "/op/pipeline/callback/demo/disable/byId").await,
        400,
        400,
        &["callbackIds"],
    );
    assert_error(
        &put(
            &server,
            "/op/pipeline/callback/bad%20id/disable/byId?callbackIds=1",
        )
        .await,
        400,
        400,
        &["projectId"],
    );
    assert_error(
        &put(
            &server,
            "/op/pipeline/callback/enableCallback/byUrl?projectId=demo",
        )
        .await,
        400,
        400,
        &["url"],
    );
    assert!(healthy(p2).await);
}

async fn every_route_needs_the_service_token(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    assert_error(
        &create(&server, "PROJECT_UPDATE", &public_url("x"), EXAMPLE, &[OPS]).await,
        401,
        401,
        &["X-DEVOPS-BK-TOKEN"],
    );
    let wrong = ("X-DEVOPS-BK-TOKEN", "wrong");
    for (method, path) in [
        (
            Method::GET,
            "/op/pipeline/callback/list?event=PROJECT_UPDATE",
        ),
        (Method::DELETE, "/op/pipeline/callback/delete/1"),
        (
            Method::PUT,
            "/op/pipeline/callback/demo/enableCallback/byId?callbackIds=1",
        ),
        (
            Method::PUT,
            "/op/pipeline/callback/enableCallback/byUrl?url=x",
        ),
        (
            Method::PUT,
            "/op/pipeline/callback/demo/disable/byId?callbackIds=1",
        ),
    ] {
        for headers in [&[OPS][..], &[OPS, wrong][..]] {
            assert_error(
                &server.call(method.clone(), path, headers).await,
                401,
                401,
                &["X-DEVOPS-BK-TOKEN"],
            );
        }
    }
}
