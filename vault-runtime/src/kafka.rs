//! Kafka clients (rdkafka): consumer and producer configuration, batch publishing with
//! delivery acknowledgement, and topic creation. Broker-agnostic: nothing here depends on
//! more than the Kafka protocol (no transactions).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::try_join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};
pub use rdkafka::producer::FutureProducer;
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::util::Timeout;

use vault_core::contract::{decode_sent_ms, encode_sent_ms, SENT_MS_HEADER};

use crate::config::{ConfigError, KafkaSecurity, KafkaSettings};

/// A message taken off the consumer, owned so it outlives the poll that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// When the order it carries was first sent (ms since the epoch): [`sent_ms`].
    pub sent_ms: Option<i64>,
}

impl InMessage {
    pub fn payload(&self) -> &[u8] {
        self.payload.as_deref().unwrap_or_default()
    }

    /// The key as text, for log lines (the order id, for every topic of the pipeline).
    pub fn key_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.key.as_deref().unwrap_or_default())
    }
}

/// A message to publish: always keyed (by order id, so every version of one order shares a
/// partition and its order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    pub key: String,
    pub payload: Vec<u8>,
    /// When the order this message derives from was first sent (ms since the epoch), carried
    /// over from the message it derives from in the [`SENT_MS_HEADER`], so that every stage
    /// measures latency from the original send. The Kafka timestamp is always the time of
    /// publishing, which the broker's time retention counts from.
    pub sent_ms: Option<i64>,
}

/// The settings shared by every client.
pub fn base_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.bootstrap_servers);
    if let KafkaSecurity::Sasl {
        protocol,
        mechanism,
        username,
        password,
        ca_cert,
    } = &settings.security
    {
        config
            .set("security.protocol", protocol)
            .set("sasl.mechanism", mechanism)
            .set("sasl.username", username)
            .set("sasl.password", password.expose());
        if let Some(path) = ca_cert {
            config.set("ssl.ca.location", path.to_string_lossy());
        }
    }
    config
}

/// How much a consumer fetches ahead of the batch in hand, in kilobytes: about two batches of
/// 1,000 messages (a raw order is ~0.9 KB on the topic, an enriched one ~0.7 KB, a counter
/// event ~1.1 KB). With 8 MB service-stg peaked at 75 MB in a 100,000-order drain, with 2 MB
/// at 60 MB (docs/performance.md, "Memory").
const CONSUMER_PREFETCH_KBYTES: usize = 2 * 1024;

/// A consumer that never stores or commits offsets by itself: the consume loop stores an
/// offset only after everything its message caused is durable.
pub fn consumer(settings: &KafkaSettings) -> anyhow::Result<StreamConsumer> {
    let mut config = base_config(settings);
    if let Some(instance) = &settings.group_instance_id {
        config.set("group.instance.id", instance);
    }
    let session = settings.session_timeout.as_millis();
    config
        .set("group.id", &settings.consumer_group)
        // A member killed with -9 never says goodbye: the group notices when its session
        // expires, and only then gives its partitions to the restarted process.
        .set("session.timeout.ms", session.to_string())
        .set("heartbeat.interval.ms", (session / 4).min(3000).to_string())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // A broker that holds an empty fetch for the whole wait (as some do, instead of
        // answering when data arrives) would add that wait to every hop's latency.
        .set("fetch.wait.max.ms", "50")
        // A dependency outage holds a batch in retries; stay in the group meanwhile.
        .set("max.poll.interval.ms", "900000")
        // The prefetch is what a service's memory grows with under a backlog: librdkafka's
        // defaults queue up to 64 MB ahead of the batch in hand (and fetch 50 MB at a time),
        // which took service-stg to 171 MB in a drain. A batch or two ahead is all the loop
        // can use, since it takes one batch at a time. The bound counts bytes as fetched, so
        // compressed batches (`KAFKA_COMPRESSION`) hold several times as many messages: with
        // lz4, service-stg's peak in a drain rose from 33–38 to 41–45 MB (docs/performance.md).
        .set(
            "queued.max.messages.kbytes",
            CONSUMER_PREFETCH_KBYTES.to_string(),
        )
        .set(
            "fetch.max.bytes",
            (CONSUMER_PREFETCH_KBYTES * 1024 / 2).to_string(),
        )
        // With the queue bounded, it fills whenever a backlog waits; librdkafka then pauses
        // fetching for this long (1 s by default), which would leave the loop idle.
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .context("cannot create the Kafka consumer")
}

