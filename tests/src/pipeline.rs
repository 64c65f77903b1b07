//! The whole pipeline in-process, for end-to-end tests: the three services (and datagen on
//! demand) started as libraries against the real stack, with a fresh database and unique
//! topics and consumer groups, plus the probes the tests assert with.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bb8_redis::redis::AsyncCommands;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vault_runtime::{variables as var, Profile, Settings};

use crate::sql::Columns;
use crate::{eventually, stack, unique, Stack};

/// Counts the counters that differ from the recount over the Data Vault (the one recount,
/// `cdm.v_counter_differences`): zero when the datamarts are exact.
pub const COUNTER_MISMATCHES_SQL: &str = "SELECT count(*) FROM cdm.v_counter_differences";

/// The services of the chain, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Service {
    Stg,
    Dds,
    Cdm,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Stg, Service::Dds, Service::Cdm];

    /// The service's binary, for tests that run it as a process (`crate::process::spawn`).
    pub fn binary(self) -> &'static str {
        match self {
            Service::Stg => "service-stg",
            Service::Dds => "service-dds",
            Service::Cdm => "service-cdm",
        }
    }

    fn profile(self) -> Profile {
        match self {
            Service::Stg => service_stg::PROFILE,
            Service::Dds => service_dds::PROFILE,
            Service::Cdm => service_cdm::PROFILE,
        }
    }
}

/// A service running on the test's runtime.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    http: SocketAddr,
}

/// Dependencies a test brings itself (to crash and restart them), instead of the stack's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub redis_url: Option<String>,
    pub database_url: Option<String>,
    /// A broker of the test's own; topics, groups and probes all use it.
    pub kafka_bootstrap: Option<String>,
    /// Settings every service gets on top of the pipeline's own (e.g. another listener of the
    /// same broker with `KAFKA_USERNAME`, `KAFKA_PASSWORD` and `KAFKA_CA_CERT`).
    pub service_env: BTreeMap<String, String>,
}

/// A message read back from a topic ([`Pipeline::read_topic`]).
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub key: String,
    pub payload: Vec<u8>,
    /// Its Kafka timestamp (ms since the epoch).
    pub timestamp_ms: Option<i64>,
    /// Its `vaultline-sent-ms` header, decoded (docs/contract.md §2).
    pub sent_header: Option<i64>,
}

/// One test's pipeline: its database, topics, groups and running services.
pub struct Pipeline {
    pub stack: &'static Stack,
    pub database_url: String,
    /// `stg_service`, `dds_service` and `cdm_service` of this test.
    pub raw_topic: String,
    pub enriched_topic: String,
    pub counter_topic: String,
    /// Where service-cdm publishes tag events (docs/contract.md §6.3).
    pub tags_topic: String,
    /// The `API_TOKEN` every service gets (a fresh one per pipeline): service-cdm's read API
    /// answers only requests that carry it, as `Authorization: Bearer <token>`. A test sets
    /// `API_TOKEN` to `""` in [`Overrides::service_env`] for an open API.
    pub api_token: String,
    groups: BTreeMap<Service, String>,
    running: BTreeMap<Service, Running>,
    /// Extra instances started with [`Pipeline::start_replica`], in the same groups.
    replicas: Vec<Running>,
    producer: FutureProducer,
    /// Redis for the services; the stack's unless a test brings its own.
    redis_url: String,
    /// [`Overrides::service_env`].
    service_env: BTreeMap<String, String>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("raw_topic", &self.raw_topic)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Creates the database and topics (`partitions` each) and starts all three services.
    pub async fn start(partitions: i32) -> anyhow::Result<Self> {
        Self::start_with(partitions, Overrides::default()).await
    }

