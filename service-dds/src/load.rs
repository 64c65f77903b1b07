//! Writes applied order versions into the Data Vault: one statement per table per batch.
//!
//! Hubs and links are insert-only (`ON CONFLICT DO NOTHING`). Satellites keep history: a row
//! is added only when its hashdiff differs from the hub's current row. Within a batch, rows of
//! one hub are deduplicated against their predecessor here, and only the first is compared
//! with the table in SQL; each gets its own `load_dt` (the batch's load time plus its rank in
//! microseconds), since `load_dt` is part of the satellite's key.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Jsonb, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::{json, Value};
use uuid::Uuid;
use vault_core::vault::{self, Link, VaultRows};
use vault_core::{EnrichedOrder, HashKey, Timestamp};

/// Loads the rows of `applied` (in time order) and advances each order's applied version.
pub async fn load(
    conn: &mut AsyncPgConnection,
    applied: &[&EnrichedOrder],
    load_src: &str,
) -> diesel::QueryResult<()> {
    if applied.is_empty() {
        return Ok(());
    }
    let load_dt = Timestamp::from_datetime(Utc::now()).as_datetime();
    let rows: Vec<(Timestamp, VaultRows)> = applied
        .iter()
        .map(|order| (order.payload.update_ts, vault::rows(order)))
        .collect();

    let mut orders = BTreeMap::new();
    let mut hubs: [BTreeMap<HashKey, String>; 4] = Default::default();
    let mut links: [BTreeMap<HashKey, Link>; 4] = Default::default();
    for (_, r) in &rows {
        orders.insert(
            r.h_order.pk,
            (r.h_order.order_id.0, r.h_order.order_dt.as_datetime()),
        );
        hubs[0].insert(r.h_user.pk, r.h_user.business_key.clone());
        hubs[1].insert(r.h_restaurant.pk, r.h_restaurant.business_key.clone());
        for hub in &r.h_products {
            hubs[2].insert(hub.pk, hub.business_key.clone());
        }
        for hub in &r.h_categories {
            hubs[3].insert(hub.pk, hub.business_key.clone());
        }
        links[0].insert(r.l_order_user.pk, r.l_order_user);
        for (index, list) in [
            &r.l_order_products,
            &r.l_product_categories,
            &r.l_product_restaurants,
        ]
        .into_iter()
        .enumerate()
        {
            for link in list {
                links[index + 1].insert(link.pk, *link);
            }
        }
    }

    insert_order_hubs(conn, &orders, load_dt, load_src).await?;
    let hub_tables = [
        ("dds.h_user", "h_user_pk", "user_id"),
        ("dds.h_restaurant", "h_restaurant_pk", "restaurant_id"),
        ("dds.h_product", "h_product_pk", "product_id"),
        ("dds.h_category", "h_category_pk", "category_name"),
    ];
    for ((table, pk, key), rows) in hub_tables.into_iter().zip(&hubs) {
        insert_hubs(conn, table, pk, key, rows, load_dt, load_src).await?;
    }
    let link_tables = [
        (
            "dds.l_order_user",
            "hk_order_user_pk",
            "h_order_pk",
            "h_user_pk",
        ),
        (
            "dds.l_order_product",
            "hk_order_product_pk",
            "h_order_pk",
            "h_product_pk",
        ),
        (
            "dds.l_product_category",
            "hk_product_category_pk",
            "h_product_pk",
            "h_category_pk",
        ),
        (
            "dds.l_product_restaurant",
            "hk_product_restaurant_pk",
            "h_product_pk",
            "h_restaurant_pk",
        ),
    ];
    for ((table, pk, first, second), rows) in link_tables.into_iter().zip(&links) {
        insert_links(conn, table, [pk, first, second], rows, load_dt, load_src).await?;
    }

    let mut users = Satellite::default();
    let mut restaurants = Satellite::default();
    let mut products = Satellite::default();
    let mut costs = Satellite::default();
    let mut statuses = Satellite::default();
    for (version, r) in &rows {
        let s = &r.s_user_names;
        users.push(
            s.h_user_pk,
            s.hashdiff,
            *version,
            json!([s.username, s.userlogin]),
        );
        let s = &r.s_restaurant_names;
        restaurants.push(s.hub_pk, s.hashdiff, *version, json!([s.name]));
        for s in &r.s_product_names {
            products.push(s.hub_pk, s.hashdiff, *version, json!([s.name]));
        }
        let s = &r.s_order_cost;
        costs.push(
            s.h_order_pk,
            s.hashdiff,
            *version,
            json!([s.cost.to_string(), s.payment.to_string()]),
        );
        let s = &r.s_order_status;
        statuses.push(
            s.h_order_pk,
            s.hashdiff,
            *version,
            json!([s.status.as_str()]),
        );
    }
    users
        .insert(
            conn,
            "dds.s_user_names",
            "h_user_pk",
            "hk_user_names_hashdiff",
            &["username", "userlogin"],
            &["a->>0", "a->>1"],
            load_dt,
            load_src,
        )
        .await?;
    restaurants
        .insert(
            conn,
            "dds.s_restaurant_names",
            "h_restaurant_pk",
            "hk_restaurant_names_hashdiff",
            &["name"],
            &["a->>0"],
            load_dt,
            load_src,
        )
        .await?;
    products
        .insert(
            conn,
            "dds.s_product_names",
            "h_product_pk",
            "hk_product_names_hashdiff",
            &["name"],
            &["a->>0"],
            load_dt,
            load_src,
        )
        .await?;
    costs
        .insert(
            conn,
            "dds.s_order_cost",
            "h_order_pk",
            "hk_order_cost_hashdiff",
            &["cost", "payment"],
            &["(a->>0)::numeric", "(a->>1)::numeric"],
            load_dt,
            load_src,
        )
        .await?;
    statuses
        .insert(
            conn,
            "dds.s_order_status",
            "h_order_pk",
            "hk_order_status_hashdiff",
            &["status"],
            &["a->>0"],
            load_dt,
            load_src,
        )
        .await?;

    advance_applied_versions(conn, &rows, load_dt).await
}

