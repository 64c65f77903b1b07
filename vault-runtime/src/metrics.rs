//! Prometheus metrics of one process, with `prometheus-client`: a registry per process (no
//! global state, so several services can run in one test process), exported on `/metrics`.
//!
//! Every error the runtime logs has a counter here: rejected messages by kind, retries by
//! fault class, consumer errors, offset commit failures, dead letters that could not be stored.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabel {
    pub dependency: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabel {
    pub component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error: &'static str,
}

/// The metrics a service exports; the field docs are the metrics' help texts.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Messages taken off the source topic and committed (rejected ones included).
    pub messages_in: Counter,
    /// Messages published downstream and acknowledged.
    pub messages_out: Counter,
    /// Messages kept as dead letters, by reason kind.
    pub rejected: Family<KindLabel, Counter>,
    /// Batch attempts that failed, by fault class (`systemic`, `suspect`).
    pub retries: Family<KindLabel, Counter>,
    /// Errors that are not about one message, by where they happened.
    pub errors: Family<ErrorLabel, Counter>,
    /// Messages per committed batch.
    pub batch_size: Histogram,
    /// Seconds from taking a batch to its commit.
    pub batch_seconds: Histogram,
    /// Seconds from when an order was sent (the timestamp it carries through the pipeline) to
    /// the commit of this stage.
    pub latency_seconds: Histogram,
    /// 1 while the worker is paused by a systemic fault.
    pub paused: Gauge,
    /// 1 while the group has lag and made no progress for the stall time.
    pub stalled: Gauge,
    /// Messages of the source topic the consumer group has not committed, per partition.
    pub lag: Family<PartitionLabel, Gauge>,
    /// 1 when the dependency answered its last check, 0 when not.
    pub dependency_up: Family<DependencyLabel, Gauge>,
    /// 1 while a component beside the batch loop fails (the Kafka consumer, the tag outbox
    /// relay, the rule watcher), 0 once it works again.
    pub component_failing: Family<ComponentLabel, Gauge>,
    /// Counters that differed from the recount over the Data Vault at the last periodic check
    /// (the datamart stage only; taken while the group had no lag).
    pub counter_differences: Gauge,
}

impl Metrics {
    pub fn new(service: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "vaultline",
            [("service".into(), service.to_owned().into())].into_iter(),
        );
        let metrics = Self {
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            rejected: Family::default(),
            retries: Family::default(),
            errors: Family::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            latency_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            paused: Gauge::default(),
            stalled: Gauge::default(),
            lag: Family::default(),
            dependency_up: Family::default(),
            component_failing: Family::default(),
            counter_differences: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "messages_in",
            "Messages taken off the source topic and committed (rejected ones included)",
            metrics.messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Messages published downstream and acknowledged",
            metrics.messages_out.clone(),
        );
        registry.register(
            "messages_rejected",
            "Messages kept as dead letters, by reason kind",
            metrics.rejected.clone(),
        );
        registry.register(
            "batch_retries",
            "Batch attempts that failed, by fault class",
            metrics.retries.clone(),
        );
        registry.register(
            "errors",
            "Errors that are not about one message, by where they happened",
            metrics.errors.clone(),
        );
        registry.register(
            "batch_size_messages",
            "Messages per committed batch",
            metrics.batch_size.clone(),
        );
        registry.register(
            "batch_duration_seconds",
            "Seconds from taking a batch to its commit",
            metrics.batch_seconds.clone(),
        );
        registry.register(
            "end_to_end_latency_seconds",
            "Seconds from when an order was sent to the commit of this stage",
            metrics.latency_seconds.clone(),
        );
        registry.register(
            "worker_paused",
            "1 while the worker is paused by a systemic fault",
            metrics.paused.clone(),
        );
        registry.register(
            "worker_stalled",
            "1 while the group has lag and made no progress for the stall time",
            metrics.stalled.clone(),
        );
        registry.register(
            "consumer_lag_messages",
            "Messages of the source topic the consumer group has not committed, per partition",
            metrics.lag.clone(),
        );
        registry.register(
            "dependency_up",
            "1 when the dependency answered its last check",
            metrics.dependency_up.clone(),
        );
        registry.register(
            "component_failing",
            "1 while a component beside the batch loop fails",
            metrics.component_failing.clone(),
        );
        registry.register(
            "counter_differences",
            "Counters that differed from the recount over the Data Vault at the last check",
            metrics.counter_differences.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts an error that is not about one message.
    pub fn error(&self, error: &'static str) {
        self.errors.get_or_create(&ErrorLabel { error }).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%error, "Cannot encode the metrics.");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_the_service_and_counts_rejects_by_kind() {
        let metrics = Metrics::new("service-x");
        metrics
            .rejected
            .get_or_create(&KindLabel {
                kind: "invalid_json".into(),
            })
            .inc();
        metrics.batch_seconds.observe(0.02);
        let text = metrics.encode();
        assert!(
            text.contains(
                "vaultline_messages_rejected_total{service=\"service-x\",kind=\"invalid_json\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("vaultline_batch_duration_seconds_count{service=\"service-x\"} 1"),
            "{text}"
        );
    }
}