pub fn producer(settings: &KafkaSettings) -> anyhow::Result<FutureProducer> {
    let mut config = base_config(settings);
    config
        .set("acks", "all")
        .set("enable.idempotence", settings.idempotence.to_string())
        .set("linger.ms", "5")
        .set("compression.type", settings.compression.as_str())
        .set("message.timeout.ms", "30000");
    if !settings.idempotence {
        // Without idempotence only one request in flight keeps retries from reordering a
        // partition.
        config.set("max.in.flight.requests.per.connection", "1");
    }
    config.create().context("cannot create the Kafka producer")
}

/// When the order `message` carries was first sent (ms since the epoch): its
/// [`SENT_MS_HEADER`], which every stage puts on what it publishes, or else its Kafka timestamp
/// (a raw order's, from its producer).
pub fn sent_ms<M: Message>(message: &M) -> Option<i64> {
    sent_header(message).or_else(|| message.timestamp().to_millis())
}

/// The [`SENT_MS_HEADER`] of `message`, decoded; `None` without one.
pub fn sent_header<M: Message>(message: &M) -> Option<i64> {
    let headers = message.headers()?;
    let header = headers.iter().find(|header| header.key == SENT_MS_HEADER)?;
    decode_sent_ms(header.value?)
}

/// Publishes a batch and waits until the broker has acknowledged every message. Messages
/// are enqueued all at once, so the batch costs one round of acknowledgements, not one per
/// message; per-partition order is kept by the (idempotent) producer.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    messages: &[OutMessage],
) -> Result<(), KafkaError> {
    let deliveries = messages.iter().map(|message| {
        let mut record = FutureRecord::to(topic)
            .key(message.key.as_bytes())
            .payload(&message.payload);
        if let Some(ms) = message.sent_ms {
            record = record.headers(OwnedHeaders::new_with_capacity(1).insert(Header {
                key: SENT_MS_HEADER,
                value: Some(encode_sent_ms(ms).as_bytes()),
            }));
        }
        async move {
            producer
                .send(record, Timeout::After(Duration::from_secs(30)))
                .await
                .map(|_| ())
                .map_err(|(error, _)| error)
        }
    });
    try_join_all(deliveries).await.map(|_| ())
}

/// Creates topics that do not exist yet (existing ones are left as they are), with the
/// cluster's own replication factor (`default.replication.factor`, 3 on a production cluster),
/// so that a topic a service creates is as durable as the cluster it lives on.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[&str],
    partitions: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(settings)
        .create()
        .context("cannot create the Kafka admin client")?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(-1)))
        .collect();
    let results = admin
        .create_topics(&new_topics, &AdminOptions::new())
        .await
        .context("cannot create topics")?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Whether the brokers answer a metadata request within `timeout`.
pub async fn reachable(producer: &FutureProducer, timeout: Duration) -> Result<(), String> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, timeout)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// What a credentials check found when the brokers did not take the client in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsCheck {
    /// The brokers refused the SASL credentials: a configuration error no retry fixes.
    Rejected(ConfigError),
    /// No broker answered in time: an outage, to wait for like any other.
    Unanswered(String),
}

/// Whether `error` says the brokers refused the client's SASL credentials. librdkafka turns
/// the broker's `SaslAuthenticationFailed` into its own `Authentication` code; both count.
/// A broker that is down or unreachable (`Transport`, `AllBrokersDown`, ...) does not.
pub fn is_authentication_failure(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
    )
}

/// The fatal error for credentials the brokers refused: names the user and the variables to
/// fix, and carries librdkafka's reason (which never holds the password).
pub fn credentials_rejected(username: &str, reason: &str) -> ConfigError {
    ConfigError {
        variable: "KAFKA_USERNAME",
        problem: format!(
            "Kafka SASL authentication failed for user `{username}` \
             (check KAFKA_USERNAME and KAFKA_PASSWORD): {reason}"
        ),
    }
}

