//! The tags' SQL, written once, with the row types it reads: the rules (`cdm.tag_rules`, one
//! row type, [`TagRule`], for the batches, the recompute, the read API and `vaultctl tags`),
//! whether the tags reflect them (`cdm.v_tag_rule_status`, the one definition of "applied"),
//! the tags held (`cdm.user_tags`), the rules they were last recomputed for
//! (`cdm.tag_rules_applied`) and the outbox (`cdm.user_tag_events`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use diesel::sql_types::{
    Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;
use vault_core::tags::{event_id, Rule, RuleError, RuleSpec, TagChange, TagEventKind};
use vault_core::HashKey;

use super::recompute::Recomputed;
use super::Change;
use crate::tables::CounterTable;

/// One row of `cdm.tag_rules`, as stored.
#[derive(QueryableByName, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct TagRule {
    #[diesel(sql_type = Text)]
    pub tag: String,
    #[diesel(sql_type = Text)]
    pub scope: String,
    #[diesel(sql_type = Text)]
    pub target: String,
    #[diesel(sql_type = Integer)]
    pub threshold: i32,
    #[diesel(sql_type = Text)]
    pub description: String,
    #[diesel(sql_type = Bool)]
    pub enabled: bool,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// The columns of [`TagRule`], for a `SELECT` of `cdm.tag_rules` or a view over it.
const TAG_RULE_COLUMNS: &str = "tag, scope, target, threshold, description, enabled, updated_at";

impl TagRule {
    /// The row as a rule. The table's constraints check what [`Rule::parse`] checks, so this
    /// fails only on a schema that drifted.
    pub fn rule(&self) -> Result<Rule, RuleError> {
        Rule::parse(
            self.tag.clone(),
            &self.scope,
            self.target.clone(),
            i64::from(self.threshold),
        )
    }

    /// The row as a rules file states it; `None` when it is not a valid rule.
    pub fn spec(&self) -> Option<RuleSpec> {
        Some(RuleSpec {
            rule: self.rule().ok()?,
            description: self.description.clone(),
            enabled: self.enabled,
        })
    }
}

/// A rule with whether the tags reflect it (a row of `cdm.v_tag_rule_status`).
#[derive(QueryableByName, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct RuleStatus {
    #[diesel(embed)]
    #[serde(flatten)]
    pub rule: TagRule,
    /// Whether `cdm.user_tags` reflects the rule as it is now (false while a recompute is due).
    #[diesel(sql_type = Bool)]
    pub applied: bool,
    /// When the rule was last recomputed.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub applied_at: Option<chrono::DateTime<chrono::Utc>>,
    /// How long the last recompute of the rule took, in milliseconds.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub took_ms: Option<i64>,
}

/// A rule's status with how many users hold the tag now, counted live.
#[derive(QueryableByName, Debug, Clone, PartialEq, Eq)]
pub struct HeldRule {
    #[diesel(embed)]
    pub status: RuleStatus,
    #[diesel(sql_type = BigInt)]
    pub holders: i64,
}

