//! Events, their deliveries, attempts and history.

use serde::{Deserialize, Serialize};

use super::{
    AttemptStatus, CallbackEvent, CallbackId, CustomHeaders, DeliveryState, DeliveryStatus,
    EpochMillis, EventId, PipelineId, ProjectId,
};
use crate::secrets::Secret;

/// Where an event goes: the callbacks of its type in its project, then the global ones (PROJECT_*
/// events) or those of its pipeline (BUILD_* events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRoute {
    pub project_id: ProjectId,
    pub event: CallbackEvent,
    /// A BUILD_* event's pipeline, whose pipeline-level callbacks it also goes to. Always `None`
    /// for other events.
    pub pipeline_id: Option<PipelineId>,
}

/// An event accepted for delivery; `body` is the exact JSON every matching callback receives.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub route: EventRoute,
    pub event_id: EventId,
    pub body: String,
}

/// What the intake answers for one event (the original answer when the event id was seen before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub event_id: EventId,
    pub deliveries: u32,
}

#[derive(Debug, Clone)]
pub struct DeliveryTarget {
    pub project_id: ProjectId,
    pub url: String,
    pub secret_token: Option<Secret>,
    /// Sent with every attempt (global callbacks created through bk-ci's op route).
    pub headers: CustomHeaders,
}

/// One request header as history keeps it (secrets masked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeaderPair {
    pub name: String,
    pub value: String,
}

/// One attempt, as recorded in history.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub delivery_id: Option<i64>,
    pub callback_id: CallbackId,
    pub project_id: ProjectId,
    pub url: String,
    pub event: CallbackEvent,
    pub status: AttemptStatus,
    pub attempt: u32,
    pub error_msg: Option<String>,
    pub request_headers: Vec<HeaderPair>,
    pub request_body: String,
    pub response_code: Option<u16>,
    pub response_body: Option<String>,
    pub start_time: EpochMillis,
    pub end_time: EpochMillis,
    /// A manual re-send (`callback_retry`), not an attempt of the delivery's schedule.
    pub manual: bool,
    /// The recovery job that re-queued the delivery, for the attempts it led to.
    pub recover_job: Option<i64>,
}

/// What a worker writes back: the delivery's new state (when it held the delivery's lease), the
/// attempt if one was made, and what the attempt means for its callback.
#[derive(Debug, Clone)]
pub struct DeliveryOutcome {
    pub delivery_id: i64,
    /// The lease the new state is written under; `None` for a manual re-send, which leaves the
    /// delivery's own state alone.
    pub claim_token: Option<String>,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: EpochMillis,
    pub last_error: Option<String>,
    /// Why the delivery was cancelled (with `DeliveryStatus::Cancelled`).
    pub cancel_reason: Option<String>,
    pub attempt: Option<Attempt>,
    pub effect: Option<CallbackEffect>,
}

impl DeliveryOutcome {
    /// The same outcome with what the receiver sent (its answer's body, and error texts that may
    /// quote it) replaced by `note`, for when the database refuses the outcome as it is.
    pub fn without_receiver_text(&self, note: &str) -> Self {
        let mut stripped = self.clone();
        stripped.last_error = stripped.last_error.map(|_| note.to_owned());
        if let Some(attempt) = &mut stripped.attempt {
            attempt.response_body = None;
            attempt.error_msg = Some(note.to_owned());
        }
        stripped
    }
}

/// How an attempt changes its callback's failure state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackEffect {
    /// Any success clears the failure state.
    Succeeded,
    /// A failure starts the failure clock (if not running) at `since`; a clock older than
    /// `CALLBACK_DISABLE_AFTER` disables the callback.
    Failed { since: EpochMillis },
    /// The receiver answered 410 Gone: disable at once.
    Gone,
}

/// Why a delivery was cancelled, when its callback is gone or was disabled without a reason.
pub const CANCELLED_DELETED: &str = "the callback was deleted";
pub const CANCELLED_DISABLED: &str = "the callback was disabled";

/// A stored attempt with its id and creation time, and where its delivery stands now (`None`
/// when the delivery is gone: retention removed it).
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub id: i64,
    pub created_at: EpochMillis,
    pub attempt: Attempt,
    pub delivery: Option<DeliveryProgress>,
}

/// Where a delivery stands, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryProgress {
    pub state: DeliveryState,
    /// When a `PENDING` or `RETRYING` delivery is attempted next.
    pub next_attempt_at: Option<EpochMillis>,
    /// Why a `CANCELLED` delivery was cancelled.
    pub cancel_reason: Option<String>,
    /// The recovery job that last re-queued it.
    pub recover_job: Option<i64>,
}

/// A delivery's stored columns, from which its `DeliveryProgress` follows.
#[derive(Debug, Clone)]
pub struct StoredProgress {
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// Attempts made before its current run (a recovery re-queued it after them).
    pub retry_base: u32,
    pub next_attempt_at: EpochMillis,
    pub cancel_reason: Option<String>,
    pub recover_job: Option<i64>,
}

impl From<StoredProgress> for DeliveryProgress {
    fn from(stored: StoredProgress) -> Self {
        let state = match stored.status {
            DeliveryStatus::Pending if stored.attempts > stored.retry_base => {
                DeliveryState::Retrying
            }
            DeliveryStatus::Pending => DeliveryState::Pending,
            DeliveryStatus::Success => DeliveryState::Success,
            DeliveryStatus::Failed => DeliveryState::Failed,
            DeliveryStatus::Cancelled => DeliveryState::Cancelled,
        };
        let waiting = stored.status == DeliveryStatus::Pending;
        Self {
            state,
            next_attempt_at: waiting.then_some(stored.next_attempt_at),
            cancel_reason: stored
                .cancel_reason
                .filter(|_| stored.status == DeliveryStatus::Cancelled),
            recover_job: stored.recover_job,
        }
    }
}

/// One delivery of a callback, as its deliveries view lists it.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: i64,
    pub event_id: EventId,
    pub event: CallbackEvent,
    pub attempts: u32,
    pub progress: DeliveryProgress,
    /// The status code of its last attempt, if the receiver answered.
    pub last_response_code: Option<u16>,
    /// The error of its last attempt, if it failed.
    pub last_error: Option<String>,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
}

/// Filters of the history API; the window is inclusive, in epoch ms.
#[derive(Debug, Clone)]
pub struct HistoryFilter {
    pub url: Option<String>,
    pub event: Option<CallbackEvent>,
    pub from: EpochMillis,
    pub to: EpochMillis,
}
