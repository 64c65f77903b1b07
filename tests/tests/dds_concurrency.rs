//! service-dds's loader when two batches load the same new order at once (a partition's old
//! owner not yet stopped during a rebalance): a new order's rows are inserted without the
//! conflict check, so the second load, which found the order new, must meet the first one's
//! rows, be refused as a systemic failure (retried, never bisected into a dead letter), and
//! load nothing twice when it is retried.

use std::time::Duration;

use diesel_async::SimpleAsyncConnection as _;
use vault_core::{decode, EnrichedOrder};
use vault_runtime::Failure;
use vault_tests::{eventually, warehouse};

const DDS_MESSAGE: &str = include_str!("../../vault-core/tests/data/dds_message.json");

fn example() -> EnrichedOrder {
    decode::enriched_order(DDS_MESSAGE.as_bytes()).expect("the example decodes")
}

/// The rows of every order-scoped table and the load state, table by table.
const ORDER_TABLES: &[&str] = &[
    "dds.h_order",
    "dds.l_order_user",
    "dds.l_order_product",
    "dds.l_order_product_category",
    "dds.s_order_cost",
    "dds.s_order_status",
    "dds.s_order_version",
    "dds.s_order_user_effectivity",
    "dds.s_order_product_category_effectivity",
    "dds.order_load_state",
    "dds.pit_order",
];

async fn row_counts(client: &tokio_postgres::Client) -> anyhow::Result<Vec<(&'static str, i64)>> {
    let mut counts = Vec::new();
    for table in ORDER_TABLES {
        let row = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?;
        counts.push((*table, row.get(0)));
    }
    Ok(counts)
}

#[tokio::test]
async fn a_new_order_loaded_by_two_batches_at_once_is_loaded_once() -> anyhow::Result<()> {
    let (_url, pool, client) = warehouse::migrated().await?;
    let order = example();
    let mut first = pool.get().await?;
    let mut second = pool.get_owned().await?;

    first.batch_execute("BEGIN").await?;
    service_dds::load::load(&mut first, &[&order], "test").await?;
    let second_pid: i32 = {
        use diesel::sql_types::Integer;
        #[derive(diesel::QueryableByName)]
        struct Pid {
            #[diesel(sql_type = Integer)]
            pid: i32,
        }
        let pid: Pid = diesel_async::RunQueryDsl::get_result(
            diesel::sql_query("SELECT pg_backend_pid() AS pid"),
            &mut *second,
        )
        .await?;
        pid.pid
    };
    let racing = tokio::spawn(async move {
        second.batch_execute("BEGIN").await?;
        let outcome = service_dds::load::load(&mut second, &[&example()], "test").await;
        second.batch_execute("ROLLBACK").await?;
        anyhow::Ok(outcome)
    });
    // The fault has hit once the second load waits on the first one's uncommitted rows.
    eventually(
        "the second load waits for the first",
        Duration::from_secs(30),
        || {
            let client = &client;
            async move {
                let row = client
                    .query_one(
                        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1",
                        &[&second_pid],
                    )
                    .await
                    .ok()?;
                (row.get::<_, Option<String>>(0).as_deref() == Some("Lock")).then_some(())
            }
        },
    )
    .await;
    first.batch_execute("COMMIT").await?;
    let once = row_counts(&client).await?;

    match racing.await?? {
        Err(error) => match service_dds::load::failure(error) {
            Failure::Systemic(error) => assert!(
                format!("{error:#}").contains("concurrent load"),
                "unexpected failure: {error:#}"
            ),
            other => panic!("the second load must be refused as systemic, got {other:?}"),
        },
        Ok(()) => panic!("the second load must meet the first one's rows"),
    }

    // Retried, it finds the order loaded: nothing is written twice.
    let mut retry = pool.get().await?;
    retry.batch_execute("BEGIN").await?;
    service_dds::load::load(&mut retry, &[&order], "test").await?;
    retry.batch_execute("COMMIT").await?;
    assert_eq!(row_counts(&client).await?, once);
    assert!(
        once.iter().all(|(_, rows)| *rows > 0),
        "the first load wrote every order-scoped table: {once:?}"
    );
    Ok(())
}
