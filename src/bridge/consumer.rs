//! One queue's consumer. Messages are taken in batches of what has arrived; each batch is mapped,
//! checked for targets in one query (a message no callback wants is acked with no lookup, as bk-ci
//! does), looked up, and committed to the outbox in one transaction; only then is each message
//! acked. A lookup that fails is retried with backoff on its own while the rest of its batch goes
//! on, and parked after `BKCI_ENRICH_ATTEMPTS`. A message that is not what its exchange carries,
//! or that the database refuses, is parked at once. Nothing is acked before its fate is durable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::acks::Acks;
use super::body::{self, PipelineEvent, ProjectCallbackEvent};
use super::message::{self, Mapped, Need, Wanted};
use super::topology::{self, Exchange};
use super::{Shared, parked};
use crate::delivery::intake::{self, EventAnswer, IntakeError};
use crate::domain::{EventRoute, NewEvent};
use crate::telemetry::names;

/// Most messages handled as one batch.
const BATCH: usize = 256;
/// Batches of one queue in hand at once (the prefetch bounds the messages).
const BATCHES_IN_FLIGHT: usize = 4;
/// Longest wait between attempts to reach the broker or the database.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Consumes `exchange` until `stop`, attaching again with backoff whenever the broker goes away.
pub(super) async fn consume(shared: Arc<Shared>, exchange: Exchange, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(500);
    while !stop.is_cancelled() {
        match Session::attach(&shared, exchange).await {
            Ok(session) => {
                tracing::info!(exchange = exchange.name, queue = %session.queue, "consuming bk-ci's bus");
                backoff = Duration::from_millis(500);
                metrics::gauge!(names::BUS_CONSUMING, "exchange" => exchange.name).set(1.0);
                shared.status.attached(exchange.name, Ok(()));
                session.run(&shared, &stop).await;
                metrics::gauge!(names::BUS_CONSUMING, "exchange" => exchange.name).set(0.0);
                shared.status.detached(exchange.name);
            }
            Err(error) => {
                tracing::warn!(
                    exchange = exchange.name,
                    %error,
                    retry_in_ms = backoff.as_millis() as u64,
                    "cannot consume bk-ci's bus"
                );
                shared
                    .status
                    .attached(exchange.name, Err(error.to_string()));
            }
        }
        if !sleep_unless_stopped(backoff, &stop).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Sleeps for `delay`; false when `stop` came first.
async fn sleep_unless_stopped(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = stop.cancelled() => false,
    }
}

/// A channel consuming our queue on one exchange.
struct Session {
    exchange: Exchange,
    queue: String,
    channel: Channel,
    consumer: Consumer,
    acks: Arc<Acks>,
}

impl Session {
    async fn attach(shared: &Shared, exchange: Exchange) -> lapin::Result<Self> {
        let config = &shared.config;
        let channel = shared.link.channel().await?;
        // Confirms, so a parked message is acked only once the broker holds its copy.
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        topology::declare_durable(&channel, &topology::parked_queue(&config.queue_prefix)).await?;
        let queue =
            topology::attach(&channel, &exchange, config.declare, &config.queue_prefix).await?;
        channel
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            exchange,
            queue,
            channel,
            consumer,
            acks: Arc::default(),
        })
    }

    /// Handles batches until `stop` or until the channel breaks.
    async fn run(self, shared: &Arc<Shared>, stop: &CancellationToken) {
        let tag = self.consumer.tag();
        let mut batches = self.consumer.ready_chunks(BATCH);
        let mut in_flight = JoinSet::new();
        loop {
            while in_flight.len() >= BATCHES_IN_FLIGHT {
                in_flight.join_next().await;
            }
            let next = tokio::select! {
                next = batches.next() => next,
                () = stop.cancelled() => break,
            };
            let Some(items) = next else {
                tracing::warn!(
                    exchange = self.exchange.name,
                    "the broker ended the consumer"
                );
                break;
            };
            let mut deliveries = Vec::with_capacity(items.len());
            let mut broken = None;
            for item in items {
                match item {
                    Ok(delivery) => {
                        // Before any handler may settle it, so no ack can cover it early.
                        self.acks.received(delivery.delivery_tag);
                        deliveries.push(delivery);
                    }
                    Err(error) => broken = Some(error),
                }
            }
            if !deliveries.is_empty() {
                let handler = Handler {
                    shared: shared.clone(),
                    exchange: self.exchange,
                    channel: self.channel.clone(),
                    acks: self.acks.clone(),
                    stop: stop.clone(),
                };
                in_flight.spawn(async move { handler.batch(deliveries).await });
            }
            if let Some(error) = broken {
                tracing::warn!(exchange = self.exchange.name, %error, "lost the channel to the broker");
                break;
            }
        }
        if stop.is_cancelled() {
            // No new deliveries; those already sent to us go back to the queue.
            let _ = self
                .channel
                .basic_cancel(tag, BasicCancelOptions::default())
                .await;
            while let Ok(Some(items)) =
                tokio::time::timeout(Duration::from_millis(500), batches.next()).await
            {
                for delivery in items.into_iter().flatten() {
                    requeue(self.exchange, &self.acks, &delivery).await;
                }
            }
        }
        while in_flight.join_next().await.is_some() {}
        // Closing hands every message still unacked back to the broker.
        let _ = self.channel.close(200, "done".into()).await;
    }
}

