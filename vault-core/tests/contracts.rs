//! Every wire contract survives serialize → decode unchanged, for the examples and for random
//! valid values; a JSON string that contains the document decodes like the document.

use chrono::DateTime;
use proptest::prelude::*;
use proptest::sample::Index;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;
use vault_core::contract::{
    Amount, CdmOrderEvent, CdmPayload, EnrichedOrder, EnrichedPayload, EnrichedProduct, EntityRef,
    MenuItem, OrderItem, OrderStatus, RawOrder, RawPayload, Restaurant, RestaurantRef,
    StatusChange, User, UserRef,
};
use vault_core::{decode, DecodeError, EntityId, HashKey, OrderId, Timestamp};

mod fixtures;

use fixtures::{
    CDM_MESSAGE, DDS_MESSAGE, ORDER_ISO_CANCELLED, ORDER_NAIVE, REDIS_RESTAURANT, REDIS_USER,
};

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("contracts serialize")
}

/// Decoding what was serialized gives the value back, writing the decoded value again gives the
/// same bytes (decoding is a fixed point), and the message wrapped in a JSON string, as the
/// Python reference sends it, decodes to the same value.
fn survives_serialize_then_decode<T>(
    value: &T,
    decode: fn(&[u8]) -> Result<T, DecodeError>,
) -> Result<(), TestCaseError>
where
    T: Serialize + PartialEq + std::fmt::Debug,
{
    let bytes = json(value);
    let decoded = decode(&bytes).expect("decodes");
    prop_assert_eq!(&decoded, value);
    prop_assert_eq!(json(&decoded), bytes.clone());
    prop_assert_eq!(decode(&wrapped(&bytes)).expect("wrapped decodes"), decoded);
    Ok(())
}

/// The message as the Python reference sends it: a JSON string containing the document.
fn wrapped(bytes: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).expect("JSON is UTF-8");
    serde_json::to_vec(text).expect("a string serializes")
}

// ---------------------------------------------------------------------------------------------
// Strategies for random valid values.

fn entity_id() -> impl Strategy<Value = EntityId> {
    "[0-9a-f]{24}".prop_map(|text| EntityId::parse(&text).expect("24 hex characters"))
}

fn amount() -> impl Strategy<Value = Amount> {
    prop_oneof![
        // Money as the source sends it: up to 2 decimals.
        (-1_000_000_000i64..100_000_000_000, 0u32..=2)
            .prop_map(|(mantissa, scale)| Amount::new(Decimal::new(mantissa, scale))),
        // Whole amounts over the full integer range.
        any::<i64>().prop_map(Amount::from_i64),
    ]
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    // 1970-01-01 .. 2100-01-01, microsecond precision, sometimes whole seconds or millis.
    const END_MICROS: i64 = 4_102_444_800_000_000;
    prop_oneof![
        0..END_MICROS,
        (0..END_MICROS / 1_000_000).prop_map(|s| s * 1_000_000),
        (0..END_MICROS / 1_000).prop_map(|ms| ms * 1_000),
    ]
    .prop_map(|micros| {
        Timestamp::from_datetime(DateTime::from_timestamp_micros(micros).expect("in range"))
    })
}

fn status() -> impl Strategy<Value = OrderStatus> {
    prop::sample::select(vec![
        OrderStatus::Open,
        OrderStatus::Cooking,
        OrderStatus::Delivering,
        OrderStatus::Closed,
        OrderStatus::Cancelled,
    ])
}

/// Free text: Latin, Cyrillic, quotes, backslashes, control characters and emoji; never NUL,
/// which no warehouse column can hold, so decoding rejects it.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        "[а-яА-Я ]{0,24}",
        Just(String::new()),
        any::<String>().prop_map(|s| s.replace('\0', "")),
    ]
}

fn hash_key() -> impl Strategy<Value = HashKey> {
    any::<u128>().prop_map(|bits| HashKey::from_uuid(Uuid::from_u128(bits)))
}

