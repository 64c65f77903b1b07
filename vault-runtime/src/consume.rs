//! The consume loop every service runs: batch, process, then store and commit offsets.
//!
//! The loop follows the at-least-once pattern of rust-rdkafka's `at_least_once.rs` and
//! Vector's Kafka source: auto offset store is off, and a batch's offsets are stored only after
//! its attempt returned, i.e. after its database transaction committed and everything it
//! published was acknowledged ([`crate::stage`]). Stages are idempotent, so a redelivery after
//! a crash changes nothing. Batches run one at a time, so offsets advance in receive order per
//! partition.
//!
//! Failures (docs/failures.md): a systemic one pauses the worker and retries the same batch
//! with back-off, skipping nothing and rejecting nothing; a suspect one bisects the batch to
//! isolate the message at fault and, when a single message keeps failing while the warehouse
//! and every dependency check out healthy, keeps it as a dead letter.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::config::BatchSettings;
use crate::dead_letter::{self, DeadLetter};
use crate::failure::{self, Failure};
use crate::kafka::InMessage;
use crate::metrics::Phase;
use crate::probe::Probes;
use crate::stage::{Outcome, Runner, Stage};
use crate::status::{Status, WorkerState};

/// How many times a lone message may fail as suspect before it is rejected.
const SUSPECT_ATTEMPTS: u32 = 4;

/// How long one attempt may take before it is abandoned as systemic: past the session's
/// statement timeout and the producer's acknowledgements on a healthy cluster, so only a
/// dependency that stopped answering reaches it (docs/failures.md).
pub(crate) const ATTEMPT_DEADLINE: Duration = Duration::from_secs(45);

/// A refusal that arrives later than this after the attempt began is systemic: the session's
/// lock timeout, which a wait for a lock reaches.
const SLOW_FAILURE: Duration = crate::stores::SessionLimits::SERVICE.lock;

/// The consumer's name on `/health` and in `vaultline_component_failing`.
const KAFKA_CONSUMER: &str = "kafka_consumer";

/// How long an attempt in flight may still finish once the service is told to stop; after
/// that it is abandoned (rolled back, redelivered), so a stop is never held by a wait.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Retry pacing: the first pause, doubled after each failure up to the maximum. The one
/// back-off of the runtime: the consume loop, start-up and the consumer use it.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub const DEFAULT: Backoff = Backoff {
        first: Duration::from_millis(200),
        max: Duration::from_secs(10),
    };

    #[cfg(test)]
    pub(crate) const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    pub fn first(&self) -> Duration {
        self.first
    }

    /// The pause after `pause`.
    pub fn next(&self, pause: Duration) -> Duration {
        (pause * 2).min(self.max)
    }

    /// Runs `attempt` until it succeeds, pausing between tries; `failed` hears of each error.
    pub async fn retry<T, E, F: Future<Output = Result<T, E>>>(
        &self,
        mut attempt: impl FnMut() -> F,
        mut failed: impl FnMut(&E, Duration),
    ) -> T {
        let mut pause = self.first;
        loop {
            match attempt().await {
                Ok(value) => return value,
                Err(error) => failed(&error, pause),
            }
            tokio::time::sleep(pause).await;
            pause = self.next(pause);
        }
    }
}

/// The loop's state; one per service process.
pub struct Worker<S> {
    /// Polled only by this loop, so a batch in hand and the offsets it stores can never
    /// interleave with another batch's.
    pub(crate) consumer: StreamConsumer,
    pub(crate) topic: String,
    pub(crate) runner: Runner<S>,
    /// Checked before a refused message is rejected, so an outage is never mistaken for a
    /// bad message; told of every batch's outcome, so `/health` hears of a failure at once.
    pub(crate) probes: Arc<Probes>,
    pub(crate) batch: BatchSettings,
    /// Shared with the HTTP server, which reports it on `/health` and `/metrics`.
    pub(crate) status: Arc<Status>,
}

impl<S> std::fmt::Debug for Worker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("topic", &self.topic)
            .finish()
    }
}

/// The loop was told to stop while it still had work in hand; that work is not committed and
/// will be redelivered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Abandoned;

