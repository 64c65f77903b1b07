//! Poison on the inner topics, end to end: a bad message on `dds_service` (enriched orders) and
//! on `cdm_service` (counter events) ends as a dead letter of the service that reads it, with
//! its kind, reason and exact source position, while the good messages written before and
//! after it on the same partitions all count, and the group's committed offsets move past it.
//! (Poison on the raw topic is in `pipeline.rs`.) And `vaultctl dead-letters replay` over more
//! letters than it reads at a time: each replayed exactly once, and only those chosen.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::SeedableRng;
use serde_json::{json, Value};
use vault_runtime::REPLAY_PAGE;
use vault_tests::oracle::{self, Model};
use vault_tests::pipeline::{Pipeline, Read, Service};
use vault_tests::produce::{produce_placed, Outgoing, Placed};
use vault_tests::sql::Columns;
use vault_tests::{eventually, unique};

const SETTLE: Duration = Duration::from_secs(180);

/// Waits until `service` has committed everything on `topic` (the others may be stopped).
async fn caught_up(p: &Pipeline, service: Service, topic: &str) {
    let group = p.group(service).to_owned();
    let what = format!("{service:?} to commit everything on {topic}");
    eventually(&what, SETTLE, || async {
        let ends = p.end_offsets(topic).await.ok()?;
        let committed = p.stack.committed_offsets(&group, topic).await.ok()?;
        ends.iter()
            .all(|(partition, end)| {
                committed.get(partition).copied().flatten().unwrap_or(0) >= *end
            })
            .then_some(())
    })
    .await;
}

/// A hub key as the services write it (docs/contract.md §3.1), for hand-written counter events.
fn key(business_key: &str) -> String {
    uuid::Uuid::new_v3(&uuid::Uuid::NAMESPACE_X500, business_key.as_bytes()).to_string()
}

/// An enriched order (docs/contract.md §2.3) written out by hand: valid until a test breaks it.
fn enriched(order_id: i64) -> Value {
    json!({
        "object_id": order_id,
        "object_type": "order",
        "payload": {
            "id": order_id,
            "date": "2025-02-22 08:00:00",
            "cost": 100,
            "payment": 100,
            "status": "CLOSED",
            "update_ts": "2025-02-22 08:05:00",
            "restaurant": {"id": "a51e4e31ae4602047ec52534", "name": "Пекарня у дома"},
            "user": {"id": "626a81ce9a8cd1920641e296", "name": "Ирина", "login": "irina"},
            "products": [{
                "id": "c5b64c8ba71adb08ce4bf7bc",
                "price": 100,
                "quantity": 1,
                "name": "Хачапури",
                "category": "Выпечка"
            }]
        }
    })
}

/// One counter event (docs/contract.md §2.4) of a made-up order, written out by hand.
fn event(order: &str, product: &str) -> Value {
    json!({
        "object_id": key(&format!("{order}_{product}")),
        "object_type": "cdm_order_event",
        "payload": {
            "order_id": key(order),
            "user_id": key("626a81ce9a8cd1920641e296"),
            "product_id": key(product),
            "product_name": "Хачапури",
            "category_id": key("Выпечка"),
            "category_name": "Выпечка",
            "status": "CLOSED",
            "update_ts": "2025-02-22T08:05:00+00:00"
        }
    })
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize")
}

/// Poison for `dds_service`, each with the dead-letter kind it must get.
fn enriched_poison() -> Vec<(Outgoing, &'static str)> {
    let mut wrong_type = enriched(990_001);
    wrong_type["object_type"] = json!("payment");
    let mut bad_quantity = enriched(990_002);
    bad_quantity["payload"]["products"][0]["quantity"] = json!("two");
    let mut nul = enriched(990_003);
    nul["payload"]["products"][0]["name"] = json!("bad\u{0}name");
    let mut too_large = enriched(990_004);
    // 15 integer digits do not fit numeric(19,5).
    too_large["payload"]["cost"] = json!(1_000_000_000_000_000_i64);
    let mut no_products = enriched(990_005);
    no_products["payload"]
        .as_object_mut()
        .expect("payload")
        .remove("products");
    vec![
        (Outgoing::new("d-1", b"{not json".to_vec()), "invalid_json"),
        (
            Outgoing::new("990001", bytes(&wrong_type)),
            "wrong_object_type",
        ),
        (
            Outgoing::new("990002", bytes(&bad_quantity)),
            "invalid_field",
        ),
        (Outgoing::new("990003", bytes(&nul)), "nul_character"),
        (Outgoing::new("990004", bytes(&too_large)), "invalid_field"),
        (
            Outgoing::new("990005", bytes(&no_products)),
            "invalid_field",
        ),
    ]
}

