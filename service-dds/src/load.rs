//! Writes applied order versions into the Data Vault: one statement per table per batch.
//!
//! Each table is written from its row type alone ([`vault_core::vault::Table`]): the type
//! names the table and its typed columns, which are bound as one array each and unnested in
//! SQL. Insert-once tables (hubs, links, effectivity) skip a row whose key is there already.
//! History satellites add a row only when its hashdiff differs from the hub's current row;
//! within a batch, rows of one hub are deduplicated against their predecessor here, and only
//! the first is compared with the table in SQL. Each gets its own `load_dt` (the batch's load
//! time plus its rank in microseconds), since `load_dt` is part of the satellite's key.
//!
//! An order the gate has never seen has no row in any order-scoped table (docs/contract.md
//! §3.2.1): its rows there are inserted without the conflict check, and its satellites without
//! the current-row lookup, which is most of a drain's rows. Should a concurrent load store the
//! same new order first (only around a rebalance), the insert meets that load's key and the
//! batch is retried ([`failure`]); the retry finds the order loaded.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;
use vault_core::pit::{self, OrderPoint};
use vault_core::vault::{self, History, InsertOnce, Table, Value, VaultRows};
use vault_core::{version, EnrichedOrder, HashKey, OrderStatus, Timestamp};
use vault_runtime::Failure;

/// What the warehouse holds of some orders, read once per batch with their
/// `dds.order_load_state` rows locked for the transaction: the latest applied version (the
/// gate) and the point in time (`dds.pit_order`) of each order loaded before.
#[derive(Debug, Default)]
pub struct Stored(BTreeMap<HashKey, (DateTime<Utc>, Option<OrderPoint>)>);

impl Stored {
    /// Reads and locks `orders`' rows, in key order.
    pub async fn read(
        conn: &mut AsyncPgConnection,
        orders: impl Iterator<Item = &HashKey>,
    ) -> diesel::QueryResult<Self> {
        let keys: Vec<Uuid> = orders.map(HashKey::as_uuid).collect();
        if keys.is_empty() {
            return Ok(Self::default());
        }
        let rows: Vec<StoredPoint> = diesel::sql_query(
            // The point is looked up per gate row found (`LATERAL … LIMIT 1`, which the planner
            // cannot turn into a join): as a join, the planner expected a row per key asked
            // and read all of `dds.pit_order` into a hash table instead, on every batch.
            "SELECT l.h_order_pk, l.update_ts, p.status, p.status_valid_from, \
                 p.version_update_ts, p.versions \
             FROM dds.order_load_state l LEFT JOIN LATERAL ( \
                 SELECT status, status_valid_from, version_update_ts, versions \
                 FROM dds.pit_order WHERE h_order_pk = l.h_order_pk LIMIT 1) p ON true \
             WHERE l.h_order_pk = ANY($1) ORDER BY l.h_order_pk FOR UPDATE OF l",
        )
        .bind::<Array<SqlUuid>, _>(keys)
        .load(conn)
        .await?;
        Ok(Self(
            rows.iter()
                .map(|row| {
                    (
                        HashKey::from_uuid(row.h_order_pk),
                        (row.update_ts, row.point()),
                    )
                })
                .collect(),
        ))
    }

    /// The latest applied version of `order`; None if it was never loaded.
    pub fn applied(&self, order: &HashKey) -> Option<Timestamp> {
        self.0
            .get(order)
            .map(|(version, _)| Timestamp::from_datetime(*version))
    }

    /// The stored point of `order`: None if it was never loaded, Some(None) if it was but
    /// has no readable point.
    fn point(&self, order: &HashKey) -> Option<Option<OrderPoint>> {
        self.0.get(order).map(|(_, point)| *point)
    }
}

/// Loads the rows of `applied` (in time order) and advances each order's applied version and
/// its point in time, which the BI views read (`dds.pit_order`, `dds.pit_product`; docs/bi.md).
/// Reads what is stored of the orders first; [`load_read`] takes it read already.
pub async fn load(
    conn: &mut AsyncPgConnection,
    applied: &[&EnrichedOrder],
    load_src: &str,
) -> diesel::QueryResult<()> {
    let orders: BTreeMap<HashKey, ()> = applied
        .iter()
        .map(|order| (HashKey::order(order.payload.id), ()))
        .collect();
    let stored = Stored::read(conn, orders.keys()).await?;
    let rows = applied.iter().map(|order| vault::rows(order)).collect();
    load_read(conn, applied, rows, &stored, load_src).await
}

