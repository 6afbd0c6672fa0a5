//! The console in a real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them). Each test starts its own chromedriver on a free
//! port and one browser session. Screenshots go to `target/console-screenshots/`.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Backend, SERVICE_TOKEN, TestDb, backend_tests, public_url, start_delivering};

backend_tests!(
    a_wrong_token_is_refused,
    a_form_without_the_csrf_token_is_refused,
    pages_fit_a_phone_and_work_from_the_keyboard,
);

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
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
                // As root in a container: no sandbox, no GPU, no /dev/shm.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
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
        self.wait_for(css).await.text().await.unwrap()
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
        self.wait_for(css).await.click().await.unwrap();
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
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &format!("-{pid}")])
                .status();
        }
    }
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
        .register("demo", "alice", "BUILD_END", &public_url("hook"), None)
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
    let long = format!("{}?{}", public_url("a-rather-long/path"), "x=1&".repeat(40));
    server
        .register("demo", "alice", "BUILD_END", &long, None)
        .await;
    server
        .register("demo", "alice", "BUILD_START", &public_url("short"), None)
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
