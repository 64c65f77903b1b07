//! The broker facts the services rely on (docs/kafka.md), each established by a test here or in
//! `broker_smoke.rs`, with the client the services use (rdkafka 0.39, librdkafka 2.12), on
//! Apache Kafka as the stack runs it:
//! - two members of a group split the partitions, with the eager and the cooperative-sticky
//!   assignors;
//! - headers, message timestamps and gzip, lz4 and snappy compression round-trip;
//! - the idempotent producer obtains a producer id and delivers without gap or duplicate;
//! - a group's members can be listed and described, offsets looked up by timestamp, and a
//!   group without members rewound from outside, while a commit from outside to a group with
//!   a member is refused (what `vaultctl rewind` relies on);
//! - zstd is not available in this client build;
//! - a new group's first assignment waits for the initial rebalance delay (3 s by Kafka's
//!   default; `scripts/kafka.sh` sets 0 s).
//!
//! The last one compares two brokers' settings, so it runs against private brokers
//! (`servers::PrivateKafka`); the others run against whichever broker the harness finds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context as _};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{Message, Offset, TopicPartitionList};
use vault_tests::servers::{KafkaOptions, PrivateKafka};
use vault_tests::{stack, unique, Stack};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A broker of the harness's kind for the private-broker tests: just its address.
fn private_stack(broker: &PrivateKafka) -> Stack {
    Stack {
        kafka_bootstrap: broker.bootstrap(),
        database_admin_url: String::new(),
        redis_url: String::new(),
    }
}

fn consumer(stack: &Stack, group: &str, extra: &[(&str, &str)]) -> anyhow::Result<BaseConsumer> {
    let mut config: ClientConfig = stack.kafka_config();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config.create().context("creating a consumer")
}

/// A base for explicit message timestamps: an hour ago, to the second. Inside the broker's time
/// retention (24 h in `scripts/kafka.sh`, 7 days by Kafka's default): a retention check (every
/// 5 min) deletes a segment whose newest timestamp is older, even while a test still reads it.
fn an_hour_ago_ms() -> i64 {
    (chrono::Utc::now().timestamp() - 3_600) * 1_000
}

