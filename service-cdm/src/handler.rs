//! The datamart step, one batch at a time, in one transaction: lock the state of every order
//! in the batch (`cdm.order_state`), run each incoming version through the pure counter
//! transition ([`vault_core::counter::transition`]), then apply the netted deltas and the new
//! states. Because the state records what was applied and what it counted, duplicates,
//! replays and older versions yield no delta, and CLOSED→CANCELLED retracts exactly what was
//! counted.

use std::collections::{BTreeMap, BTreeSet};

use prometheus_client::registry::Registry;

use crate::tables::{self, CounterTable};
use crate::verify::CheckMetrics;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tokio::sync::watch;
use uuid::Uuid;
use vault_core::contract::{EntityId, OrderId, OrderStatus};
use vault_core::counter::{transition, Deltas, OrderCountState, OrderVersion, Transition};
use vault_core::events::order_version;
use vault_core::{decode, HashKey, Timestamp};
use vault_runtime::{
    Companion, Context, Entry, Failure, InMessage, OutMessage, ProbeKeys, Rejection, Rejects,
    Settings, Stage, TableAccess,
};

/// The datamart stage.
#[derive(Debug)]
pub struct CdmStage {
    /// The periodic counter check's result, exported beside the runtime's metrics.
    check_metrics: CheckMetrics,
}

#[derive(QueryableByName)]
struct StateRow {
    #[diesel(sql_type = SqlUuid)]
    order_id: Uuid,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    user_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    update_ts: Option<chrono::DateTime<chrono::Utc>>,
    #[diesel(sql_type = Bool)]
    counted: bool,
    #[diesel(sql_type = Array<SqlUuid>)]
    product_ids: Vec<Uuid>,
    #[diesel(sql_type = Array<SqlUuid>)]
    category_ids: Vec<Uuid>,
}

impl StateRow {
    fn into_state(self) -> Option<(HashKey, OrderCountState)> {
        let key = HashKey::from_uuid(self.order_id);
        Some((
            key,
            OrderCountState {
                version: Timestamp::from_datetime(self.update_ts?),
                user: HashKey::from_uuid(self.user_id?),
                counted: self.counted,
                products: self
                    .product_ids
                    .into_iter()
                    .map(HashKey::from_uuid)
                    .collect(),
                categories: self
                    .category_ids
                    .into_iter()
                    .map(HashKey::from_uuid)
                    .collect(),
            },
        ))
    }
}

impl Stage for CdmStage {
    type Item = OrderVersion;
    type Needs = ();
    const PUBLISHES: bool = false;
    fn tables() -> Vec<TableAccess> {
        vec![
            TableAccess::granted(
                tables::ORDER_STATE,
                vec![
                    "order_id",
                    "user_id",
                    "update_ts",
                    "counted",
                    "product_ids",
                    "category_ids",
                    "updated_at",
                ],
            ),
            TableAccess::granted(
                CounterTable::PRODUCTS.table,
                vec![
                    "user_id",
                    CounterTable::PRODUCTS.key,
                    CounterTable::PRODUCTS.name,
                    "order_cnt",
                    "updated_at",
                ],
            ),
            TableAccess::granted(
                CounterTable::CATEGORIES.table,
                vec![
                    "user_id",
                    CounterTable::CATEGORIES.key,
                    CounterTable::CATEGORIES.name,
                    "order_cnt",
                    "updated_at",
                ],
            ),
            // Read, and locked in SHARE mode, which Postgres allows with UPDATE.
            TableAccess::granted(
                tables::TAG_RULES,
                vec!["tag", "scope", "target", "threshold", "enabled"],
            ),
            TableAccess::granted(
                tables::USER_TAGS,
                vec!["user_id", "tag", "order_cnt", "granted_at", "updated_at"],
            ),
            TableAccess::granted(
                tables::USER_TAG_EVENTS,
                vec![
                    "event_id",
                    "user_id",
                    "tag",
                    "seq",
                    "event",
                    "order_cnt",
                    "at",
                ],
            ),
        ]
    }

