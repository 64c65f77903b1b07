//! The pipeline's progress as the dashboard shows it (`GET /api/v1/pipeline` and
//! `GET /api/v1/pipeline/history`, docs/read-api.md): sampled from the broker by the service
//! itself, every [`SAMPLE_EVERY`], whether anyone asks or not.
//!
//! A fixed cadence is what makes the rates true: a rate is the difference of two samples over
//! the time between them, and with samples taken only when asked, the first one after a quiet
//! hour spread that hour's messages over "now" (an idle pipeline showed 44 msg/s). The last
//! [`KEEP`] of samples stay in memory, so a reloaded page draws its charts at once.
//!
//! End-to-end latency comes from the broker too, the same way as the offsets: when a stage's
//! committed offset on a partition moved since the last sample, the message just before it is
//! the last one the stage committed, and [`vault_runtime::sent_ms`] of it is when its order was
//! first sent (docs/contract.md §2). The sample's time minus that is that order's latency up
//! to this stage, rounded up to the next sample (at most [`SAMPLE_EVERY`] too high). p50 and
//! p99 are over the observations of the last [`LATENCY_WINDOW`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::{watch, Mutex};
use vault_runtime::{base_config, partition_progress, Hop, KafkaSettings, PartitionProgress};

/// The time between two samples of the broker.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How long samples are kept for `/api/v1/pipeline/history`.
pub const KEEP: Duration = Duration::from_secs(10 * 60);
/// The observations end-to-end latency percentiles are taken over.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(5 * 60);
/// How long a sample waits for the last committed messages' timestamps.
const FETCH_WAIT: Duration = Duration::from_millis(500);

/// `GET /api/v1/pipeline`: the latest sample.
#[derive(Debug, Serialize)]
pub struct Pipeline {
    sampled_at: DateTime<Utc>,
    /// The seconds between this sample and the one the rates are computed against (absent on
    /// the service's first sample).
    window_seconds: Option<f64>,
    stages: Vec<StageProgress>,
}

#[derive(Debug, Serialize)]
struct StageProgress {
    stage: &'static str,
    group: String,
    topic: String,
    /// Sum over the partitions of the group's committed offsets.
    committed: Option<i64>,
    /// Sum over the partitions of the high watermarks.
    end: Option<i64>,
    lag: Option<i64>,
    /// Messages committed per second over the window.
    throughput: Option<f64>,
    /// Messages arriving on the topic per second over the window.
    incoming: Option<f64>,
    /// End-to-end latency up to this stage's commit over [`LATENCY_WINDOW`].
    latency: Latency,
    /// Each partition's offsets and lag, by partition number.
    partitions: Vec<PartitionLine>,
    /// Why the broker could not be read for this stage.
    error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
struct Latency {
    /// How many observations the percentiles are over (none: both null).
    observations: usize,
    p50_seconds: Option<f64>,
    p99_seconds: Option<f64>,
}

#[derive(Debug, Serialize, PartialEq)]
struct PartitionLine {
    partition: i32,
    committed: i64,
    end: i64,
    lag: i64,
}

/// `GET /api/v1/pipeline/history`: the kept samples, oldest first, reduced to what the charts
/// draw.
#[derive(Debug, Serialize)]
pub struct History {
    sample_every_seconds: f64,
    keep_seconds: f64,
    #[serde(serialize_with = "shared")]
    samples: Vec<Arc<Point>>,
}

/// The points themselves (serde's `rc` feature is off in the workspace).
fn shared<S: serde::Serializer>(points: &[Arc<Point>], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(points.iter().map(|point| &**point))
}

#[derive(Debug, Serialize)]
pub struct Point {
    sampled_at: DateTime<Utc>,
    /// As in [`Pipeline`]: the seconds the rates are over.
    window_seconds: Option<f64>,
    stages: Vec<StagePoint>,
}

#[derive(Debug, Serialize)]
struct StagePoint {
    stage: &'static str,
    lag: Option<i64>,
    throughput: Option<f64>,
    latency_p50_seconds: Option<f64>,
    latency_p99_seconds: Option<f64>,
}

/// One hop's partitions, or why they could not be read.
type Read = Result<Vec<PartitionProgress>, String>;

/// Samples the consumer groups' progress on a fixed cadence and keeps the recent samples.
#[derive(Debug)]
pub struct Sampler {
    kafka: KafkaSettings,
    hops: Vec<Hop>,
    state: Mutex<State>,
    latest: watch::Sender<Option<Arc<Pipeline>>>,
    history: std::sync::Mutex<VecDeque<Arc<Point>>>,
    started: std::sync::Once,
}

#[derive(Default)]
struct State {
    /// One reader per hop, created on first use.
    readers: Option<Arc<Vec<BaseConsumer>>>,
    last: Option<(Instant, Vec<Read>)>,
    /// Latency observations per hop: when, and the seconds.
    latencies: Vec<VecDeque<(Instant, f64)>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

impl Sampler {
    /// A sampler, started at once when there is a runtime (else by the first question).
    pub fn new(kafka: KafkaSettings, hops: Vec<Hop>) -> Arc<Self> {
        let sampler = Arc::new(Self {
            kafka,
            hops,
            state: Mutex::new(State::default()),
            latest: watch::channel(None).0,
            history: std::sync::Mutex::new(VecDeque::new()),
            started: std::sync::Once::new(),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            sampler.start();
        }
        sampler
    }

    /// Starts the sampling task once; it ends when the sampler is dropped.
    fn start(self: &Arc<Self>) {
        self.started.call_once(|| {
            let weak: Weak<Self> = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(SAMPLE_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let Some(sampler) = weak.upgrade() else { break };
                    sampler.sample().await;
                }
            });
        });
    }

