//! The Data Vault rows of an enriched order (docs/contract.md §3.1, §3.2): hub keys reproduce the contract's test
//! vectors, link keys combine their hubs in the order of the link table's name, repeated
//! products and shared categories yield one row each, and hashdiffs follow the content.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::Value;
use vault_core::contract::{EnrichedOrder, EnrichedProduct, OrderStatus};
use vault_core::vault::{rows, HCategory, HProduct, InsertOnce, VaultRows};
use vault_core::{decode, EntityId, HashKey, OrderId, Timestamp};

const DDS_MESSAGE: &str = include_str!("data/dds_message.json");

// docs/contract.md §3.1 test vectors.
const H_ORDER: &str = "55993f56-f356-3556-b280-96f5bbcaee7f";
const H_USER: &str = "a9e6edc4-db91-3f11-a278-f773f3273ae0";
const H_PRODUCT_KHACHAPURI: &str = "82667bef-ab83-3961-bb99-60ee9b3cdbb9";
const H_CATEGORY_PASTRY: &str = "11a15ec4-37ae-3363-878f-c9a2cd7249b5";
const H_RESTAURANT: &str = "5b0c89a1-11ff-3c8f-aea3-4556b92218af";
const L_ORDER_USER: &str = "2f850c51-7844-30e6-9702-d7a16f68b27a";
// The other keys of the example, as the CDM example lists them.
const H_PRODUCT_PIE: &str = "6f10a3e2-465a-3cdc-bb14-b46453c73a20";
const H_PRODUCT_MORS: &str = "5d8bac97-7b3c-3307-a55f-2f4fb28e82df";
const H_CATEGORY_DRINKS: &str = "e03eebb9-77ed-3ae6-aa69-5ecf6b0a085a";

fn key(text: &str) -> HashKey {
    text.parse().expect("valid uuid")
}

fn example() -> EnrichedOrder {
    decode::enriched_order(DDS_MESSAGE.as_bytes()).expect("dds example decodes")
}

fn product_keys(hubs: &[HProduct]) -> BTreeSet<HashKey> {
    hubs.iter().map(|h| h.h_product_pk).collect()
}

fn category_keys(hubs: &[HCategory]) -> BTreeSet<HashKey> {
    hubs.iter().map(|h| h.h_category_pk).collect()
}

/// The hub of `hubs` whose key is `wanted`.
fn hub<'r, H: InsertOnce<Key = HashKey>>(hubs: &'r [H], wanted: &str, what: &str) -> &'r H {
    hubs.iter().find(|h| h.key() == key(wanted)).expect(what)
}

/// The cost satellite's hashdiff of the example with these amounts.
fn cost_hashdiff(cost: &str, payment: &str) -> HashKey {
    rows(&with_amounts(cost, payment))
        .s_order_cost
        .hk_order_cost_hashdiff
}

fn with_amounts(cost: &str, payment: &str) -> EnrichedOrder {
    let mut document: Value = serde_json::from_str(DDS_MESSAGE).expect("JSON");
    document["payload"]["cost"] = serde_json::from_str(cost).expect("number");
    document["payload"]["payment"] = serde_json::from_str(payment).expect("number");
    decode::enriched_order(document.to_string().as_bytes()).expect("decodes")
}

fn with_status(status: OrderStatus, update_ts: &str) -> EnrichedOrder {
    let mut order = example();
    order.payload.status = status;
    order.payload.update_ts = Timestamp::parse(update_ts).expect("timestamp");
    order
}

#[test]
fn hub_keys_of_the_example_are_the_spec_test_vectors() {
    let rows = rows(&example());
    assert_eq!(rows.h_order.h_order_pk, key(H_ORDER));
    assert_eq!(rows.h_order.order_id, OrderId(2301365));
    assert_eq!(
        rows.h_order.order_dt,
        Timestamp::parse("2023-08-05T06:28:54+00:00").expect("timestamp")
    );
    assert_eq!(rows.h_user.h_user_pk, key(H_USER));
    assert_eq!(rows.h_user.user_id, "626a81ce9a8cd1920641e296");
    assert_eq!(rows.h_restaurant.h_restaurant_pk, key(H_RESTAURANT));
    assert_eq!(rows.h_restaurant.restaurant_id, "a51e4e31ae4602047ec52534");

    let khachapuri = hub(&rows.h_products, H_PRODUCT_KHACHAPURI, "the khachapuri hub");
    assert_eq!(khachapuri.product_id, "c5b64c8ba71adb08ce4bf7bc");
    assert_eq!(
        product_keys(&rows.h_products),
        [H_PRODUCT_KHACHAPURI, H_PRODUCT_PIE, H_PRODUCT_MORS]
            .map(key)
            .into()
    );

    let pastry = hub(&rows.h_categories, H_CATEGORY_PASTRY, "the pastry hub");
    assert_eq!(pastry.category_name, "Выпечка");
}

