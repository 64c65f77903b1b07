//! The BI views (migration 2026-11-22-210000_bi_views, docs/bi.md) against a real Postgres:
//! satellite history with valid_from / valid_to / is_current in source-version order whatever
//! the load order, current-state dimensions and order facts that agree with it, datamart and
//! tag views that agree with the cdm tables, a BI reader that needs no grant on the layers,
//! and a down migration that leaves the schema as it was before.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng as _, SeedableRng as _};
use vault_core::{decode, Amount, EnrichedOrder, HashKey, OrderStatus, Timestamp};
use vault_runtime::PgPool;
use vault_tests::{stack, warehouse};

const DDS_MESSAGE: &str = include_str!("../../vault-core/tests/data/dds_message.json");
const UP: &str = include_str!("../../migrations/sql/2026-11-22-210000_bi_views/up.sql");
const DOWN: &str = include_str!("../../migrations/sql/2026-11-22-210000_bi_views/down.sql");
/// The migration before the BI views.
const BEFORE_BI: &str = "20261122200000";
/// The migration that adds schema `bi`.
const BI: &str = "20261122210000";

/// Every satellite history view: (view, key column). (`bi.order_line_history` is keyed by the
/// order, its driving key: a line a later version drops has no current row; it is checked on
/// its own.)
const HISTORY_VIEWS: [(&str, &str); 6] = [
    ("bi.user_names_history", "h_user_pk"),
    ("bi.product_names_history", "h_product_pk"),
    ("bi.restaurant_names_history", "h_restaurant_pk"),
    ("bi.order_cost_history", "h_order_pk"),
    ("bi.order_status_history", "h_order_pk"),
    ("bi.order_version_history", "h_order_pk"),
];

fn example() -> EnrichedOrder {
    decode::enriched_order(DDS_MESSAGE.as_bytes()).expect("the example decodes")
}

fn at(text: &str) -> Timestamp {
    Timestamp::parse(text).expect("timestamp")
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let client = warehouse::connect(url).await?;
    // Timestamps compare as text below.
    client.batch_execute("SET TimeZone = 'UTC'").await?;
    Ok(client)
}

async fn warehouse() -> anyhow::Result<(String, PgPool, tokio_postgres::Client)> {
    let (url, pool, client) = warehouse::migrated().await?;
    // Timestamps compare as text below.
    client.batch_execute("SET TimeZone = 'UTC'").await?;
    Ok((url, pool, client))
}

/// Each version in its own load, in the order given (the loader itself has no gate: service-dds
/// gates versions before it, so this is how rows arrive out of source order, e.g. the same
/// user seen in an old order loaded late).
async fn load_each(pool: &PgPool, versions: &[&EnrichedOrder]) -> anyhow::Result<()> {
    for version in versions {
        let mut conn = pool.get().await?;
        service_dds::load::load(&mut conn, &[*version], "test").await?;
    }
    Ok(())
}

/// Rows of `sql` with every column as text (NULL as "NULL").
async fn rows(db: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    db.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.get::<_, Option<String>>(i)
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect()
        })
        .collect()
}

fn strings(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|row| row.iter().map(|s| (*s).to_owned()).collect())
        .collect()
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

