//! The staging step, one batch at a time: decode, look the dictionaries up in one Redis round
//! trip, enrich, then in one transaction upsert `stg.order_events`, keep the rejects, and
//! publish the enriched orders; the transaction commits only once the broker acknowledged them.

use std::collections::{BTreeSet, HashMap};

use bb8_redis::redis::AsyncCommands;
use diesel::sql_types::{Array, BigInt, Jsonb, Text, Timestamptz};
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde_json::Value;
use vault_core::decode::{self, RawOrderMessage};
use vault_core::enrich::enrich;
use vault_core::{EntityId, Restaurant, User};
use vault_runtime::dead_letter::{self, DeadLetter};
use vault_runtime::kafka::{self, FutureProducer, InMessage, OutMessage};
use vault_runtime::stores::{PgPool, RedisPool};
use vault_runtime::{Context, Failure, Handler, Outcome};

pub struct StgHandler {
    service: &'static str,
    pg: PgPool,
    redis: RedisPool,
    producer: FutureProducer,
    destination: String,
}

impl std::fmt::Debug for StgHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StgHandler")
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

impl StgHandler {
    pub fn new(context: &Context) -> anyhow::Result<Self> {
        let missing = |what: &str| anyhow::anyhow!("service-stg needs {what}");
        Ok(Self {
            service: context.settings.service,
            pg: context.pg.clone(),
            redis: context.redis.clone().ok_or_else(|| missing("Redis"))?,
            producer: context
                .producer
                .clone()
                .ok_or_else(|| missing("a producer"))?,
            destination: context
                .settings
                .kafka
                .destination_topic
                .clone()
                .ok_or_else(|| missing("KAFKA_DESTINATION_TOPIC"))?,
        })
    }

    /// Fetches every user and restaurant the orders refer to in one MGET.
    async fn dictionaries(
        &self,
        orders: &[(usize, RawOrderMessage)],
    ) -> Result<HashMap<EntityId, String>, Failure> {
        let ids: BTreeSet<&EntityId> = orders
            .iter()
            .flat_map(|(_, m)| [&m.order.payload.user.id, &m.order.payload.restaurant.id])
            .collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let keys: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
        let mut conn = self.redis.get().await?;
        let values: Vec<Option<String>> = conn.mget(&keys).await?;
        Ok(ids
            .into_iter()
            .zip(values)
            .filter_map(|(id, value)| value.map(|v| (id.clone(), v)))
            .collect())
    }
}

/// A staged order: the row for `stg.order_events`.
struct StagedRow {
    object_id: i64,
    object_type: String,
    sent_dttm: chrono::DateTime<chrono::Utc>,
    update_ts: chrono::DateTime<chrono::Utc>,
    payload: Value,
}

impl Handler for StgHandler {
    async fn handle(&self, batch: &[InMessage]) -> Result<Outcome, Failure> {
        let mut rejects = Vec::new();
        let mut decoded = Vec::with_capacity(batch.len());
        for (index, message) in batch.iter().enumerate() {
            match decode::raw_order(message.payload()) {
                Ok(order) => decoded.push((index, order)),
                Err(error) => {
                    rejects.push(DeadLetter::new(message, error.kind(), error.to_string()))
                }
            }
        }

        let dictionaries = self.dictionaries(&decoded).await?;
        let mut rows = HashMap::<i64, StagedRow>::new();
        let mut published = Vec::with_capacity(decoded.len());
        for (index, message) in &decoded {
            let order = &message.order;
            let p = &order.payload;
            let user = lookup::<User>(&dictionaries, &p.user.id, decode::user);
            let restaurant =
                lookup::<Restaurant>(&dictionaries, &p.restaurant.id, decode::restaurant);
            let (user, restaurant) = match (user, restaurant) {
                (Ok(user), Ok(restaurant)) => (user, restaurant),
                (Err(reason), _) | (_, Err(reason)) => {
                    rejects.push(DeadLetter::new(
                        &batch[*index],
                        "invalid_dictionary_entry",
                        reason,
                    ));
                    continue;
                }
            };
            match enrich(order, user.as_ref(), restaurant.as_ref()) {
                Ok(enriched) => {
                    let payload =
                        serde_json::to_vec(&enriched).map_err(|e| Failure::Suspect(e.into()))?;
                    published.push(OutMessage {
                        key: order.object_id.to_string(),
                        payload,
                    });
                }
                Err(error) => {
                    rejects.push(DeadLetter::new(
                        &batch[*index],
                        error.kind(),
                        error.to_string(),
                    ));
                    continue;
                }
            }
            // Within a batch, the newest version of an order is the one staged.
            let row = StagedRow {
                object_id: order.object_id.0,
                object_type: order.object_type.clone(),
                sent_dttm: order.sent_dttm.as_datetime(),
                update_ts: p.update_ts.as_datetime(),
                payload: message
                    .document
                    .get("payload")
                    .cloned()
                    .unwrap_or(Value::Null),
            };
            match rows.get(&row.object_id) {
                Some(existing) if existing.update_ts >= row.update_ts => {}
                _ => {
                    rows.insert(row.object_id, row);
                }
            }
        }
        for letter in &rejects {
            tracing::warn!(topic = %letter.topic, partition = letter.partition, offset = letter.offset,
                kind = %letter.kind, reason = %letter.reason, "Rejected a message; kept it as a dead letter.");
        }

        let mut rows: Vec<StagedRow> = rows.into_values().collect();
        rows.sort_by_key(|row| row.object_id);
        let service = self.service;
        let mut conn = self.pg.get().await?;
        conn.transaction::<_, Failure, _>(async |conn| {
            upsert_orders(conn, &rows).await?;
            dead_letter::insert(conn, service, &rejects).await?;
            kafka::publish(&self.producer, &self.destination, &published).await?;
            Ok(())
        })
        .await?;
        Ok(Outcome {
            processed: published.len() as u64,
            rejected: rejects.len() as u64,
            produced: published.len() as u64,
        })
    }
}

/// Decodes a dictionary entry; `Ok(None)` when absent, `Err` when present but invalid.
fn lookup<T>(
    dictionaries: &HashMap<EntityId, String>,
    id: &EntityId,
    parse: fn(&[u8]) -> Result<T, decode::DecodeError>,
) -> Result<Option<T>, String> {
    match dictionaries.get(id) {
        None => Ok(None),
        Some(text) => parse(text.as_bytes())
            .map(Some)
            .map_err(|e| format!("dictionary entry `{id}` is invalid: {e}")),
    }
}

/// Upserts the newest version of each order: an older or equal version never replaces a
/// newer one.
async fn upsert_orders(
    conn: &mut diesel_async::AsyncPgConnection,
    rows: &[StagedRow],
) -> diesel::QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    diesel::sql_query(
        "INSERT INTO stg.order_events (object_id, object_type, sent_dttm, update_ts, payload) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[], \
                              $5::jsonb[]) \
         ON CONFLICT (object_id) DO UPDATE SET \
             object_type = EXCLUDED.object_type, sent_dttm = EXCLUDED.sent_dttm, \
             update_ts = EXCLUDED.update_ts, payload = EXCLUDED.payload, load_dt = now() \
         WHERE stg.order_events.update_ts < EXCLUDED.update_ts",
    )
    .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.object_id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(
        rows.iter()
            .map(|r| r.object_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Timestamptz>, _>(rows.iter().map(|r| r.sent_dttm).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(rows.iter().map(|r| r.update_ts).collect::<Vec<_>>())
    .bind::<Array<Jsonb>, _>(rows.iter().map(|r| r.payload.clone()).collect::<Vec<_>>())
    .execute(conn)
    .await
}
