//! Connection pools for Postgres (diesel-async + bb8) and Redis (bb8 over redis-rs
//! multiplexed connections, every command with a bounded wait).

use std::time::Duration;

use anyhow::Context;
use bb8_redis::redis::aio::MultiplexedConnection;
use bb8_redis::redis::{self, AsyncCommands, AsyncConnectionConfig, RedisError};
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::config::{PostgresSettings, RedisSettings};

pub type PgPool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;
pub type RedisPool = bb8::Pool<RedisManager>;

/// How long a caller waits for a pooled connection before the attempt counts as failed.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the pool without connecting: a database that is down at start is waited for by
/// whoever needs it, not a reason to crash.
pub fn pg_pool(settings: &PostgresSettings) -> PgPool {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(settings.url.expose());
    bb8::Pool::builder()
        .max_size(settings.pool_size)
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