#[test]
fn the_order_user_link_of_the_example_is_the_spec_test_vector() {
    let rows = rows(&example());
    assert_eq!(rows.l_order_user.hk_order_user_pk, key(L_ORDER_USER));
    assert_eq!(rows.l_order_user.h_order_pk, key(H_ORDER));
    assert_eq!(rows.l_order_user.h_user_pk, key(H_USER));
}

#[test]
fn link_keys_are_the_link_of_their_hubs_in_the_order_of_the_table_name() {
    let rows = rows(&example());
    let h_order = key(H_ORDER);
    let h_restaurant = key(H_RESTAURANT);
    let products = product_keys(&rows.h_products);
    let categories = category_keys(&rows.h_categories);

    // (link key, first hub, second hub) of every two-hub link of the example.
    let check = |(pk, first, second): (HashKey, HashKey, HashKey)| {
        assert_eq!(pk, HashKey::link(first, second), "{pk}");
        assert_ne!(
            pk,
            HashKey::link(second, first),
            "the order of the hubs matters: {pk}"
        );
    };

    let l = &rows.l_order_user;
    check((l.hk_order_user_pk, l.h_order_pk, l.h_user_pk));
    assert_eq!(rows.l_order_products.len(), 3);
    for link in &rows.l_order_products {
        check((link.hk_order_product_pk, link.h_order_pk, link.h_product_pk));
        assert_eq!(link.h_order_pk, h_order);
        assert!(products.contains(&link.h_product_pk));
    }
    assert_eq!(rows.l_product_restaurants.len(), 3);
    for link in &rows.l_product_restaurants {
        check((
            link.hk_product_restaurant_pk,
            link.h_product_pk,
            link.h_restaurant_pk,
        ));
        assert!(products.contains(&link.h_product_pk));
        assert_eq!(link.h_restaurant_pk, h_restaurant);
    }
    let pairs: BTreeSet<(HashKey, HashKey)> = rows
        .l_product_categories
        .iter()
        .inspect(|l| check((l.hk_product_category_pk, l.h_product_pk, l.h_category_pk)))
        .map(|link| (link.h_product_pk, link.h_category_pk))
        .collect();
    let expected: BTreeSet<(HashKey, HashKey)> = [
        (H_PRODUCT_KHACHAPURI, H_CATEGORY_PASTRY),
        (H_PRODUCT_PIE, H_CATEGORY_PASTRY),
        (H_PRODUCT_MORS, H_CATEGORY_DRINKS),
    ]
    .map(|(p, c)| (key(p), key(c)))
    .into();
    assert_eq!(pairs, expected);
    assert_eq!(rows.l_product_categories.len(), 3);
    assert!(pairs.iter().all(|(_, c)| categories.contains(c)));
}

#[test]
fn a_product_listed_twice_in_one_order_yields_one_hub_link_and_satellite() {
    let mut order = example();
    let again = order.payload.products[0].clone();
    order.payload.products.push(again);
    order
        .payload
        .products
        .push(order.payload.products[2].clone());
    let rows = rows(&order);
    assert_eq!(rows.h_products.len(), 3);
    assert_eq!(product_keys(&rows.h_products).len(), 3);
    assert_eq!(rows.l_order_products.len(), 3);
    assert_eq!(rows.l_product_categories.len(), 3);
    assert_eq!(rows.l_product_restaurants.len(), 3);
    assert_eq!(rows.s_product_names.len(), 3);
    assert_eq!(rows.h_categories.len(), 2);
}

#[test]
fn two_products_of_one_category_yield_one_category_hub() {
    let rows = rows(&example());
    assert_eq!(
        category_keys(&rows.h_categories),
        [H_CATEGORY_PASTRY, H_CATEGORY_DRINKS].map(key).into()
    );
    assert_eq!(rows.h_categories.len(), 2);
}

