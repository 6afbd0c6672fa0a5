//! The console in a real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them). Each test starts its own chromedriver on a free
//! port and one browser session. Screenshots go to `target/console-screenshots/`.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Backend, SERVICE_TOKEN, TestDb, WAIT, backend_tests, start_delivering};
use crate::receiver::{Answer, Receiver};

backend_tests!(
    an_operator_finds_resends_recovers_and_signs_out,
    a_wrong_token_is_refused,
    a_form_without_the_csrf_token_is_refused,
    pages_fit_a_phone_and_work_from_the_keyboard,
);

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Headless, as root in a container (no sandbox, no GPU, no /dev/shm), and never on the
/// network beyond this machine: the tests only reach servers on 127.0.0.1, and Chromium's own
/// background traffic (updates, field trials, safe browsing, link preconnects) is switched off,
/// with a dead proxy for anything that is not loopback and no name resolution but `localhost`.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--no-pings",
    "--dns-prefetch-disable",
    "--disable-features=NetworkPrediction,NavigationPredictor,Prerender2,OptimizationHints,\
     MediaRouter,Translate,AutofillServerCommunication,CertificateTransparencyComponentUpdater",
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
];
/// How long a page may take to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(15);

/// chromedriver on a free port and one Chromium session through it. Dropping it kills
/// chromedriver and the browsers it started (one process group).
pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
}

