//! The bk-ci bus bridge: takes bk-ci's own RabbitMQ broadcasts (build status, pipeline and project
//! changes), turns each into the event bk-ci would send, and commits it to the outbox like any
//! intake; on only when `BKCI_AMQP_URL` is set.
//!
//! - `topology`: bk-ci's exchanges, our queues on them, how they are declared.
//! - `message`: what a message means for callbacks, from the message alone (bk-ci's drops too).
//! - `lookup`: the build record, pipeline row and project name bk-ci's bodies need, shared between
//!   messages that need them at the same time.
//! - `body`: the webhook bodies, field for field as bk-ci writes them.
//! - `consumer`: one queue's loop: batches, the target check, lookups with retries, the commit,
//!   then the ack (or parking, or a requeue when stopping).
//! - `acks`: a channel's acks, several messages to one `basic.ack`.
//! - `parked`: the dead-letter queue of messages that could not be turned into events, and its
//!   replay.
//! - `status`: where each queue stands, for the console.

mod acks;
mod body;
mod consumer;
mod lookup;
mod message;
mod parked;
mod status;
mod topology;

use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use parked::replay_parked;
pub use status::QueueState;

use crate::config::{BridgeConfig, ConfigError};
use crate::store::DeliveryQueue;
use crate::telemetry::names;
use lookup::Lookups;
use topology::EXCHANGES;

/// The bridge, ready to run.
pub struct Bridge {
    shared: Arc<Shared>,
}

/// What every queue's consumer uses.
struct Shared {
    config: BridgeConfig,
    store: Arc<dyn DeliveryQueue>,
    wake: Arc<Notify>,
    lookups: Lookups,
    link: Link,
    status: status::Status,
}

impl Bridge {
    /// Fails on a `BKCI_MYSQL_URL` that is not a MySQL URL; nothing is contacted yet.
    pub fn new(
        config: BridgeConfig,
        store: Arc<dyn DeliveryQueue>,
        wake: Arc<Notify>,
    ) -> Result<Self, ConfigError> {
        let lookups = Lookups::new(&config).map_err(|e| ConfigError {
            name: e.lookup,
            value: "***".to_owned(),
            reason: e.reason,
        })?;
        Ok(Self {
            shared: Arc::new(Shared {
                link: Link::new(&config),
                status: status::Status::new(&config.queue_prefix),
                config,
                store,
                wake,
                lookups,
            }),
        })
    }

    /// Each of our queues (the parked one last): consumed or not, why not, and its depth.
    pub fn status(&self) -> Vec<QueueState> {
        self.shared.status.snapshot()
    }

    /// Consumes every exchange until `stop`; then stops consuming, lets the messages in hand
    /// finish, and hands the rest back to the broker.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tasks = JoinSet::new();
        for exchange in EXCHANGES {
            tasks.spawn(consumer::consume(
                self.shared.clone(),
                exchange,
                stop.clone(),
            ));
        }
        tasks.spawn(watch_depth(self.shared.clone(), stop));
        while tasks.join_next().await.is_some() {}
        self.shared.link.close().await;
    }
}

/// The connection to the broker, shared by the queues' channels and made again when it breaks.
struct Link {
    url: crate::secrets::Secret,
    current: tokio::sync::Mutex<Option<Connection>>,
}

impl Link {
    fn new(config: &BridgeConfig) -> Self {
        Self {
            url: config.amqp_url.clone(),
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// A new channel, connecting first when there is no live connection.
    async fn channel(&self) -> lapin::Result<Channel> {
        let mut current = self.current.lock().await;
        if let Some(connection) = current.as_ref().filter(|c| c.status().connected()) {
            return connection.create_channel().await;
        }
        let properties =
            ConnectionProperties::default().with_connection_name("devops-callbacks".into());
        let connection = Connection::connect(self.url.expose(), properties).await?;
        let channel = connection.create_channel().await?;
        *current = Some(connection);
        Ok(channel)
    }

    async fn close(&self) {
        if let Some(connection) = self.current.lock().await.take() {
            let _ = connection.close(200, "shutting down".into()).await;
        }
    }
}

/// The consumer lag: how many messages wait in each of our queues (and the parked queue), read
/// from the broker every few seconds into `devops_callbacks_bus_queue_depth`.
async fn watch_depth(shared: Arc<Shared>, stop: CancellationToken) {
    let prefix = &shared.config.queue_prefix;
    let queues: Vec<String> = EXCHANGES
        .iter()
        .map(|e| e.queue(prefix))
        .chain([topology::parked_queue(prefix)])
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut channel: Option<Channel> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        for queue in &queues {
            if channel.as_ref().is_none_or(|c| !c.status().connected()) {
                channel = shared.link.channel().await.ok();
            }
            let Some(open) = &channel else { break };
            // Passive: a queue not declared yet (its exchange is missing) is skipped, not made;
            // the broker closes the channel over it, so the next queue takes a new one.
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            match open
                .queue_declare(queue.as_str().into(), options, FieldTable::default())
                .await
            {
                Ok(declared) => {
                    metrics::gauge!(names::BUS_QUEUE_DEPTH, "queue" => queue.clone())
                        .set(f64::from(declared.message_count()));
                    shared.status.depth(queue, declared.message_count());
                }
                Err(_) => channel = None,
            }
        }
    }
}
