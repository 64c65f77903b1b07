//! Order ids: reserved in blocks from one Redis counter, so they never collide across pushes,
//! restarts, replicas and the benchmark, and never reused whatever happens to Redis.
//!
//! The counter alone is not enough: a Redis emptied or restarted without persistence loses it,
//! and a counter started afresh hands out ids that name existing orders (of other users) a
//! second time. So the counter is never allowed below a floor that only grows: the time, in
//! milliseconds since the epoch, times [`IDS_PER_MILLISECOND`], and never below the highest id
//! this process has issued. After a loss the counter starts again above every id issued
//! before, unless ids were once reserved faster than the floor grows (a million a second)
//! and the loss comes before the clock has caught up with them (docs/contract.md §5).

use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::Context as _;
use bb8_redis::redis;
use chrono::{DateTime, Utc};
use vault_runtime::RedisPool;

/// The Redis key of the counter: the last order id reserved.
pub const COUNTER_KEY: &str = "vaultline:datagen:last_order_id";

/// How fast the floor grows: a thousand ids a millisecond keeps ids below 2^53 (exact in every
/// JSON reader) until the 23rd century.
pub const IDS_PER_MILLISECOND: i64 = 1000;

/// The largest integer every JSON reader holds exactly (2^53 − 1).
pub const MAX_EXACT_ID: i64 = (1 << 53) - 1;

/// Raises the counter to the floor (ARGV[2]) when it is lower or missing, then reserves
/// ARGV[1] ids with INCRBY, in one atomic step. Returns the last id reserved and 1 when the
/// counter was missing (Redis lost it, or this is the first reservation ever).
const RESERVE: &str = r"
local stored = redis.call('GET', KEYS[1])
if not stored or tonumber(stored) < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[2])
end
local missing = 0
if not stored then missing = 1 end
return {redis.call('INCRBY', KEYS[1], ARGV[1]), missing}
";

/// The time part of the floor: no id at or below it may be issued at `now`.
pub fn time_floor(now: DateTime<Utc>) -> i64 {
    now.timestamp_millis().saturating_mul(IDS_PER_MILLISECOND)
}

/// The floor of the next reservation: the time's, or the highest id already issued here
/// if that is higher (a clock set back, or a Redis lost right after a fast run).
pub fn floor(now: DateTime<Utc>, issued: i64) -> i64 {
    time_floor(now).max(issued)
}

/// A block of ids reserved by [`OrderIds::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    pub first: i64,
    pub last: i64,
    /// Redis had no counter: it was emptied or restarted without persistence (or this is the
    /// first reservation it ever saw).
    pub counter_was_missing: bool,
}

/// Reserves order ids; one per process, shared by its pushes.
#[derive(Debug, Default)]
pub struct OrderIds {
    /// The highest id this process has issued.
    issued: AtomicI64,
}

impl OrderIds {
    /// Reserves `count` (≥ 1) consecutive ids, all above every id issued before.
    pub async fn reserve(&self, redis: &RedisPool, count: u64) -> anyhow::Result<Reserved> {
        anyhow::ensure!(count >= 1, "an empty block of order ids");
        let count = i64::try_from(count).context("too many order ids at once")?;
        let floor = floor(Utc::now(), self.issued.load(Ordering::SeqCst));
        let mut conn = redis.get().await?;
        let (last, missing): (i64, i64) = redis::cmd("EVAL")
            .arg(RESERVE)
            .arg(1)
            .arg(COUNTER_KEY)
            .arg(count)
            .arg(floor)
            .query_async(&mut *conn)
            .await
            .context("reserving order ids")?;
        anyhow::ensure!(
            last <= MAX_EXACT_ID,
            "the order-id counter ({COUNTER_KEY}) is at {last}, past 2^53: ids would not stay \
             exact in JSON"
        );
        self.issued.fetch_max(last, Ordering::SeqCst);
        Ok(Reserved {
            first: last - count + 1,
            last,
            counter_was_missing: missing == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn the_floor_is_the_time_in_milliseconds_times_a_thousand() {
        let now = Utc
            .with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
            .single()
            .expect("a time");
        assert_eq!(time_floor(now), now.timestamp_millis() * 1000);
        let later = now + chrono::TimeDelta::milliseconds(1);
        assert_eq!(time_floor(later) - time_floor(now), IDS_PER_MILLISECOND);
    }

    #[test]
    fn ids_stay_exact_in_json_for_two_centuries() {
        let far = Utc
            .with_ymd_and_hms(2226, 1, 1, 0, 0, 0)
            .single()
            .expect("a time");
        assert!(time_floor(far) < MAX_EXACT_ID, "{}", time_floor(far));
        // And well above the ids the counter handed out before the floor existed.
        assert!(time_floor(Utc::now()) > 1_000_000_000_000_000);
    }

    #[test]
    fn the_floor_never_falls_below_an_id_already_issued() {
        let now = Utc::now();
        let ahead = time_floor(now) + 5_000_000;
        assert_eq!(floor(now, ahead), ahead);
        assert_eq!(floor(now, 10_000_000), time_floor(now));
        // A clock set back an hour does not take the floor back with it.
        let earlier = now - chrono::TimeDelta::hours(1);
        assert_eq!(floor(earlier, time_floor(now)), time_floor(now));
    }
}
