//! Liveness (`/healthz`, no database) and readiness (`/readyz`, one database round trip).

use axum::extract::State;
use serde::Serialize;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{AppError, Result};
use crate::http::envelope::{Envelope, ErrorEnvelope};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
    version: &'static str,
}

const UP: Health = Health {
    status: "UP",
    version: env!("CARGO_PKG_VERSION"),
};

/// Liveness: answers without touching the database.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    responses((status = 200, description = "Success envelope", body = Envelope<Health>), (status = "default", description = "Error envelope", body = ErrorEnvelope))
)]
async fn healthz() -> Envelope<Health> {
    Envelope::ok(UP)
}

/// Readiness: one database round trip; 503 when it fails.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    responses((status = 200, description = "Success envelope", body = Envelope<Health>), (status = "default", description = "Error envelope", body = ErrorEnvelope))
)]
async fn readyz(State(state): State<AppState>) -> Result<Envelope<Health>> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        AppError::Unavailable("database unavailable".to_owned())
    })?;
    Ok(Envelope::ok(UP))
}
