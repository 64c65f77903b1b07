//! User tags (docs/contract.md §6.2): a user holds a tag exactly while the rule's counter is at
//! or above its threshold, however the versions arrive and however the rules change.
//!
//! The property tests drive the scheme service-cdm runs — the counter ledger per batch, tags
//! settled for the counters a batch changed ([`TagBook::on_counters`]) under the rules of that
//! moment, and a chunked recompute of each edited rule that runs some batches later, its chunks
//! interleaved with batches — through hostile deliveries (duplicates, reordering, replays) and
//! random rule edits. At the end the tags must equal [`spec_tags`], a model written here from
//! the versions delivered and the final rules: it shares nothing with `vault_core::counter` or
//! `vault_core::tags`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use proptest::prelude::*;
use vault_core::contract::OrderStatus;
use vault_core::counter::{Deltas, Ledger, OrderVersion};
use vault_core::tags::{Rule, Scope, TagBook, TagEventKind};
use vault_core::{HashKey, Timestamp};

const USERS: [&str; 3] = ["user-a", "user-b", "user-c"];
/// (product id, category): two pizzas, a roll, and a dish in the empty-named category.
const PRODUCTS: [(&str, &str); 4] = [
    ("00000000000000000000000a", "Пицца"),
    ("00000000000000000000000b", "Пицца"),
    ("00000000000000000000000c", "Роллы"),
    ("00000000000000000000000d", ""),
];
const TAGS: [&str; 3] = ["Pizza Lover", "Roll Fan", "Regular"];

fn ts(seconds: i64) -> Timestamp {
    Timestamp::from_datetime(DateTime::from_timestamp(1_690_000_000 + seconds, 0).expect("valid"))
}

/// A version of order `order` (its user is fixed by the order) at time `at`.
fn version(order: usize, at: i64, status: OrderStatus, dishes: &BTreeSet<usize>) -> OrderVersion {
    OrderVersion {
        order: HashKey::of(&format!("order-{order}")),
        user: HashKey::of(USERS[order % USERS.len()]),
        version: ts(at),
        status,
        products: dishes
            .iter()
            .map(|d| (HashKey::of(PRODUCTS[*d].0), PRODUCTS[*d].0.to_owned()))
            .collect(),
        categories: dishes
            .iter()
            .map(|d| (HashKey::category(PRODUCTS[*d].1), PRODUCTS[*d].1.to_owned()))
            .collect(),
    }
}

/// A rule's target: a category (by a dish's index) or a dish.
fn rule(tag: usize, by_product: bool, dish: usize, threshold: i64) -> Rule {
    let (product, category) = PRODUCTS[dish];
    if by_product {
        Rule::new(TAGS[tag], Scope::Product, product, threshold).expect("valid rule")
    } else {
        Rule::new(TAGS[tag], Scope::Category, category, threshold).expect("valid rule")
    }
}

/// §6.2 from scratch: for every order its newest version (ties: none is newer, keep the first
/// seen), counted when CLOSED; a user's count per product and per category is the number of
/// distinct counted orders with it; a tag is held when its rule's count reaches the threshold.
fn spec_tags(delivered: &[OrderVersion], rules: &[Rule]) -> BTreeMap<(HashKey, String), i64> {
    let mut newest: BTreeMap<HashKey, &OrderVersion> = BTreeMap::new();
    for v in delivered {
        match newest.get(&v.order) {
            Some(seen) if seen.version >= v.version => {}
            _ => {
                newest.insert(v.order, v);
            }
        }
    }
    let mut tags = BTreeMap::new();
    for rule in rules {
        let mut per_user: BTreeMap<HashKey, i64> = BTreeMap::new();
        for v in newest.values().filter(|v| v.status == OrderStatus::Closed) {
            let has = match rule.scope {
                Scope::Product => v.products.values().any(|id| *id == rule.target),
                Scope::Category => v.categories.values().any(|name| *name == rule.target),
            };
            if has {
                *per_user.entry(v.user).or_insert(0) += 1;
            }
        }
        for (user, count) in per_user {
            if count >= i64::from(rule.threshold) {
                tags.insert((user, rule.tag.clone()), count);
            }
        }
    }
    tags
}

#[derive(Debug, Clone)]
enum Step {
    /// Deliver these versions as one batch.
    Batch(Vec<OrderVersion>),
    /// Set (or with `None` delete) the rule of a tag.
    Edit(usize, Option<Rule>),
    /// Run one chunk of every recompute in progress.
    Chunk,
    /// Run every recompute in progress to its end.
    Settle,
}

