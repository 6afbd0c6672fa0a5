//! What one attempt's result means, for the worker and for a manual re-send alike. Under the
//! default rule a 2xx delivered it, a 410 Gone disables the callback at once, and anything else
//! is a failure that starts (or continues) the callback's failure clock and may be retried;
//! under `DELIVERY_SUCCESS=any-response` every answer but a redirect delivered it.

use std::time::Duration;

use crate::config::SuccessRule;
use crate::delivery::sender::SendResult;
use crate::domain::{
    Attempt, AttemptStatus, CallbackEffect, DeliveryOutcome, DeliveryStatus, EpochMillis, millis,
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
    /// The one rule for what an attempt achieved. No whole answer (a transport error, a timeout,
    /// a body that broke off) is never a delivery, nor is a redirect, which is not followed.
    /// Otherwise `rule` decides: a 2xx, or with `AnyResponse` any status, 410 included (as bk-ci
    /// counts them, so nothing disables the callback).
    pub fn of(result: &SendResult, rule: SuccessRule) -> Self {
        let (Some(code), None) = (result.response_code, &result.error) else {
            return Self::Failed;
        };
        match (rule, code) {
            (_, 300..=399) => Self::Failed,
            (SuccessRule::Status2xx, 200..=299) | (SuccessRule::AnyResponse, _) => Self::Delivered,
            (SuccessRule::Status2xx, 410) => Self::Gone,
            (SuccessRule::Status2xx, _) => Self::Failed,
        }
    }

    /// Why the attempt was not a delivery, as history shows it; `None` when it was.
    pub fn reason(self, result: &SendResult) -> Option<String> {
        if self == Self::Delivered {
            return None;
        }
        if let Some(error) = &result.error {
            return Some(error.clone());
        }
        let code = result.response_code?;
        let status = reqwest::StatusCode::from_u16(code)
            .map_or_else(|_| code.to_string(), |status| status.to_string());
        Some(if (300..=399).contains(&code) {
            format!("HTTP {status} (redirects are not followed)")
        } else {
            format!("HTTP {status}")
        })
    }

    /// The status of the attempt's history row.
    pub fn attempt_status(self) -> AttemptStatus {
        match self {
            Self::Delivered => AttemptStatus::Success,
            Self::Gone | Self::Failed => AttemptStatus::Failed,
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

/// One attempt as history records it, what it means, and how long the receiver asked us to wait.
#[derive(Debug, Clone)]
pub struct Judged {
    pub attempt: Attempt,
    pub verdict: Verdict,
    pub retry_after: Option<Duration>,
}

/// What one attempt leaves behind: the attempt for history, the delivery's new state and the
/// effect on its callback. A failure is retried after `retry` (or a longer `Retry-After` the
/// receiver asked for, up to an hour); without one it is final.
pub fn of_attempt(
    delivery_id: i64,
    claim_token: Option<String>,
    judged: Judged,
    retry: Option<Duration>,
) -> DeliveryOutcome {
    let Judged {
        attempt,
        verdict,
        retry_after,
    } = judged;
    let end = attempt.end_time;
    let (status, next_attempt_at) = match (verdict, retry) {
        (Verdict::Delivered, _) => (DeliveryStatus::Success, end),
        (Verdict::Failed, Some(delay)) => {
            let asked = retry_after.unwrap_or_default().min(MAX_RETRY_AFTER);
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
        last_error: attempt.error_msg.clone(),
        cancel_reason: None,
        effect: Some(verdict.effect(attempt.start_time)),
        attempt: Some(attempt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(code: u16) -> SendResult {
        SendResult {
            response_code: Some(code),
            response_body: Some(String::new()),
            error: None,
            retry_after: None,
        }
    }

    #[test]
    fn each_rule_judges_every_kind_of_answer() {
        use SuccessRule::{AnyResponse, Status2xx};
        use Verdict::{Delivered, Failed, Gone};
        let cut_off = SendResult {
            error: Some("error decoding response body".to_owned()),
            ..answered(200)
        };
        let no_answer = SendResult {
            response_code: None,
            response_body: None,
            error: Some("timed out".to_owned()),
            retry_after: None,
        };
        for (result, strict, lenient) in [
            (answered(200), Delivered, Delivered),
            (answered(204), Delivered, Delivered),
            (answered(302), Failed, Failed),
            (answered(308), Failed, Failed),
            (answered(404), Failed, Delivered),
            (answered(410), Gone, Delivered),
            (answered(500), Failed, Delivered),
            (cut_off, Failed, Failed),
            (no_answer, Failed, Failed),
        ] {
            assert_eq!(Verdict::of(&result, Status2xx), strict, "{result:?}");
            assert_eq!(Verdict::of(&result, AnyResponse), lenient, "{result:?}");
        }
    }

    #[test]
    fn the_reason_names_the_status_or_the_error() {
        assert_eq!(Verdict::Delivered.reason(&answered(500)), None);
        assert_eq!(
            Verdict::Failed.reason(&answered(500)).unwrap(),
            "HTTP 500 Internal Server Error"
        );
        assert_eq!(
            Verdict::Failed.reason(&answered(302)).unwrap(),
            "HTTP 302 Found (redirects are not followed)"
        );
        let timed_out = SendResult {
            response_code: None,
            error: Some("timed out".to_owned()),
            ..answered(0)
        };
        assert_eq!(Verdict::Failed.reason(&timed_out).unwrap(), "timed out");
    }
}
