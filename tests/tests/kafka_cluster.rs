//! A three-broker Apache Kafka cluster on one machine (`servers::PrivateKafka`: three KRaft
//! nodes on loopback, each a controller and a broker, `min.insync.replicas=2`), the pipeline's
//! services pointed at all three, loses one broker to a kill -9 mid-stream.
//!
//! What is proven, and how:
//! - the pipeline's topics really are replicated three ways: the cluster's metadata lists three
//!   replicas, all in sync, for every partition before the crash, and again at the end, once the
//!   crashed broker is back and its replicas have caught up;
//! - the crash hits mid-stream: the datamart has started filling, and it is incomplete and the
//!   groups have messages uncommitted when the broker dies (asserted). The broker killed leads
//!   partitions of the pipeline's topics (the most; among equals, the one coordinating the most
//!   of the pipeline's consumer groups), so partition leaders and group coordinators must move;
//! - the pipeline carries on without it: once the metadata shows the failover (every partition
//!   led by a survivor, the ISRs down to the two survivors), the enriched and counter topics grow
//!   (the services' writes, `acks=all`, acknowledged by both in-sync replicas), the groups'
//!   committed offsets grow (through the surviving coordinators) and the datamart grows, all
//!   before the broker is restarted;
//! - nothing is lost, duplicated, rejected or stuck: after the restart the chain settles (every
//!   group's committed offsets reach its topic's end), nothing is dead-lettered, every order is
//!   in the datamart, and the counters equal the independent model's (`vault_tests::oracle`) and
//!   the recount over the Data Vault.
//!
//! What the crash costs is a pause, measured here at 7 to 22 s: `acks=all` writes wait until the
//! controller fences the silent broker (`broker.session.timeout.ms`, 9 s) and the ISRs shrink;
//! and when the broker coordinated a group and the consumer's own 10 s session ran out first
//! (librdkafka `SESSTMOUT`), the consumer rejoins as a new member and the new coordinator holds
//! the rebalance until the stale member's session expires too, about 10 s more.
//!
//! Every wait polls a condition under a bound, and the whole test runs under one more. Whatever
//! the outcome, the services are stopped before the cluster goes: a service stopping while no
//! broker is left would wait for one in its last offset commit.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::FutureExt as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use vault_tests::eventually;
use vault_tests::oracle::{assert_exact, Model};
use vault_tests::orders::message;
use vault_tests::pipeline::{Overrides, Pipeline, Service};
use vault_tests::servers::{KafkaOptions, PrivateKafka};

/// Brokers in the cluster, hence replicas of every topic (`scripts/kafka.sh node` sets the
/// default replication factor to min(nodes, 3)).
const BROKERS: usize = 3;
/// One partition per broker: each broker leads some partitions of each topic.
const PARTITIONS: i32 = 3;
/// Distinct orders sent (plus datagen's resends): enough that the chain is still busy after the
/// 7-10 s a failover takes here (the controller fences a broker silent for 9 s,
/// `broker.session.timeout.ms`; until then `acks=all` writes wait for its replicas).
const ORDERS: u64 = 4000;
/// The bound on each wait.
const STEP: Duration = Duration::from_secs(60);
/// The bound on the whole test.
const WHOLE: Duration = Duration::from_secs(170);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_of_one_of_three_brokers_mid_stream_loses_duplicates_and_rejects_nothing(
) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + WHOLE;
    let (mut cluster, p) = tokio::time::timeout_at(deadline, async {
        let cluster = PrivateKafka::start_with(KafkaOptions {
            nodes: BROKERS,
            settings: vec!["min.insync.replicas=2".into()],
            ..KafkaOptions::default()
        })
        .await?;
        let p = Pipeline::start_with(
            PARTITIONS,
            Overrides {
                kafka_bootstrap: Some(cluster.bootstrap()),
                ..Overrides::default()
            },
        )
        .await?;
        anyhow::Ok((cluster, p))
    })
    .await
    .context("starting the cluster and the pipeline took too long")??;
    eprintln!(
        "cluster of {BROKERS} and pipeline up after {:.1?}",
        started.elapsed()
    );
    let outcome = AssertUnwindSafe(tokio::time::timeout_at(
        deadline,
        one_broker_crashes(&mut cluster, &p),
    ))
    .catch_unwind()
    .await;
    // The services stop (their last offset commit included) while the cluster is still up,
    // whatever happened: dropped with the cluster gone, they would wait for it.
    let stopped = tokio::time::timeout(STEP, p.shutdown()).await;
    match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(outcome) => {
            outcome.with_context(|| format!("the test took longer than {WHOLE:?}"))??
        }
    }
    stopped.context("the services took too long to stop")??;
    eprintln!("the whole test took {:.1?}", started.elapsed());
    Ok(())
}

