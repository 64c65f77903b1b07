//! The scalar parsers of the contracts (docs/contract.md §2): timestamps, amounts, entity
//! ids, hash keys and statuses, from text and from JSON. None panics; whatever parses
//! round-trips through its canonical text form and through JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::{Amount, EntityId, HashKey, OrderStatus, Timestamp};
use vault_core_fuzz::{from_json, round_trips};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(at) = Timestamp::parse(text) {
            assert_eq!(Timestamp::parse(&at.to_rfc3339()), Ok(at));
            round_trips(&at, from_json::<Timestamp>);
        }
        if let Ok(amount) = Amount::parse(text) {
            assert_eq!(Amount::parse(&amount.to_string()), Ok(amount));
            round_trips(&amount, from_json::<Amount>);
            let _ = amount.fits_numeric(19, 5);
        }
        if let Ok(id) = EntityId::parse(text) {
            assert_eq!(EntityId::parse(&id.to_string()), Ok(id.clone()));
            round_trips(&id, from_json::<EntityId>);
        }
        if let Ok(key) = text.parse::<HashKey>() {
            assert_eq!(key.to_string().parse::<HashKey>().ok(), Some(key));
            round_trips(&key, from_json::<HashKey>);
        }
    }
    // The same scalars as JSON values, as they appear inside messages.
    if let Ok(amount) = serde_json::from_slice::<Amount>(data) {
        round_trips(&amount, from_json::<Amount>);
    }
    if let Ok(at) = serde_json::from_slice::<Timestamp>(data) {
        round_trips(&at, from_json::<Timestamp>);
    }
    if let Ok(status) = serde_json::from_slice::<OrderStatus>(data) {
        round_trips(&status, from_json::<OrderStatus>);
        assert_eq!(
            serde_json::to_string(&status).ok(),
            Some(format!("\"{status}\""))
        );
    }
});