/// A batch's work, with what it needs.
struct Handler {
    shared: Arc<Shared>,
    exchange: Exchange,
    channel: Channel,
    acks: Arc<Acks>,
    stop: CancellationToken,
}

/// A message that becomes an event, before or after its body is known.
struct Candidate {
    delivery: Delivery,
    wanted: Wanted,
}

impl Handler {
    async fn batch(&self, deliveries: Vec<Delivery>) {
        let received = Instant::now();
        self.count("consumed", deliveries.len());
        let mut candidates = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match message::map(self.exchange.family, self.exchange.name, &delivery.data) {
                Ok(Mapped::Wanted(wanted)) => candidates.push(Candidate { delivery, wanted }),
                Ok(Mapped::Dropped(reason)) => self.drop_message(&delivery, reason).await,
                Err(malformed) => self.park(&delivery, &malformed.to_string()).await,
            }
        }
        let Some(candidates) = self.with_targets(candidates).await else {
            // Stopping: what was dropped before still gets its ack.
            self.flush_acks().await;
            return;
        };
        let firsts = join_all(candidates.iter().map(|c| self.enrich(&c.wanted, received))).await;
        let mut ready = Vec::new();
        let mut failed = Vec::new();
        for (candidate, first) in candidates.into_iter().zip(firsts) {
            match first {
                Ok(Some(body)) => ready.push((candidate.delivery, event(candidate.wanted, body))),
                Ok(None) => self.drop_message(&candidate.delivery, "not_found").await,
                Err(error) => failed.push((candidate, error)),
            }
        }
        self.commit(ready).await;
        self.flush_acks().await;
        if !failed.is_empty() {
            join_all(
                failed
                    .into_iter()
                    .map(|(candidate, error)| self.retry(candidate, error)),
            )
            .await;
            self.flush_acks().await;
        }
    }

    /// The candidates some enabled callback wants; the others are acked as dropped. `None` when
    /// stopping while the database was unavailable (the batch went back to the broker).
    async fn with_targets(&self, candidates: Vec<Candidate>) -> Option<Vec<Candidate>> {
        if candidates.is_empty() {
            return Some(candidates);
        }
        let routes: Vec<EventRoute> = candidates.iter().map(|c| c.wanted.route.clone()).collect();
        let mut backoff = Duration::from_millis(200);
        let counts = loop {
            match self.shared.store.count_targets(&routes).await {
                Ok(counts) => break counts,
                Err(error) => {
                    tracing::warn!(exchange = self.exchange.name, %error, "cannot read the callbacks; holding the batch");
                    if !sleep_unless_stopped(backoff, &self.stop).await {
                        for candidate in &candidates {
                            self.requeue(&candidate.delivery).await;
                        }
                        return None;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let mut wanted = Vec::with_capacity(candidates.len());
        for (candidate, count) in candidates.into_iter().zip(counts) {
            if count == 0 {
                self.drop_message(&candidate.delivery, "no_target").await;
            } else {
                wanted.push(candidate);
            }
        }
        Some(wanted)
    }

    /// The body bk-ci would send; `Ok(None)` when bk-ci sends nothing (no such pipeline or
    /// project); `Err` when a lookup failed.
    async fn enrich(&self, wanted: &Wanted, since: Instant) -> Result<Option<String>, String> {
        let lookups = &self.shared.lookups;
        let event = wanted.route.event;
        match &wanted.need {
            Need::Nothing(body) => Ok(Some(body.clone())),
            Need::Build(build) => {
                let record = lookups
                    .build_record(build, since)
                    .await
                    .map_err(|e| e.to_string())?;
                let body = record
                    .body(
                        event,
                        &build.build,
                        &build.project,
                        build.stage_id.as_deref(),
                        build.task_id.as_deref(),
                    )
                    .map_err(|e| e.to_string())?;
                Ok(Some(body))
            }
            Need::Pipeline(pipeline) => {
                let row = lookups
                    .pipeline(pipeline, since)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(row.map(|row| {
                    body::envelope(
                        event,
                        &PipelineEvent {
                            pipeline_id: pipeline.pipeline.clone(),
                            pipeline_name: row.name,
                            user_id: row.last_modify_user,
                            update_time: row.update_time,
                            project_id: pipeline.project.clone(),
                        },
                    )
                }))
            }
            Need::ProjectName {
                english_name,
                user_id,
                enable,
            } => {
                let name = lookups
                    .project_name(english_name, since)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(name.map(|project_name| {
                    body::envelope(
                        event,
                        &ProjectCallbackEvent {
                            project_id: english_name.clone(),
                            project_name,
                            enable: *enable,
                            user_id: user_id.clone(),
                        },
                    )
                }))
            }
        }
    }

    /// Tries a failed lookup again with backoff, then commits, drops or parks the message.
    async fn retry(&self, candidate: Candidate, mut error: String) {
        let config = &self.shared.config;
        let mut delay = config.enrich_backoff;
        for attempt in 2..=config.enrich_attempts {
            tracing::warn!(exchange = self.exchange.name, event_id = candidate.wanted.event_id.as_str(), %error, attempt, "a lookup failed; trying again");
            if !sleep_unless_stopped(delay, &self.stop).await {
                self.requeue(&candidate.delivery).await;
                return;
            }
            delay = (delay * 2).min(MAX_BACKOFF);
            match self.enrich(&candidate.wanted, Instant::now()).await {
                Ok(Some(body)) => {
                    let ready = vec![(candidate.delivery, event(candidate.wanted, body))];
                    return self.commit(ready).await;
                }
                Ok(None) => return self.drop_message(&candidate.delivery, "not_found").await,
                Err(again) => error = again,
            }
        }
        let reason = format!("lookups failed {} times: {error}", config.enrich_attempts);
        self.park(&candidate.delivery, &reason).await;
    }

    /// Commits the events in one transaction and acks their messages. When the database refuses
    /// one, the others still commit and it is parked; while the database is unavailable the
    /// messages are held (unacked, so safe in the broker) and tried again, until `stop` hands
    /// them back.
    async fn commit(&self, ready: Vec<(Delivery, NewEvent)>) {
        if ready.is_empty() {
            return;
        }
        let (deliveries, events): (Vec<Delivery>, Vec<NewEvent>) = ready.into_iter().unzip();
        let mut backoff = Duration::from_millis(200);
        loop {
            let shared = &self.shared;
            match intake::publish(shared.store.clone(), &shared.wake, events.clone()).await {
                Ok(_) => {
                    for delivery in &deliveries {
                        self.ack(delivery);
                    }
                    return;
                }
                Err(IntakeError::Refused { answers, .. }) => {
                    for (delivery, answer) in deliveries.iter().zip(answers) {
                        match answer {
                            EventAnswer::Stored(_) => self.ack(delivery),
                            EventAnswer::Refused { reason, .. } => {
                                self.park(delivery, &format!("the database refused it: {reason}"))
                                    .await;
                            }
                        }
                    }
                    return;
                }
                Err(error) => {
                    tracing::warn!(exchange = self.exchange.name, %error, events = events.len(), "cannot commit; holding the messages");
                    if !sleep_unless_stopped(backoff, &self.stop).await {
                        for delivery in &deliveries {
                            self.requeue(delivery).await;
                        }
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Acks a message bk-ci would send nothing for.
    async fn drop_message(&self, delivery: &Delivery, reason: &'static str) {
        metrics::counter!(names::BUS_DROPPED, "exchange" => self.exchange.name, "reason" => reason)
            .increment(1);
        self.ack(delivery);
    }

    /// The message is handled: acked with others by the next `flush_acks`.
    fn ack(&self, delivery: &Delivery) {
        self.acks.ready(delivery.delivery_tag, &delivery.acker);
    }

    async fn flush_acks(&self) {
        let acked = self.acks.flush().await;
        self.count("acked", acked);
    }

    async fn requeue(&self, delivery: &Delivery) {
        requeue(self.exchange, &self.acks, delivery).await;
    }

    /// Moves the message to the parked queue, then acks it; if the broker does not take the copy,
    /// the message goes back to its queue instead.
    async fn park(&self, delivery: &Delivery, reason: &str) {
        match parked::park(
            &self.channel,
            &self.shared.config.queue_prefix,
            self.exchange,
            delivery,
            reason,
        )
        .await
        {
            Ok(()) => {
                tracing::error!(
                    exchange = self.exchange.name,
                    reason,
                    "parked a bk-ci message"
                );
                self.count("parked", 1);
                let _ = delivery.ack(BasicAckOptions::default()).await;
                self.acks.forget(delivery.delivery_tag);
            }
            Err(error) => {
                tracing::error!(exchange = self.exchange.name, reason, %error, "could not park a bk-ci message; it goes back to the queue");
                self.requeue(delivery).await;
            }
        }
    }

    fn count(&self, outcome: &'static str, n: usize) {
        metrics::counter!(names::BUS_MESSAGES, "exchange" => self.exchange.name, "outcome" => outcome)
            .increment(n as u64);
    }
}

/// Hands a message back to its queue for another consumer (or this one, later).
async fn requeue(exchange: Exchange, acks: &Acks, delivery: &Delivery) {
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    acks.forget(delivery.delivery_tag);
    if delivery.nack(options).await.is_ok() {
        metrics::counter!(names::BUS_MESSAGES, "exchange" => exchange.name, "outcome" => "requeued")
            .increment(1);
    }
}

fn event(wanted: Wanted, body: String) -> NewEvent {
    NewEvent {
        route: wanted.route,
        event_id: wanted.event_id,
        body,
    }
}