fn order_item() -> impl Strategy<Value = OrderItem> {
    (
        entity_id(),
        amount(),
        any::<i64>(),
        proptest::option::of(text()),
        proptest::option::of(text()),
    )
        .prop_map(|(id, price, quantity, name, category)| OrderItem {
            id,
            price,
            quantity,
            name,
            category,
        })
}

fn raw_order() -> impl Strategy<Value = RawOrder> {
    let payload = (
        (entity_id(), entity_id(), timestamp()),
        proptest::collection::vec(order_item(), 0..6),
        (amount(), amount(), amount(), amount()),
        proptest::collection::vec(
            (status(), timestamp()).prop_map(|(status, dttm)| StatusChange { status, dttm }),
            0..6,
        ),
        (status(), timestamp()),
    )
        .prop_map(
            |(
                (restaurant, user, date),
                order_items,
                (bonus_payment, cost, payment, bonus_grant),
                statuses,
                (final_status, update_ts),
            )| RawPayload {
                restaurant: EntityRef { id: restaurant },
                user: EntityRef { id: user },
                date,
                order_items,
                bonus_payment,
                cost,
                payment,
                bonus_grant,
                statuses,
                final_status,
                update_ts,
            },
        );
    (any::<i64>(), timestamp(), payload).prop_map(|(id, sent_dttm, payload)| RawOrder {
        object_id: OrderId(id),
        object_type: "order".to_owned(),
        sent_dttm,
        payload,
    })
}

fn user() -> impl Strategy<Value = User> {
    (entity_id(), text(), text(), timestamp()).prop_map(|(id, name, login, update_ts_utc)| User {
        id,
        name,
        login,
        update_ts_utc,
    })
}

fn restaurant() -> impl Strategy<Value = Restaurant> {
    let menu_item =
        (entity_id(), text(), amount(), text()).prop_map(|(id, name, price, category)| MenuItem {
            id,
            name,
            price,
            category,
        });
    (
        entity_id(),
        text(),
        proptest::collection::vec(menu_item, 0..6),
        timestamp(),
    )
        .prop_map(|(id, name, menu, update_ts_utc)| Restaurant {
            id,
            name,
            menu,
            update_ts_utc,
        })
}

fn enriched_order() -> impl Strategy<Value = EnrichedOrder> {
    let product = (entity_id(), amount(), any::<i64>(), text(), text()).prop_map(
        |(id, price, quantity, name, category)| EnrichedProduct {
            id,
            price,
            quantity,
            name,
            category,
        },
    );
    (
        any::<i64>(),
        (timestamp(), amount(), amount(), status(), timestamp()),
        (entity_id(), text()),
        (entity_id(), text(), text()),
        proptest::collection::vec(product, 0..6),
    )
        .prop_map(
            |(
                id,
                (date, cost, payment, status, update_ts),
                (restaurant_id, restaurant_name),
                (user_id, user_name, login),
                products,
            )| EnrichedOrder {
                object_id: OrderId(id),
                object_type: "order".to_owned(),
                payload: EnrichedPayload {
                    id: OrderId(id),
                    date,
                    cost,
                    payment,
                    status,
                    update_ts,
                    restaurant: RestaurantRef {
                        id: restaurant_id,
                        name: restaurant_name,
                    },
                    user: UserRef {
                        id: user_id,
                        name: user_name,
                        login,
                    },
                    products,
                },
            },
        )
}

fn cdm_event() -> impl Strategy<Value = CdmOrderEvent> {
    (
        hash_key(),
        (hash_key(), hash_key(), hash_key(), hash_key()),
        (text(), text()),
        status(),
        timestamp(),
    )
        .prop_map(
            |(
                object_id,
                (order_id, user_id, product_id, category_id),
                (product_name, category_name),
                status,
                update_ts,
            )| CdmOrderEvent {
                object_id,
                object_type: "cdm_order_event".to_owned(),
                payload: CdmPayload {
                    order_id,
                    user_id,
                    product_id,
                    product_name,
                    category_id,
                    category_name,
                    status,
                    update_ts,
                },
            },
        )
}

fn cdm_events() -> impl Strategy<Value = Vec<CdmOrderEvent>> {
    proptest::collection::vec(cdm_event(), 0..6)
}

