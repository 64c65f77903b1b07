//! The counter invariant (docs/contract.md §3.3): `order_cnt` is the number of distinct orders of the user
//! with that product (or category) whose *latest known* status is CLOSED, after any mix of
//! duplicates, replays, restarts, crashes and reordered versions.
//!
//! Unit tests pin the transitions by hand; property tests drive the [`Ledger`] with hostile
//! delivery sequences and compare it after every step with [`spec_counts`], a model of
//! docs/contract.md §3.3 written here from the versions delivered so far. The model shares nothing with
//! `vault_core::counter` (not its transition, not its `recount`), so a bug there cannot hide
//! by being on both sides of the comparison.

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use proptest::prelude::*;
use proptest::sample::Index;
use vault_core::contract::{
    Amount, EnrichedOrder, EnrichedPayload, EnrichedProduct, OrderStatus, RestaurantRef, UserRef,
};
use vault_core::counter::{recount, transition, Deltas, Ledger, OrderVersion, Transition};
use vault_core::{decode, events, EntityId, HashKey, OrderId, Timestamp};

use OrderStatus::{Cancelled, Closed, Cooking, Delivering, Open};

// ---------------------------------------------------------------------------------------------
// Helpers for hand-written cases.

fn ts(seconds: i64) -> Timestamp {
    Timestamp::from_datetime(DateTime::from_timestamp(1_690_000_000 + seconds, 0).expect("valid"))
}

fn k(name: &str) -> HashKey {
    HashKey::of(name)
}

/// A version of `order` by `user` at `at`, with `(product, category)` pairs.
fn version(
    order: &str,
    user: &str,
    at: i64,
    status: OrderStatus,
    items: &[(&str, &str)],
) -> OrderVersion {
    OrderVersion {
        order: k(order),
        user: k(user),
        version: ts(at),
        status,
        products: items.iter().map(|(p, _)| (k(p), (*p).to_owned())).collect(),
        categories: items.iter().map(|(_, c)| (k(c), (*c).to_owned())).collect(),
    }
}

type Counts<'a> = &'a [((&'a str, &'a str), i64)];

/// Deltas written out by hand: `((user, product), n)` and `((user, category), n)`.
fn deltas(products: Counts<'_>, categories: Counts<'_>) -> Deltas {
    let map = |entries: Counts<'_>| {
        entries
            .iter()
            .map(|((u, x), n)| ((k(u), k(x)), *n))
            .collect::<BTreeMap<_, _>>()
    };
    Deltas {
        products: map(products),
        categories: map(categories),
    }
}

/// `user`'s counters for one closed order with a pie (category pastry).
fn one_pie(user: &str) -> Deltas {
    deltas(&[((user, "pie"), 1)], &[((user, "pastry"), 1)])
}

/// Offering `v` changes no counter (the ledger may still remember the version).
fn assert_no_delta(ledger: &mut Ledger, v: &OrderVersion) {
    let deltas = ledger.offer(v);
    assert!(deltas.is_empty(), "{v:?} gave {deltas:?}");
}

/// Offering `v` changes nothing at all: the version is stale.
fn assert_stale(ledger: &mut Ledger, v: &OrderVersion) {
    let before = ledger.clone();
    assert_no_delta(ledger, v);
    assert_eq!(*ledger, before);
}

// ---------------------------------------------------------------------------------------------
// Unit tests: one transition at a time.

#[test]
fn a_first_closed_version_counts_one_per_product_and_one_per_category() {
    let items = [("khachapuri", "pastry"), ("mors", "drinks")];
    let v = version("o1", "u1", 0, Closed, &items);
    let expected = deltas(
        &[(("u1", "khachapuri"), 1), (("u1", "mors"), 1)],
        &[(("u1", "pastry"), 1), (("u1", "drinks"), 1)],
    );
    let mut ledger = Ledger::default();
    assert_eq!(ledger.offer(&v), expected);
    assert_eq!(ledger.counters, expected);
}

#[test]
fn two_dishes_of_one_category_count_once_for_the_category() {
    let v = version(
        "o1",
        "u1",
        0,
        Closed,
        &[("khachapuri", "pastry"), ("pie", "pastry")],
    );
    let expected = deltas(
        &[(("u1", "khachapuri"), 1), (("u1", "pie"), 1)],
        &[(("u1", "pastry"), 1)],
    );
    assert_eq!(Ledger::default().offer(&v), expected);
}

