//! Rewinding a service's consumer group on its source topic, so that the service reprocesses
//! from a point in time or an offset once it restarts (`vaultctl rewind`).
//!
//! Every stage is idempotent (stg keeps the newest version, dds gates versions on its load
//! state, cdm on the order's counted state), so reprocessing leaves the warehouse and the
//! counters exactly as they were; the rewind itself only has to be safe:
//! - Kafka accepts offsets from outside a group only while the group has no active members
//!   (a running member would overwrite them with its next commit anyway), so [`apply`] looks
//!   the group up first and refuses with [`RewindError::ActiveMembers`]; [`wait_until_empty`]
//!   waits for the operator to stop the service instead.
//! - A timestamp is turned into offsets by the broker (ListOffsets with a timestamp: the first
//!   message at or after it, per partition); a point after the last message is the log end.
//!   On the raw topic a message's timestamp is its producer's; on the internal topics, when
//!   the stage before published it (docs/contract.md §2).
//! - Targets are clamped to what the log holds (`low..=high` watermarks), and after the commit
//!   the committed offsets are read back and compared.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaSettings;
use crate::kafka::base_config;

/// The bound on each broker round trip.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`wait_until_empty`] looks at the group again.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// Where to rewind to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The first message whose timestamp is at or after this instant, per partition.
    Timestamp(DateTime<Utc>),
    /// The same offset on every partition.
    Offset(i64),
    /// An offset per partition (`0:120,1:80`); partitions not named keep their offsets.
    Offsets(BTreeMap<i32, i64>),
}

/// Why `--from` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--from `{0}` is neither an RFC 3339 timestamp (2026-11-22T15:00:00Z), an offset (120) nor offsets per partition (0:120,1:80)")]
pub struct StartError(String);

impl FromStr for Start {
    type Err = StartError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let error = || StartError(text.to_owned());
        if let Ok(at) = DateTime::parse_from_rfc3339(text) {
            return Ok(Self::Timestamp(at.with_timezone(&Utc)));
        }
        if let Ok(offset) = text.parse::<i64>() {
            return if offset >= 0 {
                Ok(Self::Offset(offset))
            } else {
                Err(error())
            };
        }
        let mut offsets = BTreeMap::new();
        for pair in text.split(',') {
            let (partition, offset) = pair.split_once(':').ok_or_else(error)?;
            let partition: i32 = partition.trim().parse().map_err(|_| error())?;
            let offset: i64 = offset.trim().parse().map_err(|_| error())?;
            if partition < 0 || offset < 0 || offsets.insert(partition, offset).is_some() {
                return Err(error());
            }
        }
        Ok(Self::Offsets(offsets))
    }
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timestamp(at) => write!(f, "{}", at.to_rfc3339()),
            Self::Offset(offset) => write!(f, "offset {offset}"),
            Self::Offsets(offsets) => {
                let pairs: Vec<String> = offsets.iter().map(|(p, o)| format!("{p}:{o}")).collect();
                write!(f, "offsets {}", pairs.join(","))
            }
        }
    }
}

/// A member of a consumer group, as the broker describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub client_id: String,
    pub host: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on {} (member {})",
            self.client_id, self.host, self.id
        )
    }
}

/// What the rewind does to one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub partition: i32,
    /// What the group has committed there now (`None`: nothing).
    pub committed: Option<i64>,
    /// The offset the group will read next once rewound.
    pub target: i64,
    /// The log's first offset and end (high watermark) on this partition.
    pub low: i64,
    pub high: i64,
    /// Whether the requested offset lay outside `low..=high` and was brought inside.
    pub clamped: bool,
}

impl Move {
    /// Whether the move jumps over messages the group has not processed yet: they would never
    /// be processed, and the counters would stop being exact.
    pub fn skips(&self) -> bool {
        self.target > self.committed.unwrap_or(self.low)
    }
}

/// A rewind worked out but not done: what [`apply`] will commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewindPlan {
    pub group: String,
    pub topic: String,
    pub from: Start,
    pub moves: Vec<Move>,
}

impl RewindPlan {
    /// The messages the service will process again (or, negative, skip) in total.
    pub fn reprocessed(&self) -> i64 {
        self.moves
            .iter()
            .map(|m| m.committed.unwrap_or(m.low) - m.target)
            .sum()
    }

    /// The partitions where the move skips unprocessed messages (see [`Move::skips`]).
    pub fn skipping(&self) -> Vec<i32> {
        self.moves
            .iter()
            .filter(|m| m.skips())
            .map(|m| m.partition)
            .collect()
    }

