//! The dashboard's data (docs/contract.md §6.5): the pipeline's progress per stage
//! (`GET /api/v1/pipeline`) and the warehouse's aggregates (`GET /api/v1/summary`).
//!
//! Both are cheap to ask for however often: the aggregates scan whole datamarts, so each is
//! cached for at least [`MIN_TTL`] and at least [`TTL_FACTOR`] times as long as it took to
//! compute (so that even on a large warehouse they take at most a fifth of a core); the
//! pipeline is sampled from the broker by the service on a fixed cadence (`sampler`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde::Serialize;
use tokio::sync::Mutex;
use uuid::Uuid;
use vault_runtime::{PgPool, Settings};

use crate::sampler::{History, Pipeline, Sampler};
use crate::tables::CounterTable;
use crate::tags;

/// The shortest time an aggregate is kept.
pub const MIN_TTL: Duration = Duration::from_secs(2);
/// An aggregate is kept this many times as long as it took to compute.
pub const TTL_FACTOR: u32 = 5;
/// How many categories and dishes the summary lists.
const TOP: i64 = 10;
/// How many of the latest dead letters the summary lists.
const RECENT_DEAD_LETTERS: i64 = 20;

/// A value computed at most once per its time to live. When it is stale, one asker computes
/// it again while the others get the stale value at once; only when there is no value yet do
/// they wait for the computation in flight.
#[derive(Debug)]
pub struct Cached<T> {
    slot: std::sync::Mutex<Option<Entry<T>>>,
    /// Held by the one asker computing the value.
    computing: Mutex<()>,
}

/// A cached value, when it was taken, and until when it is fresh.
type Entry<T> = (Arc<T>, DateTime<Utc>, Instant);

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Self {
            slot: std::sync::Mutex::new(None),
            computing: Mutex::new(()),
        }
    }
}

impl<T> Cached<T> {
    /// The cached value if fresh (or stale while another asker computes it), else the result
    /// of `compute` (an error is not cached).
    pub async fn get<F, Fut>(&self, compute: F) -> anyhow::Result<Arc<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        if let Some((value, true)) = self.current() {
            return Ok(value);
        }
        let _computing = match self.computing.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                if let Some((value, _)) = self.current() {
                    return Ok(value);
                }
                self.computing.lock().await
            }
        };
        // Someone may have computed it while this asker waited for the lock.
        if let Some((value, true)) = self.current() {
            return Ok(value);
        }
        let started = Instant::now();
        let value = Arc::new(compute().await?);
        let ttl = MIN_TTL.max(started.elapsed() * TTL_FACTOR);
        *self.lock_slot() = Some((value.clone(), Utc::now(), Instant::now() + ttl));
        Ok(value)
    }

    /// When the cached value was taken.
    pub fn taken_at(&self) -> Option<DateTime<Utc>> {
        self.lock_slot().as_ref().map(|(_, at, _)| *at)
    }

    /// The value and whether it is fresh.
    fn current(&self) -> Option<(Arc<T>, bool)> {
        self.lock_slot()
            .as_ref()
            .map(|(value, _, fresh_until)| (value.clone(), Instant::now() < *fresh_until))
    }

    fn lock_slot(&self) -> std::sync::MutexGuard<'_, Option<Entry<T>>> {
        // The slot is only ever replaced whole, so a panic elsewhere cannot leave it torn.
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The dashboard's data sources.
#[derive(Debug)]
pub struct Overview {
    /// Holders per tag, shared by `/api/v1/tags` and the summary.
    holders: Cached<BTreeMap<String, i64>>,
    summary: Cached<Summary>,
    pipeline: Arc<Sampler>,
}

impl Overview {
    pub fn new(settings: &Settings) -> Self {
        Self {
            holders: Cached::default(),
            summary: Cached::default(),
            pipeline: Sampler::new(settings.kafka.clone(), settings.pipeline.clone()),
        }
    }

