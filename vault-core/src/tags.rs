//! User tags (docs/contract.md §6): rules, the one decision that grants or revokes a tag, the
//! tag event on the wire, and an in-memory book of tags that tests and tools use as the
//! reference for what service-cdm stores.
//!
//! A user holds a rule's tag exactly while the rule's counter for that user (§3.3: orders per
//! user per product, or per category) is at or above the rule's threshold. service-cdm applies
//! [`decide`] to every (user, rule) whose counter a batch changed, and to every user a changed
//! rule concerns; both paths use this one function, so they cannot disagree.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::contract::EntityId;
use crate::counter::Deltas;
use crate::keys::HashKey;

/// What a rule counts: orders per category or per product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Category,
    Product,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Category => "category",
            Scope::Product => "product",
        }
    }

    pub fn parse(text: &str) -> Result<Self, RuleError> {
        match text {
            "category" => Ok(Scope::Category),
            "product" => Ok(Scope::Product),
            other => Err(RuleError::Scope(other.to_owned())),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a rule is not valid. The same checks stand in the table's constraints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("tag: must be 1 to {MAX_TAG_LEN} characters")]
    Tag,
    #[error("scope: `{0}` is neither `category` nor `product`")]
    Scope(String),
    #[error("target: a product rule's target is the product id as in the source (24 hex digits), not `{0}`")]
    ProductTarget(String),
    #[error("threshold: must be at least 1, not {0}")]
    Threshold(i64),
}

/// The longest tag name a rule may have.
pub const MAX_TAG_LEN: usize = 200;

/// One rule of `cdm.tag_rules` (§6.1), validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub tag: String,
    pub scope: Scope,
    /// A category name as in the menus (the empty string is a real category), or a product id
    /// as in the source.
    pub target: String,
    pub threshold: i32,
}

impl Rule {
    pub fn new(
        tag: impl Into<String>,
        scope: Scope,
        target: impl Into<String>,
        threshold: i64,
    ) -> Result<Self, RuleError> {
        let (tag, target) = (tag.into(), target.into());
        if tag.is_empty() || tag.chars().count() > MAX_TAG_LEN {
            return Err(RuleError::Tag);
        }
        if scope == Scope::Product && EntityId::parse(&target).is_err() {
            return Err(RuleError::ProductTarget(target));
        }
        let threshold = i32::try_from(threshold)
            .ok()
            .filter(|t| *t >= 1)
            .ok_or(RuleError::Threshold(threshold))?;
        Ok(Self {
            tag,
            scope,
            target,
            threshold,
        })
    }

    /// As [`Rule::new`], with the scope as text (as a table row or a rules file states it).
    pub fn parse(
        tag: impl Into<String>,
        scope: &str,
        target: impl Into<String>,
        threshold: i64,
    ) -> Result<Self, RuleError> {
        Rule::new(tag, Scope::parse(scope)?, target, threshold)
    }

    /// The hub key of the rule's target: the `category_id` or `product_id` of the counters.
    pub fn target_key(&self) -> HashKey {
        match self.scope {
            Scope::Category => HashKey::category(&self.target),
            Scope::Product => HashKey::of(&self.target),
        }
    }

    /// The rule's counter for `user` in `counters` (0 when there is none).
    pub fn counter(&self, counters: &Deltas, user: HashKey) -> i64 {
        let map = match self.scope {
            Scope::Category => &counters.categories,
            Scope::Product => &counters.products,
        };
        map.get(&(user, self.target_key())).copied().unwrap_or(0)
    }
}

/// What happens to one user's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagChange {
    /// Not held, now earned: insert it and record a `granted` event.
    Granted,
    /// Held, no longer earned: delete it and record a `revoked` event.
    Revoked,
    /// Held and still earned, with another count: update `order_cnt`, no event.
    Recounted,
    Unchanged,
}

/// Decides one (user, tag): `threshold` is the rule's (`None`: the rule is gone or disabled),
/// `order_cnt` the user's counter on the rule's target, `held` the count stored with the tag
/// when the user holds it.
pub fn decide(threshold: Option<i32>, order_cnt: i64, held: Option<i64>) -> TagChange {
    let earned = threshold.is_some_and(|threshold| order_cnt >= i64::from(threshold));
    match (earned, held) {
        (true, None) => TagChange::Granted,
        (false, Some(_)) => TagChange::Revoked,
        (true, Some(count)) if count != order_cnt => TagChange::Recounted,
        _ => TagChange::Unchanged,
    }
}

/// A grant or a revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TagEventKind {
    Granted,
    Revoked,
}

