//! A manual re-send of one history row: the stored body, sent once, now, to the callback's
//! current URL with its current token and a fresh signature, and recorded as a new history row
//! marked manual. A delivered re-send marks its delivery SUCCESS (unless a worker holds it at
//! that moment), so a recovery does not send it again.

use std::sync::Arc;
use std::time::Duration;

use crate::delivery::outcome;
use crate::delivery::sender::Sender;
use crate::delivery::worker::{disable_rule, send_attempt};
use crate::domain::{DeliveryTarget, HistoryEntry};
use crate::store::{DeliveryQueue, StoreResult};

/// Sends `entry`'s request again to `target` and records the attempt (the delivery's own state
/// is left alone); answers why it failed, `None` when it was delivered. Owns its arguments, so
/// it can run in a task of its own that a client going away cannot cut in half.
pub async fn resend(
    sender: Arc<Sender>,
    store: Arc<dyn DeliveryQueue>,
    disable_after: Duration,
    entry: HistoryEntry,
    target: DeliveryTarget,
) -> StoreResult<Option<String>> {
    let original = entry.attempt;
    let delivery_id = original.delivery_id.unwrap_or(entry.id);
    let mut judged = send_attempt(
        &sender,
        &target,
        delivery_id,
        original.callback_id,
        original.event,
        original.attempt + 1,
        original.request_body,
    )
    .await;
    // Marked in history; a delivered re-send also settles the delivery it belongs to, if any
    // (see `DeliveryQueue::record_outcomes`).
    judged.attempt.manual = true;
    judged.attempt.delivery_id = original.delivery_id;
    // A manual re-send is not retried: anything but a delivery is final.
    let outcome = outcome::of_attempt(delivery_id, None, judged, None);
    let error = outcome.last_error.clone();
    store
        .record_outcomes(&[outcome], &disable_rule(disable_after))
        .await?;
    Ok(error)
}
