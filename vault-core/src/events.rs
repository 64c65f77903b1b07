//! Enriched order → counter events (docs/contract.md §2.4), and counter events → the order version the
//! counter logic consumes.

use std::collections::BTreeMap;

use crate::contract::{
    CdmOrderEvent, CdmPayload, EnrichedOrder, OrderStatus, Timestamp, CDM_OBJECT_TYPE,
};
use crate::counter::OrderVersion;
use crate::keys::HashKey;

/// One event per distinct product of the order version, sorted by product key. The
/// `object_id` is derived from order, product and version, so a replay is byte-identical.
pub fn cdm_events(order: &EnrichedOrder) -> Vec<CdmOrderEvent> {
    let p = &order.payload;
    let order_id = HashKey::order(p.id);
    let user_id = HashKey::user(&p.user.id);
    let products: BTreeMap<HashKey, _> = p
        .products
        .iter()
        .map(|product| (HashKey::product(&product.id), product))
        .collect();
    products
        .into_iter()
        .map(|(product_id, product)| CdmOrderEvent {
            object_id: event_id(order_id, product_id, p.update_ts),
            object_type: CDM_OBJECT_TYPE.to_owned(),
            payload: CdmPayload {
                order_id,
                user_id,
                product_id,
                product_name: product.name.clone(),
                category_id: HashKey::category(&product.category),
                category_name: product.category.clone(),
                status: p.status,
                update_ts: p.update_ts,
            },
        })
        .collect()
}

/// The deterministic id of the event for one product of one order version.
pub fn event_id(order: HashKey, product: HashKey, version: Timestamp) -> HashKey {
    HashKey::of(&format!("{order}_{product}_{}", version.to_rfc3339()))
}

/// Why a counter message does not describe one order version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("counter message holds no events")]
    Empty,
    #[error("counter message mixes {field} values: `{first}` and `{other}`")]
    Mixed {
        field: &'static str,
        first: String,
        other: String,
    },
}

impl EventError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Empty => "empty_event_batch",
            Self::Mixed { .. } => "mixed_event_batch",
        }
    }
}

/// Folds the events of one message into the order version they describe.
pub fn order_version(events: &[CdmOrderEvent]) -> Result<OrderVersion, EventError> {
    let first = events.first().ok_or(EventError::Empty)?;
    let head = &first.payload;
    let mut version = OrderVersion {
        order: head.order_id,
        user: head.user_id,
        version: head.update_ts,
        status: head.status,
        products: BTreeMap::new(),
        categories: BTreeMap::new(),
    };
    for event in events {
        let e = &event.payload;
        same("order_id", &head.order_id, &e.order_id)?;
        same("user_id", &head.user_id, &e.user_id)?;
        same("update_ts", &head.update_ts, &e.update_ts)?;
        same::<OrderStatus>("status", &head.status, &e.status)?;
        version
            .products
            .insert(e.product_id, e.product_name.clone());
        version
            .categories
            .insert(e.category_id, e.category_name.clone());
    }
    Ok(version)
}

fn same<T: PartialEq + std::fmt::Display>(
    field: &'static str,
    first: &T,
    other: &T,
) -> Result<(), EventError> {
    if first == other {
        Ok(())
    } else {
        Err(EventError::Mixed {
            field,
            first: first.to_string(),
            other: other.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{
        Amount, EnrichedPayload, EnrichedProduct, OrderId, RestaurantRef, UserRef,
    };
    use crate::test_support::entity;

    fn order() -> EnrichedOrder {
        let at = Timestamp::parse("2023-08-05 06:28:54").expect("timestamp");
        let product = |id: &str, category: &str| EnrichedProduct {
            id: entity(id),
            price: Amount::from_i64(100),
            quantity: 1,
            name: format!("dish {id}"),
            category: category.to_owned(),
        };
        EnrichedOrder {
            object_id: OrderId(1),
            object_type: "order".to_owned(),
            payload: EnrichedPayload {
                id: OrderId(1),
                date: at,
                cost: Amount::from_i64(200),
                payment: Amount::from_i64(200),
                status: OrderStatus::Closed,
                update_ts: at,
                restaurant: RestaurantRef {
                    id: entity("a51e4e31ae4602047ec52534"),
                    name: "restaurant".to_owned(),
                },
                user: UserRef {
                    id: entity("626a81ce9a8cd1920641e296"),
                    name: "user".to_owned(),
                    login: "login".to_owned(),
                },
                products: vec![
                    product("c5b64c8ba71adb08ce4bf7bc", "Выпечка"),
                    product("1b3e42939c414bc1ea69e2fe", "Выпечка"),
                    product("165b4812b4334fdbeaeca3a3", "Напитки"),
                ],
            },
        }
    }

    #[test]
    fn events_are_sorted_by_product_key() {
        let events = cdm_events(&order());
        assert_eq!(events.len(), 3);
        assert!(events
            .windows(2)
            .all(|w| w[0].payload.product_id < w[1].payload.product_id));
    }

    #[test]
    fn the_events_of_an_order_fold_back_into_its_version() {
        let order = order();
        let version = order_version(&cdm_events(&order)).expect("one version");
        assert_eq!(version.order, HashKey::order(OrderId(1)));
        assert_eq!(version.user, HashKey::user(&order.payload.user.id));
        assert_eq!(version.version, order.payload.update_ts);
        assert_eq!(version.status, OrderStatus::Closed);
        assert_eq!(version.products.len(), 3);
        let categories: Vec<&str> = version.categories.values().map(String::as_str).collect();
        assert_eq!(categories.len(), 2);
        assert!(categories.contains(&"Выпечка") && categories.contains(&"Напитки"));
    }

    #[test]
    fn a_message_without_events_describes_no_order_version() {
        let err = order_version(&[]).expect_err("empty");
        assert_eq!(err, EventError::Empty);
        assert_eq!(err.kind(), "empty_event_batch");
    }

    /// Changes one field of an event payload (the timestamp is a later version to use).
    type Mutation = fn(&mut CdmPayload, Timestamp);

    #[test]
    fn a_message_mixing_orders_users_versions_or_statuses_is_rejected() {
        let events = cdm_events(&order());
        let later = Timestamp::parse("2023-08-05 06:28:55").expect("timestamp");
        let cases: [(&str, Mutation); 4] = [
            ("order_id", |p, _| p.order_id = HashKey::of("another order")),
            ("user_id", |p, _| p.user_id = HashKey::of("another user")),
            ("update_ts", |p, later| p.update_ts = later),
            ("status", |p, _| p.status = OrderStatus::Cancelled),
        ];
        for (field, mutate) in cases {
            let mut mixed = events.clone();
            mutate(&mut mixed[2].payload, later);
            let err = order_version(&mixed).expect_err("mixed");
            assert!(
                matches!(&err, EventError::Mixed { field: f, .. } if *f == field),
                "{field}: {err:?}"
            );
            assert_eq!(err.kind(), "mixed_event_batch");
        }
    }
}