impl TagEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TagEventKind::Granted => "granted",
            TagEventKind::Revoked => "revoked",
        }
    }

    /// Changes of one user's tag alternate, starting with a grant: the `seq`-th (from 1) is a
    /// grant when `seq` is odd.
    pub fn of_seq(seq: i32) -> Self {
        if seq % 2 == 1 {
            TagEventKind::Granted
        } else {
            TagEventKind::Revoked
        }
    }
}

/// The id of the `seq`-th change of `user`'s `tag`: UUID v3 (X.500) over
/// `"<user>_<tag>_<seq>"`, so the same change always has the same id, however often it is
/// published.
pub fn event_id(user: HashKey, tag: &str, seq: i32) -> HashKey {
    HashKey::of(&format!("{user}_{tag}_{seq}"))
}

/// A tag event on the wire (§6.3), keyed by the user hub key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagEventMessage {
    pub object_id: HashKey,
    pub object_type: String,
    pub payload: TagEventPayload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagEventPayload {
    pub user_id: HashKey,
    pub tag: String,
    pub event: TagEventKind,
    pub order_cnt: i64,
    /// When the change was made, RFC 3339.
    pub at: String,
}

impl TagEventMessage {
    pub const OBJECT_TYPE: &'static str = "user_tag_event";

    pub fn new(user: HashKey, tag: &str, seq: i32, order_cnt: i64, at: String) -> Self {
        Self {
            object_id: event_id(user, tag, seq),
            object_type: Self::OBJECT_TYPE.to_owned(),
            payload: TagEventPayload {
                user_id: user,
                tag: tag.to_owned(),
                event: TagEventKind::of_seq(seq),
                order_cnt,
                at,
            },
        }
    }
}

/// The tags `rules` grant over `counters`, recounted from scratch: (user, tag) → count.
pub fn recount(rules: &[Rule], counters: &Deltas) -> BTreeMap<(HashKey, String), i64> {
    let mut tags = BTreeMap::new();
    for rule in rules {
        let map = match rule.scope {
            Scope::Category => &counters.categories,
            Scope::Product => &counters.products,
        };
        let target = rule.target_key();
        for ((user, key), count) in map {
            if *key == target && *count >= i64::from(rule.threshold) {
                tags.insert((*user, rule.tag.clone()), *count);
            }
        }
    }
    tags
}

/// One recorded change of a user's tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagEvent {
    pub user: HashKey,
    pub tag: String,
    pub seq: i32,
    pub kind: TagEventKind,
    pub order_cnt: i64,
}

/// An in-memory `cdm.user_tags` with its event log, maintained the two ways service-cdm
/// maintains the table: per changed counter ([`TagBook::on_counters`]) and per changed rule
/// ([`TagBook::recompute`]). The reference the property tests hold the scheme to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagBook {
    /// (user, tag) → the count stored with the tag.
    pub held: BTreeMap<(HashKey, String), i64>,
    /// Every change, in order.
    pub events: Vec<TagEvent>,
    seqs: BTreeMap<(HashKey, String), i32>,
}

impl TagBook {
    /// Applies [`decide`] to one (user, tag) and records what changed.
    pub fn settle(&mut self, user: HashKey, tag: &str, threshold: Option<i32>, order_cnt: i64) {
        let key = (user, tag.to_owned());
        let change = decide(threshold, order_cnt, self.held.get(&key).copied());
        match change {
            TagChange::Granted | TagChange::Recounted => {
                self.held.insert(key.clone(), order_cnt);
            }
            TagChange::Revoked => {
                self.held.remove(&key);
            }
            TagChange::Unchanged => {}
        }
        if matches!(change, TagChange::Granted | TagChange::Revoked) {
            let seq = self.seqs.entry(key).or_insert(0);
            *seq += 1;
            self.events.push(TagEvent {
                user,
                tag: tag.to_owned(),
                seq: *seq,
                kind: TagEventKind::of_seq(*seq),
                order_cnt,
            });
        }
    }

    /// What a datamart batch does after applying `deltas`: settles every rule whose target is
    /// a counter the batch changed, for that counter's user, against the counters after it.
    pub fn on_counters(&mut self, rules: &[Rule], deltas: &Deltas, counters: &Deltas) {
        for rule in rules {
            let target = rule.target_key();
            let changed = match rule.scope {
                Scope::Category => &deltas.categories,
                Scope::Product => &deltas.products,
            };
            let users: Vec<HashKey> = changed
                .keys()
                .filter(|(_, key)| *key == target)
                .map(|(user, _)| *user)
                .collect();
            for user in users {
                self.settle(
                    user,
                    &rule.tag,
                    Some(rule.threshold),
                    rule.counter(counters, user),
                );
            }
        }
    }

