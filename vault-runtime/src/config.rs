//! Typed settings from the environment (docs/contract.md §1).
//!
//! Accepts the Python reference deployment's names (`KAFKA_HOST`, `PG_WAREHOUSE_HOST`, ...) and
//! the single-URL forms (`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`, `REDIS_URL`). Reading is
//! done once, at start, through a lookup function so tests can pass their own environment. A
//! bad or missing setting is a [`ConfigError`] naming the variable.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

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
    /// How often a stage that verifies (the datamart) compares its counters with the recount
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
        let max_messages: usize = parse_or(env, "BATCH_MAX_MESSAGES", 1000)?;
        if max_messages == 0 {
            return Err(ConfigError::new("BATCH_MAX_MESSAGES", "must be at least 1"));
        }
        Ok(Self {
            service: profile.service,
            http_addr: http_addr(env, profile.http_port)?,
            kafka: KafkaSettings::from(env, profile)?,
            postgres: PostgresSettings {
                url: database_url(env)?,
                pool_size: parse_or(env, "PG_POOL_SIZE", 8)?,
                migrations: parse_or(env, "MIGRATIONS", Migrations::Apply)?,
            },
            redis,
            batch: BatchSettings {
                max_messages,
                linger: Duration::from_millis(parse_or(env, "BATCH_LINGER_MS", 20)?),
            },
            stall_after: Duration::from_secs(parse_or(env, "WORKER_STALL_SECONDS", 30)?),
            verify_every: Some(Duration::from_secs(parse_or(
                env,
                "VERIFY_INTERVAL_SECONDS",
                // On by default, every minute: the recount scans the whole Data Vault (about
                // 0.8 s for 30,000 orders and 4 s for 100,000 here, docs/performance.md "The
                // counter check") and runs only while the group has no lag. 0 turns it off.
                60,
            )?))
            .filter(|every| !every.is_zero()),
            pipeline: pipeline_hops(env, profile)?,
            api_token: api_token(env)?,
        })
    }
}

/// The pipeline's hops with their default names: consumer group and the topic it reads.
pub const PIPELINE_HOPS: [(&str, &str); 3] = [
    ("service-stg", "stg_service"),
    ("service-dds", "dds_service"),
    ("service-cdm", "cdm_service"),
];

/// The pipeline's hops: `PIPELINE_<STAGE>_GROUP` and `PIPELINE_<STAGE>_TOPIC` for each of
/// `stg`, `dds` and `cdm`, defaulting to the pipeline's default names, except that a
/// service's own hop defaults to its own group and source topic.
fn pipeline_hops(env: &impl Env, profile: Profile) -> Result<Vec<Hop>, ConfigError> {
    const NAMES: [(&str, &str, &str); 3] = [
        ("stg", "PIPELINE_STG_GROUP", "PIPELINE_STG_TOPIC"),
        ("dds", "PIPELINE_DDS_GROUP", "PIPELINE_DDS_TOPIC"),
        ("cdm", "PIPELINE_CDM_GROUP", "PIPELINE_CDM_TOPIC"),
    ];
    let own_group = env
        .get("KAFKA_CONSUMER_GROUP")
        .unwrap_or_else(|| profile.consumer_group.to_owned());
    let own_topic = env
        .get("KAFKA_SOURCE_TOPIC")
        .or(profile.source_topic.map(str::to_owned));
    NAMES
        .iter()
        .zip(PIPELINE_HOPS)
        .map(|(&(stage, group_var, topic_var), (group, topic))| {
            let own = group == profile.consumer_group;
            let group = env.get(group_var).unwrap_or_else(|| {
                if own {
                    own_group.clone()
                } else {
                    group.to_owned()
                }
            });
            let topic = env
                .get(topic_var)
                .or_else(|| own.then(|| own_topic.clone()).flatten())
                .unwrap_or_else(|| topic.to_owned());
            for (variable, value) in [(group_var, &group), (topic_var, &topic)] {
                if value.chars().any(char::is_whitespace) {
                    return Err(ConfigError::new(variable, "must not contain whitespace"));
                }
            }
            Ok(Hop {
                stage,
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
    let Some(token) = env.get("API_TOKEN") else {
        return Ok(None);
    };
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            "API_TOKEN",
            "must be printable ASCII without spaces",
        ));
    }
    if token.len() < API_TOKEN_MIN_LENGTH {
        return Err(ConfigError::new(
            "API_TOKEN",
            format!("must be at least {API_TOKEN_MIN_LENGTH} characters long"),
        ));
    }
    Ok(Some(Secret::new(token)))
}

/// The HTTP listen address: `HTTP_HOST` (default all interfaces) and `HTTP_PORT`.
pub fn http_addr(env: &impl Env, default_port: u16) -> Result<SocketAddr, ConfigError> {
    let host: IpAddr = parse_or(env, "HTTP_HOST", IpAddr::V4(Ipv4Addr::UNSPECIFIED))?;
    let port: u16 = parse_or(env, "HTTP_PORT", default_port)?;
    Ok(SocketAddr::new(host, port))
}

impl KafkaSettings {
    pub fn from(env: &impl Env, profile: Profile) -> Result<Self, ConfigError> {
        Ok(Self {
            bootstrap_servers: bootstrap_servers(env)?,
            security: kafka_security(env)?,
            source_topic: env
                .get("KAFKA_SOURCE_TOPIC")
                .or(profile.source_topic.map(str::to_owned)),
            destination_topic: env
                .get("KAFKA_DESTINATION_TOPIC")
                .or(profile.destination_topic.map(str::to_owned)),
            consumer_group: env
                .get("KAFKA_CONSUMER_GROUP")
                .unwrap_or_else(|| profile.consumer_group.to_owned()),
            idempotence: parse_or(env, "KAFKA_ENABLE_IDEMPOTENCE", true)?,
            create_topics_partitions: Some(parse_or(env, "KAFKA_TOPIC_PARTITIONS", 3)?)
                .filter(|partitions: &i32| *partitions > 0),
            session_timeout: session_timeout(env)?,
            group_instance_id: env.get("KAFKA_GROUP_INSTANCE_ID"),
        })
    }
}

impl RedisSettings {
    pub fn from(env: &impl Env) -> Result<Self, ConfigError> {
        Ok(Self {
            url: redis_url(env)?,
            pool_size: parse_or(env, "REDIS_POOL_SIZE", 8)?,
        })
    }
}

/// Kafka brokers accept 6 s to 30 min by default (`group.min/max.session.timeout.ms`).
fn session_timeout(env: &impl Env) -> Result<Duration, ConfigError> {
    let millis: u64 = parse_or(env, "KAFKA_SESSION_TIMEOUT_MS", 10_000)?;
    if !(6_000..=1_800_000).contains(&millis) {
        return Err(ConfigError::new(
            "KAFKA_SESSION_TIMEOUT_MS",
            "must be between 6000 and 1800000",
        ));
    }
    Ok(Duration::from_millis(millis))
}

/// Parses an optional variable, naming it when malformed.
pub fn parse_or<T>(env: &impl Env, name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr,
{
    match env.get(name) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| ConfigError::new(name, format!("`{text}` is not a valid value"))),
    }
}

