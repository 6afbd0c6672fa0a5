//! Liveness (`/healthz`, no database) and readiness (`/readyz`, the database takes writes).

use axum::extract::State;
use serde::Serialize;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{AppError, Result};
use crate::http::envelope::{Envelope, ErrorResponse};
use crate::store::warn_unless_unavailable;

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
    responses((status = 200, description = "Success envelope", body = Envelope<Health>), ErrorResponse)
)]
async fn healthz() -> Envelope<Health> {
    Envelope::ok(UP)
}

/// Readiness: the database answers and takes writes; 503 when it does not.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    responses((status = 200, description = "Success envelope", body = Envelope<Health>), ErrorResponse)
)]
async fn readyz(State(state): State<AppState>) -> Result<Envelope<Health>> {
    state.store.ready().await.map_err(|e| {
        // An outage is logged by the store when it starts and ends, not on every probe.
        warn_unless_unavailable(&e, "readiness check failed");
        AppError::Unavailable("database unavailable".to_owned())
    })?;
    Ok(Envelope::ok(UP))
}