/// Every rule, by tag.
pub async fn rules(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<TagRule>> {
    diesel::sql_query(format!(
        "SELECT {TAG_RULE_COLUMNS} FROM cdm.tag_rules ORDER BY tag"
    ))
    .load(conn)
    .await
}

/// Every rule with whether it is applied, by tag.
pub async fn statuses(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<RuleStatus>> {
    diesel::sql_query(format!(
        "SELECT {TAG_RULE_COLUMNS}, applied, applied_at, took_ms \
         FROM cdm.v_tag_rule_status ORDER BY tag"
    ))
    .load(conn)
    .await
}

/// Every rule with whether it is applied and how many users hold it, by tag.
pub async fn held_rules(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<HeldRule>> {
    diesel::sql_query(format!(
        "SELECT {TAG_RULE_COLUMNS}, applied, applied_at, took_ms, holders \
         FROM cdm.v_tag_rule_status ORDER BY tag"
    ))
    .load(conn)
    .await
}

/// The enabled rules, as they stand for this transaction. A row that is not a valid rule is
/// logged and left out.
pub(super) async fn enabled_rules(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<Rule>> {
    let rows: Vec<TagRule> = diesel::sql_query(format!(
        "SELECT {TAG_RULE_COLUMNS} FROM cdm.tag_rules WHERE enabled ORDER BY tag"
    ))
    .load(conn)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|row| match row.rule() {
            Ok(rule) => Some(rule),
            Err(error) => {
                tracing::error!(tag = %row.tag, %error, "Ignoring a tag rule that is not valid.");
                None
            }
        })
        .collect())
}

/// Locks the rules for a batch: a rule edit then waits for it, and a recompute chunk runs
/// before or after it (see the module header of `tags`).
pub(super) async fn lock_rules_for_batch(conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
    diesel::sql_query("LOCK TABLE cdm.tag_rules IN SHARE MODE")
        .execute(conn)
        .await
        .map(drop)
}

/// Locks the rules for a recompute chunk, which then runs between batches.
pub(super) async fn lock_rules_for_recompute(
    conn: &mut AsyncPgConnection,
) -> diesel::QueryResult<()> {
    diesel::sql_query("LOCK TABLE cdm.tag_rules IN SHARE ROW EXCLUSIVE MODE")
        .execute(conn)
        .await
        .map(drop)
}

/// Writes `spec` as its tag's rule (an operator's write: the table refuses service-cdm's).
pub async fn put_rule(conn: &mut AsyncPgConnection, spec: &RuleSpec) -> diesel::QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO cdm.tag_rules (tag, scope, target, threshold, description, enabled) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tag) DO UPDATE SET scope = EXCLUDED.scope, \
             target = EXCLUDED.target, threshold = EXCLUDED.threshold, \
             description = EXCLUDED.description, enabled = EXCLUDED.enabled",
    )
    .bind::<Text, _>(&spec.rule.tag)
    .bind::<Text, _>(spec.rule.scope.as_str())
    .bind::<Text, _>(&spec.rule.target)
    .bind::<Integer, _>(spec.rule.threshold)
    .bind::<Text, _>(&spec.description)
    .bind::<Bool, _>(spec.enabled)
    .execute(conn)
    .await
    .map(drop)
}

/// Deletes the rule of `tag` (an operator's write).
pub async fn delete_rule(conn: &mut AsyncPgConnection, tag: &str) -> diesel::QueryResult<()> {
    diesel::sql_query("DELETE FROM cdm.tag_rules WHERE tag = $1")
        .bind::<Text, _>(tag)
        .execute(conn)
        .await
        .map(drop)
}

#[derive(QueryableByName)]
struct TagName {
    #[diesel(sql_type = Text)]
    tag: String,
}

/// The tags whose rule the tags do not reflect (a new, edited, disabled or deleted rule), in
/// tag order.
pub(super) async fn pending_rules(
    conn: &mut AsyncPgConnection,
) -> diesel::QueryResult<Vec<String>> {
    let tags: BTreeSet<String> = diesel::sql_query(
        "SELECT tag FROM cdm.v_tag_rule_status WHERE NOT applied \
         UNION \
         SELECT a.tag FROM cdm.tag_rules_applied a \
         WHERE NOT EXISTS (SELECT FROM cdm.tag_rules r WHERE r.tag = a.tag)",
    )
    .load::<TagName>(conn)
    .await?
    .into_iter()
    .map(|row| row.tag)
    .collect();
    Ok(tags.into_iter().collect())
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    key: Uuid,
    #[diesel(sql_type = Integer)]
    order_cnt: i32,
}

/// The counters of `pairs` (user, product or category) in `counters` that exist.
pub(super) async fn counts(
    conn: &mut AsyncPgConnection,
    counters: CounterTable,
    pairs: &BTreeSet<(HashKey, HashKey)>,
) -> diesel::QueryResult<Vec<(HashKey, HashKey, i64)>> {
    let CounterTable { table, key, .. } = counters;
    let (users, keys): (Vec<Uuid>, Vec<Uuid>) = pairs
        .iter()
        .map(|(user, key)| (user.as_uuid(), key.as_uuid()))
        .unzip();
    let rows: Vec<Count> = diesel::sql_query(format!(
        "SELECT c.user_id, c.{key} AS key, c.order_cnt FROM {table} c \
         JOIN unnest($1::uuid[], $2::uuid[]) AS x(u, k) ON c.user_id = x.u AND c.{key} = x.k"
    ))
    .bind::<Array<SqlUuid>, _>(users)
    .bind::<Array<SqlUuid>, _>(keys)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                HashKey::from_uuid(row.user_id),
                HashKey::from_uuid(row.key),
                i64::from(row.order_cnt),
            )
        })
        .collect())
}

