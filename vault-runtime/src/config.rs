//! Typed settings from the environment (docs/contract.md §1).
//!
//! Accepts the Python reference deployment's names (`KAFKA_HOST`, `PG_WAREHOUSE_HOST`, ...) and
//! the single-URL forms (`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`, `REDIS_URL`). Reading is
//! done once, at start, through a lookup function so tests can pass their own environment. A
//! bad or missing setting is a [`ConfigError`] naming the variable.
//!
//! The variables themselves, with their defaults, are declared once in [`variables`]; the
//! parser takes every name and default from there.

pub mod variables;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use vault_core::contract::topics;

use self::variables as var;
use self::variables::{Fallback, Variable};

/// A credential: printable only as `***`, so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A setting that is missing or malformed; the message names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl ConfigError {
    fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        Self {
            variable,
            problem: problem.into(),
        }
    }
}

/// What a service is, for the defaults it brings.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub service: &'static str,
    pub source_topic: Option<&'static str>,
    pub destination_topic: Option<&'static str>,
    pub consumer_group: &'static str,
    pub http_port: u16,
    pub uses_redis: bool,
}

impl Profile {
    /// A program beside the pipeline that reads the settings but consumes nothing, publishes
    /// nothing, serves no HTTP and needs no Redis (`vaultctl`).
    pub const fn tool(name: &'static str) -> Self {
        Self {
            service: name,
            source_topic: None,
            destination_topic: None,
            consumer_group: name,
            http_port: 0,
            uses_redis: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub service: &'static str,
    pub http_addr: SocketAddr,
    pub kafka: KafkaSettings,
    pub postgres: PostgresSettings,
    pub redis: Option<RedisSettings>,
    pub batch: BatchSettings,
    /// How long the consumer group may have lag without committing anything before `/health`
    /// reports the worker stalled (`WORKER_STALL_SECONDS`).
    pub stall_after: Duration,
    /// How often service-cdm's periodic counter check compares its counters with the recount
    /// over the Data Vault (`VERIFY_INTERVAL_SECONDS`; `0` turns it off).
    pub verify_every: Option<Duration>,
    /// The pipeline's hops as the read side reports them (`GET /api/v1/pipeline`): each
    /// stage's consumer group and the topic it reads (`PIPELINE_<STAGE>_GROUP`,
    /// `PIPELINE_<STAGE>_TOPIC`).
    pub pipeline: Vec<Hop>,
    /// The bearer token the read API and the dashboard's data require (`API_TOKEN`; service-cdm
    /// only). Unset, they answer anyone, and service-cdm says so at start.
    pub api_token: Option<Secret>,
}

/// One hop of the pipeline: a stage, the consumer group it commits in and the topic it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// `stg`, `dds` or `cdm`.
    pub stage: &'static str,
    pub group: String,
    pub topic: String,
}

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    pub security: KafkaSecurity,
    pub source_topic: Option<String>,
    pub destination_topic: Option<String>,
    pub consumer_group: String,
    /// Idempotent producer (on by default; a broker that lacks it can be served with `false`).
    pub idempotence: bool,
    /// The producers' codec (`KAFKA_COMPRESSION`).
    pub compression: Compression,
    /// When set, the service creates its missing topics with this many partitions at start
    /// (`KAFKA_TOPIC_PARTITIONS`; `0` turns it off). Existing topics are left alone.
    pub create_topics_partitions: Option<i32>,
    /// How long the group waits for a member that stopped heartbeating (a process killed
    /// with -9) before it gives that member's partitions to others (`KAFKA_SESSION_TIMEOUT_MS`).
    pub session_timeout: Duration,
    /// Static group membership (`KAFKA_GROUP_INSTANCE_ID`, e.g. the pod name): a restarted
    /// member with the same id takes its partitions back at once, without a rebalance. Must be
    /// unique among the group's live members.
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaSecurity {
    Plaintext,
    /// SASL over TLS or plaintext, as managed Kafka services require.
    Sasl {
        protocol: String,
        mechanism: String,
        username: String,
        password: Secret,
        ca_cert: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct PostgresSettings {
    pub url: Secret,
    pub pool_size: u32,
    /// `MIGRATIONS`: whether this process applies the schema or waits for it (see [`Migrations`]).
    pub migrations: Migrations,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: Secret,
    pub pool_size: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// The most messages one batch (one transaction) holds.
    pub max_messages: usize,
    /// How long a batch waits for more messages once it has one.
    pub linger: Duration,
}

/// Reads variables; `None` is unset. Empty values count as unset.
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name)
            .cloned()
            .filter(|v| !v.trim().is_empty())
    }
}

