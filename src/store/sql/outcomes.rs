//! The rows `DeliveryQueue::record_outcomes` writes, each kind as one JSON array for
//! `Backend::JSON_ROWS`.

use std::collections::HashMap;

use super::{json_rows, storable};
use crate::domain::{Attempt, AttemptStatus, CallbackEffect, DeliveryOutcome};

/// History rows of the outcomes that made an attempt.
pub(super) fn attempt_rows(outcomes: &[DeliveryOutcome]) -> Option<String> {
    let rows: Vec<serde_json::Value> = outcomes
        .iter()
        .filter_map(|o| o.attempt.as_ref())
        .map(|a| {
            let from_event = body_from_event(a);
            serde_json::json!({
                "delivery_id": a.delivery_id,
                "callback_id": a.callback_id,
                "project_id": a.project_id.as_str(),
                "url": a.url,
                "event": a.event.as_str(),
                "status": a.status.as_str(),
                "attempt": a.attempt,
                "error_msg": a.error_msg.as_deref().map(storable),
                "request_headers": serde_json::to_string(&a.request_headers).expect("headers serialize"),
                // A scheduled attempt sends its event's body: read from there, not copied.
                "request_body": (!from_event).then(|| storable(&a.request_body)),
                "body_from_event": i32::from(from_event),
                "response_code": a.response_code,
                "response_body": a.response_body.as_deref().map(storable),
                "start_time": a.start_time,
                "end_time": a.end_time,
                "manual": i32::from(a.manual),
                "recover_job_id": a.recover_job,
            })
        })
        .collect();
    (!rows.is_empty()).then(|| json_rows(rows))
}

/// Whether history reads `attempt`'s body from its delivery's event instead of storing it.
fn body_from_event(attempt: &Attempt) -> bool {
    !attempt.manual && attempt.delivery_id.is_some()
}

/// The outcomes that hold their delivery's lease: only those change a delivery's state.
fn leased(outcomes: &[DeliveryOutcome]) -> impl Iterator<Item = &DeliveryOutcome> {
    outcomes.iter().filter(|o| o.claim_token.is_some())
}

/// The new states of the deliveries whose lease the outcomes hold.
pub(super) fn state_rows(outcomes: &[DeliveryOutcome]) -> String {
    json_rows(leased(outcomes).map(|o| {
        serde_json::json!({
            "id": o.delivery_id,
            "token": o.claim_token,
            "status": o.status.as_str(),
            "attempts": o.attempts,
            "next_attempt_at": o.next_attempt_at,
            "last_error": o.last_error.as_deref().map(storable),
            "cancel_reason": o.cancel_reason.as_deref().map(storable),
            "attempted": i32::from(o.attempt.is_some()),
            "code": o.attempt.as_ref().and_then(|a| a.response_code),
        })
    }))
}

/// The ids of `state_rows`, for `Backend::ids_in`: the update then looks each delivery up by
/// its key, whatever the planner guesses about the JSON rows (a hash join over a table it still
/// thinks small scans the whole table once per batch).
pub(super) fn leased_ids(outcomes: &[DeliveryOutcome]) -> String {
    json_rows(leased(outcomes).map(|o| serde_json::json!(o.delivery_id)))
}

/// The deliveries that a manual re-send delivered, with the status it got.
pub(super) fn manual_success_rows(outcomes: &[DeliveryOutcome]) -> Option<String> {
    let rows: Vec<serde_json::Value> = outcomes
        .iter()
        .filter_map(|o| o.attempt.as_ref())
        .filter(|a| a.manual && a.status == AttemptStatus::Success)
        .filter_map(|a| {
            let id = a.delivery_id?;
            Some(serde_json::json!({ "id": id, "code": a.response_code }))
        })
        .collect();
    (!rows.is_empty()).then(|| json_rows(rows))
}

