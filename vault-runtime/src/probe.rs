//! The dependency checks: each dependency (Postgres, Redis, Kafka) checked in the background
//! about once a second, and at once when the worker's own batches fail; `/health` reports the
//! last results and never checks anything itself.
//!
//! Why: a check takes a connection from the pool the batches use (Postgres) or a metadata
//! round trip to the brokers (Kafka). Checked per request, a flood of `/health` requests —
//! anyone who reaches the port — would queue the batches behind probes and could push the
//! worker into a pause. Checked here, a thousand requests a second cost what one does: a
//! read of the cache (docs/contract.md §5, docs/performance.md "/health under load").
//!
//! Every check goes through [`Probes`], which counts them
//! (`vaultline_dependency_checks_total{dependency}`), so a test can prove that requests to
//! `/health` cause none.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rdkafka::producer::FutureProducer;
use serde_json::{json, Map, Value};
use tokio::sync::{watch, Notify};

use crate::kafka;
use crate::stores::{self, PgPool, RedisPool};

/// How often the dependencies are checked when nothing asks for it sooner.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// How long one check may take: a dependency that answers later counts as down.
const LIMIT: Duration = Duration::from_secs(2);

/// A result older than this says that the checks themselves stopped (they run at least every
/// [`INTERVAL`] and end within [`LIMIT`]): it is reported as down, not trusted.
const STALE: Duration = Duration::from_secs(10);

/// A dependency of a service.
#[derive(Clone)]
pub enum Dependency {
    Postgres(PgPool),
    Redis(RedisPool),
    Kafka(FutureProducer),
}

impl std::fmt::Debug for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Dependency {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Redis(_) => "redis",
            Self::Kafka(_) => "kafka",
        }
    }

    /// One live check. Only [`Probes`] runs it, so that every check is counted.
    async fn check(&self) -> Result<(), String> {
        let probe = async {
            match self {
                Self::Postgres(pool) => stores::pg_ping(pool).await,
                Self::Redis(pool) => stores::redis_ping(pool).await,
                Self::Kafka(producer) => kafka::reachable(producer, LIMIT).await,
            }
        };
        tokio::time::timeout(LIMIT + Duration::from_millis(500), probe)
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()))
    }
}

/// A check's result and when it was taken.
#[derive(Debug, Clone)]
struct Checked {
    result: Result<(), String>,
    at: Instant,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabel {
    pub dependency: String,
}

/// The metrics the checks update; families shared with a service's registry.
#[derive(Debug, Clone, Default)]
pub struct ProbeMetrics {
    /// `vaultline_dependency_up{dependency}`: 1 when the last check answered, 0 when not.
    pub up: Family<DependencyLabel, Gauge>,
    /// `vaultline_dependency_checks_total{dependency}`: live checks run.
    pub checks: Family<DependencyLabel, Counter>,
}

impl ProbeMetrics {
    /// Registers both families (in a registry already prefixed `vaultline`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "dependency_up",
            "1 when the dependency answered its last check",
            self.up.clone(),
        );
        registry.register(
            "dependency_checks",
            "Live checks of the dependency (in the background, never per /health request)",
            self.checks.clone(),
        );
    }
}

/// A service's dependencies and what their last checks found.
#[derive(Debug)]
pub struct Probes {
    dependencies: Vec<Dependency>,
    last: Mutex<BTreeMap<&'static str, Checked>>,
    /// Wakes the background checks before their interval is up.
    soon: Notify,
    metrics: ProbeMetrics,
}

impl Probes {
    pub fn new(dependencies: Vec<Dependency>, metrics: ProbeMetrics) -> Self {
        Self {
            dependencies,
            last: Mutex::new(BTreeMap::new()),
            soon: Notify::new(),
            metrics,
        }
    }

    pub fn dependencies(&self) -> &[Dependency] {
        &self.dependencies
    }

    /// Checks every dependency now (concurrently), records the results and returns them in
    /// the dependencies' order. The worker calls it before it rejects a message; everything
    /// else reads [`Probes::report`].
    pub async fn check_now(&self) -> Vec<(&'static str, Result<(), String>)> {
        let checks = self.dependencies.iter().map(|dependency| async move {
            let label = DependencyLabel {
                dependency: dependency.name().to_owned(),
            };
            self.metrics.checks.get_or_create(&label).inc();
            (dependency.name(), dependency.check().await)
        });
        let results = futures::future::join_all(checks).await;
        for (name, result) in &results {
            self.record(name, result.clone());
        }
        results
    }

