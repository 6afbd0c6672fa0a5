//! Turning a publisher's event into stored deliveries.

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::Notify;

use crate::domain::{
    CallbackEvent, EventId, EventRoute, InvalidId, NewEvent, PipelineId, ProjectId, Published,
};
use crate::store::{DeliveryQueue, StoreError};
use crate::telemetry::names;

/// Most events one batch may carry.
pub const MAX_BATCH: usize = 1000;

/// Deepest nesting of arrays and objects an event's `data` may have. Receivers parse what we
/// forward, and many parsers recurse, so a deeper document is refused rather than passed on.
pub const MAX_DATA_DEPTH: usize = 64;

/// Why an event is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum InvalidEvent {
    #[error("data must be a JSON object")]
    NotAnObject,
    #[error("data is nested more than {MAX_DATA_DEPTH} levels deep")]
    TooDeep,
    #[error("eventId {0}")]
    EventId(InvalidId),
}

/// Why a batch was not (wholly) stored.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Some events were refused by the database and the rest were stored; `answers` holds, in
    /// input order, each event's answer or why it was refused.
    #[error("{} of {} events were refused", refused.len(), answers.len())]
    Refused {
        refused: Vec<String>,
        answers: Vec<EventAnswer>,
    },
    #[error("intake task failed: {0}")]
    TaskFailed(String),
}

/// One event's answer in a batch that was stored event by event.
#[derive(Debug)]
pub enum EventAnswer {
    Stored(Published),
    Refused { event_id: EventId, reason: String },
}

/// Validates one event and builds the exact body every delivery will POST: `{"event","data"}`
/// with `data` byte for byte as the publisher sent it.
pub fn accept(
    project_id: ProjectId,
    event: CallbackEvent,
    data: &RawValue,
    event_id: Option<&str>,
) -> Result<NewEvent, InvalidEvent> {
    if !data.get().trim_start().starts_with('{') {
        return Err(InvalidEvent::NotAnObject);
    }
    if nesting_depth(data.get()) > MAX_DATA_DEPTH {
        return Err(InvalidEvent::TooDeep);
    }
    let event_id = match event_id {
        None => EventId::generate(),
        Some(raw) => raw.parse().map_err(InvalidEvent::EventId)?,
    };
    Ok(NewEvent {
        body: format!(r#"{{"event":"{}","data":{}}}"#, event.as_str(), data.get()),
        route: EventRoute {
            pipeline_id: event.is_build_event().then(|| pipeline_of(data)).flatten(),
            project_id,
            event,
        },
        event_id,
    })
}

/// A build event's pipeline: `data.pipelineId` (bk-ci's `BuildEvent.pipelineId`), when it is a
/// string that is a pipeline id. Anything else routes to no pipeline-level callback.
fn pipeline_of(data: &RawValue) -> Option<PipelineId> {
    #[derive(serde::Deserialize)]
    struct BuildData<'a> {
        #[serde(rename = "pipelineId", borrow, default)]
        pipeline_id: Option<std::borrow::Cow<'a, str>>,
    }
    let parsed: BuildData = serde_json::from_str(data.get()).ok()?;
    parsed.pipeline_id?.parse().ok()
}

/// Commits the events and their deliveries, then wakes the workers. The database work runs
/// in its own task, so a client that disconnects cannot cancel it halfway.
pub async fn publish(
    store: Arc<dyn DeliveryQueue>,
    wake: &Notify,
    events: Vec<NewEvent>,
) -> Result<Vec<Published>, IntakeError> {
    let outcome = tokio::spawn(async move { publish_isolated(store.as_ref(), &events).await })
        .await
        .map_err(|e| IntakeError::TaskFailed(e.to_string()))?;
    match &outcome {
        Ok(published) => {
            metrics::counter!(names::EVENTS_ACCEPTED).increment(published.len() as u64);
            if published.iter().any(|p| p.deliveries > 0) {
                wake.notify_one();
            }
        }
        // Part of the batch was stored: its deliveries are due now.
        Err(IntakeError::Refused { .. }) => wake.notify_one(),
        Err(_) => {}
    }
    outcome
}

