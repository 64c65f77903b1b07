//! Connection pools for Postgres (diesel-async + bb8) and Redis (bb8 over redis-rs
//! multiplexed connections, every command with a bounded wait).

use std::time::Duration;

use anyhow::Context;
use bb8_redis::redis::aio::MultiplexedConnection;
use bb8_redis::redis::{self, AsyncCommands, AsyncConnectionConfig, RedisError};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures::FutureExt;

use crate::config::{PostgresSettings, RedisSettings};

pub type PgPool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;
pub type RedisPool = bb8::Pool<RedisManager>;

/// How long a caller waits for a pooled connection before the attempt counts as failed.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// The bounds every session of a pool runs under (docs/failures.md, "Nothing waits forever"):
/// a statement or a lock wait that exceeds them fails, and the worker treats that as
/// systemic — it pauses and retries, never rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// `statement_timeout`; `None` leaves the server's setting.
    pub statement: Option<Duration>,
    /// `lock_timeout`: how long a statement waits for a lock another session holds.
    pub lock: Duration,
    /// `idle_in_transaction_session_timeout`: a session that stopped talking inside a
    /// transaction (a client that hung) releases its locks.
    pub idle_in_transaction: Duration,
}

impl SessionLimits {
    /// The services' batches and API queries: a batch's statements take milliseconds, so
    /// these bounds are only ever reached when something else holds the database.
    pub const SERVICE: SessionLimits = SessionLimits {
        statement: Some(Duration::from_secs(30)),
        lock: Duration::from_secs(10),
        idle_in_transaction: Duration::from_secs(60),
    };
    /// Operator commands (`vaultctl`): a check over a large warehouse may run for minutes,
    /// but never waits on a lock unseen.
    pub const OPERATOR: SessionLimits = SessionLimits {
        statement: None,
        lock: Duration::from_secs(30),
        idle_in_transaction: Duration::from_secs(600),
    };

    /// The `SET` statements a new session runs.
    fn statements(&self) -> String {
        let mut sql = format!(
            "SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {};",
            self.lock.as_millis(),
            self.idle_in_transaction.as_millis()
        );
        if let Some(statement) = self.statement {
            sql.push_str(&format!(
                " SET statement_timeout = {};",
                statement.as_millis()
            ));
        }
        sql
    }
}

/// Builds the pool without connecting: a database that is down at start is waited for by
/// whoever needs it, not a reason to crash. Every session runs under `limits`.
pub fn pg_pool(settings: &PostgresSettings, limits: SessionLimits) -> PgPool {
    pg_pool_sized(settings, limits, settings.pool_size)
}

/// [`pg_pool`] with `size` connections.
pub fn pg_pool_sized(settings: &PostgresSettings, limits: SessionLimits, size: u32) -> PgPool {
    pg_pool_with(settings, limits, size, |_| async { Ok(()) }.boxed())
}

/// What a pool runs on each new session after its limits (e.g. making it read-only).
pub type SessionSetup =
    fn(&mut AsyncPgConnection) -> futures::future::BoxFuture<'_, diesel::QueryResult<()>>;

/// [`pg_pool`] with `size` connections, each set up by `setup` too: a session it fails is
/// not handed out.
pub fn pg_pool_with(
    settings: &PostgresSettings,
    limits: SessionLimits,
    size: u32,
    setup: SessionSetup,
) -> PgPool {
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            conn.batch_execute(&limits.statements())
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            setup(&mut conn)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        settings.url.expose(),
        config,
    );
    bb8::Pool::builder()
        .max_size(size.max(1))
        .connection_timeout(CHECKOUT_TIMEOUT)
        // A connection that died with its server (a restart) is replaced, not handed out.
        .test_on_check_out(true)
        .build_unchecked(manager)
}

/// How long any one Redis command (or pipeline) may wait for its answer before it fails. A
/// Redis that hangs (SIGSTOP, a half-open connection after a network cut) would otherwise
/// hold the batch forever; a timed-out command is a Redis error, so the attempt fails as
/// systemic and the batch is retried (docs/failures.md). Generous against the largest
/// command the services send (an `MGET` of a full batch's menus, datagen's dictionary load).
pub const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// How long opening a Redis connection (TCP, TLS and the handshake) may take.
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens redis-rs multiplexed connections with explicit timeouts, instead of whatever
/// defaults the client library brings (they have changed between versions: older ones had no
/// response timeout at all).
#[derive(Debug, Clone)]
pub struct RedisManager {
    client: redis::Client,
    config: AsyncConnectionConfig,
}

impl RedisManager {
    pub fn new(url: &str) -> Result<Self, RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
                .set_response_timeout(Some(REDIS_COMMAND_TIMEOUT)),
        })
    }
}

impl bb8::ManageConnection for RedisManager {
    type Connection = MultiplexedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }

    /// Checked on every checkout: a connection to a Redis that stopped answering fails here
    /// (within [`REDIS_COMMAND_TIMEOUT`]) and is replaced instead of handed out.
    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        let () = conn.ping().await?;
        Ok(())
    }

    fn has_broken(&self, _: &mut Self::Connection) -> bool {
        false
    }
}

pub fn redis_pool(settings: &RedisSettings) -> anyhow::Result<RedisPool> {
    let manager = RedisManager::new(settings.url.expose())
        .context("invalid configuration: REDIS_URL: not a Redis URL")?;
    Ok(bb8::Pool::builder()
        .max_size(settings.pool_size)
        .connection_timeout(CHECKOUT_TIMEOUT)
        .build_unchecked(manager))
}

pub async fn pg_ping(pool: &PgPool) -> Result<(), String> {
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    diesel::sql_query("SELECT 1")
        .execute(&mut conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub async fn redis_ping(pool: &RedisPool) -> Result<(), String> {
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    let _: () = conn.ping().await.map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_session_bounds_statements_locks_and_idle_transactions() {
        assert_eq!(
            SessionLimits::SERVICE.statements(),
            "SET lock_timeout = 10000; SET idle_in_transaction_session_timeout = 60000; \
             SET statement_timeout = 30000;"
        );
        assert!(!SessionLimits::OPERATOR
            .statements()
            .contains("statement_timeout"));
    }
}
