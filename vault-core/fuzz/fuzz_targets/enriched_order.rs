//! Enriched orders (topic `dds_service`, docs/contract.md §2.3): decoding any bytes never
//! panics; a decoded order round-trips, maps to Data Vault rows, and yields counter events
//! that round-trip and fold back into one order version.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::{decode, events, vault};
use vault_core_fuzz::{accepted, round_trips};

fuzz_target!(|data: &[u8]| {
    let Some(order) = accepted(decode::enriched_order(data)) else {
        return;
    };
    round_trips(&order, decode::enriched_order);
    let rows = vault::rows(&order);
    assert_eq!(rows.l_order_products.len(), rows.h_products.len());
    let events = events::cdm_events(&order);
    assert_eq!(events.len(), rows.h_products.len());
    if events.is_empty() {
        return;
    }
    round_trips(&events, decode::cdm_events);
    let version = events::order_version(&events).expect("one order's events fold into a version");
    assert_eq!(version.products.len(), events.len());
    assert_eq!(version.categories.len(), rows.h_categories.len());
});
