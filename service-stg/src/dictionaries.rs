//! Reading the Redis dictionaries (docs/contract.md §2.2), and telling a user or restaurant
//! that is not there from dictionaries that are not there at all.
//!
//! An order whose user is missing is a message fault (a dead letter, replayed once the user
//! is loaded); but when Redis answers and holds no dictionary at all (emptied, or restarted
//! without persistence), every order would become a dead letter for a fault that has nothing
//! to do with the orders. So a batch in which *every* lookup misses asks Redis whether it
//! holds any dictionary entry at all, and when it holds none the batch fails as systemic: the
//! stage pauses until the dictionaries are back (docs/failures.md).

use std::collections::{BTreeSet, HashMap};

use bb8_redis::redis::{self, AsyncCommands};
use vault_core::EntityId;
use vault_runtime::{Failure, RedisPool};

/// How many keys one `SCAN` step looks at while searching for a dictionary entry.
const SCAN_COUNT: usize = 1000;

/// Fetches the entries of `ids` in one `MGET`: id → JSON text, for those present. Fails as
/// systemic when none is present and Redis holds no dictionary entry at all.
pub(crate) async fn fetch(
    redis: &RedisPool,
    ids: BTreeSet<&EntityId>,
) -> Result<HashMap<EntityId, String>, Failure> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
    let mut conn = redis.get().await.map_err(|error| {
        // Named, so `/health` says which pool: a frozen Redis shows up here first (the
        // checkout's PING times out).
        Failure::Systemic(anyhow::anyhow!("Redis: connection pool: {error}"))
    })?;
    let values: Vec<Option<String>> = conn.mget(&keys).await?;
    let found: HashMap<EntityId, String> = ids
        .into_iter()
        .zip(values)
        .filter_map(|(id, value)| value.map(|v| (id.clone(), v)))
        .collect();
    // One entry found proves the dictionaries are there: the misses are the orders' own.
    if found.is_empty() && !holds_any_entry(&mut conn).await? {
        return Err(Failure::Systemic(anyhow::anyhow!(
            "Redis holds no dictionaries: none of the {} users and restaurants this batch \
             names is there, and no other dictionary entry either (was Redis emptied or \
             restarted without persistence?); waiting until they are loaded again",
            keys.len()
        )));
    }
    Ok(found)
}

/// The `SCAN` pattern of dictionary keys: an entity id, 24 hexadecimal digits
/// ([`EntityId::parse`]).
fn entry_pattern() -> String {
    "[0-9a-fA-F]".repeat(24)
}

/// Whether Redis holds at least one dictionary entry: `SCAN`s the keyspace for a key that is
/// an entity id, stopping at the first. Redis holds the dictionaries and little else
/// (docs/contract.md §1), so the first step finds one when they are there, and an empty
/// Redis answers at once.
async fn holds_any_entry(
    conn: &mut redis::aio::MultiplexedConnection,
) -> Result<bool, redis::RedisError> {
    let pattern = entry_pattern();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(conn)
            .await?;
        if keys.iter().any(|key| EntityId::parse(key).is_ok()) {
            return Ok(true);
        }
        if next == 0 {
            return Ok(false);
        }
        cursor = next;
    }
}