impl Settings {
    pub fn from_env(profile: Profile) -> Result<Self, ConfigError> {
        Self::from(&ProcessEnv, profile)
    }

    pub fn from(env: &impl Env, profile: Profile) -> Result<Self, ConfigError> {
        let redis = if profile.uses_redis {
            Some(RedisSettings::from(env)?)
        } else {
            None
        };
        let max_messages: usize = value(env, &var::BATCH_MAX_MESSAGES)?;
        if max_messages == 0 {
            return Err(ConfigError::new(
                var::BATCH_MAX_MESSAGES.name,
                "must be at least 1",
            ));
        }
        Ok(Self {
            service: profile.service,
            http_addr: http_addr(env, profile.http_port)?,
            kafka: KafkaSettings::from(env, profile)?,
            postgres: PostgresSettings {
                url: database_url(env)?,
                pool_size: value(env, &var::PG_POOL_SIZE)?,
                migrations: value(env, &var::MIGRATIONS)?,
            },
            redis,
            batch: BatchSettings {
                max_messages,
                linger: Duration::from_millis(value(env, &var::BATCH_LINGER_MS)?),
            },
            stall_after: Duration::from_secs(value(env, &var::WORKER_STALL_SECONDS)?),
            verify_every: Some(Duration::from_secs(value(
                env,
                &var::VERIFY_INTERVAL_SECONDS,
            )?))
            .filter(|every| !every.is_zero()),
            pipeline: pipeline_hops(env, profile)?,
            api_token: api_token(env)?,
        })
    }
}

/// The pipeline's hops: `PIPELINE_<STAGE>_GROUP` and `PIPELINE_<STAGE>_TOPIC` for each of
/// `stg`, `dds` and `cdm`, defaulting to the pipeline's default names, except that a
/// service's own hop defaults to its own group and source topic.
fn pipeline_hops(env: &impl Env, profile: Profile) -> Result<Vec<Hop>, ConfigError> {
    let own_group = env
        .get(var::KAFKA_CONSUMER_GROUP.name)
        .unwrap_or_else(|| profile.consumer_group.to_owned());
    let own_topic = env
        .get(var::KAFKA_SOURCE_TOPIC.name)
        .or(profile.source_topic.map(str::to_owned));
    var::PIPELINE
        .iter()
        .zip(topics::PIPELINE)
        .map(|(&(group_var, topic_var), hop)| {
            let own = hop.group == profile.consumer_group;
            let group = match env.get(group_var.name) {
                Some(group) => group,
                None if own => own_group.clone(),
                None => value(env, group_var)?,
            };
            let topic = match env.get(topic_var.name) {
                Some(topic) => topic,
                None => match own.then(|| own_topic.clone()).flatten() {
                    Some(topic) => topic,
                    None => value(env, topic_var)?,
                },
            };
            for (variable, value) in [(group_var, &group), (topic_var, &topic)] {
                if value.chars().any(char::is_whitespace) {
                    return Err(ConfigError::new(
                        variable.name,
                        "must not contain whitespace",
                    ));
                }
            }
            Ok(Hop {
                stage: hop.stage,
                group,
                topic,
            })
        })
        .collect()
}

/// The shortest `API_TOKEN` accepted: a token anyone could guess is no better than none.
pub const API_TOKEN_MIN_LENGTH: usize = 16;

/// `API_TOKEN`: printable ASCII without spaces (it travels in an `Authorization` header), at
/// least [`API_TOKEN_MIN_LENGTH`] characters. The value is never part of the error.
fn api_token(env: &impl Env) -> Result<Option<Secret>, ConfigError> {
    let Some(token) = env.get(var::API_TOKEN.name) else {
        return Ok(None);
    };
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            var::API_TOKEN.name,
            "must be printable ASCII without spaces",
        ));
    }
    if token.len() < API_TOKEN_MIN_LENGTH {
        return Err(ConfigError::new(
            var::API_TOKEN.name,
            format!("must be at least {API_TOKEN_MIN_LENGTH} characters long"),
        ));
    }
    Ok(Some(Secret::new(token)))
}

