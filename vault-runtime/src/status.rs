//! The worker's observable state: what `/health` reports and `/metrics` exports.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metrics::{ComponentLabel, KindLabel, Metrics};

/// How long a component's failure counts when nothing says it recovered: the Kafka consumer
/// reports errors but no recovery, so its last error ages out.
const FAULT_WINDOW: Duration = Duration::from_secs(30);

/// The phase of a service's worker loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Starting,
    Running,
    /// Paused by a systemic fault (a dependency down, a warehouse that cannot take writes):
    /// the same batch is being retried with back-off; `cause` says why.
    Retrying,
    Stopping,
    Stopped,
    /// The loop ended with an error; the process is about to exit non-zero.
    Failed,
}

/// Counters and state shared between the worker loop and the HTTP server.
#[derive(Debug)]
pub struct Status {
    pub service: &'static str,
    /// Written by the worker, read by `/health`: a lock, as it changes a few times a batch.
    state: Mutex<WorkerState>,
    /// The most recent failure, kept for operators (never holds credentials: errors from
    /// the clients do not include them).
    last_error: Mutex<Option<String>>,
    /// Why the worker is paused; `None` while it runs.
    cause: Mutex<Option<String>>,
    /// Why the consumer group counts as stalled (the monitor's finding); `None` when it moves.
    stalled: Mutex<Option<String>>,
    /// Components beside the batch loop failing now, with the cause and when it was last
    /// reported: set by the component on an error, removed when it works again.
    faults: Mutex<BTreeMap<&'static str, (String, Instant)>>,
    /// The group's lag on the source topic at the monitor's last look.
    lag: AtomicI64,
    /// When the monitor last read the lag: work that must wait for a quiet group (service-cdm's
    /// counter check) acts once per look, and not before the first.
    looked: Mutex<Option<Instant>>,
    pub batches: AtomicU64,
    pub processed: AtomicU64,
    pub rejected: AtomicU64,
    pub produced: AtomicU64,
    pub retries: AtomicU64,
    pub batch_micros: AtomicU64,
    /// What `/metrics` exports; updated with the counters above.
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusSnapshot {
    pub state: WorkerState,
    pub last_error: Option<String>,
    /// Why the worker is paused, while it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Why the worker counts as stalled, while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
    /// Components beside the batch loop that are failing, each with its cause.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub faults: BTreeMap<&'static str, String>,
    /// Messages of the source topic the group has not committed yet.
    pub lag: i64,
    pub batches: u64,
    pub processed: u64,
    pub rejected: u64,
    pub produced: u64,
    pub retries: u64,
}

impl Status {
    pub fn new(service: &'static str) -> Self {
        Self::with_metrics(service, Metrics::new(service))
    }

    /// The status of a service whose metrics were made first (to add a stage's own families).
    pub fn with_metrics(service: &'static str, metrics: Metrics) -> Self {
        Self {
            service,
            state: Mutex::new(WorkerState::Starting),
            last_error: Mutex::new(None),
            cause: Mutex::new(None),
            stalled: Mutex::new(None),
            faults: Mutex::new(BTreeMap::new()),
            lag: AtomicI64::new(0),
            looked: Mutex::new(None),
            batches: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            produced: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            batch_micros: AtomicU64::new(0),
            metrics,
        }
    }

    pub fn set_state(&self, state: WorkerState) {
        if let Ok(mut guard) = self.state.lock() {
            *guard = state;
        }
    }

    pub fn state(&self) -> WorkerState {
        self.state
            .lock()
            .map(|guard| *guard)
            .unwrap_or(WorkerState::Failed)
    }

    pub fn record_error(&self, error: String) {
        if let Ok(mut guard) = self.last_error.lock() {
            *guard = Some(error);
        }
    }

    /// The worker is paused by a systemic fault: `/health` reports it, with the cause.
    pub fn pause(&self, cause: String) {
        self.set_state(WorkerState::Retrying);
        self.metrics.paused.set(1);
        self.record_error(cause.clone());
        if let Ok(mut guard) = self.cause.lock() {
            *guard = Some(cause);
        }
    }

    /// A batch went through: the worker runs (again).
    pub fn resume(&self) {
        self.set_state(WorkerState::Running);
        self.metrics.paused.set(0);
        if let Ok(mut guard) = self.cause.lock() {
            *guard = None;
        }
        self.set_stalled(None);
    }

