//! Prometheus metrics of one process, with `prometheus-client`: a registry per process (no
//! global state, so several services can run in one test process), exported on `/metrics`.
//!
//! Every error the runtime logs has a counter here: rejected messages by kind, retries by
//! fault class, consumer errors, offset commit failures, dead letters that could not be stored.
//! Beside the `vaultline_*` metrics, the standard `process_*` ones ([`crate::process_metrics`]).
//! `/metrics` answers OpenMetrics or classic text, as the scraper asks ([`crate::exposition`]).

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::exposition::{self, Format};
use crate::probe::ProbeMetrics;
use crate::process_metrics::ProcessCollector;

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
pub struct ComponentLabel {
    pub component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error: &'static str,
}

/// An HTTP route (its template, such as `/api/v1/users/{user}/counters`) and the status
/// answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    pub route: &'static str,
    pub status: u16,
}

/// A step of one batch attempt ([`crate::stage`]), or the wait for the batch before it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Phase {
    /// Waiting for the batch's messages (the consumer's queue, the linger).
    wait,
    /// Decoding the messages (CPU of the service).
    decode,
    /// Taking a Postgres connection from the pool.
    connect,
    /// The stage's statements, with the CPU it spends between them.
    apply,
    /// Storing the batch's dead letters.
    dead_letters,
    /// Publishing the stage's messages until the broker acknowledged all of them.
    publish,
    /// The transaction's commit.
    commit,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: Phase,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

/// The buckets of a batch's steps: 0.1 ms to about 3 s.
fn phase_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

/// The buckets of batch and request durations: 1 ms to about 16 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
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
    /// Seconds of each step of a batch attempt, by step: where a batch's time goes.
    pub phase_seconds: Family<PhaseLabel, Histogram, fn() -> Histogram>,
    /// Seconds from when an order was sent ([`crate::sent_ms`], docs/contract.md §2) to
    /// the commit of this stage.
    pub latency_seconds: Histogram,
    /// 1 while the worker is paused by a systemic fault.
    pub paused: Gauge,
    /// 1 while the group has lag and made no progress for the stall time.
    pub stalled: Gauge,
    /// Messages of the source topic the consumer group has not committed, per partition.
    pub lag: Family<PartitionLabel, Gauge>,
    /// `dependency_up` (1 when the dependency answered its last check) and
    /// `dependency_checks_total` (live checks run), updated by [`crate::probe::Probes`].
    pub probes: ProbeMetrics,
    /// 1 while a component beside the batch loop fails (the Kafka consumer, the tag outbox
    /// relay, the rule watcher), 0 once it works again.
    pub component_failing: Family<ComponentLabel, Gauge>,
    /// HTTP requests answered, by route and status.
    pub http_requests: Family<RequestLabel, Counter>,
    /// Seconds from a request's arrival to its answer, by route.
    pub http_seconds: Family<RouteLabel, Histogram, fn() -> Histogram>,
}

impl Metrics {
    pub fn new(service: &str) -> Self {
        let mut root =
            Registry::with_labels([("service".into(), service.to_owned().into())].into_iter());
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("vaultline");
        let metrics = Self {
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            rejected: Family::default(),
            retries: Family::default(),
            errors: Family::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            batch_seconds: duration_histogram(),
            phase_seconds: Family::new_with_constructor(phase_histogram),
            latency_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            paused: Gauge::default(),
            stalled: Gauge::default(),
            lag: Family::default(),
            probes: ProbeMetrics::default(),
            component_failing: Family::default(),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(duration_histogram),
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
            "batch_phase_seconds",
            "Seconds of each step of a batch attempt, by step",
            metrics.phase_seconds.clone(),
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
        metrics.probes.register(registry);
        registry.register(
            "component_failing",
            "1 while a component beside the batch loop fails",
            metrics.component_failing.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            metrics.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Seconds from a request's arrival to its answer, by route",
            metrics.http_seconds.clone(),
        );
        Self {
            registry: root,
            ..metrics
        }
    }

    /// Where a stage registers metric families of its own ([`crate::Stage::register_metrics`]):
    /// beside the runtime's, with the same `vaultline_` prefix and `service` label.
    pub(crate) fn stage_registry(&mut self) -> &mut Registry {
        self.registry.sub_registry_with_prefix("vaultline")
    }

    /// Counts an answered HTTP request.
    pub fn request(&self, route: &'static str, status: u16, took: Duration) {
        self.http_requests
            .get_or_create(&RequestLabel { route, status })
            .inc();
        self.http_seconds
            .get_or_create(&RouteLabel { route })
            .observe(took.as_secs_f64());
    }

    /// Times one step of a batch attempt.
    pub fn phase(&self, phase: Phase, took: Duration) {
        self.phase_seconds
            .get_or_create(&PhaseLabel { phase })
            .observe(took.as_secs_f64());
    }

    /// Counts an error that is not about one message.
    pub fn error(&self, error: &'static str) {
        self.errors.get_or_create(&ErrorLabel { error }).inc();
    }

    /// The exposition in `format`.
    pub fn encode(&self, format: Format) -> String {
        exposition::encode(&self.registry, format)
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
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
        metrics.phase(Phase::apply, Duration::from_millis(3));
        let text = metrics.encode(Format::Classic);
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
        assert!(
            text.contains(
                "vaultline_batch_phase_seconds_count{service=\"service-x\",phase=\"apply\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn requests_are_counted_by_route_and_status_and_timed_by_route() {
        let metrics = Metrics::new("service-cdm");
        metrics.request("/api/v1/tags", 200, Duration::from_millis(3));
        metrics.request("/api/v1/tags", 401, Duration::from_millis(1));
        let text = metrics.encode(Format::Classic);
        assert!(
            text.contains("vaultline_http_requests_total{service=\"service-cdm\",route=\"/api/v1/tags\",status=\"401\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vaultline_http_request_duration_seconds_count{service=\"service-cdm\",route=\"/api/v1/tags\"} 2"),
            "{text}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_carry_their_standard_names() {
        let text = Metrics::new("service-x").encode(Format::Classic);
        for name in [
            "process_cpu_seconds_total{service=\"service-x\"} ",
            "process_resident_memory_bytes{service=\"service-x\"} ",
            "process_open_fds{service=\"service-x\"} ",
            "process_start_time_seconds{service=\"service-x\"} ",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
    }
}