    fn new((): (), _: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            check_metrics: CheckMetrics::default(),
        })
    }

    fn register_metrics(&self, registry: &mut Registry) {
        self.check_metrics.register(registry);
    }

    fn decode(&self, message: &InMessage) -> Result<OrderVersion, Rejection> {
        let events = decode::cdm_events(message.payload())?;
        order_version(&events).map_err(|e| Rejection::new(e.kind(), e.to_string()))
    }

    async fn apply(
        &self,
        conn: &mut AsyncPgConnection,
        versions: Vec<Entry<OrderVersion>>,
        _: &mut Rejects<'_>,
    ) -> Result<Vec<OutMessage>, Failure> {
        count(conn, versions.iter().map(|entry| &entry.item)).await?;
        Ok(Vec::new())
    }

    /// One made-up CLOSED order of a new user, counted as a batch's are: its state, both
    /// counters, and the tags it settles (the rules' lock included); and a made-up tag granted
    /// to that user, since no rule names the made-up category.
    async fn probe(&self, conn: &mut AsyncPgConnection) -> Result<(), Failure> {
        let keys = ProbeKeys::new();
        let entity = |n| EntityId::parse(&keys.entity(n)).map_err(|e| Failure::Systemic(e.into()));
        let name = format!("probe {}", keys.entity(0));
        let version = OrderVersion {
            order: HashKey::order(OrderId(keys.id())),
            user: HashKey::user(&entity(1)?),
            version: Timestamp::from_datetime(chrono::Utc::now()),
            status: OrderStatus::Closed,
            products: BTreeMap::from([(HashKey::product(&entity(2)?), name.clone())]),
            categories: BTreeMap::from([(HashKey::category(&name), name.clone())]),
        };
        count(conn, [&version]).await?;
        crate::tags::probe_grant(conn, version.user, &name).await?;
        Ok(())
    }

    /// The read API and the dashboard (docs/contract.md §6.4, §6.5).
    fn routes(&self, context: &vault_runtime::Context) -> Option<vault_runtime::Routes> {
        Some(crate::api::routes(context))
    }

    /// The templates of the API's routes and the dashboard's, for the request metrics.
    fn route_name(path: &str) -> Option<&'static str> {
        use crate::api::Route;
        if path == "/" {
            return Some("/");
        }
        Some(match Route::of(path).ok()? {
            Route::UserCounters(_) => "/api/v1/users/{user}/counters",
            Route::UserTags(_) => "/api/v1/users/{user}/tags",
            Route::Tags => "/api/v1/tags",
            Route::TagUsers(_) => "/api/v1/tags/{tag}/users",
            Route::Pipeline => "/api/v1/pipeline",
            Route::PipelineHistory => "/api/v1/pipeline/history",
            Route::Summary => "/api/v1/summary",
            Route::OpenApi => "/api/v1/openapi.json",
        })
    }

    /// The rule watcher and the tag outbox relay (see `tags.rs`), and the periodic counter
    /// check (`verify.rs`; `VERIFY_INTERVAL_SECONDS`, 0 turns it off).
    fn companions(
        &self,
        context: &Context,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Vec<Companion>> {
        let settings = &context.settings;
        let topic = settings.kafka.destination_topic.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "invalid configuration: KAFKA_DESTINATION_TOPIC: is required by {} (the tag events)",
                settings.service
            )
        })?;
        let producer = vault_runtime::producer(&settings.kafka)?;
        let mut companions: Vec<Companion> = vec![
            Box::pin(crate::tags::watch_rules(
                context.pool.clone(),
                context.status.clone(),
                stop.clone(),
            )),
            Box::pin(crate::tags::relay_events(
                context.pool.clone(),
                producer,
                topic,
                context.status.clone(),
                stop.clone(),
            )),
        ];
        if let Some(every) = settings.verify_every {
            companions.push(Box::pin(crate::verify::check_periodically(
                crate::verify::check_pool(&settings.postgres),
                context.status.clone(),
                self.check_metrics.clone(),
                every,
                stop,
            )));
        }
        Ok(companions)
    }
}

/// Runs `versions` (in arrival order) through the counter transition against the stored
/// states and applies the netted deltas, the new states and the tags they settle, in the
/// caller's transaction (a batch's, the probe's, or a test's).
pub async fn count<'v>(
    conn: &mut AsyncPgConnection,
    versions: impl IntoIterator<Item = &'v OrderVersion>,
) -> Result<(), Failure> {
    let versions: Vec<&OrderVersion> = versions.into_iter().collect();
    let orders: BTreeSet<Uuid> = versions.iter().map(|v| v.order.as_uuid()).collect();
    let orders: Vec<Uuid> = orders.into_iter().collect();
    let Locked { mut states, stored } = lock_states(conn, &orders).await?;
    let mut deltas = Deltas::default();
    let mut changed = BTreeSet::new();
    let mut product_names = BTreeMap::new();
    let mut category_names = BTreeMap::new();
    for version in versions {
        if let Transition::Applied { state, deltas: d } =
            transition(states.get(&version.order), version)
        {
            deltas.merge(&d);
            states.insert(version.order, state);
            changed.insert(version.order);
            product_names.extend(version.products.clone());
            category_names.extend(version.categories.clone());
        }
    }
    apply_deltas(
        conn,
        CounterTable::PRODUCTS,
        &deltas.products,
        &product_names,
    )
    .await?;
    apply_deltas(
        conn,
        CounterTable::CATEGORIES,
        &deltas.categories,
        &category_names,
    )
    .await?;
    save_states(conn, &changed, &states, &stored).await?;
    crate::tags::settle_batch(conn, &deltas).await?;
    Ok(())
}

