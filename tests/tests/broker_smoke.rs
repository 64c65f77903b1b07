//! The broker smoke test: proves, with the client the services use (rdkafka), the Kafka
//! behaviour the pipeline relies on — an idempotent producer whose deliveries are acknowledged,
//! keyed messages staying in one partition in produce order, offsets stored by hand and
//! committed synchronously, and a new member of a group resuming exactly at the committed
//! offsets. It runs against whichever broker the harness finds: Apache Kafka
//! from `scripts/stack.sh`, or from a container when Docker supplies it.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use anyhow::{anyhow, bail, ensure, Context as _};
use rdkafka::{
    consumer::{CommitMode, Consumer as _, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
    Message as _,
};
use vault_tests::{stack, unique, Stack};

const PARTITIONS: i32 = 3;
const KEYS: usize = 12;
const PER_KEY: usize = 5;
const TOTAL: usize = KEYS * PER_KEY;
const HALF: usize = TOTAL / 2;

/// The bound on each phase: a group join alone waits out the broker's initial rebalance delay
/// (0 s as the stack sets it, 3 s by Kafka's default).
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

/// One message as the broker placed it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Placed {
    partition: i32,
    offset: i64,
    key: String,
    /// The message's position among the messages of its key, in produce order.
    seq: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_exactly_at_its_committed_offsets_and_keys_keep_their_order(
) -> anyhow::Result<()> {
    let stack = stack().await;
    let topic = unique("smoke");
    let group = unique("smoke-group");
    stack
        .create_topics(std::slice::from_ref(&topic), PARTITIONS)
        .await?;

    let produced = produce(stack, &topic).await?;
    check_keys_keep_partition_and_order(&produced)?;
    // A fresh topic, and an idempotent producer: each partition holds exactly what was sent,
    // from offset 0 with no gap and no duplicate from a retry.
    for (partition, offsets) in offsets_by_partition(&produced) {
        let expected: Vec<i64> = (0..).take(offsets.len()).collect();
        ensure!(
            offsets == expected,
            "partition {partition} holds offsets {offsets:?}, expected {expected:?}"
        );
    }
    let partitions_used = offsets_by_partition(&produced).len();
    ensure!(
        partitions_used > 1,
        "all {KEYS} keys went to one partition; the test would not exercise partitioning"
    );

    // The first member processes half of the messages, stores their offsets and commits them
    // synchronously, then leaves the group.
    let first = subscribe(stack, &group, &topic)?;
    let processed = consume(&first, HALF).await?;
    first
        .commit_consumer_state(CommitMode::Sync)
        .context("committing the stored offsets")?;
    drop(first);

    let mut expected_commits: BTreeMap<i32, Option<i64>> =
        (0..PARTITIONS).map(|partition| (partition, None)).collect();
    for (partition, offsets) in offsets_by_partition(&processed) {
        expected_commits.insert(partition, offsets.last().map(|last| last + 1));
    }
    let committed = stack.committed_offsets(&group, &topic).await?;
    ensure!(
        committed == expected_commits,
        "the group committed {committed:?}, expected {expected_commits:?}"
    );

    // A new member of the same group must start at the committed offsets: had it started
    // earlier its first messages would repeat processed ones, had it started later it could
    // not find the other half.
    let second = subscribe(stack, &group, &topic)?;
    let resumed = consume(&second, TOTAL - HALF).await?;
    let processed_set: BTreeSet<&Placed> = processed.iter().collect();
    let repeated: Vec<&Placed> = resumed
        .iter()
        .filter(|placed| processed_set.contains(placed))
        .collect();
    ensure!(
        repeated.is_empty(),
        "the resumed member got already processed messages: {repeated:?}"
    );
    let mut everything: Vec<Placed> = processed.iter().chain(&resumed).cloned().collect();
    everything.sort();
    let mut all_produced = produced.clone();
    all_produced.sort();
    ensure!(
        everything == all_produced,
        "the two members together did not receive exactly what was produced"
    );
    for (partition, offsets) in offsets_by_partition(&resumed) {
        let committed_here = expected_commits
            .get(&partition)
            .copied()
            .flatten()
            .unwrap_or(0);
        ensure!(
            offsets.first() == Some(&committed_here),
            "partition {partition} resumed at {:?}, committed {committed_here}",
            offsets.first()
        );
    }
    // Receive order across both members is produce order per key.
    check_keys_keep_partition_and_order(&[processed, resumed.clone()].concat())?;

    second
        .commit_consumer_state(CommitMode::Sync)
        .context("committing the second half")?;
    drop(second);
    let committed = stack.committed_offsets(&group, &topic).await?;
    let ends: BTreeMap<i32, Option<i64>> = (0..PARTITIONS)
        .map(|partition| {
            let count = produced.iter().filter(|p| p.partition == partition).count();
            let end = i64::try_from(count).ok().filter(|&end| end > 0);
            (partition, end)
        })
        .collect();
    ensure!(
        committed == ends,
        "after the second half the group committed {committed:?}, expected the ends {ends:?}"
    );
    Ok(())
}

/// Produces `PER_KEY` rounds over `KEYS` keys through an idempotent producer, all in flight at
/// once, and returns where each message landed according to its delivery report.
async fn produce(stack: &Stack, topic: &str) -> anyhow::Result<Vec<Placed>> {
    let producer: FutureProducer = stack
        .kafka_config()
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "20000")
        .create()
        .context("creating an idempotent producer")?;

    let mut deliveries = Vec::with_capacity(TOTAL);
    for seq in 0..PER_KEY {
        for key in 0..KEYS {
            let key = format!("key-{key:02}");
            let payload = format!("{key}/{seq}");
            // `send_result` enqueues now, so enqueue order is produce order; the delivery
            // reports are awaited together below.
            let delivery = producer
                .send_result(FutureRecord::to(topic).key(&key).payload(&payload))
                .map_err(|(error, _)| anyhow!("enqueueing {payload}: {error}"))?;
            deliveries.push((key, seq, delivery));
        }
    }

    let mut placed = Vec::with_capacity(TOTAL);
    for (key, seq, delivery) in deliveries {
        let report = tokio::time::timeout(PHASE_TIMEOUT, delivery)
            .await
            .with_context(|| format!("no delivery report for {key}/{seq}"))?
            .context("the producer dropped a delivery report")?;
        let delivered = report
            .map_err(|(error, _)| anyhow!("the broker did not acknowledge {key}/{seq}: {error}"))?;
        placed.push(Placed {
            partition: delivered.partition,
            offset: delivered.offset,
            key,
            seq,
        });
    }
    Ok(placed)
}