/// The structural invariants of a history view, checked without its window functions:
/// exactly one current row per key, the current row is the one with the latest source version
/// (then load time), and the intervals of a key tile time without overlap (each non-current
/// row ends where the next begins; no two rows overlap).
async fn assert_history_invariants(db: &tokio_postgres::Client) {
    for (view, key) in HISTORY_VIEWS {
        let not_one_current = count(
            db,
            &format!(
                "SELECT count(*) FROM (SELECT {key} FROM {view} GROUP BY {key} \
                 HAVING count(*) FILTER (WHERE is_current) <> 1) k"
            ),
        )
        .await;
        assert_eq!(
            not_one_current, 0,
            "{view}: keys without exactly one current row"
        );
        let current_not_latest = count(
            db,
            &format!(
                "SELECT count(*) FROM {view} c JOIN {view} o ON o.{key} = c.{key} \
                 WHERE c.is_current AND (o.update_ts, o.load_dt) > (c.update_ts, c.load_dt)"
            ),
        )
        .await;
        assert_eq!(
            current_not_latest, 0,
            "{view}: a current row that is not the latest"
        );
        let bad_current = count(
            db,
            &format!("SELECT count(*) FROM {view} WHERE is_current <> (valid_to IS NULL)"),
        )
        .await;
        assert_eq!(bad_current, 0, "{view}: is_current disagrees with valid_to");
        let gaps = count(
            db,
            &format!(
                "SELECT count(*) FROM {view} a WHERE NOT a.is_current AND NOT EXISTS ( \
                   SELECT FROM {view} b WHERE b.{key} = a.{key} AND b.valid_from = a.valid_to \
                   AND (b.update_ts, b.load_dt) > (a.update_ts, a.load_dt))"
            ),
        )
        .await;
        assert_eq!(gaps, 0, "{view}: an interval not followed by the next");
        let overlaps = count(
            db,
            &format!(
                "SELECT count(*) FROM {view} a JOIN {view} b ON b.{key} = a.{key} \
                 AND (b.update_ts, b.load_dt) > (a.update_ts, a.load_dt) \
                 WHERE b.valid_from < coalesce(a.valid_to, 'infinity') \
                   AND a.valid_from < coalesce(b.valid_to, 'infinity')"
            ),
        )
        .await;
        assert_eq!(overlaps, 0, "{view}: overlapping intervals");
        let backwards = count(
            db,
            &format!("SELECT count(*) FROM {view} WHERE valid_to < valid_from"),
        )
        .await;
        assert_eq!(
            backwards, 0,
            "{view}: an interval that ends before it begins"
        );
    }
}

/// Three versions of the example order loaded newest first, then oldest, then the middle one:
/// every satellite changes in every version, and a dish moves category and is dropped.
fn three_versions() -> [EnrichedOrder; 3] {
    let mut v1 = example();
    v1.payload.update_ts = at("2023-08-05 04:26:54");
    v1.payload.status = OrderStatus::Open;
    v1.payload.cost = Amount::from_i64(100);
    v1.payload.payment = Amount::from_i64(100);
    v1.payload.user.login = "login-1".into();
    v1.payload.restaurant.name = "restaurant-1".into();
    v1.payload.products[0].name = "dish-1".into();
    v1.payload.products[0].category = "Пицца".into();

    let mut v2 = v1.clone();
    v2.payload.update_ts = at("2023-08-05 05:34:29");
    v2.payload.status = OrderStatus::Delivering;
    v2.payload.cost = Amount::from_i64(200);
    v2.payload.payment = Amount::from_i64(200);
    v2.payload.user.login = "login-2".into();
    v2.payload.restaurant.name = "restaurant-2".into();
    v2.payload.products[0].name = "dish-2".into();
    v2.payload.products[0].category = "Супы".into();

    let mut v3 = v2.clone();
    v3.payload.update_ts = at("2023-08-05 06:28:54");
    v3.payload.status = OrderStatus::Closed;
    v3.payload.cost = Amount::from_i64(300);
    v3.payload.payment = Amount::from_i64(250);
    v3.payload.user.login = "login-3".into();
    v3.payload.restaurant.name = "restaurant-3".into();
    v3.payload.products[0].name = "dish-3".into();
    v3.payload.products[0].category = "Выпечка".into();
    v3.payload.products.remove(2);
    [v1, v2, v3]
}

const T1: &str = "2023-08-05 04:26:54+00";
const T2: &str = "2023-08-05 05:34:29+00";
const T3: &str = "2023-08-05 06:28:54+00";

