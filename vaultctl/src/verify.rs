//! `vaultctl verify [--limit N]`: the datamart counters against a recount from the Data Vault
//! (docs/contract.md §3.3).

use vault_runtime::{pg_pool, SessionLimits, Settings};

use crate::counter_check;

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit code 1 when any counter differs from the recount.")]
pub struct Args {
    /// How many differences to show (the first ones); all are counted.
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(i64).range(0..))]
    limit: i64,
}

impl Args {
    /// Prints the first `limit` counters that differ from the recount and how many more
    /// there are; an error (exit 1) when any differs.
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let pool = pg_pool(&settings.postgres, SessionLimits::OPERATOR);
        let mut conn = pool.get().await?;
        let differences = counter_check::differences(&mut conn, self.limit).await?;
        for difference in &differences.first {
            println!("{difference}");
        }
        let more = differences.total - differences.first.len() as i64;
        if more > 0 {
            println!("... and {more} more (`vaultctl verify --limit N` shows N)");
        }
        if differences.is_empty() {
            println!("counters match the recount from the Data Vault");
            Ok(())
        } else {
            anyhow::bail!(
                "{} counter(s) differ from the recount from the Data Vault",
                differences.total
            )
        }
    }
}
