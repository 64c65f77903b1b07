//! The raw order on topic `stg_service` (docs/contract.md §2.1).

use serde::{Deserialize, Serialize};

use super::{Amount, EntityId, OrderId, OrderStatus, Timestamp};

/// The `object_type` of an order message.
pub const ORDER_OBJECT_TYPE: &str = "order";

/// One version of an order as the source system sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawOrder {
    pub object_id: OrderId,
    pub object_type: String,
    pub sent_dttm: Timestamp,
    pub payload: RawPayload,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawPayload {
    pub restaurant: EntityRef,
    pub user: EntityRef,
    pub date: Timestamp,
    pub order_items: Vec<OrderItem>,
    pub bonus_payment: Amount,
    pub cost: Amount,
    pub payment: Amount,
    pub bonus_grant: Amount,
    pub statuses: Vec<StatusChange>,
    pub final_status: OrderStatus,
    /// The version of the order: a later version has a later `update_ts`.
    pub update_ts: Timestamp,
}

/// A reference to a dictionary entity by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityRef {
    pub id: EntityId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderItem {
    pub id: EntityId,
    pub price: Amount,
    pub quantity: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: OrderStatus,
    pub dttm: Timestamp,
}

impl RawPayload {
    /// The status history in time order, whatever order the source listed it in.
    pub fn status_history(&self) -> Vec<StatusChange> {
        let mut history = self.statuses.clone();
        history.sort_by_key(|change| change.dttm);
        history
    }
}
