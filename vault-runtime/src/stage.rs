//! The batch protocol, written once (docs/architecture.md, "One batch").
//!
//! A service is a [`Stage`]: it decodes one message (pure) and applies a batch of decoded items
//! inside a transaction it is given, returning what to publish. Everything else happens here,
//! the same way for every stage: rejection bookkeeping, the transaction, dead letters in that
//! transaction, publishing and waiting for the broker's acknowledgements before the commit.
//! The consume loop (`consume.rs`) adds offsets, bisection and back-off around it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use prometheus_client::registry::Registry;
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;

use crate::config::Settings;
use crate::dead_letter::{self, DeadLetter};
use crate::failure::{Failure, TableAccess};
use crate::kafka::{self, InMessage, OutMessage};
use crate::metrics::{Metrics, Phase};
use crate::probe::Dependency;
use crate::status::Status;
use crate::stores::{self, PgPool, RedisPool};

/// Why a message cannot be used: a message fault (docs/failures.md). It becomes a dead letter
/// with this reason, in the batch's transaction, and processing goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// A short stable name (`invalid_json`, `unknown_user`, ...), for grouping and metrics.
    pub kind: &'static str,
    pub reason: String,
}

impl Rejection {
    pub fn new(kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }
}

impl From<vault_core::decode::DecodeError> for Rejection {
    fn from(error: vault_core::decode::DecodeError) -> Self {
        Self::new(error.kind(), error.to_string())
    }
}

/// A decoded item and the position of the message it came from.
#[derive(Debug)]
pub struct Entry<T> {
    pub item: T,
    position: usize,
    /// When the source message's order was first sent, for the messages derived from it.
    pub sent_ms: Option<i64>,
}

/// The messages of one attempt rejected so far; the runtime stores them as dead letters.
#[derive(Debug)]
pub struct Rejects<'a> {
    messages: &'a [InMessage],
    letters: Vec<DeadLetter>,
}

impl<'a> Rejects<'a> {
    fn new(messages: &'a [InMessage]) -> Self {
        Self {
            messages,
            letters: Vec::new(),
        }
    }

    /// Rejects the message `entry` was decoded from.
    pub fn reject<T>(&mut self, entry: &Entry<T>, rejection: Rejection) {
        self.reject_at(entry.position, rejection);
    }

    fn reject_at(&mut self, position: usize, rejection: Rejection) {
        let message = &self.messages[position];
        tracing::warn!(topic = %message.topic, partition = message.partition,
            offset = message.offset, key = %message.key_text(), kind = rejection.kind,
            reason = %rejection.reason, "Rejected a message; kept it as a dead letter.");
        self.letters
            .push(DeadLetter::new(message, rejection.kind, rejection.reason));
    }

    pub fn len(&self) -> usize {
        self.letters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.letters.is_empty()
    }
}

/// What a stage needs from the runtime besides Postgres and Kafka, built from the settings at
/// start (a missing one is a configuration error, reported before anything runs).
pub trait Needs: Sized + Send + 'static {
    /// Builds the clients and adds each to `dependencies`, which are checked in the background
    /// for `/health` ([`crate::probe`]) and before a message is rejected.
    fn build(settings: &Settings, dependencies: &mut Vec<Dependency>) -> anyhow::Result<Self>;
}

/// A stage that needs nothing more.
impl Needs for () {
    fn build(_: &Settings, _: &mut Vec<Dependency>) -> anyhow::Result<Self> {
        Ok(())
    }
}

/// A stage that reads the Redis dictionaries.
impl Needs for RedisPool {
    fn build(settings: &Settings, dependencies: &mut Vec<Dependency>) -> anyhow::Result<Self> {
        let redis = settings.redis.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "invalid configuration: REDIS_URL: is required by {}",
                settings.service
            )
        })?;
        let pool = stores::redis_pool(redis)?;
        dependencies.push(Dependency::Redis(pool.clone()));
        Ok(pool)
    }
}

/// What a stage's routes and companions are built with.
#[derive(Clone)]
pub struct Context {
    pub settings: Settings,
    /// The service's Postgres pool (the one the batches use).
    pub pool: PgPool,
    pub status: Arc<Status>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("service", &self.settings.service)
            .finish_non_exhaustive()
    }
}

/// Work a service runs beside its consume loop (service-cdm: the rule watcher, the tag outbox
/// relay and the periodic counter check). It starts once the schema is ready and must end soon after its `stop`
/// receiver turns true; an error ends the service.
pub type Companion = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// HTTP routes a service serves beside `/health` and `/metrics`.
pub type Routes = warp::filters::BoxedFilter<(Box<dyn warp::Reply>,)>;

