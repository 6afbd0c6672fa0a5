//! Liveness (`/healthz`, no database) and readiness (`/readyz`, one database round trip).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;

use crate::AppState;
use crate::error::{AppError, Result};
use crate::http::envelope::Envelope;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
}

const UP: Health = Health {
    status: "UP",
    version: env!("CARGO_PKG_VERSION"),
};

async fn healthz() -> Envelope<Health> {
    Envelope::ok(UP)
}

async fn readyz(State(state): State<AppState>) -> Result<Envelope<Health>> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        AppError::Unavailable("database unavailable".to_owned())
    })?;
    Ok(Envelope::ok(UP))
}
