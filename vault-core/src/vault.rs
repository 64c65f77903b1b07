//! Enriched order → Data Vault rows (SPEC §3.2): hubs, links and satellites with hashdiffs.
//!
//! This is the whole mapping; the loader only writes what it is given. Rows carry no load
//! time or source: the loader stamps those, since they describe the load, not the order.

use std::collections::BTreeMap;

use crate::contract::{Amount, EnrichedOrder, OrderId, OrderStatus, Timestamp};
use crate::keys::HashKey;

/// Every Data Vault row one order version yields. Collections are deduplicated and sorted by
/// key, so loading them in this order takes row locks in a stable order.
#[derive(Debug, Clone, PartialEq)]
pub struct VaultRows {
    pub h_order: HubOrder,
    pub h_user: Hub,
    pub h_restaurant: Hub,
    pub h_products: Vec<Hub>,
    pub h_categories: Vec<Hub>,
    pub l_order_user: Link,
    pub l_order_products: Vec<Link>,
    pub l_product_categories: Vec<Link>,
    pub l_product_restaurants: Vec<Link>,
    pub s_user_names: SatUserNames,
    pub s_restaurant_names: SatName,
    pub s_product_names: Vec<SatName>,
    pub s_order_cost: SatOrderCost,
    pub s_order_status: SatOrderStatus,
}

/// A hub row: the hash key and the business key as text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hub {
    pub pk: HashKey,
    pub business_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOrder {
    pub pk: HashKey,
    pub order_id: OrderId,
    pub order_dt: Timestamp,
}

/// A link row: its own key and the two hub keys in the column order of the link's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Link {
    pub pk: HashKey,
    pub first: HashKey,
    pub second: HashKey,
}