/// [`load`], given the Data Vault rows of each applied version (`rows[i]` of `applied[i]`, by
/// [`vault::rows`]) and what is stored of the orders (read in this transaction).
pub async fn load_read(
    conn: &mut AsyncPgConnection,
    applied: &[&EnrichedOrder],
    rows: Vec<VaultRows>,
    stored: &Stored,
    load_src: &str,
) -> diesel::QueryResult<()> {
    debug_assert_eq!(applied.len(), rows.len(), "one set of rows per version");
    if applied.is_empty() {
        return Ok(());
    }
    let stamp = Stamp {
        load_dt: Timestamp::from_datetime(Utc::now()).as_datetime(),
        load_src,
    };
    let mut per_order: BTreeMap<HashKey, Vec<&EnrichedOrder>> = BTreeMap::new();
    for order in applied {
        per_order
            .entry(HashKey::order(order.payload.id))
            .or_default()
            .push(order);
    }
    let new_orders: HashSet<i64> = per_order
        .iter()
        .filter(|(key, _)| stored.applied(key).is_none())
        .filter_map(|(_, versions)| versions.as_slice().first().map(|order| order.payload.id.0))
        .collect();
    let mut statements = Statements {
        stamp: &stamp,
        new_orders: &new_orders,
        queries: Vec::new(),
    };
    VaultRows::visit(&rows, &mut statements);
    statements
        .queries
        .extend(advance_applied_versions(&per_order, stored, stamp.load_dt));
    statements
        .queries
        .extend(write_product_points(applied, &rows, stamp.load_dt));
    // Pipelined: the statements go out back to back and the server runs them in this order
    // (so concurrent loads take their locks table by table in the same order), without a
    // round trip between them.
    let shared: &AsyncPgConnection = conn;
    futures::future::try_join_all(statements.queries.into_iter().map(|query| {
        let mut pipelined = shared;
        query.execute(&mut pipelined)
    }))
    .await?;
    // Last: its trigger locks the daily rows every load shares, so they are held the least.
    write_order_points(conn, &per_order, stored, stamp.load_dt).await
}

/// The statements of one load, one per table with rows, in the order [`VaultRows::visit`]
/// gives.
struct Statements<'r> {
    stamp: &'r Stamp<'r>,
    /// The ids of the orders the gate has never seen.
    new_orders: &'r HashSet<i64>,
    queries: Vec<BoxedSqlQuery<'r, Pg, SqlQuery>>,
}

impl<'r> vault::Visitor<'r> for Statements<'r> {
    fn insert_once<R: InsertOnce>(&mut self, rows: Vec<&'r R>) {
        self.queries
            .extend(insert_once(self.stamp, self.new_orders, rows));
    }

    fn history<R: History>(&mut self, rows: Vec<&'r R>) {
        self.queries
            .extend(history(self.stamp, self.new_orders, rows));
    }
}

/// Whether `row` belongs to an order never loaded before (so no row of its order-scoped
/// table can be there yet).
fn of_new_order<R: Table>(
    order: Option<fn(&R) -> i64>,
    new_orders: &HashSet<i64>,
    row: &R,
) -> bool {
    order.is_some_and(|order| new_orders.contains(&order(row)))
}

/// A load's error as the batch's failure. A unique violation can only come from an insert of
/// a new order's rows without the conflict check ([the module](self)): a concurrent load stored
/// the same order first, so the batch is retried (systemic), not bisected; the retry reads
/// that load's gate and finds the order loaded.
pub fn failure(error: DieselError) -> Failure {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            Failure::Systemic(anyhow::Error::new(error).context(
                "a concurrent load stored an order new to this batch first; loading it again \
                 from what that load stored",
            ))
        }
        other => other.into(),
    }
}

/// What every row of one load carries besides its own columns.
struct Stamp<'a> {
    load_dt: DateTime<Utc>,
    load_src: &'a str,
}