impl Browser {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {CHROMEDRIVER} ({e}): install Debian's chromium and \
                     chromium-driver packages (.ci/run does)"
                )
            });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not listen on port {port} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": CHROMIUM_ARGS,
            },
        });
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session through chromedriver");
        Self { client, driver }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Waits for the element `css` and returns its text.
    pub async fn text(&self, css: &str) -> String {
        self.on_element(css, async |element| element.text().await)
            .await
    }

    /// `act` on the element `css` once it is there; again on the new page's when a navigation
    /// replaced it meanwhile (a stale element).
    async fn on_element<T>(
        &self,
        css: &str,
        act: impl AsyncFn(fantoccini::elements::Element) -> Result<T, fantoccini::error::CmdError>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match act(self.wait_for(css).await).await {
                Ok(done) => return done,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{css} on {}: {e}", self.path().await),
            }
        }
    }

    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        let found = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element,
            Err(e) => panic!("no {css} on {}: {e}", self.path().await),
        }
    }

    pub async fn click(&self, css: &str) {
        self.on_element(css, async |element| element.click().await)
            .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let field = self.wait_for(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// The path (and query) of the page shown.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// The whole text of the page.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// Waits until the page's text contains `words`.
    pub async fn wait_for_text(&self, words: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let text = self.page_text().await;
            if text.contains(words) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{words:?} never showed on {}: {text}",
                self.path().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Signs in through the form as `user` with `token`.
    pub async fn sign_in(&self, base: &str, user: &str, token: &str) {
        self.goto(&format!("{base}/console/sign-in")).await;
        self.type_into("#user", user).await;
        self.type_into("#token", token).await;
        self.click("form button[type=submit]").await;
    }

    /// Saves a PNG of the window as `target/console-screenshots/<name>.png` (written whole,
    /// then renamed, so tests running at once never leave half a file).
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let partial = dir.join(format!(".{name}.{}.png", uuid::Uuid::new_v4()));
        std::fs::write(&partial, png).unwrap();
        std::fs::rename(partial, dir.join(format!("{name}.png"))).unwrap();
    }

    pub async fn close(self) {
        self.client.clone().close().await.unwrap();
    }
}

impl Drop for Browser {
    /// Ends chromedriver's own process group (it leads it: `process_group(0)`), Chromium
    /// included, with a direct `kill(-pgid)`: never through a command line, and never for a
    /// group id of 0 or 1 (which would signal this group, or every process).
    fn drop(&mut self) {
        let group = self
            .driver
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .filter(|&id| id > 1)
            .and_then(rustix::process::Pid::from_raw);
        if let Some(group) = group {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

/// A callback URL on this machine where nothing listens (the browser never sees another host).
fn unused_url(path: &str) -> String {
    format!("http://127.0.0.1:9/{path}")
}

/// The whole tour: sign in, find a callback, open a failed delivery, re-send it and see it turn
/// SUCCESS, recover the rest and watch the progress reach 100 %, sign out and be refused.
async fn an_operator_finds_resends_recovers_and_signs_out(backend: Backend) {
    let db = TestDb::new(backend).await;
    let failed = 6;
    let server = start_delivering(
        &db,
        &[
            ("DELIVERY_RETRY_SCHEDULE", "none"),
            ("RECOVER_BATCH_SIZE", "2"),
        ],
    )
    .await;
    let receiver = Receiver::start().await;
    receiver.script("/hook", vec![Answer::Status(500); failed]);
    let token = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    server
        .register(
            "demo",
            "alice",
            "BUILD_END",
            &receiver.url("/hook"),
            Some(token),
        )
        .await;
    for build in 0..failed {
        let body = format!(r#"{{"event":"BUILD_END","data":{{"buildId":"b-{build}"}}}}"#);
        let (status, answer) = server.publish("demo", &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    server.wait_for_history("demo", "alice", failed).await;
    let base = server.url("");
    let browser = Browser::start().await;

    browser.sign_in(&base, "ops", SERVICE_TOKEN).await;
    assert_eq!(browser.text("#attempts-failed").await, failed.to_string());

    // Find the callback by part of its URL, from the keyboard.
    browser.click("a[href='/console/projects']").await;
    browser
        .type_into("#q", &format!("/HOOK{}", fantoccini::key::Key::Enter))
        .await;
    browser.click("#callbacks tbody a").await;
    assert_eq!(browser.text("#callback-url").await, receiver.url("/hook"));
    let states = browser
        .client
        .find_all(Locator::Css("#deliveries .state"))
        .await
        .unwrap();
    assert_eq!(states.len(), failed);
    for state in &states {
        assert_eq!(state.text().await.unwrap(), "FAILED");
    }

    // The newest failed delivery: its attempt, the token and signature masked; re-send it.
    browser.click("#deliveries tbody a").await;
    assert_eq!(browser.text("#delivery-state .state").await, "FAILED");
    let page = browser.page_text().await;
    assert!(page.contains("answered 500"), "{page}");
    assert!(page.contains("X-DEVOPS-WEBHOOK-TOKEN ******"), "{page}");
    assert!(!page.contains(token));
    browser.click("#resend").await;
    browser
        .wait_for_text("Delivered: the receiver accepted the re-send.")
        .await;
    assert_eq!(browser.text("#delivery-state .state").await, "SUCCESS");
    assert!(browser.page_text().await.contains("manual re-send"));
    browser.screenshot("delivery").await;
    assert_eq!(receiver.count(), failed + 1);

    // Recover the rest since yesterday (the form's default) and follow the job to the end.
    browser.click("#to-callback").await;
    browser.click("#recover button").await;
    browser.wait_for_text("deliveries to re-queue.").await;
    browser.wait_for("#recovery-progress").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = browser.text("#recovery-text").await;
        if text.starts_with("100 %") && text.ends_with("DONE") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the recovery stopped at {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let value = browser
        .client
        .execute(
            "return document.getElementById('recovery-progress').value",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(value, json!(100));
    receiver.wait_for(2 * failed, WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // A reload (the URL ends in #recovery: going to it again would only scroll).
        browser.client.refresh().await.unwrap();
        let mut states = Vec::new();
        for state in browser
            .client
            .find_all(Locator::Css("#deliveries .state"))
            .await
            .unwrap()
        {
            states.push(state.text().await.unwrap());
        }
        if states.len() == failed && states.iter().all(|s| s == "SUCCESS") {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let (_, history) = server.history("demo", "alice", "pageSize=100").await;
            panic!("deliveries stand {states:?}; history {history}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The overview now counts the failures and the deliveries that followed.
    browser.click("a.brand").await;
    assert_eq!(
        browser.text("#attempts-succeeded").await,
        failed.to_string()
    );
    browser.screenshot("overview").await;

    // Signed out, the console is closed to this browser.
    browser.click("form.signout button").await;
    browser.wait_for("#token").await;
    browser.goto(&format!("{base}/console/projects/demo")).await;
    browser.wait_for("#token").await;
    assert_eq!(browser.path().await, "/console/sign-in");
    browser.close().await;
}

async fn a_wrong_token_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[]).await;
    let browser = Browser::start().await;
    let base = server.url("");
    browser.sign_in(&base, "ops", "not-the-token").await;
    let problem = browser.text("#sign-in-problem").await;
    assert_eq!(problem, "That is not the service token (SERVICE_TOKEN).");
    assert_eq!(browser.path().await, "/console/sign-in");
    let cookies = browser.client.get_all_cookies().await.unwrap();
    assert!(cookies.is_empty(), "{cookies:?}");
    // Still outside: the console sends back to the form.
    browser.goto(&format!("{base}/console/projects")).await;
    browser.wait_for("#token").await;
    assert_eq!(browser.path().await, "/console/sign-in");
    browser.close().await;
}

async fn a_form_without_the_csrf_token_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[]).await;
    server
        .register("demo", "alice", "BUILD_END", &unused_url("hook"), None)
        .await;
    let browser = Browser::start().await;
    let base = server.url("");
    browser.sign_in(&base, "ops", SERVICE_TOKEN).await;
    browser.wait_for("#queue-due").await;
    browser.goto(&format!("{base}/console/projects/demo")).await;
    // The page's own form, with its CSRF field taken out, posted by the browser with the cookie.
    browser
        .client
        .execute(
            "document.querySelector('#callbacks form input[name=csrf]').remove()",
            vec![],
        )
        .await
        .unwrap();
    browser.click("#callbacks form button").await;
    assert_eq!(browser.text("h1").await, "Form refused");
    assert!(browser.page_text().await.contains("CSRF token"));
    let (status, list) = server.list("demo", "alice", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"]["records"][0]["enable"], true, "{list}");
    // The same form, whole, does it.
    browser.goto(&format!("{base}/console/projects/demo")).await;
    browser.click("#callbacks form button").await;
    browser.wait_for_text("disabled.").await;
    let (_, list) = server.list("demo", "alice", "").await;
    assert_eq!(list["data"]["records"][0]["enable"], false, "{list}");
    browser.close().await;
}

/// Whether the page is no wider than the window (nothing to scroll sideways but inside tables).
async fn fits(browser: &Browser) -> bool {
    let fits = browser
        .client
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    fits.as_bool().unwrap()
}

async fn pages_fit_a_phone_and_work_from_the_keyboard(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = start_delivering(&db, &[]).await;
    let long = format!("{}?{}", unused_url("a-rather-long/path"), "x=1&".repeat(40));
    server
        .register("demo", "alice", "BUILD_END", &long, None)
        .await;
    server
        .register("demo", "alice", "BUILD_START", &unused_url("short"), None)
        .await;
    let browser = Browser::start().await;
    browser.client.set_window_size(390, 844).await.unwrap();
    let base = server.url("");
    browser.sign_in(&base, "ops", SERVICE_TOKEN).await;
    browser.wait_for("#queue-due").await;
    assert!(fits(&browser).await, "the overview is wider than a phone");
    // The search field, then Enter: the form is submitted from the keyboard.
    browser.goto(&format!("{base}/console/projects")).await;
    browser
        .type_into("#q", &format!("short{}", fantoccini::key::Key::Enter))
        .await;
    browser.wait_for("#callbacks").await;
    assert_eq!(browser.path().await, "/console/projects?q=short");
    let rows = browser
        .client
        .find_all(Locator::Css("#callbacks tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(
        fits(&browser).await,
        "search results are wider than a phone"
    );
    browser.goto(&format!("{base}/console/projects/demo")).await;
    browser.wait_for("#callbacks").await;
    assert!(fits(&browser).await, "a long URL widens the page");
    // Tab reaches the skip link first, then the navigation.
    let active = "return document.activeElement.textContent";
    browser
        .client
        .execute("document.activeElement.blur()", vec![])
        .await
        .unwrap();
    browser
        .wait_for("body")
        .await
        .send_keys(&fantoccini::key::Key::Tab.to_string())
        .await
        .unwrap();
    let first = browser.client.execute(active, vec![]).await.unwrap();
    assert_eq!(first, "Skip to the content");
    browser.screenshot("phone-callbacks").await;
    browser.close().await;
}
