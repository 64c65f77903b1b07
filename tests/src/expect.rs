//! What the datamarts must hold, computed from the messages sent by the definition alone
//! (docs/contract.md §3.3), sharing no code with the services' enrichment or counting.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use datagen::dictionary::Dictionary;
use vault_core::{HashKey, OrderStatus, RawOrder};

use crate::pipeline::Pipeline;

/// Counter rows by (user hub key, product or category hub key).
pub type Counters = BTreeMap<(String, String), i64>;

/// The datamarts the orders must produce, by the definition (docs/contract.md §3.3) and
/// nothing else: each order's latest version (the first of equal versions), if CLOSED,
/// counts once for each distinct product and each distinct category of its items, the
/// category being the one the restaurant's menu gives the item.
pub fn expected(d: &Dictionary, orders: &[RawOrder]) -> (Counters, Counters) {
    let mut latest: HashMap<i64, &RawOrder> = HashMap::new();
    for order in orders {
        let newer = latest
            .get(&order.object_id.0)
            .is_none_or(|seen| order.payload.update_ts > seen.payload.update_ts);
        if newer {
            latest.insert(order.object_id.0, order);
        }
    }
    let mut products = Counters::new();
    let mut categories = Counters::new();
    for order in latest.values() {
        if order.payload.final_status != OrderStatus::Closed {
            continue;
        }
        let user = HashKey::user(&order.payload.user.id).to_string();
        let restaurant = d
            .restaurants
            .iter()
            .find(|r| r.id == order.payload.restaurant.id)
            .expect("a known restaurant");
        let mut seen_products = BTreeSet::new();
        let mut seen_categories = BTreeSet::new();
        for item in &order.payload.order_items {
            let menu = restaurant
                .menu
                .iter()
                .find(|m| m.id == item.id)
                .expect("a menu item");
            seen_products.insert(HashKey::product(&item.id).to_string());
            seen_categories.insert(HashKey::category(&menu.category).to_string());
        }
        for product in seen_products {
            *products.entry((user.clone(), product)).or_default() += 1;
        }
        for category in seen_categories {
            *categories.entry((user.clone(), category)).or_default() += 1;
        }
    }
    (products, categories)
}

pub async fn stored(p: &Pipeline, table: &str, key: &str) -> anyhow::Result<Counters> {
    Ok(p.db()
        .await?
        .query(
            &format!(
                "SELECT user_id::text, {key}::text, order_cnt::bigint FROM {table} \
                 WHERE order_cnt > 0"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect())
}

/// The orders as (key, payload) messages for the raw topic.
pub fn messages(orders: &[RawOrder]) -> Vec<(String, Vec<u8>)> {
    orders
        .iter()
        .map(|o| {
            (
                o.object_id.to_string(),
                serde_json::to_vec(o).expect("serialize"),
            )
        })
        .collect()
}

/// Asserts that nothing was rejected, both datamarts hold exactly what `orders` must
/// produce, and the point-in-time rows the BI views read agree with the Data Vault's history.
pub async fn assert_exact(p: &Pipeline, d: &Dictionary, orders: &[RawOrder]) -> anyhow::Result<()> {
    assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
    assert_eq!(p.pit_differences().await?, Vec::<String>::new());
    let (products, categories) = expected(d, orders);
    assert_eq!(
        stored(p, "cdm.user_product_counters", "product_id").await?,
        products
    );
    assert_eq!(
        stored(p, "cdm.user_category_counters", "category_id").await?,
        categories
    );
    Ok(())
}
