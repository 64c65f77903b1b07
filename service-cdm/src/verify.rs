//! The counter check (docs/contract.md §3.3): every datamart counter against a recount from the Data
//! Vault. The recount itself is written once, as views of the migrations
//! (`cdm.v_user_product_recount`, `cdm.v_user_category_recount`, compared in
//! `cdm.v_counter_differences`; each order counts for the user of its latest version,
//! `order_user_effectivity`); `vaultctl verify`, `scripts/run.sh`, the tests and service-cdm's
//! periodic check ([`check_periodically`], a companion of the datamart stage) all read the same
//! views.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Integer, Nullable, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::AsyncPgConnection;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use uuid::Uuid;
use vault_runtime::{PgPool, PostgresSettings, SessionLimits, Status};

/// No label beyond the registry's `service`: a family of one metric, which is absent until it
/// is first set (an empty family is not exported at all).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Once {}

/// The periodic check's result as metrics: absent (not 0) until a check has ended.
#[derive(Debug, Clone, Default)]
pub struct CheckMetrics {
    /// Counters that differed from the recount at the last check (taken while the group had no
    /// lag).
    differences: Family<Once, Gauge>,
    /// When that check ended, in seconds since the epoch.
    checked: Family<Once, Gauge<f64, AtomicU64>>,
}

impl CheckMetrics {
    /// Registers both families (in the service's registry, prefixed `vaultline`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "recount_differences",
            "Counters that differed from the recount over the Data Vault at the last check",
            self.differences.clone(),
        );
        registry.register(
            "recount_last_checked_timestamp_seconds",
            "When the counters were last checked against the recount, seconds since the epoch",
            self.checked.clone(),
        );
    }

    /// The result of a check, and that it ended now.
    fn record(&self, differences: i64) {
        self.differences.get_or_create(&Once {}).set(differences);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_secs_f64())
            .unwrap_or_default();
        self.checked.get_or_create(&Once {}).set(now);
    }
}

/// Which datamart a difference is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Datamart {
    /// `cdm.user_product_counters`
    Product,
    /// `cdm.user_category_counters`
    Category,
}

impl Datamart {
    pub fn as_str(&self) -> &'static str {
        match self {
            Datamart::Product => "product",
            Datamart::Category => "category",
        }
    }
}

/// One counter whose value differs from the recount (a missing row counts as 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub datamart: Datamart,
    /// The user hub key.
    pub user_id: Uuid,
    /// The product or category hub key.
    pub item_id: Uuid,
    /// The product or category name, where the warehouse knows it.
    pub item_name: Option<String>,
    /// What the datamart holds.
    pub counted: i32,
    /// What the Data Vault says it should hold.
    pub recounted: i32,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<8} user {} item {} ({}): counter {} != recount {}",
            self.datamart.as_str(),
            self.user_id,
            self.item_id,
            self.item_name.as_deref().unwrap_or("?"),
            self.counted,
            self.recounted
        )
    }
}

/// The counters that differ from the recount: how many in all, and the first of them
/// (products first, in a stable order).
pub type Differences = vault_runtime::Found<Difference>;

/// One row of the query: the total, and a difference unless there is none to show.
#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = Nullable<Text>)]
    counter: Option<String>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    user_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    item_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    item_name: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    counted: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    recounted: Option<i32>,
}

