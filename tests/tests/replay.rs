//! `vaultctl rewind` end to end (vault-runtime/src/rewind.rs): an hour of orders, carrying Kafka
//! message timestamps spread over the last hour, is counted into a live warehouse; then every
//! stage is rewound — stg to one hour ago, dds to the middle of its topic by offsets, cdm to
//! offset 0 — and restarted. Every stage reprocesses what it already did, and because each is
//! idempotent the counters come out exactly as before and as the independent model says. The
//! tool refuses while a service runs, can wait for it to stop, and resolves a timestamp to
//! the offsets the messages were written at. And orders replayed into the pipeline with their
//! original, years-old timestamps (a backfill) survive the internal topics' time retention.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{TimeDelta, Utc};
use rand::SeedableRng;
use vault_core::RawOrder;
use vault_runtime::{rewind_group, KafkaSettings, RewindError, RewindRequest, RewindStart};
use vault_tests::oracle::{self, Model};
use vault_tests::pipeline::{Pipeline, Read, Service};
use vault_tests::produce::{produce_placed, Outgoing};

const SETTLE: Duration = Duration::from_secs(180);

fn kafka_settings(p: &Pipeline) -> anyhow::Result<KafkaSettings> {
    let env: HashMap<String, String> = HashMap::from([(
        "KAFKA_BOOTSTRAP_SERVERS".to_owned(),
        p.stack.kafka_bootstrap.clone(),
    )]);
    Ok(KafkaSettings::from(&env, service_stg::PROFILE)?)
}

/// The committed offsets of `group` on `topic`, `None` where it committed nothing.
async fn committed(p: &Pipeline, service: Service, topic: &str) -> BTreeMap<i32, Option<i64>> {
    p.stack
        .committed_offsets(p.group(service), topic)
        .await
        .expect("committed offsets")
}

fn as_committed(offsets: &BTreeMap<i32, i64>) -> BTreeMap<i32, Option<i64>> {
    offsets.iter().map(|(p, o)| (*p, Some(*o))).collect()
}