#[test]
fn closed_then_cancelled_gives_exactly_the_negative_deltas() {
    let items = [
        ("khachapuri", "pastry"),
        ("pie", "pastry"),
        ("mors", "drinks"),
    ];
    let mut ledger = Ledger::default();
    let counted = ledger.offer(&version("o1", "u1", 0, Closed, &items));
    let retracted = ledger.offer(&version("o1", "u1", 10, Cancelled, &items));
    let expected = deltas(
        &[
            (("u1", "khachapuri"), -1),
            (("u1", "pie"), -1),
            (("u1", "mors"), -1),
        ],
        &[(("u1", "pastry"), -1), (("u1", "drinks"), -1)],
    );
    assert_eq!(retracted, expected);
    let mut net = counted;
    net.merge(&retracted);
    assert!(net.is_empty(), "{net:?}");
    assert!(ledger.counters.is_empty(), "{:?}", ledger.counters);
}

#[test]
fn a_duplicate_version_is_stale() {
    let v = version("o1", "u1", 5, Closed, &[("pie", "pastry")]);
    let state = v.state();
    assert_eq!(transition(Some(&state), &v), Transition::Stale);

    let mut ledger = Ledger::default();
    ledger.offer(&v);
    assert_stale(&mut ledger, &v);
}

#[test]
fn an_older_version_is_stale_and_does_not_retract() {
    let newer = version("o1", "u1", 10, Closed, &[("pie", "pastry")]);
    let older = version("o1", "u1", 5, Cancelled, &[("pie", "pastry")]);
    assert_eq!(transition(Some(&newer.state()), &older), Transition::Stale);

    let mut ledger = Ledger::default();
    ledger.offer(&newer);
    assert_stale(&mut ledger, &older);
    assert_eq!(ledger.counters, one_pie("u1"));
}

#[test]
fn a_version_with_the_same_update_ts_but_other_content_is_stale() {
    let first = version("o1", "u1", 10, Open, &[("pie", "pastry")]);
    let same_ts = version("o1", "u1", 10, Closed, &[("pie", "pastry")]);
    assert_eq!(
        transition(Some(&first.state()), &same_ts),
        Transition::Stale
    );
}

#[test]
fn open_then_closed_counts_once() {
    let items = [("pie", "pastry")];
    let mut ledger = Ledger::default();
    for (at, status) in [(0, Open), (1, Cooking), (2, Delivering)] {
        assert_no_delta(&mut ledger, &version("o1", "u1", at, status, &items));
    }
    assert_eq!(
        ledger.offer(&version("o1", "u1", 3, Closed, &items)),
        one_pie("u1")
    );
    assert_eq!(ledger.counters, one_pie("u1"));
}

#[test]
fn a_newer_closed_version_with_the_same_content_nets_to_no_delta() {
    let items = [("pie", "pastry"), ("mors", "drinks")];
    let first = version("o1", "u1", 0, Closed, &items);
    let again = version("o1", "u1", 7, Closed, &items);
    match transition(Some(&first.state()), &again) {
        Transition::Applied { state, deltas } => {
            assert!(deltas.is_empty(), "{deltas:?}");
            assert_eq!(state.version, ts(7), "the newer version is remembered");
        }
        Transition::Stale => panic!("a newer version is not stale"),
    }

    let mut ledger = Ledger::default();
    ledger.offer(&first);
    let counters = ledger.counters.clone();
    assert!(ledger.offer(&again).is_empty());
    assert_eq!(ledger.counters, counters);
    assert_eq!(ledger.states[&k("o1")].version, ts(7));
}

#[test]
fn a_newer_version_that_changes_the_user_moves_the_counts() {
    let items = [("pie", "pastry")];
    let mut ledger = Ledger::default();
    ledger.offer(&version("o1", "u1", 0, Closed, &items));
    let moved = ledger.offer(&version("o1", "u2", 1, Closed, &items));
    assert_eq!(
        moved,
        deltas(
            &[(("u1", "pie"), -1), (("u2", "pie"), 1)],
            &[(("u1", "pastry"), -1), (("u2", "pastry"), 1)],
        )
    );
    assert_eq!(ledger.counters, one_pie("u2"));
}

