//! The operators' console at `/console`: server-rendered pages (maud, compiled into the binary)
//! with a little JavaScript, for operators signed in with the service token.
//!
//! - `session`: sign-in, sessions, and the CSRF check every form passes;
//! - `layout`: the page frame and shared pieces;
//! - `overview`: queue depth, recent outcomes, disabled callbacks, the bus bridge;
//! - `projects`: projects, their callbacks, search, enable / disable / delete;
//! - `deliveries`: one callback's deliveries, one delivery's attempts, re-send and recovery.
//!
//! Every action calls the same function as the API route that does it, so the console is no
//! second way to the store; what it only reads comes from `ConsoleStore`.

mod deliveries;
mod layout;
mod overview;
mod projects;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::AppState;
use crate::domain::{PageRequest, ProjectId};
use crate::error::AppError;
use crate::http::error::public_parts;
use crate::http::paging::{PageNumber, PageParams};
use session::Sessions;

/// The console's root: the overview.
const ROOT: &str = "/console";
const STYLESHEET: &str = "/console/assets/console.css";
const SCRIPT: &str = "/console/assets/console.js";

/// The console's state: the service's, and the sessions of this process.
#[derive(Clone)]
pub(super) struct Console {
    app: AppState,
    sessions: Arc<Sessions>,
}

impl FromRef<Console> for AppState {
    fn from_ref(console: &Console) -> Self {
        console.app.clone()
    }
}

pub(super) fn router(app: AppState) -> Router {
    let console = Console {
        app,
        sessions: Arc::new(Sessions::new()),
    };
    let project = "/console/projects/{project}";
    Router::new()
        .route(ROOT, get(overview::show))
        .route(session::SIGN_IN, get(session::form).post(session::sign_in))
        .route("/console/sign-out", post(session::sign_out))
        .route(STYLESHEET, get(stylesheet))
        .route(SCRIPT, get(script))
        .route("/console/projects", get(projects::list))
        .route(project, get(projects::callbacks))
        .route(
            &format!("{project}/callbacks/{{id}}/{{change}}"),
            post(projects::change),
        )
        .merge(deliveries::router(project))
        .route("/console/{*rest}", get(not_found))
        .layer(axum::middleware::map_response(protected))
        .with_state(console)
}

/// What no console answer may be: cached, framed, sniffed, or given scripts and styles of
/// other origins (the pages have no inline script or style at all).
async fn protected(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("console.css"))
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("console.js"))
}

/// A static file of the console, public (the sign-in form needs the stylesheet).
fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn not_found() -> Response {
    layout::refusal(
        StatusCode::NOT_FOUND,
        "Not found",
        "The console has no such page.",
    )
}

/// A page that could not be made: the error's status and the text a client may read.
pub(super) struct PageError(AppError);

impl<E: Into<AppError>> From<E> for PageError {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = public_parts(&self.0);
        let title = status.canonical_reason().unwrap_or("Error");
        self.0.noted(layout::refusal(status, title, &message))
    }
}

type PageResult<T = Response> = Result<T, PageError>;

/// `{project}` of a console path: a project, or `DEVOPS_ALL_PROJECT` for the global callbacks.
fn project_of(raw: &str) -> Result<ProjectId, AppError> {
    ProjectId::from_stored(raw)
        .map_err(|e| AppError::BadRequest(format!("the project in the path {e}")))
}

/// How a project is named on a page.
fn scope_name(project: &ProjectId) -> String {
    if *project == ProjectId::global() {
        "Global callbacks".to_owned()
    } else {
        format!("Project {project}")
    }
}

/// The query of a console list: what to search for, and which page.
#[derive(Deserialize, Default)]
pub(super) struct Listing {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    page: Option<PageNumber>,
}

impl Listing {
    fn text(&self) -> Option<String> {
        self.q
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_owned)
    }

    fn page(&self) -> PageRequest {
        PageParams {
            page: self.page,
            page_size: None,
        }
        .request()
    }

    /// The query string of page `page` of the same list.
    fn link(&self, path: &str, page: u32) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(text) = self.text() {
            query.append_pair("q", &text);
        }
        query.append_pair("page", &page.to_string());
        format!("{path}?{}", query.finish())
    }
}
