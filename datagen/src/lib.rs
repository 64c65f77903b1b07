//! datagen: feeds Vaultline. At start it makes sure Redis holds dictionaries (seeding a
//! synthetic set when it holds none); `POST /push {"N": n}` then generates n order messages
//! from them and produces them, keyed by order id, to the raw topic (docs/contract.md §5),
//! a chunk at a time. [`bench`] holds what the benchmark, `vault-bench`, measures with.

pub mod bench;
pub mod dictionary;
pub mod generate;
mod metrics;
pub mod order_ids;
mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::RwLock;
use vault_core::contract::topics;
use vault_core::RawOrder;
use vault_runtime::{
    ensure_topics, http_addr, producer, redis_pool, value, variables, ConfigError, Dependency, Env,
    FutureProducer, KafkaSettings, OutMessage, Probes, Profile, RedisPool, RedisSettings,
};

pub const PROFILE: Profile = Profile {
    service: "datagen",
    source_topic: None,
    destination_topic: Some(topics::RAW_ORDERS),
    consumer_group: "datagen",
    http_port: 5011,
    uses_redis: true,
};

/// The benchmark's profile: it publishes to the raw topic and reads the warehouse.
pub const PROFILE_BENCH: Profile = Profile {
    service: "vault-bench",
    source_topic: None,
    destination_topic: Some(topics::RAW_ORDERS),
    consumer_group: "vault-bench",
    http_port: 0,
    uses_redis: true,
};

/// The raw-topic messages of `orders`, keyed by order id as service-stg expects
/// (docs/contract.md §2.1).
pub fn messages(orders: &[RawOrder]) -> serde_json::Result<Vec<OutMessage>> {
    orders
        .iter()
        .map(|order| {
            serde_json::to_vec(order).map(|payload| OutMessage {
                sent_ms: None,
                key: order.object_id.to_string(),
                payload,
            })
        })
        .collect()
}

/// The largest push one request may ask for.
pub const MAX_PUSH: u64 = 1_000_000;

#[derive(Debug, Clone)]
pub struct Settings {
    pub http_addr: SocketAddr,
    pub kafka: KafkaSettings,
    pub redis: RedisSettings,
    /// The seed of the synthetic dictionary set (`DATAGEN_SEED`).
    pub seed: u64,
}

impl Settings {
    pub fn from(env: &impl Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http_addr: http_addr(env, PROFILE.http_port)?,
            kafka: KafkaSettings::from(env, PROFILE)?,
            redis: RedisSettings::from(env)?,
            seed: value(env, &variables::DATAGEN_SEED)?,
        })
    }
}

/// Shared by the HTTP handlers.
pub(crate) struct State {
    pub(crate) redis: RedisPool,
    pub(crate) producer: FutureProducer,
    pub(crate) topic: String,
    /// Loaded once Redis answers; `None` until then.
    pub(crate) dictionary: RwLock<Option<dictionary::Dictionary>>,
    pub(crate) kafka: KafkaSettings,
    pub(crate) seed: u64,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) order_ids: order_ids::OrderIds,
    /// Redis and Kafka, checked in the background for `/health`.
    pub(crate) probes: Arc<Probes>,
}

pub struct Application {
    state: Arc<State>,
    listener: std::net::TcpListener,
    http_addr: SocketAddr,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl Application {
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let redis = redis_pool(&settings.redis)?;
        let producer = producer(&settings.kafka)?;
        let topic = settings.kafka.destination_topic.clone().ok_or_else(|| {
            anyhow::anyhow!("invalid configuration: KAFKA_DESTINATION_TOPIC: is required")
        })?;
        let (listener, http_addr) = vault_runtime::bind_http(settings.http_addr)?;
        let metrics = metrics::Metrics::new();
        let probes = Arc::new(Probes::new(
            vec![
                Dependency::Redis(redis.clone()),
                Dependency::Kafka(producer.clone()),
            ],
            metrics.probes.clone(),
        ));
        Ok(Self {
            state: Arc::new(State {
                redis,
                producer,
                topic,
                dictionary: RwLock::new(None),
                kafka: settings.kafka,
                seed: settings.seed,
                metrics,
                order_ids: order_ids::OrderIds::default(),
                probes,
            }),
            listener,
            http_addr,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serves until `shutdown` completes; meanwhile loads (or seeds) the dictionaries,
    /// retrying while Redis is down.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        let loader = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                match dictionary::load_or_seed(&state.redis, state.seed).await {
                    Ok(loaded) => {
                        *state.dictionary.write().await = Some(loaded);
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), "Cannot load dictionaries yet; retrying.");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
            if let Some(partitions) = state.kafka.create_topics_partitions {
                while let Err(error) =
                    ensure_topics(&state.kafka, &[state.topic.as_str()], partitions).await
                {
                    tracing::warn!(error = %format!("{error:#}"), "Cannot create the topic yet; retrying.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let probes = tokio::spawn(self.state.probes.clone().run(stopped));
        tracing::info!(http = %self.http_addr, "datagen serving.");
        server::serve(self.listener, self.state.clone(), shutdown)?.await;
        loader.abort();
        let _ = stop.send(true);
        let _ = probes.await;
        Ok(())
    }
}