impl<S: Stage> Worker<S> {
    /// Runs until `stop` turns true, then commits what is durable and returns.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        self.consumer.subscribe(&[self.topic.as_str()])?;
        self.status.set_state(WorkerState::Running);
        tracing::info!(service = self.status.service, topic = %self.topic, "Worker started.");
        loop {
            let waiting = Instant::now();
            let batch = tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                batch = self.next_batch() => batch,
            };
            self.status.metrics.phase(Phase::wait, waiting.elapsed());
            match process_batch(&self, &self.status, &batch, &mut stop, Backoff::DEFAULT).await {
                Ok(()) => self.store_and_commit(&batch, CommitMode::Async),
                Err(Abandoned) => {
                    tracing::info!(
                        service = self.status.service,
                        messages = batch.len(),
                        "Stopping with a batch in hand uncommitted; it will be redelivered."
                    );
                    break;
                }
            }
        }
        self.status.set_state(WorkerState::Stopping);
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(())
            | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                tracing::warn!(%error, "Final offset commit failed; the uncommitted tail will be redelivered.");
                self.status.metrics.error("offset_commit");
            }
        }
        self.status.set_state(WorkerState::Stopped);
        tracing::info!(service = self.status.service, "Worker stopped.");
        Ok(())
    }

    /// Waits for one message, then gathers more until the batch is full or the linger time
    /// has passed.
    async fn next_batch(&self) -> Vec<InMessage> {
        let mut batch = Vec::with_capacity(self.batch.max_messages);
        loop {
            match self.consumer.recv().await {
                Ok(message) => {
                    self.status.component_ok(KAFKA_CONSUMER);
                    batch.push(owned(&message));
                    break;
                }
                Err(error) => self.consumer_error(error).await,
            }
        }
        let deadline = tokio::time::Instant::now() + self.batch.linger;
        while batch.len() < self.batch.max_messages {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(owned(&message)),
                Ok(Err(error)) => {
                    self.consumer_error(error).await;
                    break;
                }
                Err(_) => break,
            }
        }
        batch
    }

    async fn consumer_error(&self, error: KafkaError) {
        tracing::warn!(%error, "Kafka consumer error; retrying.");
        self.status
            .component_failed(KAFKA_CONSUMER, format!("kafka consumer: {error}"));
        tokio::time::sleep(Backoff::DEFAULT.first()).await;
    }

    /// Stores the next offset of every partition in the batch and commits them.
    fn store_and_commit(&self, batch: &[InMessage], mode: CommitMode) {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for message in batch {
            let entry = next
                .entry((message.topic.as_str(), message.partition))
                .or_insert(0);
            *entry = (*entry).max(message.offset + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Err(error) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::warn!(%error, "Cannot record an offset to commit.");
            }
        }
        if let Err(error) = self.consumer.store_offsets(&tpl) {
            // Partitions revoked meanwhile: their new owner redelivers, harmlessly.
            tracing::warn!(%error, "Cannot store offsets; the batch will be redelivered to the partitions' new owner.");
            self.status.metrics.error("offset_store");
            return;
        }
        if let Err(error) = self.consumer.commit_consumer_state(mode) {
            tracing::warn!(%error, "Offset commit failed; it is retried with the next batch.");
            self.status.metrics.error("offset_commit");
        }
    }
}

impl<S: Stage> Attempts for Worker<S> {
    async fn attempt(&self, slice: &[InMessage]) -> Result<Outcome, Failure> {
        let result = self.runner.attempt(slice).await;
        match &result {
            // Committed: Postgres took the transaction and the brokers delivered the batch
            // (and acknowledged what it published) just now.
            Ok(_) => {
                self.probes.record("postgres", Ok(()));
                self.probes.record("kafka", Ok(()));
            }
            // Whatever failed, the dependency checks run now rather than within the second.
            Err(_) => self.probes.refresh_soon(),
        }
        result
    }

    /// The catalog check names what it finds (a missing table, a revoked grant); the probe
    /// then proves the stage's writes go through, which covers what a catalog cannot show
    /// (a held lock, a sequence, a full disk, a changed column type).
    async fn warehouse_problems(&self, prove_writes: bool) -> Vec<String> {
        let problems = match self.runner.pool.get().await {
            Ok(mut conn) => failure::diagnose(&mut conn, &S::tables()).await,
            Err(error) => vec![format!("cannot reach Postgres: {error}")],
        };
        if !problems.is_empty() || !prove_writes {
            return problems;
        }
        match self.runner.probe().await {
            Ok(()) => Vec::new(),
            Err(problem) => vec![problem],
        }
    }

