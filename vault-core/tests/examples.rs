//! The example messages of the specification (copied into `tests/data/`) against the code:
//! they decode, enrichment turns the raw example into the enriched example, and the counter
//! events of the enriched example are those of the CDM example.
//!
//! Expected values come from the example files and the contract's test vectors, never from the code
//! under test.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use vault_core::contract::{CdmPayload, EnrichedOrder, OrderStatus, RawOrder, Restaurant, User};
use vault_core::enrich::{enrich, EnrichError};
use vault_core::{decode, events, EntityId, HashKey, OrderId, Timestamp};

mod fixtures;

use fixtures::{
    CDM_MESSAGE, DDS_MESSAGE, ORDER_ISO_CANCELLED, ORDER_NAIVE, REDIS_RESTAURANT, REDIS_USER,
};

/// The hub key of the empty category name (docs/contract.md §3.1).
const EMPTY_CATEGORY_KEY: &str = "7aaf118c-f174-3eba-9ec5-680cd791a020";

fn raw(text: &str) -> RawOrder {
    decode::raw_order(text.as_bytes())
        .expect("raw order example decodes")
        .order
}

fn user() -> User {
    decode::user(REDIS_USER.as_bytes()).expect("user example decodes")
}

fn restaurant() -> Restaurant {
    decode::restaurant(REDIS_RESTAURANT.as_bytes()).expect("restaurant example decodes")
}

fn dds() -> EnrichedOrder {
    decode::enriched_order(DDS_MESSAGE.as_bytes()).expect("dds example decodes")
}

fn entity(id: &str) -> EntityId {
    EntityId::parse(id).expect("valid entity id")
}

fn key(text: &str) -> HashKey {
    text.parse().expect("valid uuid")
}

fn ts(text: &str) -> Timestamp {
    Timestamp::parse(text).expect("valid timestamp")
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("valid date")
}

/// The payloads of the CDM example, decoded as payloads (its object ids are placeholders).
fn cdm_example_payloads() -> Vec<CdmPayload> {
    let document: Value = serde_json::from_str(CDM_MESSAGE).expect("cdm example is JSON");
    document
        .as_array()
        .expect("cdm example is an array")
        .iter()
        .map(|event| {
            serde_json::from_value(event["payload"].clone()).expect("cdm example payload decodes")
        })
        .collect()
}

#[test]
fn the_naive_timestamp_order_example_decodes_with_utc_timestamps() {
    let order = raw(ORDER_NAIVE);
    assert_eq!(order.object_id, OrderId(2301365));
    assert_eq!(order.object_type, "order");
    assert_eq!(order.sent_dttm.as_datetime(), utc(2023, 8, 12, 6, 7, 15));
    let p = &order.payload;
    assert_eq!(p.restaurant.id, entity("a51e4e31ae4602047ec52534"));
    assert_eq!(p.user.id, entity("626a81ce9a8cd1920641e296"));
    assert_eq!(p.order_items.len(), 3);
    assert_eq!(p.order_items[0].id, entity("c5b64c8ba71adb08ce4bf7bc"));
    assert_eq!(p.order_items[0].quantity, 2);
    assert_eq!(p.order_items[0].price.to_string(), "400");
    assert_eq!(
        p.order_items[0].name.as_deref(),
        Some("Хачапури по-аджарски")
    );
    assert_eq!(p.order_items[0].category, None);
    assert_eq!(p.cost.to_string(), "1410");
    assert_eq!(p.payment.to_string(), "1410");
    assert_eq!(p.bonus_payment.to_string(), "0");
    assert_eq!(p.final_status, OrderStatus::Closed);
    assert_eq!(p.update_ts.as_datetime(), utc(2023, 8, 5, 6, 28, 54));
    assert_eq!(p.statuses.len(), 4);
}

