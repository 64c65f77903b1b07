//! Typed wire contracts (docs/contract.md §2): every message and dictionary entry Vaultline reads or writes.
//!
//! A value that deserialized into one of these types is valid: scalars are newtypes that check
//! their form while parsing ([`Timestamp`], [`Amount`], [`EntityId`], [`OrderId`]). The topics
//! they travel on and the consumer groups that read them have their default names in [`topics`].

mod cdm;
mod dictionary;
mod enriched;
mod header;
mod raw;
mod scalar;
pub mod topics;

pub use cdm::{CdmOrderEvent, CdmPayload, CDM_OBJECT_TYPE};
pub use dictionary::{MenuItem, Restaurant, User};
pub use enriched::{EnrichedOrder, EnrichedPayload, EnrichedProduct, RestaurantRef, UserRef};
pub use header::{decode_sent_ms, encode_sent_ms, SENT_MS_HEADER};
pub use raw::{EntityRef, OrderItem, RawOrder, RawPayload, StatusChange, ORDER_OBJECT_TYPE};
pub use scalar::{Amount, EntityId, OrderId, OrderStatus, ScalarError, Timestamp};
