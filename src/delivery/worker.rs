//! The delivery workers of one process: a dispatcher that leases due deliveries while there are
//! free slots, one task per attempt, and a recorder that writes outcomes in batches.
//!
//! Isolation: first attempts and retries are claimed in separate lanes (retries get at most a
//! quarter of the slots while fresh events wait), and each host may hold at most
//! `DELIVERY_MAX_IN_FLIGHT_PER_HOST` attempts. Claimed deliveries beyond a host's cap wait in a
//! queue of that host, short enough that even behind attempts that all time out they start
//! within their lease, and go as soon as one of its attempts ends; a host whose queue is full is
//! left out of claims, so a dead or slow receiver cannot take the slots of healthy ones.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, HumanDuration};
use crate::delivery::outcome::{self, Judged, Verdict};
use crate::delivery::retry::RetrySchedule;
use crate::delivery::sender::{self, Sender};
use crate::domain::{
    Attempt, DeliveryOutcome, DeliveryStatus, DeliveryTarget, EpochMillis, millis, now_millis,
};
use crate::secrets::Secret;
use crate::store::{Claim, ClaimedDelivery, DeliveryQueue, DisableRule, Lane};
use crate::store::{StoreError, warn_unless_unavailable};
use crate::telemetry::names;

/// Most deliveries leased in one claim.
const MAX_CLAIM: usize = 256;
/// Most outcomes written in one transaction.
const MAX_RECORD_BATCH: usize = 512;
/// A host at its cap with no attempt finished for this long is stalled: once per this period its
/// due deliveries are moved out of the claims' way for one delivery timeout.
const STALL: Duration = Duration::from_secs(1);
/// Shortest idle wait, so deliveries that are due but held back (busy host) cause no spin.
const IDLE_FLOOR: Duration = Duration::from_millis(50);

pub struct Workers {
    store: Arc<dyn DeliveryQueue>,
    sender: Arc<Sender>,
    retry: RetrySchedule,
    wake: Arc<Notify>,
    /// Rung when a busy host's queue has drained to half: a claim for it alone is worth making.
    refill: Notify,
    concurrency: usize,
    per_host: usize,
    timeout: Duration,
    /// Most claimed deliveries waiting for one host.
    queue_cap: usize,
    lease: Duration,
    poll: Duration,
    grace: Duration,
    disable_after: Duration,
    /// Attempts in flight, and claimed deliveries waiting, per host.
    hosts: Mutex<HashMap<String, HostLoad>>,
    /// Set when the process stops: queued deliveries are then handed back, not started.
    stopping: std::sync::atomic::AtomicBool,
    /// Claimed deliveries not yet handed to the recorder: released if shutdown cuts them off.
    held: Mutex<HashMap<i64, (String, u32)>>,
}

