//! An independent model of what the datamarts must hold (docs/contract.md §3.3), for end-to-end
//! expectations.
//!
//! It shares no code with what it checks: no vault-core decoder, enrichment, counter events,
//! transition or recount. It reads the raw messages as they were sent (plain JSON), the
//! dictionaries as the test set them (plain JSON), and counts the obvious way:
//! - per order, the latest version by `update_ts` (a version with an `update_ts` equal to
//!   the current one changes nothing: the first one wins);
//! - only versions whose `final_status` is CLOSED count;
//! - `order_cnt` of (user, product) is the number of distinct such orders of that user with
//!   that product; of (user, category), with at least one product of that category;
//! - a product's category is the one the restaurant's menu gave it when the test sent the
//!   version ([`Model::sent`] reads the menus the model holds at that moment, so a test that
//!   changes a menu tells the model at the same point: [`Model::dictionary`]).
//!
//! Hash keys are computed here from their definition in docs/contract.md §3.1 (UUID v3, X.500
//! namespace, over the business key), checked against its test vectors in the unit tests below.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::{anyhow, bail, Context as _};
use chrono::{DateTime, DurationRound as _, NaiveDateTime, TimeDelta, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::pipeline::Pipeline;

/// Counter rows by (user key, product or category key), as text, only those above zero.
pub type Counters = BTreeMap<(String, String), i64>;

/// What the two datamarts must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub products: Counters,
    pub categories: Counters,
}

/// One order version as the model keeps it.
#[derive(Debug, Clone)]
struct Version {
    update_ts: DateTime<Utc>,
    user: String,
    closed: bool,
    /// Product id → its category name, as the menu said when the version was sent.
    products: BTreeMap<String, String>,
}