#[test]
fn a_newer_version_that_changes_the_products_moves_the_counts() {
    let before = [("pie", "pastry"), ("mors", "drinks")];
    let after = [("pie", "pastry"), ("tea", "drinks")];
    let mut ledger = Ledger::default();
    ledger.offer(&version("o1", "u1", 0, Closed, &before));
    let moved = ledger.offer(&version("o1", "u1", 1, Closed, &after));
    assert_eq!(
        moved,
        deltas(&[(("u1", "mors"), -1), (("u1", "tea"), 1)], &[])
    );
}

#[test]
fn cancelled_then_a_newer_closed_version_counts() {
    let items = [("pie", "pastry")];
    let mut ledger = Ledger::default();
    assert_no_delta(&mut ledger, &version("o1", "u1", 0, Cancelled, &items));
    let closed = version("o1", "u1", 1, Closed, &items);
    assert_eq!(ledger.offer(&closed), one_pie("u1"));
}

#[test]
fn distinct_orders_of_one_user_count_separately() {
    let pie = [("pie", "pastry")];
    let pie_and_bun = [("pie", "pastry"), ("bun", "pastry")];
    // u1's counters: pies, buns, pastry.
    let counts = |pies, buns, pastries| {
        deltas(
            &[(("u1", "pie"), pies), (("u1", "bun"), buns)],
            &[(("u1", "pastry"), pastries)],
        )
    };
    let mut ledger = Ledger::default();
    ledger.offer(&version("o1", "u1", 0, Closed, &pie));
    ledger.offer(&version("o2", "u1", 0, Closed, &pie_and_bun));
    assert_eq!(ledger.counters, counts(2, 1, 2));
    ledger.offer(&version("o1", "u1", 1, Cancelled, &pie));
    assert_eq!(ledger.counters, counts(1, 1, 1));
}

#[test]
fn recount_takes_only_the_latest_version_of_each_order() {
    let items = [("pie", "pastry")];
    let versions = [
        version("o1", "u1", 5, Cancelled, &items),
        version("o1", "u1", 1, Closed, &items),
        version("o2", "u1", 0, Open, &items),
        version("o2", "u1", 3, Closed, &items),
    ];
    assert_eq!(recount(&versions), one_pie("u1"));
}

// ---------------------------------------------------------------------------------------------
// Property tests: hostile delivery sequences.

const USERS: [&str; 3] = [
    "626a81ce9a8cd1920641e296",
    "626a81ce9a8cd1920641e297",
    "626a81ce9a8cd1920641e298",
];
const PRODUCTS: [&str; 5] = [
    "c5b64c8ba71adb08ce4bf7bc",
    "1b3e42939c414bc1ea69e2fe",
    "165b4812b4334fdbeaeca3a3",
    "2f0e7a1c9b8d4e6f5a4b3c2d",
    "aaaaaaaaaaaaaaaaaaaaaaaa",
];
/// The empty name is a real category (docs/contract.md §2.2).
const CATEGORIES: [&str; 3] = ["Выпечка", "Напитки", ""];

fn entity(id: &str) -> EntityId {
    EntityId::parse(id).expect("valid entity id")
}

fn status() -> impl Strategy<Value = OrderStatus> {
    prop::sample::select(vec![Open, Cooking, Delivering, Closed, Cancelled])
}

/// One version's content: the user (index), status and products (indices, repeats allowed).
fn version_content() -> impl Strategy<Value = (usize, OrderStatus, Vec<usize>)> {
    (
        0..USERS.len(),
        status(),
        proptest::collection::vec(0..PRODUCTS.len(), 1..4),
    )
}

/// A handful of orders, each with several versions at distinct `update_ts`, as enriched orders
/// (what service-dds produces). Product categories come from a per-case menu, so categories
/// collide across products; a version may move the order to another user.
fn orders() -> impl Strategy<Value = Vec<EnrichedOrder>> {
    orders_at(
        proptest::collection::btree_set(0i64..1_000_000_000, 1..5)
            .prop_map(|set| set.into_iter().collect())
            .boxed(),
    )
}

/// As [`orders`], but versions of one order often share an `update_ts`.
fn orders_with_ties() -> impl Strategy<Value = Vec<EnrichedOrder>> {
    orders_at(proptest::collection::vec(0i64..3, 1..5).boxed())
}

