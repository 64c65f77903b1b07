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
    pub(crate) consumer: StreamConsumer,
    pub(crate) topic: String,
    pub(crate) handler: H,
    pub(crate) pool: PgPool,
    pub(crate) dependencies: Vec<Dependency>,
    pub(crate) batch: BatchSettings,
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
struct Abandoned;

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
        let mut queue: VecDeque<&[InMessage]> = VecDeque::from([batch]);
        let mut backoff = FIRST_BACKOFF;
        let mut suspect_attempts = 0;
        while let Some(slice) = queue.pop_front() {
            if *stop.borrow() {
                return Err(Abandoned);
            }
            let started = Instant::now();
            let failure = match self.handler.handle(slice).await {
                Ok(outcome) => {
                    self.status.record_batch(
                        outcome.processed,
                        outcome.rejected,
                        outcome.produced,
                        started.elapsed(),
                    );
                    self.status.set_state(WorkerState::Running);
                    backoff = FIRST_BACKOFF;
                    suspect_attempts = 0;
                    continue;
                }
                Err(failure) => failure,
            };
            self.status
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.status.record_error(failure.to_string());
            match failure {
                Failure::Transient(error) => {
                    tracing::warn!(error = %format!("{error:#}"), retry_in = ?backoff,
                        "A dependency is unavailable; retrying the same batch.");
                    self.status.set_state(WorkerState::Retrying);
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
                    if suspect_attempts >= SUSPECT_ATTEMPTS && self.dependencies_healthy().await {
                        if self.reject(&slice[0], &error).await {
                            suspect_attempts = 0;
                            continue;
                        }
                    } else {
                        tracing::warn!(error = %format!("{error:#}"), attempt = suspect_attempts,
                            "A message was refused; retrying it before rejecting it.");
                    }
                    queue.push_front(slice);
                }
            }
            tokio::select! {
                biased;
                () = stopped(stop) => return Err(Abandoned),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        Ok(())
    }

    async fn dependencies_healthy(&self) -> bool {
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
            Ok(_) => {
                tracing::error!(topic = %message.topic, partition = message.partition,
                    offset = message.offset, error = %format!("{error:#}"),
                    "A message kept failing while its dependencies were healthy; kept it as a dead letter.");
                self.status.record_batch(0, 1, 0, Duration::ZERO);
                true
            }
            Err(store_error) => {
                tracing::warn!(error = %store_error, "Cannot store a dead letter; retrying.");
                false
            }
        }
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
