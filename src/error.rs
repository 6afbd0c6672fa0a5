//! The one error type of the service. Its `IntoResponse` is the only place an error becomes HTTP.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::domain::{CallbackId, InvalidUrl, ProjectId, UserId};
use crate::http::envelope::ErrorEnvelope;
use crate::store::fault::Fault;

pub type Result<T, E = AppError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A missing or malformed query, path or header parameter; the message names it.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    /// Gateway trust is on and `X-Bkapi-JWT` is missing, invalid or lacks the identity needed.
    #[error("{0}")]
    GatewayToken(String),
    #[error("user {user} is not an administrator of project {project}")]
    NotProjectAdmin { user: UserId, project: ProjectId },
    #[error("user {user} does not have permission to access project {project}")]
    NotProjectMember { user: UserId, project: ProjectId },
    #[error(transparent)]
    InvalidCallbackUrl(#[from] InvalidUrl),
    #[error("the callback url {url} points to an address that is not allowed: {reason}")]
    BlockedAddress { url: String, reason: String },
    #[error("callback record ({0}) does not exist")]
    CallbackNotFound(CallbackId),
    #[error("callback history ({0}) does not exist")]
    HistoryNotFound(i64),
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("the request target (path and query) is longer than {max} bytes")]
    UriTooLong { max: usize },
    #[error("the request headers are larger than {max} bytes")]
    HeadersTooLarge { max: usize },
    /// The request is valid but this deployment does not do it (e.g. local members under bk-ci).
    #[error("{0}")]
    Conflict(String),
    /// The service cannot answer now (database down, a required setting missing, a timeout).
    #[error("{0}")]
    Unavailable(String),
    /// The bk-ci auth service could not give a decision; the detail is logged, not sent.
    #[error("the permission check failed: the bk-ci auth service {0}")]
    AuthServiceUnavailable(String),
    /// Some events of an intake batch were refused by the database and the rest were stored;
    /// `answers` holds, in input order, each event's answer or why it was refused.
    #[error("{} of {} events were refused and not stored ({}); the others were stored and will be delivered (see data)",
        refused.len(), answers.len(), refused.join("; "))]
    EventsRefused {
        refused: Vec<String>,
        answers: Vec<serde_json::Value>,
    },
    /// What it means for the answer is the store's fault model (`store::fault`).
    #[error("database error")]
    Database(Arc<sqlx::Error>),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Attached to 5xx responses so the logging middleware can report the cause; never sent.
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub String);

impl AppError {
    fn http_status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_)
            | Self::InvalidCallbackUrl(_)
            | Self::BlockedAddress { .. }
            | Self::EventsRefused { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) | Self::GatewayToken(_) => StatusCode::UNAUTHORIZED,
            Self::NotProjectAdmin { .. } | Self::NotProjectMember { .. } => StatusCode::FORBIDDEN,
            Self::CallbackNotFound(_) | Self::HistoryNotFound(_) | Self::RouteNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) | Self::AuthServiceUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Database(e) => match Fault::of(e) {
                fault if fault.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
                Fault::BadValue => StatusCode::BAD_REQUEST,
                Fault::Constraint => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The envelope's `status`: bk-ci's error code where it has one, else the HTTP status.
    fn code(&self) -> i32 {
        match self {
            Self::NotProjectAdmin { .. } => 2101104,
            Self::NotProjectMember { .. } => 2101133,
            Self::InvalidCallbackUrl(InvalidUrl::Malformed(_)) => 2101132,
            Self::InvalidCallbackUrl(InvalidUrl::BlockedPort(_)) => 2101286,
            Self::BlockedAddress { .. } => 2101366,
            Self::CallbackNotFound(_) => 2101136,
            Self::HistoryNotFound(_) => 2101134,
            Self::GatewayToken(_) => 2112005,
            _ => i32::from(self.http_status().as_u16()),
        }
    }

    /// What the client may read: server-side failures get a generic text.
    fn public_message(&self) -> String {
        match self.http_status() {
            StatusCode::SERVICE_UNAVAILABLE if matches!(self, Self::Database(_)) => {
                "database unavailable, try again later".to_owned()
            }
            // The database's own words name the problem (they carry no secret).
            StatusCode::BAD_REQUEST | StatusCode::CONFLICT if let Self::Database(e) = self => {
                format!("the database refused the request: {}", database_message(e))
            }
            StatusCode::SERVICE_UNAVAILABLE if matches!(self, Self::AuthServiceUnavailable(_)) => {
                "the permission check failed: the bk-ci auth service is unavailable, try again later"
                    .to_owned()
            }
            StatusCode::INTERNAL_SERVER_ERROR => {
                "internal server error; see the server log for this request id".to_owned()
            }
            _ => self.to_string(),
        }
    }
}

/// The database's own words for a failure (they name the problem, not a secret).
pub fn database_message(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        AppError::Database(Arc::new(error))
    }
}

/// A database error shared by every request of a coalesced write.
impl From<Arc<sqlx::Error>> for AppError {
    fn from(error: Arc<sqlx::Error>) -> Self {
        AppError::Database(error)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let mut response = (
            status,
            ErrorEnvelope {
                status: self.code(),
                message: self.public_message(),
                data: match &self {
                    Self::EventsRefused { answers, .. } => Some(answers.clone().into()),
                    _ => None,
                },
            },
        )
            .into_response();
        match &self {
            // An outage is logged by the store when it starts and when it ends, not per request.
            Self::Database(_) if status == StatusCode::SERVICE_UNAVAILABLE => {}
            Self::Database(e) if !status.is_server_error() => {
                tracing::warn!(error = %e, "the database refused the request");
            }
            _ if status.is_server_error() => {
                let detail = match &self {
                    Self::Database(e) => format!("database error: {e}"),
                    other => other.to_string(),
                };
                response.extensions_mut().insert(ErrorDetail(detail));
            }
            _ => {}
        }
        response
    }
}
