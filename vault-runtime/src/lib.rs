//! The runtime Vaultline's services share, written once: a service is a [`Stage`] (decode
//! pure, apply inside the given transaction) plus a [`Profile`], and [`Application`] does the
//! rest: configuration from the environment, Kafka, Postgres and Redis clients, the consume
//! loop and its failure sorting, dead letters, the `/health` and `/metrics` server, shutdown.
//!
//! The modules are private; what the services, datagen, `vaultctl`, the tests and the benches
//! use is re-exported here, in these groups:
//!
//! | group | for |
//! |---|---|
//! | the stage and the application | a service: its [`Stage`], its `main` |
//! | configuration | settings from the environment, also for the programs beside the services |
//! | Kafka | clients, publishing, progress and lag |
//! | Postgres and Redis | pools and their checks |
//! | health and metrics | the HTTP server, dependency checks, the metric exposition |
//! | dead letters and rewinds | what operators act on (`vaultctl`) |

mod app;
mod config;
mod consume;
mod dead_letter;
mod exposition;
mod failure;
mod found;
mod http;
mod kafka;
mod metrics;
mod monitor;
mod probe;
mod process_metrics;
mod rewind;
mod shutdown;
mod stage;
mod status;
mod stores;

// The stage and the application: a service's whole `main` is `main_for::<S>(PROFILE)`.
pub use app::{init_tracing, main_for, Application};
pub use failure::{diagnose as diagnose_warehouse, Failure, TableAccess};
pub use found::{first_and_total, Found};
pub use shutdown::{signal as shutdown_signal, STOP_WITHIN};
pub use stage::{Companion, Context, Entry, Outcome, ProbeKeys, Rejection, Rejects, Routes, Stage};
pub use status::Status;

// Configuration.
pub use config::variables::{self, Variable, VARIABLES};
pub use config::{
    http_addr, parse_or, value, ConfigError, Env, Hop, KafkaSecurity, KafkaSettings, Migrations,
    PostgresSettings, ProcessEnv, Profile, RedisSettings, Secret, Settings,
};

// Kafka.
pub use kafka::{
    base_config, ensure_topics, lag as consumer_lag, producer, progress as partition_progress,
    publish, sent_header, sent_ms, wait_caught_up, FutureProducer, HopsLag, InMessage, OutMessage,
    PartitionProgress,
};

// Postgres and Redis.
pub use stores::{
    pg_pool, pg_pool_sized, pg_pool_with, redis_ping, redis_pool, PgPool, RedisPool, SessionLimits,
    REDIS_COMMAND_TIMEOUT,
};

// Health and metrics, for a program that serves them itself (datagen).
pub use exposition::reply as metrics_reply;
pub use http::{bind as bind_http, get_or_head};
pub use probe::{Dependency, ProbeMetrics, Probes};
pub use process_metrics::ProcessCollector;

// Dead letters and rewinds: what operators act on.
pub use dead_letter::{
    count_pending as count_pending_dead_letters, insert as insert_dead_letters,
    pending as pending_dead_letters, replay as replay_dead_letters, DeadLetter, StoredDeadLetter,
    REPLAY_PAGE,
};
pub use rewind::{rewind_group, RewindError, RewindPlan, RewindRequest, Start as RewindStart};
