//! Tag rules as a file (`vaultctl tags apply FILE`, docs/tags.md): the rules a file states,
//! compared with `cdm.tag_rules` and written in one transaction. service-cdm notices the change
//! within a second and recomputes the affected users (docs/contract.md §6.1).

use std::collections::BTreeMap;
use std::fmt;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use vault_core::tags::RuleSpec;

use crate::tags::store::{self, HeldRule, TagRule};

/// Every rule, by tag, with whether the tags reflect it and how many users hold it.
pub async fn list(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<HeldRule>> {
    store::held_rules(conn).await
}

/// What applying a file changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleChanges {
    pub added: Vec<RuleSpec>,
    pub changed: Vec<RuleSpec>,
    /// Tags stored but not in the file: deleted only with `prune`.
    pub removed: Vec<String>,
    pub prune: bool,
}

impl RuleChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && (self.removed.is_empty() || !self.prune)
    }
}

impl fmt::Display for RuleChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, sign: &str, spec: &RuleSpec| {
            writeln!(
                f,
                "{sign} {:?}: {} {:?} >= {}{}",
                spec.rule.tag,
                spec.rule.scope,
                spec.rule.target,
                spec.rule.threshold,
                if spec.enabled { "" } else { " (disabled)" }
            )
        };
        for spec in &self.added {
            line(f, "+", spec)?;
        }
        for spec in &self.changed {
            line(f, "~", spec)?;
        }
        for tag in &self.removed {
            if self.prune {
                writeln!(f, "- {tag:?}")?;
            } else {
                writeln!(f, "  {tag:?} is not in the file (kept; --prune deletes it)")?;
            }
        }
        if self.is_empty() {
            writeln!(f, "the rules already match the file")?;
        }
        Ok(())
    }
}

/// Compares `specs` with the stored rules and, unless `dry_run`, writes the difference in one
/// transaction.
pub async fn apply(
    conn: &mut AsyncPgConnection,
    specs: Vec<RuleSpec>,
    prune: bool,
    dry_run: bool,
) -> anyhow::Result<RuleChanges> {
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        let stored: BTreeMap<String, Option<RuleSpec>> = store::rules(conn)
            .await?
            .iter()
            .map(|row: &TagRule| (row.tag.clone(), row.spec()))
            .collect();
        let mut changes = RuleChanges {
            prune,
            ..RuleChanges::default()
        };
        for spec in &specs {
            match stored.get(&spec.rule.tag) {
                None => changes.added.push(spec.clone()),
                Some(current) if current.as_ref() != Some(spec) => {
                    changes.changed.push(spec.clone())
                }
                Some(_) => {}
            }
        }
        changes.removed = stored
            .keys()
            .filter(|tag| !specs.iter().any(|spec| &spec.rule.tag == *tag))
            .cloned()
            .collect();
        if dry_run {
            return Ok(changes);
        }
        for spec in changes.added.iter().chain(&changes.changed) {
            store::put_rule(conn, spec).await?;
        }
        if prune {
            for tag in &changes.removed {
                store::delete_rule(conn, tag).await?;
            }
        }
        Ok(changes)
    })
    .await
}