/// The HTTP listen address: `HTTP_HOST` (default all interfaces) and `HTTP_PORT`.
pub fn http_addr(env: &impl Env, default_port: u16) -> Result<SocketAddr, ConfigError> {
    let host: IpAddr = value(env, &var::HTTP_HOST)?;
    let port: u16 = parse_or(env, &var::HTTP_PORT, default_port)?;
    Ok(SocketAddr::new(host, port))
}

/// A producer's batch compression, as librdkafka's `compression.type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    const NAMES: [(&'static str, Self); 5] = [
        ("none", Self::None),
        ("gzip", Self::Gzip),
        ("snappy", Self::Snappy),
        ("lz4", Self::Lz4),
        ("zstd", Self::Zstd),
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, codec)| *codec == self)
            .map_or("none", |(name, _)| name)
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        one_of(text, &Self::NAMES)
    }
}

impl KafkaSettings {
    pub fn from(env: &impl Env, profile: Profile) -> Result<Self, ConfigError> {
        Ok(Self {
            bootstrap_servers: bootstrap_servers(env)?,
            security: kafka_security(env)?,
            source_topic: env
                .get(var::KAFKA_SOURCE_TOPIC.name)
                .or(profile.source_topic.map(str::to_owned)),
            destination_topic: env
                .get(var::KAFKA_DESTINATION_TOPIC.name)
                .or(profile.destination_topic.map(str::to_owned)),
            consumer_group: env
                .get(var::KAFKA_CONSUMER_GROUP.name)
                .unwrap_or_else(|| profile.consumer_group.to_owned()),
            idempotence: value(env, &var::KAFKA_ENABLE_IDEMPOTENCE)?,
            compression: value(env, &var::KAFKA_COMPRESSION)?,
            create_topics_partitions: Some(value(env, &var::KAFKA_TOPIC_PARTITIONS)?)
                .filter(|partitions: &i32| *partitions > 0),
            session_timeout: session_timeout(env)?,
            group_instance_id: env.get(var::KAFKA_GROUP_INSTANCE_ID.name),
        })
    }
}

impl RedisSettings {
    pub fn from(env: &impl Env) -> Result<Self, ConfigError> {
        Ok(Self {
            url: redis_url(env)?,
            pool_size: value(env, &var::REDIS_POOL_SIZE)?,
        })
    }
}

/// Kafka brokers accept 6 s to 30 min by default (`group.min/max.session.timeout.ms`).
fn session_timeout(env: &impl Env) -> Result<Duration, ConfigError> {
    let millis: u64 = value(env, &var::KAFKA_SESSION_TIMEOUT_MS)?;
    if !(6_000..=1_800_000).contains(&millis) {
        return Err(ConfigError::new(
            var::KAFKA_SESSION_TIMEOUT_MS.name,
            "must be between 6000 and 1800000",
        ));
    }
    Ok(Duration::from_millis(millis))
}

/// Parses a variable, or its declared default when unset, naming it when malformed. A variable
/// declared without a default value is required.
pub fn value<T>(env: &impl Env, variable: &'static Variable) -> Result<T, ConfigError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match (env.get(variable.name), variable.default) {
        (Some(text), _) => parse(variable, &text),
        (None, Fallback::Value(default)) => parse(variable, default),
        (None, Fallback::Program(_) | Fallback::Unset(_)) => {
            Err(ConfigError::new(variable.name, "is required but not set"))
        }
    }
}

/// Parses a variable whose default is the program's own (from its [`Profile`]).
pub fn parse_or<T>(
    env: &impl Env,
    variable: &'static Variable,
    default: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match env.get(variable.name) {
        None => Ok(default),
        Some(text) => parse(variable, &text),
    }
}

fn parse<T>(variable: &'static Variable, text: &str) -> Result<T, ConfigError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.trim().parse().map_err(|error| {
        ConfigError::new(
            variable.name,
            format!("`{text}` is not a valid value: {error}"),
        )
    })
}

