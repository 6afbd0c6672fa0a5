//! The parked queue (`<prefix>.parked`): messages the bridge could not turn into events, kept
//! with the exchange they came from and why, until an operator replays them.

use std::collections::BTreeMap;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};

use super::Link;
use super::topology::{self, Exchange};
use crate::config::BridgeConfig;

/// The exchange a parked message came from.
const FROM_HEADER: &str = "x-devops-callbacks-exchange";
/// Why it was parked.
const REASON_HEADER: &str = "x-devops-callbacks-reason";

/// Why parking or a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ParkError {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error("the broker refused the copy")]
    Refused,
}

/// Publishes a copy of the message, with where it came from and why, to the parked queue on a
/// channel in confirm mode, and waits for the broker to hold it.
pub(super) async fn park(
    channel: &Channel,
    prefix: &str,
    exchange: Exchange,
    delivery: &Delivery,
    reason: &str,
) -> Result<(), ParkError> {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(
        FROM_HEADER.into(),
        AMQPValue::LongString(exchange.name.into()),
    );
    headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
    let properties = delivery
        .properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(2);
    let queue = topology::parked_queue(prefix);
    publish(channel, &queue, &delivery.data, properties).await
}

async fn publish(
    channel: &Channel,
    queue: &str,
    payload: &[u8],
    properties: BasicProperties,
) -> Result<(), ParkError> {
    let confirmation = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            payload,
            properties,
        )
        .await?
        .await?;
    if confirmation.is_ack() {
        Ok(())
    } else {
        Err(ParkError::Refused)
    }
}

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Put back on the queue of the exchange they came from.
    pub replayed: u64,
    /// Left parked: they name no exchange of bk-ci's.
    pub kept: u64,
}

/// Moves up to `limit` parked messages (all of those parked when it starts, at most) back to our
/// queue of the exchange each came from, where the running bridge takes them again. Only our
/// own queues receive them; bk-ci's consumers never see a replay.
pub async fn replay_parked(
    config: &BridgeConfig,
    limit: Option<u64>,
) -> Result<Replayed, ParkError> {
    let link = Link::new(config);
    let channel = link.channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let parked = topology::parked_queue(&config.queue_prefix);
    let waiting = u64::from(topology::declare_durable(&channel, &parked).await?);
    let mut done = Replayed::default();
    for _ in 0..limit.unwrap_or(waiting).min(waiting) {
        let Some(message) = channel
            .basic_get(parked.as_str().into(), BasicGetOptions::default())
            .await?
        else {
            break;
        };
        let delivery = message.delivery;
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let from = headers.inner().get(FROM_HEADER).and_then(header_text);
        let Some(exchange) = from.as_deref().and_then(Exchange::named) else {
            // Requeued at the tail, so the loop moves on to the next one.
            done.kept += 1;
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            delivery.nack(requeue).await?;
            continue;
        };
        let original: BTreeMap<_, _> = headers
            .inner()
            .iter()
            .filter(|(name, _)| ![FROM_HEADER, REASON_HEADER].contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let properties = delivery
            .properties
            .clone()
            .with_headers(FieldTable::from(original));
        let queue = exchange.queue(&config.queue_prefix);
        publish(&channel, &queue, &delivery.data, properties).await?;
        delivery.ack(BasicAckOptions::default()).await?;
        done.replayed += 1;
    }
    link.close().await;
    Ok(done)
}

fn header_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => Some(text.to_string()),
        AMQPValue::ShortString(text) => Some(ShortString::as_str(text).to_owned()),
        _ => None,
    }
}
