//! The consume loop every service runs: batch, process, then store and commit offsets.
//!
//! The loop follows the at-least-once pattern of rust-rdkafka's `at_least_once.rs` and
//! Vector's Kafka source: auto offset store is off, and a batch's offsets are stored only after
//! its handler returned, i.e. after its database transaction committed and everything it
//! published was acknowledged. Handlers are idempotent, so a redelivery after a crash changes
//! nothing. Batches run one at a time, so offsets advance in receive order per partition.
//!
//! Failures (see [`Failure`]): a transient one retries the same batch with back-off, skipping
//! nothing; a suspect one bisects the batch to isolate the message at fault and, when a single
//! message keeps failing while its dependencies are healthy, keeps it as a dead letter.

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
use crate::failure::Failure;
use crate::http::Dependency;
use crate::kafka::InMessage;
use crate::status::{Status, WorkerState};
use crate::stores::PgPool;

/// What a handler did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub processed: u64,
    pub rejected: u64,
    pub produced: u64,
}

/// A service's processing step. `handle` must be idempotent, and when it returns `Ok` every
/// effect of the batch must be durable (committed, acknowledged).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, batch: &[InMessage]) -> impl Future<Output = Result<Outcome, Failure>> + Send;
}

/// How many times a lone message may fail as suspect before it is rejected.
const SUSPECT_ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The loop's state; one per service process.
pub struct Worker<H> {
    /// Polled only by this loop, so a batch in hand and the offsets it stores can never
    /// interleave with another batch's.
    pub(crate) consumer: StreamConsumer,
    pub(crate) topic: String,
    pub(crate) handler: H,
    /// For dead letters of messages the handler keeps refusing: written outside the
    /// handler's transaction, which is the one that fails.
    pub(crate) pool: PgPool,
    /// Checked before a refused message is rejected, so an outage is never mistaken for a
    /// bad message.
    pub(crate) dependencies: Vec<Dependency>,
    pub(crate) batch: BatchSettings,
    /// Shared with the HTTP server, which reports it on `/health` and `/metrics`.
    pub(crate) status: Arc<Status>,
}

impl<H> std::fmt::Debug for Worker<H> {
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

impl<H: Handler> Worker<H> {
    /// Runs until `stop` turns true, then commits what is durable and returns.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        self.consumer.subscribe(&[self.topic.as_str()])?;
        self.status.set_state(WorkerState::Running);
        tracing::info!(service = self.status.service, topic = %self.topic, "Worker started.");
        loop {
            let batch = tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                batch = self.next_batch() => batch,
            };
            match self.process(&batch, &mut stop).await {
                Ok(()) => self.store_and_commit(&batch, CommitMode::Async),
                Err(Abandoned) => break,
            }
        }
        self.status.set_state(WorkerState::Stopping);
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(())
            | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                tracing::warn!(%error, "Final offset commit failed; the uncommitted tail will be redelivered.")
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
        self.status.record_error(format!("kafka consumer: {error}"));
        tokio::time::sleep(FIRST_BACKOFF).await;
    }

    /// Processes a batch to the end, or until told to stop.
    async fn process(
        &self,
        batch: &[InMessage],
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Abandoned> {
        process_batch(
            &self.handler,
            self,
            &self.status,
            batch,
            stop,
            Backoff::DEFAULT,
        )
        .await
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
            return;
        }
        if let Err(error) = self.consumer.commit_consumer_state(mode) {
            tracing::warn!(%error, "Offset commit failed; it is retried with the next batch.");
        }
    }
}

impl<H: Handler> Escalation for Worker<H> {
    async fn healthy(&self) -> bool {
        for dependency in &self.dependencies {
            if dependency.check().await.is_err() {
                return false;
            }
        }
        true
    }

    /// Keeps a message that keeps failing as a dead letter; true when that is durable.
    async fn reject(&self, message: &InMessage, error: &anyhow::Error) -> bool {
        let letter = DeadLetter::new(message, "processing_failed", format!("{error:#}"));
        let stored = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
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
                false
            }
        }
    }
}

/// What batch processing escalates to when a handler fails.
pub(crate) trait Escalation: Sync {
    /// Whether every dependency answers now.
    fn healthy(&self) -> impl Future<Output = bool> + Send;
    /// Keeps `message` as a dead letter; true once that is durable.
    fn reject(
        &self,
        message: &InMessage,
        error: &anyhow::Error,
    ) -> impl Future<Output = bool> + Send;
}

/// Retry pacing: the first pause, doubled after each failure up to the maximum.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    const DEFAULT: Backoff = Backoff {
        first: FIRST_BACKOFF,
        max: MAX_BACKOFF,
    };
}

