//! The outbox relay: every grant and revoke is written to `cdm.user_tag_events` in the
//! transaction that made it, and published from there to the tags topic, so only committed
//! changes are ever published.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::AsyncConnection;
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;
use vault_core::tags::TagEventMessage;
use vault_core::HashKey;
use vault_runtime::{OutMessage, PgPool, Status};

use super::store;

/// How often the outbox is checked when it was found empty.
pub const RELAY_POLL: Duration = Duration::from_millis(500);
/// Events published per outbox transaction.
const RELAY_BATCH: i64 = 1_000;
/// The advisory lock that lets one relay at a time publish, so a user's events keep their order
/// when several replicas run.
const RELAY_LOCK: i64 = 0x7661_756c_7461_6773;

/// Publishes the outbox's unpublished events to `topic` until `stop`, oldest first, keyed by
/// user, and marks them published in the transaction that read them, after the broker
/// acknowledged them: at least once, each with its deterministic id. One relay publishes at a
/// time (an advisory lock), so a user's events keep their order.
pub async fn relay_events(
    pool: PgPool,
    producer: FutureProducer,
    topic: String,
    status: Arc<Status>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    const COMPONENT: &str = "tag_outbox";
    loop {
        let published = match relay_once(&pool, &producer, &topic).await {
            Ok(published) => {
                status.component_ok(COMPONENT);
                published
            }
            Err(error) => {
                let cause = format!("cannot publish tag events: {error:#}");
                tracing::warn!(error = %cause, "Cannot publish tag events yet; retrying.");
                status.component_failed(COMPONENT, cause);
                0
            }
        };
        if published < RELAY_BATCH as usize {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
                () = tokio::time::sleep(RELAY_POLL) => {}
            }
        } else if *stop.borrow() {
            return Ok(());
        }
    }
}

/// One outbox transaction; returns how many events it published.
pub async fn relay_once(
    pool: &PgPool,
    producer: &FutureProducer,
    topic: &str,
) -> anyhow::Result<usize> {
    let mut conn = pool.get().await?;
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        if !store::try_lock(conn, RELAY_LOCK).await? {
            return Ok(0);
        }
        let rows = store::unpublished(conn, RELAY_BATCH).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let messages = rows
            .iter()
            .map(|row| {
                let user = HashKey::from_uuid(row.user_id);
                let message = TagEventMessage::new(
                    user,
                    &row.tag,
                    row.seq,
                    i64::from(row.order_cnt),
                    row.at.to_rfc3339(),
                );
                Ok(OutMessage {
                    key: user.to_string(),
                    payload: serde_json::to_vec(&message)?,
                    // The change's time is the payload's `at`; the Kafka timestamp is when it
                    // was published.
                    sent_ms: None,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        vault_runtime::publish(producer, topic, &messages).await?;
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        store::mark_published(conn, ids).await?;
        Ok(rows.len())
    })
    .await
}
