//! `vaultctl verify [--limit N]`: the datamart counters against a recount from the Data Vault
//! (docs/contract.md §3.3), and the point-in-time rows the BI views read against the Data
//! Vault's history (docs/bi.md).

use vault_runtime::{pg_pool, SessionLimits, Settings};

use crate::counter_check;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit code 1 when any counter differs from the recount, or any point-in-time \
                  row from the history."
)]
pub struct Args {
    /// How many differences to show of each check (the first ones); all are counted.
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(i64).range(0..))]
    limit: i64,
}

impl Args {
    /// Prints the first `limit` counters that differ from the recount and how many more
    /// there are, then the same of the point-in-time rows; an error (exit 1) when any differs.
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let pool = pg_pool(&settings.postgres, SessionLimits::OPERATOR);
        let mut conn = pool.get().await?;
        let counters = counter_check::differences(&mut conn, self.limit).await?;
        show(&counters.first, counters.total);
        if counters.is_empty() {
            println!("counters match the recount from the Data Vault");
        }
        let points = service_dds::pit_check::differences(&mut conn, self.limit).await?;
        show(&points.first, points.total);
        if points.is_empty() {
            println!("point-in-time rows match the Data Vault's history");
        }
        let problems: Vec<String> = [
            (
                counters.total,
                "counter(s) differ from the recount from the Data Vault",
            ),
            (
                points.total,
                "point-in-time row(s) differ from the Data Vault's history",
            ),
        ]
        .into_iter()
        .filter(|(total, _)| *total > 0)
        .map(|(total, what)| format!("{total} {what}"))
        .collect();
        anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
        Ok(())
    }
}

/// Prints the differences shown and how many more there are.
fn show(first: &[impl std::fmt::Display], total: i64) {
    for difference in first {
        println!("{difference}");
    }
    let more = total - first.len() as i64;
    if more > 0 {
        println!("... and {more} more (`vaultctl verify --limit N` shows N)");
    }
}
