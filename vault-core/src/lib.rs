//! Vaultline's pure domain library.
//!
//! Everything Vaultline knows about orders lives here, free of I/O so that any Rust tool can
//! embed it: the wire contracts of docs/contract.md §2 ([`contract`]), decoding with precise errors
//! ([`decode`]), the Data Vault hash keys of docs/contract.md §3.1 ([`keys`]), the transformations from a
//! raw order to an enriched order ([`enrich`]), to Data Vault rows ([`vault`]) and to counter
//! events ([`events`]), the exact counter state transition of docs/contract.md §3.3 ([`counter`]), an order's point
//! in time for the read side ([`pit`]), and the one rule
//! that orders an order's versions ([`version`]).
//!
//! The crate deliberately depends on no runtime, broker, database or cache client; CI checks
//! that its dependency tree stays that way.

pub mod contract;
pub mod counter;
pub mod decode;
pub mod enrich;
pub mod events;
pub mod keys;
pub mod pit;
pub mod tags;
pub mod vault;
pub mod version;

pub use contract::{
    Amount, CdmOrderEvent, CdmPayload, EnrichedOrder, EntityId, OrderId, OrderStatus, RawOrder,
    Restaurant, Timestamp, User,
};
pub use decode::DecodeError;
pub use keys::HashKey;

/// Helpers the unit tests of several modules share.
#[cfg(test)]
mod test_support {
    use crate::EntityId;

    /// An entity id the test knows to be valid.
    pub(crate) fn entity(id: &str) -> EntityId {
        EntityId::parse(id).expect("valid entity id")
    }
}