    /// One chunk of a rule recompute, as service-cdm runs it between batches: settles, in user
    /// order, the first `limit` users after `after` who hold `tag` or whose counter on the
    /// rule's target earns it. `rule` is the rule as it stands now (`None`: deleted or
    /// disabled). Returns the last user settled, where the next chunk starts, or `None` when no
    /// user was left.
    pub fn recompute_chunk(
        &mut self,
        tag: &str,
        rule: Option<&Rule>,
        counters: &Deltas,
        after: Option<HashKey>,
        limit: usize,
    ) -> Option<HashKey> {
        let mut users: Vec<HashKey> = self
            .held
            .keys()
            .filter(|(_, held)| held == tag)
            .map(|(user, _)| *user)
            .collect();
        if let Some(rule) = rule {
            users.extend(
                recount(std::slice::from_ref(rule), counters)
                    .into_keys()
                    .map(|(user, _)| user),
            );
        }
        users.retain(|user| after.is_none_or(|after| *user > after));
        users.sort();
        users.dedup();
        users.truncate(limit.max(1));
        for user in &users {
            let count = rule.map_or(0, |rule| rule.counter(counters, *user));
            self.settle(*user, tag, rule.map(|rule| rule.threshold), count);
        }
        users.last().copied()
    }

    /// A whole rule recompute: chunks until no user is left.
    pub fn recompute(&mut self, tag: &str, rule: Option<&Rule>, counters: &Deltas) {
        let mut after = None;
        while let Some(last) = self.recompute_chunk(tag, rule, counters, after, 1000) {
            after = Some(last);
        }
    }
}

