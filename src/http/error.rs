//! Where an `AppError` becomes HTTP: its status, the envelope's code, and what the client may
//! read. The only `IntoResponse` for errors.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::delivery::intake::{EventAnswer, IntakeError, InvalidEvent};
use crate::delivery::ssrf::RefusedUrl;
use crate::domain::InvalidUrl;
use crate::error::AppError;
use crate::http::envelope::ErrorEnvelope;
use crate::http::events::PublishedEvent;
use crate::store::StoreError;

/// Attached to 5xx responses so the logging middleware can report the cause; never sent.
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub String);

fn http_status(error: &AppError) -> StatusCode {
    use AppError::*;
    match error {
        BadRequest(_) | InvalidCallbackUrl(_) | BlockedAddress { .. } | EventsRefused { .. } => {
            StatusCode::BAD_REQUEST
        }
        Unauthorized(_) | GatewayToken(_) => StatusCode::UNAUTHORIZED,
        NotProjectAdmin { .. } | NotProjectMember { .. } => StatusCode::FORBIDDEN,
        CallbackNotFound(_) | HistoryNotFound(_) | RecoverJobNotFound(_) | RouteNotFound(_) => {
            StatusCode::NOT_FOUND
        }
        MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        UriTooLong { .. } => StatusCode::URI_TOO_LONG,
        HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        Conflict(_) => StatusCode::CONFLICT,
        Unavailable(_) | AuthServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Store(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
        Store(StoreError::BadValue(_)) => StatusCode::BAD_REQUEST,
        Store(StoreError::Constraint(_)) => StatusCode::CONFLICT,
        Store(_) | Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The envelope's `status`: bk-ci's error code where it has one, else the HTTP status.
fn code(error: &AppError) -> i32 {
    use AppError::*;
    match error {
        NotProjectAdmin { .. } => 2101104,
        NotProjectMember { .. } => 2101133,
        InvalidCallbackUrl(InvalidUrl::Malformed(_)) => 2101132,
        InvalidCallbackUrl(InvalidUrl::BlockedPort(_)) => 2101286,
        BlockedAddress { .. } => 2101366,
        CallbackNotFound(_) => 2101136,
        HistoryNotFound(_) => 2101134,
        GatewayToken(_) => 2112005,
        _ => i32::from(http_status(error).as_u16()),
    }
}

/// What the client may read: server-side failures get a generic text.
fn public_message(error: &AppError, status: StatusCode) -> String {
    match error {
        AppError::Store(e) if e.is_unavailable() => {
            "database unavailable, try again later".to_owned()
        }
        // The database's own words name the problem (they carry no secret).
        AppError::Store(e) if status.is_client_error() => {
            format!("the database refused the request: {}", e.reason())
        }
        AppError::AuthServiceUnavailable(_) => {
            "the permission check failed: the bk-ci auth service is unavailable, try again later"
                .to_owned()
        }
        _ if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE => {
            "internal server error; see the server log for this request id".to_owned()
        }
        _ => error.to_string(),
    }
}

/// The HTTP status of `error` and the text a client may read, for answers that are not the
/// envelope (the console's pages); pass the answer through [`AppError::noted`].
pub(super) fn public_parts(error: &AppError) -> (StatusCode, String) {
    let status = http_status(error);
    (status, public_message(error, status))
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = http_status(&self);
        let envelope = ErrorEnvelope {
            status: code(&self),
            message: public_message(&self, status),
            data: match &self {
                AppError::EventsRefused { answers, .. } => Some(answers.clone().into()),
                _ => None,
            },
        };
        self.noted((status, envelope).into_response())
    }
}

impl AppError {
    /// `response`, the answer to this error, with its cause logged as every error's is: a
    /// server error's detail goes with the response to the logging middleware, a refused write
    /// is logged now, an outage not at all (the store logs it once).
    pub(super) fn noted(&self, mut response: Response) -> Response {
        let status = response.status();
        match self {
            // An outage is logged by the store when it starts and when it ends, not per request.
            AppError::Store(e) if e.is_unavailable() => {}
            AppError::Store(e) if !status.is_server_error() => {
                tracing::warn!(error = %e, "the database refused the request");
            }
            _ if status.is_server_error() => {
                response
                    .extensions_mut()
                    .insert(ErrorDetail(self.to_string()));
            }
            _ => {}
        }
        response
    }
}

impl From<RefusedUrl> for AppError {
    fn from(refused: RefusedUrl) -> Self {
        match refused {
            RefusedUrl::Invalid(invalid) => AppError::InvalidCallbackUrl(invalid),
            RefusedUrl::Blocked { url, reason } => AppError::BlockedAddress {
                url,
                reason: reason.to_string(),
            },
        }
    }
}

impl From<InvalidEvent> for AppError {
    fn from(invalid: InvalidEvent) -> Self {
        AppError::BadRequest(invalid.to_string())
    }
}

impl From<IntakeError> for AppError {
    fn from(error: IntakeError) -> Self {
        match error {
            IntakeError::Store(e) => AppError::Store(e),
            IntakeError::Refused { refused, answers } => AppError::EventsRefused {
                refused,
                answers: answers
                    .into_iter()
                    .map(|answer| match answer {
                        EventAnswer::Stored(published) => {
                            serde_json::to_value(PublishedEvent::from(published))
                                .expect("an answer serializes")
                        }
                        EventAnswer::Refused { event_id, reason } => {
                            serde_json::json!({ "eventId": event_id, "error": reason })
                        }
                    })
                    .collect(),
            },
            IntakeError::TaskFailed(e) => AppError::Internal(format!("intake task failed: {e}")),
        }
    }
}