fn bootstrap_servers(env: &impl Env) -> Result<String, ConfigError> {
    if let Some(servers) = env.get(var::KAFKA_BOOTSTRAP_SERVERS.name) {
        return Ok(servers);
    }
    let host: String = value(env, &var::KAFKA_HOST)?;
    let port: u16 = value(env, &var::KAFKA_PORT)?;
    Ok(format!("{host}:{port}"))
}

fn kafka_security(env: &impl Env) -> Result<KafkaSecurity, ConfigError> {
    let (user_var, password_var) = (&var::KAFKA_USERNAME, &var::KAFKA_PASSWORD);
    let username = env.get(user_var.name);
    let password = env.get(password_var.name);
    let (username, password) = match (username, password) {
        (None, None) => return Ok(KafkaSecurity::Plaintext),
        (Some(_), None) => {
            return Err(ConfigError::new(
                password_var.name,
                format!("is required when {} is set", user_var.name),
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                user_var.name,
                format!("is required when {} is set", password_var.name),
            ))
        }
        (Some(u), Some(p)) => (u, Secret::new(p)),
    };
    let ca_cert = env.get(var::KAFKA_CA_CERT.name).map(PathBuf::from);
    if let Some(path) = &ca_cert {
        if !path.is_file() {
            return Err(ConfigError::new(
                var::KAFKA_CA_CERT.name,
                format!("`{}` is not a readable file", path.display()),
            ));
        }
    }
    Ok(KafkaSecurity::Sasl {
        protocol: value(env, &var::KAFKA_SECURITY_PROTOCOL)?,
        mechanism: value(env, &var::KAFKA_SASL_MECHANISM)?,
        username,
        password,
        ca_cert,
    })
}

fn database_url(env: &impl Env) -> Result<Secret, ConfigError> {
    if let Some(url) = env.get(var::DATABASE_URL.name) {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::new(
                var::DATABASE_URL.name,
                "must start with postgres:// or postgresql://",
            ));
        }
        return Ok(Secret::new(url));
    }
    let host: String = value(env, &var::PG_WAREHOUSE_HOST).map_err(|_| {
        ConfigError::new(
            var::DATABASE_URL.name,
            format!("is not set, nor {}", var::PG_WAREHOUSE_HOST.name),
        )
    })?;
    let port: u16 = value(env, &var::PG_WAREHOUSE_PORT)?;
    let dbname: String = value(env, &var::PG_WAREHOUSE_DBNAME)?;
    let user: String = value(env, &var::PG_WAREHOUSE_USER)?;
    let credentials = match env.get(var::PG_WAREHOUSE_PASSWORD.name) {
        Some(password) => format!("{}:{}", encode(&user), encode(&password)),
        None => encode(&user),
    };
    Ok(Secret::new(format!(
        "postgres://{credentials}@{host}:{port}/{}",
        encode(&dbname)
    )))
}

fn redis_url(env: &impl Env) -> Result<Secret, ConfigError> {
    if let Some(url) = env.get(var::REDIS_URL.name) {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(ConfigError::new(
                var::REDIS_URL.name,
                "must start with redis:// or rediss://",
            ));
        }
        return Ok(Secret::new(url));
    }
    let host: String = value(env, &var::REDIS_HOST)?;
    let port: u16 = value(env, &var::REDIS_PORT)?;
    Ok(Secret::new(match env.get(var::REDIS_PASSWORD.name) {
        Some(password) => format!("redis://:{}@{host}:{port}", encode(&password)),
        None => format!("redis://{host}:{port}"),
    }))
}

/// Who applies the warehouse schema. A least-privilege database role cannot run DDL (diesel's
/// bookkeeping even issues `CREATE TABLE IF NOT EXISTS`, refused without `CREATE` on the
/// schema), so deployments run `vaultctl migrate` once as the owner and start the services
/// with `MIGRATIONS=verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    /// Apply pending migrations at start, under an advisory lock (the default: local runs).
    Apply,
    /// Only read which migrations are applied, and wait until none is pending.
    Verify,
}

impl std::str::FromStr for Migrations {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        one_of(text, &[("apply", Self::Apply), ("verify", Self::Verify)])
    }
}