fn assigned(consumer: &BaseConsumer) -> BTreeSet<i32> {
    consumer
        .assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_the_partitions_with_the_eager_and_the_cooperative_sticky_assignor(
) -> anyhow::Result<()> {
    let stack = stack().await;
    for strategy in ["range", "roundrobin", "cooperative-sticky"] {
        let topic = unique("facts-assign");
        stack.create_topics(std::slice::from_ref(&topic), 4).await?;
        let group = unique("facts-assign");
        let config = [("partition.assignment.strategy", strategy)];
        let (first, second) = (
            consumer(stack, &group, &config)?,
            consumer(stack, &group, &config)?,
        );
        first.subscribe(&[&topic])?;
        second.subscribe(&[&topic])?;
        let split = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + TIMEOUT;
            while Instant::now() < deadline {
                // Polling serves the group protocol (joins, syncs, rebalance callbacks).
                let _ = first.poll(Duration::from_millis(100));
                let _ = second.poll(Duration::from_millis(100));
                let (a, b) = (assigned(&first), assigned(&second));
                let all: BTreeSet<i32> = a.union(&b).copied().collect();
                if !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && all.len() == 4 {
                    return Some((a, b));
                }
            }
            None
        })
        .await?;
        let (a, b) = split
            .ok_or_else(|| anyhow!("{strategy}: the two members did not split the 4 partitions"))?;
        ensure!(a.len() == 2 && b.len() == 2, "{strategy}: {a:?} / {b:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_timestamps_and_gzip_lz4_and_snappy_batches_round_trip() -> anyhow::Result<()> {
    let stack = stack().await;
    for codec in ["gzip", "lz4", "snappy", "none"] {
        let topic = unique("facts-codec");
        stack.create_topics(std::slice::from_ref(&topic), 1).await?;
        let producer: FutureProducer = stack
            .kafka_config()
            .set("compression.type", codec)
            .set("linger.ms", "20")
            .create()
            .with_context(|| format!("a {codec} producer"))?;
        let base_ms = an_hour_ago_ms();
        let mut deliveries = Vec::new();
        for n in 0..50_i64 {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "trace",
                    value: Some(&format!("t-{n}")),
                })
                .insert(Header {
                    key: "empty",
                    value: None::<&[u8]>,
                });
            // Compressible payloads, so a batch is really compressed.
            let payload = format!("{n}:{}", "abc".repeat(200));
            deliveries.push(
                producer
                    .send_result(
                        FutureRecord::to(&topic)
                            .key(&format!("k{n}"))
                            .payload(&payload)
                            .headers(headers)
                            .timestamp(base_ms + n * 1000),
                    )
                    .map_err(|(e, _)| anyhow!("{codec}: enqueueing: {e}"))?,
            );
        }
        for delivery in deliveries {
            tokio::time::timeout(TIMEOUT, delivery)
                .await
                .context("no delivery report")??
                .map_err(|(e, _)| anyhow!("{codec}: not acknowledged: {e}"))?;
        }

        let reader = consumer(stack, &unique("facts-codec"), &[])?;
        let mut partition = TopicPartitionList::new();
        partition.add_partition_offset(&topic, 0, Offset::Beginning)?;
        reader.assign(&partition)?;
        let received = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + TIMEOUT;
            let mut received = Vec::new();
            while received.len() < 50 && Instant::now() < deadline {
                if let Some(message) = reader.poll(Duration::from_millis(200)) {
                    let m = message?;
                    let headers: Vec<(String, Option<Vec<u8>>)> = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default();
                    received.push((
                        m.offset(),
                        m.key().map(<[u8]>::to_vec),
                        m.payload().map(<[u8]>::to_vec),
                        m.timestamp().to_millis(),
                        headers,
                    ));
                }
            }
            anyhow::Ok(received)
        })
        .await??;
        ensure!(
            received.len() == 50,
            "{codec}: got {} of 50",
            received.len()
        );
        for (n, (offset, key, payload, timestamp, headers)) in received.into_iter().enumerate() {
            let n = n as i64;
            ensure!(offset == n, "{codec}: offset {offset} for message {n}");
            ensure!(
                key == Some(format!("k{n}").into_bytes()),
                "{codec}: key of {n}"
            );
            ensure!(
                payload == Some(format!("{n}:{}", "abc".repeat(200)).into_bytes()),
                "{codec}: payload of {n}"
            );
            ensure!(
                timestamp == Some(base_ms + n * 1000),
                "{codec}: timestamp {timestamp:?} of {n}"
            );
            ensure!(
                headers
                    == vec![
                        ("trace".to_owned(), Some(format!("t-{n}").into_bytes())),
                        ("empty".to_owned(), None),
                    ],
                "{codec}: headers {headers:?} of {n}"
            );
        }
    }
    Ok(())
}

/// Keeps the idempotence part of the producer's latest statistics.
#[derive(Debug, Default, Clone)]
struct EosStats(Arc<Mutex<Option<(String, i64, i64)>>>);

impl ClientContext for EosStats {
    fn stats(&self, statistics: Statistics) {
        if let Some(eos) = statistics.eos {
            *self.0.lock().expect("lock") =
                Some((eos.idemp_state, eos.producer_id, eos.producer_epoch));
        }
    }
}

