//! The console over plain HTTP: sign-in, the session cookie, the CSRF check, sign-out, and what
//! the pages show and do (the browser tests in `browser.rs` drive the same pages in Chromium).

use reqwest::redirect::Policy;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{
    Backend, SERVICE_TOKEN, TestDb, TestServer, WAIT, backend_tests, enc, public_url,
    start_delivering, wait_until,
};
use crate::receiver::{Answer, Receiver};

backend_tests!(
    nothing_is_reachable_without_a_session,
    sign_in_sets_a_strict_http_only_cookie_and_refuses_a_wrong_token,
    forms_without_the_sessions_csrf_token_are_refused,
    sign_out_ends_the_session,
    search_finds_callbacks_of_every_level_and_actions_use_the_api,
    the_overview_shows_the_queue_outcomes_and_disabled_callbacks,
    deliveries_resend_and_recovery_go_through_the_api,
);

/// A browser-like client of the console: no redirects followed, the session cookie kept.
pub struct Console<'a> {
    server: &'a TestServer,
    client: reqwest::Client,
    pub cookie: Option<String>,
}

impl<'a> Console<'a> {
    pub fn new(server: &'a TestServer) -> Self {
        Self {
            server,
            client: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    /// Signs in as `user` with `token`; returns the answer.
    pub async fn sign_in(&mut self, user: &str, token: &str) -> reqwest::Response {
        let response = self
            .client
            .post(self.server.url("/console/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("user={}&token={}", enc(user), enc(token)))
            .send()
            .await
            .unwrap();
        if let Some(set) = response.headers().get("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = Some(pair);
        }
        response
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        let mut request = self.client.get(self.server.url(path));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap()
    }

    /// A page's status and HTML.
    pub async fn page(&self, path: &str) -> (StatusCode, String) {
        let response = self.get(path).await;
        (response.status(), response.text().await.unwrap())
    }

    /// POSTs a form (already encoded) to `path`.
    pub async fn post(&self, path: &str, form: &str) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.server.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned());
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap()
    }

    /// The CSRF token the forms of a page carry.
    pub async fn csrf(&self) -> String {
        let (status, html) = self.page("/console").await;
        assert_eq!(status, StatusCode::OK, "{html}");
        hidden_value(&html, "csrf")
    }
}

/// The value of the first hidden input named `name` in `html`.
pub fn hidden_value(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// The `Location` of a redirect.
fn location(response: &reqwest::Response) -> &str {
    response.headers()["location"].to_str().unwrap()
}

async fn nothing_is_reachable_without_a_session(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[]).await;
    let console = Console::new(&server);
    for page in ["/console", "/console/projects", "/console/projects/demo"] {
        let response = console.get(page).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(location(&response), "/console/sign-in", "{page}");
    }
    let response = console
        .post("/console/projects/demo/callbacks/1/disable", "csrf=x")
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.text().await.unwrap().contains("Sign in again"));
    // A forged cookie is no session.
    let mut forged = Console::new(&server);
    forged.cookie = Some("dc_console=made-up".to_owned());
    assert_eq!(forged.get("/console").await.status(), StatusCode::SEE_OTHER);
    // The sign-in form, its stylesheet and script answer without one, with the console's headers.
    let form = console.get("/console/sign-in").await;
    assert_eq!(form.status(), StatusCode::OK);
    let csp = form.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(form.headers()["cache-control"], "no-store");
    let css = console.get("/console/assets/console.css").await;
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    let (status, html) = console.page("/console/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("no such page"));
    // The API's unknown routes still answer the envelope.
    let (status, body) = server.call(Method::GET, "/nope", &[]).await;
    assert_eq!(
        (status, body["status"].as_i64()),
        (StatusCode::NOT_FOUND, Some(404))
    );
}

async fn sign_in_sets_a_strict_http_only_cookie_and_refuses_a_wrong_token(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[]).await;
    let mut console = Console::new(&server);
    let refused = console.sign_in("ops", "not-the-token").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get("set-cookie").is_none());
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("not the service token")
    );
    let blank = console.sign_in("  ", SERVICE_TOKEN).await;
    assert_eq!(blank.status(), StatusCode::BAD_REQUEST);
    assert!(console.cookie.is_none());

    let signed = console.sign_in("ops", SERVICE_TOKEN).await;
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&signed), "/console");
    let cookie = signed.headers()["set-cookie"].to_str().unwrap();
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}: plain HTTP here");
    let (status, html) = console.page("/console").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Signed in as <strong>ops</strong>"), "{html}");
    // Signed in, the form sends the operator on to the console.
    assert_eq!(location(&console.get("/console/sign-in").await), "/console");
    // Behind a proxy that says HTTPS, the cookie is Secure too.
    let behind = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
        .post(server.url("/console/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .body(format!("user=ops&token={SERVICE_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert!(
        behind.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .ends_with("; Secure")
    );

    // Without SERVICE_TOKEN there is nothing to sign in with.
    let db = TestDb::new(backend).await;
    let off = TestServer::start_with(&db, &[("SERVICE_TOKEN", "")]).await;
    let mut console = Console::new(&off);
    let (status, html) = console.page("/console/sign-in").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(html.contains("no SERVICE_TOKEN"));
    assert_eq!(
        console.sign_in("ops", "").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

async fn forms_without_the_sessions_csrf_token_are_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[]).await;
    server
        .register("demo", "alice", "BUILD_END", &public_url("hook"), None)
        .await;
    let mut console = Console::new(&server);
    console.sign_in("ops", SERVICE_TOKEN).await;
    let csrf = console.csrf().await;
    let disable = "/console/projects/demo/callbacks/1/disable";
    for form in ["back=%2Fconsole", "csrf=&back=%2Fconsole", "csrf=wrong"] {
        let response = console.post(disable, form).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{form}");
        assert!(response.text().await.unwrap().contains("CSRF token"));
    }
    // Another session's token is no good either.
    let mut other = Console::new(&server);
    other.sign_in("eve", SERVICE_TOKEN).await;
    let theirs = other.csrf().await;
    assert_ne!(theirs, csrf);
    let response = console.post(disable, &format!("csrf={theirs}")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (_, list) = server.list("demo", "alice", "").await;
    assert_eq!(list["data"]["records"][0]["enable"], true, "{list}");

    // With it, the callback is disabled, and the form goes back where it said (a console page only).
    let back = enc("/console/projects/demo?q=hook");
    let response = console
        .post(disable, &format!("csrf={csrf}&back={back}"))
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/console/projects/demo?q=hook");
    let (_, list) = server.list("demo", "alice", "").await;
    assert_eq!(list["data"]["records"][0]["enable"], false, "{list}");
    assert_eq!(
        list["data"]["records"][0]["disabledReason"],
        "disabled by ops in the console"
    );
    let (_, html) = console.page("/console/projects/demo?q=hook").await;
    assert!(
        html.contains("Callback 1 (http://93.184.215.14/hook) disabled."),
        "{html}"
    );
    let enable = "/console/projects/demo/callbacks/1/enable";
    let response = console
        .post(
            enable,
            &format!("csrf={csrf}&back={}", enc("https://evil.example/")),
        )
        .await;
    assert_eq!(location(&response), "/console");
    let (_, list) = server.list("demo", "alice", "").await;
    assert_eq!(list["data"]["records"][0]["enable"], true, "{list}");
}

async fn sign_out_ends_the_session(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[]).await;
    let mut console = Console::new(&server);
    console.sign_in("ops", SERVICE_TOKEN).await;
    let csrf = console.csrf().await;
    let refused = console.post("/console/sign-out", "csrf=wrong").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let out = console
        .post("/console/sign-out", &format!("csrf={csrf}"))
        .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&out), "/console/sign-in?signed-out");
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // The old cookie is refused: pages send to the sign-in form, forms are 401.
    assert_eq!(
        location(&console.get("/console/projects").await),
        "/console/sign-in"
    );
    let response = console
        .post(
            "/console/projects/demo/callbacks/1/delete",
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

async fn search_finds_callbacks_of_every_level_and_actions_use_the_api(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[]).await;
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &public_url("project-hook"),
            None,
        )
        .await;
    server.set_member("other", "alice", "admin").await;
    server
        .register("other", "alice", "BUILD_START", &public_url("x"), None)
        .await;
    let (status, body) = server
        .call(
            Method::POST,
            &format!(
                "/op/callbacks/global?event=PROJECT_CREATE&region=IDC&url={}",
                enc(&public_url("global-hook"))
            ),
            &[
                ("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN),
                ("X-DEVOPS-UID", "ops"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pipeline = "p-7e1c2b3a4d5e4f60a1b2c3d4e5f60718";
    let response = reqwest::Client::new()
        .post(server.url(&format!(
            "/apigw-user/v4/projects/demo/callbacks/pipelines/{pipeline}"
        )))
        .header("X-DEVOPS-UID", "alice")
        .json(
            &json!([{"callbackEvent": "BUILD_END", "callbackUrl": public_url("pipe-hook"),
                        "callbackName": "notify <ops>"}]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let mut console = Console::new(&server);
    console.sign_in("ops", SERVICE_TOKEN).await;
    let (_, projects) = console.page("/console/projects").await;
    assert!(projects.contains("Global callbacks"), "{projects}");
    assert!(projects.contains(r#"href="/console/projects/other""#));
    // Text found in URLs, any case; an event name finds that event's callbacks.
    let (_, found) = console.page("/console/projects?q=HOOK").await;
    for url in ["project-hook", "global-hook", "pipe-hook"] {
        assert!(found.contains(url), "{url} not in {found}");
    }
    assert!(!found.contains("/x<"), "{found}");
    let (_, found) = console.page("/console/projects?q=build_start").await;
    assert!(found.contains("/x<") && !found.contains("hook"), "{found}");
    let (_, demo) = console.page("/console/projects/demo?q=hook").await;
    assert!(demo.contains("project-hook") && demo.contains("pipe-hook"));
    assert!(!demo.contains("global-hook"));
    // Values are escaped, never markup.
    assert!(demo.contains("notify &lt;ops&gt;"), "{demo}");
    assert!(!demo.contains("notify <ops>"));
    let (_, none) = console.page("/console/projects/demo?q=%25").await;
    assert!(none.contains("No callback matches."), "a literal %: {none}");
    let (status, _) = console.page("/console/projects/bad%20id").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Delete the pipeline-level callback: the pipeline route no longer lists it.
    let csrf = console.csrf().await;
    let (_, demo) = console.page("/console/projects/demo").await;
    let pipe_id = demo
        .split("/console/projects/demo/callbacks/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let response = console
        .post(
            &format!("/console/projects/demo/callbacks/{pipe_id}/delete"),
            &format!("csrf={csrf}&back=%2Fconsole%2Fprojects%2Fdemo"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let listed: serde_json::Value = reqwest::Client::new()
        .get(server.url(&format!(
            "/apigw-user/v4/projects/demo/callbacks/pipelines/{pipeline}"
        )))
        .header("X-DEVOPS-UID", "alice")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"], json!([]), "{listed}");
    let (_, demo) = console.page("/console/projects/demo").await;
    assert!(
        demo.contains("Pipeline callback “notify &lt;ops&gt;” of"),
        "{demo}"
    );
    // A callback that is not there is said so.
    let response = console
        .post(
            "/console/projects/demo/callbacks/999/delete",
            &format!("csrf={csrf}&back=%2Fconsole%2Fprojects%2Fdemo"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, demo) = console.page("/console/projects/demo").await;
    assert!(
        demo.contains("callback record (999) does not exist"),
        "{demo}"
    );
    // The global callback is deleted through the global route's own function.
    let (_, global) = console.page("/console/projects/DEVOPS_ALL_PROJECT").await;
    let global_id = global
        .split("/console/projects/DEVOPS_ALL_PROJECT/callbacks/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    console
        .post(
            &format!("/console/projects/DEVOPS_ALL_PROJECT/callbacks/{global_id}/delete"),
            &format!("csrf={csrf}"),
        )
        .await;
    let (_, body) = server
        .call(
            Method::GET,
            "/op/callbacks/global",
            &[("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN)],
        )
        .await;
    assert_eq!(body["data"]["count"], 0, "{body}");
}

async fn the_overview_shows_the_queue_outcomes_and_disabled_callbacks(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[("DELIVERY_RETRY_SCHEDULE", "none")]).await;
    let receiver = Receiver::start().await;
    receiver.script("/gone", vec![Answer::Status(410)]);
    server
        .register("demo", "alice", "BUILD_END", &receiver.url("/gone"), None)
        .await;
    server
        .register("demo", "alice", "BUILD_START", &receiver.url("/ok"), None)
        .await;
    for event in ["BUILD_END", "BUILD_START"] {
        let (status, body) = server
            .publish("demo", &format!(r#"{{"event":"{event}","data":{{}}}}"#))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    server.wait_for_history("demo", "alice", 2).await;
    let mut console = Console::new(&server);
    console.sign_in("ops", SERVICE_TOKEN).await;
    let (status, html) = console.page("/console").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"<dd id="queue-due">0</dd>"#), "{html}");
    assert!(
        html.contains(r#"<td id="attempts-succeeded">1</td>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<td id="attempts-failed">1</td>"#),
        "{html}"
    );
    assert!(html.contains(r#"<dd id="queue-disabled">1</dd>"#), "{html}");
    assert!(html.contains("410 Gone"), "the disabled reason: {html}");
    assert!(html.contains(&receiver.url("/gone")));
    assert!(html.contains("<svg"), "{html}");
    assert!(html.contains("Not configured (BKCI_AMQP_URL is not set)."));
}

async fn deliveries_resend_and_recovery_go_through_the_api(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[("DELIVERY_RETRY_SCHEDULE", "none")]).await;
    let receiver = Receiver::start().await;
    receiver.script("/hook", vec![Answer::Status(500); 3]);
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/hook"),
            Some("s3cret-token"),
        )
        .await;
    for _ in 0..3 {
        server
            .publish("demo", r#"{"event":"BUILD_END","data":{}}"#)
            .await;
    }
    server.wait_for_history("demo", "alice", 3).await;
    let mut console = Console::new(&server);
    // The job's progress is for a session only.
    let (status, body) =
        crate::common::envelope_of(console.get("/console/projects/demo/recover_jobs/1").await)
            .await;
    assert_eq!(
        (status, body["status"].as_i64()),
        (StatusCode::UNAUTHORIZED, Some(401))
    );
    console.sign_in("ops", SERVICE_TOKEN).await;
    let csrf = console.csrf().await;
    let page = "/console/projects/demo/callbacks/1";
    let (status, html) = console.page(page).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(html.matches(r#"class="state FAILED""#).count(), 3, "{html}");
    let (_, delivery) = console.page(&format!("{page}/deliveries/1")).await;
    assert!(delivery.contains("******") && !delivery.contains("s3cret-token"));
    assert!(delivery.contains("HTTP 500"), "{delivery}");
    // Another callback's path does not show it; a callback that is not there is a 404 page.
    let (status, _) = console
        .page("/console/projects/demo/callbacks/7/deliveries/1")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Re-send delivery 1: delivered, marked manual, the delivery SUCCESS (the API agrees).
    let back = format!("csrf={csrf}&back={}", enc(&format!("{page}/deliveries/1")));
    let response = console
        .post(&format!("{page}/deliveries/1/resend"), &back)
        .await;
    assert_eq!(location(&response), format!("{page}/deliveries/1"));
    let (_, delivery) = console.page(&format!("{page}/deliveries/1")).await;
    assert!(
        delivery.contains("Delivered: the receiver accepted the re-send."),
        "{delivery}"
    );
    assert!(delivery.contains("manual re-send"));
    let (_, history) = server.history("demo", "alice", "").await;
    assert_eq!(history["data"]["records"][0]["manual"], true, "{history}");
    assert_eq!(
        history["data"]["records"][0]["delivery"]["status"],
        "SUCCESS"
    );
    // Nothing to re-send: said so.
    console
        .post(&format!("{page}/deliveries/99/resend"), &back)
        .await;
    let (_, delivery) = console.page(&format!("{page}/deliveries/1")).await;
    assert!(
        delivery.contains("callback history (99) does not exist"),
        "{delivery}"
    );

    // A window that is not a time is refused, naming it; a good one starts the API's job.
    let recover = format!("{page}/recover");
    console
        .post(
            &recover,
            &format!("csrf={csrf}&since=yesterday&back={}", enc(page)),
        )
        .await;
    let (_, html) = console.page(page).await;
    assert!(html.contains("since must be yyyy-MM-dd HH:mm:ss"), "{html}");
    let since = (chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai)
        - chrono::Duration::hours(1))
    .format("%Y-%m-%dT%H:%M")
    .to_string();
    let response = console
        .post(
            &recover,
            &format!("csrf={csrf}&since={}&until=", enc(&since)),
        )
        .await;
    assert_eq!(location(&response), format!("{page}?job=1#recovery"));
    let mut job = serde_json::Value::Null;
    wait_until("the recovery job is done", WAIT, async || {
        let response = console.get("/console/projects/demo/recover_jobs/1").await;
        job = response.json::<serde_json::Value>().await.unwrap()["data"].clone();
        job["state"] == "DONE"
    })
    .await;
    assert_eq!(
        (job["total"].as_u64(), job["creator"].as_str()),
        (Some(2), Some("ops"))
    );
    let (_, api) = server
        .v4(Method::GET, "demo", "/recover_jobs/1", Some("alice"))
        .await;
    assert_eq!(api["data"], job);
    let (_, html) = console.page(&format!("{page}?job=1")).await;
    assert!(html.contains(r#"max="100" value="100""#), "{html}");
    receiver.wait_for(6, WAIT).await;
    // Cancelling a job that has ended says so and changes nothing.
    console
        .post(
            "/console/projects/demo/recover_jobs/1/cancel",
            &format!("csrf={csrf}&back={}", enc(page)),
        )
        .await;
    let (_, html) = console.page(page).await;
    assert!(
        html.contains("Recovery job 1 had already ended: DONE."),
        "{html}"
    );
}
