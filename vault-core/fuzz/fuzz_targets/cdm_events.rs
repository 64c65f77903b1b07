//! Counter events (topic `cdm_service`, docs/contract.md §2.4): decoding any bytes never
//! panics; decoded events round-trip; folding them into an order version and offering it to
//! the counter transition never panics, and a first version counts only when CLOSED.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::counter::{transition, Transition};
use vault_core::{decode, events};
use vault_core_fuzz::{accepted, round_trips};

fuzz_target!(|data: &[u8]| {
    let Some(decoded) = accepted(decode::cdm_events(data)) else {
        return;
    };
    round_trips(&decoded, decode::cdm_events);
    let Some(version) = accepted(events::order_version(&decoded)) else {
        return;
    };
    match transition(None, &version) {
        Transition::Applied { state, deltas } => {
            assert_eq!(
                deltas.is_empty(),
                !state.counted || version.products.is_empty()
            );
            assert_eq!(state.counted, version.status.counts());
            // The same version again is a duplicate: it changes nothing.
            assert_eq!(transition(Some(&state), &version), Transition::Stale);
        }
        Transition::Stale => panic!("a first version is never stale"),
    }
});
