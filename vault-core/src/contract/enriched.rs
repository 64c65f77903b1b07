//! The enriched order on topic `dds_service` (docs/contract.md §2.3).

use serde::{Deserialize, Serialize};

use super::{Amount, EntityId, OrderId, OrderStatus, Timestamp};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichedOrder {
    pub object_id: OrderId,
    pub object_type: String,
    pub payload: EnrichedPayload,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichedPayload {
    pub id: OrderId,
    pub date: Timestamp,
    pub cost: Amount,
    pub payment: Amount,
    /// The order's `final_status` in this version.
    pub status: OrderStatus,
    pub update_ts: Timestamp,
    pub restaurant: RestaurantRef,
    pub user: UserRef,
    pub products: Vec<EnrichedProduct>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestaurantRef {
    pub id: EntityId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: EntityId,
    pub name: String,
    pub login: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichedProduct {
    pub id: EntityId,
    pub price: Amount,
    pub quantity: i64,
    pub name: String,
    pub category: String,
}