/// The statements writing the rows of one insert-once table, deduplicated and in key order:
/// a new order's rows as they are, the others skipped where their key is in the table
/// already. None without rows.
fn insert_once<'r, R: InsertOnce>(
    stamp: &'r Stamp<'r>,
    new_orders: &HashSet<i64>,
    rows: Vec<&'r R>,
) -> impl Iterator<Item = BoxedSqlQuery<'r, Pg, SqlQuery>> {
    let mut unique: BTreeMap<R::Key, &R> = BTreeMap::new();
    for row in rows {
        unique.entry(row.key()).or_insert(row);
    }
    let order = vault::order_of::<R>();
    let (new, seen): (Vec<&R>, Vec<&R>) = unique
        .into_values()
        .partition(|row| of_new_order(order, new_orders, row));
    let columns = Columns::of::<R>();
    [(new, ""), (seen, " ON CONFLICT DO NOTHING")]
        .into_iter()
        .filter(|(rows, _)| !rows.is_empty())
        .map(move |(rows, conflict)| {
            let n = columns.count;
            let sql = format!(
                "INSERT INTO {table} ({names}, load_dt, load_src) \
                 SELECT {select}, ${dt}, ${src} FROM unnest({unnest}) AS u({names}){conflict}",
                table = R::NAME,
                names = columns.names,
                select = columns.select,
                unnest = columns.unnest,
                dt = n + 1,
                src = n + 2,
            );
            bind_columns(diesel::sql_query(sql).into_boxed(), &rows)
                .bind::<Timestamptz, _>(stamp.load_dt)
                .bind::<Text, _>(stamp.load_src)
        })
}

/// The statement writing the rows of one history satellite: per hub in load order, a row only
/// where the hashdiff changes, starting from the hub's current row in the table (looked up by
/// [`History::SCOPE`], which the table's key leads with; a new order's satellite has none).
/// None without rows.
fn history<'r, R: History>(
    stamp: &'r Stamp<'r>,
    new_orders: &HashSet<i64>,
    rows: Vec<&'r R>,
) -> Option<BoxedSqlQuery<'r, Pg, SqlQuery>> {
    let mut per_hub: BTreeMap<HashKey, Vec<&R>> = BTreeMap::new();
    for row in rows {
        let candidates = per_hub.entry(row.hub()).or_default();
        if candidates
            .last()
            .is_none_or(|last| last.hashdiff() != row.hashdiff())
        {
            candidates.push(row);
        }
    }
    if per_hub.is_empty() {
        return None;
    }
    let order = vault::order_of::<R>();
    let (mut rows, mut load_dts, mut lookups) = (Vec::new(), Vec::new(), Vec::new());
    for candidates in per_hub.values() {
        for (rank, row) in candidates.iter().enumerate() {
            rows.push(*row);
            load_dts.push(stamp.load_dt + TimeDelta::microseconds(rank as i64));
            lookups.push(rank == 0 && !of_new_order(order, new_orders, row));
        }
    }
    let columns = Columns::of::<R>();
    let n = columns.count;
    let sql = format!(
        "INSERT INTO {table} ({names}, load_dt, load_src) \
         SELECT {select}, u.load_dt, ${src} \
         FROM unnest({unnest}, ${dt}::timestamptz[], ${lookup}::bool[]) \
             AS u({names}, load_dt, lookup) \
         WHERE NOT u.lookup OR u.{hashdiff} IS DISTINCT FROM ( \
             SELECT s.{hashdiff} FROM {table} s WHERE s.{scope} = u.{scope} \
             ORDER BY s.load_dt DESC LIMIT 1)",
        table = R::NAME,
        names = columns.names,
        select = columns.select,
        unnest = columns.unnest,
        scope = R::SCOPE,
        hashdiff = R::HASHDIFF,
        dt = n + 1,
        lookup = n + 2,
        src = n + 3,
    );
    Some(
        bind_columns(diesel::sql_query(sql).into_boxed(), &rows)
            .bind::<Array<Timestamptz>, _>(load_dts)
            .bind::<Array<Bool>, _>(lookups)
            .bind::<Text, _>(stamp.load_src),
    )
}

/// The SQL fragments for a table's columns, bound as parameters `$1..$count`, one array each.
struct Columns {
    count: usize,
    /// `h_user_pk, username, ...`
    names: String,
    /// `$1::uuid[], $2::text[], ...`
    unnest: String,
    /// `u.h_user_pk, u.username, ...`, cast where the column is bound as another type.
    select: String,
}

impl Columns {
    fn of<R: Table>() -> Self {
        let columns = R::columns();
        let mut names = Vec::new();
        let mut unnest = Vec::new();
        let mut select = Vec::new();
        for (index, column) in columns.iter().enumerate() {
            names.push(column.name.to_owned());
            let bound = bound_type(&column.value);
            unnest.push(format!("${}::{bound}[]", index + 1));
            let sql_type = column.value.sql_type();
            select.push(if sql_type == bound {
                format!("u.{}", column.name)
            } else {
                format!("u.{}::{sql_type}", column.name)
            });
        }
        Self {
            count: columns.len(),
            names: names.join(", "),
            unnest: unnest.join(", "),
            select: select.join(", "),
        }
    }
}

