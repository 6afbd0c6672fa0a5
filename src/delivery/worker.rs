//! The delivery workers of one process: a dispatcher that leases due deliveries while there are
//! free slots, one task per attempt, and a recorder that writes outcomes in batches.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::delivery::retry::RetrySchedule;
use crate::delivery::sender::{self, Sender};
use crate::domain::{
    Attempt, AttemptStatus, ClaimedDelivery, DeliveryOutcome, DeliveryStatus, EpochMillis,
    now_millis,
};
use crate::store::Store;

/// Most deliveries leased in one claim.
const MAX_CLAIM: usize = 256;
/// Most outcomes written in one transaction.
const MAX_RECORD_BATCH: usize = 512;

pub struct Workers {
    store: Arc<dyn Store>,
    sender: Sender,
    retry: RetrySchedule,
    wake: Arc<Notify>,
    concurrency: usize,
    lease: Duration,
    poll: Duration,
    grace: Duration,
}

impl Workers {
    pub fn new(config: &Config, store: Arc<dyn Store>, sender: Sender, wake: Arc<Notify>) -> Self {
        Self {
            store,
            sender,
            retry: config.retry_schedule.clone(),
            wake,
            concurrency: config.delivery_concurrency,
            lease: config.delivery_lease,
            poll: config.delivery_poll,
            grace: config.shutdown_grace,
        }
    }

    /// Delivers until `stop` is cancelled, then lets attempts in flight finish within the grace
    /// period and writes their outcomes.
    pub async fn run(self, stop: CancellationToken) {
        let workers = Arc::new(self);
        let watcher = tokio::spawn({
            let workers = workers.clone();
            async move {
                workers
                    .store
                    .watch_new_deliveries(workers.wake.clone())
                    .await
            }
        });
        let (outcomes, recorded) = mpsc::channel(workers.concurrency);
        let recorder = tokio::spawn(record(workers.store.clone(), recorded));
        let mut in_flight = JoinSet::new();
        workers.dispatch(&stop, &mut in_flight, &outcomes).await;
        watcher.abort();

        let drained = tokio::time::timeout(workers.grace, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = in_flight.len(),
                "attempts still running after the grace period; their leases expire for another process"
            );
            in_flight.shutdown().await;
        }
        drop(outcomes);
        let _ = recorder.await;
    }

    async fn dispatch(
        self: &Arc<Self>,
        stop: &CancellationToken,
        in_flight: &mut JoinSet<()>,
        outcomes: &mpsc::Sender<DeliveryOutcome>,
    ) {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        loop {
            let first_slot = tokio::select! {
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                () = stop.cancelled() => return,
            };
            while in_flight.try_join_next().is_some() {}
            let wanted = (slots.available_permits() + 1).min(MAX_CLAIM);
            let now = now_millis();
            let lease_until = now + millis(self.lease);
            let claimed = match self.store.claim_due(now, lease_until, wanted as u32).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "claiming due deliveries failed; retrying in 1 s");
                    drop(first_slot);
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = stop.cancelled() => return,
                    }
                }
            };
            let got_all_wanted = claimed.len() == wanted;
            let mut first_slot = Some(first_slot);
            for delivery in claimed {
                let slot = match first_slot.take() {
                    Some(slot) => slot,
                    None => slots.clone().acquire_owned().await.expect("never closed"),
                };
                in_flight.spawn(self.clone().attempt(delivery, outcomes.clone(), slot));
            }
            drop(first_slot);
            if got_all_wanted {
                continue;
            }
            let wait = self.until_next_due().await;
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// Sleep until the next retry falls due, but never longer than the poll interval.
    async fn until_next_due(&self) -> Duration {
        match self.store.next_due_at().await {
            Ok(Some(due)) => {
                let wait = Duration::from_millis(u64::try_from(due - now_millis()).unwrap_or(0));
                wait.clamp(Duration::from_millis(5), self.poll)
            }
            _ => self.poll,
        }
    }

    async fn attempt(
        self: Arc<Self>,
        delivery: ClaimedDelivery,
        outcomes: mpsc::Sender<DeliveryOutcome>,
        slot: OwnedSemaphorePermit,
    ) {
        let outcome = self.deliver(delivery).await;
        // Holding the slot until the recorder took the outcome keeps memory bounded.
        let _ = outcomes.send(outcome).await;
        drop(slot);
    }

    async fn deliver(&self, delivery: ClaimedDelivery) -> DeliveryOutcome {
        let Some(target) = &delivery.target else {
            return DeliveryOutcome {
                delivery_id: delivery.id,
                claim_token: delivery.claim_token,
                status: DeliveryStatus::Cancelled,
                attempts: delivery.attempts,
                next_attempt_at: now_millis(),
                last_error: Some("the callback was deleted or disabled".to_owned()),
                attempt: None,
            };
        };
        let number = delivery.attempts + 1;
        let start = now_millis();
        let headers = sender::delivery_headers(
            &delivery.id.to_string(),
            target.secret_token.as_deref(),
            &delivery.body,
            start / 1000,
        );
        let result = self
            .sender
            .send(&target.url, &headers, delivery.body.clone())
            .await;
        let end = now_millis();
        let (status, next_attempt_at) = if result.is_success() {
            (DeliveryStatus::Success, end)
        } else {
            match self.retry.delay_after(number) {
                Some(delay) => (DeliveryStatus::Pending, end + millis(delay)),
                None => (DeliveryStatus::Failed, end),
            }
        };
        DeliveryOutcome {
            delivery_id: delivery.id,
            claim_token: delivery.claim_token,
            status,
            attempts: number,
            next_attempt_at,
            last_error: result.error.clone(),
            attempt: Some(Attempt {
                delivery_id: Some(delivery.id),
                callback_id: delivery.callback_id,
                project_id: target.project_id.clone(),
                url: target.url.clone(),
                event: delivery.event,
                status: if result.is_success() {
                    AttemptStatus::Success
                } else {
                    AttemptStatus::Failed
                },
                attempt: number,
                error_msg: result.error,
                request_headers: sender::masked(&headers),
                request_body: delivery.body,
                response_code: result.response_code,
                response_body: result.response_body,
                start_time: start,
                end_time: end,
            }),
        }
    }
}

/// Writes outcomes in batches. A batch that cannot be written is retried for a while; if the
/// database stays away it is dropped, and the leases expire so the deliveries are sent again.
async fn record(store: Arc<dyn Store>, mut outcomes: mpsc::Receiver<DeliveryOutcome>) {
    const TRIES: u32 = 20;
    let mut batch = Vec::with_capacity(MAX_RECORD_BATCH);
    while outcomes.recv_many(&mut batch, MAX_RECORD_BATCH).await > 0 {
        for tried in 1..=TRIES {
            match store.record_outcomes(&batch).await {
                Ok(()) => break,
                Err(error) if tried == TRIES => {
                    tracing::error!(%error, lost = batch.len(), "giving up recording outcomes; they will be re-sent");
                }
                Err(error) => {
                    tracing::warn!(%error, "recording outcomes failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        batch.clear();
    }
}

fn millis(duration: Duration) -> EpochMillis {
    EpochMillis::try_from(duration.as_millis()).unwrap_or(EpochMillis::MAX)
}