async fn one_broker_crashes(cluster: &mut PrivateKafka, p: &Pipeline) -> anyhow::Result<()> {
    let metadata = Metadata::new(&cluster.bootstrap())?;
    let topics = [
        p.raw_topic.clone(),
        p.enriched_topic.clone(),
        p.counter_topic.clone(),
        p.tags_topic.clone(),
    ];
    let all_brokers: Vec<i32> = (1..=BROKERS as i32).collect();
    // A broker may learn of the topics a moment after the one the harness asked.
    let before = eventually("every topic in the cluster's metadata", STEP, || async {
        metadata.layout(&topics).await.ok()
    })
    .await;
    assert_fully_replicated(&before, &topics, &all_brokers);

    let (d, sent) = p.seeded_orders((10, 3), 41, 21_000, ORDERS).await?;
    p.produce_raw(&sent.iter().map(message).collect::<Vec<_>>())
        .await?;
    let produced = Instant::now();
    let counted = eventually("the datamart to start filling", STEP, || async {
        let counted = datamart(p).await.ok()?;
        (counted > 0).then_some(counted)
    })
    .await;

    // The broker that leads the most partitions of the pipeline's topics (the tags topic only
    // takes what service-cdm publishes now and then), so that the crash moves leaders; among
    // equals, the one that coordinates the most of the pipeline's consumer groups, so that the
    // groups' coordinator moves too.
    let groups: Vec<String> = Service::ALL
        .iter()
        .map(|service| p.group(*service).to_owned())
        .collect();
    let coordinators = eventually("the groups' coordinators", STEP, || async {
        metadata.coordinators(&groups).await.ok()
    })
    .await;
    let led = |broker: i32| {
        before
            .iter()
            .filter(|((topic, _), partition)| *topic != p.tags_topic && partition.leader == broker)
            .count()
    };
    let coordinated = |broker: i32| coordinators.values().filter(|b| **b == broker).count();
    let victim = all_brokers
        .iter()
        .copied()
        .max_by_key(|broker| (led(*broker), coordinated(*broker), -broker))
        .context("no brokers")?;
    let node = usize::try_from(victim - 1)?;
    let uncommitted = eventually("the groups' lag", STEP, || async { pending(p).await.ok() }).await;
    cluster.kill_node(node);
    let killed = Instant::now();
    eprintln!(
        "broker {victim} (leader of {} of {} partitions, coordinator of {} of {} groups) killed \
         {:.1?} after the orders were produced, with {counted} of {ORDERS} orders in the \
         datamart and messages uncommitted per hop: {uncommitted:?}",
        led(victim),
        PARTITIONS * 3,
        coordinated(victim),
        groups.len(),
        killed.duration_since(produced)
    );
    assert!(
        counted < ORDERS as i64 && uncommitted.values().sum::<i64>() > 0,
        "the work was done before the crash: the fault would prove nothing"
    );

    // The failover: the controller fences the dead broker, moves its leaderships and takes its
    // replicas out of every ISR.
    let survivors: Vec<i32> = all_brokers
        .iter()
        .copied()
        .filter(|b| *b != victim)
        .collect();
    eventually(
        "the cluster to fail over from the dead broker",
        STEP,
        || async {
            let layout = metadata.layout(&topics).await.ok()?;
            layout
                .values()
                .all(|partition| {
                    survivors.contains(&partition.leader) && sorted(&partition.isr) == survivors
                })
                .then_some(())
        },
    )
    .await;
    let failed_over = killed.elapsed();
    // Right after a failover a client's metadata may still name the old leader: polled.
    let then = eventually("the progress so far", STEP, || Progress::read(p)).await;
    let later = eventually(
        "the pipeline to progress without the dead broker",
        STEP,
        || async {
            let now = Progress::read(p).await?;
            (now.counted > then.counted
                && now.written > then.written
                && now.committed > then.committed)
                .then_some(now)
        },
    )
    .await;
    eprintln!(
        "failed over {failed_over:.1?} after the kill; then, with broker {victim} still down, \
         {:.1?} after the kill: orders in the datamart {} -> {}, messages on the enriched and \
         counter topics {} -> {}, offsets committed by the groups {} -> {}",
        killed.elapsed(),
        then.counted,
        later.counted,
        then.written,
        later.written,
        then.committed,
        later.committed
    );

    cluster.restart_node(node).await?;
    eventually(
        "the restarted broker's replicas to rejoin every ISR",
        STEP,
        || async {
            let layout = metadata.layout(&topics).await.ok()?;
            layout
                .values()
                .all(|partition| sorted(&partition.isr) == all_brokers)
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "broker {victim} back in every ISR {:.1?} after the kill",
        killed.elapsed()
    );

    p.settle(STEP).await;
    assert_eq!(
        p.count("SELECT count(*) FROM ops.dead_letters").await?,
        0,
        "nothing is dead-lettered because of a broker crash"
    );
    let lag = eventually("the groups' lag", STEP, || async { pending(p).await.ok() }).await;
    assert!(
        lag.values().all(|lag| *lag == 0),
        "every group committed everything: {lag:?}"
    );
    let mut model = Model::new();
    model.dictionary(&d);
    for order in &sent {
        model.sent(&message(order).1)?;
    }
    assert_exact(p, &model).await;
    assert_eq!(datamart(p).await?, ORDERS as i64);
    let after = eventually("the cluster's metadata", STEP, || async {
        metadata.layout(&topics).await.ok()
    })
    .await;
    assert_fully_replicated(&after, &topics, &all_brokers);
    Ok(())
}

/// Where one partition's replicas are, as the cluster's metadata says.
#[derive(Debug, Clone)]
struct Replication {
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

/// One metadata client on every broker of the cluster, for the whole test.
struct Metadata(Arc<BaseConsumer>);

impl Metadata {
    fn new(bootstrap: &str) -> anyhow::Result<Self> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .context("creating a metadata client")?;
        Ok(Self(Arc::new(client)))
    }

    /// Every partition of `topics` by (topic, partition).
    async fn layout(
        &self,
        topics: &[String],
    ) -> anyhow::Result<BTreeMap<(String, i32), Replication>> {
        let client = Arc::clone(&self.0);
        let topics = topics.to_vec();
        tokio::task::spawn_blocking(move || {
            let metadata = client.fetch_metadata(None, Duration::from_secs(5))?;
            let mut layout = BTreeMap::new();
            for topic in metadata.topics() {
                if !topics.iter().any(|name| name == topic.name()) {
                    continue;
                }
                anyhow::ensure!(
                    topic.error().is_none(),
                    "{}: {:?}",
                    topic.name(),
                    topic.error()
                );
                for partition in topic.partitions() {
                    layout.insert(
                        (topic.name().to_owned(), partition.id()),
                        Replication {
                            leader: partition.leader(),
                            replicas: partition.replicas().to_vec(),
                            isr: partition.isr().to_vec(),
                        },
                    );
                }
            }
            anyhow::ensure!(
                layout.len() == topics.len() * PARTITIONS as usize,
                "the metadata lists {} partitions of {} topics",
                layout.len(),
                topics.len()
            );
            Ok(layout)
        })
        .await?
    }

    /// The broker coordinating each of `groups`: the leader of the `__consumer_offsets`
    /// partition the group's id hashes to (Kafka's `abs(groupId.hashCode()) % partitions`).
    async fn coordinators(&self, groups: &[String]) -> anyhow::Result<BTreeMap<String, i32>> {
        let client = Arc::clone(&self.0);
        let groups = groups.to_vec();
        tokio::task::spawn_blocking(move || {
            let metadata =
                client.fetch_metadata(Some("__consumer_offsets"), Duration::from_secs(5))?;
            let offsets = metadata
                .topics()
                .first()
                .filter(|topic| topic.error().is_none() && !topic.partitions().is_empty())
                .context("no __consumer_offsets in the metadata")?;
            let leaders: BTreeMap<i32, i32> = offsets
                .partitions()
                .iter()
                .map(|partition| (partition.id(), partition.leader()))
                .collect();
            let count = i32::try_from(leaders.len())?;
            groups
                .into_iter()
                .map(|group| {
                    let hash = group.encode_utf16().fold(0i32, |h, unit| {
                        h.wrapping_mul(31).wrapping_add(i32::from(unit))
                    });
                    let partition = (hash & 0x7fff_ffff) % count;
                    let leader = leaders
                        .get(&partition)
                        .copied()
                        .context("no such partition")?;
                    Ok((group, leader))
                })
                .collect()
        })
        .await?
    }
}

/// Asserts that every partition of `topics` has a replica, in sync, on every broker.
fn assert_fully_replicated(
    layout: &BTreeMap<(String, i32), Replication>,
    topics: &[String],
    brokers: &[i32],
) {
    assert_eq!(layout.len(), topics.len() * PARTITIONS as usize);
    for ((topic, id), partition) in layout {
        assert_eq!(
            sorted(&partition.replicas),
            brokers,
            "replicas of {topic}/{id}"
        );
        assert_eq!(
            sorted(&partition.isr),
            brokers,
            "in-sync replicas of {topic}/{id}"
        );
        assert!(
            brokers.contains(&partition.leader),
            "leader of {topic}/{id}"
        );
    }
}

fn sorted(ids: &[i32]) -> Vec<i32> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

/// How far the pipeline has got.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Orders in the datamart.
    counted: i64,
    /// Messages on the topics the services publish to on the way (all partitions).
    written: i64,
    /// Offsets committed by the three groups on their topics (all partitions).
    committed: i64,
}