    async fn unhealthy(&self) -> Option<String> {
        let checks = self.probes.check_now().await;
        checks
            .into_iter()
            .find_map(|(name, result)| result.err().map(|error| format!("{name} is down: {error}")))
    }

    /// Keeps a message that keeps failing as a dead letter; true when that is durable.
    async fn reject(&self, message: &InMessage, error: &anyhow::Error) -> bool {
        let letter = DeadLetter::new(message, "processing_failed", format!("{error:#}"));
        let stored = async {
            let mut conn = self.runner.pool.get().await.map_err(|e| e.to_string())?;
            dead_letter::insert(
                &mut conn,
                self.status.service,
                std::slice::from_ref(&letter),
            )
            .await
            .map_err(|e| e.to_string())
        }
        .await;
        match stored {
            Ok(_) => true,
            Err(store_error) => {
                tracing::warn!(error = %store_error, "Cannot store a dead letter; retrying.");
                self.status.metrics.error("dead_letter_store");
                false
            }
        }
    }
}

/// What batch processing needs: run one attempt, and what it escalates to when one fails.
pub(crate) trait Attempts: Sync {
    /// One attempt at `slice`, committed when it returns `Ok`.
    fn attempt(&self, slice: &[InMessage])
        -> impl Future<Output = Result<Outcome, Failure>> + Send;
    /// What keeps the warehouse from taking the stage's writes; empty when nothing does. The
    /// catalog is checked; with `prove_writes`, the warehouse probe then writes (and rolls
    /// back) a row to each of the stage's tables.
    fn warehouse_problems(&self, prove_writes: bool) -> impl Future<Output = Vec<String>> + Send;
    /// The first dependency that does not answer now, if any.
    fn unhealthy(&self) -> impl Future<Output = Option<String>> + Send;
    /// Keeps `message` as a dead letter; true once that is durable.
    fn reject(
        &self,
        message: &InMessage,
        error: &anyhow::Error,
    ) -> impl Future<Output = bool> + Send;
}

