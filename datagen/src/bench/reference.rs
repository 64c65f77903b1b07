//! The database-alone reference of `vault-bench drain --reference`: the rows the pipeline
//! writes for a drained range, computed in memory from the same orders and applied to a
//! scratch database with one `COPY` per table, in one transaction. What the database takes
//! that way bounds what any pipeline in front of it can reach; the ratio of the two says how
//! much of it the pipeline spends on being a pipeline (Kafka hops, per-batch transactions,
//! the counter state read and locked per batch).
//!
//! The rows follow the loaders' rules: insert-once tables keep the first row of a key, history
//! satellites a row only where the hashdiff changes (each with its own `load_dt`, part of the
//! key), staging and the load state the latest version of each order, and the datamart the
//! final counter values of [`vault_core::counter::Ledger`] — a counter the pipeline took to
//! zero keeps its row there but has none here, so counters are compared where not zero.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use futures::SinkExt;
use rand::rngs::StdRng;
use rand::SeedableRng;
use vault_core::counter::Ledger;
use vault_core::enrich::enrich;
use vault_core::pit::{self, OrderPoint};
use vault_core::vault::{self, History, InsertOnce, Table, Value, VaultRows, Visitor};
use vault_core::{events, EntityId, HashKey, RawOrder, Restaurant, Timestamp, User};

use crate::dictionary::Dictionary;
use crate::generate::Generator;

/// What the drain produced, enough to make the same orders again.
#[derive(Debug, Clone)]
pub struct Range<'d> {
    pub dictionary: &'d Dictionary,
    pub seed: u64,
    pub first_id: i64,
    pub orders: u64,
    /// The instant the generator dated the orders from.
    pub now: DateTime<Utc>,
    /// The chunk size the drain generated with: the same chunks make the same orders.
    pub chunk: u64,
}

/// The reference's figures.
#[derive(Debug, Clone)]
pub struct Reference {
    /// Generating, enriching and mapping the rows in memory (not the database's work).
    pub prepare: Duration,
    /// Writing them: the database alone.
    pub apply: Duration,
    /// Rows per table in the scratch database after the apply (counters: non-zero ones).
    pub rows: BTreeMap<String, i64>,
    /// [`DIFFERENCES_SQL`] in the scratch database: 0 when the reference is exact.
    pub differences: i64,
}

/// The tables outside the Data Vault's row types whose rows belong to one order, with how to
/// count a range's rows in a warehouse that holds other orders too (`$1`, `$2`: the first and
/// last order id). [`order_scoped`] adds the Data Vault's.
const ORDER_SCOPED: &[(&str, &str)] = &[
    (
        "stg.order_events",
        "SELECT count(*) FROM stg.order_events WHERE object_id BETWEEN $1 AND $2",
    ),
    (
        "dds.h_order",
        "SELECT count(*) FROM dds.h_order WHERE order_id BETWEEN $1 AND $2",
    ),
    (
        "dds.order_load_state",
        "SELECT count(*) FROM dds.order_load_state WHERE order_id BETWEEN $1 AND $2",
    ),
    (
        pit::ORDER_TABLE,
        "SELECT count(*) FROM dds.pit_order WHERE order_id BETWEEN $1 AND $2",
    ),
    (
        "cdm.order_state",
        "SELECT count(*) FROM cdm.order_state c JOIN dds.order_load_state d \
         ON d.h_order_pk = c.order_id WHERE d.order_id BETWEEN $1 AND $2",
    ),
];

/// Every table whose rows belong to one order, with how to count a range's rows in a
/// warehouse that holds other orders too: [`ORDER_SCOPED`], and each Data Vault table carrying
/// the order id (the order hub, its links and satellites).
pub fn order_scoped() -> Vec<(String, String)> {
    let mut tables: Vec<(String, String)> = ORDER_SCOPED
        .iter()
        .map(|(table, sql)| (table.to_string(), sql.to_string()))
        .collect();
    for table in vault::tables() {
        if table.columns.contains(&"order_id") {
            tables.push((
                table.name.to_owned(),
                format!(
                    "SELECT count(*) FROM {} WHERE order_id BETWEEN $1 AND $2",
                    table.name
                ),
            ));
        }
    }
    tables.sort();
    tables.dedup_by(|a, b| a.0 == b.0);
    tables
}

