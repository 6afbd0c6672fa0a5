//! `GET /metrics`: Prometheus text format. Counters and histograms come from the recorder; the
//! queue gauges are read from the database at scrape time, so every replica reports the truth.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::domain::now_millis;
use crate::error::Result;
use crate::http::envelope::ErrorResponse;
use crate::telemetry::{self, names};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(render))
}

/// Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
        ErrorResponse
    )
)]
async fn render(State(state): State<AppState>) -> Result<impl IntoResponse> {
    let stats = state.store.queue_stats(now_millis()).await?;
    for (queue, value) in [
        ("due", stats.due),
        ("leased", stats.leased),
        ("retrying", stats.retrying),
    ] {
        metrics::gauge!(names::QUEUE, "state" => queue).set(value as f64);
    }
    metrics::gauge!(names::CALLBACKS_DISABLED).set(stats.disabled_callbacks as f64);
    let handle = telemetry::metrics();
    handle.run_upkeep();
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    ))
}