#[derive(QueryableByName)]
struct UserCount {
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
    #[diesel(sql_type = Integer)]
    order_cnt: i32,
}

/// The counters of `users` on `rule`'s target that exist.
pub(super) async fn target_counts(
    conn: &mut AsyncPgConnection,
    rule: &Rule,
    users: &[Uuid],
) -> diesel::QueryResult<BTreeMap<Uuid, i64>> {
    let CounterTable { table, key, .. } = CounterTable::of(rule.scope);
    Ok(diesel::sql_query(format!(
        "SELECT user_id, order_cnt FROM {table} WHERE {key} = $1 AND user_id = ANY($2)"
    ))
    .bind::<SqlUuid, _>(rule.target_key().as_uuid())
    .bind::<Array<SqlUuid>, _>(users)
    .load::<UserCount>(conn)
    .await?
    .into_iter()
    .map(|row| (row.user_id, i64::from(row.order_cnt)))
    .collect())
}

#[derive(QueryableByName)]
struct Candidate {
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
}

/// The next `limit` users after `after`, in user order, who hold `tag` or whose counter on the
/// rule's target reaches its threshold.
pub(super) async fn candidates(
    conn: &mut AsyncPgConnection,
    tag: &str,
    rule: Option<&Rule>,
    after: Option<Uuid>,
    limit: i64,
) -> diesel::QueryResult<Vec<Uuid>> {
    let after = after.unwrap_or(Uuid::nil());
    let rows: Vec<Candidate> = match rule {
        Some(rule) => {
            let CounterTable { table, key, .. } = CounterTable::of(rule.scope);
            diesel::sql_query(format!(
                "SELECT user_id FROM ( \
                   (SELECT user_id FROM cdm.user_tags WHERE tag = $1 AND user_id > $2 \
                    ORDER BY user_id LIMIT $3) \
                   UNION \
                   (SELECT user_id FROM {table} WHERE {key} = $4 AND user_id > $2 \
                      AND order_cnt >= $5 ORDER BY user_id LIMIT $3) \
                 ) c ORDER BY user_id LIMIT $3"
            ))
            .bind::<Text, _>(tag)
            .bind::<SqlUuid, _>(after)
            .bind::<BigInt, _>(limit)
            .bind::<SqlUuid, _>(rule.target_key().as_uuid())
            .bind::<Integer, _>(rule.threshold)
            .load(conn)
            .await?
        }
        None => {
            diesel::sql_query(
                "SELECT user_id FROM cdm.user_tags WHERE tag = $1 AND user_id > $2 \
                 ORDER BY user_id LIMIT $3",
            )
            .bind::<Text, _>(tag)
            .bind::<SqlUuid, _>(after)
            .bind::<BigInt, _>(limit)
            .load(conn)
            .await?
        }
    };
    Ok(rows.into_iter().map(|row| row.user_id).collect())
}

#[derive(QueryableByName)]
struct Held {
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
    #[diesel(sql_type = Text)]
    tag: String,
    #[diesel(sql_type = Integer)]
    order_cnt: i32,
}

/// Locks the `cdm.user_tags` rows of `pairs` that exist and returns their counts.
pub(super) async fn lock_held<'a>(
    conn: &mut AsyncPgConnection,
    pairs: impl Iterator<Item = (HashKey, &'a str)>,
) -> diesel::QueryResult<BTreeMap<(HashKey, String), i64>> {
    let pairs: BTreeSet<(HashKey, &str)> = pairs.collect();
    let (users, tags): (Vec<Uuid>, Vec<&str>) = pairs
        .iter()
        .map(|(user, tag)| (user.as_uuid(), *tag))
        .unzip();
    let rows: Vec<Held> = diesel::sql_query(
        "SELECT t.user_id, t.tag, t.order_cnt FROM cdm.user_tags t \
         JOIN unnest($1::uuid[], $2::text[]) AS x(u, g) ON t.user_id = x.u AND t.tag = x.g \
         ORDER BY t.user_id, t.tag FOR UPDATE OF t",
    )
    .bind::<Array<SqlUuid>, _>(users)
    .bind::<Array<Text>, _>(tags)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                (HashKey::from_uuid(row.user_id), row.tag),
                i64::from(row.order_cnt),
            )
        })
        .collect())
}

