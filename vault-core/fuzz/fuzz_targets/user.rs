//! User dictionary entries (Redis, docs/contract.md §2.2): decoding any bytes never panics;
//! a decoded entry round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::decode;
use vault_core_fuzz::{accepted, round_trips};

fuzz_target!(|data: &[u8]| {
    if let Some(user) = accepted(decode::user(data)) {
        round_trips(&user, decode::user);
    }
});
