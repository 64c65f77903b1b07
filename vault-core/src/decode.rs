//! Decoding messages from bytes into contracts, with errors that say what was wrong and where.
//!
//! Messages are JSON documents; a JSON *string* that contains the document is accepted too,
//! because the Python reference emits that.

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::contract::{
    CdmOrderEvent, EnrichedOrder, RawOrder, Restaurant, User, CDM_OBJECT_TYPE, ORDER_OBJECT_TYPE,
};

/// Why a message could not be decoded. Every variant is a property of the message itself, so
/// retrying cannot help: the message is rejected and kept with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is empty")]
    Empty,
    #[error("message is not valid JSON: {0}")]
    Syntax(String),
    #[error("field `{path}`: {message}")]
    Field { path: String, message: String },
    /// Text with a NUL character: no SQL warehouse column can hold it.
    #[error("field `{path}`: contains a NUL character")]
    NulCharacter { path: String },
    #[error("object_type is `{found}`, expected `{expected}`")]
    WrongObjectType {
        expected: &'static str,
        found: String,
    },
}

impl DecodeError {
    /// A short stable name for metrics and the dead-letter table.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Syntax(_) => "invalid_json",
            Self::Field { .. } => "invalid_field",
            Self::NulCharacter { .. } => "nul_character",
            Self::WrongObjectType { .. } => "wrong_object_type",
        }
    }
}

/// Parses bytes into a JSON document, unwrapping a JSON string that contains the document.
pub fn document(bytes: &[u8]) -> Result<Value, DecodeError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Syntax(e.to_string()))?;
    let document = match value {
        Value::String(inner) => {
            serde_json::from_str(&inner).map_err(|e| DecodeError::Syntax(format!("inner {e}")))?
        }
        other => other,
    };
    reject_nul(&document, &mut String::new())?;
    Ok(document)
}

/// Finds the first string (or object key) holding a NUL character, naming its path.
fn reject_nul(value: &Value, path: &mut String) -> Result<(), DecodeError> {
    let nul = |path: &str| DecodeError::NulCharacter {
        path: if path.is_empty() {
            "(root)".to_owned()
        } else {
            path.to_owned()
        },
    };
    match value {
        Value::String(text) if text.contains('\0') => Err(nul(path)),
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let result = reject_nul(item, path);
            path.truncate(len);
            result
        }),
        Value::Object(fields) => fields.iter().try_for_each(|(key, item)| {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            let result = if key.contains('\0') {
                Err(nul(path))
            } else {
                reject_nul(item, path)
            };
            path.truncate(len);
            result
        }),
        _ => Ok(()),
    }
}

/// Deserializes a document into `T`, naming the path of the first offending field.
pub fn typed<T: DeserializeOwned>(document: Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(document).map_err(field_error)
}

/// As [`typed`], reading `document` in place (for a caller that keeps the document).
fn typed_in_place<T: DeserializeOwned>(document: &Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(document).map_err(field_error)
}

fn field_error(e: serde_path_to_error::Error<serde_json::Error>) -> DecodeError {
    let path = e.path().to_string();
    DecodeError::Field {
        path: if path == "." {
            "(root)".to_owned()
        } else {
            path
        },
        message: e.into_inner().to_string(),
    }
}

/// A raw order with its `payload` as the JSON text it came in, which the staging layer stores
/// (`stg.order_events.payload`).
#[derive(Debug, Clone)]
pub struct RawOrderMessage {
    pub order: RawOrder,
    pub payload: Box<RawValue>,
}

impl RawOrderMessage {
    /// The payload as a JSON document.
    pub fn payload_document(&self) -> Value {
        serde_json::from_str(self.payload.get()).expect("a RawValue holds valid JSON")
    }
}

/// Two messages are equal when their orders are and their payloads are the same JSON document,
/// however it was written (spacing, key order, a number's digits).
impl PartialEq for RawOrderMessage {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order && self.payload_document() == other.payload_document()
    }
}

/// Decodes a raw order (topic `stg_service`); anything whose `object_type` is not `order` is
/// rejected.
pub fn raw_order(bytes: &[u8]) -> Result<RawOrderMessage, DecodeError> {
    /// The payload's text, borrowed from the message.
    #[derive(serde::Deserialize)]
    struct PayloadText<'a> {
        #[serde(borrow)]
        payload: &'a RawValue,
    }
    if let Some(order) = direct::<RawOrder>(bytes) {
        if order.object_type == ORDER_OBJECT_TYPE {
            if let Ok(text) = serde_json::from_slice::<PayloadText<'_>>(bytes) {
                return Ok(RawOrderMessage {
                    order,
                    payload: text.payload.to_owned(),
                });
            }
        }
    }
    let document = document(bytes)?;
    check_object_type(&document, ORDER_OBJECT_TYPE)?;
    let order = typed_in_place(&document)?;
    let payload = document.get("payload").unwrap_or(&Value::Null);
    let payload = serde_json::value::to_raw_value(payload)
        .map_err(|e| DecodeError::Syntax(format!("payload: {e}")))?;
    Ok(RawOrderMessage { order, payload })
}