/// Drives one batch until all of it is committed or rejected, or until told to stop.
///
/// A systemic failure pauses: the same slice is retried with back-off, and `/health` names
/// the cause until it clears. A suspect failure is first checked against the warehouse (a
/// missing table or a revoked grant makes it systemic); otherwise the slice is split in halves
/// (first half first, so order is kept), and a lone message that stays suspect for
/// [`SUSPECT_ATTEMPTS`] attempts while the warehouse and the dependencies are healthy is
/// rejected.
pub(crate) async fn process_batch<A: Attempts>(
    attempts: &A,
    status: &Status,
    batch: &[InMessage],
    stop: &mut watch::Receiver<bool>,
    pacing: Backoff,
) -> Result<(), Abandoned> {
    let mut queue: VecDeque<&[InMessage]> = VecDeque::from([batch]);
    let mut backoff = pacing.first;
    let mut suspect_attempts = 0;
    while let Some(slice) = queue.pop_front() {
        if *stop.borrow() {
            return Err(Abandoned);
        }
        let started = Instant::now();
        let attempt = tokio::time::timeout(ATTEMPT_DEADLINE, attempts.attempt(slice));
        let result = tokio::select! {
            result = attempt => result.unwrap_or_else(|_| Err(Failure::Systemic(anyhow::anyhow!(
                "an attempt took longer than {ATTEMPT_DEADLINE:?}: the database or the broker \
                 stopped answering"
            )))),
            () = async {
                stopped(stop).await;
                tokio::time::sleep(STOP_GRACE).await;
            } => return Err(Abandoned),
        };
        let failure = match result {
            Ok(outcome) => {
                status.record_batch(
                    outcome.processed,
                    outcome.rejected,
                    outcome.produced,
                    started.elapsed(),
                );
                status.resume();
                backoff = pacing.first;
                suspect_attempts = 0;
                continue;
            }
            Err(failure) => failure,
        };
        let failure = match failure {
            // A statement that fails only after waiting this long was held by something
            // else (a lock, an overloaded server), not refused for a value.
            Failure::Suspect(error) if started.elapsed() >= SLOW_FAILURE => {
                Failure::Systemic(error.context(format!(
                    "the database refused the batch after {:?} of waiting",
                    started.elapsed()
                )))
            }
            Failure::Suspect(error) => {
                let problems = attempts.warehouse_problems(true).await;
                if problems.is_empty() {
                    Failure::Suspect(error)
                } else {
                    Failure::Systemic(error.context(problems.join("; ")))
                }
            }
            // Postgres named the fault; the catalog check adds where it lies (the table, the
            // privilege), which Postgres's message may leave out.
            Failure::Systemic(error) if failure::refused_by_database(&error) => {
                let problems = attempts.warehouse_problems(false).await;
                if problems.is_empty() {
                    Failure::Systemic(error)
                } else {
                    Failure::Systemic(error.context(problems.join("; ")))
                }
            }
            systemic => systemic,
        };
        status.record_retry(if failure.is_systemic() {
            "systemic"
        } else {
            "suspect"
        });
        match failure {
            Failure::Systemic(error) => {
                let cause = format!("{error:#}");
                tracing::warn!(error = %cause, retry_in = ?backoff,
                    "The warehouse or a dependency cannot take the batch; paused, retrying the same batch.");
                status.pause(cause);
                queue.push_front(slice);
            }
            Failure::Suspect(error) if slice.len() > 1 => {
                tracing::warn!(error = %format!("{error:#}"), size = slice.len(),
                    "A batch was refused; splitting it to isolate the message at fault.");
                status.record_error(format!("{error:#}"));
                let (first, second) = slice.split_at(slice.len() / 2);
                queue.push_front(second);
                queue.push_front(first);
                continue;
            }
            Failure::Suspect(error) => {
                suspect_attempts += 1;
                let message = &slice[0];
                status.record_error(format!("{error:#}"));
                if suspect_attempts >= SUSPECT_ATTEMPTS {
                    match attempts.unhealthy().await {
                        Some(cause) => status.pause(cause),
                        None if attempts.reject(message, &error).await => {
                            tracing::error!(topic = %message.topic, partition = message.partition,
                                offset = message.offset, key = %message.key_text(),
                                error = %format!("{error:#}"),
                                "A message kept failing while the warehouse and its dependencies were healthy; kept it as a dead letter.");
                            status.record_batch(0, 1, 0, Duration::ZERO);
                            status.record_rejects(["processing_failed"]);
                            suspect_attempts = 0;
                            continue;
                        }
                        // The dead letter could not be stored either (a full disk, say): the
                        // warehouse takes no writes at all, which is systemic.
                        None => status.pause(format!(
                            "the database refuses the batch and its dead letter: {error:#}"
                        )),
                    }
                }
                tracing::warn!(error = %format!("{error:#}"), attempt = suspect_attempts,
                    topic = %message.topic, partition = message.partition,
                    offset = message.offset, key = %message.key_text(),
                    "A message was refused; retrying it before rejecting it.");
                queue.push_front(slice);
            }
        }
        tokio::select! {
            biased;
            () = stopped(stop) => return Err(Abandoned),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = pacing.next(backoff);
    }
    Ok(())
}

/// Completes once `stop` is (or becomes) true.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stop.wait_for(|stop| *stop).await;
}

