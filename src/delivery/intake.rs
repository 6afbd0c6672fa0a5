//! Turning a publisher's event into stored deliveries.

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::Notify;

use crate::domain::{CallbackEvent, EventId, NewEvent, ProjectId, Published};
use crate::error::{AppError, Result};
use crate::store::Store;

/// Most events one batch may carry.
pub const MAX_BATCH: usize = 1000;

/// Validates one event and builds the exact body every delivery will POST: `{"event","data"}`
/// with `data` byte for byte as the publisher sent it.
pub fn accept(
    project_id: ProjectId,
    event: CallbackEvent,
    data: &RawValue,
    event_id: Option<&str>,
) -> Result<NewEvent> {
    if !data.get().trim_start().starts_with('{') {
        return Err(AppError::BadRequest(
            "data must be a JSON object".to_owned(),
        ));
    }
    let event_id = match event_id {
        None => EventId::generate(),
        Some(raw) => raw
            .parse()
            .map_err(|e| AppError::BadRequest(format!("eventId {e}")))?,
    };
    Ok(NewEvent {
        body: format!(r#"{{"event":"{}","data":{}}}"#, event.as_str(), data.get()),
        project_id,
        event_id,
        event,
    })
}

/// Commits the events and their deliveries, then wakes the workers. The database work runs
/// in its own task, so a client that disconnects cannot cancel it halfway.
pub async fn publish(
    store: &Arc<dyn Store>,
    wake: &Notify,
    events: Vec<NewEvent>,
) -> Result<Vec<Published>> {
    let store = store.clone();
    let published = tokio::spawn(async move { store.publish(&events).await })
        .await
        .map_err(|e| AppError::Internal(format!("intake task failed: {e}")))??;
    metrics::counter!(crate::telemetry::names::EVENTS_ACCEPTED).increment(published.len() as u64);
    if published.iter().any(|p| p.deliveries > 0) {
        wake.notify_one();
    }
    Ok(published)
}