#[derive(QueryableByName)]
struct LastSeq {
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
    #[diesel(sql_type = Text)]
    tag: String,
    #[diesel(sql_type = Integer)]
    seq: i32,
}

/// Writes decided changes: grants inserted, revokes deleted, recounts updated, and an outbox
/// event for every grant and revoke, numbered after the last one of that user's tag.
pub(super) async fn write_changes(
    conn: &mut AsyncPgConnection,
    changes: Vec<Change>,
) -> diesel::QueryResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let of = |wanted: TagChange| -> (Vec<Uuid>, Vec<String>, Vec<i32>) {
        let mut columns = (Vec::new(), Vec::new(), Vec::new());
        for change in changes.iter().filter(|c| c.change == wanted) {
            columns.0.push(change.user.as_uuid());
            columns.1.push(change.tag.clone());
            columns.2.push(clamp(change.order_cnt));
        }
        columns
    };
    let (users, tags, counts) = of(TagChange::Granted);
    if !users.is_empty() {
        diesel::sql_query(
            "INSERT INTO cdm.user_tags (user_id, tag, order_cnt) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[])",
        )
        .bind::<Array<SqlUuid>, _>(users)
        .bind::<Array<Text>, _>(tags)
        .bind::<Array<Integer>, _>(counts)
        .execute(conn)
        .await?;
    }
    let (users, tags, counts) = of(TagChange::Recounted);
    if !users.is_empty() {
        diesel::sql_query(
            "UPDATE cdm.user_tags t SET order_cnt = x.c, updated_at = now() \
             FROM unnest($1::uuid[], $2::text[], $3::int[]) AS x(u, g, c) \
             WHERE t.user_id = x.u AND t.tag = x.g",
        )
        .bind::<Array<SqlUuid>, _>(users)
        .bind::<Array<Text>, _>(tags)
        .bind::<Array<Integer>, _>(counts)
        .execute(conn)
        .await?;
    }
    let (users, tags, _) = of(TagChange::Revoked);
    if !users.is_empty() {
        diesel::sql_query(
            "DELETE FROM cdm.user_tags t USING unnest($1::uuid[], $2::text[]) AS x(u, g) \
             WHERE t.user_id = x.u AND t.tag = x.g",
        )
        .bind::<Array<SqlUuid>, _>(users)
        .bind::<Array<Text>, _>(tags)
        .execute(conn)
        .await?;
    }
    let events: Vec<&Change> = changes
        .iter()
        .filter(|c| matches!(c.change, TagChange::Granted | TagChange::Revoked))
        .collect();
    if events.is_empty() {
        return Ok(());
    }
    let (users, tags): (Vec<Uuid>, Vec<&str>) = events
        .iter()
        .map(|c| (c.user.as_uuid(), c.tag.as_str()))
        .unzip();
    let last: BTreeMap<(HashKey, String), i32> = diesel::sql_query(
        "SELECT e.user_id, e.tag, max(e.seq) AS seq FROM cdm.user_tag_events e \
         JOIN unnest($1::uuid[], $2::text[]) AS x(u, g) ON e.user_id = x.u AND e.tag = x.g \
         GROUP BY e.user_id, e.tag",
    )
    .bind::<Array<SqlUuid>, _>(users)
    .bind::<Array<Text>, _>(tags)
    .load::<LastSeq>(conn)
    .await?
    .into_iter()
    .map(|row| ((HashKey::from_uuid(row.user_id), row.tag), row.seq))
    .collect();
    let (mut ids, mut users, mut tags, mut seqs, mut kinds, mut counts) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for change in events {
        let kind = match change.change {
            TagChange::Granted => TagEventKind::Granted,
            _ => TagEventKind::Revoked,
        };
        let previous = last
            .get(&(change.user, change.tag.clone()))
            .copied()
            .unwrap_or(0);
        let seq = next_seq(previous, kind);
        ids.push(event_id(change.user, &change.tag, seq).as_uuid());
        users.push(change.user.as_uuid());
        tags.push(change.tag.as_str());
        seqs.push(seq);
        kinds.push(kind.as_str());
        counts.push(clamp(change.order_cnt));
    }
    diesel::sql_query(
        "INSERT INTO cdm.user_tag_events (event_id, user_id, tag, seq, event, order_cnt) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::text[], \
                              $6::int[])",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<SqlUuid>, _>(users)
    .bind::<Array<Text>, _>(tags)
    .bind::<Array<Integer>, _>(seqs)
    .bind::<Array<Text>, _>(kinds)
    .bind::<Array<Integer>, _>(counts)
    .execute(conn)
    .await
    .map(drop)
}

