//! The staging stage: decode raw orders, look the dictionaries up in one Redis round trip
//! (pausing when Redis holds none at all), enrich, then in one transaction upsert
//! `stg.order_events`, keep the rejects, and publish the enriched orders; the transaction
//! commits only once the broker acknowledged them.

use std::collections::{BTreeSet, HashMap};

use diesel::sql_types::{Array, BigInt, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::value::RawValue;
use vault_core::decode::{self, RawOrderMessage};
use vault_core::enrich::enrich;
use vault_core::{version, EntityId, Restaurant, Timestamp, User};
use vault_runtime::{
    Entry, Failure, InMessage, OutMessage, ProbeKeys, RedisPool, Rejection, Rejects, Settings,
    Stage, TableAccess,
};

use crate::dictionaries;

/// The staging stage.
pub struct StgStage {
    redis: RedisPool,
}

impl std::fmt::Debug for StgStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StgStage").finish_non_exhaustive()
    }
}

impl StgStage {
    /// Fetches every user and restaurant the orders refer to in one MGET.
    async fn dictionaries(
        &self,
        orders: &[Entry<RawOrderMessage>],
    ) -> Result<HashMap<EntityId, String>, Failure> {
        let ids: BTreeSet<&EntityId> = orders
            .iter()
            .flat_map(|m| {
                let payload = &m.item.order.payload;
                [&payload.user.id, &payload.restaurant.id]
            })
            .collect();
        dictionaries::fetch(&self.redis, ids).await
    }
}

/// A staged order: the row for `stg.order_events`.
struct StagedRow {
    object_id: i64,
    object_type: String,
    sent_dttm: chrono::DateTime<chrono::Utc>,
    update_ts: chrono::DateTime<chrono::Utc>,
    /// JSON text, as the message held it.
    payload: Box<RawValue>,
}

impl Stage for StgStage {
    type Item = RawOrderMessage;
    type Needs = RedisPool;
    const PUBLISHES: bool = true;
    fn tables() -> Vec<TableAccess> {
        vec![TableAccess::granted(
            "stg.order_events",
            vec![
                "object_id",
                "object_type",
                "sent_dttm",
                "update_ts",
                "payload",
                "load_dt",
            ],
        )]
    }

    fn new(redis: RedisPool, _: &Settings) -> anyhow::Result<Self> {
        Ok(Self { redis })
    }

    fn decode(&self, message: &InMessage) -> Result<RawOrderMessage, Rejection> {
        Ok(decode::raw_order(message.payload())?)
    }

    /// One made-up order version, upserted as a batch's are.
    async fn probe(&self, conn: &mut AsyncPgConnection) -> Result<(), Failure> {
        let now = chrono::Utc::now();
        let row = StagedRow {
            object_id: ProbeKeys::new().id(),
            object_type: "probe".to_owned(),
            sent_dttm: now,
            update_ts: now,
            payload: RawValue::from_string("{}".to_owned())?,
        };
        upsert_orders(conn, &[row]).await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut AsyncPgConnection,
        orders: Vec<Entry<RawOrderMessage>>,
        rejects: &mut Rejects<'_>,
    ) -> Result<Vec<OutMessage>, Failure> {
        let dictionaries = self.dictionaries(&orders).await?;
        // Each entry is decoded once per batch, however many orders name it: a restaurant's
        // menu is the largest document the stage reads.
        let mut users: HashMap<EntityId, Result<Option<User>, String>> = HashMap::new();
        let mut restaurants: HashMap<EntityId, Result<Option<Restaurant>, String>> = HashMap::new();
        let mut rows = HashMap::<i64, StagedRow>::new();
        let mut published = Vec::with_capacity(orders.len());
        for mut entry in orders {
            let order = &entry.item.order;
            let p = &order.payload;
            if !users.contains_key(&p.user.id) {
                let user = lookup(&dictionaries, &p.user.id, decode::user);
                users.insert(p.user.id.clone(), user);
            }
            if !restaurants.contains_key(&p.restaurant.id) {
                let restaurant = lookup(&dictionaries, &p.restaurant.id, decode::restaurant);
                restaurants.insert(p.restaurant.id.clone(), restaurant);
            }
            let (user, restaurant) = match (&users[&p.user.id], &restaurants[&p.restaurant.id]) {
                (Ok(user), Ok(restaurant)) => (user.as_ref(), restaurant.as_ref()),
                (Err(reason), _) | (_, Err(reason)) => {
                    let reason = reason.clone();
                    rejects.reject(&entry, Rejection::new("invalid_dictionary_entry", reason));
                    continue;
                }
            };
            let enriched = match enrich(order, user, restaurant) {
                Ok(enriched) => enriched,
                Err(error) => {
                    rejects.reject(&entry, Rejection::new(error.kind(), error.to_string()));
                    continue;
                }
            };
            published.push(OutMessage {
                key: order.object_id.to_string(),
                sent_ms: entry.sent_ms,
                payload: serde_json::to_vec(&enriched)?,
            });
            let (object_id, update_ts) = (order.object_id.0, p.update_ts);
            let current = rows
                .get(&object_id)
                .map(|existing| Timestamp::from_datetime(existing.update_ts));
            // Within a batch, the newest version of an order is the one staged (the database
            // applies the same rule against what is stored: a newer `update_ts` only).
            if version::is_newer(update_ts, current) {
                let row = StagedRow {
                    object_id,
                    object_type: order.object_type.clone(),
                    sent_dttm: order.sent_dttm.as_datetime(),
                    update_ts: update_ts.as_datetime(),
                    // Taken, not copied: the text is not needed after this.
                    payload: std::mem::replace(&mut entry.item.payload, RawValue::NULL.to_owned()),
                };
                rows.insert(object_id, row);
            }
        }
        let mut rows: Vec<StagedRow> = rows.into_values().collect();
        rows.sort_by_key(|row| row.object_id);
        upsert_orders(conn, &rows).await?;
        Ok(published)
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
    conn: &mut AsyncPgConnection,
    rows: &[StagedRow],
) -> diesel::QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    diesel::sql_query(
        // The payloads are cast row by row: a cast of the bound array itself would be folded
        // into a constant while the statement is planned, parsing every document there.
        "INSERT INTO stg.order_events (object_id, object_type, sent_dttm, update_ts, payload) \
         SELECT id, kind, sent, ts, doc::jsonb \
         FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[]) \
             AS u(id, kind, sent, ts, doc) \
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
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.payload.get()).collect::<Vec<_>>())
    .execute(conn)
    .await
}
