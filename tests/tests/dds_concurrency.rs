//! service-dds's loader when two batches load the same new order at once (a partition's old
//! owner not yet stopped during a rebalance): a new order's rows are inserted without the
//! conflict check, so the second load, which found the order new, must meet the first one's
//! rows, be refused as a systemic failure (retried, never bisected into a dead letter), and
//! load nothing twice when it is retried.

use diesel_async::SimpleAsyncConnection as _;
use vault_core::{decode, vault, EnrichedOrder};
use vault_runtime::Failure;
use vault_tests::warehouse;

const DDS_MESSAGE: &str = include_str!("../../vault-core/tests/data/dds_message.json");

fn example() -> EnrichedOrder {
    decode::enriched_order(DDS_MESSAGE.as_bytes()).expect("the example decodes")
}

/// Every order-scoped table (docs/contract.md §3.2.1), the load state and the point in time.
fn order_tables() -> Vec<&'static str> {
    vault::tables()
        .into_iter()
        .filter(|table| table.columns.contains(&vault::ORDER_SCOPE))
        .map(|table| table.name)
        .chain(["dds.order_load_state", "dds.pit_order"])
        .collect()
}

async fn row_counts(client: &tokio_postgres::Client) -> anyhow::Result<Vec<(&'static str, i64)>> {
    let mut counts = Vec::new();
    for table in order_tables() {
        let row = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?;
        counts.push((table, row.get(0)));
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
    let second_pid = warehouse::backend_pid(&mut second).await?;
    let racing = tokio::spawn(async move {
        second.batch_execute("BEGIN").await?;
        let outcome = service_dds::load::load(&mut second, &[&example()], "test").await;
        second.batch_execute("ROLLBACK").await?;
        anyhow::Ok(outcome)
    });
    // The fault has hit once the second load waits on the first one's uncommitted rows.
    warehouse::waits_for_lock(&client, second_pid).await;
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