#[tokio::test]
async fn history_follows_the_source_version_whatever_the_load_order() -> anyhow::Result<()> {
    let (_, pool, db) = warehouse().await?;
    let [v1, v2, v3] = three_versions();
    load_each(&pool, &[&v3, &v1, &v2]).await?;
    let order = HashKey::order(v1.payload.id).to_string();

    let history = |view: &str, columns: &str, key: &str| {
        format!(
            "SELECT {columns}, valid_from::text, valid_to::text, is_current::text FROM {view} \
             WHERE {key} = '{{k}}' ORDER BY valid_from"
        )
    };
    let status = history("bi.order_status_history", "status", "h_order_pk");
    assert_eq!(
        rows(&db, &status.replace("{k}", &order)).await,
        strings(&[
            &["OPEN", T1, T2, "false"],
            &["DELIVERING", T2, T3, "false"],
            &["CLOSED", T3, "NULL", "true"],
        ]),
        "loaded CLOSED, OPEN, DELIVERING; valid in source order"
    );
    let cost = history(
        "bi.order_cost_history",
        "cost::int::text, payment::int::text",
        "h_order_pk",
    );
    assert_eq!(
        rows(&db, &cost.replace("{k}", &order)).await,
        strings(&[
            &["100", "100", T1, T2, "false"],
            &["200", "200", T2, T3, "false"],
            &["300", "250", T3, "NULL", "true"],
        ])
    );
    let user = HashKey::user(&v1.payload.user.id).to_string();
    let logins = history("bi.user_names_history", "userlogin", "h_user_pk");
    assert_eq!(
        rows(&db, &logins.replace("{k}", &user)).await,
        strings(&[
            &["login-1", T1, T2, "false"],
            &["login-2", T2, T3, "false"],
            &["login-3", T3, "NULL", "true"],
        ])
    );
    let restaurant = HashKey::restaurant(&v1.payload.restaurant.id).to_string();
    let names = history(
        "bi.restaurant_names_history",
        "restaurant_name",
        "h_restaurant_pk",
    );
    assert_eq!(
        rows(&db, &names.replace("{k}", &restaurant)).await,
        strings(&[
            &["restaurant-1", T1, T2, "false"],
            &["restaurant-2", T2, T3, "false"],
            &["restaurant-3", T3, "NULL", "true"],
        ])
    );
    let dish = HashKey::product(&v1.payload.products[0].id).to_string();
    let dishes = history("bi.product_names_history", "product_name", "h_product_pk");
    assert_eq!(
        rows(&db, &dishes.replace("{k}", &dish)).await,
        strings(&[
            &["dish-1", T1, T2, "false"],
            &["dish-2", T2, T3, "false"],
            &["dish-3", T3, "NULL", "true"],
        ])
    );
    let versions = history("bi.order_version_history", "version_no::text", "h_order_pk");
    assert_eq!(
        rows(&db, &versions.replace("{k}", &order)).await,
        strings(&[
            &["1", T1, T2, "false"],
            &["2", T2, T3, "false"],
            &["3", T3, "NULL", "true"],
        ])
    );

    // Order lines: the current ones are exactly those of the latest version (the recount's
    // own view agrees), and the moved dish has one line per category it was filed under.
    let current_lines = rows(
        &db,
        "SELECT product_id, category_name FROM bi.order_line_history WHERE is_current ORDER BY 1",
    )
    .await;
    let mut expected: Vec<Vec<String>> = v3
        .payload
        .products
        .iter()
        .map(|p| vec![p.id.as_str().to_owned(), p.category.clone()])
        .collect();
    expected.sort();
    assert_eq!(current_lines, expected);
    assert_eq!(
        current_lines,
        rows(
            &db,
            "SELECT p.product_id, c.category_name FROM dds.v_order_latest_lines l \
             JOIN dds.h_product p USING (h_product_pk) JOIN dds.h_category c USING (h_category_pk) \
             ORDER BY 1"
        )
        .await
    );
    assert_eq!(
        rows(
            &db,
            &format!(
                "SELECT category_name, valid_from::text, coalesce(valid_to::text, 'NULL') \
                 FROM bi.order_line_history WHERE h_product_pk = '{dish}' ORDER BY valid_from"
            )
        )
        .await,
        strings(&[
            &["Пицца", T1, T2],
            &["Супы", T2, T3],
            &["Выпечка", T3, "NULL"]
        ])
    );
    // The dish v3 dropped is in the lines of v1 and v2 only.
    let dropped = HashKey::product(&v1.payload.products[2].id).to_string();
    assert_eq!(
        rows(
            &db,
            &format!(
                "SELECT version_no::text, is_current::text FROM bi.order_line_history \
                 WHERE h_product_pk = '{dropped}' ORDER BY version_no"
            )
        )
        .await,
        strings(&[&["1", "false"], &["2", "false"]])
    );

    // The current state: dimensions and the order fact take the latest source version, not
    // the last loaded one (v2).
    assert_eq!(
        rows(
            &db,
            &format!("SELECT userlogin, user_id FROM bi.dim_user WHERE h_user_pk = '{user}'")
        )
        .await,
        strings(&[&["login-3", v1.payload.user.id.as_str()]])
    );
    assert_eq!(
        rows(
            &db,
            &format!(
                "SELECT product_name, category_name, restaurant_id FROM bi.dim_product \
                 WHERE h_product_pk = '{dish}'"
            )
        )
        .await,
        strings(&[&["dish-3", "Выпечка", v1.payload.restaurant.id.as_str()]])
    );
    assert_eq!(
        rows(&db, "SELECT restaurant_name FROM bi.dim_restaurant").await,
        strings(&[&["restaurant-3"]])
    );
    assert_eq!(
        rows(
            &db,
            &format!(
                "SELECT order_id::text, status, cost::int::text, payment::int::text, \
                 versions::text, version_update_ts::text, user_id, order_date::text \
                 FROM bi.fact_order WHERE h_order_pk = bi.hash_key('{}')",
                v1.payload.id
            )
        )
        .await,
        strings(&[&[
            &v1.payload.id.to_string(),
            "CLOSED",
            "300",
            "250",
            "3",
            T3,
            v1.payload.user.id.as_str(),
            "2023-08-05",
        ]])
    );
    assert_eq!(
        rows(
            &db,
            "SELECT h_order_pk::text, status FROM bi.order_status_history WHERE is_current \
             EXCEPT SELECT h_order_pk::text, status FROM dds.v_order_latest_status"
        )
        .await,
        Vec::<Vec<String>>::new(),
        "the current status is the recount's latest status"
    );
    assert_history_invariants(&db).await;
    Ok(())
}

