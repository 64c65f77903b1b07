//! User tags (docs/contract.md §6), kept by service-cdm in three places:
//!
//! - **per batch** ([`settle_batch`]): in the batch's transaction, right after the counters,
//!   every (user, rule) whose counter the batch changed is settled with
//!   [`vault_core::tags::decide`];
//! - **per rule edit** ([`watch_rules`]): every second the rules (`cdm.tag_rules`) are compared
//!   with the rules the tags reflect (`cdm.tag_rules_applied`); a changed rule's users are
//!   settled in short chunks, in user order, each chunk its own transaction;
//! - **the outbox** ([`relay_events`]): every grant and revoke is written to
//!   `cdm.user_tag_events` in the transaction that made it, and published from there to the
//!   tags topic, so only committed changes are ever published.
//!
//! The two writers never disagree (docs/architecture.md, "Tags"): a batch takes `SHARE` on
//! `cdm.tag_rules` before it reads the rules, so a rule edit (`ROW EXCLUSIVE`) waits for the
//! batches in flight and every later batch sees the new rule; a recompute chunk takes
//! `SHARE ROW EXCLUSIVE`, which conflicts with both, so it runs between batches and sees every
//! counter committed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::sql_types::{Array, BigInt, Bool, Integer, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;
use uuid::Uuid;
use vault_core::counter::Deltas;
use vault_core::tags::{decide, event_id, Rule, Scope, TagChange, TagEventKind, TagEventMessage};
use vault_core::HashKey;
use vault_runtime::{publish, OutMessage, PgPool, Status};

/// How often the rules are compared with the applied ones.
pub const RULES_POLL: Duration = Duration::from_secs(1);
/// Users settled per recompute transaction: small enough that batches wait milliseconds, not
/// seconds, for a chunk.
pub const RECOMPUTE_CHUNK: i64 = 5_000;
/// How often the outbox is checked when it was found empty.
pub const RELAY_POLL: Duration = Duration::from_millis(500);
/// Events published per outbox transaction.
const RELAY_BATCH: i64 = 1_000;
/// The advisory lock that lets one relay at a time publish, so a user's events keep their order
/// when several replicas run.
const RELAY_LOCK: i64 = 0x7661_756c_7461_6773;

/// The rules as stored, and why one is not usable.
#[derive(QueryableByName, Debug, Clone, PartialEq, Eq)]
struct RuleRow {
    #[diesel(sql_type = Text)]
    tag: String,
    #[diesel(sql_type = Text)]
    scope: String,
    #[diesel(sql_type = Text)]
    target: String,
    #[diesel(sql_type = Integer)]
    threshold: i32,
}

impl RuleRow {
    /// The row as a rule. The table's constraints check what [`Rule::new`] checks, so this
    /// fails only on a schema that drifted; such a row is logged and left out.
    fn rule(&self) -> Option<Rule> {
        match Rule::parse(
            self.tag.clone(),
            &self.scope,
            self.target.clone(),
            i64::from(self.threshold),
        ) {
            Ok(rule) => Some(rule),
            Err(error) => {
                tracing::error!(tag = %self.tag, %error, "Ignoring a tag rule that is not valid.");
                None
            }
        }
    }
}

/// The enabled rules, as they stand for this transaction.
async fn enabled_rules(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<Rule>> {
    let rows: Vec<RuleRow> = diesel::sql_query(
        "SELECT tag, scope, target, threshold FROM cdm.tag_rules WHERE enabled ORDER BY tag",
    )
    .load(conn)
    .await?;
    Ok(rows.iter().filter_map(RuleRow::rule).collect())
}

/// One change of one user's tag, decided and about to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    user: HashKey,
    tag: String,
    change: TagChange,
    order_cnt: i64,
}

impl Change {
    /// What [`decide`] makes of one (user, tag), given the tags `held` of the chunk or batch;
    /// `None` when nothing changes.
    fn decided(
        user: HashKey,
        tag: &str,
        threshold: Option<i32>,
        order_cnt: i64,
        held: &BTreeMap<(HashKey, String), i64>,
    ) -> Option<Self> {
        let current = held.get(&(user, tag.to_owned())).copied();
        let change = decide(threshold, order_cnt, current);
        (change != TagChange::Unchanged).then(|| Change {
            user,
            tag: tag.to_owned(),
            change,
            order_cnt,
        })
    }
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

#[derive(QueryableByName)]
struct Held {
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
    #[diesel(sql_type = Text)]
    tag: String,
    #[diesel(sql_type = Integer)]
    order_cnt: i32,
}

fn counter_table(scope: Scope) -> (&'static str, &'static str) {
    match scope {
        Scope::Category => ("cdm.user_category_counters", "category_id"),
        Scope::Product => ("cdm.user_product_counters", "product_id"),
    }
}

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
    diesel::sql_query("LOCK TABLE cdm.tag_rules IN SHARE MODE")
        .execute(conn)
        .await?;
    let rules = enabled_rules(conn).await?;
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
        let (table, key) = counter_table(scope);
        let (users, keys): (Vec<Uuid>, Vec<Uuid>) = wanted
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
        for row in rows {
            counts.insert(
                (
                    scope,
                    HashKey::from_uuid(row.user_id),
                    HashKey::from_uuid(row.key),
                ),
                i64::from(row.order_cnt),
            );
        }
    }
    let held = lock_held(
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
    write_changes(conn, changes).await
}