/// One service's domain: decode a message, apply a batch. `apply` must be idempotent: a batch
/// whose commit was not acknowledged is delivered again.
pub trait Stage: Send + Sync + Sized + 'static {
    /// One decoded message.
    type Item: Send + Sync;
    /// What the stage is built from besides the settings: `()` or a `RedisPool`.
    type Needs: Needs;
    /// Whether `apply` returns messages to publish (the settings must then name a destination
    /// topic; a stage that does not publish must return none).
    const PUBLISHES: bool;
    /// Every table `apply` writes (the dead-letter table is the runtime's), derived from what
    /// writes them where a stage has a list of its own.
    fn tables() -> Vec<TableAccess>;

    fn new(needs: Self::Needs, settings: &Settings) -> anyhow::Result<Self>;

    /// Decodes one message. An error is a message fault: the message becomes a dead letter.
    fn decode(&self, message: &InMessage) -> Result<Self::Item, Rejection>;

    /// Applies the decoded items of a batch, in arrival order, inside the transaction the
    /// runtime opened on `conn`; an item it cannot use goes to `rejects`. Returns the messages
    /// to publish: the transaction commits only after the broker acknowledged all of them.
    fn apply(
        &self,
        conn: &mut AsyncPgConnection,
        items: Vec<Entry<Self::Item>>,
        rejects: &mut Rejects<'_>,
    ) -> impl Future<Output = Result<Vec<OutMessage>, Failure>> + Send;

    /// Writes made-up rows (fresh random keys) to every table `apply` writes, the way `apply`
    /// writes them, inside a transaction the runtime opened and always rolls back. This is the
    /// warehouse probe (docs/failures.md): before a refused message is rejected, it proves
    /// that the warehouse takes this stage's writes, whatever refused the batch — a renamed
    /// table, a revoked grant on a sequence, a held lock, a read-only or full database.
    fn probe(
        &self,
        conn: &mut AsyncPgConnection,
    ) -> impl Future<Output = Result<(), Failure>> + Send;

    /// Routes served beside `/health` and `/metrics` (service-cdm: the read API and the
    /// dashboard). None by default.
    fn routes(&self, _context: &Context) -> Option<Routes> {
        None
    }

    /// The route template a request path of [`Stage::routes`] is counted under in
    /// `vaultline_http_requests_total{route}` (such as `/api/v1/users/{user}/counters`); `None`
    /// counts it as `other`.
    fn route_name(_path: &str) -> Option<&'static str> {
        None
    }

    /// Registers metric families of the stage's own beside the runtime's: the names get the
    /// `vaultline_` prefix and the `service` label (service-cdm: its counter check's result).
    /// None by default.
    fn register_metrics(&self, _registry: &mut Registry) {}

    /// Work run beside the consume loop, each until `stop` turns true. None by default.
    fn companions(
        &self,
        _context: &Context,
        _stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Vec<Companion>> {
        Ok(Vec::new())
    }
}

/// What one committed attempt did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub processed: u64,
    pub rejected: u64,
    pub produced: u64,
}

/// Where a stage's output goes.
#[derive(Clone)]
pub(crate) struct Output {
    pub producer: FutureProducer,
    pub topic: String,
}

/// A stage with what the runtime needs to run one attempt of a batch.
pub(crate) struct Runner<S> {
    pub stage: S,
    pub service: &'static str,
    pub pool: PgPool,
    /// Present exactly when `S::PUBLISHES` (checked at build).
    pub output: Option<Output>,
    /// Where rejects by kind and latencies are counted.
    pub status: Arc<Status>,
}

/// Times the steps of one attempt, each from the end of the one before
/// (`vaultline_batch_phase_seconds`).
struct Phases<'a> {
    metrics: &'a Metrics,
    since: Instant,
}

impl<'a> Phases<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        Self {
            metrics,
            since: Instant::now(),
        }
    }

    fn end(&mut self, phase: Phase) {
        let now = Instant::now();
        self.metrics.phase(phase, now - self.since);
        self.since = now;
    }
}

/// Fresh random values for a stage's probe rows, so every probe row is new to the tables
/// (a row whose key exists would be skipped, and prove nothing).
#[derive(Debug, Clone, Copy)]
pub struct ProbeKeys(u128);