    /// As [`Pipeline::start`], with some dependencies of the test's own instead of the
    /// stack's.
    pub async fn start_with(partitions: i32, overrides: Overrides) -> anyhow::Result<Self> {
        let base = stack().await;
        let stack: &'static Stack = match overrides.kafka_bootstrap {
            // One small leak per such test: the harness hands out `&'static Stack`s.
            Some(kafka_bootstrap) => Box::leak(Box::new(Stack {
                kafka_bootstrap,
                database_admin_url: base.database_admin_url.clone(),
                redis_url: base.redis_url.clone(),
            })),
            None => base,
        };
        let redis_url = overrides.redis_url;
        let service_env = overrides.service_env;
        let database_url = match overrides.database_url {
            Some(url) => url,
            None => stack.fresh_database().await?,
        };
        let raw_topic = unique("stg_service");
        let enriched_topic = unique("dds_service");
        let counter_topic = unique("cdm_service");
        let tags_topic = unique("user_tags");
        stack
            .create_topics(
                &[
                    raw_topic.clone(),
                    enriched_topic.clone(),
                    counter_topic.clone(),
                    tags_topic.clone(),
                ],
                partitions,
            )
            .await?;
        let producer = stack
            .kafka_config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .context("creating the test producer")?;
        let mut pipeline = Self {
            stack,
            database_url,
            raw_topic,
            enriched_topic,
            counter_topic,
            tags_topic,
            api_token: format!("pipeline-{}", uuid::Uuid::new_v4().simple()),
            groups: Service::ALL
                .into_iter()
                .map(|s| (s, unique(s.profile().consumer_group)))
                .collect(),
            running: BTreeMap::new(),
            replicas: Vec::new(),
            producer,
            redis_url: redis_url.unwrap_or_else(|| stack.redis_url.clone()),
            service_env,
        };
        for service in Service::ALL {
            pipeline.start_service(service).await?;
        }
        Ok(pipeline)
    }

    /// Stops the in-process `service` and returns the environment to run its real binary in
    /// its place ([`crate::process::spawn`]): this pipeline's settings, an HTTP port of its own
    /// and logs at `info`.
    pub async fn hand_to_binary(
        &mut self,
        service: Service,
    ) -> anyhow::Result<HashMap<String, String>> {
        self.stop_service(service).await?;
        let mut env = self.env(service);
        env.insert(
            var::HTTP_PORT.name.into(),
            crate::process::free_port().to_string(),
        );
        env.insert(var::RUST_LOG.name.into(), "info".into());
        Ok(env)
    }

    /// The environment a service of this pipeline is configured with.
    pub fn env(&self, service: Service) -> HashMap<String, String> {
        let (source, destination) = match service {
            Service::Stg => (&self.raw_topic, Some(&self.enriched_topic)),
            Service::Dds => (&self.enriched_topic, Some(&self.counter_topic)),
            Service::Cdm => (&self.counter_topic, Some(&self.tags_topic)),
        };
        let mut env: HashMap<String, String> = [
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                self.stack.kafka_bootstrap.as_str(),
            ),
            ("DATABASE_URL", self.database_url.as_str()),
            ("REDIS_URL", self.redis_url.as_str()),
            ("KAFKA_SOURCE_TOPIC", source.as_str()),
            ("KAFKA_CONSUMER_GROUP", self.groups[&service].as_str()),
            ("HTTP_HOST", "127.0.0.1"),
            ("HTTP_PORT", "0"),
            ("KAFKA_TOPIC_PARTITIONS", "0"),
            ("BATCH_LINGER_MS", "10"),
            ("BATCH_MAX_MESSAGES", "500"),
            ("VERIFY_INTERVAL_SECONDS", "1"),
            ("API_TOKEN", self.api_token.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        if let Some(destination) = destination {
            env.insert("KAFKA_DESTINATION_TOPIC".into(), destination.clone());
        }
        // The hops the read side reports (`GET /api/v1/pipeline`): this test's groups and topics.
        let hops = [
            ("STG", Service::Stg, &self.raw_topic),
            ("DDS", Service::Dds, &self.enriched_topic),
            ("CDM", Service::Cdm, &self.counter_topic),
        ];
        for (stage, service, topic) in hops {
            env.insert(
                format!("PIPELINE_{stage}_GROUP"),
                self.groups[&service].clone(),
            );
            env.insert(format!("PIPELINE_{stage}_TOPIC"), topic.clone());
        }
        env.extend(self.service_env.clone());
        env
    }

    /// Starts (or restarts) one service.
    pub async fn start_service(&mut self, service: Service) -> anyhow::Result<()> {
        let running = self.launch(service)?;
        self.running.insert(service, running);
        Ok(())
    }

    /// Starts one more instance of a service, in the same consumer group: the partitions are
    /// rebalanced between the instances.
    pub async fn start_replica(&mut self, service: Service) -> anyhow::Result<()> {
        let running = self.launch(service)?;
        self.replicas.push(running);
        Ok(())
    }

    fn launch(&self, service: Service) -> anyhow::Result<Running> {
        let settings = Settings::from(&self.env(service), service.profile())?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let (http, task) = match service {
            Service::Stg => {
                let app = service_stg::build(settings)?;
                (
                    app.http_addr(),
                    tokio::spawn(app.run_until_stopped(shutdown)),
                )
            }
            Service::Dds => {
                let app = service_dds::build(settings)?;
                (
                    app.http_addr(),
                    tokio::spawn(app.run_until_stopped(shutdown)),
                )
            }
            Service::Cdm => {
                let app = service_cdm::build(settings)?;
                (
                    app.http_addr(),
                    tokio::spawn(app.run_until_stopped(shutdown)),
                )
            }
        };
        Ok(Running { stop, task, http })
    }

    /// Stops every instance [`Pipeline::start_replica`] started, the way SIGTERM does: they
    /// leave their groups, and the first instances take their partitions back.
    pub async fn stop_replicas(&mut self) -> anyhow::Result<()> {
        for running in std::mem::take(&mut self.replicas) {
            let _ = running.stop.send(());
            tokio::time::timeout(Duration::from_secs(60), running.task)
                .await
                .context("a replica did not stop within 60 s")???;
        }
        Ok(())
    }

    /// Stops a service the way SIGTERM does, and checks that it stopped cleanly.
    pub async fn stop_service(&mut self, service: Service) -> anyhow::Result<()> {
        if let Some(running) = self.running.remove(&service) {
            let _ = running.stop.send(());
            tokio::time::timeout(Duration::from_secs(60), running.task)
                .await
                .context("service did not stop within 60 s")???;
        }
        Ok(())
    }

    /// Gives a service a fresh consumer group, so that its next start reads its topic from the
    /// beginning.
    pub fn reset_group(&mut self, service: Service) {
        self.groups
            .insert(service, unique(service.profile().consumer_group));
    }

    pub fn group(&self, service: Service) -> &str {
        &self.groups[&service]
    }

    /// The topic `service` reads.
    pub fn topic(&self, service: Service) -> &str {
        match service {
            Service::Stg => &self.raw_topic,
            Service::Dds => &self.enriched_topic,
            Service::Cdm => &self.counter_topic,
        }
    }

    /// How many messages of its topic `service`'s group has committed, over all partitions.
    pub async fn committed(&self, service: Service) -> anyhow::Result<i64> {
        Ok(self
            .stack
            .committed_offsets(self.group(service), self.topic(service))
            .await?
            .values()
            .map(|offset| offset.unwrap_or(0))
            .sum())
    }

    /// How many messages on its topic `service` has not committed yet: work waiting for it,
    /// or in its hands.
    pub async fn backlog(&self, service: Service) -> anyhow::Result<i64> {
        let end: i64 = self.end_offsets(self.topic(service)).await?.values().sum();
        Ok(end - self.committed(service).await?)
    }

    pub fn http_addr(&self, service: Service) -> Option<SocketAddr> {
        self.running.get(&service).map(|r| r.http)
    }

    /// Produces raw messages (key, payload) to the raw topic and waits for the acks.
    pub async fn produce_raw(&self, messages: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
        self.produce(&self.raw_topic, messages).await
    }

    /// Produces (key, payload) messages to `topic`, all enqueued at once (so the pipeline
    /// lags behind, as under load), and waits for every acknowledgement.
    pub async fn produce(&self, topic: &str, messages: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
        let messages: Vec<vault_runtime::OutMessage> = messages
            .iter()
            .map(|(key, payload)| vault_runtime::OutMessage {
                sent_ms: None,
                key: key.clone(),
                payload: payload.clone(),
            })
            .collect();
        vault_runtime::publish(&self.producer, topic, &messages)
            .await
            .with_context(|| format!("producing to {topic}"))
    }

    /// Waits until every service has committed everything on its topic, in pipeline order,
    /// so that when this returns the whole chain is at rest.
    pub async fn settle(&self, timeout: Duration) {
        let hops = [
            (Service::Stg, &self.raw_topic),
            (Service::Dds, &self.enriched_topic),
            (Service::Cdm, &self.counter_topic),
        ];
        for (service, topic) in hops {
            let group = self.groups[&service].clone();
            let what = format!("{service:?} to commit everything on {topic}");
            eventually(&what, timeout, || async {
                let ends = self.end_offsets(topic).await.ok()?;
                let committed = self.stack.committed_offsets(&group, topic).await.ok()?;
                let done = ends
                    .iter()
                    .all(|(p, end)| committed.get(p).copied().flatten().unwrap_or(0) >= *end);
                done.then_some(())
            })
            .await;
        }
    }

    /// The high watermark (next offset to be written) of every partition of `topic`.
    pub async fn end_offsets(&self, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
        let config = self.stack.kafka_config();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = config.create()?;
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            let mut ends = BTreeMap::new();
            for t in metadata.topics() {
                for p in t.partitions() {
                    let (_, high) =
                        consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(10))?;
                    ends.insert(p.id(), high);
                }
            }
            anyhow::Ok(ends)
        })
        .await?
    }

    /// Waits until the services have applied every embedded migration (they do it at start,
    /// in the background, one transaction per migration), for tests that write to the
    /// warehouse themselves.
    pub async fn migrated(&self) {
        let all = vault_migrations::versions().expect("the embedded migrations are readable");
        self.await_count(
            "the migrations to be applied",
            Duration::from_secs(60),
            "SELECT count(*) FROM __diesel_schema_migrations",
            i64::try_from(all.len()).expect("a few hundred migrations at most"),
        )
        .await;
    }

    /// Waits until `sql` (a `SELECT count(*)`) answers `expected`.
    ///
    /// # Panics
    /// When `timeout` passes first, naming `what`.
    pub async fn await_count(&self, what: &str, timeout: Duration, sql: &str, expected: i64) {
        eventually(what, timeout, || async {
            (self.count(sql).await.ok()? == expected).then_some(())
        })
        .await;
    }

    /// Every message on `topic` up to its current end, per partition in offset order.
    pub async fn read_topic(&self, topic: &str) -> anyhow::Result<Vec<Read>> {
        let ends = self.end_offsets(topic).await?;
        let mut config = self.stack.kafka_config();
        config
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false");
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = config.create()?;
            let mut assignment = rdkafka::TopicPartitionList::new();
            for partition in ends.keys() {
                assignment.add_partition_offset(&topic, *partition, rdkafka::Offset::Beginning)?;
            }
            consumer.assign(&assignment)?;
            let mut next: BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
            let mut messages = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while next.iter().any(|(p, offset)| *offset < ends[p]) {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "timed out reading {topic}"
                );
                let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let message = message?;
                use rdkafka::Message as _;
                next.insert(message.partition(), message.offset() + 1);
                let sent_header = vault_runtime::sent_header(&message);
                messages.push(Read {
                    partition: message.partition(),
                    key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    timestamp_ms: message.timestamp().to_millis(),
                    sent_header,
                });
            }
            anyhow::Ok(messages)
        })
        .await?
    }

    /// Waits until `service` answers `/health` with 503 and names `dependency` as down.
    pub async fn await_dependency_down(
        &self,
        service: Service,
        dependency: &str,
        timeout: Duration,
    ) {
        let addr = self.http_addr(service).expect("the service is running");
        let what = format!("{service:?} to report {dependency} down");
        eventually(&what, timeout, || async {
            let (status, body) = http(addr, "GET", "/health", "").await.ok()?;
            let body: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status == 503 && body["dependencies"][dependency]["status"] == "down").then_some(())
        })
        .await;
    }

    /// Waits until `service` (running in-process) reports on `/health` that its worker is
    /// paused by a systemic fault, retrying a batch it holds (state `retrying`, retries > 0),
    /// and returns the worker's status: proof that a fault hit it mid-batch.
    pub async fn await_retrying(&self, service: Service, timeout: Duration) -> serde_json::Value {
        let what = format!("{service:?} to retry a batch");
        eventually(&what, timeout, || async {
            let worker = self.worker(service).await.ok()?;
            (worker["state"] == "retrying" && worker["retries"].as_u64() > Some(0))
                .then_some(worker)
        })
        .await
    }

    /// The worker status `service` (running in-process) reports on `/health`: its state and
    /// what this instance has processed, retried, ... (vault-runtime/src/status.rs). A cheap look,
    /// for conditions that must be caught while they hold.
    pub async fn worker(&self, service: Service) -> anyhow::Result<serde_json::Value> {
        let addr = self
            .http_addr(service)
            .context("the service is not running")?;
        let (_, body) = http(addr, "GET", "/health", "").await?;
        let body: serde_json::Value = serde_json::from_str(&body)?;
        Ok(body["worker"].clone())
    }

    /// The warehouse's tables (`schema.table`), from the catalog.
    pub async fn warehouse_tables(db: &tokio_postgres::Client) -> anyhow::Result<Vec<String>> {
        Ok(db
            .column(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables \
                 WHERE table_schema IN ('stg', 'dds', 'cdm', 'ops') AND table_type = 'BASE TABLE' \
                 ORDER BY 1",
            )
            .await?
            .into_iter()
            .collect())
    }

    /// A client on this test's database.
    pub async fn db(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) =
            tokio_postgres::connect(&self.database_url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Runs a query returning one bigint.
    pub async fn count(&self, sql: &str) -> anyhow::Result<i64> {
        let row = self
            .db()
            .await?
            .query_one(sql, &[])
            .await
            .with_context(|| sql.to_owned())?;
        Ok(row.get(0))
    }

    /// Counters that differ from the recount over the Data Vault (both datamarts, both
    /// directions; the recount views of the migrations, as `vaultctl verify` reads them);
    /// zero when the counters are exact.
    pub async fn counter_mismatches(&self) -> anyhow::Result<i64> {
        self.count(COUNTER_MISMATCHES_SQL).await
    }

    /// The point-in-time rows the BI views read (`dds.pit_*`) that differ from the Data
    /// Vault's history (`dds.v_pit_differences`, as `vaultctl verify` reads it), the first few
    /// as text; empty when exact.
    pub async fn pit_differences(&self) -> anyhow::Result<Vec<String>> {
        let (pool, _) = self.tools()?;
        let mut conn = pool.get().await?;
        let found = service_dds::pit_check::differences(&mut conn, 5).await?;
        Ok(found.first.iter().map(ToString::to_string).collect())
    }

    /// A fingerprint of every warehouse table (row counts and counter contents), to show that
    /// something changed nothing.
    pub async fn snapshot(&self) -> anyhow::Result<Vec<(String, String)>> {
        let client = self.db().await?;
        let mut out = Vec::new();
        let tables = Self::warehouse_tables(&client).await?;
        for table in tables {
            let row = client
                .query_one(&format!("SELECT count(*)::text FROM {table}"), &[])
                .await?;
            out.push((table, row.get(0)));
        }
        for (table, key) in [
            ("cdm.user_product_counters", "product_id"),
            ("cdm.user_category_counters", "category_id"),
        ] {
            let row = client
                .query_one(
                    &format!(
                        "SELECT coalesce(md5(string_agg(user_id::text || {key}::text || ':' || \
                         order_cnt::text, ',' ORDER BY user_id, {key})), '') FROM {table}"
                    ),
                    &[],
                )
                .await?;
            out.push((table.to_owned(), row.get(0)));
        }
        Ok(out)
    }

    /// Writes dictionary entries to the shared Redis.
    pub async fn put_dictionary(
        &self,
        dictionary: &datagen::dictionary::Dictionary,
    ) -> anyhow::Result<()> {
        let pool = redis_pool(&self.redis_url)?;
        datagen::dictionary::store(&pool, dictionary).await
    }

    /// A random dictionary of `users` and `restaurants`, written to the shared Redis, and
    /// `count` orders of it from a generator seeded with `seed`, ids from `first_id`.
    pub async fn seeded_orders(
        &self,
        (users, restaurants): (usize, usize),
        seed: u64,
        first_id: i64,
        count: u64,
    ) -> anyhow::Result<(datagen::dictionary::Dictionary, Vec<vault_core::RawOrder>)> {
        use rand::SeedableRng as _;
        let d = crate::orders::random_dictionary(users, restaurants);
        self.put_dictionary(&d).await?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let sent = datagen::generate::orders(&mut rng, &d, first_id, count);
        Ok((d, sent))
    }

    /// Sets one Redis key (overwriting).
    pub async fn put_redis(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let pool = redis_pool(&self.redis_url)?;
        let mut conn = pool.get().await?;
        let () = conn.set(key, value).await?;
        Ok(())
    }

    /// A Postgres pool and a producer as the operator tools use them.
    pub fn tools(&self) -> anyhow::Result<(vault_runtime::PgPool, FutureProducer)> {
        let settings = Settings::from(&self.env(Service::Stg), service_stg::PROFILE)?;
        Ok((
            vault_runtime::pg_pool(&settings.postgres, vault_runtime::SessionLimits::OPERATOR),
            vault_runtime::producer(&settings.kafka)?,
        ))
    }

    /// Runs the real `vaultctl` with `args` against this pipeline's database and broker (with
    /// nothing else from the environment); returns its exit code and its stdout + stderr.
    pub async fn vaultctl(&self, args: &[&str]) -> anyhow::Result<(i32, String)> {
        let output = tokio::process::Command::new(crate::process::binary("vaultctl"))
            .env_clear()
            .env("DATABASE_URL", &self.database_url)
            .env("KAFKA_BOOTSTRAP_SERVERS", &self.stack.kafka_bootstrap)
            .args(args)
            .output()
            .await?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok((output.status.code().unwrap_or(-1), text))
    }

    /// Stops every running service cleanly.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_replicas().await?;
        for service in Service::ALL.into_iter().rev() {
            self.stop_service(service).await?;
        }
        Ok(())
    }
}