/// Hears librdkafka's client-wide errors and keeps the first authentication failure, which
/// librdkafka reports only there: a request to a broker that refused the credentials just
/// times out.
#[derive(Debug, Default)]
struct CredentialsWatch {
    rejected: Mutex<Option<String>>,
}

impl CredentialsWatch {
    fn rejected(&self) -> Option<String> {
        self.rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ClientContext for CredentialsWatch {
    /// Other errors (a broker down) are left to the check's own timeout to report, once.
    fn error(&self, error: KafkaError, reason: &str) {
        if is_authentication_failure(&error) {
            self.rejected
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert_with(|| reason.to_owned());
        }
    }
}

impl ConsumerContext for CredentialsWatch {}

/// Whether the brokers take the service's SASL credentials: waits up to `within` for either
/// a metadata answer (accepted) or an authentication failure (rejected); without either,
/// the brokers did not answer. Plaintext has no credentials to check.
pub async fn check_credentials(
    settings: &KafkaSettings,
    within: Duration,
) -> Result<(), CredentialsCheck> {
    let KafkaSecurity::Sasl { username, .. } = &settings.security else {
        return Ok(());
    };
    // No group.id: the client's events stay on its main queue, which `poll` serves.
    let client: Arc<BaseConsumer<CredentialsWatch>> = Arc::new(
        base_config(settings)
            .create_with_context(CredentialsWatch::default())
            .map_err(|error| CredentialsCheck::Unanswered(error.to_string()))?,
    );
    let deadline = Instant::now() + within;
    loop {
        // Rounds of a second each, off the async threads: a stop between rounds leaves no
        // long blocking call behind (the runtime waits for those at exit).
        let round = Arc::clone(&client);
        let answer = tokio::task::spawn_blocking(move || {
            let answer = round.fetch_metadata(None, Duration::from_secs(1)).map(drop);
            // librdkafka queues its client-wide errors; the context hears them only as the
            // client is polled, and a poll returns at each error event: drain them all.
            while round.poll(Duration::from_millis(10)).is_some() {}
            answer
        })
        .await
        .map_err(|error| CredentialsCheck::Unanswered(error.to_string()))?;
        if let Some(reason) = client.context().rejected() {
            return Err(CredentialsCheck::Rejected(credentials_rejected(
                username, &reason,
            )));
        }
        match answer {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() >= deadline => {
                return Err(CredentialsCheck::Unanswered(error.to_string()))
            }
            Err(_) => {}
        }
    }
}

/// Where a consumer group stands on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionProgress {
    pub partition: i32,
    /// The next offset the group will read (0 when it has committed nothing).
    pub committed: i64,
    /// The partition's high watermark.
    pub end: i64,
}

impl PartitionProgress {
    pub fn lag(&self) -> i64 {
        (self.end - self.committed).max(0)
    }
}

/// A client that reads a group's committed offsets and the topic's watermarks; it never joins
/// the group.
pub fn offsets_reader(
    settings: &KafkaSettings,
    group: &str,
) -> anyhow::Result<rdkafka::consumer::BaseConsumer> {
    base_config(settings)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create the Kafka offsets reader")
}

/// The group's progress on every partition of `topic`. Blocking: call it off the async threads.
pub fn progress(
    reader: &rdkafka::consumer::BaseConsumer,
    topic: &str,
) -> anyhow::Result<Vec<PartitionProgress>> {
    use rdkafka::consumer::Consumer;
    use rdkafka::{Offset, TopicPartitionList};
    const TIMEOUT: Duration = Duration::from_secs(10);

    let metadata = reader.fetch_metadata(Some(topic), TIMEOUT)?;
    let mut partitions = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            partitions.add_partition(topic, p.id());
        }
    }
    let committed = reader.committed_offsets(partitions, TIMEOUT)?;
    let mut progress = Vec::new();
    for element in committed.elements() {
        let (_, end) = reader.fetch_watermarks(topic, element.partition(), TIMEOUT)?;
        let committed = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => 0,
        };
        progress.push(PartitionProgress {
            partition: element.partition(),
            committed,
            end,
        });
    }
    Ok(progress)
}