impl Workers {
    pub fn new(
        config: &Config,
        store: Arc<dyn DeliveryQueue>,
        sender: Arc<Sender>,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            sender,
            retry: RetrySchedule::new(config.retry_schedule.clone()),
            wake,
            refill: Notify::new(),
            concurrency: config.delivery_concurrency,
            per_host: config.max_in_flight_per_host,
            timeout: config.delivery_timeout,
            queue_cap: queue_capacity(config),
            lease: config.delivery_lease,
            poll: config.delivery_poll,
            grace: config.shutdown_grace,
            disable_after: config.callback_disable_after,
            hosts: Mutex::new(HashMap::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Delivers until `stop` is cancelled. Then it claims nothing more, lets attempts in flight
    /// finish within the grace period, hands back the leases of those it had to cut off, and
    /// writes every outcome.
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
        // Room for a whole batch while the recorder writes the previous one: with room for one
        // slot's worth only, attempts waited on each commit and the commit rate bounded delivery.
        let (outcomes, recorded) = mpsc::channel(MAX_RECORD_BATCH.max(workers.concurrency));
        let recorder = tokio::spawn(record(
            workers.store.clone(),
            recorded,
            workers.disable_after,
            workers.lease,
            workers.wake.clone(),
        ));
        let mut in_flight = JoinSet::new();
        workers.dispatch(&stop, &mut in_flight, &outcomes).await;
        workers
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        watcher.abort();

        let drained = tokio::time::timeout(workers.grace, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            in_flight.shutdown().await;
            tracing::warn!("attempts still running after the grace period were stopped");
        }
        // Whatever was claimed but not attempted to the end (cut off, or still queued for its
        // host) goes back for another process at once.
        let unfinished: Vec<(i64, (String, u32))> = workers.held.lock().drain().collect();
        if !unfinished.is_empty() {
            tracing::info!(
                released = unfinished.len(),
                "handing unfinished deliveries back"
            );
        }
        for (id, (token, attempts)) in unfinished {
            let _ = outcomes
                .send(put_back(id, token, attempts, now_millis()))
                .await;
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
        // Whether the next claim may look for hosts not seen yet: not when only a busy host's
        // queue drained, since then the due backlog is most likely that host's own.
        let mut discover = true;
        loop {
            let first_slot = tokio::select! {
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                () = stop.cancelled() => return,
            };
            while in_flight.try_join_next().is_some() {}
            self.defer_stalled_hosts().await;
            let wanted = self.wanted(slots.available_permits() + 1, discover);
            if wanted == 0 {
                // Every host seen is busy: wait for one to drain, new events, or the poll.
                drop(first_slot);
                let Some(next) = self.idle(self.poll, stop).await else {
                    return;
                };
                discover = next;
                continue;
            }
            let fresh_limit = wanted - wanted / 4;
            let (fresh, retries) = match self.claim(fresh_limit, wanted).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    warn_unless_unavailable(
                        &error,
                        "claiming due deliveries failed; retrying in 1 s",
                    );
                    drop(first_slot);
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = stop.cancelled() => return,
                    }
                }
            };
            let more_due = fresh.len() == fresh_limit || fresh.len() + retries.len() == wanted;
            let mut first_slot = Some(first_slot);
            for delivery in fresh.into_iter().chain(retries) {
                let delivery = match self.admit(delivery) {
                    Admission::Start(delivery) => delivery,
                    Admission::Queued => continue,
                    Admission::Full(delivery) => {
                        metrics::counter!(names::DELIVERIES, "outcome" => "deferred").increment(1);
                        // Due again at once: its host is now left out of claims until it has room.
                        let outcome = put_back(
                            delivery.id,
                            delivery.claim_token,
                            delivery.attempts,
                            now_millis(),
                        );
                        let _ = outcomes.send(outcome).await;
                        continue;
                    }
                };
                let slot = match first_slot.take() {
                    Some(slot) => slot,
                    None => slots.clone().acquire_owned().await.expect("never closed"),
                };
                in_flight.spawn(self.clone().attempt(delivery, outcomes.clone(), slot));
            }
            drop(first_slot);
            discover = false;
            if more_due {
                continue;
            }
            // With busy hosts left out, what is due now is most likely theirs: the next-due time
            // would say "now" again and again, so wait for a wake-up instead.
            let wait = if self.busy_hosts().is_empty() {
                self.until_next_due().await
            } else {
                self.poll
            };
            let Some(next) = self.idle(wait, stop).await else {
                return;
            };
            discover = next;
        }
    }

    /// Waits for a wake-up or `wait`; `Some(discover)` for the next claim, `None` once stopped.
    async fn idle(&self, wait: Duration, stop: &CancellationToken) -> Option<bool> {
        tokio::select! {
            () = self.refill.notified() => Some(false),
            () = self.wake.notified() => Some(true),
            () = tokio::time::sleep(wait) => Some(true),
            () = stop.cancelled() => None,
        }
    }

    /// Claims first attempts (up to `fresh_limit`), then retries for the rest of `wanted`.
    async fn claim(
        &self,
        fresh_limit: usize,
        wanted: usize,
    ) -> Result<(Vec<ClaimedDelivery>, Vec<ClaimedDelivery>), StoreError> {
        let busy_hosts = self.busy_hosts();
        let now = now_millis();
        let claim = |lane, limit: usize| Claim {
            now,
            lease_until: now + millis(self.lease),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            lane,
            busy_hosts: &busy_hosts,
        };
        let fresh = self
            .store
            .claim_due(&claim(Lane::First, fresh_limit))
            .await?;
        let retries = match wanted - fresh.len() {
            0 => Vec::new(),
            room => self.store.claim_due(&claim(Lane::Retry, room)).await?,
        };
        Ok((fresh, retries))
    }

    /// Moves the backlog of stalled hosts (all places taken, nothing finished for `STALL`) one
    /// delivery timeout ahead: left where it is, every claim would walk past it again.
    async fn defer_stalled_hosts(&self) {
        let stalled: Vec<String> = {
            let mut hosts = self.hosts.lock();
            let now = std::time::Instant::now();
            hosts
                .iter_mut()
                .filter(|(_, load)| {
                    load.in_flight >= self.per_host
                        && load.last_progress.is_some_and(|at| now - at >= STALL)
                        && load.deferred_until.is_none_or(|until| until <= now)
                })
                .map(|(host, load)| {
                    load.deferred_until = Some(now + STALL);
                    host.clone()
                })
                .collect()
        };
        for host in stalled {
            let now = now_millis();
            match self
                .store
                .defer_host(&host, now, now + millis(self.timeout))
                .await
            {
                Ok(moved) if moved > 0 => {
                    tracing::info!(%host, moved, "host stalled; its due deliveries wait")
                }
                Ok(_) => {}
                Err(error) => {
                    warn_unless_unavailable(&error, "deferring a stalled host's deliveries failed")
                }
            }
        }
    }

    /// How many deliveries to claim with `free_slots`: what the hosts seen here can still take
    /// (attempts up to their cap, then their queue, which needs no slot), plus, when `discover`
    /// or when no host is seen, room for hosts not seen yet: every free slot while no host is at
    /// its cap, else one, because then the due backlog is most likely that host's. Claiming more
    /// than a host can take only leases deliveries to hand them straight back.
    fn wanted(&self, free_slots: usize, discover: bool) -> usize {
        let hosts = self.hosts.lock();
        let known: usize = hosts
            .values()
            .map(|load| {
                self.per_host.saturating_sub(load.in_flight).min(free_slots)
                    + self.queue_cap.saturating_sub(load.queued.len())
            })
            .sum();
        let capped = hosts.values().any(|load| load.in_flight >= self.per_host);
        // A host that drained between its refill wake-up and this claim is gone from the map:
        // with no host seen, every claim may look for hosts.
        let unseen = match (discover || hosts.is_empty(), capped) {
            (false, _) => 0,
            (true, false) => free_slots,
            (true, true) => 1,
        };
        (known + unseen).min(MAX_CLAIM)
    }

    /// Hosts whose attempts and queue are both full: claims leave them out.
    fn busy_hosts(&self) -> Vec<String> {
        let hosts = self.hosts.lock();
        hosts
            .iter()
            .filter(|(_, load)| {
                load.in_flight >= self.per_host && load.queued.len() >= self.queue_cap
            })
            .map(|(host, _)| host.clone())
            .collect()
    }

    /// Starts a claimed delivery if its host has room, else queues it behind the host's attempts
    /// (then it counts as held, to be handed back if the process stops first).
    fn admit(&self, delivery: ClaimedDelivery) -> Admission {
        let mut hosts = self.hosts.lock();
        let load = hosts.entry(delivery.host.clone()).or_default();
        let held = (delivery.claim_token.clone(), delivery.attempts);
        load.last_progress
            .get_or_insert_with(std::time::Instant::now);
        if load.in_flight < self.per_host {
            load.in_flight += 1;
        } else if load.queued.len() < self.queue_cap {
            self.held.lock().insert(delivery.id, held);
            load.queued.push_back(delivery);
            load.backlogged = true;
            return Admission::Queued;
        } else {
            return Admission::Full(delivery);
        }
        self.held.lock().insert(delivery.id, held);
        Admission::Start(delivery)
    }

    /// After an attempt to `host`: its next queued delivery (which takes over the place), or
    /// `None` when nothing waits (the place is given up) or the process is stopping.
    fn next_for_host(&self, host: &str) -> Option<ClaimedDelivery> {
        let mut hosts = self.hosts.lock();
        let load = hosts.get_mut(host)?;
        load.last_progress = Some(std::time::Instant::now());
        let queued = load.queued.len();
        let next = if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            None
        } else {
            load.queued.pop_front()
        };
        // A claim for the host is worth its round trip once half its queue is free (or, with no
        // queue, once an attempt ends while it was left out of claims).
        let refill_at = self.queue_cap / 2;
        if (queued > refill_at && load.queued.len() <= refill_at)
            || (queued >= self.queue_cap && next.is_none())
        {
            self.refill.notify_one();
        }
        if next.is_some() {
            return next;
        }
        load.in_flight -= 1;
        if load.in_flight == 0 && load.queued.is_empty() {
            // A host whose deliveries had to queue may have more due than its last refill
            // claimed: once it is gone from the map, only a wake-up claims them before the poll.
            if load.backlogged {
                self.wake.notify_one();
            }
            hosts.remove(host);
        }
        None
    }

    /// Sleep until the next retry falls due, but never longer than the poll interval.
    async fn until_next_due(&self) -> Duration {
        match self.store.next_due_at().await {
            Ok(Some(due)) => match u64::try_from(due - now_millis()) {
                Ok(ahead) if ahead > 0 => Duration::from_millis(ahead).min(self.poll),
                _ => IDLE_FLOOR,
            },
            _ => self.poll,
        }
    }

    /// Delivers, then goes on with the deliveries queued for the same host, in the same slot.
    async fn attempt(
        self: Arc<Self>,
        mut delivery: ClaimedDelivery,
        outcomes: mpsc::Sender<DeliveryOutcome>,
        slot: OwnedSemaphorePermit,
    ) {
        loop {
            let (id, host) = (delivery.id, delivery.host.clone());
            let outcome = self.deliver(delivery).await;
            // Holding the slot until the recorder took the outcome keeps memory bounded.
            let _ = outcomes.send(outcome).await;
            self.held.lock().remove(&id);
            match self.next_for_host(&host) {
                Some(next) => delivery = next,
                None => break,
            }
        }
        drop(slot);
    }

    async fn deliver(&self, delivery: ClaimedDelivery) -> DeliveryOutcome {
        let target = match &delivery.target {
            Ok(target) => target,
            Err(reason) => {
                metrics::counter!(names::DELIVERIES, "outcome" => "cancelled").increment(1);
                return DeliveryOutcome {
                    delivery_id: delivery.id,
                    claim_token: Some(delivery.claim_token),
                    status: DeliveryStatus::Cancelled,
                    attempts: delivery.attempts,
                    next_attempt_at: now_millis(),
                    last_error: None,
                    cancel_reason: Some(reason.clone()),
                    attempt: None,
                    effect: None,
                };
            }
        };
        let number = delivery.attempts + 1;
        let mut judged = send_attempt(
            &self.sender,
            target,
            delivery.id,
            delivery.callback_id,
            delivery.event,
            number,
            delivery.body,
        )
        .await;
        judged.attempt.recover_job = delivery.recover_job;
        // A recovered delivery's schedule starts again at its recovery.
        let retry = self
            .retry
            .delay_after(number.saturating_sub(delivery.retry_base));
        let outcome = outcome::of_attempt(delivery.id, Some(delivery.claim_token), judged, retry);
        let label = match outcome.status {
            DeliveryStatus::Success => "success",
            DeliveryStatus::Pending => "retry",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        };
        metrics::counter!(names::DELIVERIES, "outcome" => label).increment(1);
        log_failure(&delivery.host, &outcome);
        if let Some(attempt) = &outcome.attempt {
            let took = u64::try_from(attempt.end_time - attempt.start_time).unwrap_or(0);
            metrics::histogram!(names::ATTEMPT_DURATION)
                .record(Duration::from_millis(took).as_secs_f64());
        }
        outcome
    }
}