/// The stored states of a batch's orders, locked.
struct Locked {
    /// The orders' states, where one was stored.
    states: BTreeMap<HashKey, OrderCountState>,
    /// Every order that has a row, whether or not it holds a state (an earlier release
    /// claimed empty rows before counting).
    stored: BTreeSet<HashKey>,
}

/// Locks the state rows of the batch's orders, in key order so that concurrent batches
/// cannot deadlock. Orders without a row get theirs when their state is saved: inserting
/// the final state directly costs Postgres one row version instead of an empty claim and its
/// update (the claim and the update were a third of the stage's database time). A concurrent
/// batch that stores the same new order first is caught there ([`save_states`]).
async fn lock_states(conn: &mut AsyncPgConnection, orders: &[Uuid]) -> diesel::QueryResult<Locked> {
    if orders.is_empty() {
        return Ok(Locked {
            states: BTreeMap::new(),
            stored: BTreeSet::new(),
        });
    }
    let table = tables::ORDER_STATE;
    let rows: Vec<StateRow> = diesel::sql_query(format!(
        "SELECT order_id, user_id, update_ts, counted, product_ids, category_ids \
         FROM {table} WHERE order_id = ANY($1) ORDER BY order_id FOR UPDATE"
    ))
    .bind::<Array<SqlUuid>, _>(orders)
    .load(conn)
    .await?;
    let stored = rows
        .iter()
        .map(|row| HashKey::from_uuid(row.order_id))
        .collect();
    let states = rows.into_iter().filter_map(StateRow::into_state).collect();
    Ok(Locked { states, stored })
}