#[test]
fn product_names_satellites_carry_the_menu_names() {
    let rows = rows(&example());
    let names: BTreeSet<(HashKey, &str)> = rows
        .s_product_names
        .iter()
        .map(|s| (s.h_product_pk, s.name.as_str()))
        .collect();
    let expected: BTreeSet<(HashKey, &str)> = [
        (key(H_PRODUCT_KHACHAPURI), "Хачапури по-аджарски"),
        (key(H_PRODUCT_PIE), "Пирог с капустой"),
        (key(H_PRODUCT_MORS), "Морс клюквенный"),
    ]
    .into();
    assert_eq!(names, expected);
    assert_eq!(rows.s_user_names.h_user_pk, key(H_USER));
    assert_eq!(rows.s_user_names.username, "Ирина Павловна Соколова");
    assert_eq!(rows.s_user_names.userlogin, "isokolova");
    assert_eq!(rows.s_restaurant_names.h_restaurant_pk, key(H_RESTAURANT));
    assert_eq!(rows.s_restaurant_names.name, "Пекарня у дома");
}

#[test]
fn the_status_hashdiff_differs_between_closed_and_cancelled() {
    let closed = rows(&with_status(OrderStatus::Closed, "2023-08-05 06:28:54"));
    let cancelled = rows(&with_status(OrderStatus::Cancelled, "2023-08-05 07:00:00"));
    assert_eq!(closed.s_order_status.status, OrderStatus::Closed);
    assert_eq!(cancelled.s_order_status.status, OrderStatus::Cancelled);
    assert_ne!(
        closed.s_order_status.hk_order_status_hashdiff,
        cancelled.s_order_status.hk_order_status_hashdiff
    );
    assert_eq!(closed.s_order_status.h_order_pk, key(H_ORDER));
}

#[test]
fn the_status_hashdiff_is_equal_for_equal_statuses() {
    let first = rows(&with_status(OrderStatus::Closed, "2023-08-05 06:28:54"));
    let later = rows(&with_status(OrderStatus::Closed, "2023-08-06 10:00:00"));
    assert_eq!(
        first.s_order_status.hk_order_status_hashdiff,
        later.s_order_status.hk_order_status_hashdiff
    );
    let all = [
        OrderStatus::Open,
        OrderStatus::Cooking,
        OrderStatus::Delivering,
        OrderStatus::Closed,
        OrderStatus::Cancelled,
    ];
    let diffs: BTreeSet<HashKey> = all
        .iter()
        .map(|s| {
            rows(&with_status(*s, "2023-08-05 06:28:54"))
                .s_order_status
                .hk_order_status_hashdiff
        })
        .collect();
    assert_eq!(diffs.len(), all.len(), "every status has its own hashdiff");
}

#[test]
fn the_cost_hashdiff_is_the_same_for_1410_and_1410_point_0() {
    let integer = rows(&with_amounts("1410", "1410"));
    let fraction = rows(&with_amounts("1410.0", "1410.00"));
    assert_eq!(
        integer.s_order_cost.hk_order_cost_hashdiff,
        fraction.s_order_cost.hk_order_cost_hashdiff
    );
    assert_eq!(integer.s_order_cost.cost, fraction.s_order_cost.cost);
}

#[test]
fn the_cost_hashdiff_follows_cost_and_payment() {
    let base = cost_hashdiff("1410", "1410");
    let cost = cost_hashdiff("1411", "1410");
    let payment = cost_hashdiff("1410", "1410.5");
    let swapped_a = cost_hashdiff("1", "2");
    let swapped_b = cost_hashdiff("2", "1");
    assert_ne!(base, cost);
    assert_ne!(base, payment);
    assert_ne!(cost, payment);
    assert_ne!(swapped_a, swapped_b);
}