/// Sends one attempt of delivery `delivery_id` to `target` with fresh headers and signature, and
/// returns it as history records it (token masked), judged under the sender's success rule.
pub async fn send_attempt(
    sender: &Sender,
    target: &DeliveryTarget,
    delivery_id: i64,
    callback_id: i64,
    event: crate::domain::CallbackEvent,
    number: u32,
    body: String,
) -> Judged {
    let start = now_millis();
    let headers = sender::delivery_headers(
        &delivery_id.to_string(),
        target.secret_token.as_ref().map(Secret::expose),
        &target.headers,
        &body,
        start / 1000,
    );
    let result = sender.send(&target.url, &headers, body.clone()).await;
    let verdict = Verdict::of(&result, sender.success);
    let attempt = Attempt {
        delivery_id: Some(delivery_id),
        callback_id,
        project_id: target.project_id.clone(),
        url: target.url.clone(),
        event,
        status: verdict.attempt_status(),
        attempt: number,
        error_msg: verdict.reason(&result),
        request_headers: sender::masked(&headers),
        request_body: body,
        response_code: result.response_code,
        response_body: result.response_body,
        start_time: start,
        end_time: now_millis(),
        manual: false,
        recover_job: None,
    };
    Judged {
        attempt,
        verdict,
        retry_after: result.retry_after,
    }
}