/// The number of the change after `previous`: the next one of the right parity (grants are
/// odd). Changes alternate, so that is `previous + 1`, unless someone edited `cdm.user_tags`
/// by hand and the tag's last event no longer matches it; then one number is left out, which
/// keeps every id deterministic and every event's kind readable from its number.
fn next_seq(previous: i32, kind: TagEventKind) -> i32 {
    if TagEventKind::of_seq(previous + 1) == kind {
        previous + 1
    } else {
        previous + 2
    }
}

fn clamp(count: i64) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// Records the rule the tags now reflect (or forgets a rule that is gone), with how long the
/// recompute took and how many users it settled.
pub(super) async fn record_applied(
    conn: &mut AsyncPgConnection,
    tag: &str,
    rule: Option<&Rule>,
    done: &Recomputed,
    started: Instant,
) -> diesel::QueryResult<()> {
    match rule {
        Some(rule) => diesel::sql_query(
            "INSERT INTO cdm.tag_rules_applied (tag, scope, target, threshold, took_ms, users) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tag) DO UPDATE SET scope = EXCLUDED.scope, target = EXCLUDED.target, \
                 threshold = EXCLUDED.threshold, applied_at = now(), \
                 took_ms = EXCLUDED.took_ms, users = EXCLUDED.users",
        )
        .bind::<Text, _>(tag)
        .bind::<Text, _>(rule.scope.as_str())
        .bind::<Text, _>(&rule.target)
        .bind::<Integer, _>(rule.threshold)
        .bind::<BigInt, _>(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX))
        .bind::<BigInt, _>(done.users)
        .execute(conn)
        .await
        .map(drop),
        None => diesel::sql_query("DELETE FROM cdm.tag_rules_applied WHERE tag = $1")
            .bind::<Text, _>(tag)
            .execute(conn)
            .await
            .map(drop),
    }
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// Takes the advisory lock `key` for this transaction, unless another session holds it.
pub(super) async fn try_lock(conn: &mut AsyncPgConnection, key: i64) -> diesel::QueryResult<bool> {
    let lock: Locked =
        diesel::sql_query(format!("SELECT pg_try_advisory_xact_lock({key}) AS locked"))
            .get_result(conn)
            .await?;
    Ok(lock.locked)
}

/// An event of the outbox.
#[derive(QueryableByName)]
pub(super) struct EventRow {
    #[diesel(sql_type = BigInt)]
    pub(super) id: i64,
    #[diesel(sql_type = SqlUuid)]
    pub(super) user_id: Uuid,
    #[diesel(sql_type = Text)]
    pub(super) tag: String,
    #[diesel(sql_type = Integer)]
    pub(super) seq: i32,
    #[diesel(sql_type = Integer)]
    pub(super) order_cnt: i32,
    #[diesel(sql_type = Timestamptz)]
    pub(super) at: chrono::DateTime<chrono::Utc>,
}

/// The oldest `limit` events not published yet.
pub(super) async fn unpublished(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> diesel::QueryResult<Vec<EventRow>> {
    diesel::sql_query(
        "SELECT id, user_id, tag, seq, order_cnt, at FROM cdm.user_tag_events \
         WHERE published_at IS NULL ORDER BY id LIMIT $1",
    )
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// Marks the events `ids` published.
pub(super) async fn mark_published(
    conn: &mut AsyncPgConnection,
    ids: Vec<i64>,
) -> diesel::QueryResult<()> {
    diesel::sql_query("UPDATE cdm.user_tag_events SET published_at = now() WHERE id = ANY($1)")
        .bind::<Array<BigInt>, _>(ids)
        .execute(conn)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_the_last_change_and_keep_their_parity() {
        assert_eq!(next_seq(0, TagEventKind::Granted), 1);
        assert_eq!(next_seq(1, TagEventKind::Revoked), 2);
        assert_eq!(next_seq(2, TagEventKind::Granted), 3);
        // A hand-deleted tag: the last event was a grant, the next change is a grant again.
        assert_eq!(next_seq(1, TagEventKind::Granted), 3);
        assert_eq!(next_seq(0, TagEventKind::Revoked), 2);
    }
}