/// The dictionaries the test has set so far and the latest version of every order sent.
#[derive(Debug, Clone, Default)]
pub struct Model {
    users: HashSet<String>,
    /// Restaurant id → (menu item id → category).
    menus: HashMap<String, HashMap<String, String>>,
    latest: BTreeMap<i64, Version>,
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the users and restaurants of `dictionary` (as JSON, the form the services read
    /// from Redis); an entry already known is replaced, as a Redis `SET` would.
    pub fn dictionary(&mut self, dictionary: &datagen::dictionary::Dictionary) {
        for user in &dictionary.users {
            let user = serde_json::to_value(user).expect("a user serializes");
            self.user(&user);
        }
        for restaurant in &dictionary.restaurants {
            let restaurant = serde_json::to_value(restaurant).expect("a restaurant serializes");
            self.restaurant(&restaurant);
        }
    }

    /// One user, in the Redis JSON form (`_id`, ...).
    pub fn user(&mut self, user: &Value) {
        let id = user["_id"].as_str().expect("a user has an `_id`");
        self.users.insert(id.to_owned());
    }

    /// One restaurant, in the Redis JSON form (`_id`, `menu[]` with `_id` and `category`).
    pub fn restaurant(&mut self, restaurant: &Value) {
        let id = restaurant["_id"]
            .as_str()
            .expect("a restaurant has an `_id`");
        let mut menu = HashMap::new();
        for item in restaurant["menu"]
            .as_array()
            .expect("a restaurant has a menu")
        {
            let item_id = item["_id"].as_str().expect("a menu item has an `_id`");
            let category = item["category"]
                .as_str()
                .expect("a menu item has a category");
            // A menu that lists an item twice: the first entry is the item.
            menu.entry(item_id.to_owned())
                .or_insert_with(|| category.to_owned());
        }
        self.menus.insert(id.to_owned(), menu);
    }

    /// One raw message as sent to the raw topic. An error (and no change) when the pipeline
    /// must not count it: not an order, or a user, restaurant or menu item the dictionaries
    /// do not hold. Malformed JSON or fields are errors too, but the model does not try to be
    /// a validator: tests send it only messages they mean to count or to be rejected for a
    /// missing dictionary entry.
    pub fn sent(&mut self, message: &[u8]) -> anyhow::Result<()> {
        let mut document: Value = serde_json::from_slice(message).context("not JSON")?;
        // The Python reference sends a JSON string holding the document.
        if let Value::String(inner) = &document {
            document = serde_json::from_str(inner).context("a string that is not JSON")?;
        }
        if document["object_type"] != "order" {
            bail!("not an order");
        }
        let order = document["object_id"].as_i64().context("object_id")?;
        let payload = &document["payload"];
        let user = text(&payload["user"]["id"], "user.id")?;
        let restaurant = text(&payload["restaurant"]["id"], "restaurant.id")?;
        let status = text(&payload["final_status"], "final_status")?;
        let update_ts = timestamp(text(&payload["update_ts"], "update_ts")?)?;
        if !self.users.contains(user) {
            bail!("unknown user {user}");
        }
        let menu = self
            .menus
            .get(restaurant)
            .ok_or_else(|| anyhow!("unknown restaurant {restaurant}"))?;
        let mut products = BTreeMap::new();
        for item in payload["order_items"].as_array().context("order_items")? {
            let id = text(&item["id"], "order_items[].id")?;
            let category = menu
                .get(id)
                .ok_or_else(|| anyhow!("item {id} is not on the menu of {restaurant}"))?;
            products.insert(id.to_owned(), category.clone());
        }
        let version = Version {
            update_ts,
            user: user.to_owned(),
            closed: status == "CLOSED",
            products,
        };
        match self.latest.get(&order) {
            Some(current) if version.update_ts <= current.update_ts => {}
            _ => {
                self.latest.insert(order, version);
            }
        }
        Ok(())
    }

    /// The counters the datamarts must hold now.
    pub fn expected(&self) -> Expected {
        let mut products: BTreeMap<(String, String), BTreeSet<i64>> = BTreeMap::new();
        let mut categories: BTreeMap<(String, String), BTreeSet<i64>> = BTreeMap::new();
        for (order, version) in self.latest.iter().filter(|(_, v)| v.closed) {
            let user = key(&version.user);
            for (product, category) in &version.products {
                products
                    .entry((user.clone(), key(product)))
                    .or_default()
                    .insert(*order);
                categories
                    .entry((user.clone(), key(category)))
                    .or_default()
                    .insert(*order);
            }
        }
        let count = |sets: BTreeMap<(String, String), BTreeSet<i64>>| -> Counters {
            sets.into_iter()
                .map(|(k, orders)| (k, orders.len() as i64))
                .collect()
        };
        Expected {
            products: count(products),
            categories: count(categories),
        }
    }
}

/// The counters the datamarts of `p` hold (rows above zero).
pub async fn stored(p: &Pipeline) -> anyhow::Result<Expected> {
    let client = p.db().await?;
    let read = |table: &'static str, column: &'static str| {
        let client = &client;
        async move {
            let rows = client
                .query(
                    &format!(
                        "SELECT user_id::text, {column}::text, order_cnt::bigint FROM {table} \
                         WHERE order_cnt > 0"
                    ),
                    &[],
                )
                .await
                .with_context(|| format!("reading {table}"))?;
            anyhow::Ok(
                rows.iter()
                    .map(|row| ((row.get(0), row.get(1)), row.get(2)))
                    .collect::<Counters>(),
            )
        }
    };
    Ok(Expected {
        products: read("cdm.user_product_counters", "product_id").await?,
        categories: read("cdm.user_category_counters", "category_id").await?,
    })
}

/// Asserts that the datamarts of `p` hold exactly what `model` expects, and that they agree
/// with the warehouse's own recount over the Data Vault.
pub async fn assert_exact(p: &Pipeline, model: &Model) {
    let expected = model.expected();
    assert!(
        !expected.products.is_empty(),
        "the model expects no counters at all: the test would prove nothing"
    );
    let stored = stored(p).await.expect("reading the datamarts");
    assert_eq!(stored.products, expected.products, "user product counters");
    assert_eq!(
        stored.categories, expected.categories,
        "user category counters"
    );
    assert_eq!(
        p.counter_mismatches().await.expect("recount"),
        0,
        "the datamarts differ from the recount over the Data Vault"
    );
}

fn text<'a>(value: &'a Value, what: &str) -> anyhow::Result<&'a str> {
    value
        .as_str()
        .ok_or_else(|| anyhow!("{what} is not a string"))
}

