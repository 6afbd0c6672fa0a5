//! bk-ci's exchanges, the queues the bridge binds to them, and how they are declared.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::config::DeclareMode;

/// What an exchange carries, which decides how its messages are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `PipelineBuildStatusBroadCastEvent`: the 9 BUILD_* callbacks.
    Build,
    PipelineCreate,
    PipelineUpdate,
    PipelineDelete,
    PipelineRestore,
    StreamEnabled,
    ProjectCreate,
    ProjectUpdate,
    /// `ProjectEnableStatusBroadCastEvent`: PROJECT_ENABLE or PROJECT_DISABLE.
    ProjectEnable,
}

/// One of bk-ci's exchanges that callbacks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    pub name: &'static str,
    pub family: Family,
}

/// Every exchange bk-ci's callback consumers bind to (bkci-dropin §5.1).
pub const EXCHANGES: [Exchange; 9] = [
    Exchange {
        name: "engine.pipeline.build.callback.fanout",
        family: Family::Build,
    },
    Exchange {
        name: "engine.pipeline.create",
        family: Family::PipelineCreate,
    },
    Exchange {
        name: "engine.pipeline.update",
        family: Family::PipelineUpdate,
    },
    Exchange {
        name: "engine.pipeline.delete",
        family: Family::PipelineDelete,
    },
    Exchange {
        name: "engine.pipeline.restore",
        family: Family::PipelineRestore,
    },
    Exchange {
        name: "engine.pipeline.stream.enabled",
        family: Family::StreamEnabled,
    },
    Exchange {
        name: "project.create.exchange.fanout",
        family: Family::ProjectCreate,
    },
    Exchange {
        name: "project.update.exchange.fanout",
        family: Family::ProjectUpdate,
    },
    Exchange {
        name: "project.enable.exchange.fanout",
        family: Family::ProjectEnable,
    },
];

impl Exchange {
    /// Our own queue on this exchange, named as Spring Cloud Stream names a consumer group's
    /// (`<destination>.<group>`), so operators find it beside bk-ci's and never confuse the two.
    pub fn queue(&self, prefix: &str) -> String {
        format!("{}.{prefix}", self.name)
    }

    /// The exchange with this name, when it is one of bk-ci's.
    pub fn named(name: &str) -> Option<Self> {
        EXCHANGES.iter().copied().find(|e| e.name == name)
    }
}

/// Where messages that cannot be turned into events wait for an operator: a durable queue of
/// ours, replayed with `devops-callbacks bus replay-parked`.
pub fn parked_queue(prefix: &str) -> String {
    format!("{prefix}.parked")
}

/// Declares (or, in passive mode, checks) the exchange, then declares our durable queue and binds
/// it with `#` so it receives every message, whatever its routing key.
pub async fn attach(
    channel: &Channel,
    exchange: &Exchange,
    mode: DeclareMode,
    prefix: &str,
) -> lapin::Result<String> {
    let (kind, arguments) = match mode {
        DeclareMode::Passive | DeclareMode::Topic => (ExchangeKind::Topic, FieldTable::default()),
        DeclareMode::Delayed => {
            let mut arguments = FieldTable::default();
            arguments.insert(
                "x-delayed-type".into(),
                AMQPValue::LongString("topic".into()),
            );
            (ExchangeKind::Custom("x-delayed-message".into()), arguments)
        }
    };
    let options = ExchangeDeclareOptions {
        passive: mode == DeclareMode::Passive,
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(exchange.name.into(), kind, options, arguments)
        .await?;
    let queue = exchange.queue(prefix);
    declare_durable(channel, &queue).await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.name.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(queue)
}

/// Declares a durable queue of ours (idempotent) and answers how many messages it holds.
pub async fn declare_durable(channel: &Channel, queue: &str) -> lapin::Result<u32> {
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    Ok(declared.message_count())
}
