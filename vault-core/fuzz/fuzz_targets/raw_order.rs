//! Raw orders (topic `stg_service`, docs/contract.md §2.1): decoding any bytes never panics;
//! a decoded order re-serialized decodes to the same thing, and the payload kept for staging
//! is the document's own, whichever way it was decoded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::decode;
use vault_core_fuzz::{accepted, round_trips};

fuzz_target!(|data: &[u8]| {
    let Some(message) = accepted(decode::raw_order(data)) else {
        return;
    };
    round_trips(&message.order, |wire| {
        decode::raw_order(wire).map(|again| again.order)
    });
    let document = decode::document(data).expect("an accepted message is a document");
    assert_eq!(message.payload_document(), document["payload"]);
    let history = message.order.payload.status_history();
    assert_eq!(history.len(), message.order.payload.statuses.len());
    assert!(history.windows(2).all(|pair| pair[0].dttm <= pair[1].dttm));
});
