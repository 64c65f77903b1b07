//! Enriched order → counter events (SPEC §2.4), and counter events → the order version the
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