/// The rows that disagree with the Data Vault's history: counters
/// (`cdm.v_counter_differences`) and the point-in-time rows the BI views read
/// (`dds.v_pit_differences`). 0 when the warehouse is exact.
pub const DIFFERENCES_SQL: &str = "SELECT (SELECT count(*) FROM cdm.v_counter_differences) \
     + (SELECT count(*) FROM dds.v_pit_differences)";

/// The counter tables, counted where not zero (see the module's doc).
const COUNTERS: &[&str] = &["cdm.user_product_counters", "cdm.user_category_counters"];

/// Every table the reference writes, with the statement counting its rows in a warehouse
/// holding nothing else.
pub fn all_tables() -> Vec<(String, String)> {
    let mut tables: Vec<(String, String)> = ORDER_SCOPED
        .iter()
        .map(|(table, _)| (table.to_string(), format!("SELECT count(*) FROM {table}")))
        .collect();
    for table in vault::tables() {
        tables.push((
            table.name.to_owned(),
            format!("SELECT count(*) FROM {}", table.name),
        ));
    }
    for table in COUNTERS {
        tables.push((
            table.to_string(),
            format!("SELECT count(*) FROM {table} WHERE order_cnt <> 0"),
        ));
    }
    tables.sort();
    tables.dedup();
    tables
}

/// Creates `<database>_reference` beside `database_url`'s database, applies the migrations,
/// writes `range`'s rows, counts them and drops the database again.
pub async fn run(database_url: &str, range: &Range<'_>) -> anyhow::Result<Reference> {
    let (server, database) = database_url
        .rsplit_once('/')
        .context("DATABASE_URL has no database name")?;
    let (database, query) = database
        .split_once('?')
        .map_or((database, ""), |(d, q)| (d, q));
    let scratch = format!("{database}_reference");
    let suffix = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let maintenance = connect(&format!("{server}/postgres{suffix}")).await?;
    let drop = format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)");
    maintenance.batch_execute(&drop).await?;
    maintenance
        .batch_execute(&format!("CREATE DATABASE {scratch}"))
        .await?;
    let scratch_url = format!("{server}/{scratch}{suffix}");
    let result = async {
        vault_migrations::run(&scratch_url).await?;
        let mut client = connect(&scratch_url).await?;
        measure(&mut client, range).await
    }
    .await;
    maintenance.batch_execute(&drop).await?;
    result
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| "connecting to Postgres for the reference")?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "The reference's Postgres connection ended.");
        }
    });
    Ok(client)
}

async fn measure(
    client: &mut tokio_postgres::Client,
    range: &Range<'_>,
) -> anyhow::Result<Reference> {
    let started = Instant::now();
    let copies = prepare(range)?;
    let prepare = started.elapsed();
    let started = Instant::now();
    let transaction = client.transaction().await?;
    for copy in &copies {
        let sink = transaction
            .copy_in::<_, Bytes>(&format!(
                "COPY {} ({}) FROM STDIN",
                copy.table,
                copy.columns.join(", ")
            ))
            .await
            .with_context(|| format!("COPY into {}", copy.table))?;
        futures::pin_mut!(sink);
        sink.send(Bytes::copy_from_slice(&copy.text)).await?;
        sink.close()
            .await
            .with_context(|| format!("COPY into {}", copy.table))?;
    }
    transaction.commit().await?;
    let apply = started.elapsed();
    let mut rows = BTreeMap::new();
    for (table, count) in all_tables() {
        let row = client.query_one(count.as_str(), &[]).await?;
        rows.insert(table, row.get::<_, i64>(0));
    }
    let differences: i64 = client.query_one(DIFFERENCES_SQL, &[]).await?.get(0);
    Ok(Reference {
        prepare,
        apply,
        rows,
        differences,
    })
}

