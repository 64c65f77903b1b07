//! Tags per batch: in the datamart batch's transaction, right after the counters, every
//! (user, rule) whose counter the batch changed is settled.

use std::collections::{BTreeMap, BTreeSet};

use diesel_async::AsyncPgConnection;
use vault_core::counter::Deltas;
use vault_core::tags::{Rule, Scope};
use vault_core::HashKey;

use super::{store, Change};
use crate::tables::CounterTable;

/// Settles, inside a datamart batch's transaction and after its counters were written, every
/// (user, rule) whose counter `deltas` changed.
pub async fn settle_batch(
    conn: &mut AsyncPgConnection,
    deltas: &Deltas,
) -> diesel::QueryResult<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    // Before reading the rules: a rule edit then waits for this batch, and a recompute chunk
    // runs before or after it, never beside it (see the module header).
    store::lock_rules_for_batch(conn).await?;
    let rules = store::enabled_rules(conn).await?;
    // (user, rule) pairs the batch concerns, per counter table.
    let mut pairs: Vec<(HashKey, &Rule)> = Vec::new();
    for rule in &rules {
        let changed = match rule.scope {
            Scope::Category => &deltas.categories,
            Scope::Product => &deltas.products,
        };
        let target = rule.target_key();
        pairs.extend(
            changed
                .keys()
                .filter(|(_, key)| *key == target)
                .map(|(user, _)| (*user, rule)),
        );
    }
    if pairs.is_empty() {
        return Ok(());
    }
    let mut counts: BTreeMap<(Scope, HashKey, HashKey), i64> = BTreeMap::new();
    for scope in [Scope::Category, Scope::Product] {
        let wanted: BTreeSet<(HashKey, HashKey)> = pairs
            .iter()
            .filter(|(_, rule)| rule.scope == scope)
            .map(|(user, rule)| (*user, rule.target_key()))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        for (user, key, count) in store::counts(conn, CounterTable::of(scope), &wanted).await? {
            counts.insert((scope, user, key), count);
        }
    }
    let held = store::lock_held(
        conn,
        pairs.iter().map(|(user, rule)| (*user, rule.tag.as_str())),
    )
    .await?;
    let changes = pairs
        .iter()
        .filter_map(|(user, rule)| {
            let count = counts
                .get(&(rule.scope, *user, rule.target_key()))
                .copied()
                .unwrap_or(0);
            Change::decided(*user, &rule.tag, Some(rule.threshold), count, &held)
        })
        .collect();
    store::write_changes(conn, changes).await
}