#[test]
fn the_names_hashdiffs_follow_the_names() {
    let base = rows(&example());
    let mut renamed = example();
    renamed.payload.user.login = "irina".to_owned();
    renamed.payload.restaurant.name = "Пекарня у дома 2".to_owned();
    renamed.payload.products[0].name = "Хачапури".to_owned();
    let renamed = rows(&renamed);
    assert_ne!(
        base.s_user_names.hk_user_names_hashdiff,
        renamed.s_user_names.hk_user_names_hashdiff
    );
    assert_ne!(
        base.s_restaurant_names.hk_restaurant_names_hashdiff,
        renamed.s_restaurant_names.hk_restaurant_names_hashdiff
    );
    let diff_of = |rows: &VaultRows, pk: HashKey| {
        rows.s_product_names
            .iter()
            .find(|s| s.h_product_pk == pk)
            .map(|s| s.hk_product_names_hashdiff)
            .expect("satellite present")
    };
    assert_ne!(
        diff_of(&base, key(H_PRODUCT_KHACHAPURI)),
        diff_of(&renamed, key(H_PRODUCT_KHACHAPURI))
    );
    assert_eq!(
        diff_of(&base, key(H_PRODUCT_PIE)),
        diff_of(&renamed, key(H_PRODUCT_PIE))
    );
}

#[test]
fn mapping_the_same_order_twice_yields_identical_rows() {
    // A replay must yield the same rows, in the same order (no hash-map iteration order).
    assert_eq!(rows(&example()), rows(&example()));
}