#[tokio::test]
async fn hash_key_reproduces_the_contract_vectors() -> anyhow::Result<()> {
    let (_, _, db) = warehouse().await?;
    // docs/contract.md §3.1.
    for (input, key) in [
        ("2301365", "55993f56-f356-3556-b280-96f5bbcaee7f"),
        (
            "626a81ce9a8cd1920641e296",
            "a9e6edc4-db91-3f11-a278-f773f3273ae0",
        ),
        ("Выпечка", "11a15ec4-37ae-3363-878f-c9a2cd7249b5"),
        ("", "7aaf118c-f174-3eba-9ec5-680cd791a020"),
    ] {
        let got: String = db
            .query_one("SELECT bi.hash_key($1)::text", &[&input])
            .await?
            .get(0);
        assert_eq!(got, key, "{input:?}");
    }
    Ok(())
}

/// Random satellite histories written straight into the tables, in random load order and
/// with ties in the source version: the whole view equals a model computed here.
#[tokio::test]
async fn random_histories_equal_a_model() -> anyhow::Result<()> {
    let (_, _, db) = warehouse().await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261122);
    // (order, update_ts minute, load_dt second) -> status; per order, distinct load_dt.
    let mut model: BTreeMap<i64, Vec<(i64, i64, String)>> = BTreeMap::new();
    let mut inserts = Vec::new();
    for order in 1..=40_i64 {
        db.execute(
            "INSERT INTO dds.h_order (h_order_pk, order_id, order_dt, load_dt, load_src) \
             VALUES (bi.hash_key($1::bigint::text), $1, now(), now(), 'test')",
            &[&order],
        )
        .await?;
        let n = rng.random_range(1..=6);
        let mut loads: Vec<i64> = (0..n).collect();
        // Load order is a random permutation of source order.
        for i in (1..loads.len()).rev() {
            loads.swap(i, rng.random_range(0..=i));
        }
        for (i, load) in loads.into_iter().enumerate() {
            let minute = rng.random_range(0..4_i64); // ties are likely
            let status = ["OPEN", "COOKING", "CLOSED", "CANCELLED"][i % 4].to_owned();
            model
                .entry(order)
                .or_default()
                .push((minute, load, status.clone()));
            inserts.push((order, minute, load, status));
        }
    }
    for (order, minute, load, status) in &inserts {
        db.execute(
            "INSERT INTO dds.s_order_status \
               (h_order_pk, order_id, status, hk_order_status_hashdiff, update_ts, load_dt, \
                load_src) \
             VALUES (bi.hash_key($1::bigint::text), $1, $2, gen_random_uuid(), \
                     timestamptz '2025-01-01 00:00:00+00' + make_interval(mins => $3::int), \
                     timestamptz '2025-01-02 00:00:00+00' + make_interval(secs => $4::int), 'test')",
            &[order, status, &(*minute as i32), &(*load as i32)],
        )
        .await?;
    }
    let minute = |m: i64| format!("2025-01-01 00:{m:02}:00+00");
    let mut expected = Vec::new();
    for (order, mut versions) in model {
        versions.sort();
        for (i, (m, _, status)) in versions.iter().enumerate() {
            let next = versions.get(i + 1).map(|(m, _, _)| minute(*m));
            expected.push(vec![
                order.to_string(),
                status.clone(),
                minute(*m),
                next.clone().unwrap_or_else(|| "NULL".into()),
                next.is_none().to_string(),
            ]);
        }
    }
    let got = rows(
        &db,
        "SELECT order_id::text AS o, status, valid_from::text, valid_to::text, is_current::text \
         FROM bi.order_status_history ORDER BY order_id, update_ts, load_dt",
    )
    .await;
    assert_eq!(got, expected);
    assert_history_invariants(&db).await;
    // (The order fact reads dds.pit_order, which the loader keeps; these raw status rows have
    // no loader behind them. Its agreement with the history is checked where orders are
    // loaded: `a_point_in_time_follows_any_load_order` and every pipeline test.)
    Ok(())
}