    /// Records what the worker saw itself: a committed batch proves that Postgres and the
    /// brokers answered just now.
    pub fn record(&self, dependency: &'static str, result: Result<(), String>) {
        if !self.dependencies.iter().any(|d| d.name() == dependency) {
            return;
        }
        self.metrics
            .up
            .get_or_create(&DependencyLabel {
                dependency: dependency.to_owned(),
            })
            .set(i64::from(result.is_ok()));
        if let Ok(mut last) = self.last.lock() {
            last.insert(
                dependency,
                Checked {
                    result,
                    at: Instant::now(),
                },
            );
        }
    }

    /// Asks the background checks to run now (the worker's batch failed): coalesced, so a
    /// burst of failures costs one round of checks.
    pub fn refresh_soon(&self) {
        self.soon.notify_one();
    }

    /// The last results, as `/health` shows them, and whether every dependency is up. A
    /// dependency not checked yet, or whose last result is stale, counts as down.
    pub fn report(&self) -> (bool, Map<String, Value>) {
        let last = self
            .last
            .lock()
            .map(|last| last.clone())
            .unwrap_or_default();
        let mut healthy = true;
        let mut doc = Map::new();
        for dependency in &self.dependencies {
            let name = dependency.name();
            let entry = match last.get(name) {
                None => {
                    healthy = false;
                    json!({"status": "down", "error": "not checked yet"})
                }
                Some(checked) => {
                    let age = checked.at.elapsed();
                    let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
                    match &checked.result {
                        _ if age > STALE => {
                            healthy = false;
                            json!({"status": "down", "checked_ms_ago": age_ms,
                                   "error": "no check has ended for a while: the checks are stuck"})
                        }
                        Ok(()) => json!({"status": "up", "checked_ms_ago": age_ms}),
                        Err(error) => {
                            healthy = false;
                            json!({"status": "down", "checked_ms_ago": age_ms, "error": error})
                        }
                    }
                }
            };
            doc.insert(name.to_owned(), entry);
        }
        (healthy, doc)
    }

    /// Checks every [`INTERVAL`], or sooner when asked, until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            self.check_now().await;
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(INTERVAL) => {}
                () = self.soon.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis_nowhere() -> Dependency {
        let settings = crate::config::RedisSettings {
            url: crate::config::Secret::new("redis://127.0.0.1:1"),
            pool_size: 1,
        };
        Dependency::Redis(stores::redis_pool(&settings).expect("a pool"))
    }

    #[tokio::test]
    async fn a_dependency_not_checked_yet_counts_as_down() {
        let probes = Probes::new(vec![redis_nowhere()], ProbeMetrics::default());
        let (healthy, doc) = probes.report();
        assert!(!healthy);
        assert_eq!(doc["redis"]["status"], "down");
    }

    #[tokio::test]
    async fn reports_read_the_last_result_and_check_nothing() {
        let metrics = ProbeMetrics::default();
        let probes = Probes::new(vec![redis_nowhere()], metrics.clone());
        probes.record("redis", Ok(()));
        for _ in 0..1000 {
            let (healthy, doc) = probes.report();
            assert!(healthy);
            assert_eq!(doc["redis"]["status"], "up");
        }
        let label = DependencyLabel {
            dependency: "redis".into(),
        };
        assert_eq!(metrics.checks.get_or_create(&label).get(), 0);
        assert_eq!(metrics.up.get_or_create(&label).get(), 1);
        probes.record("redis", Err("refused".into()));
        let (healthy, doc) = probes.report();
        assert!(!healthy);
        assert_eq!(doc["redis"]["error"], "refused");
    }

    #[tokio::test]
    async fn a_live_check_is_counted_and_recorded() {
        let metrics = ProbeMetrics::default();
        let probes = Probes::new(vec![redis_nowhere()], metrics.clone());
        let results = probes.check_now().await;
        assert!(results[0].1.is_err(), "nothing listens on port 1");
        let label = DependencyLabel {
            dependency: "redis".into(),
        };
        assert_eq!(metrics.checks.get_or_create(&label).get(), 1);
        assert_eq!(probes.report().1["redis"]["status"], "down");
    }
}
