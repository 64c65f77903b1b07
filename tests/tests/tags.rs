//! User tags end to end (docs/contract.md §6.1–6.3), through the real broker, Redis and
//! Postgres: a user holds a tag exactly while the rule's counter is at or above the threshold
//! — when orders close and get cancelled, when a rule is added after the orders, raised,
//! disabled, re-enabled and deleted, and while rules are edited mid-stream — and every grant
//! and revoke reaches the tags topic once per id, in order per user.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use vault_core::tags::{event_id, TagEventKind, TagEventMessage};
use vault_core::{HashKey, OrderStatus, RawOrder};
use vault_tests::eventually;
use vault_tests::expect::expected;
use vault_tests::orders::{message, order, random_dictionary};
use vault_tests::pipeline::{Pipeline, Read};

const SETTLE: Duration = Duration::from_secs(180);
/// A rule edit takes effect within seconds (the watcher looks every second).
const RULE_EDIT: Duration = Duration::from_secs(30);

/// (user hub key, tag) → order_cnt, as text.
type Tags = BTreeMap<(String, String), i64>;

/// (user hub key, tag) → its changes in order: (seq, event, order_cnt).
type Events = BTreeMap<(String, String), Vec<(i32, String, i64)>>;

async fn stored_tags(p: &Pipeline) -> anyhow::Result<Tags> {
    let rows = p
        .db()
        .await?
        .query(
            "SELECT user_id::text, tag, order_cnt FROM cdm.user_tags",
            &[],
        )
        .await?;
    Ok(tags_of(&rows))
}

/// (user, tag) → counter, from rows of (user, tag, order_cnt).
fn tags_of(rows: &[tokio_postgres::Row]) -> Tags {
    rows.iter()
        .map(|r| ((r.get(0), r.get(1)), i64::from(r.get::<_, i32>(2))))
        .collect()
}

/// The tags the rules grant over the stored counters, recounted in SQL (§6.2: "always equals
/// a recount from the counters and the rules").
async fn recounted_tags(p: &Pipeline) -> anyhow::Result<Tags> {
    let rows = p
        .db()
        .await?
        .query(
            "SELECT c.user_id::text, r.tag, c.order_cnt FROM cdm.tag_rules r \
             JOIN cdm.user_category_counters c \
               ON r.scope = 'category' AND c.category_name = r.target \
             WHERE r.enabled AND c.order_cnt >= r.threshold \
             UNION ALL \
             SELECT c.user_id::text, r.tag, c.order_cnt FROM cdm.tag_rules r \
             JOIN cdm.user_product_counters c \
               ON r.scope = 'product' AND c.product_id = \
                  (SELECT h_product_pk FROM dds.h_product WHERE product_id = r.target) \
             WHERE r.enabled AND c.order_cnt >= r.threshold",
            &[],
        )
        .await?;
    Ok(tags_of(&rows))
}

/// Waits until the rules the tags reflect are the rules as they stand (no recompute pending).
async fn rules_applied(p: &Pipeline) {
    eventually("the tag rules to be applied", RULE_EDIT, || async {
        let pending = p
            .count(
                "SELECT count(*) FROM (\
                   SELECT tag, scope, target, threshold FROM cdm.tag_rules WHERE enabled \
                   EXCEPT SELECT tag, scope, target, threshold FROM cdm.tag_rules_applied) d",
            )
            .await
            .ok()?;
        let stale = p
            .count(
                "SELECT count(*) FROM cdm.tag_rules_applied a WHERE NOT EXISTS (\
                   SELECT 1 FROM cdm.tag_rules r WHERE r.enabled AND r.tag = a.tag \
                   AND r.scope = a.scope AND r.target = a.target AND r.threshold = a.threshold)",
            )
            .await
            .ok()?;
        (pending == 0 && stale == 0).then_some(())
    })
    .await;
}