/// The point-in-time rows (dds.pit_*, migration 2026-12-03-010000_point_in_time) that the
/// order fact, the daily facts and the dish dimension read equal what the satellites' history
/// says, however the versions were loaded: in source order several to a load (service-dds's
/// gated path, advanced in place), or shuffled one by one, repeated and late (rewritten from
/// the history), with orders that change user, status, amounts, day and dishes' categories.
#[tokio::test]
async fn a_point_in_time_follows_any_load_order() -> anyhow::Result<()> {
    let (_, pool, db) = warehouse().await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261203);
    let users = [
        example().payload.user.id,
        "0123456789abcdef01234567".parse()?,
    ];
    let categories = ["Выпечка", "Супы", "Напитки"];
    let statuses = [
        OrderStatus::Open,
        OrderStatus::Delivering,
        OrderStatus::Closed,
        OrderStatus::Cancelled,
    ];
    let mut in_order: Vec<Vec<EnrichedOrder>> = Vec::new();
    for order in 0..60_i64 {
        let versions = rng.random_range(1..=4);
        let mut history = Vec::new();
        for version in 0..versions {
            let mut v = example();
            v.object_id.0 += order;
            v.payload.id.0 += order;
            v.payload.date = at(&format!(
                "2023-08-0{} 23:{:02}:00",
                5 + order % 2,
                order % 60
            ));
            v.payload.update_ts = at(&format!("2023-08-07 10:{:02}:00", version * 10 + order % 7));
            v.payload.status = statuses[rng.random_range(0..statuses.len())];
            v.payload.user.id = users[rng.random_range(0..users.len())].clone();
            let cost = rng.random_range(1..500);
            v.payload.cost = Amount::from_i64(cost);
            v.payload.payment = Amount::from_i64(cost - rng.random_range(0..cost));
            v.payload.products[0].category = categories[rng.random_range(0..3)].into();
            if rng.random_bool(0.3) {
                v.payload.products.pop();
            }
            history.push(v);
        }
        in_order.push(history);
    }
    // The first half in source order, each order's versions in one or two loads.
    for history in &in_order[..30] {
        let split = rng.random_range(0..=history.len());
        for part in [&history[..split], &history[split..]] {
            let part: Vec<&EnrichedOrder> = part.iter().collect();
            let mut conn = pool.get().await?;
            service_dds::load::load(&mut conn, &part, "test").await?;
        }
    }
    assert_eq!(pit_differences(&db).await, Vec::<Vec<String>>::new());
    // The rest shuffled, one by one, with repeats of versions loaded before.
    let mut loads: Vec<&EnrichedOrder> = in_order[30..].iter().flatten().collect();
    loads.extend(in_order[..30].iter().flatten().step_by(3));
    for i in (1..loads.len()).rev() {
        loads.swap(i, rng.random_range(0..=i));
    }
    load_each(&pool, &loads).await?;
    assert_eq!(pit_differences(&db).await, Vec::<Vec<String>>::new());
    assert_eq!(count(&db, "SELECT count(*) FROM bi.fact_order").await, 60);
    assert!(
        count(
            &db,
            "SELECT count(*) FROM bi.fact_orders_daily WHERE users > 1 OR orders > users"
        )
        .await
            > 0,
        "the daily facts count orders and distinct users apart"
    );
    Ok(())
}

async fn pit_differences(db: &tokio_postgres::Client) -> Vec<Vec<String>> {
    rows(
        db,
        "SELECT * FROM dds.v_pit_differences ORDER BY 1, 2 LIMIT 5",
    )
    .await
}