/// Applies the deltas: increments in one upsert, decrements in one update. Rows are sorted
/// by key so concurrent batches lock them in the same order. Decrements never insert: a row
/// is only ever decremented after an increment created it (and Postgres checks `order_cnt >= 0`
/// on the proposed row of an upsert before it detects the conflict).
async fn apply_deltas(
    conn: &mut AsyncPgConnection,
    counter: CounterTable,
    deltas: &BTreeMap<(HashKey, HashKey), i64>,
    names: &BTreeMap<HashKey, String>,
) -> diesel::QueryResult<()> {
    let (mut users, mut keys, mut labels, mut values) = (vec![], vec![], vec![], vec![]);
    let (mut down_users, mut down_keys, mut down_labels, mut down_values) =
        (vec![], vec![], vec![], vec![]);
    for ((user, key), delta) in deltas {
        let name = names.get(key).map(String::as_str);
        match name {
            Some(name) if *delta > 0 => {
                users.push(user.as_uuid());
                keys.push(key.as_uuid());
                labels.push(name);
                values.push(*delta);
            }
            _ => {
                down_users.push(user.as_uuid());
                down_keys.push(key.as_uuid());
                down_labels.push(name);
                down_values.push(*delta);
            }
        }
    }
    let CounterTable { table, key, name } = counter;
    if !users.is_empty() {
        diesel::sql_query(format!(
            "INSERT INTO {table} AS t (user_id, {key}, {name}, order_cnt) \
             SELECT u, k, n, d FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[]) \
                 AS x(u, k, n, d) \
             ON CONFLICT (user_id, {key}) DO UPDATE SET \
                 order_cnt = t.order_cnt + EXCLUDED.order_cnt, {name} = EXCLUDED.{name}, \
                 updated_at = now()"
        ))
        .bind::<Array<SqlUuid>, _>(users)
        .bind::<Array<SqlUuid>, _>(keys)
        .bind::<Array<Text>, _>(labels)
        .bind::<Array<BigInt>, _>(values)
        .execute(conn)
        .await?;
    }
    if !down_users.is_empty() {
        diesel::sql_query(format!(
            "UPDATE {table} AS t SET order_cnt = t.order_cnt + x.d, \
                 {name} = coalesce(x.n, t.{name}), updated_at = now() \
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[]) AS x(u, k, n, d) \
             WHERE t.user_id = x.u AND t.{key} = x.k"
        ))
        .bind::<Array<SqlUuid>, _>(down_users)
        .bind::<Array<SqlUuid>, _>(down_keys)
        .bind::<Array<Nullable<Text>>, _>(down_labels)
        .bind::<Array<BigInt>, _>(down_values)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Stores the new state of every order a version was applied to: an update where the order
/// has a row, an insert where it has none. An insert that finds a row there already means a
/// concurrent batch counted the same new order first (only around a rebalance, when a
/// partition's old owner has not yet stopped): the counting here started from no state, so
/// the whole transaction is refused as a systemic failure, rolled back, and retried, and the
/// retry reads the other batch's state.
async fn save_states(
    conn: &mut AsyncPgConnection,
    changed: &BTreeSet<HashKey>,
    states: &BTreeMap<HashKey, OrderCountState>,
    stored: &BTreeSet<HashKey>,
) -> Result<(), Failure> {
    let mut updates = StateColumns::default();
    let mut inserts = StateColumns::default();
    for key in changed {
        let Some(state) = states.get(key) else {
            continue;
        };
        if stored.contains(key) {
            updates.push(*key, state);
        } else {
            inserts.push(*key, state);
        }
    }
    let table = tables::ORDER_STATE;
    if !updates.ids.is_empty() {
        updates
            .bind(diesel::sql_query(format!(
                "UPDATE {table} AS s SET user_id = x.u, update_ts = x.ts, counted = x.c, \
                     product_ids = x.p::uuid[], category_ids = x.k::uuid[], \
                     updated_at = clock_timestamp() \
                 FROM {from} WHERE s.order_id = x.id",
                from = StateColumns::UNNEST
            )))
            .execute(conn)
            .await?;
    }
    if !inserts.ids.is_empty() {
        let new_orders = inserts.ids.len();
        // No conflict check: these orders had no row when their rows were locked, so a row
        // there now is a concurrent batch's.
        inserts
            .bind(diesel::sql_query(format!(
                "INSERT INTO {table} (order_id, user_id, update_ts, counted, product_ids, \
                     category_ids, updated_at) \
                 SELECT x.id, x.u, x.ts, x.c, x.p::uuid[], x.k::uuid[], clock_timestamp() \
                 FROM {from}",
                from = StateColumns::UNNEST
            )))
            .execute(conn)
            .await
            .map_err(|error| match error {
                diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                ) => Failure::Systemic(anyhow::Error::new(error).context(format!(
                    "an order of the {new_orders} new to this batch was stored by a concurrent \
                     batch meanwhile; counting them again from the stored states"
                ))),
                other => other.into(),
            })?;
    }
    Ok(())
}

/// The columns of the order states saved at once, one array each.
#[derive(Default)]
struct StateColumns {
    ids: Vec<Uuid>,
    users: Vec<Uuid>,
    versions: Vec<chrono::DateTime<chrono::Utc>>,
    counted: Vec<bool>,
    // Arrays of arrays must be rectangular in Postgres, so the id sets travel as text.
    products: Vec<String>,
    categories: Vec<String>,
}

impl StateColumns {
    /// The bound columns as rows `x(id, u, ts, c, p, k)`, in the order [`Self::bind`] binds them.
    const UNNEST: &'static str = "unnest($1::uuid[], $2::uuid[], $3::timestamptz[], \
         $4::bool[], $5::text[], $6::text[]) AS x(id, u, ts, c, p, k)";

    fn push(&mut self, key: HashKey, state: &OrderCountState) {
        self.ids.push(key.as_uuid());
        self.users.push(state.user.as_uuid());
        self.versions.push(state.version.as_datetime());
        self.counted.push(state.counted);
        self.products.push(uuid_array_literal(&state.products));
        self.categories.push(uuid_array_literal(&state.categories));
    }

    fn bind(
        self,
        query: diesel::query_builder::SqlQuery,
    ) -> impl diesel_async::methods::ExecuteDsl<AsyncPgConnection> {
        query
            .bind::<Array<SqlUuid>, _>(self.ids)
            .bind::<Array<SqlUuid>, _>(self.users)
            .bind::<Array<Timestamptz>, _>(self.versions)
            .bind::<Array<Bool>, _>(self.counted)
            .bind::<Array<Text>, _>(self.products)
            .bind::<Array<Text>, _>(self.categories)
    }
}

fn uuid_array_literal(keys: &BTreeSet<HashKey>) -> String {
    let inner: Vec<String> = keys.iter().map(ToString::to_string).collect();
    format!("{{{}}}", inner.join(","))
}
