//! The Data Vault loader against a real Postgres, without a broker: each table written from
//! its row type, insert-once and history semantics, and the order effectivity the recount
//! views read (docs/contract.md §3.2, §3.3).

use std::collections::BTreeSet;

use vault_core::{decode, EnrichedOrder, HashKey, OrderStatus, Timestamp};
use vault_runtime::PgPool;
use vault_tests::sql::Columns;

const DDS_MESSAGE: &str = include_str!("../../vault-core/tests/data/dds_message.json");

fn example() -> EnrichedOrder {
    decode::enriched_order(DDS_MESSAGE.as_bytes()).expect("the example decodes")
}

fn at(text: &str) -> Timestamp {
    Timestamp::parse(text).expect("timestamp")
}

async fn warehouse() -> anyhow::Result<(PgPool, tokio_postgres::Client)> {
    let (_, pool, client) = vault_tests::warehouse::migrated().await?;
    Ok((pool, client))
}

async fn load(pool: &PgPool, batch: &[&EnrichedOrder]) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    service_dds::load::load(&mut conn, batch, "test").await?;
    Ok(())
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

/// The row count of each table named.
async fn counts(
    db: &tokio_postgres::Client,
    tables: &[(&'static str, i64)],
) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for (table, _) in tables {
        out.push((
            *table,
            count(db, &format!("SELECT count(*) FROM {table}")).await,
        ));
    }
    out
}

/// (product id, category name) of the order's latest version, as the recount sees it.
async fn latest_lines(db: &tokio_postgres::Client) -> BTreeSet<(String, String)> {
    db.query(
        "SELECT p.product_id, c.category_name FROM dds.v_order_latest_lines l \
         JOIN dds.h_product p USING (h_product_pk) JOIN dds.h_category c USING (h_category_pk)",
        &[],
    )
    .await
    .expect("latest lines")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The example at a later version, without its second dish and with its first filed under
/// pizza.
fn later_version(update_ts: &str) -> (EnrichedOrder, String) {
    let mut later = example();
    later.payload.update_ts = at(update_ts);
    let dropped = later.payload.products.remove(1);
    later.payload.products[0].category = "Пицца".to_owned();
    (later, dropped.id.as_str().to_owned())
}

#[tokio::test]
async fn versions_loaded_one_by_one_leave_the_latest_dishes_and_categories_effective(
) -> anyhow::Result<()> {
    let (pool, db) = warehouse().await?;
    let first = example();
    load(&pool, &[&first]).await?;
    let all: BTreeSet<(String, String)> = first
        .payload
        .products
        .iter()
        .map(|p| (p.id.as_str().to_owned(), p.category.clone()))
        .collect();
    assert_eq!(latest_lines(&db).await, all);

    let (later, dropped) = later_version("2023-08-06 10:00:00");
    load(&pool, &[&later]).await?;
    let expected: BTreeSet<(String, String)> = later
        .payload
        .products
        .iter()
        .map(|p| (p.id.as_str().to_owned(), p.category.clone()))
        .collect();
    assert_eq!(latest_lines(&db).await, expected);
    assert!(expected.iter().all(|(p, _)| *p != dropped));
    assert!(expected.contains(&(
        first.payload.products[0].id.as_str().to_owned(),
        "Пицца".to_owned()
    )));

    // Insert-only: every link and effectivity row of the first version is still there.
    assert_eq!(
        count(&db, "SELECT count(*) FROM dds.s_order_version").await,
        2
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM dds.l_order_product_category").await,
        4,
        "three lines of the first version and the moved dish's new one"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM dds.s_order_product_category_effectivity"
        )
        .await,
        5
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM dds.l_order_product").await,
        3
    );

    // The recount counts the CLOSED latest version: two dishes, two categories.
    let user = HashKey::user(&first.payload.user.id).to_string();
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT coalesce(sum(order_cnt), 0)::bigint FROM cdm.v_user_product_recount \
                 WHERE user_id = '{user}'"
            )
        )
        .await,
        2
    );
    let categories: BTreeSet<String> = db
        .column(
            "SELECT c.category_name FROM cdm.v_user_category_recount r \
             JOIN dds.h_category c ON c.h_category_pk = r.category_id",
        )
        .await?
        .into_iter()
        .collect();
    assert_eq!(
        categories,
        ["Пицца".to_owned(), "Напитки".to_owned()].into()
    );

    // CANCELLED: nothing counts, and the status history grows by one.
    let mut cancelled = later.clone();
    cancelled.payload.update_ts = at("2023-08-07 10:00:00");
    cancelled.payload.status = OrderStatus::Cancelled;
    load(&pool, &[&cancelled]).await?;
    assert_eq!(
        count(&db, "SELECT count(*) FROM cdm.v_user_product_recount").await,
        0
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM dds.s_order_status").await,
        2
    );
    Ok(())
}

#[tokio::test]
async fn one_batch_with_several_versions_and_a_repeat_loads_each_row_once() -> anyhow::Result<()> {
    let (pool, db) = warehouse().await?;
    let first = example();
    let (later, _) = later_version("2023-08-06 10:00:00");
    let mut renamed = later.clone();
    renamed.payload.update_ts = at("2023-08-06 11:00:00");
    renamed.payload.user.login = "irina".to_owned();
    load(&pool, &[&first, &later, &renamed]).await?;
    let tables = [
        ("dds.h_order", 1),
        ("dds.h_user", 1),
        ("dds.h_product", 3),
        ("dds.h_category", 3),
        ("dds.l_order_product", 3),
        ("dds.l_product_category", 4),
        ("dds.l_order_product_category", 4),
        ("dds.s_order_version", 3),
        // One user throughout: one link, in effect at each version.
        ("dds.l_order_user", 1),
        ("dds.s_order_user_effectivity", 3),
        ("dds.s_order_product_category_effectivity", 3 + 2 + 2),
        // One status (CLOSED throughout), two logins, one cost.
        ("dds.s_order_status", 1),
        ("dds.s_user_names", 2),
        ("dds.s_order_cost", 1),
        ("dds.s_product_names", 3),
    ];
    assert_eq!(counts(&db, &tables).await, tables.to_vec());
    let login: String = db
        .one("SELECT userlogin FROM dds.s_user_names ORDER BY load_dt DESC LIMIT 1")
        .await?;
    assert_eq!(
        login, "irina",
        "the newest version's name is the current row"
    );
    let cost: String = db
        .query_one("SELECT cost::text FROM dds.s_order_cost", &[])
        .await?
        .get(0);
    assert_eq!(cost, "1410.00000");

    // Loading the latest version again adds nothing. (Older versions never reach the loader:
    // the handler's gate passes only versions newer than the applied one.)
    load(&pool, &[&renamed]).await?;
    assert_eq!(counts(&db, &tables).await, tables.to_vec());
    assert_eq!(
        latest_lines(&db).await.len(),
        2,
        "the latest version has two dishes"
    );
    Ok(())
}