/// Poison for `cdm_service`, each with the dead-letter kind it must get.
fn counter_poison() -> Vec<(Outgoing, &'static str)> {
    let mut wrong_type = event("880001", "c5b64c8ba71adb08ce4bf7bc");
    wrong_type["object_type"] = json!("order");
    let mut nul = event("880002", "c5b64c8ba71adb08ce4bf7bc");
    nul["payload"]["product_name"] = json!("bad\u{0}name");
    let mut bad_key = event("880003", "c5b64c8ba71adb08ce4bf7bc");
    bad_key["payload"]["user_id"] = json!("not-a-uuid");
    let mixed = json!([
        event("880004", "c5b64c8ba71adb08ce4bf7bc"),
        event("880005", "1b3e42939c414bc1ea69e2fe"),
    ]);
    vec![
        (Outgoing::new("c-1", b"{not json".to_vec()), "invalid_json"),
        (Outgoing::new("c-2", b"[]".to_vec()), "empty_event_batch"),
        (
            Outgoing::new("880001", bytes(&json!([wrong_type]))),
            "wrong_object_type",
        ),
        (
            Outgoing::new("880002", bytes(&json!([nul]))),
            "nul_character",
        ),
        (
            Outgoing::new("880003", bytes(&json!([bad_key]))),
            "invalid_field",
        ),
        (Outgoing::new("880004", bytes(&mixed)), "mixed_event_batch"),
    ]
}

/// The dead letters of `service`: (partition, offset) → (kind, topic, reason).
async fn dead_letters(
    p: &Pipeline,
    service: &str,
) -> anyhow::Result<BTreeMap<(i32, i64), (String, String, String)>> {
    Ok(p.db()
        .await?
        .query(
            "SELECT partition, \"offset\", error_kind, topic, reason FROM ops.dead_letters \
             WHERE service = $1",
            &[&service],
        )
        .await?
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3), r.get(4))))
        .collect())
}

