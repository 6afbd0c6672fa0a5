//! The one error type of the service's requests. It knows nothing of HTTP: `http::error` turns it
//! into a status, a code and the envelope, in one place.

use crate::domain::{CallbackId, InvalidUrl, ProjectId, UserId};
use crate::store::StoreError;

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
    #[error("recovery job ({0}) does not exist")]
    RecoverJobNotFound(i64),
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
    /// What it means for the answer is `StoreError`'s to say (unavailable, refused, a bug).
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}