// ---------------------------------------------------------------------------------------------
// Random values.

/// One property test per listed message type: a random value survives serialize then decode.
macro_rules! survive_serialize_then_decode {
    ($($test:ident: $value:ident in $strategy:expr => $decode:path;)+) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            $(
                #[test]
                fn $test($value in $strategy) {
                    survives_serialize_then_decode(&$value, $decode)?;
                }
            )+
        }
    };
}

survive_serialize_then_decode! {
    a_user_survives_serialize_then_decode: user in user() => decode::user;
    a_restaurant_survives_serialize_then_decode: restaurant in restaurant() => decode::restaurant;
    an_enriched_order_survives_serialize_then_decode: order in enriched_order() => decode::enriched_order;
    a_counter_event_array_survives_serialize_then_decode: events in cdm_events() => decode::cdm_events;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_raw_order_survives_serialize_then_decode(order in raw_order()) {
        let bytes = json(&order);
        let decoded = decode::raw_order(&bytes).expect("decodes");
        prop_assert_eq!(&decoded.order, &order);
        let document: Value = serde_json::from_slice(&bytes).expect("JSON");
        prop_assert_eq!(&decoded.payload_document(), &document["payload"]);
        // Decoding is a fixed point: writing the decoded order again gives the same bytes.
        prop_assert_eq!(json(&decoded.order), bytes.clone());
        let from_string = decode::raw_order(&wrapped(&bytes)).expect("wrapped decodes");
        prop_assert_eq!(from_string, decoded);
    }

    #[test]
    fn a_counter_event_without_status_decodes_as_closed(events in cdm_events()) {
        let mut document = serde_json::to_value(&events).expect("serialize");
        for event in document.as_array_mut().expect("array") {
            let payload = event["payload"].as_object_mut().expect("payload object");
            prop_assert!(payload.remove("status").is_some());
        }
        let decoded = decode::cdm_events(document.to_string().as_bytes()).expect("decodes");
        let expected: Vec<CdmOrderEvent> = events
            .into_iter()
            .map(|mut event| {
                event.payload.status = OrderStatus::Closed;
                event
            })
            .collect();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn an_amount_survives_json_as_a_number(amount in amount()) {
        let text = serde_json::to_string(&amount).expect("serialize");
        prop_assert!(
            text.parse::<f64>().is_ok(),
            "amounts are written as JSON numbers, got {}", text
        );
        let back: Amount = serde_json::from_str(&text).expect("deserialize");
        prop_assert_eq!(back, amount);
        let from_string: Amount =
            serde_json::from_str(&format!("\"{}\"", amount)).expect("decimal string");
        prop_assert_eq!(from_string, amount);
    }

    #[test]
    fn a_timestamp_survives_its_text_forms(at in timestamp()) {
        let rfc3339 = at.to_rfc3339();
        prop_assert!(rfc3339.ends_with("+00:00"), "{}", rfc3339);
        prop_assert_eq!(Timestamp::parse(&rfc3339).expect("rfc3339"), at);
        let naive = at.as_datetime().format("%Y-%m-%d %H:%M:%S%.6f").to_string();
        prop_assert_eq!(Timestamp::parse(&naive).expect("naive"), at);
        let shifted = at
            .as_datetime()
            .with_timezone(&chrono::FixedOffset::east_opt(3 * 3600).expect("offset"))
            .to_rfc3339();
        prop_assert_eq!(Timestamp::parse(&shifted).expect("offset"), at);
    }
}

// ---------------------------------------------------------------------------------------------
// The examples.

#[test]
fn the_raw_order_examples_survive_serialize_then_decode() {
    for text in [ORDER_NAIVE, ORDER_ISO_CANCELLED] {
        let order = decode::raw_order(text.as_bytes()).expect("decodes").order;
        let again = decode::raw_order(&json(&order)).expect("decodes").order;
        assert_eq!(again, order);
        let wrapped_order = decode::raw_order(&wrapped(text.as_bytes()))
            .expect("wrapped decodes")
            .order;
        assert_eq!(wrapped_order, order);
    }
}

#[test]
fn the_dictionary_examples_survive_serialize_then_decode() {
    let user = decode::user(REDIS_USER.as_bytes()).expect("decodes");
    assert_eq!(decode::user(&json(&user)).expect("decodes"), user);
    let restaurant = decode::restaurant(REDIS_RESTAURANT.as_bytes()).expect("decodes");
    assert_eq!(
        decode::restaurant(&json(&restaurant)).expect("decodes"),
        restaurant
    );
}

#[test]
fn the_enriched_example_survives_serialize_then_decode() {
    let order = decode::enriched_order(DDS_MESSAGE.as_bytes()).expect("decodes");
    assert_eq!(
        decode::enriched_order(&json(&order)).expect("decodes"),
        order
    );
    assert_eq!(
        decode::enriched_order(&wrapped(DDS_MESSAGE.as_bytes())).expect("wrapped decodes"),
        order
    );
}

#[test]
fn the_cdm_example_payloads_survive_serialize_then_decode() {
    let document: Value = serde_json::from_str(CDM_MESSAGE).expect("JSON");
    for event in document.as_array().expect("array") {
        let payload: CdmPayload =
            serde_json::from_value(event["payload"].clone()).expect("payload decodes");
        let again: CdmPayload =
            serde_json::from_slice(&json(&payload)).expect("payload decodes again");
        assert_eq!(again, payload);
    }
}

// ---------------------------------------------------------------------------------------------
// What the decoders refuse.

#[test]
fn a_counter_event_of_another_object_type_is_rejected() {
    let event = CdmOrderEvent {
        object_id: HashKey::of("event"),
        object_type: "order".to_owned(),
        payload: CdmPayload {
            order_id: HashKey::of("order"),
            user_id: HashKey::of("user"),
            product_id: HashKey::of("product"),
            product_name: "dish".to_owned(),
            category_id: HashKey::of("category"),
            category_name: "category".to_owned(),
            status: OrderStatus::Closed,
            update_ts: Timestamp::parse("2023-08-05 06:28:54").expect("timestamp"),
        },
    };
    let err = decode::cdm_events(&json(&vec![event])).expect_err("wrong object type");
    assert_eq!(
        err,
        DecodeError::WrongObjectType {
            expected: "cdm_order_event",
            found: "order".to_owned(),
        }
    );
}

#[test]
fn an_enriched_order_of_another_object_type_is_rejected() {
    let mut document: Value = serde_json::from_str(DDS_MESSAGE).expect("JSON");
    document["object_type"] = Value::String("restaurant".into());
    let err = decode::enriched_order(document.to_string().as_bytes()).expect_err("rejected");
    assert_eq!(err.kind(), "wrong_object_type");
}

#[test]
fn an_entity_id_that_is_not_24_hex_characters_is_rejected_naming_the_field() {
    let mut document: Value = serde_json::from_str(REDIS_RESTAURANT).expect("JSON");
    document["menu"][2]["_id"] = Value::String("not-an-id".into());
    let err = decode::restaurant(document.to_string().as_bytes()).expect_err("rejected");
    match err {
        DecodeError::Field { path, message } => {
            assert_eq!(path, "menu[2]._id");
            assert!(message.contains("not-an-id"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_nul_character_in_any_name_is_rejected_naming_the_field(
        user in user(),
        at in any::<Index>(),
    ) {
        let mut poisoned = user.clone();
        let cut = poisoned.login.char_indices().map(|(i, _)| i).chain([poisoned.login.len()]);
        let cut: Vec<usize> = cut.collect();
        poisoned.login.insert(cut[at.index(cut.len())], '\0');
        let err = decode::user(&json(&poisoned)).expect_err("NUL is rejected");
        prop_assert_eq!(err, DecodeError::NulCharacter { path: "login".to_owned() });
    }
}

#[test]
fn a_json_string_that_does_not_contain_json_is_a_syntax_error() {
    let err = decode::user(b"\"not json\"").expect_err("rejected");
    assert_eq!(err.kind(), "invalid_json");
}