/// One rule as a rules file states it (`vaultctl tags apply FILE`): the rule and the columns
/// people keep beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleSpec {
    #[serde(flatten)]
    pub rule: Rule,
    pub description: String,
    pub enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFileDoc {
    rules: Vec<RuleFileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFileEntry {
    tag: String,
    scope: String,
    target: String,
    threshold: i64,
    #[serde(default)]
    description: String,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// Why a rules file cannot be applied; names the rule (by position and tag) and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesFileError {
    #[error("not a rules file: {0}")]
    Syntax(String),
    #[error("rule {index} ({tag:?}): {error}")]
    Rule {
        index: usize,
        tag: String,
        error: RuleError,
    },
    #[error("rule {index}: tag {tag:?} is listed twice")]
    Duplicate { index: usize, tag: String },
}

/// Parses a rules file: a JSON object `{"rules": [{"tag", "scope", "target", "threshold",
/// "description"?, "enabled"?}, ...]}` (docs/tags.md). Every rule is validated as the table's
/// constraints would; unknown fields and repeated tags are refused.
pub fn parse_rules_file(text: &str) -> Result<Vec<RuleSpec>, RulesFileError> {
    let doc: RulesFileDoc =
        serde_json::from_str(text).map_err(|e| RulesFileError::Syntax(e.to_string()))?;
    let mut seen = std::collections::BTreeSet::new();
    let mut specs = Vec::with_capacity(doc.rules.len());
    for (index, entry) in doc.rules.into_iter().enumerate() {
        let index = index + 1;
        let rule = Rule::parse(
            entry.tag.clone(),
            &entry.scope,
            entry.target,
            entry.threshold,
        )
        .map_err(|error| RulesFileError::Rule {
            index,
            tag: entry.tag.clone(),
            error,
        })?;
        if !seen.insert(rule.tag.clone()) {
            return Err(RulesFileError::Duplicate {
                index,
                tag: rule.tag,
            });
        }
        specs.push(RuleSpec {
            rule,
            description: entry.description,
            enabled: entry.enabled,
        });
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decide_covers_every_case() {
        assert_eq!(decide(Some(3), 3, None), TagChange::Granted);
        assert_eq!(decide(Some(3), 2, None), TagChange::Unchanged);
        assert_eq!(decide(Some(3), 2, Some(3)), TagChange::Revoked);
        assert_eq!(decide(Some(3), 4, Some(3)), TagChange::Recounted);
        assert_eq!(decide(Some(3), 4, Some(4)), TagChange::Unchanged);
        assert_eq!(decide(None, 10, Some(10)), TagChange::Revoked);
        assert_eq!(decide(None, 10, None), TagChange::Unchanged);
    }

    #[test]
    fn rules_are_validated_like_the_table() {
        assert!(Rule::new("Pizza Lover", Scope::Category, "Пицца", 10).is_ok());
        assert!(Rule::new("Crust", Scope::Category, "", 1).is_ok());
        assert_eq!(Rule::new("", Scope::Category, "x", 1), Err(RuleError::Tag));
        assert_eq!(
            Rule::new("t", Scope::Category, "x", 0),
            Err(RuleError::Threshold(0))
        );
        assert_eq!(
            Rule::new("t", Scope::Category, "x", i64::from(i32::MAX) + 1),
            Err(RuleError::Threshold(i64::from(i32::MAX) + 1))
        );
        assert!(matches!(
            Rule::new("t", Scope::Product, "Пицца", 1),
            Err(RuleError::ProductTarget(_))
        ));
        let rule = Rule::new("t", Scope::Product, "c5b64c8ba71adb08ce4bf7bc", 1).expect("rule");
        assert_eq!(
            rule.target_key().to_string(),
            "82667bef-ab83-3961-bb99-60ee9b3cdbb9"
        );
        assert_eq!(Scope::parse("dish"), Err(RuleError::Scope("dish".into())));
    }

    #[test]
    fn a_category_rule_targets_the_category_hub_key() {
        let rule = Rule::new("Baker", Scope::Category, "Выпечка", 2).expect("rule");
        assert_eq!(
            rule.target_key().to_string(),
            "11a15ec4-37ae-3363-878f-c9a2cd7249b5"
        );
    }

    #[test]
    fn the_event_message_has_the_contract_shape() {
        let user = HashKey::of("626a81ce9a8cd1920641e296");
        let message =
            TagEventMessage::new(user, "Pizza Lover", 2, 9, "2026-11-22T10:00:00Z".into());
        let json = serde_json::to_value(&message).expect("json");
        assert_eq!(json["object_type"], "user_tag_event");
        assert_eq!(
            json["object_id"],
            event_id(user, "Pizza Lover", 2).to_string()
        );
        assert_eq!(json["payload"]["user_id"], user.to_string());
        assert_eq!(json["payload"]["event"], "revoked");
        assert_eq!(json["payload"]["order_cnt"], 9);
        let back: TagEventMessage = serde_json::from_value(json).expect("read back");
        assert_eq!(back, message);
    }

    #[test]
    fn a_rules_file_is_read_with_defaults_and_refused_naming_the_rule() {
        let specs = parse_rules_file(
            r#"{"rules": [
                {"tag": "Pizza Lover", "scope": "category", "target": "Пицца", "threshold": 10},
                {"tag": "Fan", "scope": "product", "target": "c5b64c8ba71adb08ce4bf7bc",
                 "threshold": 3, "description": "three of one dish", "enabled": false}
            ]}"#,
        )
        .expect("a valid file");
        assert_eq!(specs.len(), 2);
        assert!(specs[0].enabled);
        assert_eq!(specs[0].description, "");
        assert_eq!(specs[1].rule.scope, Scope::Product);
        assert!(!specs[1].enabled);

        let error = parse_rules_file(
            r#"{"rules": [{"tag": "a", "scope": "category", "target": "x", "threshold": 1},
                          {"tag": "b", "scope": "dish", "target": "x", "threshold": 1}]}"#,
        )
        .expect_err("a bad scope");
        assert_eq!(
            error.to_string(),
            "rule 2 (\"b\"): scope: `dish` is neither `category` nor `product`"
        );
        let error = parse_rules_file(
            r#"{"rules": [{"tag": "a", "scope": "category", "target": "x", "threshold": 1},
                          {"tag": "a", "scope": "category", "target": "y", "threshold": 2}]}"#,
        )
        .expect_err("a repeated tag");
        assert!(
            matches!(error, RulesFileError::Duplicate { index: 2, .. }),
            "{error}"
        );
        let error = parse_rules_file(r#"{"rules": [{"tag": "a", "scope": "category", "target": "x", "threshold": 1, "treshold": 2}]}"#)
            .expect_err("an unknown field");
        assert!(matches!(error, RulesFileError::Syntax(_)), "{error}");
    }

    #[test]
    fn event_ids_differ_per_change_and_repeat_per_change() {
        let user = HashKey::of("u");
        assert_eq!(event_id(user, "a", 1), event_id(user, "a", 1));
        assert_ne!(event_id(user, "a", 1), event_id(user, "a", 2));
        assert_ne!(event_id(user, "a", 1), event_id(user, "b", 1));
        assert_ne!(event_id(user, "a", 1), event_id(HashKey::of("v"), "a", 1));
    }
}
