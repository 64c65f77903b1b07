//! The exact counter logic (docs/contract.md §3.3) as a pure state transition.
//!
//! `order_cnt` of (user, product) is the number of distinct orders of that user containing
//! that product whose *latest known* status is CLOSED; likewise per category, where an order
//! with two dishes of one category counts once. For each order the datamart keeps what it last
//! applied ([`OrderCountState`]); an incoming version either is not newer (duplicate, replay,
//! late arrival: nothing changes) or replaces the state, retracting what the old state counted
//! and counting what the new one does.

use std::collections::{BTreeMap, BTreeSet};

use crate::contract::{OrderStatus, Timestamp};
use crate::keys::HashKey;
use crate::version;

/// One version of one order as the datamart sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderVersion {
    pub order: HashKey,
    pub user: HashKey,
    /// The order's `update_ts`: versions are totally ordered by it.
    pub version: Timestamp,
    pub status: OrderStatus,
    /// Distinct products with their names.
    pub products: BTreeMap<HashKey, String>,
    /// Distinct categories with their names.
    pub categories: BTreeMap<HashKey, String>,
}

/// What the datamart remembers of an order: the latest applied version and what it counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCountState {
    pub version: Timestamp,
    pub user: HashKey,
    /// Whether this version is counted (its status is CLOSED).
    pub counted: bool,
    pub products: BTreeSet<HashKey>,
    pub categories: BTreeSet<HashKey>,
}

/// Net changes to the counters, keyed by (user, product) and (user, category). Zero deltas
/// are never present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deltas {
    pub products: BTreeMap<(HashKey, HashKey), i64>,
    pub categories: BTreeMap<(HashKey, HashKey), i64>,
}

impl Deltas {
    pub fn is_empty(&self) -> bool {
        self.products.is_empty() && self.categories.is_empty()
    }

    /// Adds `other` into `self`, dropping keys that net to zero.
    pub fn merge(&mut self, other: &Deltas) {
        merge_into(&mut self.products, &other.products);
        merge_into(&mut self.categories, &other.categories);
    }

    fn add(&mut self, state: &OrderCountState, sign: i64) {
        for product in &state.products {
            bump(&mut self.products, (state.user, *product), sign);
        }
        for category in &state.categories {
            bump(&mut self.categories, (state.user, *category), sign);
        }
    }
}

/// The outcome of offering a version to an order's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The version is not newer than what was applied: nothing changes.
    Stale,
    /// The version is newer: store `state` and apply `deltas`.
    Applied {
        state: OrderCountState,
        deltas: Deltas,
    },
}

impl OrderVersion {
    /// The state this version leaves behind once applied.
    pub fn state(&self) -> OrderCountState {
        OrderCountState {
            version: self.version,
            user: self.user,
            counted: self.status.counts(),
            products: self.products.keys().copied().collect(),
            categories: self.categories.keys().copied().collect(),
        }
    }
}

/// Offers `incoming` to an order whose current state is `current` (`None`: never seen).
pub fn transition(current: Option<&OrderCountState>, incoming: &OrderVersion) -> Transition {
    if !version::is_newer(incoming.version, current.map(|state| state.version)) {
        return Transition::Stale;
    }
    let state = incoming.state();
    let mut deltas = Deltas::default();
    if let Some(old) = current.filter(|old| old.counted) {
        deltas.add(old, -1);
    }
    if state.counted {
        deltas.add(&state, 1);
    }
    Transition::Applied { state, deltas }
}

/// Applies a sequence of versions of many orders in memory: a reference implementation of
/// what the datamart stores, used by tests and by tools that recount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    pub states: BTreeMap<HashKey, OrderCountState>,
    pub counters: Deltas,
}

impl Ledger {
    /// Offers one version; returns the deltas it caused (empty when stale).
    pub fn offer(&mut self, incoming: &OrderVersion) -> Deltas {
        match transition(self.states.get(&incoming.order), incoming) {
            Transition::Stale => Deltas::default(),
            Transition::Applied { state, deltas } => {
                self.states.insert(incoming.order, state);
                self.counters.merge(&deltas);
                deltas
            }
        }
    }
}

/// Recounts from scratch: for each order only its latest version matters.
pub fn recount<'a>(versions: impl IntoIterator<Item = &'a OrderVersion>) -> Deltas {
    let mut per_order: BTreeMap<HashKey, Vec<&OrderVersion>> = BTreeMap::new();
    for version in versions {
        per_order.entry(version.order).or_default().push(version);
    }
    let latest: Vec<&OrderVersion> = per_order
        .into_values()
        .filter_map(|versions| version::newest(versions, |v| v.version))
        .collect();
    let mut counters = Deltas::default();
    for version in latest.iter().filter(|v| v.status.counts()) {
        counters.add(&version.state(), 1);
    }
    counters
}

fn bump(map: &mut BTreeMap<(HashKey, HashKey), i64>, key: (HashKey, HashKey), delta: i64) {
    let value = map.entry(key).or_insert(0);
    *value += delta;
    if *value == 0 {
        map.remove(&key);
    }
}

fn merge_into(
    into: &mut BTreeMap<(HashKey, HashKey), i64>,
    from: &BTreeMap<(HashKey, HashKey), i64>,
) {
    for (key, delta) in from {
        bump(into, *key, *delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> HashKey {
        HashKey::of(name)
    }

    #[test]
    fn merging_opposite_deltas_leaves_no_zero_entries() {
        let mut total = Deltas::default();
        total.products.insert((key("u"), key("p")), 1);
        total.categories.insert((key("u"), key("c")), 2);
        let mut opposite = Deltas::default();
        opposite.products.insert((key("u"), key("p")), -1);
        opposite.categories.insert((key("u"), key("c")), -1);
        total.merge(&opposite);
        assert!(total.products.is_empty(), "{total:?}");
        assert_eq!(total.categories.get(&(key("u"), key("c"))), Some(&1));
        assert!(!total.is_empty());
    }

    #[test]
    fn only_a_closed_version_leaves_a_counted_state() {
        let at = Timestamp::parse("2023-08-05 06:28:54").expect("timestamp");
        for status in [
            OrderStatus::Open,
            OrderStatus::Cooking,
            OrderStatus::Delivering,
            OrderStatus::Closed,
            OrderStatus::Cancelled,
        ] {
            let version = OrderVersion {
                order: key("o"),
                user: key("u"),
                version: at,
                status,
                products: BTreeMap::from([(key("p"), "p".to_owned())]),
                categories: BTreeMap::from([(key("c"), "c".to_owned())]),
            };
            let state = version.state();
            assert_eq!(state.counted, status == OrderStatus::Closed, "{status}");
            assert_eq!(state.products, BTreeSet::from([key("p")]));
            assert_eq!(state.categories, BTreeSet::from([key("c")]));
        }
    }
}