/// Orders whose versions are at the `update_ts` offsets `offsets` draws, one list per order.
fn orders_at(offsets: BoxedStrategy<Vec<i64>>) -> impl Strategy<Value = Vec<EnrichedOrder>> {
    let menu = proptest::collection::vec(0..CATEGORIES.len(), PRODUCTS.len());
    let order = (
        offsets,
        proptest::collection::vec(version_content(), 4),
        any::<Index>(),
    );
    (menu, proptest::collection::vec(order, 1..6)).prop_map(|(menu, orders)| {
        let mut versions = Vec::new();
        for (n, (offsets, contents, user)) in orders.into_iter().enumerate() {
            let base_user = user.index(USERS.len());
            for (offset, (user_override, status, items)) in offsets.into_iter().zip(contents) {
                // Mostly one user per order; sometimes a version moves it.
                let user = if user_override == 0 {
                    (base_user + 1) % USERS.len()
                } else {
                    base_user
                };
                versions.push(enriched(n as i64 + 1, user, offset, status, &items, &menu));
            }
        }
        versions
    })
}

fn enriched(
    id: i64,
    user: usize,
    micros: i64,
    status: OrderStatus,
    items: &[usize],
    menu: &[usize],
) -> EnrichedOrder {
    let at = Timestamp::from_datetime(
        DateTime::from_timestamp_micros(1_690_000_000_000_000 + micros).expect("valid"),
    );
    EnrichedOrder {
        object_id: OrderId(id),
        object_type: "order".to_owned(),
        payload: EnrichedPayload {
            id: OrderId(id),
            date: at,
            cost: Amount::from_i64(100),
            payment: Amount::from_i64(100),
            status,
            update_ts: at,
            restaurant: RestaurantRef {
                id: entity("a51e4e31ae4602047ec52534"),
                name: "Пекарня у дома".to_owned(),
            },
            user: UserRef {
                id: entity(USERS[user]),
                name: format!("user {user}"),
                login: format!("login{user}"),
            },
            products: items
                .iter()
                .map(|&p| EnrichedProduct {
                    id: entity(PRODUCTS[p]),
                    price: Amount::from_i64(10),
                    quantity: 1,
                    name: format!("dish {p}"),
                    category: CATEGORIES[menu[p]].to_owned(),
                })
                .collect(),
        },
    }
}

/// The order version as the datamart sees it, derived here independently of `events`.
fn direct(order: &EnrichedOrder) -> OrderVersion {
    let p = &order.payload;
    OrderVersion {
        order: HashKey::of(&p.id.0.to_string()),
        user: HashKey::of(p.user.id.as_str()),
        version: p.update_ts,
        status: p.status,
        products: p
            .products
            .iter()
            .map(|x| (HashKey::of(x.id.as_str()), x.name.clone()))
            .collect(),
        categories: p
            .products
            .iter()
            .map(|x| (HashKey::of(&x.category), x.category.clone()))
            .collect(),
    }
}

/// The order version as service-cdm sees it: through the JSON counter message on the wire.
fn through_the_wire(order: &EnrichedOrder) -> OrderVersion {
    let message = serde_json::to_vec(&events::cdm_events(order)).expect("events serialize");
    let decoded = decode::cdm_events(&message).expect("events decode");
    events::order_version(&decoded).expect("one order version")
}

/// A delivery: every version at least once, shuffled, with duplicates inserted anywhere.
fn delivery() -> impl Strategy<Value = (Vec<OrderVersion>, Vec<usize>)> {
    deliver(orders().boxed())
}

/// As [`delivery`], with versions of one order sharing an `update_ts`.
fn delivery_with_ties() -> impl Strategy<Value = (Vec<OrderVersion>, Vec<usize>)> {
    deliver(orders_with_ties().boxed())
}

fn deliver(
    orders: BoxedStrategy<Vec<EnrichedOrder>>,
) -> impl Strategy<Value = (Vec<OrderVersion>, Vec<usize>)> {
    orders.prop_flat_map(|orders| {
        let versions: Vec<OrderVersion> = orders.iter().map(direct).collect();
        let n = versions.len();
        let shuffled = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
        let duplicates = proptest::collection::vec((any::<Index>(), any::<Index>()), 0..12);
        (Just(versions), shuffled, duplicates).prop_map(|(versions, mut sequence, duplicates)| {
            for (at, which) in duplicates {
                let at = at.index(sequence.len() + 1);
                let which = which.index(versions.len());
                sequence.insert(at, which);
            }
            (versions, sequence)
        })
    })
}