fn subscribe(stack: &Stack, group: &str, topic: &str) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = stack
        .kafka_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
        .context("creating a consumer")?;
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("subscribing to {topic}"))?;
    Ok(consumer)
}

/// Receives `count` messages, storing each one's offset once it is "processed" (recorded).
async fn consume(consumer: &StreamConsumer, count: usize) -> anyhow::Result<Vec<Placed>> {
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| {
                anyhow!(
                    "received {} of {count} messages within {PHASE_TIMEOUT:?}",
                    received.len()
                )
            })?
            .context("receiving")?;
        let payload = message
            .payload_view::<str>()
            .ok_or_else(|| anyhow!("a message without payload"))?
            .context("a payload that is not UTF-8")?;
        let (key, seq) = payload
            .split_once('/')
            .ok_or_else(|| anyhow!("unexpected payload {payload:?}"))?;
        ensure!(
            message.key() == Some(key.as_bytes()),
            "payload {payload:?} arrived under another key"
        );
        received.push(Placed {
            partition: message.partition(),
            offset: message.offset(),
            key: key.to_owned(),
            seq: seq
                .parse()
                .context("a payload with a bad sequence number")?,
        });
        consumer
            .store_offset_from_message(&message)
            .context("storing an offset")?;
    }
    Ok(received)
}

/// Every key's messages are in one partition, at increasing offsets, in produce order (in the
/// order of `placed`, which is produce or receive order).
fn check_keys_keep_partition_and_order(placed: &[Placed]) -> anyhow::Result<()> {
    let mut by_key: BTreeMap<&str, Vec<&Placed>> = BTreeMap::new();
    for message in placed {
        by_key.entry(&message.key).or_default().push(message);
    }
    for (key, messages) in by_key {
        let partitions: BTreeSet<i32> = messages.iter().map(|m| m.partition).collect();
        if partitions.len() != 1 {
            bail!("key {key} is spread over partitions {partitions:?}");
        }
        let seqs: Vec<usize> = messages.iter().map(|m| m.seq).collect();
        let offsets: Vec<i64> = messages.iter().map(|m| m.offset).collect();
        ensure!(
            seqs.windows(2).all(|w| w[0] < w[1]) && offsets.windows(2).all(|w| w[0] < w[1]),
            "key {key} is out of produce order: seqs {seqs:?} at offsets {offsets:?}"
        );
    }
    Ok(())
}

/// The offsets of `placed` per partition, sorted.
fn offsets_by_partition(placed: &[Placed]) -> BTreeMap<i32, Vec<i64>> {
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for message in placed {
        by_partition
            .entry(message.partition)
            .or_default()
            .push(message.offset);
    }
    for offsets in by_partition.values_mut() {
        offsets.sort_unstable();
    }
    by_partition
}