/// Locks the `cdm.user_tags` rows of `pairs` that exist and returns their counts.
async fn lock_held<'a>(
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
async fn write_changes(
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

// ---------------------------------------------------------------------------------------------
// Rule edits.

#[derive(QueryableByName)]
struct AppliedRow {
    #[diesel(sql_type = Text)]
    tag: String,
    #[diesel(sql_type = Text)]
    scope: String,
    #[diesel(sql_type = Text)]
    target: String,
    #[diesel(sql_type = Integer)]
    threshold: i32,
}

/// The tags whose enabled rule differs from the rule the tags were last recomputed for (a new,
/// edited, disabled or deleted rule).
async fn pending_rules(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<String>> {
    let wanted: BTreeMap<String, (String, String, i32)> =
        diesel::sql_query("SELECT tag, scope, target, threshold FROM cdm.tag_rules WHERE enabled")
            .load::<RuleRow>(conn)
            .await?
            .into_iter()
            .map(|r| (r.tag, (r.scope, r.target, r.threshold)))
            .collect();
    let applied: BTreeMap<String, (String, String, i32)> =
        diesel::sql_query("SELECT tag, scope, target, threshold FROM cdm.tag_rules_applied")
            .load::<AppliedRow>(conn)
            .await?
            .into_iter()
            .map(|r| (r.tag, (r.scope, r.target, r.threshold)))
            .collect();
    let tags: BTreeSet<&String> = wanted.keys().chain(applied.keys()).collect();
    Ok(tags
        .into_iter()
        .filter(|tag| wanted.get(*tag) != applied.get(*tag))
        .cloned()
        .collect())
}

#[derive(QueryableByName)]
struct Candidate {
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
}

#[derive(QueryableByName)]
struct UserCount {
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
    #[diesel(sql_type = Integer)]
    order_cnt: i32,
}

/// What one recompute did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recomputed {
    pub users: i64,
    pub chunks: u64,
    pub took: Duration,
}

/// Recomputes `tag` for every user it concerns, in chunks of `chunk` users, each chunk its own
/// short transaction; then records the rule as it stood at the first chunk as applied. If the
/// rule changed meanwhile, the next [`pending_rules`] finds it again and a new pass starts.
pub async fn recompute(pool: &PgPool, tag: &str, chunk: i64) -> anyhow::Result<Recomputed> {
    let started = Instant::now();
    let mut done = Recomputed::default();
    let mut after: Option<Uuid> = None;
    // The rule at the first chunk: `Some(None)` once read and absent.
    let mut first: Option<Option<Rule>> = None;
    loop {
        let mut conn = pool.get().await?;
        let step = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                diesel::sql_query("LOCK TABLE cdm.tag_rules IN SHARE ROW EXCLUSIVE MODE")
                    .execute(conn)
                    .await?;
                let rule = enabled_rules(conn)
                    .await?
                    .into_iter()
                    .find(|rule| rule.tag == tag);
                let first = first.get_or_insert_with(|| rule.clone()).clone();
                let candidates = candidates(conn, tag, rule.as_ref(), after, chunk).await?;
                let Some(last) = candidates.last().copied() else {
                    record_applied(conn, tag, first.as_ref(), &done, started).await?;
                    return Ok(None);
                };
                let counts: BTreeMap<Uuid, i64> = match &rule {
                    Some(rule) => {
                        let (table, key) = counter_table(rule.scope);
                        diesel::sql_query(format!(
                            "SELECT user_id, order_cnt FROM {table} \
                             WHERE {key} = $1 AND user_id = ANY($2)"
                        ))
                        .bind::<SqlUuid, _>(rule.target_key().as_uuid())
                        .bind::<Array<SqlUuid>, _>(&candidates)
                        .load::<UserCount>(conn)
                        .await?
                        .into_iter()
                        .map(|row| (row.user_id, i64::from(row.order_cnt)))
                        .collect()
                    }
                    None => BTreeMap::new(),
                };
                let held = lock_held(
                    conn,
                    candidates
                        .iter()
                        .map(|user| (HashKey::from_uuid(*user), tag)),
                )
                .await?;
                let changes = candidates
                    .iter()
                    .filter_map(|user| {
                        let user = HashKey::from_uuid(*user);
                        let count = counts.get(&user.as_uuid()).copied().unwrap_or(0);
                        let threshold = rule.as_ref().map(|r| r.threshold);
                        Change::decided(user, tag, threshold, count, &held)
                    })
                    .collect();
                write_changes(conn, changes).await?;
                Ok(Some((last, candidates.len() as i64)))
            })
            .await?;
        match step {
            Some((last, users)) => {
                after = Some(last);
                done.users += users;
                done.chunks += 1;
            }
            None => break,
        }
    }
    done.took = started.elapsed();
    Ok(done)
}