/// How many counters differ from the recount, and the first `limit` of them (products first,
/// in a stable order); a total of 0 when the datamarts are exact.
pub async fn differences(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> diesel::QueryResult<Differences> {
    vault_runtime::first_and_total(
        conn,
        (
            "cdm.v_counter_differences",
            "counter, user_id, item_id, item_name, counted, recounted",
            "counter DESC, user_id, item_id",
        ),
        limit,
        |row: &Row| row.total,
        |row| {
            Some(Difference {
                datamart: if row.counter? == "category" {
                    Datamart::Category
                } else {
                    Datamart::Product
                },
                user_id: row.user_id?,
                item_id: row.item_id?,
                item_name: row.item_name,
                counted: row.counted?,
                recounted: row.recounted?,
            })
        },
    )
    .await
}

/// How often the check looks whether the monitor has seen the group without lag.
const POLL: Duration = Duration::from_secs(1);

/// The share of one Postgres core the periodic check may take: after a check that took `t`,
/// the next waits at least `t × CHECK_BUDGET_FACTOR` from its start. The recount reads the
/// whole Data Vault, so its cost grows with the warehouse (1.4 s at 30,000 orders, 50 s at
/// 1 M, 270 s at 5 M on a 2-core machine, docs/performance.md "The counter check"); a fixed
/// interval would have it take a core for good past a million orders and slow the stages
/// sharing the database. Declared beside `VERIFY_INTERVAL_SECONDS`, whose description gives it.
const CHECK_BUDGET_FACTOR: u32 = vault_runtime::variables::VERIFY_BUDGET_FACTOR;

/// When the periodic check runs: right after a look of the monitor that saw the group without
/// lag (mid-stream, counters trail the Data Vault by the events still on their way), at most
/// once per look, at most once every `every`, and no sooner after the last one than
/// [`CHECK_BUDGET_FACTOR`] times what it took.
#[derive(Debug)]
struct Schedule {
    every: Duration,
    /// The monitor's last look acted on, so that one look starts one check at most.
    acted_on: Option<Instant>,
    /// When the last check started.
    checked: Option<Instant>,
    /// What the last check took.
    took: Duration,
}

impl Schedule {
    fn new(every: Duration) -> Self {
        Self {
            every,
            acted_on: None,
            checked: None,
            took: Duration::ZERO,
        }
    }

    /// The time from one check's start to the next one's, at the least.
    fn gap(&self) -> Duration {
        self.every.max(self.took * CHECK_BUDGET_FACTOR)
    }

    /// Records what the check started by the last `due` took.
    fn ended(&mut self, took: Duration) {
        self.took = took;
    }

    /// Whether to check now, given the monitor's last look (the lag and when it looked).
    fn due(&mut self, look: Option<(i64, Instant)>, now: Instant) -> bool {
        let Some((lag, looked)) = look else {
            return false;
        };
        if self.acted_on.is_some_and(|before| looked <= before) {
            return false;
        }
        self.acted_on = Some(looked);
        let due = lag == 0
            && self
                .checked
                .is_none_or(|at| now.duration_since(at) >= self.gap());
        if due {
            self.checked = Some(now);
        }
        due
    }
}

/// Compares the datamarts with the recount on the `Schedule` of `every`, until `stop`, and
/// exports how many counters differ with the time of the check; until a check has ended,
/// neither is exported (absent, not 0). `pool` is the check's own (see [`check_pool`]).
pub async fn check_periodically(
    pool: PgPool,
    status: Arc<Status>,
    metrics: CheckMetrics,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut schedule = Schedule::new(every);
    loop {
        if schedule.due(status.last_look(), Instant::now()) {
            let started = Instant::now();
            check(&pool, &status, &metrics).await;
            schedule.ended(started.elapsed());
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The periodic check's own connection: the recount of a large warehouse runs for minutes,
/// longer than the services' statement limit allows, and must not hold one of the stage's
/// connections meanwhile. Operator limits: no statement limit, a bounded lock wait.
pub fn check_pool(settings: &PostgresSettings) -> PgPool {
    vault_runtime::pg_pool_sized(settings, SessionLimits::OPERATOR, 1)
}

/// One check: how many counters differ to the metrics, the first of them to the log.
async fn check(pool: &PgPool, status: &Status, metrics: &CheckMetrics) {
    let started = Instant::now();
    let differences = match pool.get().await {
        Ok(mut conn) => differences(&mut conn, 1).await.map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    match differences {
        Ok(differences) => {
            tracing::debug!(count = differences.total, took = ?started.elapsed(),
                "Checked the counters against the recount over the Data Vault.");
            if let Some(first) = <[Difference]>::first(&differences.first) {
                tracing::error!(count = differences.total, %first,
                    "Counters differ from the recount over the Data Vault; run `vaultctl verify`.");
            }
            metrics.record(differences.total);
        }
        Err(error) => {
            tracing::warn!(%error, "Cannot check the counters against the recount.");
            status.metrics.error("verify");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_is_absent_until_a_check_ended_then_exported_with_its_time() {
        let metrics = CheckMetrics::default();
        let mut registry =
            Registry::with_labels([("service".into(), "service-cdm".into())].into_iter());
        metrics.register(registry.sub_registry_with_prefix("vaultline"));
        let text = || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
            text
        };
        assert!(!text().contains("vaultline_recount"), "{}", text());
        metrics.record(512);
        let after = text();
        assert!(
            after.contains("vaultline_recount_differences{service=\"service-cdm\"} 512\n"),
            "{after}"
        );
        assert!(
            after.contains(
                "vaultline_recount_last_checked_timestamp_seconds{service=\"service-cdm\"} 1"
            ),
            "{after}"
        );
    }

    #[test]
    fn a_difference_reads_as_one_line_naming_both_values() {
        let difference = Difference {
            datamart: Datamart::Category,
            user_id: Uuid::nil(),
            item_id: Uuid::nil(),
            item_name: Some("Пицца".into()),
            counted: 2,
            recounted: 1,
        };
        let line = difference.to_string();
        assert!(line.starts_with("category"), "{line}");
        assert!(line.contains("(Пицца)"), "{line}");
        assert!(line.ends_with("counter 2 != recount 1"), "{line}");
    }

    #[test]
    fn the_check_waits_for_a_look_without_lag_and_runs_once_per_look_and_interval() {
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let mut schedule = Schedule::new(Duration::from_secs(60));
        assert!(
            !schedule.due(None, at(0)),
            "before the monitor's first look"
        );
        assert!(!schedule.due(Some((5, at(1))), at(1)), "lag");
        assert!(schedule.due(Some((0, at(3))), at(3)), "no lag");
        assert!(
            !schedule.due(Some((0, at(3))), at(4)),
            "the same look again"
        );
        assert!(
            !schedule.due(Some((0, at(5))), at(5)),
            "within the interval"
        );
        assert!(!schedule.due(Some((2, at(63))), at(63)), "lag again");
        assert!(
            schedule.due(Some((0, at(65))), at(65)),
            "the interval has passed"
        );
    }

    #[test]
    fn a_long_check_spaces_the_next_by_its_budget() {
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let mut schedule = Schedule::new(Duration::from_secs(60));
        assert!(schedule.due(Some((0, at(0))), at(0)));
        schedule.ended(Duration::from_secs(10));
        assert_eq!(schedule.gap(), Duration::from_secs(200));
        assert!(
            !schedule.due(Some((0, at(100))), at(100)),
            "the interval has passed, the budget has not"
        );
        assert!(schedule.due(Some((0, at(200))), at(200)), "both have");
        schedule.ended(Duration::from_secs(1));
        assert_eq!(
            schedule.gap(),
            Duration::from_secs(60),
            "a short check: the interval"
        );
        assert!(schedule.due(Some((0, at(260))), at(260)));
    }
}
