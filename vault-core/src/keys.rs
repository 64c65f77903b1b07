//! Data Vault hash keys and hashdiffs (docs/contract.md §3.1), compatible with the Python reference.
//!
//! A hub key is a UUID version 3 (MD5) in the X.500 namespace over the business key as text;
//! a link key is the same over `"<hub key 1>_<hub key 2>"`; a hashdiff is the same over the
//! JSON array of a satellite's descriptive columns (JSON so that no two column lists share
//! a text form).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::contract::{EntityId, OrderId};

/// A Data Vault hash key (hub, link or hashdiff).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HashKey(Uuid);

impl HashKey {
    /// The key of a business key given as text.
    pub fn of(business_key: &str) -> Self {
        Self(Uuid::new_v3(&Uuid::NAMESPACE_X500, business_key.as_bytes()))
    }

    /// The key of a link between two hub keys, in the column order of the link's name.
    pub fn link(first: HashKey, second: HashKey) -> Self {
        Self::of(&format!("{}_{}", first.0, second.0))
    }

    /// The key of a link between three hub keys (`"<key 1>_<key 2>_<key 3>"`), in the column
    /// order of the link's name, as for two.
    pub fn link3(first: HashKey, second: HashKey, third: HashKey) -> Self {
        Self::of(&format!("{}_{}_{}", first.0, second.0, third.0))
    }

    /// The hashdiff of a satellite's descriptive columns.
    pub fn hashdiff(columns: &[&str]) -> Self {
        // Serializing a slice of strings cannot fail.
        let text = serde_json::to_string(columns).unwrap_or_default();
        Self::of(&text)
    }

    pub fn order(id: OrderId) -> Self {
        Self::of(&id.0.to_string())
    }

    pub fn user(id: &EntityId) -> Self {
        Self::of(id.as_str())
    }

    pub fn product(id: &EntityId) -> Self {
        Self::of(id.as_str())
    }

    pub fn restaurant(id: &EntityId) -> Self {
        Self::of(id.as_str())
    }

    /// Categories have no id of their own: the business key is the category name.
    pub fn category(name: &str) -> Self {
        Self::of(name)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for HashKey {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::entity;

    #[test]
    fn hub_keys_reproduce_the_spec_test_vectors() {
        let cases = [
            (
                HashKey::order(OrderId(2301365)),
                "55993f56-f356-3556-b280-96f5bbcaee7f",
            ),
            (
                HashKey::user(&entity("626a81ce9a8cd1920641e296")),
                "a9e6edc4-db91-3f11-a278-f773f3273ae0",
            ),
            (
                HashKey::product(&entity("c5b64c8ba71adb08ce4bf7bc")),
                "82667bef-ab83-3961-bb99-60ee9b3cdbb9",
            ),
            (
                HashKey::category("Выпечка"),
                "11a15ec4-37ae-3363-878f-c9a2cd7249b5",
            ),
            (
                HashKey::category(""),
                "7aaf118c-f174-3eba-9ec5-680cd791a020",
            ),
            (
                HashKey::restaurant(&entity("a51e4e31ae4602047ec52534")),
                "5b0c89a1-11ff-3c8f-aea3-4556b92218af",
            ),
        ];
        for (key, expected) in cases {
            assert_eq!(key.to_string(), expected);
        }
    }

    #[test]
    fn link_keys_reproduce_the_spec_test_vector() {
        let order = HashKey::order(OrderId(2301365));
        let user = HashKey::user(&entity("626a81ce9a8cd1920641e296"));
        assert_eq!(
            HashKey::link(order, user).to_string(),
            "2f850c51-7844-30e6-9702-d7a16f68b27a"
        );
    }

    #[test]
    fn hashdiffs_tell_column_boundaries_apart() {
        assert_ne!(
            HashKey::hashdiff(&["a_b", "c"]),
            HashKey::hashdiff(&["a", "b_c"])
        );
        assert_eq!(
            HashKey::hashdiff(&["x", "y"]),
            HashKey::hashdiff(&["x", "y"])
        );
    }

    #[test]
    fn hash_keys_serialize_as_lower_case_hyphenated_uuids() {
        let key = HashKey::category("");
        let json = serde_json::to_string(&key).expect("serialize");
        assert_eq!(json, "\"7aaf118c-f174-3eba-9ec5-680cd791a020\"");
        let back: HashKey = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, key);
    }
}