/// Waits until `user` holds exactly the tags in `tags` (tag → order_cnt) among `among`.
async fn holds(p: &Pipeline, user: &str, among: &[&str], tags: &[(&str, i64)]) {
    let want: Tags = tags
        .iter()
        .map(|(tag, n)| ((user.to_owned(), (*tag).to_owned()), *n))
        .collect();
    let what = format!("{user} to hold exactly {tags:?}");
    eventually(&what, RULE_EDIT, || async {
        let stored = stored_tags(p).await.ok()?;
        let mine: Tags = stored
            .into_iter()
            .filter(|((u, t), _)| u == user && among.contains(&t.as_str()))
            .collect();
        (mine == want).then_some(())
    })
    .await;
}

/// The outbox as stored: (user, tag) → [(seq, event, order_cnt)] in order.
async fn stored_events(p: &Pipeline) -> anyhow::Result<Events> {
    let rows = p
        .db()
        .await?
        .query(
            "SELECT user_id::text, tag, seq, event, order_cnt, event_id::text FROM cdm.user_tag_events \
             ORDER BY user_id, tag, seq",
            &[],
        )
        .await?;
    let mut events: Events = BTreeMap::new();
    for r in &rows {
        let (user, tag, seq): (String, String, i32) = (r.get(0), r.get(1), r.get(2));
        let id: String = r.get(5);
        let key = HashKey::from_uuid(user.parse()?);
        assert_eq!(
            id,
            event_id(key, &tag, seq).to_string(),
            "a deterministic id"
        );
        events
            .entry((user, tag))
            .or_default()
            .push((seq, r.get(3), i64::from(r.get::<_, i32>(4))));
    }
    Ok(events)
}

/// Every user's events alternate from a grant, and the last one says whether the tag is held.
fn assert_events_match(events: &Events, tags: &Tags) {
    for (key, list) in events {
        for (n, (seq, kind, _)) in list.iter().enumerate() {
            assert_eq!(*seq, n as i32 + 1, "{key:?}: {list:?}");
            assert_eq!(
                kind,
                TagEventKind::of_seq(*seq).as_str(),
                "{key:?}: {list:?}"
            );
        }
        let held = list.last().is_some_and(|(_, kind, _)| kind == "granted");
        assert_eq!(held, tags.contains_key(key), "{key:?}: {list:?}");
    }
    for key in tags.keys() {
        assert!(events.contains_key(key), "{key:?} held without a grant");
    }
}

