//! Tag rules as a file (`vaultctl tags apply FILE`, docs/tags.md): the rules a file states,
//! compared with `cdm.tag_rules` and written in one transaction. service-cdm notices the change
//! within a second and recomputes the affected users (docs/contract.md §6.1).

use std::collections::BTreeMap;
use std::fmt;

use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use vault_core::tags::{Rule, RuleSpec};

/// A rule as stored, with what the API and `vaultctl tags list` show beside it.
#[derive(QueryableByName, Debug, Clone, PartialEq, Eq)]
pub struct StoredRule {
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
    /// Users holding the tag now.
    #[diesel(sql_type = BigInt)]
    pub holders: i64,
    /// Whether the tags reflect this rule as it stands (no recompute pending).
    #[diesel(sql_type = Bool)]
    pub applied: bool,
    /// How long the last recompute of the rule took, in milliseconds.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub took_ms: Option<i64>,
}

impl StoredRule {
    fn spec(&self) -> Option<RuleSpec> {
        let rule = Rule::parse(
            self.tag.clone(),
            &self.scope,
            self.target.clone(),
            i64::from(self.threshold),
        )
        .ok()?;
        Some(RuleSpec {
            rule,
            description: self.description.clone(),
            enabled: self.enabled,
        })
    }
}

/// Every rule, by tag.
pub async fn list(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<StoredRule>> {
    diesel::sql_query(
        "SELECT r.tag, r.scope, r.target, r.threshold, r.description, r.enabled, \
                (SELECT count(*) FROM cdm.user_tags t WHERE t.tag = r.tag) AS holders, \
                (CASE WHEN r.enabled THEN a.tag IS NOT NULL AND a.scope = r.scope \
                      AND a.target = r.target AND a.threshold = r.threshold \
                 ELSE a.tag IS NULL END) AS applied, \
                a.took_ms \
         FROM cdm.tag_rules r LEFT JOIN cdm.tag_rules_applied a USING (tag) ORDER BY r.tag",
    )
    .load(conn)
    .await
}

/// What applying a file changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub added: Vec<RuleSpec>,
    pub changed: Vec<RuleSpec>,
    /// Tags stored but not in the file: deleted only with `prune`.
    pub removed: Vec<String>,
    pub prune: bool,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && (self.removed.is_empty() || !self.prune)
    }
}

impl fmt::Display for Plan {
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
) -> anyhow::Result<Plan> {
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        let stored: BTreeMap<String, Option<RuleSpec>> = list(conn)
            .await?
            .into_iter()
            .map(|row| (row.tag.clone(), row.spec()))
            .collect();
        let mut plan = Plan {
            prune,
            ..Plan::default()
        };
        for spec in &specs {
            match stored.get(&spec.rule.tag) {
                None => plan.added.push(spec.clone()),
                Some(current) if current.as_ref() != Some(spec) => plan.changed.push(spec.clone()),
                Some(_) => {}
            }
        }
        plan.removed = stored
            .keys()
            .filter(|tag| !specs.iter().any(|spec| &spec.rule.tag == *tag))
            .cloned()
            .collect();
        if dry_run {
            return Ok(plan);
        }
        for spec in plan.added.iter().chain(&plan.changed) {
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
            .await?;
        }
        if prune {
            for tag in &plan.removed {
                diesel::sql_query("DELETE FROM cdm.tag_rules WHERE tag = $1")
                    .bind::<Text, _>(tag)
                    .execute(conn)
                    .await?;
            }
        }
        Ok(plan)
    })
    .await
}