/// Drives one batch through `handler` until all of it is processed or rejected, or until
/// told to stop. Transient failures retry the same slice; a suspect failure splits the slice
/// in halves (first half first, so order is kept); a lone message that stays suspect for
/// [`SUSPECT_ATTEMPTS`] attempts while the dependencies are healthy is rejected.
pub(crate) async fn process_batch<H: Handler, E: Escalation>(
    handler: &H,
    escalation: &E,
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
        let failure = match handler.handle(slice).await {
            Ok(outcome) => {
                status.record_batch(
                    outcome.processed,
                    outcome.rejected,
                    outcome.produced,
                    started.elapsed(),
                );
                status.set_state(WorkerState::Running);
                backoff = pacing.first;
                suspect_attempts = 0;
                continue;
            }
            Err(failure) => failure,
        };
        status
            .retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        status.record_error(failure.to_string());
        match failure {
            Failure::Transient(error) => {
                tracing::warn!(error = %format!("{error:#}"), retry_in = ?backoff,
                    "A dependency is unavailable; retrying the same batch.");
                status.set_state(WorkerState::Retrying);
                queue.push_front(slice);
            }
            Failure::Suspect(error) if slice.len() > 1 => {
                tracing::warn!(error = %format!("{error:#}"), size = slice.len(),
                    "A batch was refused; splitting it to isolate the message at fault.");
                let (first, second) = slice.split_at(slice.len() / 2);
                queue.push_front(second);
                queue.push_front(first);
                continue;
            }
            Failure::Suspect(error) => {
                suspect_attempts += 1;
                let message = &slice[0];
                if suspect_attempts >= SUSPECT_ATTEMPTS
                    && escalation.healthy().await
                    && escalation.reject(message, &error).await
                {
                    tracing::error!(topic = %message.topic, partition = message.partition,
                        offset = message.offset, error = %format!("{error:#}"),
                        "A message kept failing while its dependencies were healthy; kept it as a dead letter.");
                    status.record_batch(0, 1, 0, Duration::ZERO);
                    suspect_attempts = 0;
                    continue;
                }
                tracing::warn!(error = %format!("{error:#}"), attempt = suspect_attempts,
                    "A message was refused; retrying it before rejecting it.");
                queue.push_front(slice);
            }
        }
        tokio::select! {
            biased;
            () = stopped(stop) => return Err(Abandoned),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(pacing.max);
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
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const FAST: Backoff = Backoff {
        first: Duration::from_millis(1),
        max: Duration::from_millis(4),
    };

    fn batch(offsets: std::ops::Range<i64>) -> Vec<InMessage> {
        offsets
            .map(|offset| InMessage {
                topic: "t".into(),
                partition: 0,
                offset,
                key: None,
                payload: Some(offset.to_string().into_bytes()),
            })
            .collect()
    }

    /// Refuses any slice holding a poison offset; fails transiently `outages` times first.
    struct FakeHandler {
        poison: Vec<i64>,
        outages: Mutex<u32>,
        processed: Mutex<Vec<i64>>,
    }

    impl FakeHandler {
        fn new(poison: &[i64], outages: u32) -> Self {
            Self {
                poison: poison.to_vec(),
                outages: Mutex::new(outages),
                processed: Mutex::new(Vec::new()),
            }
        }

        fn processed(&self) -> Vec<i64> {
            self.processed.lock().expect("lock").clone()
        }
    }

    impl Handler for FakeHandler {
        async fn handle(&self, batch: &[InMessage]) -> Result<Outcome, Failure> {
            {
                let mut outages = self.outages.lock().expect("lock");
                if *outages > 0 {
                    *outages -= 1;
                    return Err(Failure::Transient(anyhow::anyhow!("database down")));
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
    }

    struct FakeEscalation {
        healthy: bool,
        rejected: Mutex<Vec<i64>>,
    }

    impl FakeEscalation {
        fn new(healthy: bool) -> Self {
            Self {
                healthy,
                rejected: Mutex::new(Vec::new()),
            }
        }
    }

    impl Escalation for FakeEscalation {
        async fn healthy(&self) -> bool {
            self.healthy
        }

        async fn reject(&self, message: &InMessage, _: &anyhow::Error) -> bool {
            self.rejected.lock().expect("lock").push(message.offset);
            true
        }
    }

    #[tokio::test]
    async fn a_refused_batch_is_bisected_and_only_the_message_at_fault_is_rejected() {
        let handler = FakeHandler::new(&[7, 12], 0);
        let escalation = FakeEscalation::new(true);
        let status = Status::new("test");
        let (_tx, mut stop) = watch::channel(false);
        let messages = batch(0..20);
        let result =
            process_batch(&handler, &escalation, &status, &messages, &mut stop, FAST).await;
        assert_eq!(result, Ok(()));
        let expected: Vec<i64> = (0..20).filter(|o| *o != 7 && *o != 12).collect();
        assert_eq!(
            handler.processed(),
            expected,
            "everything else, once, in order"
        );
        assert_eq!(*escalation.rejected.lock().expect("lock"), vec![7, 12]);
        assert_eq!(status.snapshot().rejected, 2);
    }

    #[tokio::test]
    async fn a_dependency_outage_retries_the_same_batch_and_skips_nothing() {
        let handler = FakeHandler::new(&[], 3);
        let escalation = FakeEscalation::new(true);
        let status = Status::new("test");
        let (_tx, mut stop) = watch::channel(false);
        let messages = batch(0..10);
        let result =
            process_batch(&handler, &escalation, &status, &messages, &mut stop, FAST).await;
        assert_eq!(result, Ok(()));
        assert_eq!(handler.processed(), (0..10).collect::<Vec<_>>());
        assert!(escalation.rejected.lock().expect("lock").is_empty());
        assert_eq!(status.snapshot().retries, 3);
        assert_eq!(status.state(), WorkerState::Running);
    }

    #[tokio::test]
    async fn nothing_is_rejected_while_a_dependency_is_unhealthy() {
        let handler = FakeHandler::new(&[3], 0);
        let escalation = FakeEscalation::new(false);
        let status = Status::new("test");
        let (tx, mut stop) = watch::channel(false);
        let messages = batch(0..6);
        let stopper = async {
            // Stop once the lone poison message has been retried well past the limit.
            while status.snapshot().retries < u64::from(SUSPECT_ATTEMPTS) * 3 {
                tokio::task::yield_now().await;
            }
            let _ = tx.send(true);
        };
        let (result, ()) = tokio::join!(
            process_batch(&handler, &escalation, &status, &messages, &mut stop, FAST),
            stopper
        );
        assert_eq!(result, Err(Abandoned));
        assert!(escalation.rejected.lock().expect("lock").is_empty());
        assert_eq!(
            handler.processed(),
            vec![0, 1, 2],
            "the part before the fault went through"
        );
    }
}