#[test]
fn the_iso_timestamp_cancelled_order_example_decodes_with_microseconds() {
    let order = raw(ORDER_ISO_CANCELLED);
    assert_eq!(order.object_id, OrderId(7608298));
    let expected_sent = utc(2025, 2, 22, 9, 43, 14) + chrono::TimeDelta::microseconds(49943);
    assert_eq!(order.sent_dttm.as_datetime(), expected_sent);
    let p = &order.payload;
    assert_eq!(p.final_status, OrderStatus::Cancelled);
    assert_eq!(p.update_ts, ts("2025-02-22 09:20:14.049848"));
    assert_eq!(p.order_items.len(), 2);
    assert_eq!(p.order_items[1].category.as_deref(), Some(""));
    assert_eq!(p.order_items[0].category.as_deref(), Some("Напитки"));
}

#[test]
fn the_dictionary_examples_decode() {
    let user = user();
    assert_eq!(user.id, entity("626a81ce9a8cd1920641e296"));
    assert_eq!(user.name, "Ирина Павловна Соколова");
    assert_eq!(user.login, "isokolova");
    assert_eq!(user.update_ts_utc, ts("2023-08-11T16:45:00+00:00"));

    let restaurant = restaurant();
    assert_eq!(restaurant.id, entity("a51e4e31ae4602047ec52534"));
    assert_eq!(restaurant.name, "Пекарня у дома");
    assert_eq!(restaurant.menu.len(), 4);
    let sauce = restaurant
        .menu_item(&entity("2f0e7a1c9b8d4e6f5a4b3c2d"))
        .expect("the sauce is on the menu");
    assert_eq!(sauce.category, "");
    assert_eq!(sauce.price.to_string(), "50");
    assert!(restaurant
        .menu_item(&entity("000000000000000000000000"))
        .is_none());
}

#[test]
fn the_enriched_order_example_decodes() {
    let order = dds();
    assert_eq!(order.object_id, OrderId(2301365));
    let p = &order.payload;
    assert_eq!(p.id, OrderId(2301365));
    assert_eq!(p.status, OrderStatus::Closed);
    assert_eq!(p.user.login, "isokolova");
    assert_eq!(p.restaurant.name, "Пекарня у дома");
    let names: Vec<&str> = p.products.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Хачапури по-аджарски",
            "Пирог с капустой",
            "Морс клюквенный"
        ]
    );
    let categories: Vec<&str> = p.products.iter().map(|p| p.category.as_str()).collect();
    assert_eq!(categories, ["Выпечка", "Выпечка", "Напитки"]);
}

#[test]
fn the_cdm_example_payloads_decode() {
    let payloads = cdm_example_payloads();
    assert_eq!(payloads.len(), 3);
    for payload in &payloads {
        assert_eq!(
            payload.order_id,
            key("55993f56-f356-3556-b280-96f5bbcaee7f")
        );
        assert_eq!(payload.user_id, key("a9e6edc4-db91-3f11-a278-f773f3273ae0"));
        assert_eq!(payload.status, OrderStatus::Closed);
        assert_eq!(payload.update_ts, ts("2023-08-05 06:28:54"));
    }
}

#[test]
fn the_cdm_example_decodes_as_a_message_once_its_placeholder_ids_are_uuids() {
    let mut document: Value = serde_json::from_str(CDM_MESSAGE).expect("cdm example is JSON");
    let placeholders = document.as_array_mut().expect("array");
    for (i, event) in placeholders.iter_mut().enumerate() {
        event["object_id"] = Value::String(format!("00000000-0000-3000-8000-00000000000{i}"));
    }
    let events = decode::cdm_events(document.to_string().as_bytes()).expect("decodes");
    assert_eq!(events.len(), 3);
    assert_eq!(
        events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
        cdm_example_payloads()
    );
    assert_eq!(
        events[2].object_id,
        key("00000000-0000-3000-8000-000000000002")
    );
}

#[test]
fn the_cdm_example_with_its_placeholder_ids_is_rejected_naming_the_field() {
    let err = decode::cdm_events(CDM_MESSAGE.as_bytes()).expect_err("placeholders are no uuids");
    assert!(err.to_string().contains("[0].object_id"), "{err}");
}

#[test]
fn enriching_the_raw_example_with_the_dictionary_examples_yields_the_enriched_example() {
    let enriched = enrich(&raw(ORDER_NAIVE), Some(&user()), Some(&restaurant())).expect("enrich");
    assert_eq!(enriched, dds());
}