#[tokio::test]
async fn datamart_tag_and_fact_views_agree_with_the_base_tables() -> anyhow::Result<()> {
    let (_, pool, db) = warehouse().await?;
    let first = example(); // CLOSED, 2023-08-05, cost 1410
    let mut second = example();
    second.object_id.0 += 1;
    second.payload.id.0 += 1;
    second.payload.status = OrderStatus::Cancelled;
    second.payload.cost = Amount::from_i64(10);
    second.payload.payment = Amount::from_i64(7);
    let mut third = second.clone();
    third.object_id.0 += 1;
    third.payload.id.0 += 1;
    third.payload.date = at("2023-08-06 23:30:00");
    third.payload.status = OrderStatus::Closed;
    load_each(&pool, &[&first, &second, &third]).await?;
    assert_eq!(
        rows(
            &db,
            "SELECT order_date::text, status, orders::text, users::text, cost::int::text, \
             payment::int::text FROM bi.fact_orders_daily ORDER BY 1, 2"
        )
        .await,
        strings(&[
            &["2023-08-05", "CANCELLED", "1", "1", "10", "7"],
            &["2023-08-05", "CLOSED", "1", "1", "1410", "1410"],
            &["2023-08-06", "CLOSED", "1", "1", "10", "7"],
        ])
    );

    let user = HashKey::user(&first.payload.user.id);
    let dish = &first.payload.products[0];
    let other = &first.payload.products[1];
    let (uid, pid, oid) = (
        user.to_string(),
        HashKey::product(&dish.id).to_string(),
        HashKey::product(&other.id).to_string(),
    );
    let category = HashKey::category(&dish.category).to_string();
    // A stranger: a counter of a user the vault does not know (names are then NULL).
    let stranger = uuid::Uuid::new_v4().to_string();
    db.batch_execute(&format!(
        "INSERT INTO cdm.user_product_counters (user_id, product_id, product_name, order_cnt) VALUES \
           ('{uid}', '{pid}', 'p1', 5), ('{uid}', '{oid}', 'p2', 0), ('{stranger}', '{pid}', 'p1', 1); \
         INSERT INTO cdm.user_category_counters (user_id, category_id, category_name, order_cnt) VALUES \
           ('{uid}', '{category}', '{cname}', 3), ('{stranger}', '{category}', '{cname}', 0); \
         INSERT INTO cdm.tag_rules (tag, scope, target, threshold) VALUES \
           ('Fan', 'product', '{dish_id}', 2), ('Baker', 'category', '{cname}', 3), ('Nobody', 'category', 'x', 9); \
         INSERT INTO cdm.user_tags (user_id, tag, order_cnt) VALUES \
           ('{uid}', 'Fan', 5), ('{uid}', 'Baker', 3), ('{stranger}', 'Fan', 2); \
         INSERT INTO cdm.user_tag_events (event_id, user_id, tag, seq, event, order_cnt) VALUES \
           (gen_random_uuid(), '{uid}', 'Fan', 1, 'granted', 2), \
           (gen_random_uuid(), '{uid}', 'Fan', 2, 'revoked', 1), \
           (gen_random_uuid(), '{uid}', 'Fan', 3, 'granted', 5)",
        cname = dish.category,
        dish_id = dish.id.as_str(),
    ))
    .await?;

    let (source_user, name, login) = (
        first.payload.user.id.as_str(),
        first.payload.user.name.as_str(),
        first.payload.user.login.as_str(),
    );
    // Only counters above zero, each with the user's and the dish's source ids and names.
    assert_eq!(
        rows(
            &db,
            "SELECT h_user_pk::text, user_id, username, userlogin, h_product_pk::text, product_id, \
             product_name, order_cnt::text FROM bi.user_product_counters ORDER BY order_cnt"
        )
        .await,
        strings(&[
            &[&stranger, "NULL", "NULL", "NULL", &pid, dish.id.as_str(), "p1", "1"],
            &[&uid, source_user, name, login, &pid, dish.id.as_str(), "p1", "5"],
        ])
    );
    assert_eq!(
        rows(
            &db,
            "SELECT h_user_pk::text, user_id, username, h_category_pk::text, category_name, \
             order_cnt::text FROM bi.user_category_counters"
        )
        .await,
        strings(&[&[&uid, source_user, name, &category, &dish.category, "3"]])
    );
    // Agreement with the base tables, both ways, in general.
    for (view, table, key) in [
        (
            "bi.user_product_counters",
            "cdm.user_product_counters",
            "product_id",
        ),
        (
            "bi.user_category_counters",
            "cdm.user_category_counters",
            "category_id",
        ),
    ] {
        let bi_key = key.replace("_id", "");
        let sql = format!(
            "SELECT count(*) FROM ( \
               (SELECT h_user_pk, h_{bi_key}_pk, order_cnt FROM {view} \
                EXCEPT SELECT user_id, {key}, order_cnt FROM {table} WHERE order_cnt > 0) \
               UNION ALL \
               (SELECT user_id, {key}, order_cnt FROM {table} WHERE order_cnt > 0 \
                EXCEPT SELECT h_user_pk, h_{bi_key}_pk, order_cnt FROM {view})) d"
        );
        assert_eq!(count(&db, &sql).await, 0, "{view} vs {table}");
    }

    assert_eq!(
        rows(
            &db,
            "SELECT h_user_pk::text, user_id, username, tag, scope, target, threshold::text, \
             order_cnt::text FROM bi.user_tags ORDER BY tag, order_cnt"
        )
        .await,
        strings(&[
            &[
                &uid,
                source_user,
                name,
                "Baker",
                "category",
                &dish.category,
                "3",
                "3"
            ],
            &[
                &stranger,
                "NULL",
                "NULL",
                "Fan",
                "product",
                dish.id.as_str(),
                "2",
                "2"
            ],
            &[
                &uid,
                source_user,
                name,
                "Fan",
                "product",
                dish.id.as_str(),
                "2",
                "5"
            ],
        ])
    );
    assert_eq!(
        rows(
            &db,
            "SELECT tag, target_name, holders::text FROM bi.tag_rules ORDER BY tag"
        )
        .await,
        strings(&[
            &["Baker", &dish.category, "1"],
            &["Fan", &dish.name, "2"],
            &["Nobody", "x", "0"],
        ])
    );
    assert_eq!(
        rows(
            &db,
            "SELECT user_id, tag, event, seq::text, order_cnt::text FROM bi.user_tag_events \
             ORDER BY seq"
        )
        .await,
        strings(&[
            &[source_user, "Fan", "granted", "1", "2"],
            &[source_user, "Fan", "revoked", "2", "1"],
            &[source_user, "Fan", "granted", "3", "5"],
        ])
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM bi.user_tag_events").await,
        count(&db, "SELECT count(*) FROM cdm.user_tag_events").await
    );
    Ok(())
}