fn owned(message: &BorrowedMessage<'_>) -> InMessage {
    InMessage {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        sent_ms: crate::kafka::sent_ms(message),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const FAST: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(4));

    fn batch(offsets: std::ops::Range<i64>) -> Vec<InMessage> {
        offsets
            .map(|offset| InMessage {
                topic: "t".into(),
                partition: 0,
                offset,
                key: None,
                payload: Some(offset.to_string().into_bytes()),
                sent_ms: None,
            })
            .collect()
    }

    /// Refuses any slice holding a poison offset; fails systemically `outages` times first;
    /// `problems` is what a warehouse check finds.
    struct Fake {
        poison: Vec<i64>,
        outages: Mutex<u32>,
        processed: Mutex<Vec<i64>>,
        healthy: bool,
        problems: Vec<String>,
        rejected: Mutex<Vec<i64>>,
    }

    impl Fake {
        fn new(poison: &[i64], outages: u32, healthy: bool) -> Self {
            Self {
                poison: poison.to_vec(),
                outages: Mutex::new(outages),
                processed: Mutex::new(Vec::new()),
                healthy,
                problems: Vec::new(),
                rejected: Mutex::new(Vec::new()),
            }
        }

        fn processed(&self) -> Vec<i64> {
            self.processed.lock().expect("lock").clone()
        }

        fn rejected(&self) -> Vec<i64> {
            self.rejected.lock().expect("lock").clone()
        }
    }

    impl Attempts for Fake {
        async fn attempt(&self, batch: &[InMessage]) -> Result<Outcome, Failure> {
            {
                let mut outages = self.outages.lock().expect("lock");
                if *outages > 0 {
                    *outages -= 1;
                    return Err(Failure::Systemic(anyhow::anyhow!("database down")));
                }
            }
            if batch.iter().any(|m| self.poison.contains(&m.offset)) {
                return Err(Failure::Suspect(anyhow::anyhow!("value out of range")));
            }
            self.processed
                .lock()
                .expect("lock")
                .extend(batch.iter().map(|m| m.offset));
            Ok(Outcome {
                processed: batch.len() as u64,
                ..Outcome::default()
            })
        }

        async fn warehouse_problems(&self, _: bool) -> Vec<String> {
            self.problems.clone()
        }

        async fn unhealthy(&self) -> Option<String> {
            (!self.healthy).then(|| "postgres is down".to_owned())
        }

        async fn reject(&self, message: &InMessage, _: &anyhow::Error) -> bool {
            self.rejected.lock().expect("lock").push(message.offset);
            true
        }
    }

    /// Processes `messages` until they have been retried well past the point where a lone
    /// suspect message would be rejected, then stops the loop.
    async fn run_past_the_suspect_limit(
        fake: &Fake,
        status: &Status,
        messages: &[InMessage],
    ) -> Result<(), Abandoned> {
        let (tx, mut stop) = watch::channel(false);
        let stopper = async {
            while status.snapshot().retries < u64::from(SUSPECT_ATTEMPTS) * 3 {
                tokio::task::yield_now().await;
            }
            let _ = tx.send(true);
        };
        let (result, ()) = tokio::join!(
            process_batch(fake, status, messages, &mut stop, FAST),
            stopper
        );
        result
    }

    #[tokio::test]
    async fn a_refused_batch_is_bisected_and_only_the_message_at_fault_is_rejected() {
        let fake = Fake::new(&[7, 12], 0, true);
        let status = Status::new("test");
        let (_tx, mut stop) = watch::channel(false);
        let messages = batch(0..20);
        let result = process_batch(&fake, &status, &messages, &mut stop, FAST).await;
        assert_eq!(result, Ok(()));
        let expected: Vec<i64> = (0..20).filter(|o| *o != 7 && *o != 12).collect();
        assert_eq!(
            fake.processed(),
            expected,
            "everything else, once, in order"
        );
        assert_eq!(fake.rejected(), vec![7, 12]);
        assert_eq!(status.snapshot().rejected, 2);
    }

    #[tokio::test]
    async fn a_dependency_outage_retries_the_same_batch_and_skips_nothing() {
        let fake = Fake::new(&[], 3, true);
        let status = Status::new("test");
        let (_tx, mut stop) = watch::channel(false);
        let messages = batch(0..10);
        let result = process_batch(&fake, &status, &messages, &mut stop, FAST).await;
        assert_eq!(result, Ok(()));
        assert_eq!(fake.processed(), (0..10).collect::<Vec<_>>());
        assert!(fake.rejected().is_empty());
        assert_eq!(status.snapshot().retries, 3);
        assert_eq!(status.state(), WorkerState::Running);
    }

    #[tokio::test]
    async fn nothing_is_rejected_while_a_dependency_is_unhealthy() {
        let fake = Fake::new(&[3], 0, false);
        let status = Status::new("test");
        let result = run_past_the_suspect_limit(&fake, &status, &batch(0..6)).await;
        assert_eq!(result, Err(Abandoned));
        assert!(fake.rejected().is_empty());
        assert_eq!(
            fake.processed(),
            vec![0, 1, 2],
            "the part before the fault went through"
        );
    }

    #[tokio::test]
    async fn a_refusal_the_warehouse_check_explains_pauses_and_rejects_nothing() {
        // Every slice is refused (as when a table is missing), and the check says why.
        let mut fake = Fake::new(&[0, 1, 2, 3], 0, true);
        fake.problems = vec!["table cdm.user_product_counters does not exist".to_owned()];
        let status = Status::new("test");
        let result = run_past_the_suspect_limit(&fake, &status, &batch(0..4)).await;
        assert_eq!(result, Err(Abandoned));
        assert!(
            fake.rejected().is_empty(),
            "a systemic fault rejects nothing"
        );
        assert_eq!(status.state(), WorkerState::Retrying);
        let cause = status.snapshot().cause.expect("a cause");
        assert!(cause.contains("cdm.user_product_counters"), "{cause}");
    }
}