impl ProducerContext for EosStats {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idempotent_producer_gets_a_producer_id_and_delivers_without_gaps_or_duplicates(
) -> anyhow::Result<()> {
    let stack = stack().await;
    let topic = unique("facts-idempotent");
    stack.create_topics(std::slice::from_ref(&topic), 3).await?;
    let stats = EosStats::default();
    let producer: rdkafka::producer::BaseProducer<EosStats> = stack
        .kafka_config()
        .set("enable.idempotence", "true")
        .set("statistics.interval.ms", "100")
        .create_with_context(stats.clone())
        .context("an idempotent producer")?;
    for n in 0..300 {
        let payload = format!("{n}");
        producer
            .send(
                rdkafka::producer::BaseRecord::to(&topic)
                    .key(&format!("k{}", n % 11))
                    .payload(&payload),
            )
            .map_err(|(e, _)| anyhow!("enqueueing: {e}"))?;
    }
    let producer =
        tokio::task::spawn_blocking(move || producer.flush(TIMEOUT).map(|()| producer)).await??;
    let deadline = Instant::now() + TIMEOUT;
    let (state, id, epoch) = loop {
        producer.poll(Duration::from_millis(100));
        if let Some(found) = stats.0.lock().expect("lock").clone() {
            if found.0 == "Assigned" {
                break found;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "no producer id in the statistics"
        );
    };
    ensure!(id >= 0 && epoch >= 0, "{state}: PID {id}, epoch {epoch}");
    eprintln!("the broker gave the idempotent producer PID {id}, epoch {epoch}");

    // Exactly what was sent: each partition holds 0..n, and n add up to 300.
    let reader = consumer(stack, &unique("facts-idempotent"), &[])?;
    let mut total = 0;
    for partition in 0..3 {
        let (low, high) = reader.fetch_watermarks(&topic, partition, TIMEOUT)?;
        ensure!(low == 0, "partition {partition} starts at {low}");
        total += high;
    }
    ensure!(
        total == 300,
        "the topic holds {total} messages, 300 were sent"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_can_be_described_looked_up_by_time_and_rewound_from_outside_when_empty(
) -> anyhow::Result<()> {
    let stack = stack().await;
    let topic = unique("facts-rewind");
    stack.create_topics(std::slice::from_ref(&topic), 1).await?;
    let producer: FutureProducer = stack.kafka_config().create()?;
    let base_ms = an_hour_ago_ms();
    for n in 0..10_i64 {
        producer
            .send(
                FutureRecord::to(&topic)
                    .key("k")
                    .payload("x")
                    .timestamp(base_ms + n * 60_000),
                TIMEOUT,
            )
            .await
            .map_err(|(e, _)| anyhow!("producing: {e}"))?;
    }
    let group = unique("facts-rewind");
    let outsider = consumer(stack, &group, &[])?;

    // ListOffsets with timestamps: the first message at or after the instant, else the end.
    for (at, expected) in [
        (base_ms - 1, Offset::Offset(0)),
        (base_ms + 3 * 60_000, Offset::Offset(3)),
        (base_ms + 3 * 60_000 + 1, Offset::Offset(4)),
        (base_ms + 60 * 60_000, Offset::End),
    ] {
        let mut query = TopicPartitionList::new();
        query.add_partition_offset(&topic, 0, Offset::Offset(at))?;
        let found = outsider.offsets_for_times(query, TIMEOUT)?;
        let offset = found.elements()[0].offset();
        ensure!(
            offset == expected,
            "at {at}: {offset:?}, expected {expected:?}"
        );
    }

    // A member shows in the group's description (ListGroups + DescribeGroups) while it is in
    // the group, and not once it has left.
    let member = consumer(stack, &group, &[])?;
    member.subscribe(&[&topic])?;
    let member_topic = topic.clone();
    let member = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + TIMEOUT;
        while assigned(&member).is_empty() {
            ensure!(Instant::now() < deadline, "the member got no assignment");
            let _ = member.poll(Duration::from_millis(100));
        }
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(&member_topic, 0, Offset::Offset(7))?;
        member.commit(&offsets, CommitMode::Sync)?;
        anyhow::Ok(member)
    })
    .await??;
    let described = describe(&outsider, &group)?;
    ensure!(
        described.iter().map(|(_, members)| members).sum::<usize>() == 1,
        "while a member consumes: {described:?}"
    );
    let mut rewind = TopicPartitionList::new();
    rewind.add_partition_offset(&topic, 0, Offset::Offset(2))?;
    // From outside, while a member is in the group: refused (Kafka answers UNKNOWN_MEMBER_ID), and the member's offset stays.
    let while_active = outsider.commit(&rewind, CommitMode::Sync);
    ensure!(
        while_active.is_err(),
        "an outside commit to a group with a member was accepted"
    );
    eprintln!("an outside commit while the group has a member: {while_active:?}");
    let committed = stack.committed_offsets(&group, &topic).await?;
    ensure!(
        committed == BTreeMap::from([(0, Some(7))]),
        "after the refused commit: {committed:?}"
    );
    drop(member);

    let described = describe(&outsider, &group)?;
    ensure!(
        described.iter().all(|(_, members)| *members == 0),
        "after the member left: {described:?}"
    );
    outsider
        .commit(&rewind, CommitMode::Sync)
        .context("an outside commit to an empty group")?;
    let committed = stack.committed_offsets(&group, &topic).await?;
    ensure!(
        committed == BTreeMap::from([(0, Some(2))]),
        "after the rewind: {committed:?}"
    );
    Ok(())
}

/// The state and member count of `group`, as ListGroups + DescribeGroups report it.
fn describe(client: &BaseConsumer, group: &str) -> anyhow::Result<Vec<(String, usize)>> {
    Ok(client
        .fetch_group_list(Some(group), TIMEOUT)?
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .map(|g| (g.state().to_owned(), g.members().len()))
        .collect())
}

#[test]
fn zstd_is_not_available_in_this_client_build() {
    let created: Result<FutureProducer, _> = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9")
        .set("compression.type", "zstd")
        .create();
    let error = created.err().expect("a zstd producer was created");
    assert!(
        error.to_string().contains("zstd") || format!("{error:?}").contains("zstd"),
        "{error:?}"
    );
}

/// How long a new group's only member waits for its first assignment on `stack`.
async fn first_assignment_after(stack: &Stack) -> anyhow::Result<Duration> {
    let topic = unique("facts-delay");
    stack.create_topics(std::slice::from_ref(&topic), 1).await?;
    let member = consumer(stack, &unique("facts-delay"), &[])?;
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        member.subscribe(&[&topic])?;
        while assigned(&member).is_empty() {
            ensure!(started.elapsed() < TIMEOUT, "no assignment");
            let _ = member.poll(Duration::from_millis(20));
        }
        Ok(started.elapsed())
    })
    .await?
}