/// The counters and what was seen, checked against the model after each delivered version.
#[derive(Debug, Clone, Default)]
struct Datamart {
    ledger: Ledger,
    /// What a database would hold: the sum of the deltas `offer` returned.
    applied: Deltas,
    /// Every version delivered so far, in delivery order (the model's input).
    seen: Vec<OrderVersion>,
}

impl Datamart {
    fn deliver(&mut self, version: &OrderVersion) -> Result<Deltas, TestCaseError> {
        let deltas = self.ledger.offer(version);
        prop_assert!(
            deltas.products.values().all(|d| *d != 0)
                && deltas.categories.values().all(|d| *d != 0),
            "zero deltas are never present: {:?}",
            deltas
        );
        self.applied.merge(&deltas);
        self.seen.push(version.clone());
        self.check()?;
        Ok(deltas)
    }

    /// Delivers `versions[i]` for each `i` of `sequence`, in that order; the deltas of each.
    fn deliver_all(
        &mut self,
        versions: &[OrderVersion],
        sequence: &[usize],
    ) -> Result<Vec<Deltas>, TestCaseError> {
        sequence
            .iter()
            .map(|&i| self.deliver(&versions[i]))
            .collect()
    }

    /// Delivers the sequence again: every version is a replay and changes no counter.
    fn replay(
        &mut self,
        versions: &[OrderVersion],
        sequence: &[usize],
    ) -> Result<(), TestCaseError> {
        for deltas in self.deliver_all(versions, sequence)? {
            prop_assert!(
                deltas.is_empty(),
                "a replayed version changed counters: {:?}",
                deltas
            );
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let expected = spec_counts(&self.seen);
        prop_assert_eq!(&self.ledger.counters, &expected);
        prop_assert_eq!(&self.applied, &expected);
        for (key, count) in self
            .ledger
            .counters
            .products
            .iter()
            .chain(&self.ledger.counters.categories)
        {
            prop_assert!(*count > 0, "counter {:?} is {}", key, count);
        }
        Ok(())
    }
}

/// Distinct orders whose latest version is CLOSED, per (user, product) and (user, category):
/// docs/contract.md §3.3 spelled out, independently of `recount` and `transition`. The latest version is
/// the one with the greatest `update_ts`; of two with the same `update_ts` the one delivered
/// first (earlier in `versions`) is the version.
fn spec_counts(versions: &[OrderVersion]) -> Deltas {
    let mut latest: BTreeMap<HashKey, &OrderVersion> = BTreeMap::new();
    for v in versions {
        if latest.get(&v.order).is_none_or(|l| v.version > l.version) {
            latest.insert(v.order, v);
        }
    }
    let mut products: BTreeMap<(HashKey, HashKey), BTreeSet<HashKey>> = BTreeMap::new();
    let mut categories: BTreeMap<(HashKey, HashKey), BTreeSet<HashKey>> = BTreeMap::new();
    for v in latest.values().filter(|v| v.status == Closed) {
        for p in v.products.keys() {
            products.entry((v.user, *p)).or_default().insert(v.order);
        }
        for c in v.categories.keys() {
            categories.entry((v.user, *c)).or_default().insert(v.order);
        }
    }
    let count = |m: BTreeMap<_, BTreeSet<HashKey>>| {
        m.into_iter()
            .map(|(key, orders)| (key, orders.len() as i64))
            .collect()
    };
    Deltas {
        products: count(products),
        categories: count(categories),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Reordered versions with duplicates, then the whole sequence again.
    #[test]
    fn counters_equal_the_model_after_every_step_of_a_shuffled_duplicated_replayed_delivery(
        (versions, sequence) in delivery()
    ) {
        let mut mart = Datamart::default();
        mart.deliver_all(&versions, &sequence)?;
        prop_assert_eq!(&mart.ledger.counters, &spec_counts(&versions));

        let after_first_pass = mart.ledger.clone();
        mart.replay(&versions, &sequence)?;
        prop_assert_eq!(&mart.ledger, &after_first_pass);
    }

    /// Versions of one order that share an `update_ts` (a producer resending a version with
    /// other content): the first delivered is the version, whatever comes later.
    #[test]
    fn with_equal_update_ts_the_first_delivered_version_wins_at_every_step(
        (versions, sequence) in delivery_with_ties()
    ) {
        let mut mart = Datamart::default();
        mart.deliver_all(&versions, &sequence)?;
        mart.replay(&versions, &sequence)?;
    }

    /// Every order of delivery of the same versions ends in the same state.
    #[test]
    fn the_final_state_does_not_depend_on_the_delivery_order(
        (versions, sequence) in delivery()
    ) {
        let mut shuffled = Ledger::default();
        for &i in &sequence {
            shuffled.offer(&versions[i]);
        }
        let mut in_order = Ledger::default();
        let mut sorted = versions.clone();
        sorted.sort_by_key(|v| v.version);
        for v in &sorted {
            in_order.offer(v);
        }
        prop_assert_eq!(shuffled, in_order);
    }

    /// At-least-once delivery with crashes: the process applies versions up to some point,
    /// the database keeps what was committed up to an earlier point, and the consumer resumes
    /// from a committed offset at or before that, redelivering what follows.
    #[test]
    fn counters_equal_the_model_after_every_step_across_crashes_and_redelivery(
        (versions, sequence) in delivery(),
        crashes in proptest::collection::vec((any::<Index>(), any::<Index>(), any::<Index>()), 1..4),
    ) {
        let mut mart = Datamart::default();
        let mut next = 0;
        for (run, durable, resume) in crashes {
            // Deliver up to `stop`, remembering the state after each step.
            let stop = next + run.index(sequence.len() - next + 1);
            let mut snapshots = vec![mart.clone()];
            for &i in &sequence[next..stop] {
                mart.deliver(&versions[i])?;
                snapshots.push(mart.clone());
            }
            // Crash: the database keeps a prefix of this run; offsets lag behind the database.
            let kept = durable.index(snapshots.len());
            mart = snapshots.swap_remove(kept);
            mart.check()?;
            let committed = next + kept;
            next = resume.index(committed + 1);
        }
        mart.deliver_all(&versions, &sequence[next..])?;

        let mut once = Ledger::default();
        for v in &versions {
            once.offer(v);
        }
        prop_assert_eq!(&mart.ledger, &once);
        prop_assert_eq!(&mart.ledger.counters, &spec_counts(&versions));
    }

    /// The CDM wire form (events → JSON → decode → fold) describes the same order version as
    /// the enriched order, so counting through it gives the same counters.
    #[test]
    fn counting_through_the_cdm_wire_form_equals_counting_directly(
        orders in orders(),
        order_of_delivery in any::<Vec<Index>>(),
    ) {
        let mut event_ids = BTreeSet::new();
        let mut event_count = 0;
        for order in &orders {
            prop_assert_eq!(through_the_wire(order), direct(order));
            for event in events::cdm_events(order) {
                event_ids.insert(event.object_id);
                event_count += 1;
            }
        }
        prop_assert_eq!(event_ids.len(), event_count, "event ids are unique");

        let mut wire = Ledger::default();
        let mut plain = Ledger::default();
        for index in &order_of_delivery {
            let order = &orders[index.index(orders.len())];
            let wire_deltas = wire.offer(&through_the_wire(order));
            let plain_deltas = plain.offer(&direct(order));
            prop_assert_eq!(wire_deltas, plain_deltas);
        }
        for order in &orders {
            wire.offer(&through_the_wire(order));
            plain.offer(&direct(order));
        }
        prop_assert_eq!(&wire, &plain);
        let all: Vec<OrderVersion> = orders.iter().map(direct).collect();
        prop_assert_eq!(&wire.counters, &spec_counts(&all));
    }

    /// The wire form of a version is deterministic: a replay produces identical bytes.
    #[test]
    fn a_replayed_counter_message_is_byte_identical(orders in orders()) {
        for order in &orders {
            let first = serde_json::to_vec(&events::cdm_events(order)).expect("serialize");
            let again = serde_json::to_vec(&events::cdm_events(&order.clone())).expect("serialize");
            prop_assert_eq!(first, again);
        }
    }
}