    /// How many users hold each tag (tags nobody holds are absent).
    pub async fn holders(&self, pool: &PgPool) -> anyhow::Result<Arc<BTreeMap<String, i64>>> {
        self.holders
            .get(|| async {
                let mut conn = pool.get().await?;
                let rows: Vec<TagHolders> = diesel::sql_query(
                    "SELECT tag, count(*) AS holders FROM cdm.user_tags GROUP BY tag",
                )
                .load(&mut conn)
                .await?;
                Ok(rows.into_iter().map(|row| (row.tag, row.holders)).collect())
            })
            .await
    }

    pub fn holders_as_of(&self) -> Option<DateTime<Utc>> {
        self.holders.taken_at()
    }

    pub async fn summary(&self, pool: &PgPool) -> anyhow::Result<Arc<Summary>> {
        let holders = self.holders(pool).await?;
        self.summary
            .get(|| async {
                let mut conn = pool.get().await?;
                let orders: OrderCounts = diesel::sql_query(
                    "SELECT count(*) AS seen, count(*) FILTER (WHERE counted) AS counted \
                     FROM cdm.order_state",
                )
                .get_result(&mut conn)
                .await?;
                let dead_letters: Vec<DeadLetters> = diesel::sql_query(
                    "SELECT service, count(*) AS total, \
                            count(*) FILTER (WHERE replayed_at IS NULL) AS pending, \
                            max(received_at) AS last_at \
                     FROM ops.dead_letters GROUP BY service ORDER BY service",
                )
                .load(&mut conn)
                .await?;
                // Never `key` or `payload`: the reader role may not read them (roles.rs).
                let recent: Vec<DeadLetter> = diesel::sql_query(
                    "SELECT service, topic, partition, \"offset\", error_kind, reason, \
                            received_at, replayed_at IS NOT NULL AS replayed \
                     FROM ops.dead_letters ORDER BY received_at DESC, id DESC LIMIT $1",
                )
                .bind::<BigInt, _>(RECENT_DEAD_LETTERS)
                .load(&mut conn)
                .await?;
                // The same query on both datamarts; each row type names its key and label.
                let top = |CounterTable { table, key, name }: CounterTable| {
                    format!(
                        "SELECT {key}, max({name}) AS {name}, \
                                sum(order_cnt)::bigint AS order_cnt, \
                                count(*) FILTER (WHERE order_cnt > 0) AS users \
                         FROM {table} GROUP BY {key} \
                         HAVING sum(order_cnt) > 0 ORDER BY 3 DESC, 2, 1 LIMIT $1"
                    )
                };
                let top_categories: Vec<TopCategory> =
                    diesel::sql_query(top(CounterTable::CATEGORIES))
                        .bind::<BigInt, _>(TOP)
                        .load(&mut conn)
                        .await?;
                let top_products: Vec<TopProduct> = diesel::sql_query(top(CounterTable::PRODUCTS))
                    .bind::<BigInt, _>(TOP)
                    .load(&mut conn)
                    .await?;
                let rules = tags::store::rules(&mut conn).await?;
                let mut tags: BTreeMap<String, TagSummary> = holders
                    .iter()
                    .map(|(tag, holders)| {
                        let summary = TagSummary {
                            tag: tag.clone(),
                            holders: *holders,
                            rule: false,
                            enabled: false,
                        };
                        (tag.clone(), summary)
                    })
                    .collect();
                for rule in rules {
                    let entry = tags.entry(rule.tag.clone()).or_insert(TagSummary {
                        tag: rule.tag,
                        holders: 0,
                        rule: true,
                        enabled: rule.enabled,
                    });
                    entry.rule = true;
                    entry.enabled = rule.enabled;
                }
                Ok(Summary {
                    generated_at: Utc::now(),
                    orders,
                    dead_letters: DeadLetterSummary {
                        total: dead_letters.iter().map(|d| d.total).sum(),
                        pending: dead_letters.iter().map(|d| d.pending).sum(),
                        by_service: dead_letters,
                        recent,
                    },
                    top_categories,
                    top_products,
                    tags: tags.into_values().collect(),
                })
            })
            .await
    }

    pub async fn pipeline(&self) -> Arc<Pipeline> {
        self.pipeline.latest().await
    }

    pub async fn pipeline_history(&self) -> History {
        self.pipeline.history().await
    }
}

