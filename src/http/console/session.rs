//! Sign-in with the service token, sessions, and the CSRF check of every console form.
//!
//! A session is a random id in an HttpOnly, SameSite=Strict cookie scoped to `/console`, kept in
//! this process's memory (bounded, expiring); each session has its own random CSRF token, which
//! every form carries in a hidden field and every POST must return. SameSite=Strict already keeps
//! the cookie off requests that other sites start; the token also refuses a form posted from
//! anywhere that has not read one of our pages.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use parking_lot::Mutex;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::layout::{self, Notice};
use super::{Console, ROOT};
use crate::domain::UserId;
use crate::error::AppError;

/// The session cookie's name.
pub(super) const COOKIE: &str = "dc_console";
/// A session ends this long after sign-in, whatever happens.
const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// … or after this long without a request.
const IDLE: Duration = Duration::from_secs(3600);
/// Most sessions kept at once; beyond it the least used ones end.
const MAX_SESSIONS: u64 = 10_000;
/// Where the sign-in form is.
pub(super) const SIGN_IN: &str = "/console/sign-in";

/// The sessions of this process.
pub(super) struct Sessions {
    live: moka::future::Cache<String, Arc<Session>>,
}

/// A signed-in operator's session.
pub(super) struct Session {
    /// Who signed in: recorded with their changes (the reason of a disable, a recovery's creator).
    pub user: UserId,
    /// Every form of the session carries it; a POST without it is refused.
    pub csrf: String,
    /// What the last action did, shown once by the next page.
    notice: Mutex<Option<Notice>>,
}

impl Session {
    /// Keeps `notice` for the next page.
    pub(super) fn tell(&self, notice: Notice) {
        *self.notice.lock() = Some(notice);
    }

    pub(super) fn take_notice(&self) -> Option<Notice> {
        self.notice.lock().take()
    }
}

impl Sessions {
    pub(super) fn new() -> Self {
        Self {
            live: moka::future::Cache::builder()
                .max_capacity(MAX_SESSIONS)
                .time_to_live(LIFETIME)
                .time_to_idle(IDLE)
                .build(),
        }
    }

    async fn start(&self, user: UserId) -> String {
        let id = random_token();
        let session = Session {
            user,
            csrf: random_token(),
            notice: Mutex::new(None),
        };
        self.live.insert(id.clone(), Arc::new(session)).await;
        id
    }

    async fn find(&self, id: &str) -> Option<Arc<Session>> {
        self.live.get(id).await
    }

    async fn end(&self, id: &str) {
        self.live.invalidate(id).await;
    }
}

/// 256 random bits, URL-safe.
fn random_token() -> String {
    BASE64URL.encode(rand::random::<[u8; 32]>())
}

/// The session id the request's cookie names, if any.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(name, value)| (name == COOKIE).then_some(value))
}

/// A signed-in operator. Pages take it: without a live session they redirect to the sign-in form.
pub(super) struct Operator {
    pub session: Arc<Session>,
    /// The page asked for (path and query), where a form on it sends the operator back.
    pub here: String,
    id: String,
}

impl Operator {
    async fn from_parts(parts: &Parts, console: &Console) -> Option<Self> {
        let id = session_id(&parts.headers)?;
        let session = console.sessions.find(id).await?;
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map_or(&parts.uri, |OriginalUri(uri)| uri);
        Some(Self {
            session,
            here: uri.path_and_query().map_or(ROOT, |p| p.as_str()).to_owned(),
            id: id.to_owned(),
        })
    }
}

impl FromRequestParts<Console> for Operator {
    type Rejection = Redirect;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Redirect> {
        Self::from_parts(parts, console)
            .await
            .ok_or_else(|| Redirect::to(SIGN_IN))
    }
}

/// A signed-in operator reading JSON (the progress of a recovery): without a session, 401.
pub(super) struct Reader;

impl FromRequestParts<Console> for Reader {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, AppError> {
        Operator::from_parts(parts, console)
            .await
            .map(|_| Self)
            .ok_or_else(|| AppError::Unauthorized("sign in to the console first".to_owned()))
    }
}

/// A console form posted by a signed-in operator, with the session's CSRF token: without a
/// session, 401; without the token (or with another), 403; a form that does not parse, 400.
pub(super) struct Posted<T> {
    pub operator: Operator,
    pub form: T,
    /// The console page to go back to afterwards (the form's `back`, when it is one).
    pub back: String,
}

/// A form with no fields beyond the CSRF token and the way back.
#[derive(Deserialize)]
pub(super) struct NoFields {}

/// The fields every console form carries.
#[derive(Deserialize)]
struct Guard {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    back: String,
}

impl<T: DeserializeOwned + Send> FromRequest<Console> for Posted<T> {
    type Rejection = Response;