    /// The new offsets, by partition.
    pub fn targets(&self) -> BTreeMap<i32, i64> {
        self.moves.iter().map(|m| (m.partition, m.target)).collect()
    }
}

impl fmt::Display for RewindPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "rewind group {} on {} to {}:",
            self.group, self.topic, self.from
        )?;
        for m in &self.moves {
            let committed = m
                .committed
                .map_or_else(|| "none".to_owned(), |offset| offset.to_string());
            write!(
                f,
                "  partition {:>3}: committed {committed:>10} -> {:>10}   (log {}..{})",
                m.partition, m.target, m.low, m.high
            )?;
            if m.clamped {
                f.write_str("  clamped to the log")?;
            }
            writeln!(f)?;
        }
        let reprocessed = self.reprocessed();
        if reprocessed >= 0 {
            write!(f, "{reprocessed} message(s) will be processed again")
        } else {
            write!(f, "{} message(s) will be skipped", -reprocessed)
        }
    }
}

/// Why a rewind was not done. The caller branches on [`RewindError::ActiveMembers`] (wait, or
/// tell the operator to stop the service).
#[derive(Debug, thiserror::Error)]
pub enum RewindError {
    #[error(
        "consumer group {group} has {} active member(s): {}; Kafka accepts new offsets only for a \
         group without members, so stop every instance of the service and run this again (or \
         pass --wait SECONDS to wait until it is stopped)",
        members.len(),
        members.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    ActiveMembers { group: String, members: Vec<Member> },
    #[error(
        "the rewind of {group} would skip messages it has not processed on partitions \
         {partitions:?}: they would never be counted; pass --allow-skip if that is what you want"
    )]
    WouldSkip { group: String, partitions: Vec<i32> },
    #[error("consumer group {group} still had active members after {waited:?}")]
    StillActive { group: String, waited: Duration },
    #[error("topic {topic} does not exist")]
    UnknownTopic { topic: String },
    #[error("partition {partition} is not a partition of {topic}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error(
        "the broker kept offsets {committed:?} for group {group}, not the requested {targets:?}"
    )]
    NotCommitted {
        group: String,
        targets: BTreeMap<i32, i64>,
        committed: BTreeMap<i32, Option<i64>>,
    },
    #[error(transparent)]
    Kafka(#[from] anyhow::Error),
}

/// A client of `group` that never subscribes, so it never joins the group: it only reads
/// and commits the group's offsets from outside.
fn outsider(settings: &KafkaSettings, group: &str) -> anyhow::Result<BaseConsumer> {
    base_config(settings)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .context("cannot create a Kafka client for the consumer group")
}

/// The active members of `group` (empty when nobody consumes in it, or it does not exist).
pub async fn members(settings: &KafkaSettings, group: &str) -> anyhow::Result<Vec<Member>> {
    let consumer = outsider(settings, group)?;
    let group = group.to_owned();
    tokio::task::spawn_blocking(move || {
        // ListGroups to find the coordinator, then DescribeGroups (librdkafka's group list).
        let list = consumer
            .fetch_group_list(Some(&group), TIMEOUT)
            .with_context(|| format!("cannot describe consumer group {group}"))?;
        Ok(list
            .groups()
            .iter()
            .filter(|info| info.name() == group)
            .flat_map(|info| info.members())
            .map(|m| Member {
                id: m.id().to_owned(),
                client_id: m.client_id().to_owned(),
                host: m.client_host().to_owned(),
            })
            .collect())
    })
    .await
    .context("the group lookup task failed")?
}

