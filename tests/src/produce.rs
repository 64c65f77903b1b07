//! Producing test messages and learning where the broker put each one (partition, offset),
//! for tests that assert on positions: a dead letter's source offset, a rewind's target, the
//! good messages on either side of a poisoned one.

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::Stack;

/// One message to produce.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub key: String,
    pub payload: Vec<u8>,
    /// The message timestamp (CreateTime, ms since the epoch); `None`: the producer's clock.
    pub timestamp_ms: Option<i64>,
}

impl Outgoing {
    pub fn new(key: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            payload: payload.into(),
            timestamp_ms: None,
        }
    }
}

/// Where the broker put one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub partition: i32,
    pub offset: i64,
}

/// Produces `messages` to `topic` through an idempotent producer, all enqueued at once (so
/// per key they keep their order), and returns where each landed, in the order given.
pub async fn produce_placed(
    stack: &Stack,
    topic: &str,
    messages: &[Outgoing],
) -> anyhow::Result<Vec<Placed>> {
    let producer: FutureProducer = stack
        .kafka_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .context("creating a producer")?;
    let mut deliveries = Vec::with_capacity(messages.len());
    for message in messages {
        let mut record = FutureRecord::to(topic)
            .key(message.key.as_bytes())
            .payload(&message.payload);
        if let Some(timestamp_ms) = message.timestamp_ms {
            record = record.timestamp(timestamp_ms);
        }
        let delivery = producer
            .send_result(record)
            .map_err(|(error, _)| anyhow!("enqueueing {}: {error}", message.key))?;
        deliveries.push(delivery);
    }
    let mut placed = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let delivered = tokio::time::timeout(Duration::from_secs(60), delivery)
            .await
            .context("no delivery report within 60 s")?
            .context("the producer dropped a delivery report")?
            .map_err(|(error, _)| anyhow!("the broker did not acknowledge a message: {error}"))?;
        placed.push(Placed {
            partition: delivered.partition,
            offset: delivered.offset,
        });
    }
    Ok(placed)
}