/// Every view and every column of `bi` is commented (BI tools show the comments).
#[tokio::test]
async fn every_view_and_column_is_documented() -> anyhow::Result<()> {
    let (_, _, db) = warehouse().await?;
    let undocumented = rows(
        &db,
        "SELECT c.relname || coalesce('.' || a.attname, '') FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'bi' \
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE obj_description(c.oid, 'pg_class') IS NULL \
            OR (a.attname IS NOT NULL AND col_description(c.oid, a.attnum) IS NULL)",
    )
    .await;
    assert_eq!(undocumented, Vec::<Vec<String>>::new());
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'bi' AND c.relkind = 'v'"
        )
        .await,
        18
    );
    Ok(())
}

/// A BI reader granted the `bi` schema (as docs/bi.md says) reads every view and nothing of the
/// layers; the service roles `vaultctl migrate` grants get nothing on `bi`, and the cdm role
/// still does its writes.
#[tokio::test]
async fn a_bi_reader_reads_the_views_and_nothing_else() -> anyhow::Result<()> {
    let stack = stack().await;
    let (url, _, db) = warehouse().await?;
    let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let (group, reader, cdm) = (
        format!("vbi{id}_bi"),
        format!("vbi{id}_reader"),
        format!("vbi{id}_cdm"),
    );
    // docs/bi.md, "Access".
    db.batch_execute(&format!(
        "CREATE ROLE {group} NOLOGIN; \
         GRANT USAGE ON SCHEMA bi TO {group}; \
         GRANT SELECT ON ALL TABLES IN SCHEMA bi TO {group}; \
         CREATE ROLE {reader} LOGIN PASSWORD 'reader' IN ROLE {group}"
    ))
    .await?;
    vault_migrations::roles::apply(
        &url,
        vec![vault_migrations::roles::ServiceRole {
            layer: vault_migrations::roles::Layer::Cdm,
            name: cdm.clone(),
            password: Some("cdm".into()),
        }],
    )
    .await?;

    let result = async {
        let as_role = |role: &str, password: &str| -> anyhow::Result<String> {
            let mut config: tokio_postgres::Config = url.parse()?;
            config.user(role).password(password);
            let host = match config.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
                _ => "127.0.0.1".to_owned(),
            };
            let port = config.get_ports().first().copied().unwrap_or(5432);
            let database = config.get_dbname().unwrap_or_default().to_owned();
            Ok(format!(
                "postgres://{role}:{password}@{host}:{port}/{database}"
            ))
        };
        let reader_db = connect(&as_role(&reader, "reader")?).await?;
        let views: Vec<String> = rows(
            &db,
            "SELECT 'bi.' || viewname FROM pg_views WHERE schemaname = 'bi' ORDER BY 1",
        )
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
        for view in &views {
            reader_db
                .query(&format!("SELECT * FROM {view} LIMIT 1"), &[])
                .await
                .map_err(|e| anyhow::anyhow!("the reader on {view}: {e}"))?;
        }
        for table in [
            "dds.h_order",
            "cdm.user_tags",
            "stg.order_events",
            "ops.dead_letters",
        ] {
            let error = reader_db
                .query(&format!("SELECT 1 FROM {table} LIMIT 1"), &[])
                .await
                .expect_err(table);
            assert_eq!(
                error.code(),
                Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
                "{table}"
            );
        }
        let cdm_db = connect(&as_role(&cdm, "cdm")?).await?;
        let error = cdm_db
            .query("SELECT 1 FROM bi.user_tags LIMIT 1", &[])
            .await
            .expect_err("the cdm role on bi");
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
        );
        cdm_db
            .batch_execute(
                "INSERT INTO cdm.user_tags (user_id, tag, order_cnt) \
                 VALUES (gen_random_uuid(), 't', 1)",
            )
            .await?;
        anyhow::Ok(views.len())
    }
    .await;

    // Roles are cluster-wide: drop them whatever happened.
    let admin = connect(&stack.database_admin_url).await?;
    db.batch_execute(&format!("DROP OWNED BY {reader}, {group}, {cdm}"))
        .await?;
    drop(db);
    admin
        .batch_execute(&format!(
            "DROP ROLE {reader}; DROP ROLE {group}; DROP ROLE {cdm}"
        ))
        .await?;
    assert_eq!(result?, 18);
    Ok(())
}