/// RFC 3339, or naive `YYYY-MM-DD HH:MM:SS[.fraction]` as UTC (docs/contract.md §2), kept to the
/// microsecond because that is what a `timestamptz` holds.
fn timestamp(text: &str) -> anyhow::Result<DateTime<Utc>> {
    let at = match DateTime::parse_from_rfc3339(text) {
        Ok(at) => at.with_timezone(&Utc),
        Err(_) => NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
            .with_context(|| format!("timestamp {text}"))?
            .and_utc(),
    };
    Ok(at.duration_trunc(TimeDelta::microseconds(1))?)
}

/// The hub key of a business key (docs/contract.md §3.1), as lower-case hyphenated text.
fn key(business_key: &str) -> String {
    Uuid::new_v3(&Uuid::NAMESPACE_X500, business_key.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_reproduce_the_spec_vectors() {
        assert_eq!(key("2301365"), "55993f56-f356-3556-b280-96f5bbcaee7f");
        assert_eq!(
            key("626a81ce9a8cd1920641e296"),
            "a9e6edc4-db91-3f11-a278-f773f3273ae0"
        );
        assert_eq!(key("Выпечка"), "11a15ec4-37ae-3363-878f-c9a2cd7249b5");
        assert_eq!(key(""), "7aaf118c-f174-3eba-9ec5-680cd791a020");
    }

    fn order(id: i64, items: &[&str], status: &str, update_ts: &str) -> Vec<u8> {
        let items: Vec<Value> = items.iter().map(|i| json!({"id": i})).collect();
        serde_json::to_vec(&json!({
            "object_id": id,
            "object_type": "order",
            "payload": {
                "user": {"id": "u1"},
                "restaurant": {"id": "r1"},
                "order_items": items,
                "final_status": status,
                "update_ts": update_ts,
            }
        }))
        .expect("serialize")
    }

    fn model() -> Model {
        let mut m = Model::new();
        m.user(&json!({"_id": "u1"}));
        m.restaurant(&json!({"_id": "r1", "menu": [
            {"_id": "pie", "category": "pastry"},
            {"_id": "bun", "category": "pastry"},
            {"_id": "tea", "category": "drinks"},
        ]}));
        m
    }

    #[test]
    fn the_latest_closed_version_counts_once_per_product_and_category() {
        let mut m = model();
        m.sent(&order(1, &["pie", "bun"], "OPEN", "2025-01-01 10:00:00"))
            .expect("an order");
        m.sent(&order(
            1,
            &["pie", "bun"],
            "CLOSED",
            "2025-01-01T10:05:00+00:00",
        ))
        .expect("an order");
        // The same update_ts again with another status: the first one won.
        m.sent(&order(1, &["pie"], "CANCELLED", "2025-01-01 10:05:00"))
            .expect("an order");
        let e = m.expected();
        assert_eq!(e.products.len(), 2);
        assert_eq!(e.categories.len(), 1);
        assert!(e.categories.values().all(|n| *n == 1));

        m.sent(&order(1, &["pie"], "CANCELLED", "2025-01-01 10:06:00"))
            .expect("an order");
        assert_eq!(m.expected(), Expected::default());
    }

    #[test]
    fn a_dish_counts_for_the_category_its_menu_gave_it_when_sent() {
        let mut m = model();
        m.sent(&order(1, &["tea"], "CLOSED", "2025-01-01 10:00:00"))
            .expect("an order");
        m.restaurant(&json!({"_id": "r1", "menu": [{"_id": "tea", "category": "pastry"}]}));
        m.sent(&order(2, &["tea"], "CLOSED", "2025-01-01 10:00:00"))
            .expect("an order");
        let e = m.expected();
        assert_eq!(e.products.values().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(e.categories.values().copied().collect::<Vec<_>>(), [1, 1]);
    }

    #[test]
    fn unknown_dictionary_entries_and_non_orders_do_not_count() {
        let mut m = model();
        assert!(m
            .sent(&order(1, &["soup"], "CLOSED", "2025-01-01 10:00:00"))
            .is_err());
        let mut other =
            serde_json::from_slice::<Value>(&order(2, &["pie"], "CLOSED", "2025-01-01 10:00:00"))
                .expect("json");
        other["object_type"] = json!("payment");
        assert!(m.sent(&serde_json::to_vec(&other).expect("json")).is_err());
        assert_eq!(m.expected(), Expected::default());
    }
}