/// A failed attempt's line at the default level: which callback, where, what went wrong, and
/// when the next attempt is due, or that there will be none.
fn log_failure(host: &str, outcome: &DeliveryOutcome) {
    let Some(attempt) = &outcome.attempt else {
        return;
    };
    let reason = attempt.error_msg.as_deref().unwrap_or_default();
    match outcome.status {
        DeliveryStatus::Pending => tracing::warn!(
            callback_id = attempt.callback_id,
            delivery_id = outcome.delivery_id,
            %host,
            attempt = attempt.attempt,
            status = attempt.response_code,
            reason,
            next_attempt = %utc(outcome.next_attempt_at),
            "delivery attempt failed; retrying"
        ),
        DeliveryStatus::Failed => tracing::warn!(
            callback_id = attempt.callback_id,
            delivery_id = outcome.delivery_id,
            %host,
            attempt = attempt.attempt,
            status = attempt.response_code,
            reason,
            "delivery attempt failed; given up"
        ),
        DeliveryStatus::Success | DeliveryStatus::Cancelled => {}
    }
}

/// `2026-08-21T02:00:00.000Z`, as the log's own timestamps.
fn utc(at: EpochMillis) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// How many claimed deliveries may wait for one host: as many as fit before their lease runs out
/// even if every attempt ahead of them takes the whole timeout, and at most one process's worth.
fn queue_capacity(config: &Config) -> usize {
    let waves = config.delivery_lease.as_millis() / config.delivery_timeout.as_millis().max(1);
    let safe =
        config.max_in_flight_per_host * usize::try_from(waves.saturating_sub(1)).unwrap_or(0);
    safe.min(config.delivery_concurrency)
}