/// The catalog outside `bi` that a migration could touch: relations with their kind, indexes,
/// functions, and the `bi` schema itself.
async fn catalog(db: &tokio_postgres::Client) -> BTreeSet<String> {
    rows(
        db,
        "SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname IN ('stg', 'dds', 'cdm', 'ops', 'bi', 'public') \
         UNION ALL SELECT n.nspname || '.' || p.proname || '()' FROM pg_proc p \
         JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname IN ('stg', 'dds', 'cdm', 'ops', 'bi') \
         UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%'",
    )
    .await
    .into_iter()
    .map(|r| r[0].clone())
    .collect()
}

#[tokio::test]
async fn the_down_migration_removes_everything_and_up_again_works() -> anyhow::Result<()> {
    let url = stack().await.fresh_database().await?;
    vault_migrations::run_through(&url, BEFORE_BI).await?;
    let db = connect(&url).await?;
    let before = catalog(&db).await;
    assert!(!before.contains("schema bi"));

    // Up to this migration and no further: later ones are not this test's business.
    let applied = vault_migrations::run_through(&url, BI).await?;
    assert_eq!(applied, [BI]);
    let with_bi = catalog(&db).await;
    assert!(with_bi.contains("schema bi"));
    assert!(with_bi.contains("bi.fact_order:v"));
    // Only `bi` objects were added.
    let added: Vec<&String> = with_bi.difference(&before).collect();
    assert!(
        added
            .iter()
            .all(|o| o.starts_with("bi.") || *o == "schema bi"),
        "{added:?}"
    );

    db.batch_execute(DOWN).await?;
    assert_eq!(catalog(&db).await, before);
    // And up again, from the state down left.
    db.batch_execute(UP).await?;
    assert_eq!(catalog(&db).await, with_bi);
    Ok(())
}