impl Link {
    pub fn new(first: HashKey, second: HashKey) -> Self {
        Self {
            pk: HashKey::link(first, second),
            first,
            second,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SatUserNames {
    pub h_user_pk: HashKey,
    pub username: String,
    pub userlogin: String,
    pub hashdiff: HashKey,
}

/// A names satellite row (`s_product_names`, `s_restaurant_names`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SatName {
    pub hub_pk: HashKey,
    pub name: String,
    pub hashdiff: HashKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SatOrderCost {
    pub h_order_pk: HashKey,
    pub cost: Amount,
    pub payment: Amount,
    pub hashdiff: HashKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SatOrderStatus {
    pub h_order_pk: HashKey,
    pub status: OrderStatus,
    pub hashdiff: HashKey,
}

impl SatName {
    fn new(hub_pk: HashKey, name: &str) -> Self {
        Self {
            hub_pk,
            name: name.to_owned(),
            hashdiff: HashKey::hashdiff(&[name]),
        }
    }
}

/// Maps one enriched order version to its Data Vault rows.
pub fn rows(order: &EnrichedOrder) -> VaultRows {
    let p = &order.payload;
    let h_order = HashKey::order(p.id);
    let h_user = HashKey::user(&p.user.id);
    let h_restaurant = HashKey::restaurant(&p.restaurant.id);

    // Keyed maps deduplicate products listed twice (the last listing wins, as in the counter
    // events) and sort by key. Categories come from the deduplicated products, so that no
    // category hub is loaded for a listing that does not count.
    let mut products = BTreeMap::new();
    for product in &p.products {
        let category = HashKey::category(&product.category);
        products.insert(HashKey::product(&product.id), (product, category));
    }
    let categories: BTreeMap<HashKey, String> = products
        .values()
        .map(|(product, category)| (*category, product.category.clone()))
        .collect();

    let mut l_product_categories: Vec<Link> = products
        .iter()
        .map(|(pk, (_, category))| Link::new(*pk, *category))
        .collect();
    l_product_categories.sort();
    let cost_text = p.cost.to_string();
    let payment_text = p.payment.to_string();

    VaultRows {
        h_order: HubOrder {
            pk: h_order,
            order_id: p.id,
            order_dt: p.date,
        },
        h_user: Hub {
            pk: h_user,
            business_key: p.user.id.to_string(),
        },
        h_restaurant: Hub {
            pk: h_restaurant,
            business_key: p.restaurant.id.to_string(),
        },
        h_products: products
            .iter()
            .map(|(pk, (product, _))| Hub {
                pk: *pk,
                business_key: product.id.to_string(),
            })
            .collect(),
        h_categories: categories
            .iter()
            .map(|(pk, name)| Hub {
                pk: *pk,
                business_key: name.clone(),
            })
            .collect(),
        l_order_user: Link::new(h_order, h_user),
        l_order_products: products.keys().map(|pk| Link::new(h_order, *pk)).collect(),
        l_product_categories,
        l_product_restaurants: products
            .keys()
            .map(|pk| Link::new(*pk, h_restaurant))
            .collect(),
        s_user_names: SatUserNames {
            h_user_pk: h_user,
            username: p.user.name.clone(),
            userlogin: p.user.login.clone(),
            hashdiff: HashKey::hashdiff(&[&p.user.name, &p.user.login]),
        },
        s_restaurant_names: SatName::new(h_restaurant, &p.restaurant.name),
        s_product_names: products
            .iter()
            .map(|(pk, (product, _))| SatName::new(*pk, &product.name))
            .collect(),
        s_order_cost: SatOrderCost {
            h_order_pk: h_order,
            cost: p.cost,
            payment: p.payment,
            hashdiff: HashKey::hashdiff(&[&cost_text, &payment_text]),
        },
        s_order_status: SatOrderStatus {
            h_order_pk: h_order,
            status: p.status,
            hashdiff: HashKey::hashdiff(&[p.status.as_str()]),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{EnrichedPayload, EnrichedProduct, EntityId, RestaurantRef, UserRef};
    use crate::events;

    fn entity(id: &str) -> EntityId {
        EntityId::parse(id).expect("valid entity id")
    }

    #[test]
    fn a_product_listed_twice_yields_the_category_of_its_last_listing_only() {
        // Found by fuzzing: the second listing's category got a hub although neither the
        // product–category link nor the counter events used it.
        let at = Timestamp::parse("2023-08-05 06:28:54").expect("timestamp");
        let listing = |category: &str| EnrichedProduct {
            id: entity("1b3e42939c414bc1ea69e2fe"),
            price: Amount::from_i64(250),
            quantity: 1,
            name: "Пирог с капустой".to_owned(),
            category: category.to_owned(),
        };
        let order = EnrichedOrder {
            object_id: OrderId(2301365),
            object_type: "order".to_owned(),
            payload: EnrichedPayload {
                id: OrderId(2301365),
                date: at,
                cost: Amount::from_i64(500),
                payment: Amount::from_i64(500),
                status: OrderStatus::Closed,
                update_ts: at,
                restaurant: RestaurantRef {
                    id: entity("a51e4e31ae4602047ec52534"),
                    name: "Пекарня у дома".to_owned(),
                },
                user: UserRef {
                    id: entity("626a81ce9a8cd1920641e296"),
                    name: "Ирина".to_owned(),
                    login: "isokolova".to_owned(),
                },
                products: vec![listing("Выпечка"), listing("Напитки")],
            },
        };
        let rows = rows(&order);
        let drinks = HashKey::category("Напитки");
        let categories: Vec<HashKey> = rows.h_categories.iter().map(|hub| hub.pk).collect();
        assert_eq!(categories, vec![drinks]);
        assert_eq!(rows.l_product_categories.len(), 1);
        assert_eq!(rows.l_product_categories[0].second, drinks);
        let version = events::order_version(&events::cdm_events(&order)).expect("one version");
        assert_eq!(
            version.categories.keys().copied().collect::<Vec<_>>(),
            categories
        );
    }
}
