//! Raw order + dictionaries → enriched order (docs/contract.md §2.3).

use crate::contract::{
    EnrichedOrder, EnrichedPayload, EnrichedProduct, EntityId, OrderId, RawOrder, Restaurant,
    RestaurantRef, User, UserRef,
};

/// Why an order could not be enriched: a dictionary entry it refers to is missing. Replaying
/// the order once the entry arrives succeeds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrichError {
    #[error("order {order}: unknown user `{user}`")]
    UnknownUser { order: OrderId, user: EntityId },
    #[error("order {order}: unknown restaurant `{restaurant}`")]
    UnknownRestaurant {
        order: OrderId,
        restaurant: EntityId,
    },
    #[error("order {order}: item `{item}` is not on the menu of restaurant `{restaurant}`")]
    UnknownMenuItem {
        order: OrderId,
        restaurant: EntityId,
        item: EntityId,
    },
}

impl EnrichError {
    /// A short stable name for metrics and the dead-letter table.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownUser { .. } => "unknown_user",
            Self::UnknownRestaurant { .. } => "unknown_restaurant",
            Self::UnknownMenuItem { .. } => "unknown_menu_item",
        }
    }
}

/// Enriches one order version with its user and restaurant as found in the dictionaries.
///
/// Product name and category come from the menu; the price from the order item (the menu
/// price is the fallback only where the item carries none, which the contract never allows
/// to happen, so the item price always wins).
pub fn enrich(
    order: &RawOrder,
    user: Option<&User>,
    restaurant: Option<&Restaurant>,
) -> Result<EnrichedOrder, EnrichError> {
    let payload = &order.payload;
    let user = user.ok_or_else(|| EnrichError::UnknownUser {
        order: order.object_id,
        user: payload.user.id.clone(),
    })?;
    let restaurant = restaurant.ok_or_else(|| EnrichError::UnknownRestaurant {
        order: order.object_id,
        restaurant: payload.restaurant.id.clone(),
    })?;
    let products = payload
        .order_items
        .iter()
        .map(|item| {
            let menu_item =
                restaurant
                    .menu_item(&item.id)
                    .ok_or_else(|| EnrichError::UnknownMenuItem {
                        order: order.object_id,
                        restaurant: restaurant.id.clone(),
                        item: item.id.clone(),
                    })?;
            Ok(EnrichedProduct {
                id: item.id.clone(),
                price: item.price,
                quantity: item.quantity,
                name: menu_item.name.clone(),
                category: menu_item.category.clone(),
            })
        })
        .collect::<Result<Vec<_>, EnrichError>>()?;
    Ok(EnrichedOrder {
        object_id: order.object_id,
        object_type: order.object_type.clone(),
        payload: EnrichedPayload {
            id: order.object_id,
            date: payload.date,
            cost: payload.cost,
            payment: payload.payment,
            status: payload.final_status,
            update_ts: payload.update_ts,
            restaurant: RestaurantRef {
                id: restaurant.id.clone(),
                name: restaurant.name.clone(),
            },
            user: UserRef {
                id: user.id.clone(),
                name: user.name.clone(),
                login: user.login.clone(),
            },
            products,
        },
    })
}
