//! Counter events on topic `cdm_service` (docs/contract.md §2.4): one JSON array per applied order
//! version, one element per distinct product.

use serde::{Deserialize, Serialize};

use super::{OrderStatus, Timestamp};
use crate::keys::HashKey;

/// The `object_type` of a counter event.
pub const CDM_OBJECT_TYPE: &str = "cdm_order_event";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdmOrderEvent {
    /// Derived from order, product and version, so a replay yields byte-identical events.
    pub object_id: HashKey,
    pub object_type: String,
    pub payload: CdmPayload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdmPayload {
    pub order_id: HashKey,
    pub user_id: HashKey,
    pub product_id: HashKey,
    pub product_name: String,
    pub category_id: HashKey,
    pub category_name: String,
    /// Absent in the Python reference, which only emits CLOSED orders: absent means CLOSED.
    #[serde(default = "closed")]
    pub status: OrderStatus,
    pub update_ts: Timestamp,
}

fn closed() -> OrderStatus {
    OrderStatus::Closed
}