#[test]
fn the_enriched_example_serializes_to_the_same_json_as_the_example_file() {
    let enriched = enrich(&raw(ORDER_NAIVE), Some(&user()), Some(&restaurant())).expect("enrich");
    let produced = serde_json::to_value(&enriched).expect("serialize");
    let mut expected: Value = serde_json::from_str(DDS_MESSAGE).expect("json");
    // The example writes naive timestamps; the produced form is canonical RFC 3339 in UTC.
    expected["payload"]["date"] = Value::String("2023-08-05T06:28:54+00:00".into());
    expected["payload"]["update_ts"] = Value::String("2023-08-05T06:28:54+00:00".into());
    assert_eq!(produced, expected);
}

#[test]
fn the_counter_events_of_the_enriched_example_carry_the_cdm_example_payloads() {
    let events = events::cdm_events(&dds());
    let mut produced: Vec<CdmPayload> = events.iter().map(|e| e.payload.clone()).collect();
    let mut expected = cdm_example_payloads();
    produced.sort_by_key(|p| p.product_id);
    expected.sort_by_key(|p| p.product_id);
    assert_eq!(produced, expected);
    for event in &events {
        assert_eq!(event.object_type, "cdm_order_event");
    }
}

#[test]
fn counter_event_object_ids_are_deterministic_per_order_product_and_version() {
    let order = dds();
    let first = events::cdm_events(&order);
    let second = events::cdm_events(&order);
    assert_eq!(first, second);
    assert_eq!(
        serde_json::to_vec(&first).expect("serialize"),
        serde_json::to_vec(&second).expect("serialize"),
        "a replay must be byte-identical"
    );

    let ids: BTreeSet<HashKey> = first.iter().map(|e| e.object_id).collect();
    assert_eq!(ids.len(), first.len(), "one id per product");

    let mut later = order.clone();
    later.payload.update_ts = ts("2023-08-05 06:28:54.000001");
    let later_ids: BTreeSet<HashKey> = events::cdm_events(&later)
        .iter()
        .map(|e| e.object_id)
        .collect();
    assert_eq!(later_ids.len(), ids.len());
    assert!(
        ids.is_disjoint(&later_ids),
        "another version must have other ids"
    );

    let mut other_order = order.clone();
    other_order.object_id = OrderId(2301366);
    other_order.payload.id = OrderId(2301366);
    let other_ids: BTreeSet<HashKey> = events::cdm_events(&other_order)
        .iter()
        .map(|e| e.object_id)
        .collect();
    assert!(
        ids.is_disjoint(&other_ids),
        "another order must have other ids"
    );
}

#[test]
fn a_product_listed_twice_yields_one_counter_event() {
    let mut order = dds();
    let again = order.payload.products[0].clone();
    order.payload.products.push(again);
    let events = events::cdm_events(&order);
    assert_eq!(events.len(), 3);
    let products: BTreeSet<HashKey> = events.iter().map(|e| e.payload.product_id).collect();
    assert_eq!(products.len(), 3);
}

#[test]
fn status_history_is_in_time_order_whatever_order_the_source_listed() {
    use OrderStatus::*;
    let cases = [
        (ORDER_NAIVE, vec![Open, Cooking, Delivering, Closed]),
        (ORDER_ISO_CANCELLED, vec![Open, Cooking, Cancelled]),
    ];
    for (text, expected) in cases {
        let order = raw(text);
        let history = order.payload.status_history();
        assert!(
            history.windows(2).all(|w| w[0].dttm <= w[1].dttm),
            "{history:?}"
        );
        let statuses: Vec<OrderStatus> = history.iter().map(|c| c.status).collect();
        assert_eq!(statuses, expected);
        assert_eq!(history.len(), order.payload.statuses.len());
    }
    // The naive example lists its statuses newest first: sorting must have happened.
    let naive = raw(ORDER_NAIVE);
    assert_eq!(naive.payload.statuses[0].status, Closed);
}

