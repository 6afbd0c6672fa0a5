//! Bulk recovery: jobs that re-queue the deliveries of one callback that ended FAILED or
//! CANCELLED in a window.

use super::{CallbackId, EpochMillis, ProjectId, RecoverState, UserId};

/// The id of a recovery job.
pub type RecoverJobId = i64;

/// A recovery to start: the deliveries of `callback_id` that ended (FAILED or CANCELLED)
/// between `from` and `to`, epoch ms, both included.
#[derive(Debug, Clone)]
pub struct NewRecovery {
    pub project_id: ProjectId,
    pub callback_id: CallbackId,
    pub from: EpochMillis,
    pub to: EpochMillis,
    pub creator: UserId,
}

/// A recovery job as stored.
#[derive(Debug, Clone)]
pub struct RecoverJob {
    pub id: RecoverJobId,
    pub project_id: ProjectId,
    pub callback_id: CallbackId,
    pub state: RecoverState,
    /// Why it was cancelled.
    pub reason: Option<String>,
    pub from: EpochMillis,
    /// The window's end: never later than the job's start, since no delivery ends in the future.
    pub to: EpochMillis,
    /// Deliveries in the window when the job started.
    pub total: u64,
    /// Re-queued so far.
    pub done: u64,
    /// Counted when the job is done: deliveries of the window that were no longer FAILED or
    /// CANCELLED when their batch came (re-queued by another job, or removed by retention).
    pub failed: u64,
    pub creator: UserId,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
}

/// How starting a recovery went.
#[derive(Debug, Clone)]
pub enum RecoveryStart {
    Started(RecoverJob),
    /// The project has no such callback.
    NoCallback,
    /// The callback is disabled: its re-queued deliveries would only be cancelled again.
    Disabled,
}

/// One batch a recovery runner did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryBatch {
    pub job: RecoverJobId,
    /// Deliveries re-queued by this batch.
    pub requeued: u64,
    /// The last delivery id the job has passed after it (batches of a job never overlap).
    pub through: i64,
    /// The job's state after it.
    pub state: RecoverState,
}