/// Stores the events in one transaction. When the database refuses it for a reason other than
/// being unavailable, one event may be to blame: each is then stored alone, so every other one
/// still commits, and the answer names the refused ones.
async fn publish_isolated(
    store: &dyn DeliveryQueue,
    events: &[NewEvent],
) -> Result<Vec<Published>, IntakeError> {
    let error = match store.publish(events).await {
        Ok(published) => return Ok(published),
        Err(error) if events.len() == 1 || error.is_unavailable() => return Err(error.into()),
        Err(error) => error,
    };
    tracing::warn!(%error, events = events.len(), "an intake batch failed; storing its events one by one");
    let mut published = Vec::with_capacity(events.len());
    let mut answers = Vec::with_capacity(events.len());
    let mut refused = Vec::new();
    for (index, event) in events.iter().enumerate() {
        match store.publish(std::slice::from_ref(event)).await {
            Ok(mut one) => {
                let one = one.remove(0);
                answers.push(EventAnswer::Stored(one.clone()));
                published.push(one);
            }
            Err(error) if error.is_unavailable() => return Err(error.into()),
            Err(error) => {
                let reason = error.reason();
                refused.push(format!("event [{index}]: {reason}"));
                answers.push(EventAnswer::Refused {
                    event_id: event.event_id.clone(),
                    reason,
                });
            }
        }
    }
    if refused.is_empty() {
        return Ok(published);
    }
    metrics::counter!(names::EVENTS_ACCEPTED).increment(published.len() as u64);
    Err(IntakeError::Refused { refused, answers })
}

/// How deeply arrays and objects nest in `json`, which is already known to be valid JSON (so
/// brackets inside strings are the only ones to skip).
fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_depth_counts_brackets_outside_strings() {
        assert_eq!(nesting_depth("{}"), 1);
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(nesting_depth(r#"{"a":"[[[{{{\\\"[["}"#), 1);
        assert_eq!(nesting_depth(r#"{"a":[[]],"b":[[[]]]}"#), 4);
    }

    #[test]
    fn only_build_events_name_a_pipeline() {
        let project: ProjectId = "p".parse().unwrap();
        let data = |json: &str| serde_json::value::RawValue::from_string(json.to_owned()).unwrap();
        let pipeline = |event, json: &str| {
            accept(project.clone(), event, &data(json), None)
                .unwrap()
                .route
                .pipeline_id
                .map(|p| p.as_str().to_owned())
        };
        let build = r#"{"buildId":"b","pipelineId":"p-1","model":{"pipelineId":"x"}}"#;
        assert_eq!(
            pipeline(CallbackEvent::BuildEnd, build).as_deref(),
            Some("p-1")
        );
        assert_eq!(
            pipeline(CallbackEvent::BuildTaskPause, build).as_deref(),
            Some("p-1")
        );
        assert_eq!(pipeline(CallbackEvent::CreatePipeline, build), None);
        assert_eq!(
            pipeline(CallbackEvent::BuildEnd, r#"{"pipelineId":7}"#),
            None
        );
        assert_eq!(
            pipeline(CallbackEvent::BuildEnd, r#"{"pipelineId":"a b"}"#),
            None
        );
        assert_eq!(
            pipeline(CallbackEvent::BuildEnd, r#"{"buildId":"b"}"#),
            None
        );
        let escaped = r#"{"pipelineId":"p\u002d2"}"#;
        assert_eq!(
            pipeline(CallbackEvent::BuildStart, escaped).as_deref(),
            Some("p-2")
        );
    }

    #[test]
    fn data_deeper_than_the_limit_is_refused() {
        let project: ProjectId = "p".parse().unwrap();
        let nested = |levels: usize| {
            let inner = format!("{}{}", "[".repeat(levels - 1), "]".repeat(levels - 1));
            serde_json::value::RawValue::from_string(format!(r#"{{"a":{inner}}}"#)).unwrap()
        };
        let at_limit = nested(MAX_DATA_DEPTH);
        assert!(accept(project.clone(), CallbackEvent::BuildEnd, &at_limit, None).is_ok());
        let over = nested(MAX_DATA_DEPTH + 1);
        let error = accept(project, CallbackEvent::BuildEnd, &over, None).unwrap_err();
        assert!(error.to_string().contains("nested more than 64"), "{error}");
    }
}
