//! `/health` cannot be used against the pipeline (issue 16): its dependency results come from
//! the background checks (vault-runtime/src/probe.rs), so thousands of requests while the pipeline
//! works cost no Postgres query, Redis ping or Kafka metadata fetch. Every live check is counted
//! in `vaultline_dependency_checks_total` (the only way to check a dependency goes through
//! that counter), so a `/health` that checked per request again would fail this test by
//! thousands.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use vault_tests::expect::{assert_exact, messages};
use vault_tests::pipeline::{http, Pipeline, Service};

const SETTLE: Duration = Duration::from_secs(180);

/// Requests per service.
const REQUESTS: usize = 1500;

/// `vaultline_dependency_checks_total{...,dependency="D"} N`, by dependency.
async fn checks(addr: SocketAddr) -> anyhow::Result<BTreeMap<String, f64>> {
    let (status, metrics) = http(addr, "GET", "/metrics", "").await?;
    anyhow::ensure!(status == 200, "/metrics answered {status}");
    Ok(metrics
        .lines()
        .filter(|line| line.starts_with("vaultline_dependency_checks_total{"))
        .filter_map(|line| {
            let dependency = line.split("dependency=\"").nth(1)?.split('"').next()?;
            let value = line.rsplit(' ').next()?.parse().ok()?;
            Some((dependency.to_owned(), value))
        })
        .collect())
}

/// The value of an unlabelled-but-`service` metric line, 0 when absent.
fn value(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_health_requests_checks_no_dependency_and_holds_up_no_batch(
) -> anyhow::Result<()> {
    let p = Pipeline::start(3).await?;
    let (d, sent) = p.seeded_orders((20, 4), 1616, 161_000, 3000).await?;
    let addrs: Vec<SocketAddr> = Service::ALL
        .iter()
        .map(|service| p.http_addr(*service).expect("running"))
        .collect();
    let mut before = Vec::new();
    for addr in &addrs {
        before.push(checks(*addr).await?);
    }

    // Orders go in while every service's /health is asked, 40 requests at a time.
    let raw = messages(&sent);
    let started = Instant::now();
    let produce = p.produce_raw(&raw);
    let flood = futures::stream::iter(addrs.iter().flat_map(|addr| vec![*addr; REQUESTS]))
        .map(|addr| async move { http(addr, "GET", "/health", "").await })
        .buffer_unordered(40)
        .collect::<Vec<_>>();
    let (produced, answers) = tokio::join!(produce, flood);
    produced?;
    let elapsed = started.elapsed();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for answer in answers {
        *statuses.entry(answer?.0).or_default() += 1;
    }
    eprintln!(
        "{} /health requests in {elapsed:?}: {statuses:?}",
        REQUESTS * addrs.len()
    );
    assert_eq!(
        statuses.get(&200),
        Some(&(REQUESTS * addrs.len())),
        "every answer healthy: {statuses:?}"
    );

    // The background checks ran about once a second each; the requests added none.
    let allowed = elapsed.as_secs_f64() + 5.0;
    for (addr, before) in addrs.iter().zip(&before) {
        let after = checks(*addr).await?;
        assert!(!after.is_empty(), "{addr}: no dependency_checks_total");
        for (dependency, count) in &after {
            let ran = count - before.get(dependency).copied().unwrap_or(0.0);
            assert!(
                ran <= allowed,
                "{addr}: {ran} {dependency} checks during {REQUESTS} /health requests in {elapsed:?}"
            );
        }
    }

    // And the batches went on: nothing paused, nothing retried, the datamarts exact.
    p.settle(SETTLE).await;
    for addr in &addrs {
        let (_, metrics) = http(*addr, "GET", "/metrics", "").await?;
        assert_eq!(
            value(&metrics, "vaultline_batch_retries_total{"),
            0.0,
            "{metrics}"
        );
        assert_eq!(
            value(&metrics, "vaultline_worker_paused{"),
            0.0,
            "{metrics}"
        );
    }
    assert_exact(&p, &d, &sent).await?;
    p.shutdown().await
}
