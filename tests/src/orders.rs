//! Hand-made orders for end-to-end tests: one version of an order of a dictionary's user at a
//! dictionary's restaurant, with chosen dishes, status and version time.

use datagen::dictionary::{synthetic, Dictionary};
use vault_core::contract::{EntityRef, OrderItem, RawPayload, StatusChange};
use vault_core::{Amount, OrderId, OrderStatus, RawOrder, Timestamp};

/// A synthetic dictionary with a random seed.
pub fn random_dictionary(users: usize, restaurants: usize) -> Dictionary {
    synthetic(uuid::Uuid::new_v4().as_u64_pair().0, users, restaurants)
}

/// One version of an order: `minute` orders versions (a later minute is a newer version).
pub fn order(
    d: &Dictionary,
    id: i64,
    user: usize,
    restaurant: usize,
    items: &[usize],
    status: OrderStatus,
    minute: i64,
) -> RawOrder {
    let base = chrono::DateTime::parse_from_rfc3339("2025-02-22T08:00:00+00:00")
        .expect("timestamp")
        .with_timezone(&chrono::Utc);
    let at = |m: i64| Timestamp::from_datetime(base + chrono::TimeDelta::minutes(m));
    let r = &d.restaurants[restaurant];
    let order_items: Vec<OrderItem> = items
        .iter()
        .map(|&i| OrderItem {
            id: r.menu[i].id.clone(),
            price: r.menu[i].price,
            quantity: 1,
            name: None,
            category: None,
        })
        .collect();
    RawOrder {
        object_id: OrderId(id),
        object_type: "order".into(),
        sent_dttm: at(minute),
        payload: RawPayload {
            restaurant: EntityRef { id: r.id.clone() },
            user: EntityRef {
                id: d.users[user].id.clone(),
            },
            date: at(0),
            order_items,
            bonus_payment: Amount::default(),
            cost: Amount::from_i64(100),
            payment: Amount::from_i64(100),
            bonus_grant: Amount::default(),
            statuses: vec![StatusChange {
                status,
                dttm: at(minute),
            }],
            final_status: status,
            update_ts: at(minute),
        },
    }
}

/// The order as the raw topic carries it, keyed by its id.
pub fn message(order: &RawOrder) -> (String, Vec<u8>) {
    (
        order.object_id.to_string(),
        serde_json::to_vec(order).expect("serialize"),
    )
}