/// The type a column is bound as: its own, except amounts, which travel as exact decimal text
/// (diesel's `numeric` binding would need another decimal crate).
fn bound_type<R>(value: &Value<R>) -> &'static str {
    match value {
        Value::Amount(_) => "text",
        other => other.sql_type(),
    }
}

/// Binds each column of `rows` as one array, in the order of [`Columns::of`].
fn bind_columns<'f, R: Table>(
    mut query: BoxedSqlQuery<'f, Pg, SqlQuery>,
    rows: &[&'f R],
) -> BoxedSqlQuery<'f, Pg, SqlQuery> {
    for column in R::columns() {
        query = match column.value {
            Value::Key(get) => query.bind::<Array<SqlUuid>, _>(
                rows.iter().map(|r| get(r).as_uuid()).collect::<Vec<Uuid>>(),
            ),
            Value::Text(get) => {
                query.bind::<Array<Text>, _>(rows.iter().map(|r| get(r)).collect::<Vec<&str>>())
            }
            Value::Amount(get) => query.bind::<Array<Text>, _>(
                rows.iter()
                    .map(|r| get(r).to_string())
                    .collect::<Vec<String>>(),
            ),
            Value::Time(get) => query.bind::<Array<Timestamptz>, _>(
                rows.iter()
                    .map(|r| get(r).as_datetime())
                    .collect::<Vec<DateTime<Utc>>>(),
            ),
            Value::BigInt(get) => {
                query.bind::<Array<BigInt>, _>(rows.iter().map(|r| get(r)).collect::<Vec<i64>>())
            }
        };
    }
    query
}

/// The statements recording each order's newest applied version: an insert for the orders
/// new to the gate, an update of the others' rows where the version is newer.
fn advance_applied_versions<'r>(
    per_order: &BTreeMap<HashKey, Vec<&EnrichedOrder>>,
    stored: &Stored,
    load_dt: DateTime<Utc>,
) -> Vec<BoxedSqlQuery<'r, Pg, SqlQuery>> {
    let (new, seen): (Vec<_>, Vec<_>) = per_order
        .iter()
        .filter_map(|(key, versions)| {
            version::newest(versions.iter().copied(), |order| order.payload.update_ts)
                .map(|order| (*key, order))
        })
        .partition(|(key, _)| stored.applied(key).is_none());
    let upsert = " ON CONFLICT (h_order_pk) DO UPDATE SET update_ts = EXCLUDED.update_ts, \
         load_dt = EXCLUDED.load_dt \
         WHERE dds.order_load_state.update_ts < EXCLUDED.update_ts";
    [(new, ""), (seen, upsert)]
        .into_iter()
        .filter(|(latest, _)| !latest.is_empty())
        .map(move |(latest, conflict)| {
            let keys: Vec<Uuid> = latest.iter().map(|(key, _)| key.as_uuid()).collect();
            let ids: Vec<i64> = latest.iter().map(|(_, order)| order.payload.id.0).collect();
            let versions: Vec<DateTime<Utc>> = latest
                .iter()
                .map(|(_, order)| order.payload.update_ts.as_datetime())
                .collect();
            diesel::sql_query(format!(
                "INSERT INTO dds.order_load_state (h_order_pk, order_id, update_ts, load_dt) \
                 SELECT pk, id, ts, $4 FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) \
                     AS u(pk, id, ts){conflict}"
            ))
            .into_boxed()
            .bind::<Array<SqlUuid>, _>(keys)
            .bind::<Array<BigInt>, _>(ids)
            .bind::<Array<Timestamptz>, _>(versions)
            .bind::<Timestamptz, _>(load_dt)
        })
        .collect()
}

/// An order's gate row and point in time as stored before the load.
#[derive(QueryableByName)]
struct StoredPoint {
    #[diesel(sql_type = SqlUuid)]
    h_order_pk: Uuid,
    #[diesel(sql_type = Timestamptz)]
    update_ts: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    status: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    status_valid_from: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    version_update_ts: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    versions: Option<i64>,
}