#[test]
fn an_item_with_an_empty_category_maps_to_the_key_of_the_empty_name() {
    let order = raw(ORDER_ISO_CANCELLED);
    let enriched = enrich(&order, Some(&user()), Some(&restaurant())).expect("enrich");
    let sauce_id = entity("2f0e7a1c9b8d4e6f5a4b3c2d");
    let sauce = enriched
        .payload
        .products
        .iter()
        .find(|p| p.id == sauce_id)
        .expect("the sauce is enriched");
    assert_eq!(sauce.category, "");
    assert_eq!(sauce.name, "Соус дня");

    let events = events::cdm_events(&enriched);
    let event = events
        .iter()
        .find(|e| e.payload.product_id == HashKey::product(&sauce_id))
        .expect("an event for the sauce");
    assert_eq!(event.payload.category_id, key(EMPTY_CATEGORY_KEY));
    assert_eq!(event.payload.category_name, "");
    assert_eq!(event.payload.status, OrderStatus::Cancelled);

    let rows = vault_core::vault::rows(&enriched);
    let hub = rows
        .h_categories
        .iter()
        .find(|h| h.h_category_pk == key(EMPTY_CATEGORY_KEY))
        .expect("a hub for the empty category");
    assert_eq!(hub.category_name, "");
}

/// `err` is `expected`, reports `kind` and names the missing id in its message.
fn assert_typed_error(err: &EnrichError, expected: &EnrichError, kind: &str, missing: &str) {
    assert_eq!(err, expected);
    assert_eq!(err.kind(), kind);
    assert!(err.to_string().contains(missing), "{err}");
}

#[test]
fn an_unknown_user_is_a_typed_error_naming_the_user() {
    let err = enrich(&raw(ORDER_NAIVE), None, Some(&restaurant())).expect_err("no user");
    let (order, user) = (OrderId(2301365), entity("626a81ce9a8cd1920641e296"));
    let expected = EnrichError::UnknownUser { order, user };
    assert_typed_error(&err, &expected, "unknown_user", "626a81ce9a8cd1920641e296");
}

#[test]
fn an_unknown_restaurant_is_a_typed_error_naming_the_restaurant() {
    let err = enrich(&raw(ORDER_NAIVE), Some(&user()), None).expect_err("no restaurant");
    let (order, restaurant) = (OrderId(2301365), entity("a51e4e31ae4602047ec52534"));
    let expected = EnrichError::UnknownRestaurant { order, restaurant };
    assert_typed_error(
        &err,
        &expected,
        "unknown_restaurant",
        "a51e4e31ae4602047ec52534",
    );
}

#[test]
fn an_item_missing_from_the_menu_is_a_typed_error_naming_the_item() {
    let order = raw(ORDER_NAIVE);
    let missing = entity("1b3e42939c414bc1ea69e2fe");
    let mut restaurant = restaurant();
    restaurant.menu.retain(|item| item.id != missing);
    let err = enrich(&order, Some(&user()), Some(&restaurant)).expect_err("no menu item");
    let expected = EnrichError::UnknownMenuItem {
        order: OrderId(2301365),
        restaurant: entity("a51e4e31ae4602047ec52534"),
        item: missing,
    };
    assert_typed_error(
        &err,
        &expected,
        "unknown_menu_item",
        "1b3e42939c414bc1ea69e2fe",
    );
}

#[test]
fn the_price_comes_from_the_order_item_not_the_menu() {
    let mut order = raw(ORDER_NAIVE);
    order.payload.order_items[0].price = vault_core::Amount::from_i64(399);
    let enriched = enrich(&order, Some(&user()), Some(&restaurant())).expect("enrich");
    assert_eq!(enriched.payload.products[0].price.to_string(), "399");
    assert_eq!(enriched.payload.products[1].price.to_string(), "250");
}

#[test]
fn name_and_category_come_from_the_menu_not_the_order_item() {
    let mut order = raw(ORDER_NAIVE);
    order.payload.order_items[0].name = Some("something else".to_owned());
    order.payload.order_items[0].category = Some("Напитки".to_owned());
    let enriched = enrich(&order, Some(&user()), Some(&restaurant())).expect("enrich");
    assert_eq!(enriched.payload.products[0].name, "Хачапури по-аджарски");
    assert_eq!(enriched.payload.products[0].category, "Выпечка");
}
