//! Properties the fuzz targets share: what every vault-core decoder must satisfy for any
//! input, beyond not panicking (libFuzzer reports a panic, an allocation over
//! `-malloc_limit_mb` and a resident size over `-rss_limit_mb` as a crash).

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use vault_core::decode::DecodeError;
use vault_core::events::EventError;

/// Serializing a decoded value and decoding the result gives the same value: what one service
/// publishes, the next one reads back unchanged.
pub fn round_trips<T, E>(value: &T, decode: impl Fn(&[u8]) -> Result<T, E>)
where
    T: Serialize + PartialEq + Debug,
    E: Debug,
{
    let wire = serde_json::to_vec(value).expect("a decoded value serializes");
    match decode(&wire) {
        Ok(again) => assert_eq!(
            &again,
            value,
            "the round trip changed the value; wire form: {}",
            String::from_utf8_lossy(&wire)
        ),
        Err(error) => panic!(
            "the wire form of a decoded value does not decode: {error:?}; wire form: {}",
            String::from_utf8_lossy(&wire)
        ),
    }
}

/// Whether any string or object key in `value` holds a NUL character.
pub fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields
            .iter()
            .any(|(key, item)| key.contains('\0') || holds_nul(item)),
        _ => false,
    }
}

/// Decodes one JSON value as `T` (a named function, where a decoder is passed as a value).
pub fn from_json<T: DeserializeOwned>(wire: &[u8]) -> serde_json::Result<T> {
    serde_json::from_slice(wire)
}

/// A refusal of vault-core's: its kind and its text go to the dead-letter table, so both must
/// render for any input.
pub trait Refusal: std::fmt::Display {
    fn kind(&self) -> &'static str;
}

impl Refusal for DecodeError {
    fn kind(&self) -> &'static str {
        DecodeError::kind(self)
    }
}

impl Refusal for EventError {
    fn kind(&self) -> &'static str {
        EventError::kind(self)
    }
}

/// The value, or `None` after rendering the refusal (the target then has nothing more to check).
pub fn accepted<T, E: Refusal>(result: Result<T, E>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(refusal) => {
            let _ = (refusal.kind(), refusal.to_string());
            None
        }
    }
}