/// The next `limit` users after `after`, in user order, who hold `tag` or whose counter on the
/// rule's target reaches its threshold.
async fn candidates(
    conn: &mut AsyncPgConnection,
    tag: &str,
    rule: Option<&Rule>,
    after: Option<Uuid>,
    limit: i64,
) -> diesel::QueryResult<Vec<Uuid>> {
    let after = after.unwrap_or(Uuid::nil());
    let rows: Vec<Candidate> = match rule {
        Some(rule) => {
            let (table, key) = counter_table(rule.scope);
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

/// Records the rule the tags now reflect (or forgets a rule that is gone), with how long the
/// recompute took and how many users it settled.
async fn record_applied(
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

/// Watches the rules until `stop`: every [`RULES_POLL`] recomputes each rule that differs from
/// the one applied. An error (Postgres down) is logged and retried at the next poll.
/// Its failures reach `/health` and `vaultline_component_failing` under this name.
pub async fn watch_rules(
    pool: PgPool,
    status: Arc<Status>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    const COMPONENT: &str = "tag_rule_watcher";
    loop {
        match recompute_pending(&pool, &stop).await {
            Ok(()) => status.component_ok(COMPONENT),
            Err(error) => {
                let cause = format!("cannot recompute tag rules: {error:#}");
                tracing::warn!(error = %cause, "Cannot recompute tag rules yet; retrying.");
                status.component_failed(COMPONENT, cause);
            }
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
            () = tokio::time::sleep(RULES_POLL) => {}
        }
    }
}

async fn recompute_pending(pool: &PgPool, stop: &watch::Receiver<bool>) -> anyhow::Result<()> {
    let pending = {
        let mut conn = pool.get().await?;
        pending_rules(&mut conn).await?
    };
    for tag in pending {
        if *stop.borrow() {
            break;
        }
        let done = recompute(pool, &tag, RECOMPUTE_CHUNK).await?;
        tracing::info!(tag = %tag, users = done.users, chunks = done.chunks, took = ?done.took,
            "Recomputed a tag rule.");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The outbox.

#[derive(QueryableByName)]
struct EventRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
    #[diesel(sql_type = Text)]
    tag: String,
    #[diesel(sql_type = Integer)]
    seq: i32,
    #[diesel(sql_type = Integer)]
    order_cnt: i32,
    #[diesel(sql_type = Timestamptz)]
    at: chrono::DateTime<chrono::Utc>,
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// Publishes the outbox's unpublished events to `topic` until `stop`, oldest first, keyed by
/// user, and marks them published in the transaction that read them, after the broker
/// acknowledged them: at least once, each with its deterministic id. One relay publishes at a
/// time (an advisory lock), so a user's events keep their order.
pub async fn relay_events(
    pool: PgPool,
    producer: FutureProducer,
    topic: String,
    status: Arc<Status>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    const COMPONENT: &str = "tag_outbox";
    loop {
        let published = match relay_once(&pool, &producer, &topic).await {
            Ok(published) => {
                status.component_ok(COMPONENT);
                published
            }
            Err(error) => {
                let cause = format!("cannot publish tag events: {error:#}");
                tracing::warn!(error = %cause, "Cannot publish tag events yet; retrying.");
                status.component_failed(COMPONENT, cause);
                0
            }
        };
        if published < RELAY_BATCH as usize {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
                () = tokio::time::sleep(RELAY_POLL) => {}
            }
        } else if *stop.borrow() {
            return Ok(());
        }
    }
}

/// One outbox transaction; returns how many events it published.
pub async fn relay_once(
    pool: &PgPool,
    producer: &FutureProducer,
    topic: &str,
) -> anyhow::Result<usize> {
    let mut conn = pool.get().await?;
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        let lock: Locked = diesel::sql_query(format!(
            "SELECT pg_try_advisory_xact_lock({RELAY_LOCK}) AS locked"
        ))
        .get_result(conn)
        .await?;
        if !lock.locked {
            return Ok(0);
        }
        let rows: Vec<EventRow> = diesel::sql_query(
            "SELECT id, user_id, tag, seq, order_cnt, at FROM cdm.user_tag_events \
             WHERE published_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind::<BigInt, _>(RELAY_BATCH)
        .load(conn)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let messages = rows
            .iter()
            .map(|row| {
                let user = HashKey::from_uuid(row.user_id);
                let message = TagEventMessage::new(
                    user,
                    &row.tag,
                    row.seq,
                    i64::from(row.order_cnt),
                    row.at.to_rfc3339(),
                );
                Ok(OutMessage {
                    key: user.to_string(),
                    payload: serde_json::to_vec(&message)?,
                    timestamp: Some(row.at.timestamp_millis()),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        publish(producer, topic, &messages).await?;
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        diesel::sql_query("UPDATE cdm.user_tag_events SET published_at = now() WHERE id = ANY($1)")
            .bind::<Array<BigInt>, _>(ids)
            .execute(conn)
            .await?;
        Ok(rows.len())
    })
    .await
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
