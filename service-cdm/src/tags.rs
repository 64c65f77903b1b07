//! User tags (docs/contract.md §6), kept by service-cdm in three places:
//!
//! - **per batch** ([`settle_batch`], `settle.rs`): in the batch's transaction, right after the
//!   counters, every (user, rule) whose counter the batch changed is settled with
//!   [`vault_core::tags::decide`];
//! - **per rule edit** ([`watch_rules`], `recompute.rs`): every second the rules
//!   (`cdm.tag_rules`) that the tags do not reflect (`cdm.v_tag_rule_status`) are found; a
//!   changed rule's users are settled in short chunks, in user order, each chunk its own
//!   transaction;
//! - **the outbox** ([`relay_events`], `outbox.rs`): every grant and revoke is written to
//!   `cdm.user_tag_events` in the transaction that made it, and published from there to the
//!   tags topic, so only committed changes are ever published.
//!
//! Their SQL, and the row types it reads, are in `store.rs`.
//!
//! The two writers never disagree (docs/architecture.md, "Tags"): a batch takes `SHARE` on
//! `cdm.tag_rules` before it reads the rules, so a rule edit (`ROW EXCLUSIVE`) waits for the
//! batches in flight and every later batch sees the new rule; a recompute chunk takes
//! `SHARE ROW EXCLUSIVE`, which conflicts with both, so it runs between batches and sees every
//! counter committed.

use std::collections::BTreeMap;

use vault_core::tags::{decide, TagChange};
use vault_core::HashKey;

mod outbox;
mod recompute;
mod settle;
pub mod store;

pub use outbox::{relay_events, relay_once, RELAY_POLL};
pub use recompute::{recompute, watch_rules, Recomputed, RECOMPUTE_CHUNK, RULES_POLL};
pub use settle::settle_batch;

/// The probe's share of the tags: a grant of a made-up tag to the probe's made-up user,
/// written as a batch writes its changes (the tag held, its outbox event, and the event's id
/// from the outbox's sequence, the one sequence a batch draws from); the probe's transaction
/// rolls it back.
pub async fn probe_grant(
    conn: &mut diesel_async::AsyncPgConnection,
    user: HashKey,
    tag: &str,
) -> diesel::QueryResult<()> {
    store::write_changes(
        conn,
        vec![Change {
            user,
            tag: tag.to_owned(),
            change: TagChange::Granted,
            order_cnt: 1,
        }],
    )
    .await
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
