//! Event intake, for the services that produce events: `/service/callbacks/…`, service token only.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::AppState;
use crate::delivery::intake::{self, MAX_BATCH};
use crate::domain::{CallbackEvent, Published};
use crate::error::{AppError, Result};
use crate::http::envelope::Envelope;
use crate::http::extract::{Json, Path, ServiceCaller, parse_project_id};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/service/callbacks/projects/{project_id}/events",
            post(publish_one),
        )
        .route("/service/callbacks/events:batch", post(publish_batch))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventBody {
    event: CallbackEvent,
    data: Box<RawValue>,
    event_id: Option<String>,
}

/// Accepts one event of the project; answers once it and its deliveries are committed.
async fn publish_one(
    State(state): State<AppState>,
    _: ServiceCaller,
    Path(project_id): Path<String>,
    Json(body): Json<EventBody>,
) -> Result<Envelope<Published>> {
    let project = parse_project_id(&project_id)?;
    let event = intake::accept(project, body.event, &body.data, body.event_id.as_deref())?;
    let mut published = intake::publish(&state.store, &state.wake, vec![event]).await?;
    Ok(Envelope::ok(published.remove(0)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchItem {
    project_id: String,
    event: CallbackEvent,
    data: Box<RawValue>,
    event_id: Option<String>,
}

/// Accepts up to 1000 events of any projects in one transaction; answers in the same order.
async fn publish_batch(
    State(state): State<AppState>,
    _: ServiceCaller,
    Json(items): Json<Vec<BatchItem>>,
) -> Result<Envelope<Vec<Published>>> {
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(AppError::BadRequest(format!(
            "a batch carries 1 to {MAX_BATCH} events, this one has {}",
            items.len()
        )));
    }
    let events = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let project = parse_project_id(&item.project_id).and_then(|project| {
                intake::accept(project, item.event, &item.data, item.event_id.as_deref())
            });
            project.map_err(|e| AppError::BadRequest(format!("event [{index}]: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Envelope::ok(
        intake::publish(&state.store, &state.wake, events).await?,
    ))
}