/// Each callback's net effect in a batch, as rows
/// `{"c": callback id, "k": "ok" | "fail" | "gone", "s": failing since}`, and which kinds occur:
/// only their statements need to run.
pub(super) struct Effects {
    pub rows: String,
    pub succeeded: bool,
    pub failed: bool,
    pub gone: bool,
}

/// The batch's effects on its callbacks (each callback's last attempt decides); `None` when it
/// has none.
pub(super) fn effect_rows(outcomes: &[DeliveryOutcome]) -> Option<Effects> {
    let mut last: HashMap<i64, CallbackEffect> = HashMap::new();
    for outcome in outcomes {
        let (Some(attempt), Some(effect)) = (&outcome.attempt, outcome.effect) else {
            continue;
        };
        let merged = match (last.get(&attempt.callback_id), effect) {
            // The earliest failure of a run starts the clock.
            (Some(CallbackEffect::Failed { since: earlier }), CallbackEffect::Failed { since }) => {
                CallbackEffect::Failed {
                    since: since.min(*earlier),
                }
            }
            (Some(CallbackEffect::Gone), _) => CallbackEffect::Gone,
            (_, effect) => effect,
        };
        last.insert(attempt.callback_id, merged);
    }
    if last.is_empty() {
        return None;
    }
    let occurs = |wanted: fn(&CallbackEffect) -> bool| last.values().any(wanted);
    Some(Effects {
        succeeded: occurs(|e| matches!(e, CallbackEffect::Succeeded)),
        failed: occurs(|e| matches!(e, CallbackEffect::Failed { .. })),
        gone: occurs(|e| matches!(e, CallbackEffect::Gone)),
        rows: json_rows(last.into_iter().map(|(callback, effect)| match effect {
            CallbackEffect::Succeeded => serde_json::json!({ "c": callback, "k": "ok", "s": 0 }),
            CallbackEffect::Failed { since } => {
                serde_json::json!({ "c": callback, "k": "fail", "s": since })
            }
            CallbackEffect::Gone => serde_json::json!({ "c": callback, "k": "gone", "s": 0 }),
        })),
    })
}

/// The statements that apply `effect_rows` (bound as `$1`) to the callbacks.
pub(super) struct EffectStatements {
    /// Success clears the failure clock.
    pub clear: String,
    /// Failure starts the clock, unless it runs already.
    pub start: String,
    /// 410 Gone disables at once (`$2` now); returns the ids it disabled.
    pub gone: String,
    /// A clock older than the cutoff disables (`$2` now, `$3` the cutoff, `$4` the reason);
    /// returns the ids it disabled.
    pub expire: String,
}

impl EffectStatements {
    pub(super) fn new(json_rows: &str) -> Self {
        let ids = |kind: &str| {
            format!(
                "SELECT CAST(value->>'c' AS BIGINT) FROM {json_rows} WHERE value->>'k' = '{kind}'"
            )
        };
        Self {
            clear: format!(
                "UPDATE callbacks SET failure_time = NULL \
                 WHERE failure_time IS NOT NULL AND id IN ({})",
                ids("ok")
            ),
            start: format!(
                "UPDATE callbacks SET failure_time = j.since \
                 FROM (SELECT CAST(value->>'c' AS BIGINT) AS id, CAST(value->>'s' AS BIGINT) AS since \
                       FROM {json_rows} WHERE value->>'k' = 'fail') AS j \
                 WHERE callbacks.id = j.id AND callbacks.failure_time IS NULL"
            ),
            gone: format!(
                "UPDATE callbacks SET enabled = FALSE, updated_at = $2, \
                     failure_time = COALESCE(failure_time, $2), \
                     disabled_reason = 'the receiver answered 410 Gone' \
                 WHERE enabled AND id IN ({}) RETURNING id",
                ids("gone")
            ),
            expire: format!(
                "UPDATE callbacks SET enabled = FALSE, updated_at = $2, disabled_reason = $4 \
                 WHERE enabled AND failure_time IS NOT NULL AND failure_time <= $3 AND id IN ({}) \
                 RETURNING id",
                ids("fail")
            ),
        }
    }
}
