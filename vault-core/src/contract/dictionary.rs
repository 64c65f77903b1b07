//! Dictionary entries kept in Redis (docs/contract.md §2.2): key = entity id, value = JSON.

use serde::{Deserialize, Serialize};

use super::{Amount, EntityId, Timestamp};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    #[serde(rename = "_id")]
    pub id: EntityId,
    pub name: String,
    pub login: String,
    pub update_ts_utc: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restaurant {
    #[serde(rename = "_id")]
    pub id: EntityId,
    pub name: String,
    pub menu: Vec<MenuItem>,
    pub update_ts_utc: Timestamp,
}

/// A dish on a restaurant's menu. The category may be the empty string: real menus have one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MenuItem {
    #[serde(rename = "_id")]
    pub id: EntityId,
    pub name: String,
    pub price: Amount,
    pub category: String,
}

impl Restaurant {
    pub fn menu_item(&self, id: &EntityId) -> Option<&MenuItem> {
        self.menu.iter().find(|item| &item.id == id)
    }
}
