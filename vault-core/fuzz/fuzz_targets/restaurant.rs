//! Restaurant dictionary entries (Redis, docs/contract.md §2.2): decoding any bytes never
//! panics; a decoded entry round-trips, and every dish on its menu can be looked up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::decode;
use vault_core_fuzz::{accepted, round_trips};

fuzz_target!(|data: &[u8]| {
    let Some(restaurant) = accepted(decode::restaurant(data)) else {
        return;
    };
    round_trips(&restaurant, decode::restaurant);
    for item in &restaurant.menu {
        let found = restaurant
            .menu_item(&item.id)
            .expect("a dish on the menu is found");
        assert_eq!(found.id, item.id);
    }
});