/// Polls until `group` has no active members, for at most `limit`.
pub async fn wait_until_empty(
    settings: &KafkaSettings,
    group: &str,
    limit: Duration,
) -> Result<(), RewindError> {
    let started = tokio::time::Instant::now();
    loop {
        let active = members(settings, group).await?;
        if active.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= limit {
            return Err(RewindError::StillActive {
                group: group.to_owned(),
                waited: limit,
            });
        }
        tracing::info!(
            group,
            members = active.len(),
            "Waiting for the consumer group to be empty before rewinding it."
        );
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// Works out the rewind of `group` on `topic` to `from`, changing nothing.
pub async fn plan(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
    from: &Start,
) -> Result<RewindPlan, RewindError> {
    let consumer = outsider(settings, group)?;
    let (group, topic, from) = (group.to_owned(), topic.to_owned(), from.clone());
    tokio::task::spawn_blocking(move || plan_blocking(&consumer, group, topic, from))
        .await
        .context("the planning task failed")?
}

fn plan_blocking(
    consumer: &BaseConsumer,
    group: String,
    topic: String,
    from: Start,
) -> Result<RewindPlan, RewindError> {
    let metadata = consumer
        .fetch_metadata(Some(&topic), TIMEOUT)
        .with_context(|| format!("cannot fetch the metadata of {topic}"))?;
    let mut partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions.sort_unstable();
    if partitions.is_empty() {
        return Err(RewindError::UnknownTopic { topic });
    }
    if let Start::Offsets(offsets) = &from {
        if let Some(&partition) = offsets.keys().find(|p| !partitions.contains(p)) {
            return Err(RewindError::UnknownPartition { topic, partition });
        }
    }

    let mut all = TopicPartitionList::new();
    for &partition in &partitions {
        all.add_partition(&topic, partition);
    }
    let committed: BTreeMap<i32, Option<i64>> = consumer
        .committed_offsets(all, TIMEOUT)
        .with_context(|| format!("cannot fetch the offsets group {group} committed"))?
        .elements()
        .iter()
        .map(|e| (e.partition(), offset_value(e.offset())))
        .collect();

    let by_time: BTreeMap<i32, Option<i64>> = match &from {
        Start::Timestamp(at) => {
            let mut query = TopicPartitionList::new();
            for &partition in &partitions {
                query
                    .add_partition_offset(&topic, partition, Offset::Offset(at.timestamp_millis()))
                    .context("building the offsets-for-times query")?;
            }
            consumer
                .offsets_for_times(query, TIMEOUT)
                .with_context(|| format!("cannot look up the offsets of {topic} at {at}"))?
                .elements()
                .iter()
                .map(|e| (e.partition(), offset_value(e.offset())))
                .collect()
        }
        _ => BTreeMap::new(),
    };

    let mut moves = Vec::new();
    for &partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(&topic, partition, TIMEOUT)
            .with_context(|| format!("cannot fetch the watermarks of {topic}/{partition}"))?;
        let committed = committed.get(&partition).copied().flatten();
        let requested = match &from {
            // No message at or after the instant: the log's end.
            Start::Timestamp(_) => by_time.get(&partition).copied().flatten().unwrap_or(high),
            Start::Offset(offset) => *offset,
            Start::Offsets(offsets) => match offsets.get(&partition) {
                Some(offset) => *offset,
                None => continue,
            },
        };
        let target = requested.clamp(low, high);
        moves.push(Move {
            partition,
            committed,
            target,
            low,
            high,
            clamped: target != requested,
        });
    }
    Ok(RewindPlan {
        group,
        topic,
        from,
        moves,
    })
}

/// Commits `plan` for its group, if the group has no active members, and checks that the
/// broker kept the new offsets.
pub async fn apply(settings: &KafkaSettings, plan: &RewindPlan) -> Result<(), RewindError> {
    let active = members(settings, &plan.group).await?;
    if !active.is_empty() {
        return Err(RewindError::ActiveMembers {
            group: plan.group.clone(),
            members: active,
        });
    }
    let consumer = outsider(settings, &plan.group)?;
    let plan = plan.clone();
    tokio::task::spawn_blocking(move || {
        let mut offsets = TopicPartitionList::new();
        for m in &plan.moves {
            offsets
                .add_partition_offset(&plan.topic, m.partition, Offset::Offset(m.target))
                .context("building the offset commit")?;
        }
        // From outside the group (no member id, no generation): a broker accepts this only
        // for a group without members.
        consumer
            .commit(&offsets, CommitMode::Sync)
            .with_context(|| format!("the broker refused the new offsets of {}", plan.group))?;
        let mut check = TopicPartitionList::new();
        for m in &plan.moves {
            check.add_partition(&plan.topic, m.partition);
        }
        let committed: BTreeMap<i32, Option<i64>> = consumer
            .committed_offsets(check, TIMEOUT)
            .context("cannot read the committed offsets back")?
            .elements()
            .iter()
            .map(|e| (e.partition(), offset_value(e.offset())))
            .collect();
        let targets = plan.targets();
        if committed != targets.iter().map(|(p, o)| (*p, Some(*o))).collect() {
            return Err(RewindError::NotCommitted {
                group: plan.group.clone(),
                targets,
                committed,
            });
        }
        tracing::info!(
            group = %plan.group,
            topic = %plan.topic,
            from = %plan.from,
            reprocessed = plan.reprocessed(),
            "Rewound the consumer group."
        );
        Ok(())
    })
    .await
    .context("the commit task failed")?
}

/// One `vaultctl rewind`: which group, where to, and how careful.
#[derive(Debug, Clone)]
pub struct RewindRequest {
    pub group: String,
    pub topic: String,
    pub from: Start,
    /// Show the plan, change nothing.
    pub dry_run: bool,
    /// Wait this long for the group to become empty instead of refusing at once.
    pub wait: Option<Duration>,
    /// Allow moving past messages the group has not processed (they are never processed).
    pub allow_skip: bool,
}

/// Plans the rewind, tells `say` what it will do, and does it (unless a dry run). Returns the
/// plan that was (or would be) applied.
pub async fn rewind_group(
    settings: &KafkaSettings,
    request: &RewindRequest,
    mut say: impl FnMut(&str),
) -> Result<RewindPlan, RewindError> {
    let mut plan = plan(settings, &request.group, &request.topic, &request.from).await?;
    say(&plan.to_string());
    let active = members(settings, &request.group).await?;
    if request.dry_run {
        let skipping = plan.skipping();
        if !skipping.is_empty() && !request.allow_skip {
            say(&format!(
                "this skips unprocessed messages on partitions {skipping:?}: a real run needs \
                 --allow-skip"
            ));
        }
        if !active.is_empty() {
            say(&format!(
                "the group has {} active member(s) now: stop the service before rewinding",
                active.len()
            ));
        }
        say("dry run: nothing changed");
        return Ok(plan);
    }
    if !active.is_empty() {
        let Some(limit) = request.wait else {
            return Err(RewindError::ActiveMembers {
                group: request.group.clone(),
                members: active,
            });
        };
        say(&format!(
            "waiting up to {limit:?} for the {} active member(s) of {} to stop",
            active.len(),
            request.group
        ));
        wait_until_empty(settings, &request.group, limit).await?;
        // A stopping service commits what it finished: plan again from what it left.
        plan = self::plan(settings, &request.group, &request.topic, &request.from).await?;
        say(&plan.to_string());
    }
    let skipping = plan.skipping();
    if !skipping.is_empty() && !request.allow_skip {
        return Err(RewindError::WouldSkip {
            group: plan.group.clone(),
            partitions: skipping,
        });
    }
    apply(settings, &plan).await?;
    say("done: the service goes on from these offsets when it starts");
    Ok(plan)
}

fn offset_value(offset: Offset) -> Option<i64> {
    match offset {
        Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_core::contract::topics;

    #[test]
    fn from_reads_a_timestamp_an_offset_or_offsets_per_partition() {
        assert_eq!(
            "2026-11-22T15:00:00+01:00".parse::<Start>(),
            Ok(Start::Timestamp(
                DateTime::parse_from_rfc3339("2026-11-22T14:00:00Z")
                    .expect("timestamp")
                    .with_timezone(&Utc)
            ))
        );
        assert_eq!("120".parse::<Start>(), Ok(Start::Offset(120)));
        assert_eq!(
            "0:120, 2:7".parse::<Start>(),
            Ok(Start::Offsets(BTreeMap::from([(0, 120), (2, 7)])))
        );
        for bad in [
            "",
            "-1",
            "yesterday",
            "0:1,0:2",
            "1:-4",
            "a:1",
            "2026-11-22 15:00",
        ] {
            assert!(bad.parse::<Start>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_move_past_what_the_group_processed_skips() {
        let at = |committed: Option<i64>, target: i64| Move {
            partition: 0,
            committed,
            target,
            low: 3,
            high: 50,
            clamped: false,
        };
        assert!(at(Some(10), 11).skips());
        assert!(!at(Some(10), 10).skips());
        assert!(!at(Some(10), 0).skips());
        // Nothing committed: the group would start at the log's start.
        assert!(at(None, 4).skips());
        assert!(!at(None, 3).skips());
    }

    #[test]
    fn the_plan_says_what_moves_and_how_much_is_processed_again() {
        let plan = RewindPlan {
            group: topics::STG_GROUP.into(),
            topic: topics::RAW_ORDERS.into(),
            from: Start::Offset(0),
            moves: vec![
                Move {
                    partition: 0,
                    committed: Some(40),
                    target: 0,
                    low: 0,
                    high: 40,
                    clamped: false,
                },
                Move {
                    partition: 1,
                    committed: None,
                    target: 5,
                    low: 5,
                    high: 9,
                    clamped: true,
                },
            ],
        };
        assert_eq!(plan.reprocessed(), 40);
        assert!(plan.skipping().is_empty());
        let text = plan.to_string();
        assert!(
            text.contains("partition   0: committed         40 ->          0"),
            "{text}"
        );
        assert!(
            text.contains("committed       none ->          5"),
            "{text}"
        );
        assert!(text.contains("clamped"), "{text}");
        assert!(
            text.ends_with("40 message(s) will be processed again"),
            "{text}"
        );
    }
}
