//! The JSON layer under every decoder (`decode::document`): any bytes either fail with a
//! reason or give a document with no NUL character anywhere, which re-serializes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::decode;
use vault_core_fuzz::{accepted, holds_nul, round_trips};

fuzz_target!(|data: &[u8]| {
    let Some(document) = accepted(decode::document(data)) else {
        return;
    };
    assert!(
        !holds_nul(&document),
        "a NUL character got through: {document}"
    );
    // A document that is itself a string would be unwrapped once more when decoded again.
    if !document.is_string() {
        round_trips(&document, decode::document);
    }
});
