//! The recovery runner of one process: it re-queues the deliveries of running recovery jobs
//! into the outbox, a batch at a time, and the workers send them like any other.
//!
//! A job's whole state is its row (`RecoveryStore`), and each batch is one transaction that
//! holds the job's row, so any process may run any batch, two processes never run the same
//! one, and a process killed mid-batch leaves nothing half done: the next batch, here or
//! elsewhere, starts where the job stands. A job queues its next batch only once fewer than a
//! batch of its deliveries still wait for their attempt, so it follows the receiver's pace
//! instead of filling the queue, and cancelling it stops what is not queued yet.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::{RecoverState, RecoveryBatch};
use crate::store::{RecoveryStore, warn_unless_unavailable};

/// What a runner needs.
pub struct Runner {
    pub store: Arc<dyn RecoveryStore>,
    /// Deliveries re-queued per batch (`RECOVER_BATCH_SIZE`).
    pub batch: u32,
    /// How often it looks for work when nothing wakes it.
    pub poll: Duration,
    /// Rung when a job starts in this process.
    pub wake: Arc<Notify>,
    /// The delivery workers' wake-up, rung after a batch is queued.
    pub workers: Arc<Notify>,
}

impl Runner {
    /// Runs batches until `stop` is cancelled: at once while there is work with room, else on a
    /// wake-up or the poll.
    pub async fn run(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let pause = match self.store.recover_batch(self.batch).await {
                Ok(Some(batch)) => {
                    self.ran(batch);
                    continue;
                }
                Ok(None) => self.poll,
                Err(error) => {
                    warn_unless_unavailable(&error, "a recovery batch failed; trying again in 1 s");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => {}
            }
        }
    }

    fn ran(&self, batch: RecoveryBatch) {
        let RecoveryBatch {
            job,
            requeued,
            through,
            state,
        } = batch;
        if requeued > 0 {
            self.workers.notify_one();
        }
        tracing::debug!(job, requeued, through, "re-queued a recovery batch");
        match state {
            RecoverState::Running => {}
            RecoverState::Done => tracing::info!(job, "recovery job done"),
            RecoverState::Cancelled => {
                tracing::info!(
                    job,
                    "recovery job cancelled: its callback was disabled or deleted"
                )
            }
        }
    }
}
