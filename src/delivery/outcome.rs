//! What one attempt's result means, for the worker and for a manual re-send alike: a 2xx
//! delivered it, a 410 Gone disables the callback at once, anything else is a failure that
//! starts (or continues) the callback's failure clock and may be retried.

use crate::delivery::sender::SendResult;
use crate::domain::{CallbackEffect, EpochMillis};

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