fn status() -> impl Strategy<Value = OrderStatus> {
    prop_oneof![
        3 => Just(OrderStatus::Closed),
        2 => Just(OrderStatus::Cancelled),
        1 => Just(OrderStatus::Open),
    ]
}

fn a_version() -> impl Strategy<Value = OrderVersion> {
    (
        0..8usize,
        0..4i64,
        status(),
        proptest::collection::btree_set(0..PRODUCTS.len(), 0..3),
    )
        .prop_map(|(order, at, status, dishes)| version(order, at, status, &dishes))
}

fn a_rule(tag: usize) -> impl Strategy<Value = Rule> {
    (any::<bool>(), 0..PRODUCTS.len(), 1..4i64)
        .prop_map(move |(by_product, dish, threshold)| rule(tag, by_product, dish, threshold))
}

fn a_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => proptest::collection::vec(a_version(), 1..5).prop_map(Step::Batch),
        2 => (0..TAGS.len()).prop_flat_map(|tag| {
            proptest::option::weighted(0.8, a_rule(tag)).prop_map(move |rule| Step::Edit(tag, rule))
        }),
        2 => Just(Step::Chunk),
    ]
}

/// What a run ended with, and every moment it disagreed with the model.
struct Run {
    book: TagBook,
    delivered: Vec<OrderVersion>,
    rules: Vec<Rule>,
    /// After every step, a tag whose rule is not being recomputed must stand as the model
    /// says: this is where the per-batch path is held to the contract.
    mismatches: Vec<String>,
}

/// The tags of `tag` alone.
fn of_tag(tags: &BTreeMap<(HashKey, String), i64>, tag: &str) -> BTreeMap<HashKey, i64> {
    tags.iter()
        .filter(|((_, t), _)| t == tag)
        .map(|((user, _), count)| (*user, *count))
        .collect()
}