/// As [`first_assignment_after`], for a broker's second group: the first one also waits for the
/// broker to create its offsets topic, which is not what is measured here.
async fn second_groups_first_assignment(stack: &Stack) -> anyhow::Result<Duration> {
    first_assignment_after(stack).await?;
    first_assignment_after(stack).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_delays_a_new_groups_first_assignment_by_3_s_unless_told_0_s() -> anyhow::Result<()> {
    // Kafka's own default, which the stack's settings (scripts/kafka.sh) override with 0.
    let default = PrivateKafka::start_with(KafkaOptions {
        settings: vec!["group.initial.rebalance.delay.ms=3000".into()],
        ..KafkaOptions::default()
    })
    .await?;
    let by_default = second_groups_first_assignment(&private_stack(&default)).await?;
    drop(default);
    let zero = PrivateKafka::start().await?;
    let with_zero = second_groups_first_assignment(&private_stack(&zero)).await?;
    eprintln!("first assignment: {by_default:?} by default, {with_zero:?} with 0 s");
    ensure!(
        by_default >= Duration::from_millis(2900),
        "by default the first assignment came after {by_default:?}"
    );
    ensure!(
        with_zero + Duration::from_millis(1500) < by_default,
        "with 0 s: {with_zero:?}, by default: {by_default:?}"
    );
    Ok(())
}