impl Progress {
    /// `None` while a probe fails (as one may while clients learn the new leaders).
    async fn read(p: &Pipeline) -> Option<Self> {
        let mut written = 0;
        for topic in [&p.enriched_topic, &p.counter_topic] {
            written += p.end_offsets(topic).await.ok()?.values().sum::<i64>();
        }
        let mut committed = 0;
        for (service, topic) in hops(p) {
            let offsets = p
                .stack
                .committed_offsets(p.group(service), topic)
                .await
                .ok()?;
            committed += offsets.values().flatten().sum::<i64>();
        }
        Some(Self {
            counted: datamart(p).await.ok()?,
            written,
            committed,
        })
    }
}

/// Each service with the topic it consumes.
fn hops(p: &Pipeline) -> [(Service, &String); 3] {
    [
        (Service::Stg, &p.raw_topic),
        (Service::Dds, &p.enriched_topic),
        (Service::Cdm, &p.counter_topic),
    ]
}

/// Orders in the datamart.
async fn datamart(p: &Pipeline) -> anyhow::Result<i64> {
    p.count("SELECT count(*) FROM cdm.order_state").await
}

/// Messages not yet committed by each hop's group on its topic.
async fn pending(p: &Pipeline) -> anyhow::Result<BTreeMap<Service, i64>> {
    let mut pending = BTreeMap::new();
    for (service, topic) in hops(p) {
        let ends = p.end_offsets(topic).await?;
        let committed = p.stack.committed_offsets(p.group(service), topic).await?;
        let lag = ends
            .iter()
            .map(|(id, end)| end - committed.get(id).copied().flatten().unwrap_or(0))
            .sum();
        pending.insert(service, lag);
    }
    Ok(pending)
}