/// The value `text` names among `choices`, or an error listing them.
fn one_of<T: Copy>(text: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            format!("expected one of {}", names.join(", "))
        })
}

/// Percent-encodes everything but unreserved URL characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: Profile = Profile {
        service: "service-test",
        source_topic: Some(topics::RAW_ORDERS),
        destination_topic: Some(topics::ENRICHED_ORDERS),
        consumer_group: "test-group",
        http_port: 5012,
        uses_redis: true,
    };

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reference_variable_names_configure_everything() {
        let settings = Settings::from(
            &env(&[
                ("KAFKA_HOST", "kafka"),
                ("KAFKA_PORT", "29092"),
                ("KAFKA_SOURCE_TOPIC", "in"),
                ("KAFKA_DESTINATION_TOPIC", "out"),
                ("KAFKA_CONSUMER_GROUP", "g"),
                ("REDIS_HOST", "cache"),
                ("REDIS_PORT", "6380"),
                ("PG_WAREHOUSE_HOST", "db"),
                ("PG_WAREHOUSE_PORT", "6432"),
                ("PG_WAREHOUSE_DBNAME", "dwh"),
                ("PG_WAREHOUSE_USER", "jovyan"),
                ("PG_WAREHOUSE_PASSWORD", "p@ss word"),
            ]),
            PROFILE,
        )
        .expect("valid settings");
        assert_eq!(settings.kafka.bootstrap_servers, "kafka:29092");
        assert_eq!(settings.kafka.source_topic.as_deref(), Some("in"));
        assert_eq!(settings.kafka.destination_topic.as_deref(), Some("out"));
        assert_eq!(settings.kafka.consumer_group, "g");
        assert_eq!(
            settings.postgres.url.expose(),
            "postgres://jovyan:p%40ss%20word@db:6432/dwh"
        );
        let redis = settings.redis.expect("redis settings");
        assert_eq!(redis.url.expose(), "redis://cache:6380");
        assert_eq!(settings.kafka.security, KafkaSecurity::Plaintext);
    }

    #[test]
    fn url_forms_win_over_parts() {
        let settings = Settings::from(
            &env(&[
                ("KAFKA_BOOTSTRAP_SERVERS", "a:1,b:2"),
                ("KAFKA_HOST", "ignored"),
                ("DATABASE_URL", "postgres://u@h/d"),
                ("REDIS_URL", "redis://r:1/2"),
            ]),
            PROFILE,
        )
        .expect("valid settings");
        assert_eq!(settings.kafka.bootstrap_servers, "a:1,b:2");
        assert_eq!(settings.postgres.url.expose(), "postgres://u@h/d");
    }

    #[test]
    fn a_missing_database_setting_names_the_variable() {
        let err = Settings::from(&env(&[]), PROFILE).expect_err("must fail");
        assert_eq!(err.variable, "DATABASE_URL");
    }

    #[test]
    fn a_malformed_port_names_the_variable() {
        let err = Settings::from(
            &env(&[
                ("DATABASE_URL", "postgres://u@h/d"),
                ("KAFKA_PORT", "ninety"),
            ]),
            PROFILE,
        )
        .expect_err("must fail");
        assert_eq!(err.variable, "KAFKA_PORT");
        assert!(err.to_string().contains("KAFKA_PORT"));
    }

    #[test]
    fn producers_compress_with_lz4_unless_told_and_a_wrong_codec_lists_the_choices() {
        let database = ("DATABASE_URL", "postgres://u@h/d");
        let settings = Settings::from(&env(&[database]), PROFILE).expect("valid settings");
        assert_eq!(settings.kafka.compression, Compression::Lz4);
        for (name, _) in Compression::NAMES {
            let described = var::KAFKA_COMPRESSION.description;
            assert!(described.contains(&format!("`{name}`")), "{described}");
        }
        for (name, codec) in Compression::NAMES {
            let settings = Settings::from(&env(&[database, ("KAFKA_COMPRESSION", name)]), PROFILE)
                .expect("valid settings");
            assert_eq!(settings.kafka.compression, codec);
            assert_eq!(codec.as_str(), name);
        }
        let err = Settings::from(&env(&[database, ("KAFKA_COMPRESSION", "lzma")]), PROFILE)
            .expect_err("must fail");
        assert_eq!(err.variable, "KAFKA_COMPRESSION");
        let message = err.to_string();
        assert!(message.contains("`lzma`"), "{message}");
        assert!(
            message.contains("none, gzip, snappy, lz4, zstd"),
            "{message}"
        );
    }

    #[test]
    fn managed_kafka_uses_sasl_ssl_with_scram_and_hides_the_password() {
        let settings = Settings::from(
            &env(&[
                ("DATABASE_URL", "postgres://u@h/d"),
                ("KAFKA_USERNAME", "svc"),
                ("KAFKA_PASSWORD", "hunter2"),
            ]),
            PROFILE,
        )
        .expect("valid settings");
        match &settings.kafka.security {
            KafkaSecurity::Sasl {
                protocol,
                mechanism,
                ..
            } => {
                assert_eq!(protocol, "SASL_SSL");
                assert_eq!(mechanism, "SCRAM-SHA-512");
            }
            other => panic!("unexpected {other:?}"),
        }
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn the_pipeline_hops_default_to_the_pipeline_names_and_the_service_s_own_group() {
        let cdm = Profile {
            service: topics::CDM_GROUP,
            source_topic: Some(topics::COUNTER_EVENTS),
            destination_topic: None,
            consumer_group: topics::CDM_GROUP,
            http_port: 5014,
            uses_redis: false,
        };
        let settings = Settings::from(
            &env(&[
                ("DATABASE_URL", "postgres://u@h/d"),
                ("KAFKA_CONSUMER_GROUP", "cdm-blue"),
                ("KAFKA_SOURCE_TOPIC", "counters"),
                ("PIPELINE_STG_GROUP", "stg-blue"),
            ]),
            cdm,
        )
        .expect("valid settings");
        let hops: Vec<(&str, &str, &str)> = settings
            .pipeline
            .iter()
            .map(|hop| (hop.stage, hop.group.as_str(), hop.topic.as_str()))
            .collect();
        assert_eq!(
            hops,
            [
                ("stg", "stg-blue", topics::RAW_ORDERS),
                ("dds", topics::DDS_GROUP, topics::ENRICHED_ORDERS),
                ("cdm", "cdm-blue", "counters"),
            ]
        );
    }

    #[test]
    fn a_pipeline_topic_with_a_space_names_the_variable() {
        let err = Settings::from(
            &env(&[
                ("DATABASE_URL", "postgres://u@h/d"),
                ("PIPELINE_DDS_TOPIC", "dds service"),
            ]),
            PROFILE,
        )
        .expect_err("must fail");
        assert_eq!(err.variable, "PIPELINE_DDS_TOPIC");
    }

    #[test]
    fn an_api_token_is_kept_as_a_secret_and_a_short_or_spaced_one_is_refused() {
        let token = "a-token-of-twenty-chars";
        let settings = Settings::from(
            &env(&[("DATABASE_URL", "postgres://u@h/d"), ("API_TOKEN", token)]),
            PROFILE,
        )
        .expect("valid settings");
        assert_eq!(settings.api_token.as_ref().map(Secret::expose), Some(token));
        assert!(!format!("{settings:?}").contains(token));
        let unset = Settings::from(&env(&[("DATABASE_URL", "postgres://u@h/d")]), PROFILE)
            .expect("valid settings");
        assert!(unset.api_token.is_none());
        for bad in [
            "short",
            "sixteen chars with spaces",
            "tab\there-and-long-enough",
        ] {
            let err = Settings::from(
                &env(&[("DATABASE_URL", "postgres://u@h/d"), ("API_TOKEN", bad)]),
                PROFILE,
            )
            .expect_err(bad);
            assert_eq!(err.variable, "API_TOKEN");
            assert!(!err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn a_password_without_a_user_is_refused() {
        let err = Settings::from(
            &env(&[
                ("DATABASE_URL", "postgres://u@h/d"),
                ("KAFKA_PASSWORD", "x"),
            ]),
            PROFILE,
        )
        .expect_err("must fail");
        assert_eq!(err.variable, "KAFKA_USERNAME");
    }

    #[test]
    fn a_missing_ca_file_is_refused() {
        let err = Settings::from(
            &env(&[
                ("DATABASE_URL", "postgres://u@h/d"),
                ("KAFKA_USERNAME", "u"),
                ("KAFKA_PASSWORD", "p"),
                ("KAFKA_CA_CERT", "/nonexistent/ca.pem"),
            ]),
            PROFILE,
        )
        .expect_err("must fail");
        assert_eq!(err.variable, "KAFKA_CA_CERT");
    }

    /// An [`Env`] that remembers every name it was asked for.
    struct Recording {
        env: HashMap<String, String>,
        asked: std::cell::RefCell<std::collections::BTreeSet<String>>,
    }

    impl Env for Recording {
        fn get(&self, name: &str) -> Option<String> {
            self.asked.borrow_mut().insert(name.to_owned());
            Env::get(&self.env, name)
        }
    }

    #[test]
    fn the_parser_reads_only_declared_variables() {
        let ca = std::env::temp_dir().join(format!("vaultline-config-ca-{}", std::process::id()));
        std::fs::write(&ca, "").expect("a temporary file");
        let ca = ca.display().to_string();
        // Each path through the parser: the parts and the URL forms, SASL with a CA file.
        let envs = [
            env(&[("PG_WAREHOUSE_HOST", "db"), ("PG_WAREHOUSE_USER", "u")]),
            env(&[
                ("DATABASE_URL", "postgres://u@h/d"),
                ("KAFKA_BOOTSTRAP_SERVERS", "k:1"),
                ("REDIS_URL", "redis://r:1"),
                ("KAFKA_USERNAME", "u"),
                ("KAFKA_PASSWORD", "p"),
                ("KAFKA_CA_CERT", ca.as_str()),
                ("API_TOKEN", "a-token-of-twenty-chars"),
            ]),
        ];
        let no_redis = Profile {
            uses_redis: false,
            ..PROFILE
        };
        let mut asked = std::collections::BTreeSet::new();
        for env in envs {
            for profile in [PROFILE, no_redis] {
                let recording = Recording {
                    env: env.clone(),
                    asked: Default::default(),
                };
                Settings::from(&recording, profile).expect("valid settings");
                asked.extend(recording.asked.into_inner());
            }
        }
        let _ = std::fs::remove_file(&ca);
        let undeclared: Vec<&String> = asked
            .iter()
            .filter(|name| variables::variable(name).is_none())
            .collect();
        assert!(
            undeclared.is_empty(),
            "read but not declared: {undeclared:?}"
        );
        // And the reverse for the parser's own variables: a declared one nobody asks for is
        // a stale declaration (the others are read outside the parser).
        let elsewhere = [
            var::PG_STG_USER.name,
            var::PG_STG_PASSWORD.name,
            var::PG_DDS_USER.name,
            var::PG_DDS_PASSWORD.name,
            var::PG_CDM_USER.name,
            var::PG_CDM_PASSWORD.name,
            var::DATAGEN_SEED.name,
            var::RUST_LOG.name,
            var::LOG_FORMAT.name,
        ];
        for variable in variables::VARIABLES {
            assert!(
                asked.contains(variable.name) || elsewhere.contains(&variable.name),
                "{} is declared but the parser never reads it",
                variable.name
            );
        }
    }

    /// Outside the parser, code reads a variable through its declaration (`NAME.name`), never
    /// by a literal name: so the declaration is the one list of what the programs read.
    #[test]
    fn no_program_reads_the_environment_by_a_literal_name() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut offenders = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("readable workspace") {
                let path = entry.expect("a directory entry").path();
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                if path.is_dir() {
                    // The test harness reads its own variables (VAULTLINE_*, CI, CHROMIUM).
                    if !matches!(name, "target" | "tests" | ".git" | ".stack" | "fuzz") {
                        stack.push(path);
                    }
                } else if name.ends_with(".rs") {
                    let text = std::fs::read_to_string(&path).expect("a readable source");
                    for pattern in ["env::var(\"", "env::var_os(\"", "ProcessEnv.get(\""] {
                        if text.contains(pattern) {
                            offenders.push(format!("{}: {pattern}", path.display()));
                        }
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:#?}");
    }
}