/// Waits until the outbox is fully published, then checks the topic: each id once (a consumer
/// that dedupes by id sees each change once), keyed by its user, in order per user, and the
/// same changes as the outbox.
async fn assert_topic_matches_outbox(p: &Pipeline) -> anyhow::Result<()> {
    p.await_count(
        "the tag outbox to be published",
        SETTLE,
        "SELECT count(*) FROM cdm.user_tag_events WHERE published_at IS NULL",
        0,
    )
    .await;
    let outbox = stored_events(p).await?;
    let mut seen = BTreeSet::new();
    let mut on_topic: Events = BTreeMap::new();
    for Read { key, payload, .. } in p.read_topic(&p.tags_topic).await? {
        let message: TagEventMessage = serde_json::from_slice(&payload)?;
        assert_eq!(message.object_type, "user_tag_event");
        assert_eq!(
            key,
            message.payload.user_id.to_string(),
            "keyed by the user"
        );
        if !seen.insert(message.object_id) {
            continue;
        }
        let user = message.payload.user_id.to_string();
        let list = on_topic
            .entry((user, message.payload.tag.clone()))
            .or_default();
        let seq = list.len() as i32 + 1;
        assert_eq!(
            message.object_id,
            event_id(message.payload.user_id, &message.payload.tag, seq)
        );
        list.push((
            seq,
            message.payload.event.as_str().to_owned(),
            message.payload.order_cnt,
        ));
    }
    assert_eq!(
        on_topic, outbox,
        "the topic carries the outbox's changes, in order"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_follow_the_counters_and_every_kind_of_rule_edit() -> anyhow::Result<()> {
    let p = Pipeline::start(2).await?;
    let d = random_dictionary(2, 1);
    p.put_dictionary(&d).await?;
    p.migrated().await;
    let dish = &d.restaurants[0].menu[0];
    let category = dish.category.clone();
    let user = HashKey::user(&d.users[0].id).to_string();
    let db = p.db().await?;
    db.execute(
        "INSERT INTO cdm.tag_rules (tag, scope, target, threshold) VALUES ('Lover', 'category', $1, 2)",
        &[&category],
    )
    .await?;
    rules_applied(&p).await;
    let tags = ["Lover", "Dish Fan"];

    // Two closed orders earn the tag; cancelling one takes it away; a third gives it back.
    let o1 = order(&d, 1, 0, 0, &[0], OrderStatus::Closed, 10);
    let o2 = order(&d, 2, 0, 0, &[0], OrderStatus::Closed, 10);
    p.produce_raw(&[message(&o1)]).await?;
    p.settle(SETTLE).await;
    holds(&p, &user, &tags, &[]).await;
    p.produce_raw(&[message(&o2), message(&o2)]).await?;
    holds(&p, &user, &tags, &[("Lover", 2)]).await;
    p.produce_raw(&[message(&order(
        &d,
        2,
        0,
        0,
        &[0],
        OrderStatus::Cancelled,
        20,
    ))])
    .await?;
    holds(&p, &user, &tags, &[]).await;
    // An older CLOSED version of the cancelled order changes nothing.
    p.produce_raw(&[message(&o2)]).await?;
    let o3 = order(&d, 3, 0, 0, &[0], OrderStatus::Closed, 10);
    p.produce_raw(&[message(&o3)]).await?;
    p.settle(SETTLE).await;
    holds(&p, &user, &tags, &[("Lover", 2)]).await;

    // A rule added after the orders grants through the recompute alone.
    db.execute(
        "INSERT INTO cdm.tag_rules (tag, scope, target, threshold, description) \
         VALUES ('Dish Fan', 'product', $1, 2, 'two orders of one dish')",
        &[&dish.id.as_str()],
    )
    .await?;
    holds(&p, &user, &tags, &[("Lover", 2), ("Dish Fan", 2)]).await;
    // Raised beyond the count: revoked.
    db.execute(
        "UPDATE cdm.tag_rules SET threshold = 3 WHERE tag = 'Dish Fan'",
        &[],
    )
    .await?;
    holds(&p, &user, &tags, &[("Lover", 2)]).await;
    // Disabled, enabled again, deleted.
    db.execute(
        "UPDATE cdm.tag_rules SET enabled = false WHERE tag = 'Lover'",
        &[],
    )
    .await?;
    holds(&p, &user, &tags, &[]).await;
    db.execute(
        "UPDATE cdm.tag_rules SET enabled = true WHERE tag = 'Lover'",
        &[],
    )
    .await?;
    holds(&p, &user, &tags, &[("Lover", 2)]).await;
    db.execute("DELETE FROM cdm.tag_rules WHERE tag = 'Lover'", &[])
        .await?;
    holds(&p, &user, &tags, &[]).await;
    rules_applied(&p).await;

    let events = stored_events(&p).await?;
    let kinds = |tag: &str| -> Vec<String> {
        events
            .get(&(user.clone(), tag.to_owned()))
            .map(|list| list.iter().map(|(_, kind, _)| kind.clone()).collect())
            .unwrap_or_default()
    };
    // Granted at 2, revoked (cancelled), granted (third order), revoked (disabled), granted
    // (enabled), revoked (deleted).
    assert_eq!(
        kinds("Lover"),
        ["granted", "revoked", "granted", "revoked", "granted", "revoked"]
    );
    assert_eq!(kinds("Dish Fan"), ["granted", "revoked"]);
    let tags_now = stored_tags(&p).await?;
    assert_events_match(&events, &tags_now);
    assert_topic_matches_outbox(&p).await?;
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_equal_the_recount_when_rules_change_mid_stream() -> anyhow::Result<()> {
    let p = Pipeline::start(3).await?;
    let d = random_dictionary(6, 3);
    p.put_dictionary(&d).await?;
    p.migrated().await;
    let categories: BTreeSet<String> = d
        .restaurants
        .iter()
        .flat_map(|r| r.menu.iter().map(|m| m.category.clone()))
        .collect();
    let categories: Vec<String> = categories.into_iter().collect();
    let db = p.db().await?;
    for (n, category) in categories.iter().enumerate().take(3) {
        db.execute(
            "INSERT INTO cdm.tag_rules (tag, scope, target, threshold) VALUES ($1, 'category', $2, $3)",
            &[&format!("rule-{n}"), category, &(1 + n as i32)],
        )
        .await?;
    }
    db.execute(
        "INSERT INTO cdm.tag_rules (tag, scope, target, threshold) VALUES ('dish', 'product', $1, 2)",
        &[&d.restaurants[0].menu[0].id.as_str()],
    )
    .await?;

    // Random orders in three bursts, with later versions, duplicates and replays; the rules
    // change between bursts without waiting for the pipeline.
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let mut sent: Vec<RawOrder> = Vec::new();
    let statuses = [
        OrderStatus::Closed,
        OrderStatus::Closed,
        OrderStatus::Cancelled,
    ];
    for burst in 0..3 {
        let mut batch = Vec::new();
        for _ in 0..150 {
            let id = rng.random_range(1..120);
            let user = (id as usize) % d.users.len();
            let restaurant = (id as usize) % d.restaurants.len();
            let menu = d.restaurants[restaurant].menu.len();
            let dishes: Vec<usize> = (0..rng.random_range(1..3))
                .map(|_| rng.random_range(0..menu))
                .collect();
            let status = statuses[rng.random_range(0..statuses.len())];
            let version = order(
                &d,
                id,
                user,
                restaurant,
                &dishes,
                status,
                rng.random_range(1..50),
            );
            batch.push(version.clone());
            if rng.random_bool(0.2) {
                batch.push(version);
            }
        }
        p.produce_raw(&batch.iter().map(message).collect::<Vec<_>>())
            .await?;
        sent.extend(batch);
        match burst {
            0 => {
                db.execute(
                    "UPDATE cdm.tag_rules SET threshold = threshold + 1 WHERE tag = 'rule-0'",
                    &[],
                )
                .await?;
                db.execute("DELETE FROM cdm.tag_rules WHERE tag = 'rule-1'", &[])
                    .await?;
            }
            1 => {
                db.execute(
                    "INSERT INTO cdm.tag_rules (tag, scope, target, threshold) VALUES ('rule-1', 'category', $1, 1)",
                    &[&categories[categories.len() - 1]],
                )
                .await?;
                db.execute(
                    "UPDATE cdm.tag_rules SET enabled = false WHERE tag = 'dish'",
                    &[],
                )
                .await?;
            }
            _ => {}
        }
    }
    // The whole stream once more: a replay changes no tag.
    p.produce_raw(&sent.iter().map(message).collect::<Vec<_>>())
        .await?;
    p.settle(SETTLE).await;
    rules_applied(&p).await;

    let stored = stored_tags(&p).await?;
    assert_eq!(
        stored,
        recounted_tags(&p).await?,
        "tags = recount from counters and rules"
    );
    // And from the model of §3.3 alone, over the messages sent.
    let (products, category_counts) = expected(&d, &sent);
    let rules = db
        .query(
            "SELECT tag, scope, target, threshold FROM cdm.tag_rules WHERE enabled",
            &[],
        )
        .await?;
    let mut model = Tags::new();
    for rule in &rules {
        let (tag, scope, target, threshold): (String, String, String, i32) =
            (rule.get(0), rule.get(1), rule.get(2), rule.get(3));
        let (counts, key) = if scope == "category" {
            (&category_counts, HashKey::category(&target).to_string())
        } else {
            (&products, HashKey::of(&target).to_string())
        };
        for ((user, k), n) in counts {
            if *k == key && *n >= i64::from(threshold) {
                model.insert((user.clone(), tag.clone()), *n);
            }
        }
    }
    assert_eq!(stored, model, "tags = the model over the messages sent");
    assert!(!stored.is_empty(), "the test grants some tags");
    assert_events_match(&stored_events(&p).await?, &stored);
    assert_topic_matches_outbox(&p).await?;
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_file_is_applied_by_vaultctl_and_takes_effect_without_a_restart(
) -> anyhow::Result<()> {
    let p = Pipeline::start(1).await?;
    let d = random_dictionary(1, 1);
    p.put_dictionary(&d).await?;
    p.migrated().await;
    let dish = &d.restaurants[0].menu[0];
    let user = HashKey::user(&d.users[0].id).to_string();
    p.produce_raw(&[
        message(&order(&d, 1, 0, 0, &[0], OrderStatus::Closed, 10)),
        message(&order(&d, 2, 0, 0, &[0], OrderStatus::Closed, 10)),
    ])
    .await?;
    p.settle(SETTLE).await;
    let dir = std::env::temp_dir().join(vault_tests::unique("rules"));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("rules.json");
    let write = |rules: serde_json::Value| -> anyhow::Result<String> {
        std::fs::write(
            &file,
            serde_json::to_vec(&serde_json::json!({ "rules": rules }))?,
        )?;
        Ok(file.display().to_string())
    };
    let both = write(serde_json::json!([
        {"tag": "Lover", "scope": "category", "target": dish.category, "threshold": 2},
        {"tag": "Fan", "scope": "product", "target": dish.id.as_str(), "threshold": 3,
         "description": "three of one dish"}
    ]))?;

    // A dry run shows the plan and writes nothing.
    let (code, out) = p.vaultctl(&["tags", "apply", &both, "--dry-run"]).await?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("+ \"Lover\"") && out.contains("dry run"),
        "{out}"
    );
    assert_eq!(p.count("SELECT count(*) FROM cdm.tag_rules").await?, 0);

    let (code, out) = p.vaultctl(&["tags", "apply", &both]).await?;
    assert_eq!(code, 0, "{out}");
    holds(&p, &user, &["Lover", "Fan"], &[("Lover", 2)]).await;
    rules_applied(&p).await;
    let (code, out) = p.vaultctl(&["tags", "list"]).await?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Lover") && out.contains("2 rule(s)"), "{out}");
    let (_, out) = p.vaultctl(&["tags", "apply", &both]).await?;
    assert!(out.contains("already match"), "{out}");

    // A file without "Lover": kept unless --prune; "Fan" lowered to 2 grants it.
    let fan = write(serde_json::json!([
        {"tag": "Fan", "scope": "product", "target": dish.id.as_str(), "threshold": 2}
    ]))?;
    let (code, out) = p.vaultctl(&["tags", "apply", &fan]).await?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("~ \"Fan\"") && out.contains("--prune deletes it"),
        "{out}"
    );
    holds(&p, &user, &["Lover", "Fan"], &[("Lover", 2), ("Fan", 2)]).await;
    let (code, out) = p.vaultctl(&["tags", "apply", &fan, "--prune"]).await?;
    assert_eq!(code, 0, "{out}");
    holds(&p, &user, &["Lover", "Fan"], &[("Fan", 2)]).await;

    // A bad file is refused naming the rule and the field; nothing changes.
    let bad = write(serde_json::json!([
        {"tag": "Fan", "scope": "product", "target": "not-a-product-id", "threshold": 2}
    ]))?;
    let (code, out) = p.vaultctl(&["tags", "apply", &bad]).await?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rule 1 (\"Fan\")") && out.contains("target"),
        "{out}"
    );
    assert_eq!(p.count("SELECT count(*) FROM cdm.tag_rules").await?, 1);
    std::fs::remove_dir_all(&dir)?;
    p.shutdown().await
}
