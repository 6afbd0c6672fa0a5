//! What one attempt's result means, for the worker and for a manual re-send alike: a 2xx
//! delivered it, a 410 Gone disables the callback at once, anything else is a failure that
//! starts (or continues) the callback's failure clock and may be retried.

use std::time::Duration;

use crate::delivery::sender::SendResult;
use crate::domain::{
    Attempt, CallbackEffect, DeliveryOutcome, DeliveryStatus, EpochMillis, millis,
};

/// Longest wait a `Retry-After` may impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// The receiver answered 410: it wants no more deliveries.
    Gone,
    /// Worth another attempt, if the schedule has one.
    Failed,
}

impl Verdict {
    pub fn of(result: &SendResult) -> Self {
        if result.is_success() {
            Self::Delivered
        } else if result.response_code == Some(410) {
            Self::Gone
        } else {
            Self::Failed
        }
    }

    /// How the attempt, started at `started`, changes its callback's failure state.
    pub fn effect(self, started: EpochMillis) -> CallbackEffect {
        match self {
            Self::Delivered => CallbackEffect::Succeeded,
            Self::Gone => CallbackEffect::Gone,
            Self::Failed => CallbackEffect::Failed { since: started },
        }
    }
}

/// What one attempt leaves behind: the attempt for history, the delivery's new state and the
/// effect on its callback. A failure is retried after `retry` (or a longer `Retry-After` the
/// receiver asked for, up to an hour); without one it is final.
pub fn of_attempt(
    delivery_id: i64,
    claim_token: Option<String>,
    attempt: Attempt,
    result: SendResult,
    retry: Option<Duration>,
) -> DeliveryOutcome {
    let verdict = Verdict::of(&result);
    let end = attempt.end_time;
    let (status, next_attempt_at) = match (verdict, retry) {
        (Verdict::Delivered, _) => (DeliveryStatus::Success, end),
        (Verdict::Failed, Some(delay)) => {
            let asked = result.retry_after.unwrap_or_default().min(MAX_RETRY_AFTER);
            (DeliveryStatus::Pending, end + millis(delay.max(asked)))
        }
        (Verdict::Gone | Verdict::Failed, _) => (DeliveryStatus::Failed, end),
    };
    DeliveryOutcome {
        delivery_id,
        claim_token,
        status,
        attempts: attempt.attempt,
        next_attempt_at,
        last_error: result.error,
        effect: Some(verdict.effect(attempt.start_time)),
        attempt: Some(attempt),
    }
}