    /// The latest sample (the first one is waited for).
    pub async fn latest(self: &Arc<Self>) -> Arc<Pipeline> {
        self.start();
        let mut latest = self.latest.subscribe();
        let sample = latest
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives in self");
        sample.clone().expect("waited for")
    }

    /// The kept samples.
    pub async fn history(self: &Arc<Self>) -> History {
        self.latest().await;
        let samples = self.lock_history().iter().cloned().collect();
        History {
            sample_every_seconds: SAMPLE_EVERY.as_secs_f64(),
            keep_seconds: KEEP.as_secs_f64(),
            samples,
        }
    }

    fn lock_history(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Point>>> {
        // Only ever pushed to and popped whole.
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn sample(&self) {
        let mut state = self.state.lock().await;
        let readers = match &state.readers {
            Some(readers) => Ok(readers.clone()),
            None => self
                .hops
                .iter()
                .map(|hop| reader(&self.kafka, &hop.group))
                .collect::<anyhow::Result<Vec<_>>>()
                .map(Arc::new),
        };
        let now = Instant::now();
        let previous: Option<(f64, Vec<Read>)> = state
            .last
            .as_ref()
            .map(|(at, reads)| (now.duration_since(*at).as_secs_f64(), reads.clone()));
        let hops = self.hops.len();
        let (reads, sent): (Vec<Read>, Vec<Vec<i64>>) = match readers {
            Ok(readers) => {
                state.readers = Some(readers.clone());
                let topics: Vec<String> = self.hops.iter().map(|hop| hop.topic.clone()).collect();
                let before: Vec<Option<Vec<PartitionProgress>>> = (0..hops)
                    .map(|i| {
                        previous
                            .as_ref()
                            .and_then(|(_, reads)| reads.get(i)?.as_ref().ok().cloned())
                    })
                    .collect();
                tokio::task::spawn_blocking(move || read_all(&readers, &topics, &before))
                    .await
                    .unwrap_or_else(|e| (vec![Err(e.to_string()); hops], vec![Vec::new(); hops]))
            }
            Err(error) => (
                vec![Err(format!("{error:#}")); hops],
                vec![Vec::new(); hops],
            ),
        };
        let sampled_at = Utc::now();
        state.latencies.resize_with(hops, VecDeque::new);
        for (observations, sent) in state.latencies.iter_mut().zip(&sent) {
            for ms in sent {
                let seconds = (sampled_at.timestamp_millis() - ms).max(0) as f64 / 1000.0;
                observations.push_back((now, seconds));
            }
            while observations
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > LATENCY_WINDOW)
            {
                observations.pop_front();
            }
        }
        let stages: Vec<StageProgress> = self
            .hops
            .iter()
            .zip(&reads)
            .enumerate()
            .map(|(i, (hop, current))| {
                let before = previous
                    .as_ref()
                    .and_then(|(seconds, reads)| Some((reads.get(i)?.as_ref().ok()?, *seconds)));
                let latency = latency(state.latencies[i].iter().map(|(_, s)| *s).collect());
                progress(hop, current, before, latency)
            })
            .collect();
        let window_seconds = previous.as_ref().map(|(seconds, _)| *seconds);
        let point = Arc::new(Point {
            sampled_at,
            window_seconds,
            stages: stages
                .iter()
                .map(|s| StagePoint {
                    stage: s.stage,
                    lag: s.lag,
                    throughput: s.throughput,
                    latency_p50_seconds: s.latency.p50_seconds,
                    latency_p99_seconds: s.latency.p99_seconds,
                })
                .collect(),
        });
        let pipeline = Arc::new(Pipeline {
            sampled_at,
            window_seconds,
            stages,
        });
        state.last = Some((now, reads));
        drop(state);
        {
            let mut history = self.lock_history();
            history.push_back(point);
            let keep = (KEEP.as_secs_f64() / SAMPLE_EVERY.as_secs_f64()).ceil() as usize;
            while history.len() > keep {
                history.pop_front();
            }
        }
        self.latest.send_replace(Some(pipeline));
    }
}

/// Each hop's partitions, and the send timestamps (ms) of the messages each hop committed
/// last on the partitions where it moved since `before`. Blocking: run off the async threads.
fn read_all(
    readers: &[BaseConsumer],
    topics: &[String],
    before: &[Option<Vec<PartitionProgress>>],
) -> (Vec<Read>, Vec<Vec<i64>>) {
    let mut reads = Vec::new();
    let mut sent = Vec::new();
    for (i, (reader, topic)) in readers.iter().zip(topics).enumerate() {
        let result = partition_progress(reader, topic).map_err(|e| format!("{e:#}"));
        // Drains the client's event queue (logs, errors), which nothing else polls.
        let _ = reader.poll(Duration::ZERO);
        let read = result.and_then(|partitions| {
            if partitions.is_empty() {
                Err(format!("the broker knows no topic {topic}"))
            } else {
                Ok(partitions)
            }
        });
        let moved: Vec<(i32, i64)> = match (&read, before.get(i).and_then(Option::as_ref)) {
            (Ok(now), Some(before)) => now
                .iter()
                .filter(|p| {
                    before
                        .iter()
                        .any(|b| b.partition == p.partition && b.committed < p.committed)
                })
                .map(|p| (p.partition, p.committed - 1))
                .collect(),
            _ => Vec::new(),
        };
        sent.push(timestamps(reader, topic, &moved));
        reads.push(read);
    }
    (reads, sent)
}

/// A hop's reader: the group's committed offsets and the topic's watermarks, and single
/// messages by offset for their timestamps — assigned partitions, never a member of the group,
/// never committing, and fetching little, since each sample needs one message per partition
/// (the broker still sends at least one record batch). One client for both, so that the
/// message reads find it connected: it is used every second.
fn reader(settings: &KafkaSettings, group: &str) -> anyhow::Result<BaseConsumer> {
    use anyhow::Context as _;
    base_config(settings)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("max.partition.fetch.bytes", "4096")
        .set("queued.max.messages.kbytes", "64")
        .set("fetch.wait.max.ms", "50")
        .create()
        .context("cannot create the Kafka offsets reader")
}

/// The timestamps of the messages at `(partition, offset)` of `topic`, as far as they arrive
/// within [`FETCH_WAIT`]. The reader is assigned the partitions for this and nothing else: it
/// never commits (nor joins its group).
fn timestamps(reader: &BaseConsumer, topic: &str, wanted: &[(i32, i64)]) -> Vec<i64> {
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut assignment = TopicPartitionList::new();
    for (partition, offset) in wanted {
        if assignment
            .add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .is_err()
        {
            return Vec::new();
        }
    }
    if let Err(error) = reader.assign(&assignment) {
        tracing::debug!(%error, topic, "Could not read the last committed messages.");
        return Vec::new();
    }
    let wanted: HashMap<i32, i64> = wanted.iter().copied().collect();
    let mut found: HashMap<i32, i64> = HashMap::new();
    let deadline = Instant::now() + FETCH_WAIT;
    while found.len() < wanted.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match reader.poll(left) {
            Some(Ok(message)) => {
                let partition = message.partition();
                if wanted.get(&partition) == Some(&message.offset()) {
                    if let Some(ms) = vault_runtime::sent_ms(&message) {
                        found.insert(partition, ms);
                    }
                }
            }
            Some(Err(error)) => {
                tracing::debug!(%error, topic, "Could not read the last committed messages.");
                break;
            }
            None => {}
        }
    }
    let _ = reader.unassign();
    found.into_values().collect()
}

/// p50 and p99 of `seconds` (nearest rank).
fn latency(mut seconds: Vec<f64>) -> Latency {
    if seconds.is_empty() {
        return Latency::default();
    }
    seconds.sort_by(f64::total_cmp);
    let rank =
        |q: f64| seconds[((q * seconds.len() as f64).ceil() as usize).clamp(1, seconds.len()) - 1];
    Latency {
        observations: seconds.len(),
        p50_seconds: Some(rank(0.50)),
        p99_seconds: Some(rank(0.99)),
    }
}

/// One stage's line of the answer, with rates over the window when an earlier sample of the
/// same hop exists.
fn progress(
    hop: &Hop,
    current: &Read,
    before: Option<(&Vec<PartitionProgress>, f64)>,
    latency: Latency,
) -> StageProgress {
    let mut line = StageProgress {
        stage: hop.stage,
        group: hop.group.clone(),
        topic: hop.topic.clone(),
        committed: None,
        end: None,
        lag: None,
        throughput: None,
        incoming: None,
        latency,
        partitions: Vec::new(),
        error: None,
    };
    match current {
        Ok(partitions) => {
            let (committed, end) = totals(partitions);
            line.committed = Some(committed);
            line.end = Some(end);
            line.lag = Some((end - committed).max(0));
            let mut lines: Vec<PartitionLine> = partitions
                .iter()
                .map(|p| PartitionLine {
                    partition: p.partition,
                    committed: p.committed,
                    end: p.end,
                    lag: p.lag(),
                })
                .collect();
            lines.sort_by_key(|p| p.partition);
            line.partitions = lines;
            if let Some((before, window)) = before {
                if window > 0.0 {
                    let (committed_before, end_before) = totals(before);
                    // A rewound group commits lower offsets: no negative rates.
                    line.throughput = Some(((committed - committed_before).max(0)) as f64 / window);
                    line.incoming = Some(((end - end_before).max(0)) as f64 / window);
                }
            }
        }
        Err(error) => line.error = Some(error.clone()),
    }
    line
}

fn totals(partitions: &[PartitionProgress]) -> (i64, i64) {
    partitions.iter().fold((0, 0), |(committed, end), p| {
        (committed + p.committed, end + p.end)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_core::contract::topics;

    fn hop() -> Hop {
        Hop {
            stage: "dds",
            group: topics::DDS_GROUP.into(),
            topic: topics::ENRICHED_ORDERS.into(),
        }
    }

    fn partitions(offsets: &[(i64, i64)]) -> Vec<PartitionProgress> {
        offsets
            .iter()
            .enumerate()
            .map(|(i, (committed, end))| PartitionProgress {
                partition: i as i32,
                committed: *committed,
                end: *end,
            })
            .collect()
    }

    #[test]
    fn throughput_is_the_committed_difference_over_the_window() {
        let before = partitions(&[(500, 600), (500, 500)]);
        let now = partitions(&[(700, 900), (600, 600)]);
        let line = progress(&hop(), &Ok(now), Some((&before, 2.0)), Latency::default());
        assert_eq!(line.lag, Some(200));
        assert_eq!(line.throughput, Some(150.0));
        assert_eq!(line.incoming, Some(200.0));
    }

    #[test]
    fn the_first_sample_has_offsets_but_no_rates() {
        let line = progress(
            &hop(),
            &Ok(partitions(&[(10, 10)])),
            None,
            Latency::default(),
        );
        assert_eq!((line.committed, line.lag), (Some(10), Some(0)));
        assert_eq!((line.throughput, line.incoming), (None, None));
    }

    #[test]
    fn each_partition_has_its_own_lag() {
        let line = progress(
            &hop(),
            &Ok(partitions(&[(10, 15), (7, 7)])),
            None,
            Latency::default(),
        );
        assert_eq!(
            line.partitions,
            [
                PartitionLine {
                    partition: 0,
                    committed: 10,
                    end: 15,
                    lag: 5
                },
                PartitionLine {
                    partition: 1,
                    committed: 7,
                    end: 7,
                    lag: 0
                }
            ]
        );
    }

    #[test]
    fn a_rewound_group_has_no_negative_throughput() {
        let before = partitions(&[(500, 500)]);
        let line = progress(
            &hop(),
            &Ok(partitions(&[(0, 500)])),
            Some((&before, 1.0)),
            Latency::default(),
        );
        assert_eq!(line.throughput, Some(0.0));
        assert_eq!(line.lag, Some(500));
    }

    #[test]
    fn an_unreadable_broker_is_reported_per_stage() {
        let line = progress(&hop(), &Err("timed out".into()), None, Latency::default());
        assert_eq!(line.error.as_deref(), Some("timed out"));
        assert_eq!(line.committed, None);
    }

    #[test]
    fn latency_percentiles_are_nearest_ranks() {
        let seconds: Vec<f64> = (1..=100).map(f64::from).collect();
        let latency = latency(seconds);
        assert_eq!(latency.observations, 100);
        assert_eq!(latency.p50_seconds, Some(50.0));
        assert_eq!(latency.p99_seconds, Some(99.0));
        assert_eq!(super::latency(vec![]), Latency::default());
        assert_eq!(super::latency(vec![0.3]).p99_seconds, Some(0.3));
    }
}