impl ProbeKeys {
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().as_u128())
    }

    /// A positive id below 2^53, as JSON readers keep integers exact.
    pub fn id(&self) -> i64 {
        ((self.0 >> 64) as i64 & ((1 << 53) - 1)).max(1)
    }

    /// A 24-hex-digit dictionary id (users, restaurants and dishes have such ids), numbered
    /// so that one probe can name several distinct entities.
    pub fn entity(&self, n: u8) -> String {
        format!("{:022x}{n:02x}", self.0 >> 40)
    }
}

impl Default for ProbeKeys {
    fn default() -> Self {
        Self::new()
    }
}

/// How long the probe's statements may wait for a lock, and run: short, since the probe
/// writes a row or two per table and must answer before the worker decides anything.
const PROBE_LIMITS: &str = "SET LOCAL lock_timeout = 2000; SET LOCAL statement_timeout = 10000";

/// How a probe's transaction ends: always rolled back, by one of these.
enum ProbeEnd {
    /// Everything was written: roll it back.
    Written,
    Refused(Failure),
}

impl From<diesel::result::Error> for ProbeEnd {
    fn from(error: diesel::result::Error) -> Self {
        Self::Refused(error.into())
    }
}

impl<S: Stage> Runner<S> {
    /// The warehouse probe: the stage's made-up writes ([`Stage::probe`]) and a dead letter,
    /// in one transaction that is always rolled back. `Err` says what refused them.
    pub async fn probe(&self) -> Result<(), String> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|error| format!("cannot reach Postgres: {error}"))?;
        let ended = conn
            .transaction::<(), ProbeEnd, _>(async |conn| {
                conn.batch_execute(PROBE_LIMITS).await?;
                self.stage.probe(conn).await.map_err(ProbeEnd::Refused)?;
                dead_letter::insert(conn, self.service, &[DeadLetter::probe()]).await?;
                Err(ProbeEnd::Written)
            })
            .await;
        match ended {
            Err(ProbeEnd::Written) => Ok(()),
            Err(ProbeEnd::Refused(failure)) => {
                Err(format!("a test write to the warehouse failed: {failure:#}"))
            }
            Ok(()) => unreachable!("the probe's transaction always ends in a rollback"),
        }
    }

    /// One attempt at `batch`: decode, then in one transaction apply, keep the rejects and
    /// publish; returns once everything is committed and acknowledged.
    pub async fn attempt(&self, batch: &[InMessage]) -> Result<Outcome, Failure> {
        let started = Instant::now();
        let mut phases = Phases::new(&self.status.metrics);
        let mut rejects = Rejects::new(batch);
        let mut items = Vec::with_capacity(batch.len());
        for (position, message) in batch.iter().enumerate() {
            match self.stage.decode(message) {
                Ok(item) => items.push(Entry {
                    item,
                    position,
                    sent_ms: message.sent_ms,
                }),
                Err(rejection) => rejects.reject_at(position, rejection),
            }
        }
        phases.end(Phase::decode);
        let decoded = items.len();
        let undecodable = rejects.letters;
        let mut conn = self.pool.get().await?;
        phases.end(Phase::connect);
        let (produced, rejected) = conn
            .transaction::<_, Failure, _>(async |conn| {
                let mut rejects = Rejects {
                    messages: batch,
                    letters: undecodable,
                };
                let output = self.stage.apply(conn, items, &mut rejects).await?;
                phases.end(Phase::apply);
                if !rejects.is_empty() {
                    dead_letter::insert(conn, self.service, &rejects.letters).await?;
                    phases.end(Phase::dead_letters);
                }
                match &self.output {
                    Some(Output { producer, topic }) => {
                        kafka::publish(producer, topic, &output).await?;
                        phases.end(Phase::publish);
                    }
                    None => debug_assert!(output.is_empty(), "a stage that does not publish"),
                }
                self.status
                    .record_rejects(rejects.letters.iter().map(|letter| letter.kind.as_str()));
                Ok((output.len(), rejects.letters.len()))
            })
            .await?;
        phases.end(Phase::commit);
        let now = chrono::Utc::now().timestamp_millis();
        for sent in batch.iter().filter_map(|message| message.sent_ms) {
            let seconds = (now - sent).max(0) as f64 / 1000.0;
            self.status.metrics.latency_seconds.observe(seconds);
        }
        tracing::debug!(service = self.service, messages = batch.len(), took = ?started.elapsed(),
            "Committed a batch.");
        let rejected_in_apply = rejected.saturating_sub(batch.len() - decoded);
        Ok(Outcome {
            processed: decoded.saturating_sub(rejected_in_apply) as u64,
            rejected: rejected as u64,
            produced: produced as u64,
        })
    }
}
