//! The worker's observable state: what `/health` reports and `/metrics` exports.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

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
    pub batches: AtomicU64,
    pub processed: AtomicU64,
    pub rejected: AtomicU64,
    pub produced: AtomicU64,
    pub retries: AtomicU64,
    pub batch_micros: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusSnapshot {
    pub state: WorkerState,
    pub last_error: Option<String>,
    /// Why the worker is paused, while it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub batches: u64,
    pub processed: u64,
    pub rejected: u64,
    pub produced: u64,
    pub retries: u64,
}

impl Status {
    pub fn new(service: &'static str) -> Self {
        Self {
            service,
            state: Mutex::new(WorkerState::Starting),
            last_error: Mutex::new(None),
            cause: Mutex::new(None),
            batches: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            produced: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            batch_micros: AtomicU64::new(0),
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
        self.record_error(cause.clone());
        if let Ok(mut guard) = self.cause.lock() {
            *guard = Some(cause);
        }
    }

    /// A batch went through: the worker runs (again).
    pub fn resume(&self) {
        self.set_state(WorkerState::Running);
        if let Ok(mut guard) = self.cause.lock() {
            *guard = None;
        }
    }

    pub fn record_batch(&self, processed: u64, rejected: u64, produced: u64, took: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.processed.fetch_add(processed, Ordering::Relaxed);
        self.rejected.fetch_add(rejected, Ordering::Relaxed);
        self.produced.fetch_add(produced, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.batch_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot {
            state: self.state(),
            last_error: self.last_error.lock().ok().and_then(|guard| guard.clone()),
            cause: self.cause.lock().ok().and_then(|guard| guard.clone()),
            batches: self.batches.load(Ordering::Relaxed),
            processed: self.processed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            produced: self.produced.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    /// The Prometheus text exposition of the counters.
    pub fn prometheus(&self) -> String {
        let s = self.snapshot();
        let service = self.service;
        let mut out = String::new();
        let counters = [
            ("vaultline_batches_total", "Batches committed.", s.batches),
            (
                "vaultline_messages_processed_total",
                "Messages processed and committed.",
                s.processed,
            ),
            (
                "vaultline_messages_rejected_total",
                "Messages rejected and kept as dead letters.",
                s.rejected,
            ),
            (
                "vaultline_messages_produced_total",
                "Messages published downstream and acknowledged.",
                s.produced,
            ),
            (
                "vaultline_batch_retries_total",
                "Batch attempts that failed and were retried.",
                s.retries,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{service=\"{service}\"}} {value}");
        }
        let seconds = self.batch_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "# HELP vaultline_batch_seconds_total Time spent processing batches.\n\
             # TYPE vaultline_batch_seconds_total counter\n\
             vaultline_batch_seconds_total{{service=\"{service}\"}} {seconds}"
        );
        let up = u8::from(matches!(s.state, WorkerState::Running));
        let _ = writeln!(
            out,
            "# HELP vaultline_worker_running Whether the worker loop is running normally.\n\
             # TYPE vaultline_worker_running gauge\n\
             vaultline_worker_running{{service=\"{service}\"}} {up}"
        );
        out
    }
}