/// Runs the scheme step by step, checking it against the model after every step.
fn run(steps: &[Step], chunk: usize) -> Run {
    let mut ledger = Ledger::default();
    let mut book = TagBook::default();
    let mut rules: BTreeMap<usize, Rule> = BTreeMap::new();
    // Recomputes in progress: tag → where the next chunk starts.
    let mut passes: BTreeMap<usize, Option<HashKey>> = BTreeMap::new();
    let mut delivered = Vec::new();
    let mut mismatches = Vec::new();
    let chunk_of = |book: &mut TagBook,
                    rules: &BTreeMap<usize, Rule>,
                    ledger: &Ledger,
                    tag: usize,
                    after: Option<HashKey>| {
        book.recompute_chunk(TAGS[tag], rules.get(&tag), &ledger.counters, after, chunk)
    };
    for step in steps {
        match step {
            Step::Batch(versions) => {
                let mut deltas = Deltas::default();
                for v in versions {
                    deltas.merge(&ledger.offer(v));
                    delivered.push(v.clone());
                }
                let current: Vec<Rule> = rules.values().cloned().collect();
                book.on_counters(&current, &deltas, &ledger.counters);
            }
            Step::Edit(tag, rule) => {
                match rule {
                    Some(rule) => rules.insert(*tag, rule.clone()),
                    None => rules.remove(tag),
                };
                // A new pass starts over, as service-cdm starts one when the rule differs from
                // the one last applied.
                passes.insert(*tag, None);
            }
            Step::Settle => {
                for (tag, mut after) in std::mem::take(&mut passes) {
                    while let Some(last) = chunk_of(&mut book, &rules, &ledger, tag, after) {
                        after = Some(last);
                    }
                }
            }
            Step::Chunk => {
                let tags: Vec<usize> = passes.keys().copied().collect();
                for tag in tags {
                    match chunk_of(&mut book, &rules, &ledger, tag, passes[&tag]) {
                        Some(last) => {
                            passes.insert(tag, Some(last));
                        }
                        None => {
                            passes.remove(&tag);
                        }
                    }
                }
            }
        }
        let current: Vec<Rule> = rules.values().cloned().collect();
        let expected = spec_tags(&delivered, &current);
        for (tag, name) in TAGS.iter().enumerate() {
            if !passes.contains_key(&tag) && of_tag(&book.held, name) != of_tag(&expected, name) {
                mismatches.push(format!(
                    "after {step:?}: {name}: {:?} but the model says {:?}",
                    of_tag(&book.held, name),
                    of_tag(&expected, name)
                ));
            }
        }
    }
    for (tag, mut after) in passes {
        while let Some(last) = chunk_of(&mut book, &rules, &ledger, tag, after) {
            after = Some(last);
        }
    }
    Run {
        book,
        delivered,
        rules: rules.into_values().collect(),
        mismatches,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tags_equal_the_recount_after_any_delivery_and_rule_edits(
        steps in proptest::collection::vec(a_step(), 1..40),
        chunk in 1..3usize,
    ) {
        let run = run(&steps, chunk);
        prop_assert!(run.mismatches.is_empty(), "{:#?}", run.mismatches);
        prop_assert_eq!(&run.book.held, &spec_tags(&run.delivered, &run.rules));
    }

    #[test]
    fn replaying_everything_again_changes_no_tag_and_records_no_event(
        steps in proptest::collection::vec(a_step(), 1..30),
    ) {
        let first = run(&steps, 2);
        let mut again = steps.clone();
        // Settle every rule first, then deliver everything once more.
        again.push(Step::Settle);
        let settled = run(&again, 2);
        again.push(Step::Batch(first.delivered.clone()));
        let replayed = run(&again, 2);
        prop_assert!(replayed.mismatches.is_empty(), "{:#?}", replayed.mismatches);
        prop_assert_eq!(&replayed.book.held, &settled.book.held);
        prop_assert_eq!(replayed.book.events.len(), settled.book.events.len());
        prop_assert_eq!(&replayed.book.held, &spec_tags(&replayed_versions(&again), &first.rules));
    }

    #[test]
    fn each_users_events_alternate_from_a_grant_and_end_as_the_tag_stands(
        steps in proptest::collection::vec(a_step(), 1..40),
    ) {
        let book = run(&steps, 1).book;
        let mut last: BTreeMap<(HashKey, String), (i32, TagEventKind)> = BTreeMap::new();
        for event in &book.events {
            let key = (event.user, event.tag.clone());
            let previous = last.get(&key).map_or(0, |(seq, _)| *seq);
            prop_assert_eq!(event.seq, previous + 1, "seq of {:?}", key);
            prop_assert_eq!(event.kind, TagEventKind::of_seq(event.seq));
            last.insert(key, (event.seq, event.kind));
        }
        for (key, (_, kind)) in &last {
            prop_assert_eq!(*kind == TagEventKind::Granted, book.held.contains_key(key), "{:?}", key);
        }
        for key in book.held.keys() {
            prop_assert!(last.contains_key(key), "held without a grant: {:?}", key);
        }
    }
}

fn replayed_versions(steps: &[Step]) -> Vec<OrderVersion> {
    steps
        .iter()
        .filter_map(|step| match step {
            Step::Batch(versions) => Some(versions.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn cancelling_a_closed_order_takes_the_tag_away_and_closing_again_gives_it_back() {
    let pizza = BTreeSet::from([0]);
    let rules = [rule(0, false, 0, 2)];
    let steps = vec![
        Step::Edit(0, Some(rules[0].clone())),
        Step::Batch(vec![
            version(0, 1, OrderStatus::Closed, &pizza),
            version(3, 1, OrderStatus::Closed, &pizza),
        ]),
        Step::Batch(vec![version(3, 2, OrderStatus::Cancelled, &pizza)]),
        Step::Batch(vec![version(6, 1, OrderStatus::Closed, &pizza)]),
    ];
    let run = run(&steps, 10);
    assert!(run.mismatches.is_empty(), "{:#?}", run.mismatches);
    let book = run.book;
    let user = HashKey::of(USERS[0]);
    let kinds: Vec<TagEventKind> = book.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            TagEventKind::Granted,
            TagEventKind::Revoked,
            TagEventKind::Granted
        ]
    );
    assert_eq!(book.held.get(&(user, TAGS[0].to_owned())), Some(&2));
}

#[test]
fn a_rule_added_after_the_orders_grants_through_the_recompute_alone() {
    let pizza = BTreeSet::from([0, 1]);
    let steps = vec![
        Step::Batch(vec![
            version(0, 1, OrderStatus::Closed, &pizza),
            version(3, 1, OrderStatus::Closed, &pizza),
            version(1, 1, OrderStatus::Closed, &pizza),
        ]),
        Step::Edit(0, Some(rule(0, false, 0, 2))),
    ];
    let book = run(&steps, 1).book;
    // user-a has two pizza orders (0 and 3), user-b one (order 1).
    let expected = BTreeMap::from([((HashKey::of(USERS[0]), TAGS[0].to_owned()), 2)]);
    assert_eq!(book.held, expected);
    assert_eq!(book.events.len(), 1);
}
