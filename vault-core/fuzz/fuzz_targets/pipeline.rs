//! A raw order through every pure step of the pipeline: decode, enrich against dictionaries
//! made from the order itself, publish (serialize) and read back as the next service does,
//! map to Data Vault rows and counter events, publish and read those back, fold them into
//! the order version. Reaches the downstream decoders with the inputs they really get.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::contract::{MenuItem, Restaurant, User};
use vault_core::{decode, enrich, events, vault, HashKey};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = decode::raw_order(data) else {
        return;
    };
    let order = &message.order;
    let payload = &order.payload;
    let user = User {
        id: payload.user.id.clone(),
        name: "user".to_owned(),
        login: "login".to_owned(),
        update_ts_utc: order.sent_dttm,
    };
    let restaurant = Restaurant {
        id: payload.restaurant.id.clone(),
        name: "restaurant".to_owned(),
        menu: payload
            .order_items
            .iter()
            .map(|item| MenuItem {
                id: item.id.clone(),
                name: item.name.clone().unwrap_or_default(),
                price: item.price,
                category: item.category.clone().unwrap_or_default(),
            })
            .collect(),
        update_ts_utc: order.sent_dttm,
    };
    let enriched = enrich::enrich(order, Some(&user), Some(&restaurant))
        .expect("every dish is on the menu made from the order");

    // service-stg publishes, service-dds reads.
    let wire = serde_json::to_vec(&enriched).expect("an enriched order serializes");
    let received = decode::enriched_order(&wire).unwrap_or_else(|error| {
        panic!(
            "service-dds cannot read what service-stg published: {error}; wire form: {}",
            String::from_utf8_lossy(&wire)
        )
    });
    assert_eq!(received, enriched, "the enriched order changed on the wire");

    let rows = vault::rows(&received);
    assert_eq!(rows.h_order.h_order_pk, HashKey::order(order.object_id));

    // service-dds publishes, service-cdm reads.
    let counter_events = events::cdm_events(&received);
    assert_eq!(
        counter_events,
        events::cdm_events(&received),
        "events are deterministic"
    );
    if counter_events.is_empty() {
        assert!(payload.order_items.is_empty());
        return;
    }
    let wire = serde_json::to_vec(&counter_events).expect("counter events serialize");
    let read = decode::cdm_events(&wire).unwrap_or_else(|error| {
        panic!(
            "service-cdm cannot read what service-dds published: {error}; wire form: {}",
            String::from_utf8_lossy(&wire)
        )
    });
    assert_eq!(
        read, counter_events,
        "the counter events changed on the wire"
    );
    let version = events::order_version(&read).expect("one order's events fold into a version");
    assert_eq!(version.status, payload.final_status);
    assert_eq!(version.version, payload.update_ts);
    assert_eq!(version.products.len(), rows.h_products.len());
    assert_eq!(version.categories.len(), rows.h_categories.len());
});
