//! The `{"status","message","data"}` envelope every response carries.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// bk-ci's `Result<T>`: `status == 0` is success, null fields are left out.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Envelope<T> {
    pub status: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

impl<T> Envelope<T> {
    pub fn ok(data: T) -> Self {
        Self {
            status: 0,
            message: None,
            data: Some(data),
        }
    }

    /// Success whose `data` needs a word of explanation (e.g. a re-send that got no 2xx).
    pub fn ok_with_message(data: T, message: String) -> Self {
        Self {
            status: 0,
            message: Some(message),
            data: Some(data),
        }
    }
}

/// Every failure: `status` is the HTTP status or bk-ci's error code, `message` says what was wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    /// Non-zero: 400, 401, 403, 404, 405, 413, 500, 503, or a bk-ci code such as 2101104.
    pub status: i32,
    pub message: String,
    /// Only where part of a request took effect: what did (e.g. a batch's per-event answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// The error answer of every route, for `#[utoipa::path(responses(…))]` after its success.
#[derive(utoipa::IntoResponses)]
#[response(status = "default", description = "Error envelope")]
#[allow(dead_code)]
pub struct ErrorResponse(ErrorEnvelope);

impl IntoResponse for ErrorEnvelope {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}

impl<T: Serialize> IntoResponse for Envelope<T> {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}