// A small pool of products so that random orders repeat products and share categories.
const PRODUCT_POOL: [(&str, &str); 5] = [
    ("c5b64c8ba71adb08ce4bf7bc", "Выпечка"),
    ("1b3e42939c414bc1ea69e2fe", "Выпечка"),
    ("165b4812b4334fdbeaeca3a3", "Напитки"),
    ("2f0e7a1c9b8d4e6f5a4b3c2d", ""),
    ("aaaaaaaaaaaaaaaaaaaaaaaa", "Напитки"),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rows_hold_one_row_per_distinct_product_and_category_in_key_order(
        picks in proptest::collection::vec(0..PRODUCT_POOL.len(), 0..10)
    ) {
        let mut order = example();
        order.payload.products = picks
            .iter()
            .map(|&i| {
                let (id, category) = PRODUCT_POOL[i];
                EnrichedProduct {
                    id: EntityId::parse(id).expect("valid id"),
                    price: vault_core::Amount::from_i64(100),
                    quantity: 1,
                    name: format!("dish {i}"),
                    category: category.to_owned(),
                }
            })
            .collect();
        let rows = rows(&order);

        let distinct_products: BTreeSet<&str> =
            picks.iter().map(|&i| PRODUCT_POOL[i].0).collect();
        let distinct_categories: BTreeSet<&str> =
            picks.iter().map(|&i| PRODUCT_POOL[i].1).collect();
        prop_assert_eq!(rows.h_products.len(), distinct_products.len());
        prop_assert_eq!(rows.l_order_products.len(), distinct_products.len());
        prop_assert_eq!(rows.l_product_categories.len(), distinct_products.len());
        prop_assert_eq!(rows.l_product_restaurants.len(), distinct_products.len());
        prop_assert_eq!(rows.s_product_names.len(), distinct_products.len());
        prop_assert_eq!(rows.h_categories.len(), distinct_categories.len());

        let hub_business_keys: BTreeSet<&str> =
            rows.h_products.iter().map(|h| h.product_id.as_str()).collect();
        prop_assert_eq!(hub_business_keys, distinct_products.clone());
        let category_names: BTreeSet<&str> =
            rows.h_categories.iter().map(|h| h.category_name.as_str()).collect();
        prop_assert_eq!(category_names, distinct_categories);

        // In a stable order whatever the order of the items, so loaders take row locks in a
        // stable order. Hubs and `l_product_categories` are sorted by their own key; the
        // order-product and product-restaurant links follow their product hub key.
        prop_assert!(rows.h_products.windows(2).all(|w| w[0].h_product_pk < w[1].h_product_pk));
        prop_assert!(rows.h_categories.windows(2).all(|w| w[0].h_category_pk < w[1].h_category_pk));
        prop_assert!(rows.l_product_categories.windows(2).all(|w| w[0].hk_product_category_pk < w[1].hk_product_category_pk));
        prop_assert!(rows.l_order_products.windows(2).all(|w| w[0].h_product_pk < w[1].h_product_pk));
        prop_assert!(rows.l_product_restaurants.windows(2).all(|w| w[0].h_product_pk < w[1].h_product_pk));
        let mut reversed = order.clone();
        reversed.payload.products.reverse();
        prop_assert_eq!(vault_core::vault::rows(&reversed), rows.clone());

        for l in &rows.l_order_products {
            prop_assert_eq!(l.hk_order_product_pk, HashKey::link(l.h_order_pk, l.h_product_pk));
        }
        for l in &rows.l_product_categories {
            prop_assert_eq!(
                l.hk_product_category_pk,
                HashKey::link(l.h_product_pk, l.h_category_pk)
            );
        }
        for l in &rows.l_product_restaurants {
            prop_assert_eq!(
                l.hk_product_restaurant_pk,
                HashKey::link(l.h_product_pk, l.h_restaurant_pk)
            );
        }
        // The order's effectivity: one three-hub link and one effectivity row per dish.
        prop_assert_eq!(rows.l_order_product_categories.len(), distinct_products.len());
        prop_assert_eq!(
            rows.s_order_product_category_effectivity.len(),
            distinct_products.len()
        );
        // And its user: the order–user link is in effect at this version, whatever the dishes.
        prop_assert_eq!(
            rows.s_order_user_effectivity.hk_order_user_pk,
            rows.l_order_user.hk_order_user_pk
        );
        prop_assert_eq!(rows.s_order_user_effectivity.update_ts, order.payload.update_ts);
    }

    #[test]
    fn each_version_names_its_own_user_through_its_own_link(
        users in proptest::collection::vec(0..USER_POOL.len(), 1..8)
    ) {
        // Versions of one order, a minute apart, each naming a user of the pool: every version
        // has exactly one user in effect, the one it names, and versions naming the same user
        // share that user's link.
        let base = example();
        let start = base.payload.update_ts.as_datetime();
        let versions: Vec<EnrichedOrder> = users
            .iter()
            .enumerate()
            .map(|(minute, &u)| {
                let mut version = base.clone();
                version.payload.user.id = EntityId::parse(USER_POOL[u]).expect("valid id");
                version.payload.update_ts = Timestamp::from_datetime(
                    start + chrono::TimeDelta::minutes(minute as i64),
                );
                version
            })
            .collect();
        let mut links = std::collections::BTreeMap::new();
        for (version, &u) in versions.iter().zip(&users) {
            let rows = rows(version);
            let user = HashKey::user(&EntityId::parse(USER_POOL[u]).expect("valid id"));
            prop_assert_eq!(rows.l_order_user.h_user_pk, user);
            prop_assert_eq!(rows.l_order_user.h_order_pk, rows.h_order.h_order_pk);
            prop_assert_eq!(
                rows.l_order_user.hk_order_user_pk,
                HashKey::link(rows.h_order.h_order_pk, user)
            );
            prop_assert_eq!(
                rows.s_order_user_effectivity.hk_order_user_pk,
                rows.l_order_user.hk_order_user_pk
            );
            prop_assert_eq!(rows.s_order_user_effectivity.update_ts, version.payload.update_ts);
            let link = *links.entry(u).or_insert(rows.l_order_user.hk_order_user_pk);
            prop_assert_eq!(link, rows.l_order_user.hk_order_user_pk);
        }
        let distinct: BTreeSet<HashKey> = links.values().copied().collect();
        prop_assert_eq!(distinct.len(), links.len(), "one link per user");
    }
}

const USER_POOL: [&str; 3] = [
    "626a81ce9a8cd1920641e296",
    "626a81ce9a8cd1920641e297",
    "aaaaaaaaaaaaaaaaaaaaaaa1",
];

// ---------------------------------------------------------------- effectivity (docs/contract.md §3.3)

fn effective_lines(rows: &VaultRows) -> BTreeSet<(HashKey, HashKey, HashKey, Timestamp)> {
    let links: std::collections::BTreeMap<HashKey, _> = rows
        .l_order_product_categories
        .iter()
        .map(|l| (l.hk_order_product_category_pk, l))
        .collect();
    rows.s_order_product_category_effectivity
        .iter()
        .map(|e| {
            let l = links[&e.hk_order_product_category_pk];
            (l.h_order_pk, l.h_product_pk, l.h_category_pk, e.update_ts)
        })
        .collect()
}

