//! Connection pools for Postgres (diesel-async + bb8) and Redis (bb8-redis).

use std::time::Duration;

use anyhow::Context;
use bb8_redis::redis::AsyncCommands;
use bb8_redis::RedisConnectionManager;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::config::{PostgresSettings, RedisSettings};

pub type PgPool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;
pub type RedisPool = bb8::Pool<RedisConnectionManager>;

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

pub fn redis_pool(settings: &RedisSettings) -> anyhow::Result<RedisPool> {
    let manager = RedisConnectionManager::new(settings.url.expose())
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