/// How many messages of `topic` `group` has not committed yet (all partitions together).
pub async fn lag(settings: &KafkaSettings, group: &str, topic: &str) -> anyhow::Result<i64> {
    HopsLag::new(settings, &[(group, topic)])?
        .outstanding()
        .await
}

/// Readers of the committed offsets of several (group, topic) hops, kept open between reads:
/// cheap to ask often, and it asks the broker only, never the warehouse.
pub struct HopsLag {
    hops: std::sync::Arc<Vec<(rdkafka::consumer::BaseConsumer, String)>>,
}

impl std::fmt::Debug for HopsLag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.hops.iter().map(|(_, topic)| topic))
            .finish()
    }
}

impl HopsLag {
    pub fn new(settings: &KafkaSettings, hops: &[(&str, &str)]) -> anyhow::Result<Self> {
        let readers = hops
            .iter()
            .map(|(group, topic)| Ok((offsets_reader(settings, group)?, (*topic).to_owned())))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            hops: std::sync::Arc::new(readers),
        })
    }

    /// The messages no hop has committed yet, summed over the hops, read in the order given:
    /// in pipeline order, 0 means the whole chain is at rest (a hop publishes before it
    /// commits, so the next hop's topic already holds what the previous one read).
    pub async fn outstanding(&self) -> anyhow::Result<i64> {
        let hops = std::sync::Arc::clone(&self.hops);
        // Offset and watermark fetches block: off the async threads.
        tokio::task::spawn_blocking(move || {
            let mut outstanding = 0;
            for (reader, topic) in hops.iter() {
                outstanding += progress(reader, topic)?
                    .iter()
                    .map(PartitionProgress::lag)
                    .sum::<i64>();
            }
            Ok(outstanding)
        })
        .await?
    }
}

/// Waits until each hop, in pipeline order, has committed everything on its topic (so that,
/// when it returns, the whole chain is at rest); fails when `limit` runs out first. Calls
/// `caught_up` as each hop gets there. A read that fails (a group coordinator still loading
/// on a broker that just started answers `NOT_COORDINATOR`, a leader moving answers
/// `NOT_LEADER_FOR_PARTITION`) is asked again: only the limit ends the wait.
pub async fn wait_caught_up(
    settings: &KafkaSettings,
    hops: &[(&str, &str)],
    limit: Duration,
    mut caught_up: impl FnMut(&str, &str),
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    for (group, topic) in hops {
        // One reader per hop for the whole wait, not a client per look.
        let hop = HopsLag::new(settings, &[(group, topic)])?;
        loop {
            let outstanding = match hop.outstanding().await {
                Ok(0) => {
                    caught_up(group, topic);
                    break;
                }
                Ok(lag) => format!("still has {lag} messages to process"),
                Err(error) => format!("cannot tell its lag ({error:#})"),
            };
            anyhow::ensure!(
                started.elapsed() < limit,
                "{group} {outstanding} on {topic} after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refused_credentials_count_as_an_authentication_failure() {
        for code in [
            RDKafkaErrorCode::Authentication,
            RDKafkaErrorCode::SaslAuthenticationFailed,
        ] {
            assert!(
                is_authentication_failure(&KafkaError::Global(code)),
                "{code:?}"
            );
            assert!(is_authentication_failure(&KafkaError::MessageConsumption(
                code
            )));
        }
        // An outage is waited for, never fatal.
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::OperationTimedOut,
            RDKafkaErrorCode::SSL,
            RDKafkaErrorCode::Resolve,
        ] {
            assert!(
                !is_authentication_failure(&KafkaError::Global(code)),
                "{code:?}"
            );
        }
        assert!(!is_authentication_failure(&KafkaError::Canceled));
    }

    #[test]
    fn a_rejection_names_the_user_and_the_variables_to_fix() {
        let error =
            credentials_rejected("svc-stg", "SASL authentication error: invalid credentials");
        assert_eq!(error.variable, "KAFKA_USERNAME");
        let line = error.to_string();
        assert!(
            line.starts_with("invalid configuration: KAFKA_USERNAME: "),
            "{line}"
        );
        for part in ["`svc-stg`", "KAFKA_PASSWORD", "invalid credentials"] {
            assert!(line.contains(part), "{line} lacks {part}");
        }
    }
}
