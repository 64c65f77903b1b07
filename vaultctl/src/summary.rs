//! `vaultctl summary`: what a run did, as `scripts/run.sh` prints it at the end. The orders of
//! a push (datagen's answer to `POST /push`, given with `--push`) and how far they came, the
//! counter check (the same recount as `vaultctl verify`), the pending dead letters and the
//! top categories; `--json` for a program.

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use vault_runtime::{count_pending_dead_letters, pg_pool, SessionLimits, Settings};

use crate::counter_check;

/// How many categories the summary lists.
const TOP_CATEGORIES: i64 = 5;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Datagen's answer to `POST /push` (its JSON): the summary counts those orders.
    /// Without it, every order in the warehouse.
    #[arg(long, value_name = "JSON", value_parser = push)]
    push: Option<Push>,
    /// How long the pipeline took to take the push in, for the rate.
    #[arg(long, value_name = "SECONDS")]
    seconds: Option<f64>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The part of datagen's answer to `POST /push` that the summary reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct Push {
    /// The orders pushed (their first versions).
    #[serde(rename(deserialize = "messages_pushed"))]
    pub orders: i64,
    pub first_order_id: i64,
    pub last_order_id: i64,
    /// The later versions of some of them, sent as extra messages.
    pub later_versions: i64,
}

fn push(json: &str) -> Result<Push, String> {
    serde_json::from_str(json).map_err(|e| format!("not datagen's answer to POST /push: {e}"))
}

/// What the summary reports.
#[derive(Debug, Serialize)]
struct Summary {
    push: Option<Push>,
    /// Orders of the push (without `--push`: all) in the staging layer.
    orders_in_stg: i64,
    /// Of those, the ones whose current version is counted in the datamarts.
    orders_through_to_cdm: i64,
    seconds: Option<f64>,
    /// Orders of the push per second, end to end.
    orders_per_second: Option<f64>,
    /// Counters that differ from the recount over the Data Vault (`vaultctl verify`).
    counter_differences: i64,
    dead_letters_pending: i64,
    /// CLOSED orders per category, all users, the most first.
    top_categories: Vec<Category>,
}

#[derive(Debug, QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(Debug, Serialize, QueryableByName)]
struct Category {
    #[diesel(sql_type = Text)]
    category: String,
    #[diesel(sql_type = BigInt)]
    orders: i64,
}

impl Args {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let pool = pg_pool(&settings.postgres, SessionLimits::OPERATOR);
        let mut conn = pool.get().await?;
        let summary = summary(&mut conn, self.push, self.seconds).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            print!("{}", text(&summary));
        }
        Ok(())
    }
}

async fn summary(
    conn: &mut AsyncPgConnection,
    push: Option<Push>,
    seconds: Option<f64>,
) -> anyhow::Result<Summary> {
    let first = push.map(|p| p.first_order_id);
    let last = push.map(|p| p.last_order_id);
    let orders_in_stg = diesel::sql_query(
        "SELECT count(*) AS count FROM stg.order_events \
         WHERE $1::bigint IS NULL OR object_id BETWEEN $1 AND $2",
    )
    .bind::<Nullable<BigInt>, _>(first)
    .bind::<Nullable<BigInt>, _>(last)
    .get_result::<Count>(conn)
    .await?
    .count;
    // Through to cdm: the datamarts counted the version the Data Vault holds as current.
    let orders_through_to_cdm = diesel::sql_query(
        "SELECT count(*) AS count FROM dds.order_load_state d JOIN cdm.order_state c \
           ON c.order_id = d.h_order_pk AND c.update_ts = d.update_ts \
         WHERE $1::bigint IS NULL OR d.order_id BETWEEN $1 AND $2",
    )
    .bind::<Nullable<BigInt>, _>(first)
    .bind::<Nullable<BigInt>, _>(last)
    .get_result::<Count>(conn)
    .await?
    .count;
    let counter_differences = counter_check::differences(conn, 0).await?.total;
    let dead_letters_pending = count_pending_dead_letters(conn, None).await?;
    let top_categories = diesel::sql_query(
        "SELECT CASE WHEN category_name = '' THEN '(no category)' ELSE category_name END \
                AS category, sum(order_cnt)::bigint AS orders \
         FROM cdm.user_category_counters GROUP BY category_name ORDER BY 2 DESC, 1 LIMIT $1",
    )
    .bind::<BigInt, _>(TOP_CATEGORIES)
    .load(conn)
    .await?;
    let orders_per_second = push
        .zip(seconds)
        .map(|(push, seconds)| push.orders as f64 / if seconds > 0.0 { seconds } else { 1.0 });
    Ok(Summary {
        push,
        orders_in_stg,
        orders_through_to_cdm,
        seconds,
        orders_per_second,
        counter_differences,
        dead_letters_pending,
        top_categories,
    })
}

fn text(s: &Summary) -> String {
    let mut out = String::from("Vaultline run summary\n");
    let mut line = |label: &str, value: String| out.push_str(&format!("  {label:<22} {value}\n"));
    if let Some(push) = &s.push {
        line(
            "orders pushed",
            format!(
                "{} (ids {}..{}, plus {} later versions)",
                push.orders, push.first_order_id, push.last_order_id, push.later_versions
            ),
        );
    }
    line("orders in stg", s.orders_in_stg.to_string());
    line("orders through to cdm", s.orders_through_to_cdm.to_string());
    if let Some(seconds) = s.seconds {
        let rate = s
            .orders_per_second
            .map(|rate| format!(" ({rate:.0} orders/s end to end)"))
            .unwrap_or_default();
        line("time to catch up", format!("{seconds:.1}s{rate}"));
    }
    line(
        "counters vs recount",
        format!("{} mismatching rows", s.counter_differences),
    );
    line("dead letters pending", s.dead_letters_pending.to_string());
    out.push_str("\nTop categories (CLOSED orders, all users):\n");
    let width = s
        .top_categories
        .iter()
        .map(|c| c.category.chars().count())
        .max()
        .unwrap_or(0)
        .max("category".len());
    out.push_str(&format!("  {:<width$}  {:>8}\n", "category", "orders"));
    for c in &s.top_categories {
        out.push_str(&format!("  {:<width$}  {:>8}\n", c.category, c.orders));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_push_is_read_from_datagens_answer() {
        let answer = r#"{"status":"success","messages_pushed":100,"later_versions":7,"first_order_id":1001,"last_order_id":1100}"#;
        assert_eq!(
            push(answer),
            Ok(Push {
                orders: 100,
                first_order_id: 1001,
                last_order_id: 1100,
                later_versions: 7
            })
        );
        assert!(push(r#"{"status":"error"}"#).is_err());
    }

    #[test]
    fn the_text_says_what_run_sh_said() {
        let summary = Summary {
            push: Some(Push {
                orders: 100,
                first_order_id: 1,
                last_order_id: 100,
                later_versions: 7,
            }),
            orders_in_stg: 100,
            orders_through_to_cdm: 99,
            seconds: Some(2.0),
            orders_per_second: Some(50.0),
            counter_differences: 0,
            dead_letters_pending: 1,
            top_categories: vec![Category {
                category: "Pizza".into(),
                orders: 12,
            }],
        };
        let text = text(&summary);
        for line in [
            "  orders pushed          100 (ids 1..100, plus 7 later versions)\n",
            "  orders through to cdm  99\n",
            "  time to catch up       2.0s (50 orders/s end to end)\n",
            "  counters vs recount    0 mismatching rows\n",
            "  dead letters pending   1\n",
            "  Pizza           12\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }
}