async fn insert_order_hubs(
    conn: &mut AsyncPgConnection,
    orders: &BTreeMap<HashKey, (i64, DateTime<Utc>)>,
    load_dt: DateTime<Utc>,
    load_src: &str,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(
        "INSERT INTO dds.h_order (h_order_pk, order_id, order_dt, load_dt, load_src) \
         SELECT pk, id, dt, $4, $5 FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) \
             AS u(pk, id, dt) \
         ON CONFLICT (h_order_pk) DO NOTHING",
    )
    .bind::<Array<SqlUuid>, _>(orders.keys().map(HashKey::as_uuid).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(orders.values().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(orders.values().map(|(_, dt)| *dt).collect::<Vec<_>>())
    .bind::<Timestamptz, _>(load_dt)
    .bind::<Text, _>(load_src)
    .execute(conn)
    .await
}

async fn insert_hubs(
    conn: &mut AsyncPgConnection,
    table: &str,
    pk: &str,
    key: &str,
    rows: &BTreeMap<HashKey, String>,
    load_dt: DateTime<Utc>,
    load_src: &str,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(format!(
        "INSERT INTO {table} ({pk}, {key}, load_dt, load_src) \
         SELECT pk, bk, $3, $4 FROM unnest($1::uuid[], $2::text[]) AS u(pk, bk) \
         ON CONFLICT ({pk}) DO NOTHING"
    ))
    .bind::<Array<SqlUuid>, _>(rows.keys().map(HashKey::as_uuid).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.values().collect::<Vec<_>>())
    .bind::<Timestamptz, _>(load_dt)
    .bind::<Text, _>(load_src)
    .execute(conn)
    .await
}

async fn insert_links(
    conn: &mut AsyncPgConnection,
    table: &str,
    [pk, first, second]: [&str; 3],
    rows: &BTreeMap<HashKey, Link>,
    load_dt: DateTime<Utc>,
    load_src: &str,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(format!(
        "INSERT INTO {table} ({pk}, {first}, {second}, load_dt, load_src) \
         SELECT pk, a, b, $4, $5 FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) AS u(pk, a, b) \
         ON CONFLICT ({pk}) DO NOTHING"
    ))
    .bind::<Array<SqlUuid>, _>(rows.keys().map(HashKey::as_uuid).collect::<Vec<_>>())
    .bind::<Array<SqlUuid>, _>(rows.values().map(|l| l.first.as_uuid()).collect::<Vec<_>>())
    .bind::<Array<SqlUuid>, _>(
        rows.values()
            .map(|l| l.second.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind::<Timestamptz, _>(load_dt)
    .bind::<Text, _>(load_src)
    .execute(conn)
    .await
}

/// Candidate rows of one satellite, per hub in load order.
#[derive(Default)]
struct Satellite {
    rows: BTreeMap<HashKey, Vec<(HashKey, Timestamp, Value)>>,
}

impl Satellite {
    /// Adds a row unless it repeats the hub's previous candidate.
    fn push(&mut self, hub: HashKey, hashdiff: HashKey, version: Timestamp, attributes: Value) {
        let rows = self.rows.entry(hub).or_default();
        if rows.last().is_none_or(|(last, _, _)| *last != hashdiff) {
            rows.push((hashdiff, version, attributes));
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert(
        &self,
        conn: &mut AsyncPgConnection,
        table: &str,
        hub_column: &str,
        hashdiff_column: &str,
        columns: &[&str],
        expressions: &[&str],
        load_dt: DateTime<Utc>,
        load_src: &str,
    ) -> diesel::QueryResult<usize> {
        let (mut hubs, mut hashdiffs, mut versions, mut load_dts, mut firsts, mut attributes) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for (hub, rows) in &self.rows {
            for (rank, (hashdiff, version, values)) in rows.iter().enumerate() {
                hubs.push(hub.as_uuid());
                hashdiffs.push(hashdiff.as_uuid());
                versions.push(version.as_datetime());
                load_dts.push(load_dt + TimeDelta::microseconds(rank as i64));
                firsts.push(rank == 0);
                attributes.push(values.clone());
            }
        }
        if hubs.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "INSERT INTO {table} ({hub_column}, {columns}, {hashdiff_column}, update_ts, load_dt, \
                                  load_src) \
             SELECT u.hub, {expressions}, u.hd, u.ts, u.ld, $7 \
             FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[], \
                         $5::bool[], $6::jsonb[]) AS u(hub, hd, ts, ld, first, a) \
             WHERE NOT u.first OR u.hd IS DISTINCT FROM ( \
                 SELECT s.{hashdiff_column} FROM {table} s WHERE s.{hub_column} = u.hub \
                 ORDER BY s.load_dt DESC LIMIT 1)",
            columns = columns.join(", "),
            expressions = expressions.join(", "),
        );
        diesel::sql_query(sql)
            .bind::<Array<SqlUuid>, _>(hubs)
            .bind::<Array<SqlUuid>, _>(hashdiffs)
            .bind::<Array<Timestamptz>, _>(versions)
            .bind::<Array<Timestamptz>, _>(load_dts)
            .bind::<Array<Bool>, _>(firsts)
            .bind::<Array<Jsonb>, _>(attributes)
            .bind::<Text, _>(load_src)
            .execute(conn)
            .await
    }
}

/// Records each order's newest applied version.
async fn advance_applied_versions(
    conn: &mut AsyncPgConnection,
    rows: &[(Timestamp, VaultRows)],
    load_dt: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    let mut latest: BTreeMap<HashKey, (i64, Timestamp)> = BTreeMap::new();
    for (version, r) in rows {
        let entry = latest
            .entry(r.h_order.pk)
            .or_insert((r.h_order.order_id.0, *version));
        entry.1 = entry.1.max(*version);
    }
    let keys: Vec<Uuid> = latest.keys().map(HashKey::as_uuid).collect();
    let ids: Vec<i64> = latest.values().map(|(id, _)| *id).collect();
    let versions: Vec<DateTime<Utc>> = latest.values().map(|(_, v)| v.as_datetime()).collect();
    diesel::sql_query(
        "INSERT INTO dds.order_load_state (h_order_pk, order_id, update_ts, load_dt) \
         SELECT pk, id, ts, $4 FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) \
             AS u(pk, id, ts) \
         ON CONFLICT (h_order_pk) DO UPDATE SET update_ts = EXCLUDED.update_ts, \
             load_dt = EXCLUDED.load_dt \
         WHERE dds.order_load_state.update_ts < EXCLUDED.update_ts",
    )
    .bind::<Array<SqlUuid>, _>(keys)
    .bind::<Array<BigInt>, _>(ids)
    .bind::<Array<Timestamptz>, _>(versions)
    .bind::<Timestamptz, _>(load_dt)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Every table the loader writes, for the warehouse check the runtime runs when a batch is
/// refused (hubs, links and satellites are insert-only; the load state is updated).
pub const TABLES: &[vault_runtime::Table] = &{
    const INSERT: &str = "SELECT, INSERT";
    const fn table(name: &'static str, columns: &'static [&'static str]) -> vault_runtime::Table {
        vault_runtime::Table {
            name,
            columns,
            privileges: INSERT,
        }
    }
    [
        table(
            "dds.h_order",
            &["h_order_pk", "order_id", "order_dt", "load_dt", "load_src"],
        ),
        table(
            "dds.h_user",
            &["h_user_pk", "user_id", "load_dt", "load_src"],
        ),
        table("dds.h_restaurant", &["h_restaurant_pk", "restaurant_id"]),
        table("dds.h_product", &["h_product_pk", "product_id"]),
        table("dds.h_category", &["h_category_pk", "category_name"]),
        table(
            "dds.l_order_user",
            &["hk_order_user_pk", "h_order_pk", "h_user_pk"],
        ),
        table(
            "dds.l_order_product",
            &["hk_order_product_pk", "h_order_pk", "h_product_pk"],
        ),
        table(
            "dds.l_product_category",
            &["hk_product_category_pk", "h_product_pk", "h_category_pk"],
        ),
        table(
            "dds.l_product_restaurant",
            &[
                "hk_product_restaurant_pk",
                "h_product_pk",
                "h_restaurant_pk",
            ],
        ),
        table(
            "dds.s_user_names",
            &[
                "h_user_pk",
                "username",
                "userlogin",
                "hk_user_names_hashdiff",
                "update_ts",
            ],
        ),
        table(
            "dds.s_restaurant_names",
            &[
                "h_restaurant_pk",
                "name",
                "hk_restaurant_names_hashdiff",
                "update_ts",
            ],
        ),
        table(
            "dds.s_product_names",
            &[
                "h_product_pk",
                "name",
                "hk_product_names_hashdiff",
                "update_ts",
            ],
        ),
        table(
            "dds.s_order_cost",
            &[
                "h_order_pk",
                "cost",
                "payment",
                "hk_order_cost_hashdiff",
                "update_ts",
            ],
        ),
        table(
            "dds.s_order_status",
            &[
                "h_order_pk",
                "status",
                "hk_order_status_hashdiff",
                "update_ts",
            ],
        ),
        vault_runtime::Table {
            name: "dds.order_load_state",
            columns: &["h_order_pk", "order_id", "update_ts", "load_dt"],
            privileges: "SELECT, INSERT, UPDATE",
        },
    ]
};
