//! service-cdm's datamart step when two batches count the same new order at once (a
//! partition's old owner not yet stopped during a rebalance): the state of a new order is
//! inserted with its final values, so the second batch, which started from no state, must
//! find the first one's row, refuse its transaction as a systemic failure, and count nothing
//! twice when it is retried.

use diesel_async::SimpleAsyncConnection as _;
use std::collections::BTreeMap;
use vault_core::contract::{EntityId, OrderId, OrderStatus};
use vault_core::counter::OrderVersion;
use vault_core::{HashKey, Timestamp};
use vault_runtime::Failure;
use vault_tests::warehouse;

fn closed_order(id: i64) -> OrderVersion {
    let entity = |text: &str| EntityId::parse(text).expect("entity id");
    OrderVersion {
        order: HashKey::order(OrderId(id)),
        user: HashKey::user(&entity("626a81cfefa404208fe9abae")),
        version: Timestamp::parse("2026-12-02 10:00:00").expect("timestamp"),
        status: OrderStatus::Closed,
        products: BTreeMap::from([(
            HashKey::product(&entity("6276e8cd0cf48b4cded00878")),
            "Pizza".to_owned(),
        )]),
        categories: BTreeMap::from([(HashKey::category("Pizza"), "Pizza".to_owned())]),
    }
}

#[tokio::test]
async fn a_new_order_counted_by_two_batches_at_once_is_counted_once() -> anyhow::Result<()> {
    let (_url, pool, client) = warehouse::migrated().await?;
    let order = closed_order(7_001);
    let mut first = pool.get().await?;
    let mut second = pool.get_owned().await?;

    first.batch_execute("BEGIN").await?;
    service_cdm::count(&mut first, [&order]).await?;
    let second_pid = warehouse::backend_pid(&mut second).await?;
    let racing = tokio::spawn(async move {
        second.batch_execute("BEGIN").await?;
        let outcome = service_cdm::count(&mut second, [&closed_order(7_001)]).await;
        second.batch_execute("ROLLBACK").await?;
        anyhow::Ok(outcome)
    });
    // The fault has hit once the second batch waits on the first one's uncommitted row.
    warehouse::waits_for_lock(&client, second_pid).await;
    first.batch_execute("COMMIT").await?;

    let outcome = racing.await??;
    match outcome {
        Err(Failure::Systemic(error)) => {
            assert!(
                error.to_string().contains("concurrent batch"),
                "unexpected failure: {error:#}"
            );
        }
        other => panic!("the second batch must be refused as systemic, got {other:?}"),
    }

    // Retried, it starts from the stored state: a duplicate, nothing more to count.
    let mut retry = pool.get().await?;
    retry.batch_execute("BEGIN").await?;
    service_cdm::count(&mut retry, [&order]).await?;
    retry.batch_execute("COMMIT").await?;
    let counts: Vec<i64> = client
        .query(
            "SELECT order_cnt::bigint FROM cdm.user_product_counters \
             UNION ALL SELECT order_cnt::bigint FROM cdm.user_category_counters",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(counts, vec![1, 1], "each counter counts the order once");
    let states: i64 = client
        .query_one("SELECT count(*) FROM cdm.order_state", &[])
        .await?
        .get(0);
    assert_eq!(states, 1);
    Ok(())
}