#[test]
fn an_order_version_records_each_dish_under_its_category_at_that_version() {
    let order = example();
    let rows = rows(&order);
    let version = order.payload.update_ts;
    assert_eq!(rows.s_order_version.h_order_pk, key(H_ORDER));
    assert_eq!(rows.s_order_version.update_ts, version);
    let expected: BTreeSet<_> = [
        (H_PRODUCT_KHACHAPURI, H_CATEGORY_PASTRY),
        (H_PRODUCT_PIE, H_CATEGORY_PASTRY),
        (H_PRODUCT_MORS, H_CATEGORY_DRINKS),
    ]
    .map(|(p, c)| (key(H_ORDER), key(p), key(c), version))
    .into();
    assert_eq!(effective_lines(&rows), expected);
    for l in &rows.l_order_product_categories {
        assert_eq!(
            l.hk_order_product_category_pk,
            HashKey::link3(l.h_order_pk, l.h_product_pk, l.h_category_pk)
        );
    }
}

#[test]
fn a_dish_moved_to_another_category_is_a_new_link_for_the_later_version() {
    let first = example();
    let mut later = example();
    later.payload.update_ts = Timestamp::parse("2023-08-06 10:00:00").expect("timestamp");
    later.payload.products[0].category = "Пицца".to_owned();
    let moved = HashKey::product(&later.payload.products[0].id);
    let (before, after) = (rows(&first), rows(&later));
    let category_of = |rows: &VaultRows| {
        effective_lines(rows)
            .into_iter()
            .find(|(_, p, _, _)| *p == moved)
            .map(|(_, _, c, _)| c)
    };
    assert_eq!(category_of(&before), Some(HashKey::category("Выпечка")));
    assert_eq!(category_of(&after), Some(HashKey::category("Пицца")));
    let link_of = |rows: &VaultRows| {
        rows.l_order_product_categories
            .iter()
            .find(|l| l.h_product_pk == moved)
            .map(|l| l.hk_order_product_category_pk)
    };
    assert_ne!(link_of(&before), link_of(&after));
}

#[test]
fn a_dish_a_later_version_drops_has_no_effectivity_in_it() {
    let mut later = example();
    later.payload.update_ts = Timestamp::parse("2023-08-06 10:00:00").expect("timestamp");
    let dropped = later.payload.products.remove(1);
    let rows = rows(&later);
    let dropped = HashKey::product(&dropped.id);
    assert!(effective_lines(&rows)
        .iter()
        .all(|(_, p, _, _)| *p != dropped));
    assert_eq!(rows.s_order_product_category_effectivity.len(), 2);
    assert_eq!(rows.s_order_version.update_ts, later.payload.update_ts);
}

#[test]
fn a_version_records_the_user_it_names_as_the_users_link_in_effect() {
    let order = example();
    let rows = rows(&order);
    assert_eq!(
        rows.s_order_user_effectivity.hk_order_user_pk,
        key(L_ORDER_USER)
    );
    assert_eq!(
        rows.s_order_user_effectivity.update_ts,
        order.payload.update_ts
    );
}

#[test]
fn a_later_version_naming_another_user_puts_that_users_link_in_effect() {
    let first = example();
    let mut later = example();
    later.payload.update_ts = Timestamp::parse("2023-08-06 10:00:00").expect("timestamp");
    later.payload.user.id = EntityId::parse("626a81ce9a8cd1920641e297").expect("valid id");
    let (before, after) = (rows(&first), rows(&later));
    assert_eq!(before.h_order, after.h_order, "the same order");
    assert_ne!(
        before.l_order_user.hk_order_user_pk,
        after.l_order_user.hk_order_user_pk
    );
    assert_eq!(
        after.l_order_user.h_user_pk,
        HashKey::user(&later.payload.user.id)
    );
    assert_eq!(
        after.s_order_user_effectivity.hk_order_user_pk,
        after.l_order_user.hk_order_user_pk
    );
    assert_eq!(
        after.s_order_user_effectivity.update_ts,
        later.payload.update_ts
    );
}

#[test]
fn a_version_without_dishes_still_records_the_version() {
    let mut empty = example();
    empty.payload.products.clear();
    let rows = rows(&empty);
    assert!(rows.s_order_product_category_effectivity.is_empty());
    assert_eq!(rows.s_order_version.update_ts, empty.payload.update_ts);
    assert_eq!(
        rows.s_order_user_effectivity.update_ts, empty.payload.update_ts,
        "and its user"
    );
}
