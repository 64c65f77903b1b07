//! The lag an operator reads — `vaultctl lag` and the services' `consumer_lag_messages` gauges
//! — is the lag the broker itself reports (`kafka-consumer-groups --describe`, Apache Kafka's
//! own tool), partition by partition. The datamart stage is held back by a systemic fault (its
//! table renamed away: it pauses and retries, committing nothing) while orders arrive, so that
//! its group has a lag that stands still long enough for three readers to agree on it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use vault_tests::eventually;
use vault_tests::expect::{assert_exact, messages};
use vault_tests::pipeline::{http, Pipeline, Service};
use vault_tests::process::binary;
use vault_tests::servers::describe_group;

const SETTLE: Duration = Duration::from_secs(180);

/// `vaultline_consumer_lag_messages{partition="P",topic="T"} N` lines of a `/metrics` answer.
fn lag_gauges(metrics: &str, topic: &str) -> BTreeMap<i32, i64> {
    metrics
        .lines()
        .filter(|line| line.starts_with("vaultline_consumer_lag_messages{"))
        .filter(|line| line.contains(&format!("topic=\"{topic}\"")))
        .filter_map(|line| {
            let partition = line.split("partition=\"").nth(1)?.split('"').next()?;
            let value = line.rsplit(' ').next()?;
            Some((partition.parse().ok()?, value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vaultctl_lag_and_the_lag_gauges_match_the_brokers_own_view() -> anyhow::Result<()> {
    let p = Pipeline::start(3).await?;
    let (d, sent) = p.seeded_orders((10, 3), 59, 71_000, 400).await?;
    let (first, second) = sent.split_at(100);
    p.produce_raw(&messages(first)).await?;
    p.settle(SETTLE).await;

    // The datamart stage loses a table: it pauses (no commit), while stg and dds go on.
    let db = p.db().await?;
    db.batch_execute(
        "ALTER TABLE cdm.user_category_counters RENAME TO user_category_counters_away",
    )
    .await?;
    p.produce_raw(&messages(second)).await?;
    let (group, topic) = (p.group(Service::Cdm).to_owned(), p.counter_topic.clone());
    let bootstrap = p.stack.kafka_bootstrap.clone();
    // The broker's view, once dds has published everything and the lag holds still.
    let dds_done = || async {
        let ends = p.end_offsets(&p.enriched_topic).await.ok()?;
        let committed = p
            .stack
            .committed_offsets(p.group(Service::Dds), &p.enriched_topic)
            .await
            .ok()?;
        ends.iter()
            .all(|(partition, end)| committed.get(partition) == Some(&Some(*end)))
            .then_some(())
    };
    eventually("dds to publish everything", SETTLE, dds_done).await;
    let broker: BTreeMap<i32, i64> = {
        let (bootstrap, group) = (bootstrap.clone(), group.clone());
        tokio::task::spawn_blocking(move || describe_group(&bootstrap, &group))
            .await??
            .into_iter()
            .filter(|row| row.topic == topic)
            .map(|row| (row.partition, row.lag.unwrap_or(0)))
            .collect()
    };
    let total: i64 = broker.values().sum();
    eprintln!("kafka-consumer-groups: {broker:?}");
    assert_eq!(broker.len(), 3, "every partition of {topic}: {broker:?}");
    assert!(total > 0, "the paused stage has lag");

    // service-cdm's own gauges (refreshed every few seconds) come to the same numbers.
    let addr = p.http_addr(Service::Cdm).context("cdm runs")?;
    let gauges = eventually("cdm's lag gauges to match the broker", SETTLE, || async {
        let (_, metrics) = http(addr, "GET", "/metrics", "").await.ok()?;
        let gauges = lag_gauges(&metrics, &topic);
        (gauges == broker).then_some(gauges)
    })
    .await;
    eprintln!("gauges: {gauges:?}");

    // And so does `vaultctl lag`, pointed at this pipeline's hops.
    let mut env = p.env(Service::Cdm);
    env.remove("HTTP_PORT");
    let out = tokio::process::Command::new(binary("vaultctl"))
        .arg("lag")
        .env_clear()
        .envs(&env)
        .output()
        .await?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vaultctl lag: {said} {:?}",
        out.stderr
    );
    let cdm_line = said
        .lines()
        .find(|line| line.starts_with(&group))
        .with_context(|| format!("no line for {group} in: {said}"))?;
    assert_eq!(
        cdm_line.split_whitespace().last(),
        Some(total.to_string().as_str()),
        "{said}"
    );
    let stg_line = said
        .lines()
        .find(|line| line.starts_with(p.group(Service::Stg)))
        .with_context(|| format!("no line for stg in: {said}"))?;
    assert_eq!(stg_line.split_whitespace().last(), Some("0"), "{said}");

    db.batch_execute(
        "ALTER TABLE cdm.user_category_counters_away RENAME TO user_category_counters",
    )
    .await?;
    p.settle(SETTLE).await;
    assert_exact(&p, &d, &sent).await?;
    p.shutdown().await
}