/// Asserts that each poisoned message is a dead letter of `service` at its position with its
/// kind and a reason, that there are no others, and that good messages follow every poisoned
/// one on its partition (so "the pipeline went on past it" is tested, not assumed).
async fn assert_dead_letters(
    p: &Pipeline,
    service: &str,
    topic: &str,
    poison: &[(Outgoing, &'static str)],
    placed: &[Placed],
) -> anyhow::Result<()> {
    let letters = dead_letters(p, service).await?;
    let expected: BTreeMap<(i32, i64), &str> = poison
        .iter()
        .zip(placed)
        .map(|((_, kind), at)| ((at.partition, at.offset), *kind))
        .collect();
    let found: BTreeMap<(i32, i64), &str> = letters
        .iter()
        .map(|(at, (kind, _, _))| (*at, kind.as_str()))
        .collect();
    assert_eq!(found, expected, "{service}: {letters:#?}");
    for (kind, letter_topic, reason) in letters.values() {
        assert_eq!(letter_topic, topic, "{kind}");
        assert!(!reason.trim().is_empty(), "{kind} without a reason");
    }
    let ends = p.end_offsets(topic).await?;
    for at in placed {
        assert!(
            ends[&at.partition] > at.offset + 1,
            "no good message after the poison at {topic}/{}@{}",
            at.partition,
            at.offset
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_on_the_enriched_and_counter_topics_is_kept_and_everything_around_it_counts(
) -> anyhow::Result<()> {
    let mut p = Pipeline::start(3).await?;
    // dds and cdm wait, so that their topics fill up as: good, poison, good.
    p.stop_service(Service::Dds).await?;
    p.stop_service(Service::Cdm).await?;
    let d = vault_tests::orders::random_dictionary(8, 3);
    p.put_dictionary(&d).await?;
    let mut model = Model::new();
    model.dictionary(&d);
    let mut rng = rand::rngs::StdRng::seed_from_u64(47);
    let orders = datagen::generate::orders(&mut rng, &d, 70_000, 150);
    let messages: Vec<(String, Vec<u8>)> = orders
        .iter()
        .map(|o| {
            (
                o.object_id.to_string(),
                serde_json::to_vec(o).expect("json"),
            )
        })
        .collect();
    for (_, payload) in &messages {
        model.sent(payload).expect("a countable order");
    }
    let thirds: Vec<&[(String, Vec<u8>)]> = messages.chunks(messages.len().div_ceil(3)).collect();
    assert_eq!(thirds.len(), 3);

    // dds_service: good (first third), poison, good (second third).
    p.produce_raw(thirds[0]).await?;
    caught_up(&p, Service::Stg, &p.raw_topic).await;
    let enriched_poison = enriched_poison();
    let outgoing: Vec<Outgoing> = enriched_poison.iter().map(|(o, _)| o.clone()).collect();
    let enriched_placed = produce_placed(p.stack, &p.enriched_topic, &outgoing).await?;
    p.produce_raw(thirds[1]).await?;
    caught_up(&p, Service::Stg, &p.raw_topic).await;
    p.start_service(Service::Dds).await?;
    caught_up(&p, Service::Dds, &p.enriched_topic).await;

    // cdm_service: good (first two thirds), poison, good (last third).
    let counter_poison = counter_poison();
    let outgoing: Vec<Outgoing> = counter_poison.iter().map(|(o, _)| o.clone()).collect();
    let counter_placed = produce_placed(p.stack, &p.counter_topic, &outgoing).await?;
    p.produce_raw(thirds[2]).await?;
    p.start_service(Service::Cdm).await?;
    p.settle(SETTLE).await;

    assert_dead_letters(
        &p,
        "service-dds",
        &p.enriched_topic,
        &enriched_poison,
        &enriched_placed,
    )
    .await?;
    assert_dead_letters(
        &p,
        "service-cdm",
        &p.counter_topic,
        &counter_poison,
        &counter_placed,
    )
    .await?;
    assert_eq!(
        dead_letters(&p, "service-stg").await?.len(),
        0,
        "stg saw only good orders"
    );
    let too_large = &dead_letters(&p, "service-dds").await?
        [&(enriched_placed[4].partition, enriched_placed[4].offset)];
    assert!(too_large.2.contains("numeric(19,5)"), "{too_large:?}");

    // Every group committed its whole topic: past the poison, and past the good messages
    // after it.
    for (service, topic) in [
        (Service::Stg, &p.raw_topic),
        (Service::Dds, &p.enriched_topic),
        (Service::Cdm, &p.counter_topic),
    ] {
        let ends = p.end_offsets(topic).await?;
        let committed = p.stack.committed_offsets(p.group(service), topic).await?;
        let expected: BTreeMap<i32, Option<i64>> = ends
            .iter()
            .map(|(p, end)| (*p, Some(*end).filter(|e| *e > 0)))
            .collect();
        assert_eq!(committed, expected, "{service:?} on {topic}");
    }
    // Every good order went all the way: one version state per order, counters exact.
    let distinct: BTreeSet<i64> = orders.iter().map(|o| o.object_id.0).collect();
    assert_eq!(
        p.count("SELECT count(*) FROM cdm.order_state WHERE update_ts IS NOT NULL")
            .await?,
        distinct.len() as i64
    );
    assert_eq!(
        p.count("SELECT count(*) FROM dds.h_order WHERE order_id >= 990000")
            .await?,
        0,
        "a poisoned enriched order reached the Data Vault"
    );
    oracle::assert_exact(&p, &model).await;
    p.shutdown().await
}

/// The payloads on `topic`, each with how often it is there; every key must be its payload's.
async fn republished(p: &Pipeline, topic: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for Read { key, payload, .. } in p.read_topic(topic).await.expect("the replay topic") {
        let payload = String::from_utf8(payload).expect("a text payload");
        assert_eq!(key, payload.replace("letter", "key"), "the original key");
        *seen.entry(payload).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_more_letters_than_a_page_republishes_each_once_and_only_those_chosen(
) -> anyhow::Result<()> {
    let p = Pipeline::start(1).await?;
    p.migrated().await;
    // Letters from a topic no service reads, so that what a replay republishes stays there:
    // three of every four service-stg's, the rest service-cdm's, interleaved by id.
    let topic = unique("replayed");
    p.stack
        .create_topics(std::slice::from_ref(&topic), 1)
        .await?;
    let letters = 5 * REPLAY_PAGE;
    let stg_letters = letters - letters / 4;
    p.db()
        .await?
        .execute(
            "INSERT INTO ops.dead_letters \
                 (service, topic, partition, \"offset\", message_key, payload, error_kind, reason) \
             SELECT CASE WHEN n % 4 = 0 THEN 'service-cdm' ELSE 'service-stg' END, $1, 0, n, \
                    convert_to('key-' || n, 'UTF8'), convert_to('letter-' || n, 'UTF8'), \
                    'unknown_user', 'test' \
             FROM generate_series(1, $2::bigint) AS n",
            &[&topic, &letters],
        )
        .await?;
    let (code, out) = p.vaultctl(&["dead-letters", "list"]).await?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("{letters} pending; the oldest 1000 shown")),
        "{out}"
    );
    // A service by its short name or in full: the same letters (they are kept under the full
    // name), and only that service's.
    for service in ["stg", "service-stg"] {
        let (code, out) = p.vaultctl(&["dead-letters", "list", service]).await?;
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(&format!("{stg_letters} pending; the oldest 1000 shown")),
            "{service}: {out}"
        );
        assert!(!out.contains("service-cdm"), "{service}: {out}");
    }
    let (code, out) = p.vaultctl(&["dead-letters", "list", "cdm"]).await?;
    assert_eq!(code, 0, "{out}");
    let cdm_pending = format!("{} pending", letters - stg_letters);
    assert!(out.lines().any(|line| line == cdm_pending), "{out}");
    // The run summary counts them too.
    let (code, out) = p.vaultctl(&["summary", "--json"]).await?;
    assert_eq!(code, 0, "{out}");
    let summary: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(summary["dead_letters_pending"], letters, "{out}");
    assert_eq!(summary["counter_differences"], 0, "{out}");

    // Chosen ids, more than a page of them: exactly those, once each.
    let chosen: Vec<i64> = p
        .db()
        .await?
        .column(
            "SELECT id FROM ops.dead_letters WHERE service = 'service-stg' AND id % 2 = 0 \
             ORDER BY id",
        )
        .await?
        .into_iter()
        .collect();
    assert!(chosen.len() as i64 > REPLAY_PAGE);
    let mut args = vec![
        "dead-letters".to_owned(),
        "replay".into(),
        "service-stg".into(),
    ];
    args.extend(chosen.iter().map(i64::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = p.vaultctl(&args).await?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("replayed {} dead letter(s)", chosen.len())),
        "{out}"
    );
    let seen = republished(&p, &topic).await;
    assert_eq!(seen.len(), chosen.len());
    assert!(seen.values().all(|times| *times == 1), "{seen:?}");
    let marked: Vec<i64> = p
        .db()
        .await?
        .column("SELECT id FROM ops.dead_letters WHERE replayed_at IS NOT NULL ORDER BY id")
        .await?
        .into_iter()
        .collect();
    assert_eq!(marked, chosen);

    // The rest of one service's, then everything left: each letter once in all.
    let (code, out) = p.vaultctl(&["dead-letters", "replay", "stg"]).await?;
    assert_eq!(code, 0, "{out}");
    let rest = stg_letters - chosen.len() as i64;
    assert!(
        out.contains(&format!("replayed {rest} dead letter(s)")),
        "{out}"
    );
    assert_eq!(
        p.count("SELECT count(*) FROM ops.dead_letters WHERE replayed_at IS NULL")
            .await?,
        letters - stg_letters,
        "service-cdm's letters are left"
    );
    let (code, out) = p.vaultctl(&["dead-letters", "replay"]).await?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "replayed {} dead letter(s)",
            letters - stg_letters
        )),
        "{out}"
    );
    let seen = republished(&p, &topic).await;
    let expected: BTreeSet<String> = (1..=letters).map(|n| format!("letter-{n}")).collect();
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(seen.values().all(|times| *times == 1), "{seen:?}");
    assert_eq!(
        p.count("SELECT count(*) FROM ops.dead_letters WHERE replayed_at IS NULL")
            .await?,
        0
    );
    // Nothing is pending: a replay now republishes nothing.
    let (code, out) = p.vaultctl(&["dead-letters", "replay"]).await?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("replayed 0 dead letter(s)"), "{out}");
    p.shutdown().await
}