/// Attempts in flight to one host, and claimed deliveries waiting for a place.
#[derive(Default)]
struct HostLoad {
    in_flight: usize,
    queued: std::collections::VecDeque<ClaimedDelivery>,
    /// When an attempt to the host last finished (or the host was first seen).
    last_progress: Option<std::time::Instant>,
    /// When its backlog may be moved aside again (at most once per `STALL`).
    deferred_until: Option<std::time::Instant>,
    /// Whether a delivery for it had to wait in its queue.
    backlogged: bool,
}

enum Admission {
    Start(ClaimedDelivery),
    Queued,
    Full(ClaimedDelivery),
}

/// Hands a claimed delivery back unattempted, due again at `due`.
fn put_back(id: i64, claim_token: String, attempts: u32, due: EpochMillis) -> DeliveryOutcome {
    DeliveryOutcome {
        delivery_id: id,
        claim_token: Some(claim_token),
        status: DeliveryStatus::Pending,
        attempts,
        next_attempt_at: due,
        last_error: None,
        cancel_reason: None,
        attempt: None,
        effect: None,
    }
}

/// The rule that disables a callback failing since before now − `disable_after`.
pub fn disable_rule(disable_after: Duration) -> DisableRule {
    DisableRule {
        cutoff: now_millis() - millis(disable_after),
        reason: format!(
            "disabled after its deliveries failed without a success for {}",
            HumanDuration(disable_after)
        ),
    }
}

