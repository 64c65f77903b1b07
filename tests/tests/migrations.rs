//! The warehouse schema against a real Postgres: what it creates, that applying it again is a
//! no-op, that replicas starting together apply it once, and that Data Vault rows are
//! insert-only (no UPDATE, DELETE or TRUNCATE).

use vault_tests::sql::Columns;
use vault_tests::stack;

async fn client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test]
async fn migrations_create_every_table_and_a_second_run_changes_nothing() -> anyhow::Result<()> {
    let url = stack().await.fresh_database().await?;
    let applied = vault_migrations::run(&url).await?;
    assert_eq!(applied, vault_migrations::versions()?);
    assert!(vault_migrations::run(&url).await?.is_empty());

    let db = client(&url).await?;
    let tables = vault_tests::pipeline::Pipeline::warehouse_tables(&db).await?;
    for expected in [
        "stg.order_events",
        "dds.h_user",
        "dds.h_product",
        "dds.h_category",
        "dds.h_restaurant",
        "dds.h_order",
        "dds.l_order_user",
        "dds.l_order_product",
        "dds.l_product_category",
        "dds.l_product_restaurant",
        "dds.s_user_names",
        "dds.s_product_names",
        "dds.s_restaurant_names",
        "dds.s_order_cost",
        "dds.s_order_status",
        "dds.s_order_version",
        "dds.s_order_user_effectivity",
        "dds.l_order_product_category",
        "dds.s_order_product_category_effectivity",
        "cdm.user_product_counters",
        "cdm.user_category_counters",
        "cdm.order_state",
        "ops.dead_letters",
    ] {
        assert!(
            tables.iter().any(|t| t == expected),
            "{expected} missing from {tables:?}"
        );
    }
    // Column types the contract names.
    let types: Vec<(String, String, String)> = db
        .query(
            "SELECT table_schema || '.' || table_name, column_name, data_type \
             FROM information_schema.columns WHERE table_schema IN ('stg', 'dds', 'cdm')",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let type_of = |table: &str, column: &str| {
        types
            .iter()
            .find(|(t, c, _)| t == table && c == column)
            .map(|(_, _, ty)| ty.clone())
            .unwrap_or_else(|| panic!("{table}.{column} missing"))
    };
    assert_eq!(type_of("stg.order_events", "payload"), "jsonb");
    assert_eq!(
        type_of("stg.order_events", "update_ts"),
        "timestamp with time zone"
    );
    assert_eq!(type_of("dds.h_order", "h_order_pk"), "uuid");
    assert_eq!(type_of("dds.s_order_cost", "cost"), "numeric");
    assert_eq!(
        type_of("dds.s_order_status", "update_ts"),
        "timestamp with time zone"
    );
    assert_eq!(type_of("cdm.user_product_counters", "order_cnt"), "integer");
    for table in ["dds.h_user", "dds.l_order_user", "dds.s_user_names"] {
        assert_eq!(type_of(table, "load_dt"), "timestamp with time zone");
        assert_eq!(type_of(table, "load_src"), "text");
    }
    // Satellites are keyed by hub and load time; an order's by its id, which stands for the
    // hub key (docs/contract.md §3.2, "Order-scoped tables").
    assert_eq!(
        primary_key(&db, "dds.s_user_names").await?,
        ["h_user_pk", "load_dt"]
    );
    assert_eq!(
        primary_key(&db, "dds.s_order_status").await?,
        ["order_id", "load_dt"]
    );
    // Staging and the counters are keyed by their natural keys, with no surrogate id.
    for (table, key) in [
        ("stg.order_events", &["object_id"][..]),
        ("cdm.user_product_counters", &["user_id", "product_id"]),
        ("cdm.user_category_counters", &["user_id", "category_id"]),
    ] {
        assert_eq!(primary_key(&db, table).await?, key, "{table}");
        assert!(
            !types.iter().any(|(t, c, _)| t == table && c == "id"),
            "{table} still has an id"
        );
    }
    // Every index of an order's link or satellite leads with the order id, so that what a
    // load adds lands in the newest pages, whatever the history.
    for table in vault_core::vault::tables() {
        if !table.columns.contains(&"order_id") || table.name.starts_with("dds.h_") {
            continue;
        }
        let leading: Vec<String> = db
            .column(&format!(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a \
                   ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                 WHERE i.indrelid = '{}'::regclass",
                table.name
            ))
            .await?;
        assert_eq!(leading, ["order_id"], "{}", table.name);
    }
    Ok(())
}

/// The columns of `table`'s primary key, in key order.
async fn primary_key(db: &tokio_postgres::Client, table: &str) -> anyhow::Result<Vec<String>> {
    db.column(&format!(
        "SELECT a.attname FROM pg_index i \
         CROSS JOIN LATERAL generate_subscripts(i.indkey, 1) AS k(n) \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[k.n] \
         WHERE i.indrelid = '{table}'::regclass AND i.indisprimary ORDER BY k.n"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_apply_the_schema_once() -> anyhow::Result<()> {
    let url = stack().await.fresh_database().await?;
    let runs = futures::future::join_all((0..4).map(|_| vault_migrations::run(&url))).await;
    let applied: usize = runs
        .into_iter()
        .map(|run| run.map(|versions| versions.len()))
        .sum::<anyhow::Result<usize>>()?;
    assert_eq!(applied, vault_migrations::versions()?.len());
    Ok(())
}

#[tokio::test]
async fn data_vault_rows_and_the_counter_floor_are_enforced_by_the_database() -> anyhow::Result<()>
{
    let url = stack().await.fresh_database().await?;
    vault_migrations::run(&url).await?;
    let db = client(&url).await?;
    db.batch_execute(
        "INSERT INTO dds.h_user VALUES ('a9e6edc4-db91-3f11-a278-f773f3273ae0', \
         '626a81ce9a8cd1920641e296', now(), 'test')",
    )
    .await?;
    let update = db
        .batch_execute("UPDATE dds.h_user SET user_id = 'changed'")
        .await
        .expect_err("hubs are insert-only");
    assert!(
        update.to_string().contains("insert-only") || format!("{update:?}").contains("insert-only"),
        "{update:?}"
    );
    for statement in [
        "DELETE FROM dds.h_user",
        "DELETE FROM dds.h_user WHERE user_id = '626a81ce9a8cd1920641e296'",
        "TRUNCATE dds.h_user",
        "TRUNCATE dds.h_user CASCADE",
    ] {
        let refused = db
            .batch_execute(statement)
            .await
            .expect_err("hubs are insert-only");
        assert!(
            format!("{refused:?}").contains("insert-only"),
            "{statement}: {refused:?}"
        );
    }
    assert_eq!(
        db.query_one("SELECT count(*) FROM dds.h_user", &[])
            .await?
            .get::<_, i64>(0),
        1,
        "the row survived"
    );
    let negative = db
        .batch_execute(
            "INSERT INTO cdm.user_product_counters (user_id, product_id, product_name, order_cnt) \
             VALUES (gen_random_uuid(), gen_random_uuid(), 'x', -1)",
        )
        .await;
    assert!(negative.is_err(), "order_cnt must not go below zero");
    Ok(())
}

/// Every hub, link and satellite refuses UPDATE, DELETE and TRUNCATE, even when no row
/// matches (a statement that would change history is a bug whether or not it finds rows
/// today); the tables that are state, not history, stay writable.
#[tokio::test]
async fn every_data_vault_table_refuses_update_delete_and_truncate() -> anyhow::Result<()> {
    let url = stack().await.fresh_database().await?;
    vault_migrations::run(&url).await?;
    let db = client(&url).await?;
    let tables: Vec<String> = db
        .column(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'dds' \
             AND table_type = 'BASE TABLE' AND table_name ~ '^[hls]_' ORDER BY 1",
        )
        .await?
        .into_iter()
        .collect();
    assert!(tables.len() >= 14, "hubs, links and satellites: {tables:?}");
    for table in &tables {
        let column: String = db
            .query_one(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = 'dds' AND table_name = $1 ORDER BY ordinal_position \
                 LIMIT 1",
                &[table],
            )
            .await?
            .get(0);
        for statement in [
            format!("UPDATE dds.{table} SET {column} = {column}"),
            format!("DELETE FROM dds.{table}"),
            format!("TRUNCATE dds.{table}"),
        ] {
            let refused = db
                .batch_execute(&statement)
                .await
                .expect_err("the Data Vault is insert-only");
            assert!(
                format!("{refused:?}").contains("insert-only"),
                "{statement}: {refused:?}"
            );
        }
    }
    // State tables are not history: the services update them.
    for statement in [
        "DELETE FROM dds.order_load_state",
        "UPDATE cdm.order_state SET counted = false",
        "DELETE FROM cdm.user_product_counters",
    ] {
        db.batch_execute(statement).await?;
    }
    Ok(())
}