/// The orders as raw messages in send order, the n-th stamped `first_ms + n × step_ms`, each
/// also told to the model.
fn stamped(orders: &[RawOrder], first_ms: i64, step_ms: i64, model: &mut Model) -> Vec<Outgoing> {
    let messages: Vec<Outgoing> = orders
        .iter()
        .enumerate()
        .map(|(n, order)| Outgoing {
            key: order.object_id.to_string(),
            payload: serde_json::to_vec(order).expect("serialize"),
            timestamp_ms: Some(first_ms + n as i64 * step_ms),
        })
        .collect();
    for message in &messages {
        model.sent(&message.payload).expect("a countable order");
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_an_hour_of_every_stage_into_a_live_warehouse_leaves_the_counters_exact(
) -> anyhow::Result<()> {
    let mut p = Pipeline::start(3).await?;
    let d = vault_tests::orders::random_dictionary(12, 3);
    p.put_dictionary(&d).await?;
    let mut model = Model::new();
    model.dictionary(&d);

    // 600 orders and their later versions, stamped evenly over the hour up to now, in send
    // order (so each partition's timestamps rise with its offsets, as in a live topic).
    let mut rng = rand::rngs::StdRng::seed_from_u64(43);
    let orders = datagen::generate::orders(&mut rng, &d, 50_000, 600);
    let now = Utc::now();
    let first = now - TimeDelta::minutes(55);
    let step_ms = TimeDelta::minutes(55).num_milliseconds() / orders.len() as i64;
    let messages = stamped(&orders, first.timestamp_millis(), step_ms, &mut model);
    let placed = produce_placed(p.stack, &p.raw_topic, &messages).await?;
    p.settle(SETTLE).await;
    oracle::assert_exact(&p, &model).await;
    let warehouse_before = p.snapshot().await?;
    let counters_before = oracle::stored(&p).await?;
    let raw_ends = p.end_offsets(&p.raw_topic).await?;
    let enriched_ends = p.end_offsets(&p.enriched_topic).await?;
    let counter_ends = p.end_offsets(&p.counter_topic).await?;
    assert_eq!(raw_ends.values().sum::<i64>(), messages.len() as i64);

    let kafka = kafka_settings(&p)?;
    let groups: BTreeMap<Service, String> = Service::ALL
        .into_iter()
        .map(|service| (service, p.group(service).to_owned()))
        .collect();
    let request = |service: Service, topic: &str, from: RewindStart| RewindRequest {
        group: groups[&service].clone(),
        topic: topic.to_owned(),
        from,
        dry_run: false,
        wait: None,
        allow_skip: false,
    };
    let an_hour_ago = RewindStart::Timestamp(Utc::now() - TimeDelta::hours(1));

    // While service-stg runs, the rewind is refused, naming the member, and nothing moves.
    let refused = rewind_group(
        &kafka,
        &request(Service::Stg, &p.raw_topic, an_hour_ago.clone()),
        |_| {},
    )
    .await
    .expect_err("a rewind of a group with a running member");
    match &refused {
        RewindError::ActiveMembers { members, .. } => assert_eq!(members.len(), 1, "{refused}"),
        other => panic!("refused for another reason: {other}"),
    }
    assert!(refused.to_string().contains("stop"), "{refused}");
    assert_eq!(
        committed(&p, Service::Stg, &p.raw_topic).await,
        as_committed(&raw_ends)
    );

    // A dry run (allowed while running) resolves a timestamp in the middle of the hour to the
    // offsets the broker wrote the messages at: per partition, the first message stamped at
    // or after it. Computed here from the delivery reports.
    let stamp = |message: &Outgoing| message.timestamp_ms.expect("stamped");
    let middle = stamp(&messages[messages.len() / 2]);
    let mut expected_targets = raw_ends.clone();
    for (message, at) in messages.iter().zip(&placed) {
        if stamp(message) >= middle {
            let target = expected_targets.get_mut(&at.partition).expect("partition");
            *target = (*target).min(at.offset);
        }
    }
    let mut said = Vec::new();
    let dry = rewind_group(
        &kafka,
        &RewindRequest {
            dry_run: true,
            ..request(
                Service::Stg,
                &p.raw_topic,
                RewindStart::Timestamp(
                    chrono::DateTime::from_timestamp_millis(middle).expect("timestamp"),
                ),
            )
        },
        |line| said.push(line.to_owned()),
    )
    .await?;
    eprintln!("{}", said.join("\n"));
    assert_eq!(dry.targets(), expected_targets, "{}", said.join("\n"));
    assert!(said.iter().any(|line| line.contains("dry run")), "{said:?}");
    assert!(dry.reprocessed() > 0 && dry.reprocessed() < messages.len() as i64);
    assert_eq!(
        committed(&p, Service::Stg, &p.raw_topic).await,
        as_committed(&raw_ends),
        "a dry run changed the offsets"
    );

    // With --wait the tool waits for the operator to stop the service, then rewinds.
    let (waiting_tx, waiting) = tokio::sync::oneshot::channel::<()>();
    let waiting_replay = {
        let kafka = kafka.clone();
        let request = RewindRequest {
            wait: Some(Duration::from_secs(120)),
            ..request(Service::Stg, &p.raw_topic, an_hour_ago.clone())
        };
        let mut waiting_tx = Some(waiting_tx);
        tokio::spawn(async move {
            rewind_group(&kafka, &request, |line| {
                if line.starts_with("waiting") {
                    if let Some(tx) = waiting_tx.take() {
                        let _ = tx.send(());
                    }
                }
            })
            .await
        })
    };
    tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .context("the tool never said it was waiting")??;
    for service in Service::ALL {
        p.stop_service(service).await?;
    }
    let stg_plan = tokio::time::timeout(Duration::from_secs(150), waiting_replay)
        .await
        .context("the waiting rewind did not finish")???;
    // One hour ago is before the first message: every partition goes back to its start.
    let zeros: BTreeMap<i32, i64> = raw_ends.keys().map(|p| (*p, 0)).collect();
    assert_eq!(stg_plan.targets(), zeros);
    assert_eq!(stg_plan.reprocessed(), messages.len() as i64);
    assert_eq!(
        committed(&p, Service::Stg, &p.raw_topic).await,
        as_committed(&zeros)
    );

    // dds from the middle of its topic, by offsets per partition; cdm from offset 0. Both
    // are stopped; the wait only covers a broker that takes a moment to forget a member.
    let halves: BTreeMap<i32, i64> = enriched_ends.iter().map(|(p, end)| (*p, end / 2)).collect();
    let stopped = |service: Service, topic: &str, from: RewindStart| RewindRequest {
        wait: Some(Duration::from_secs(60)),
        ..request(service, topic, from)
    };
    // Forward past what the group has not processed yet is refused unless asked for: those
    // messages would never be counted.
    let skipping = rewind_group(
        &kafka,
        &stopped(Service::Stg, &p.raw_topic, RewindStart::Offset(5)),
        |_| {},
    )
    .await
    .expect_err("a rewind that skips unprocessed messages");
    assert!(
        matches!(&skipping, RewindError::WouldSkip { partitions, .. } if partitions.len() == 3),
        "{skipping}"
    );
    assert_eq!(
        committed(&p, Service::Stg, &p.raw_topic).await,
        as_committed(&zeros)
    );

    let dds_plan = rewind_group(
        &kafka,
        &stopped(
            Service::Dds,
            &p.enriched_topic,
            RewindStart::Offsets(halves.clone()),
        ),
        |_| {},
    )
    .await?;
    assert_eq!(dds_plan.targets(), halves);
    assert_eq!(
        committed(&p, Service::Dds, &p.enriched_topic).await,
        as_committed(&halves)
    );
    let cdm_plan = rewind_group(
        &kafka,
        &stopped(Service::Cdm, &p.counter_topic, RewindStart::Offset(0)),
        |_| {},
    )
    .await?;
    assert_eq!(cdm_plan.reprocessed(), counter_ends.values().sum::<i64>());
    assert_eq!(
        committed(&p, Service::Cdm, &p.counter_topic).await,
        as_committed(&counter_ends.keys().map(|p| (*p, 0)).collect())
    );

    // Restarted, every stage works through its rewound stretch and catches up again.
    for service in Service::ALL {
        p.start_service(service).await?;
    }
    p.settle(SETTLE).await;
    for (service, topic) in [
        (Service::Stg, &p.raw_topic),
        (Service::Dds, &p.enriched_topic),
        (Service::Cdm, &p.counter_topic),
    ] {
        let ends = p.end_offsets(topic).await?;
        assert_eq!(
            committed(&p, service, topic).await,
            as_committed(&ends),
            "{service:?} did not reach the end of {topic} again"
        );
    }
    // stg really processed everything again: it republished every raw message. dds found
    // nothing newer in them (nor in its own rewound half), so it published nothing new.
    let enriched_after = p.end_offsets(&p.enriched_topic).await?;
    assert_eq!(
        enriched_after.values().sum::<i64>(),
        enriched_ends.values().sum::<i64>() + messages.len() as i64
    );
    assert_eq!(p.end_offsets(&p.counter_topic).await?, counter_ends);

    assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
    assert_eq!(oracle::stored(&p).await?, counters_before);
    oracle::assert_exact(&p, &model).await;
    assert_eq!(
        p.snapshot().await?,
        warehouse_before,
        "the replay changed the warehouse"
    );
    p.shutdown().await
}

/// A backfill: orders stamped three years ago (their original send times) arrive on a source
/// topic that keeps its history, on a broker whose time retention (24 h) is checked every
/// half second. The stages pass each order's send time on in the `vaultline-sent-ms` header
/// and stamp their own messages with the time they publish them, so the retention check that
/// deletes an old-stamped message on another topic, while service-dds is stopped, leaves the
/// internal topic whole: service-dds, started afterwards, counts every order exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_stamped_years_ago_outlives_the_internal_topics_time_retention(
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use vault_tests::pipeline::Overrides;
    use vault_tests::servers::{KafkaOptions, PrivateKafka};

    let broker = PrivateKafka::start_with(KafkaOptions {
        settings: vec!["log.retention.check.interval.ms=500".to_owned()],
        ..KafkaOptions::default()
    })
    .await?;
    let mut p = Pipeline::start_with(
        2,
        Overrides {
            kafka_bootstrap: Some(broker.bootstrap()),
            ..Overrides::default()
        },
    )
    .await?;
    let admin: AdminClient<DefaultClientContext> = p.stack.kafka_config().create()?;
    let keep_history =
        AlterConfig::new(ResourceSpecifier::Topic(&p.raw_topic)).set("retention.ms", "-1");
    for result in admin
        .alter_configs([&keep_history], &AdminOptions::new())
        .await?
    {
        result.map_err(|(resource, code)| anyhow::anyhow!("{resource:?}: {code}"))?;
    }
    // The broker applies a topic's new configuration shortly after it answered.
    vault_tests::eventually(
        "the source topic to keep its history",
        Duration::from_secs(30),
        || async {
            let raw = ResourceSpecifier::Topic(&p.raw_topic);
            let described = admin.describe_configs([&raw], &AdminOptions::new()).await;
            let resource = described.ok()?.pop()?.ok()?;
            let retention = resource.get("retention.ms")?.value.clone()?;
            (retention == "-1").then_some(())
        },
    )
    .await;
    let d = vault_tests::orders::random_dictionary(12, 3);
    p.put_dictionary(&d).await?;
    let mut model = Model::new();
    model.dictionary(&d);
    p.stop_service(Service::Dds).await?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(61);
    let orders = datagen::generate::orders(&mut rng, &d, 61_000, 300);
    let three_years_ago = (Utc::now() - TimeDelta::days(3 * 365)).timestamp_millis();
    let messages = stamped(&orders, three_years_ago, 1_000, &mut model);
    produce_placed(p.stack, &p.raw_topic, &messages).await?;
    let raw_total: i64 = p.end_offsets(&p.raw_topic).await?.values().sum();
    vault_tests::eventually("service-stg to commit the backfill", SETTLE, || async {
        (p.committed(Service::Stg).await.ok()? == raw_total).then_some(())
    })
    .await;

    // The broker does delete by time here: a message stamped like the backfill, on a topic of
    // the default retention, is gone within a few checks.
    let control = vault_tests::unique("retention-control");
    p.stack
        .create_topics(std::slice::from_ref(&control), 1)
        .await?;
    produce_placed(
        p.stack,
        &control,
        &[Outgoing {
            key: "k".to_owned(),
            payload: b"x".to_vec(),
            timestamp_ms: Some(three_years_ago),
        }],
    )
    .await?;
    let watermarks: BaseConsumer = p.stack.kafka_config().create()?;
    let watermarks_of = |topic: &str, partition: i32| {
        watermarks.fetch_watermarks(topic, partition, Duration::from_secs(10))
    };
    vault_tests::eventually(
        "the retention check to delete the old-stamped control message",
        Duration::from_secs(60),
        || async { (watermarks_of(&control, 0).ok()? == (1, 1)).then_some(()) },
    )
    .await;

    // The internal topic, written before that check and not yet read, is whole; its messages
    // carry the original send times in the header and the time of publishing as timestamp.
    for partition in p.end_offsets(&p.enriched_topic).await?.keys() {
        assert_eq!(
            watermarks_of(&p.enriched_topic, *partition)?.0,
            0,
            "partition {partition} lost its start"
        );
    }
    let enriched = p.read_topic(&p.enriched_topic).await?;
    assert!(!enriched.is_empty());
    let sent: std::collections::BTreeSet<i64> =
        messages.iter().filter_map(|m| m.timestamp_ms).collect();
    let an_hour_ago = (Utc::now() - TimeDelta::hours(1)).timestamp_millis();
    let carries_a_send_time = |message: &Read| {
        assert!(
            message.sent_header.is_some_and(|ms| sent.contains(&ms)),
            "{}: sent {:?}",
            message.key,
            message.sent_header
        );
    };
    for message in &enriched {
        carries_a_send_time(message);
        assert!(
            message.timestamp_ms > Some(an_hour_ago),
            "{}: stamped {:?}, not when published",
            message.key,
            message.timestamp_ms
        );
    }

    p.start_service(Service::Dds).await?;
    p.settle(SETTLE).await;
    oracle::assert_exact(&p, &model).await;
    assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
    // service-dds passed the send times on to the counter events.
    let events = p.read_topic(&p.counter_topic).await?;
    assert!(!events.is_empty());
    events.iter().for_each(carries_a_send_time);
    p.shutdown().await
}