#[derive(QueryableByName)]
struct TagHolders {
    #[diesel(sql_type = Text)]
    tag: String,
    #[diesel(sql_type = BigInt)]
    holders: i64,
}

/// `GET /api/v1/summary`.
#[derive(Debug, Serialize)]
pub struct Summary {
    generated_at: DateTime<Utc>,
    orders: OrderCounts,
    dead_letters: DeadLetterSummary,
    top_categories: Vec<TopCategory>,
    top_products: Vec<TopProduct>,
    tags: Vec<TagSummary>,
}

#[derive(Debug, Serialize, QueryableByName)]
struct OrderCounts {
    /// Orders the datamart has applied a version of.
    #[diesel(sql_type = BigInt)]
    seen: i64,
    /// Orders that count now (latest version CLOSED, docs/contract.md §3.3).
    #[diesel(sql_type = BigInt)]
    counted: i64,
}

#[derive(Debug, Serialize)]
struct DeadLetterSummary {
    total: i64,
    /// Not replayed yet.
    pending: i64,
    by_service: Vec<DeadLetters>,
    /// The latest ones, newest first: where, why and when (no key, no payload).
    recent: Vec<DeadLetter>,
}

#[derive(Debug, Serialize, QueryableByName)]
struct DeadLetter {
    #[diesel(sql_type = Text)]
    service: String,
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    offset: i64,
    #[diesel(sql_type = Text)]
    error_kind: String,
    #[diesel(sql_type = Text)]
    reason: String,
    #[diesel(sql_type = Timestamptz)]
    received_at: DateTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    replayed: bool,
}

#[derive(Debug, Serialize, QueryableByName)]
struct DeadLetters {
    #[diesel(sql_type = Text)]
    service: String,
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = BigInt)]
    pending: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, QueryableByName)]
struct TopCategory {
    #[diesel(sql_type = SqlUuid)]
    category_id: Uuid,
    #[diesel(sql_type = Text)]
    category_name: String,
    /// The sum of the users' counters: orders counted for the category, over all users.
    #[diesel(sql_type = BigInt)]
    order_cnt: i64,
    /// Users with at least one counted order in it.
    #[diesel(sql_type = BigInt)]
    users: i64,
}

#[derive(Debug, Serialize, QueryableByName)]
struct TopProduct {
    #[diesel(sql_type = SqlUuid)]
    product_id: Uuid,
    #[diesel(sql_type = Text)]
    product_name: String,
    #[diesel(sql_type = BigInt)]
    order_cnt: i64,
    #[diesel(sql_type = BigInt)]
    users: i64,
}

#[derive(Debug, Serialize)]
struct TagSummary {
    tag: String,
    holders: i64,
    /// Whether a rule defines the tag (holders without one are being revoked).
    rule: bool,
    enabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cached_value_is_computed_once_while_fresh() {
        let cache: Cached<u32> = Cached::default();
        let first = cache.get(|| async { Ok(1) }).await.expect("computed");
        let second = cache.get(|| async { Ok(2) }).await.expect("cached");
        assert_eq!((*first, *second), (1, 1));
        assert!(cache.taken_at().is_some());
    }

    #[tokio::test]
    async fn a_stale_value_is_served_while_another_asker_computes_it() {
        let cache: Cached<u32> = Cached::default();
        cache.get(|| async { Ok(1) }).await.expect("computed");
        // Made stale by hand, then one asker starts computing and holds the lock.
        if let Some(entry) = cache.lock_slot().as_mut() {
            entry.2 = Instant::now();
        }
        let computing = cache.computing.lock().await;
        let stale = cache.get(|| async { Ok(2) }).await.expect("stale");
        assert_eq!(*stale, 1);
        drop(computing);
        assert_eq!(*cache.get(|| async { Ok(3) }).await.expect("recomputed"), 3);
    }

    #[tokio::test]
    async fn an_error_is_not_cached() {
        let cache: Cached<u32> = Cached::default();
        assert!(cache.get(|| async { anyhow::bail!("down") }).await.is_err());
        assert_eq!(*cache.get(|| async { Ok(3) }).await.expect("computed"), 3);
    }
}
