//! Tags per rule edit: every [`RULES_POLL`] the rules the tags do not reflect are found, and
//! each one's users are settled in short chunks, in user order, each chunk its own
//! transaction; then the rule is recorded as applied.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::AsyncConnection;
use tokio::sync::watch;
use uuid::Uuid;
use vault_core::tags::Rule;
use vault_core::HashKey;
use vault_runtime::{PgPool, Status};

use super::{store, Change};

/// How often the rules are compared with the applied ones.
pub const RULES_POLL: Duration = Duration::from_secs(1);
/// Users settled per recompute transaction: small enough that batches wait milliseconds, not
/// seconds, for a chunk.
pub const RECOMPUTE_CHUNK: i64 = 5_000;

/// What one recompute did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recomputed {
    pub users: i64,
    pub chunks: u64,
    pub took: Duration,
}

/// Recomputes `tag` for every user it concerns, in chunks of `chunk` users, each chunk its own
/// short transaction; then records the rule as it stood at the first chunk as applied. If the
/// rule changed meanwhile, the next look for pending rules finds it again and a new pass starts.
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
                store::lock_rules_for_recompute(conn).await?;
                let rule = store::enabled_rules(conn)
                    .await?
                    .into_iter()
                    .find(|rule| rule.tag == tag);
                let first = first.get_or_insert_with(|| rule.clone()).clone();
                let candidates = store::candidates(conn, tag, rule.as_ref(), after, chunk).await?;
                let Some(last) = candidates.last().copied() else {
                    store::record_applied(conn, tag, first.as_ref(), &done, started).await?;
                    return Ok(None);
                };
                let counts: BTreeMap<Uuid, i64> = match &rule {
                    Some(rule) => store::target_counts(conn, rule, &candidates).await?,
                    None => BTreeMap::new(),
                };
                let held = store::lock_held(
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
                store::write_changes(conn, changes).await?;
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
        store::pending_rules(&mut conn).await?
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