impl StoredPoint {
    /// None where the order has no row, or one this build cannot read.
    fn point(&self) -> Option<OrderPoint> {
        Some(OrderPoint {
            status: OrderStatus::parse(self.status.as_deref()?)?,
            status_valid_from: Timestamp::from_datetime(self.status_valid_from?),
            version: Timestamp::from_datetime(self.version_update_ts?),
            versions: self.versions?,
        })
    }
}

/// Advances each order's row of `dds.pit_order` by its applied versions. An order whose point
/// cannot be advanced (no stored point, or versions not in source order) is rewritten from
/// the satellites' history instead.
async fn write_order_points(
    conn: &mut AsyncPgConnection,
    per_order: &BTreeMap<HashKey, Vec<&EnrichedOrder>>,
    stored: &Stored,
    load_dt: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    let (mut new, mut seen) = (PointColumns::default(), PointColumns::default());
    let mut from_history = Vec::new();
    for (key, versions) in per_order {
        let steps = versions
            .iter()
            .map(|order| (order.payload.status, order.payload.update_ts));
        let point = match stored.point(key) {
            None => OrderPoint::advance(None, steps),
            Some(Some(before)) => OrderPoint::advance(Some(before), steps),
            Some(None) => None,
        };
        match (
            point,
            versions.as_slice().first(),
            versions.as_slice().last(),
        ) {
            (Some(point), Some(first), Some(latest)) => {
                let columns = if stored.applied(key).is_none() {
                    &mut new
                } else {
                    &mut seen
                };
                columns.push(*key, point, first, latest);
            }
            _ => from_history.push(key.as_uuid()),
        }
    }
    // A new order's point is inserted; another's updated, where this load's version is newer.
    let table = pit::ORDER_TABLE;
    let unnest = "unnest($1::uuid[], $2::bigint[], $3::timestamptz[], $4::uuid[], $5::text[], \
         $6::timestamptz[], $7::text[], $8::text[], $9::timestamptz[], $10::bigint[]) \
         AS u(pk, id, dt, u, st, st_from, c, pay, ts, n)";
    let statements = [
        (
            new,
            format!(
                "INSERT INTO {table} ({columns}) \
                 SELECT pk, id, dt, u, st, st_from, c::numeric, pay::numeric, ts, n, $11 \
                 FROM {unnest}",
                columns = pit::ORDER_COLUMNS.join(", "),
            ),
            // `first_loaded_at`
            Some(load_dt),
        ),
        (
            seen,
            format!(
                "UPDATE {table} AS p SET h_user_pk = u.u, status = u.st, \
                     status_valid_from = u.st_from, cost = u.c::numeric, \
                     payment = u.pay::numeric, version_update_ts = u.ts, versions = u.n \
                 FROM {unnest} \
                 WHERE p.h_order_pk = u.pk AND p.version_update_ts < u.ts"
            ),
            None,
        ),
    ];
    for (columns, sql, first_loaded) in statements {
        if columns.keys.is_empty() {
            continue;
        }
        let mut query = columns.bind(diesel::sql_query(sql).into_boxed());
        if let Some(at) = first_loaded {
            query = query.bind::<Timestamptz, _>(at);
        }
        query.execute(conn).await?;
    }
    if !from_history.is_empty() {
        diesel::sql_query("SELECT dds.refresh_pit_order($1)")
            .bind::<Array<SqlUuid>, _>(from_history)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// The rows of one `dds.pit_order` statement, a column each.
#[derive(Default)]
struct PointColumns {
    keys: Vec<Uuid>,
    ids: Vec<i64>,
    placed: Vec<DateTime<Utc>>,
    users: Vec<Uuid>,
    statuses: Vec<&'static str>,
    status_since: Vec<DateTime<Utc>>,
    costs: Vec<String>,
    payments: Vec<String>,
    versions: Vec<DateTime<Utc>>,
    counts: Vec<i64>,
}

impl PointColumns {
    /// `first` gives what the order hub keeps from the order's first version (its date, for a
    /// new row); `latest` the current state.
    fn push(
        &mut self,
        key: HashKey,
        point: OrderPoint,
        first: &EnrichedOrder,
        latest: &EnrichedOrder,
    ) {
        self.keys.push(key.as_uuid());
        self.ids.push(latest.payload.id.0);
        self.placed.push(first.payload.date.as_datetime());
        self.users
            .push(HashKey::user(&latest.payload.user.id).as_uuid());
        self.statuses.push(point.status.as_str());
        self.status_since
            .push(point.status_valid_from.as_datetime());
        self.costs.push(latest.payload.cost.to_string());
        self.payments.push(latest.payload.payment.to_string());
        self.versions.push(point.version.as_datetime());
        self.counts.push(point.versions);
    }

    /// Binds the columns as `$1..$10`.
    fn bind(self, query: BoxedSqlQuery<'_, Pg, SqlQuery>) -> BoxedSqlQuery<'_, Pg, SqlQuery> {
        query
            .bind::<Array<SqlUuid>, _>(self.keys)
            .bind::<Array<BigInt>, _>(self.ids)
            .bind::<Array<Timestamptz>, _>(self.placed)
            .bind::<Array<SqlUuid>, _>(self.users)
            .bind::<Array<Text>, _>(self.statuses)
            .bind::<Array<Timestamptz>, _>(self.status_since)
            .bind::<Array<Text>, _>(self.costs)
            .bind::<Array<Text>, _>(self.payments)
            .bind::<Array<Timestamptz>, _>(self.versions)
            .bind::<Array<BigInt>, _>(self.counts)
    }
}

/// Moves each dish's row of `dds.pit_product` to its category in the newest version of this
/// load holding it (on a tie, the smallest category key, as `dds.v_pit_product_recount`
/// orders them), unless the row already holds a newer one. None without rows.
fn write_product_points<'r>(
    applied: &[&EnrichedOrder],
    rows: &[VaultRows],
    load_dt: DateTime<Utc>,
) -> Option<BoxedSqlQuery<'r, Pg, SqlQuery>> {
    let mut newest = pit::ProductPoints::default();
    for (order, rows) in applied.iter().zip(rows) {
        newest.offer(rows, order.payload.update_ts);
    }
    if newest.is_empty() {
        return None;
    }
    let products: Vec<Uuid> = newest.points().map(|(p, _, _)| p.as_uuid()).collect();
    let categories: Vec<Uuid> = newest.points().map(|(_, c, _)| c.as_uuid()).collect();
    let versions: Vec<DateTime<Utc>> = newest.points().map(|(_, _, v)| v.as_datetime()).collect();
    Some(
        diesel::sql_query(format!(
            "INSERT INTO {table} AS p ({columns}) \
         SELECT pk, cat, ts, $4 FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) \
             AS u(pk, cat, ts) \
         ON CONFLICT (h_product_pk) DO UPDATE SET h_category_pk = EXCLUDED.h_category_pk, \
             update_ts = EXCLUDED.update_ts, load_dt = EXCLUDED.load_dt \
         WHERE (p.update_ts, p.load_dt) < (EXCLUDED.update_ts, EXCLUDED.load_dt)",
            table = pit::PRODUCT_TABLE,
            columns = pit::PRODUCT_COLUMNS.join(", "),
        ))
        .into_boxed()
        .bind::<Array<SqlUuid>, _>(products)
        .bind::<Array<SqlUuid>, _>(categories)
        .bind::<Array<Timestamptz>, _>(versions)
        .bind::<Timestamptz, _>(load_dt),
    )
}

/// Every table the loader writes, with every column it fills, for the warehouse check the
/// runtime runs when a batch is refused: the Data Vault's, from the same visit the load makes
/// (insert-only: the database refuses UPDATE and DELETE), with the load's stamp, and the load
/// state, which is updated.
pub fn tables() -> Vec<vault_runtime::TableAccess> {
    let mut tables: Vec<vault_runtime::TableAccess> = vault::tables()
        .into_iter()
        .map(|table| {
            let mut columns = table.columns;
            columns.extend(["load_dt", "load_src"]);
            vault_runtime::TableAccess::granted(table.name, columns)
        })
        .collect();
    tables.extend([
        vault_runtime::TableAccess::granted(
            "dds.order_load_state",
            vec!["h_order_pk", "order_id", "update_ts", "load_dt"],
        ),
        vault_runtime::TableAccess::granted(pit::ORDER_TABLE, pit::ORDER_COLUMNS.to_vec()),
        // Written by dds.pit_order's trigger, in the loader's transaction.
        vault_runtime::TableAccess::granted(
            "dds.pit_order_daily_user",
            vec![
                "order_date",
                "status",
                "h_user_pk",
                "orders",
                "cost",
                "payment",
            ],
        ),
        vault_runtime::TableAccess::granted(
            "dds.pit_order_daily",
            vec!["order_date", "status", "orders", "users", "cost", "payment"],
        ),
        vault_runtime::TableAccess::granted(pit::PRODUCT_TABLE, pit::PRODUCT_COLUMNS.to_vec()),
    ]);
    tables
}