/// One table's rows in `COPY`'s text format.
#[derive(Debug)]
struct Copy {
    table: &'static str,
    columns: Vec<&'static str>,
    text: Vec<u8>,
}

impl Copy {
    fn new(table: &'static str, columns: Vec<&'static str>) -> Self {
        Self {
            table,
            columns,
            text: Vec::new(),
        }
    }

    fn row(&mut self, fields: &[&str]) {
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                self.text.push(b'\t');
            }
            escape(&mut self.text, field);
        }
        self.text.push(b'\n');
    }
}

/// `COPY` text format: backslash, tab, newline and carriage return are escaped.
fn escape(out: &mut Vec<u8>, field: &str) {
    for byte in field.bytes() {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            other => out.push(other),
        }
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The Data Vault's tables, filled by [`VaultRows::visit`] one order version at a time.
struct Vault {
    load_dt: DateTime<Utc>,
    copies: BTreeMap<&'static str, (usize, Copy)>,
    /// Per insert-once table, the keys written (a `BTreeSet<R::Key>`).
    seen: HashMap<&'static str, Box<dyn Any>>,
    /// Per history satellite and hub, the last hashdiff written and how many rows so far.
    current: HashMap<&'static str, HashMap<HashKey, (HashKey, i64)>>,
}

impl Vault {
    fn copy<R: Table>(&mut self) -> &mut Copy {
        let next = self.copies.len();
        &mut self
            .copies
            .entry(R::NAME)
            .or_insert_with(|| {
                let mut columns: Vec<&'static str> = R::columns().iter().map(|c| c.name).collect();
                columns.extend(["load_dt", "load_src"]);
                (next, Copy::new(R::NAME, columns))
            })
            .1
    }

    fn write<R: Table>(&mut self, row: &R, load_dt: DateTime<Utc>) {
        let mut fields: Vec<String> = R::columns()
            .iter()
            .map(|column| match &column.value {
                Value::Key(get) => get(row).to_string(),
                Value::Text(get) => get(row).to_owned(),
                Value::Amount(get) => get(row).to_string(),
                Value::Time(get) => time(get(row).as_datetime()),
                Value::BigInt(get) => get(row).to_string(),
            })
            .collect();
        fields.push(time(load_dt));
        fields.push(LOAD_SRC.to_owned());
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        self.copy::<R>().row(&fields);
    }
}

const LOAD_SRC: &str = "vault-bench-reference";

impl<'r> Visitor<'r> for Vault {
    fn insert_once<R: InsertOnce>(&mut self, rows: Vec<&'r R>) {
        self.copy::<R>();
        for row in rows {
            let seen = self
                .seen
                .entry(R::NAME)
                .or_insert_with(|| Box::new(std::collections::BTreeSet::<R::Key>::new()));
            let Some(seen) = seen.downcast_mut::<std::collections::BTreeSet<R::Key>>() else {
                continue;
            };
            if seen.insert(row.key()) {
                self.write(row, self.load_dt);
            }
        }
    }

    fn history<R: History>(&mut self, rows: Vec<&'r R>) {
        self.copy::<R>();
        for row in rows {
            let current = self.current.entry(R::NAME).or_default();
            let rank = match current.get(&row.hub()) {
                Some((hashdiff, _)) if *hashdiff == row.hashdiff() => continue,
                Some((_, written)) => *written,
                None => 0,
            };
            current.insert(row.hub(), (row.hashdiff(), rank + 1));
            self.write(row, self.load_dt + TimeDelta::microseconds(rank));
        }
    }
}

/// What an order's `dds.pit_order` row takes from its versions besides its [`OrderPoint`].
struct PitRow {
    /// The first applied version's date (the hub keeps it).
    placed: Timestamp,
    user: HashKey,
    cost: String,
    payment: String,
}

/// Every table's rows for `range`, in load order.
fn prepare(range: &Range<'_>) -> anyhow::Result<Vec<Copy>> {
    let users: HashMap<&EntityId, &User> = range
        .dictionary
        .users
        .iter()
        .map(|user| (&user.id, user))
        .collect();
    let restaurants: HashMap<&EntityId, &Restaurant> = range
        .dictionary
        .restaurants
        .iter()
        .map(|restaurant| (&restaurant.id, restaurant))
        .collect();
    let load_dt = Utc::now();
    let mut vault = Vault {
        load_dt,
        copies: BTreeMap::new(),
        seen: HashMap::new(),
        current: HashMap::new(),
    };
    let mut stg = Copy::new(
        "stg.order_events",
        vec![
            "object_id",
            "object_type",
            "sent_dttm",
            "update_ts",
            "payload",
            "load_dt",
        ],
    );
    let mut load_state = Copy::new(
        "dds.order_load_state",
        vec!["h_order_pk", "order_id", "update_ts", "load_dt"],
    );
    let mut pit_order = Copy::new(pit::ORDER_TABLE, pit::ORDER_COLUMNS.to_vec());
    let mut product_points = pit::ProductPoints::default();
    let mut ledger = Ledger::default();
    let mut product_names = HashMap::new();
    let mut category_names = HashMap::new();
    let mut generator = Generator::new(
        StdRng::seed_from_u64(range.seed),
        range.dictionary,
        range.first_id,
        range.orders,
        range.now,
    );
    while generator.remaining() > 0 {
        // A chunk holds every version of its orders, so the latest is known at its end.
        let mut latest: HashMap<i64, RawOrder> = HashMap::new();
        let mut points: HashMap<i64, (OrderPoint, PitRow)> = HashMap::new();
        for order in generator.next_chunk(range.chunk) {
            let p = &order.payload;
            let enriched = enrich(
                &order,
                users.get(&p.user.id).copied(),
                restaurants.get(&p.restaurant.id).copied(),
            )?;
            let e = &enriched.payload;
            let rows = vault::rows(&enriched);
            product_points.offer(&rows, e.update_ts);
            VaultRows::visit(&[rows], &mut vault);
            // As service-dds's gate: a version not newer than the last applied changes nothing.
            let before = points.get(&e.id.0).map(|(point, _)| *point);
            if let Some(point) = OrderPoint::advance(before, [(e.status, e.update_ts)]) {
                let placed = points.get(&e.id.0).map_or(e.date, |(_, row)| row.placed);
                points.insert(
                    e.id.0,
                    (
                        point,
                        PitRow {
                            placed,
                            user: HashKey::user(&e.user.id),
                            cost: e.cost.to_string(),
                            payment: e.payment.to_string(),
                        },
                    ),
                );
            }
            let version = events::order_version(&events::cdm_events(&enriched))?;
            product_names.extend(version.products.clone());
            category_names.extend(version.categories.clone());
            ledger.offer(&version);
            let newer = latest
                .get(&order.object_id.0)
                .is_none_or(|known| known.payload.update_ts < p.update_ts);
            if newer {
                latest.insert(order.object_id.0, order);
            }
        }
        let mut latest: Vec<RawOrder> = latest.into_values().collect();
        latest.sort_by_key(|order| order.object_id);
        for order in latest {
            let update_ts = time(order.payload.update_ts.as_datetime());
            stg.row(&[
                &order.object_id.0.to_string(),
                &order.object_type,
                &time(order.sent_dttm.as_datetime()),
                &update_ts,
                &serde_json::to_string(&order.payload)?,
                &time(load_dt),
            ]);
            load_state.row(&[
                &HashKey::order(order.object_id).to_string(),
                &order.object_id.0.to_string(),
                &update_ts,
                &time(load_dt),
            ]);
            if let Some((point, row)) = points.remove(&order.object_id.0) {
                pit_order.row(&[
                    &HashKey::order(order.object_id).to_string(),
                    &order.object_id.0.to_string(),
                    &time(row.placed.as_datetime()),
                    &row.user.to_string(),
                    point.status.as_str(),
                    &time(point.status_valid_from.as_datetime()),
                    &row.cost,
                    &row.payment,
                    &time(point.version.as_datetime()),
                    &point.versions.to_string(),
                    &time(load_dt),
                ]);
            }
        }
    }
    let mut pit_product = Copy::new(pit::PRODUCT_TABLE, pit::PRODUCT_COLUMNS.to_vec());
    for (product, category, version) in product_points.points() {
        pit_product.row(&[
            &product.to_string(),
            &category.to_string(),
            &time(version.as_datetime()),
            &time(load_dt),
        ]);
    }
    let mut copies = vec![stg];
    let mut vault: Vec<(usize, Copy)> = vault.copies.into_values().collect();
    vault.sort_by_key(|(order, _)| *order);
    copies.extend(vault.into_iter().map(|(_, copy)| copy));
    copies.push(load_state);
    copies.push(pit_product);
    // Its trigger fills the daily tables, as in the pipeline.
    copies.push(pit_order);

    let mut order_state = Copy::new(
        "cdm.order_state",
        vec![
            "order_id",
            "user_id",
            "update_ts",
            "counted",
            "product_ids",
            "category_ids",
        ],
    );
    let array = |keys: &std::collections::BTreeSet<HashKey>| {
        let keys: Vec<String> = keys.iter().map(ToString::to_string).collect();
        format!("{{{}}}", keys.join(","))
    };
    for (order, state) in &ledger.states {
        order_state.row(&[
            &order.to_string(),
            &state.user.to_string(),
            &time(state.version.as_datetime()),
            if state.counted { "t" } else { "f" },
            &array(&state.products),
            &array(&state.categories),
        ]);
    }
    copies.push(order_state);
    for (table, key, name, counters, names) in [
        (
            COUNTERS[0],
            "product_id",
            "product_name",
            &ledger.counters.products,
            &product_names,
        ),
        (
            COUNTERS[1],
            "category_id",
            "category_name",
            &ledger.counters.categories,
            &category_names,
        ),
    ] {
        let mut copy = Copy::new(table, vec!["user_id", key, name, "order_cnt"]);
        for ((user, item), count) in counters {
            let name = names.get(item).map_or("", String::as_str);
            copy.row(&[
                &user.to_string(),
                &item.to_string(),
                name,
                &count.to_string(),
            ]);
        }
        copies.push(copy);
    }
    Ok(copies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_would_end_a_field_or_a_row() {
        let mut copy = Copy::new("t", vec!["a", "b"]);
        copy.row(&["tab\there", "back\\slash\nline"]);
        assert_eq!(copy.text, b"tab\\there\tback\\\\slash\\nline\n");
    }

    #[test]
    fn a_range_yields_one_staged_row_and_one_load_state_per_order() {
        let dictionary = crate::dictionary::synthetic(1, 50, 6);
        let range = Range {
            dictionary: &dictionary,
            seed: 3,
            first_id: 100,
            orders: 250,
            now: Utc::now(),
            chunk: 100,
        };
        let copies = prepare(&range).expect("rows");
        let rows = |table: &str| {
            copies
                .iter()
                .find(|c| c.table == table)
                .map(|c| c.text.iter().filter(|b| **b == b'\n').count())
        };
        assert_eq!(rows("stg.order_events"), Some(250));
        assert_eq!(rows("dds.order_load_state"), Some(250));
        assert_eq!(rows("dds.h_order"), Some(250));
        assert_eq!(rows("cdm.order_state"), Some(250));
        assert_eq!(rows("dds.pit_order"), Some(250));
        // Every version has its row: 250 orders and the later versions of 10 per chunk.
        assert_eq!(rows("dds.s_order_version"), Some(250 + 10 + 10 + 5));
    }
}