pub(crate) fn redis_pool(url: &str) -> anyhow::Result<vault_runtime::RedisPool> {
    vault_runtime::redis_pool(&vault_runtime::RedisSettings {
        url: vault_runtime::Secret::new(url),
        pool_size: 2,
    })
}

/// A minimal HTTP/1.1 exchange on loopback: returns the status code and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let (status, _, body) = http_with(addr, method, path, body, &[]).await?;
    Ok((status, body))
}

/// [`http`] with extra request headers (`("Authorization", "Bearer …")`); also returns the
/// response's headers, lower-cased names, in order.
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, Vec<(String, String)>, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         {extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("no HTTP status line")?;
    // Chunked bodies (warp streams JSON replies) are reassembled.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok((status, headers, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// datagen, in-process, producing to a pipeline's raw topic.
#[derive(Debug)]
pub struct Datagen {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Datagen {
    /// Starts datagen with the dictionaries and order-id counter of `redis_url`, producing
    /// to `p`'s raw topic, and waits until it reports healthy.
    pub async fn start(p: &Pipeline, redis_url: &str) -> anyhow::Result<Self> {
        let env: HashMap<String, String> = [
            ("KAFKA_BOOTSTRAP_SERVERS", p.stack.kafka_bootstrap.clone()),
            ("REDIS_URL", redis_url.to_owned()),
            ("KAFKA_DESTINATION_TOPIC", p.raw_topic.clone()),
            ("HTTP_HOST", "127.0.0.1".into()),
            ("HTTP_PORT", "0".into()),
            ("KAFKA_TOPIC_PARTITIONS", "0".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let app = datagen::Application::build(datagen::Settings::from(&env)?)?;
        let addr = app.http_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        eventually("datagen to be healthy", Duration::from_secs(60), || async {
            let (status, _) = http(addr, "GET", "/health", "").await.ok()?;
            (status == 200).then_some(())
        })
        .await;
        Ok(Self { addr, stop, task })
    }

    /// Stops it and waits for it to end.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await?
    }
}