    async fn from_request(request: Request, console: &Console) -> Result<Self, Response> {
        let (parts, body) = request.into_parts();
        let Some(operator) = Operator::from_parts(&parts, console).await else {
            return Err(layout::refusal(
                StatusCode::UNAUTHORIZED,
                "Signed out",
                "Your console session has ended or was never started. Sign in again.",
            ));
        };
        let bytes = Bytes::from_request(Request::from_parts(parts, body), console)
            .await
            .map_err(IntoResponse::into_response)?;
        let guard: Guard = parse_form(&bytes).map_err(IntoResponse::into_response)?;
        let expected = operator.session.csrf.as_bytes();
        if !bool::from(guard.csrf.as_bytes().ct_eq(expected)) {
            return Err(layout::refusal(
                StatusCode::FORBIDDEN,
                "Form refused",
                "This form did not come from your console session (its CSRF token is missing \
                 or wrong). Reload the page and try again.",
            ));
        }
        Ok(Self {
            form: parse_form(&bytes).map_err(IntoResponse::into_response)?,
            back: console_path(&guard.back).unwrap_or(ROOT).to_owned(),
            operator,
        })
    }
}

/// An `application/x-www-form-urlencoded` body that is not what `T` takes; a 400 page naming
/// the problem.
struct BadForm(serde_urlencoded::de::Error);

impl IntoResponse for BadForm {
    fn into_response(self) -> Response {
        layout::refusal(
            StatusCode::BAD_REQUEST,
            "Form not understood",
            &format!(
                "The form's fields are not what this action takes: {}.",
                self.0
            ),
        )
    }
}

fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BadForm> {
    serde_urlencoded::from_bytes(bytes).map_err(BadForm)
}

/// `path` when it is a page of the console (so a form's `back` cannot send anyone elsewhere).
fn console_path(path: &str) -> Option<&str> {
    let inside = path == ROOT || path.starts_with("/console/") || path.starts_with("/console?");
    let plain = !path.contains("//") && !path.contains('\\') && !path.chars().any(char::is_control);
    (inside && plain).then_some(path)
}

/// The sign-in form.
pub(super) async fn form(State(console): State<Console>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers)
        && console.sessions.find(id).await.is_some()
    {
        return Redirect::to(ROOT).into_response();
    }
    sign_in_page(&console, StatusCode::OK, None)
}

fn sign_in_page(console: &Console, status: StatusCode, problem: Option<&str>) -> Response {
    let enabled = console.app.config.service_token.is_some();
    let status = if enabled {
        status
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, layout::sign_in(enabled, problem)).into_response()
}

#[derive(Deserialize)]
pub(super) struct Credentials {
    #[serde(default)]
    user: String,
    #[serde(default)]
    token: String,
}

/// Checks the service token and starts a session.
pub(super) async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let credentials: Credentials = match parse_form(&body) {
        Ok(credentials) => credentials,
        Err(refused) => return refused.into_response(),
    };
    let Some(expected) = &console.app.config.service_token else {
        return sign_in_page(&console, StatusCode::SERVICE_UNAVAILABLE, None);
    };
    if !bool::from(
        credentials
            .token
            .as_bytes()
            .ct_eq(expected.expose().as_bytes()),
    ) {
        tracing::warn!("console sign-in refused: wrong service token");
        let problem = "That is not the service token (SERVICE_TOKEN).";
        return sign_in_page(&console, StatusCode::UNAUTHORIZED, Some(problem));
    }
    let user = match credentials.user.trim().parse::<UserId>() {
        Ok(user) => user,
        Err(e) => {
            let problem = format!("Your name {e}.");
            return sign_in_page(&console, StatusCode::BAD_REQUEST, Some(&problem));
        }
    };
    tracing::info!(%user, "console sign-in");
    let id = console.sessions.start(user).await;
    let cookie = format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        if behind_https(&headers) {
            "; Secure"
        } else {
            ""
        }
    );
    see_other_with_cookie(ROOT, &cookie)
}

/// Whether the client reached us over HTTPS through a proxy that says so. Trusting the header
/// can only add `Secure` to the cookie, which a plain-HTTP client would then not send back.
fn behind_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// Ends the session and clears its cookie.
pub(super) async fn sign_out(State(console): State<Console>, posted: Posted<NoFields>) -> Response {
    console.sessions.end(&posted.operator.id).await;
    tracing::info!(user = %posted.operator.session.user, "console sign-out");
    let cookie = format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0");
    see_other_with_cookie(&format!("{SIGN_IN}?signed-out"), &cookie)
}

fn see_other_with_cookie(to: &str, cookie: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_id_is_read_from_its_own_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("other=1; dc_console=abc; x=dc_console=zzz"),
        );
        assert_eq!(session_id(&headers), Some("abc"));
        assert_eq!(session_id(&HeaderMap::new()), None);
    }

    #[test]
    fn forms_only_send_back_to_console_pages() {
        for ok in ["/console", "/console/projects?q=a", "/console?x"] {
            assert_eq!(console_path(ok), Some(ok));
        }
        for refused in [
            "https://evil.example/",
            "//evil.example/console/",
            "/console//evil",
            "/consoles",
            "/console/\\evil",
            "/metrics",
            "",
        ] {
            assert_eq!(console_path(refused), None, "{refused}");
        }
    }

    #[test]
    fn tokens_are_random_and_url_safe() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }
}