fn required(env: &impl Env, name: &'static str) -> Result<String, ConfigError> {
    env.get(name)
        .ok_or_else(|| ConfigError::new(name, "is required but not set"))
}

fn bootstrap_servers(env: &impl Env) -> Result<String, ConfigError> {
    if let Some(servers) = env.get("KAFKA_BOOTSTRAP_SERVERS") {
        return Ok(servers);
    }
    let host = env
        .get("KAFKA_HOST")
        .unwrap_or_else(|| "localhost".to_owned());
    let port: u16 = parse_or(env, "KAFKA_PORT", 9092)?;
    Ok(format!("{host}:{port}"))
}

fn kafka_security(env: &impl Env) -> Result<KafkaSecurity, ConfigError> {
    let username = env.get("KAFKA_USERNAME");
    let password = env.get("KAFKA_PASSWORD");
    let (username, password) = match (username, password) {
        (None, None) => return Ok(KafkaSecurity::Plaintext),
        (Some(_), None) => {
            return Err(ConfigError::new(
                "KAFKA_PASSWORD",
                "is required when KAFKA_USERNAME is set",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "KAFKA_USERNAME",
                "is required when KAFKA_PASSWORD is set",
            ))
        }
        (Some(u), Some(p)) => (u, Secret::new(p)),
    };
    let ca_cert = env.get("KAFKA_CA_CERT").map(PathBuf::from);
    if let Some(path) = &ca_cert {
        if !path.is_file() {
            return Err(ConfigError::new(
                "KAFKA_CA_CERT",
                format!("`{}` is not a readable file", path.display()),
            ));
        }
    }
    Ok(KafkaSecurity::Sasl {
        protocol: env
            .get("KAFKA_SECURITY_PROTOCOL")
            .unwrap_or_else(|| "SASL_SSL".to_owned()),
        mechanism: env
            .get("KAFKA_SASL_MECHANISM")
            .unwrap_or_else(|| "SCRAM-SHA-512".to_owned()),
        username,
        password,
        ca_cert,
    })
}

fn database_url(env: &impl Env) -> Result<Secret, ConfigError> {
    if let Some(url) = env.get("DATABASE_URL") {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "must start with postgres:// or postgresql://",
            ));
        }
        return Ok(Secret::new(url));
    }
    let host = required(env, "PG_WAREHOUSE_HOST")
        .map_err(|_| ConfigError::new("DATABASE_URL", "is not set, nor PG_WAREHOUSE_HOST"))?;
    let port: u16 = parse_or(env, "PG_WAREHOUSE_PORT", 5432)?;
    let dbname = env
        .get("PG_WAREHOUSE_DBNAME")
        .unwrap_or_else(|| "dwh".to_owned());
    let user = required(env, "PG_WAREHOUSE_USER")?;
    let credentials = match env.get("PG_WAREHOUSE_PASSWORD") {
        Some(password) => format!("{}:{}", encode(&user), encode(&password)),
        None => encode(&user),
    };
    Ok(Secret::new(format!(
        "postgres://{credentials}@{host}:{port}/{}",
        encode(&dbname)
    )))
}

fn redis_url(env: &impl Env) -> Result<Secret, ConfigError> {
    if let Some(url) = env.get("REDIS_URL") {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(ConfigError::new(
                "REDIS_URL",
                "must start with redis:// or rediss://",
            ));
        }
        return Ok(Secret::new(url));
    }
    let host = env
        .get("REDIS_HOST")
        .unwrap_or_else(|| "localhost".to_owned());
    let port: u16 = parse_or(env, "REDIS_PORT", 6379)?;
    Ok(Secret::new(match env.get("REDIS_PASSWORD") {
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
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "apply" => Ok(Self::Apply),
            "verify" => Ok(Self::Verify),
            _ => Err(()),
        }
    }
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
        source_topic: Some("stg_service"),
        destination_topic: Some("dds_service"),
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
            service: "service-cdm",
            source_topic: Some("cdm_service"),
            destination_topic: None,
            consumer_group: "service-cdm",
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
                ("stg", "stg-blue", "stg_service"),
                ("dds", "service-dds", "dds_service"),
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
}