/// The common case first: a message that decodes straight from its bytes into `T`, with no
/// `Value` tree in between (building and dropping that tree was a fifth of service-dds's CPU
/// and a third of service-cdm's; in service-stg the
/// payload's text is kept as it came). Anything unusual — a `\u0000` escape anywhere in the text
/// (perhaps a NUL character), a JSON string wrapping the document, a duplicate key, any error
/// at all — returns `None`, and the caller decodes the careful way ([`document`], then
/// [`typed`]), so what is accepted, and every error, is exactly as that way decides.
fn direct<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    const NUL_ESCAPE: &[u8] = br"\u0000";
    if bytes.windows(NUL_ESCAPE.len()).any(|w| w == NUL_ESCAPE) {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

/// Decodes an enriched order (topic `dds_service`).
pub fn enriched_order(bytes: &[u8]) -> Result<EnrichedOrder, DecodeError> {
    if let Some(order) = direct::<EnrichedOrder>(bytes) {
        if order.object_type == ORDER_OBJECT_TYPE {
            return Ok(order);
        }
    }
    let document = document(bytes)?;
    check_object_type(&document, ORDER_OBJECT_TYPE)?;
    typed(document)
}

/// Decodes a counter event message (topic `cdm_service`): an array of events.
pub fn cdm_events(bytes: &[u8]) -> Result<Vec<CdmOrderEvent>, DecodeError> {
    if let Some(events) = direct::<Vec<CdmOrderEvent>>(bytes) {
        if events.iter().all(|e| e.object_type == CDM_OBJECT_TYPE) {
            return Ok(events);
        }
    }
    let document = document(bytes)?;
    let events: Vec<CdmOrderEvent> = typed(document)?;
    if let Some(event) = events.iter().find(|e| e.object_type != CDM_OBJECT_TYPE) {
        return Err(DecodeError::WrongObjectType {
            expected: CDM_OBJECT_TYPE,
            found: event.object_type.clone(),
        });
    }
    Ok(events)
}

/// Decodes a user dictionary entry.
pub fn user(bytes: &[u8]) -> Result<User, DecodeError> {
    typed(document(bytes)?)
}

/// Decodes a restaurant dictionary entry.
pub fn restaurant(bytes: &[u8]) -> Result<Restaurant, DecodeError> {
    typed(document(bytes)?)
}

fn check_object_type(document: &Value, expected: &'static str) -> Result<(), DecodeError> {
    match document.get("object_type") {
        Some(Value::String(found)) if found == expected => Ok(()),
        Some(Value::String(found)) => Err(DecodeError::WrongObjectType {
            expected,
            found: found.clone(),
        }),
        Some(other) => Err(DecodeError::Field {
            path: "object_type".to_owned(),
            message: format!("expected a string, found {other}"),
        }),
        None if document.is_object() => Err(DecodeError::Field {
            path: "object_type".to_owned(),
            message: "missing field `object_type`".to_owned(),
        }),
        None => Err(DecodeError::Field {
            path: "(root)".to_owned(),
            message: "expected a JSON object".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = include_str!("../tests/data/order_naive_ts.json");
    const ENRICHED: &str = include_str!("../tests/data/dds_message.json");

    #[test]
    fn the_direct_way_decodes_as_the_careful_way() {
        let careful: EnrichedOrder =
            typed(document(ENRICHED.as_bytes()).expect("doc")).expect("typed");
        assert_eq!(
            direct::<EnrichedOrder>(ENRICHED.as_bytes()),
            Some(careful.clone())
        );
        assert_eq!(enriched_order(ENRICHED.as_bytes()), Ok(careful));
        let order = enriched_order(ENRICHED.as_bytes()).expect("order");
        let events = serde_json::to_vec(&crate::events::cdm_events(&order)).expect("events");
        let careful: Vec<CdmOrderEvent> = typed(document(&events).expect("doc")).expect("typed");
        assert_eq!(direct::<Vec<CdmOrderEvent>>(&events), Some(careful.clone()));
        assert_eq!(cdm_events(&events), Ok(careful));
        // A raw order: the same order, and its payload's text is the message's own.
        let careful: RawOrder = typed(document(ORDER.as_bytes()).expect("doc")).expect("typed");
        let order = raw_order(ORDER.as_bytes()).expect("raw order");
        assert_eq!(order.order, careful);
        let sent: Value = serde_json::from_str(ORDER).expect("json");
        assert_eq!(order.payload_document(), sent["payload"]);
        assert!(
            ORDER.contains(order.payload.get()),
            "{}",
            order.payload.get()
        );
    }

    #[test]
    fn what_the_direct_way_declines_the_careful_way_decides() {
        // A NUL character, escaped: declined, then rejected with its path.
        let nul = ENRICHED.replacen("\"order\"", "\"or\\u0000der\"", 1);
        assert_eq!(direct::<EnrichedOrder>(nul.as_bytes()), None);
        assert_eq!(
            enriched_order(nul.as_bytes()).expect_err("NUL").kind(),
            "nul_character"
        );
        // A wrapped document and a duplicate key: declined, then accepted as before.
        let wrapped = serde_json::to_string(ENRICHED).expect("wrap");
        assert_eq!(direct::<EnrichedOrder>(wrapped.as_bytes()), None);
        assert!(enriched_order(wrapped.as_bytes()).is_ok());
        let duplicate = ENRICHED.replacen('{', "{\"object_type\": \"x\",", 1);
        assert_eq!(direct::<EnrichedOrder>(duplicate.as_bytes()), None);
        assert_eq!(
            enriched_order(duplicate.as_bytes()).map(|o| o.object_type),
            Ok("order".to_owned())
        );
        // Another object type: decoded directly, then refused the careful way.
        let other = ENRICHED.replacen("\"order\"", "\"payment\"", 1);
        assert_eq!(
            enriched_order(other.as_bytes()).expect_err("type").kind(),
            "wrong_object_type"
        );
    }

    #[test]
    fn a_json_string_containing_the_document_decodes_like_the_document() {
        let wrapped = serde_json::to_string(ORDER).expect("wrap");
        let direct = raw_order(ORDER.as_bytes()).expect("direct");
        let unwrapped = raw_order(wrapped.as_bytes()).expect("wrapped");
        assert_eq!(direct, unwrapped);
    }

    #[test]
    fn invalid_json_is_a_syntax_error() {
        let err = raw_order(b"{\"object_id\": ").expect_err("must fail");
        assert_eq!(err.kind(), "invalid_json");
    }

    #[test]
    fn empty_messages_are_rejected_as_empty() {
        assert_eq!(raw_order(b"  ").expect_err("must fail"), DecodeError::Empty);
    }

    #[test]
    fn a_missing_field_names_its_path() {
        let mut doc: Value = serde_json::from_str(ORDER).expect("json");
        doc["payload"]
            .as_object_mut()
            .expect("payload")
            .remove("update_ts");
        let err = raw_order(doc.to_string().as_bytes()).expect_err("must fail");
        match err {
            DecodeError::Field { path, message } => {
                assert_eq!(path, "payload");
                assert!(message.contains("update_ts"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_mistyped_nested_field_names_its_path() {
        let mut doc: Value = serde_json::from_str(ORDER).expect("json");
        doc["payload"]["order_items"][1]["quantity"] = Value::String("two".into());
        let err = raw_order(doc.to_string().as_bytes()).expect_err("must fail");
        match err {
            DecodeError::Field { path, .. } => assert_eq!(path, "payload.order_items[1].quantity"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_bad_timestamp_names_its_path() {
        let mut doc: Value = serde_json::from_str(ORDER).expect("json");
        doc["payload"]["update_ts"] = Value::String("soon".into());
        let err = raw_order(doc.to_string().as_bytes()).expect_err("must fail");
        assert!(err.to_string().contains("payload.update_ts"), "{err}");
    }

    #[test]
    fn a_non_order_object_type_is_rejected() {
        let mut doc: Value = serde_json::from_str(ORDER).expect("json");
        doc["object_type"] = Value::String("payment".into());
        let err = raw_order(doc.to_string().as_bytes()).expect_err("must fail");
        assert_eq!(
            err,
            DecodeError::WrongObjectType {
                expected: "order",
                found: "payment".into()
            }
        );
    }

    #[test]
    fn a_nul_character_anywhere_is_rejected_with_its_path() {
        let mut doc: Value = serde_json::from_str(ORDER).expect("json");
        doc["payload"]["order_items"][0]["name"] = Value::String("bad\0name".into());
        let err = raw_order(doc.to_string().as_bytes()).expect_err("must fail");
        assert_eq!(
            err,
            DecodeError::NulCharacter {
                path: "payload.order_items[0].name".into()
            }
        );
    }

    #[test]
    fn a_document_with_a_long_number_serializes_back_to_itself() {
        // Found by fuzzing: the number read back was a different double than the one written.
        let text = b"411111111111111111111111111111111111111111111111111110011111111";
        let first = document(text).expect("a number is a document");
        let wire = serde_json::to_string(&first).expect("serialize");
        assert_eq!(document(wire.as_bytes()).expect("again"), first, "{wire}");
    }

    #[test]
    fn a_json_array_is_not_an_order() {
        let err = raw_order(b"[1,2]").expect_err("must fail");
        assert_eq!(err.kind(), "invalid_field");
    }
}
