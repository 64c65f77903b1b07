//! datagen's Prometheus metrics (`GET /metrics`), with `prometheus-client`: its own, the
//! dependency checks' and the standard process metrics, in the format the scraper asks for
//! (`vault_runtime::exposition`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use vault_runtime::{ProbeMetrics, ProcessCollector};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// Orders pushed (first versions).
    pub orders: Counter,
    /// Messages produced and acknowledged (orders and their later versions).
    pub messages: Counter,
    /// Pushes refused or failed, by reason (`bad_request`, `redis`, `kafka`, ...).
    pub failures: Family<ReasonLabel, Counter>,
    /// Seconds one push took, generation and acknowledgements included.
    pub push_seconds: Histogram,
    /// Redis and Kafka up, and how often they were checked.
    pub probes: ProbeMetrics,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut root = Registry::with_labels([("service".into(), "datagen".into())].into_iter());
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("vaultline");
        let metrics = Self {
            orders: Counter::default(),
            messages: Counter::default(),
            failures: Family::default(),
            push_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            probes: ProbeMetrics::default(),
            registry: Registry::default(),
        };
        registry.register("datagen_orders", "Orders pushed", metrics.orders.clone());
        registry.register(
            "datagen_messages",
            "Messages produced and acknowledged (orders and their later versions)",
            metrics.messages.clone(),
        );
        registry.register(
            "datagen_push_failures",
            "Pushes refused or failed, by reason",
            metrics.failures.clone(),
        );
        registry.register(
            "datagen_push_duration_seconds",
            "Seconds one push took",
            metrics.push_seconds.clone(),
        );
        metrics.probes.register(registry);
        Self {
            registry: root,
            ..metrics
        }
    }

    pub(crate) fn failure(&self, reason: &'static str) {
        self.failures.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }
}