    pub fn record_batch(&self, processed: u64, rejected: u64, produced: u64, took: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.processed.fetch_add(processed, Ordering::Relaxed);
        self.rejected.fetch_add(rejected, Ordering::Relaxed);
        self.produced.fetch_add(produced, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.batch_micros.fetch_add(micros, Ordering::Relaxed);
        self.metrics.messages_in.inc_by(processed + rejected);
        self.metrics.messages_out.inc_by(produced);
        if processed + rejected > 0 {
            self.metrics
                .batch_size
                .observe((processed + rejected) as f64);
            self.metrics.batch_seconds.observe(took.as_secs_f64());
        }
    }

    /// The monitor's look at the group's lag.
    pub fn set_lag(&self, lag: i64) {
        self.lag.store(lag, Ordering::Relaxed);
        if let Ok(mut guard) = self.looked.lock() {
            *guard = Some(Instant::now());
        }
    }

    /// The group's lag at the monitor's last look, and when it looked; `None` before the first.
    pub fn last_look(&self) -> Option<(i64, Instant)> {
        let looked = self.looked.lock().ok().and_then(|guard| *guard)?;
        Some((self.lag.load(Ordering::Relaxed), looked))
    }

    /// The monitor's finding: why the group counts as stalled, or `None` when it moves.
    pub fn set_stalled(&self, stalled: Option<String>) {
        self.metrics.stalled.set(i64::from(stalled.is_some()));
        if let Ok(mut guard) = self.stalled.lock() {
            *guard = stalled;
        }
    }

    /// A component beside the batch loop failed: `/health` names it with the cause (and
    /// answers 503) until it reports success or, for [`FAULT_WINDOW`], nothing more.
    pub fn component_failed(&self, component: &'static str, cause: String) {
        self.metrics.error(component);
        self.metrics
            .component_failing
            .get_or_create(&ComponentLabel { component })
            .set(1);
        if let Ok(mut faults) = self.faults.lock() {
            faults.insert(component, (cause, Instant::now()));
        }
    }

    /// The component works (again).
    pub fn component_ok(&self, component: &'static str) {
        let removed = self
            .faults
            .lock()
            .map(|mut faults| faults.remove(component).is_some())
            .unwrap_or(false);
        if removed {
            self.metrics
                .component_failing
                .get_or_create(&ComponentLabel { component })
                .set(0);
        }
    }

    /// The components failing now, with their causes; a fault not reported again within
    /// [`FAULT_WINDOW`] has aged out.
    fn current_faults(&self) -> BTreeMap<&'static str, String> {
        let Ok(mut faults) = self.faults.lock() else {
            return BTreeMap::new();
        };
        let aged: Vec<&'static str> = faults
            .iter()
            .filter(|(_, (_, at))| at.elapsed() > FAULT_WINDOW)
            .map(|(component, _)| *component)
            .collect();
        for component in aged {
            faults.remove(component);
            self.metrics
                .component_failing
                .get_or_create(&ComponentLabel { component })
                .set(0);
        }
        faults
            .iter()
            .map(|(component, (cause, _))| (*component, cause.clone()))
            .collect()
    }

    /// Counts a failed batch attempt by fault class (`systemic`, `suspect`).
    pub fn record_retry(&self, class: &str) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .retries
            .get_or_create(&KindLabel {
                kind: class.to_owned(),
            })
            .inc();
    }

    /// Counts rejected messages by kind (the totals are counted by `record_batch`).
    pub fn record_rejects<'a>(&self, kinds: impl IntoIterator<Item = &'a str>) {
        for kind in kinds {
            self.metrics
                .rejected
                .get_or_create(&KindLabel {
                    kind: kind.to_owned(),
                })
                .inc();
        }
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot {
            state: self.state(),
            last_error: self.last_error.lock().ok().and_then(|guard| guard.clone()),
            cause: self.cause.lock().ok().and_then(|guard| guard.clone()),
            stalled: self.stalled.lock().ok().and_then(|guard| guard.clone()),
            faults: self.current_faults(),
            lag: self.lag.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            processed: self.processed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            produced: self.produced.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}