/// Writes outcomes in batches. While the database is unavailable (an outage, a switchover, a
/// restart) a batch is tried again every half second while its leases last; if the database
/// stays away longer it is dropped, and the deliveries are claimed and sent again. A batch the
/// database refuses for another reason is written outcome by outcome (`record_alone`), so one
/// bad outcome never costs the others theirs. A batch that leaves deliveries pending (retries,
/// put-backs) wakes the dispatcher: it went to sleep while they were leased, so its wait does
/// not know their due time yet.
async fn record(
    store: Arc<dyn DeliveryQueue>,
    mut outcomes: mpsc::Receiver<DeliveryOutcome>,
    disable_after: Duration,
    lease: Duration,
    wake: Arc<Notify>,
) {
    let recorder = Recorder {
        store,
        disable_after,
        lease,
    };
    let mut batch = Vec::with_capacity(MAX_RECORD_BATCH);
    while outcomes.recv_many(&mut batch, MAX_RECORD_BATCH).await > 0 {
        match recorder.record_while_available(&batch).await {
            Ok(()) => {}
            Err(error) if batch.len() > 1 => {
                tracing::warn!(%error, outcomes = batch.len(), "recording a batch of outcomes failed; recording them one by one");
                for outcome in &batch {
                    recorder.record_alone(outcome).await;
                }
            }
            Err(_) => recorder.record_alone(&batch[0]).await,
        }
        if batch
            .iter()
            .any(|outcome| outcome.status == DeliveryStatus::Pending)
        {
            wake.notify_one();
        }
        batch.clear();
    }
}

struct Recorder {
    store: Arc<dyn DeliveryQueue>,
    disable_after: Duration,
    lease: Duration,
}

impl Recorder {
    /// Records `outcomes`, trying again while the database is unavailable and the leases last
    /// (then gives up after logging); returns any other error.
    async fn record_while_available(&self, outcomes: &[DeliveryOutcome]) -> Result<(), StoreError> {
        let give_up = tokio::time::Instant::now() + self.lease;
        loop {
            match self
                .store
                .record_outcomes(outcomes, &disable_rule(self.disable_after))
                .await
            {
                Ok(()) => return Ok(()),
                Err(error) if !error.is_unavailable() => return Err(error),
                Err(error) if tokio::time::Instant::now() >= give_up => {
                    tracing::error!(%error, lost = outcomes.len(), "giving up recording outcomes; they will be re-sent");
                    return Ok(());
                }
                // The store logs the outage once when it starts and once when it ends.
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// Records one outcome that a batch could not. If the database refuses it as it is, the
    /// attempt is recorded without what the receiver sent (its body and the error text), with
    /// a note saying why, so the delivery still gets its state and history; failing that too,
    /// it is logged and counted, and left to its lease (never retried in a loop).
    async fn record_alone(&self, outcome: &DeliveryOutcome) {
        let Err(error) = self
            .record_while_available(std::slice::from_ref(outcome))
            .await
        else {
            return;
        };
        let stripped = outcome.without_receiver_text(&format!(
            "the receiver's answer could not be stored: {error}"
        ));
        if let Err(error) = self
            .record_while_available(std::slice::from_ref(&stripped))
            .await
        {
            metrics::counter!(names::OUTCOMES_UNRECORDABLE).increment(1);
            tracing::error!(%error, delivery = outcome.delivery_id, "an outcome could not be recorded even without the receiver's answer; its lease will expire");
        }
    }
}
