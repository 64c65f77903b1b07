//! `vaultctl lag [--wait SECONDS]`: the consumer lag of each hop of the pipeline.

use std::time::Duration;

use vault_runtime::{consumer_lag, wait_caught_up, Settings};

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit code 1 when --wait runs out of time.")]
pub struct Args {
    /// Wait until each hop, in pipeline order, has committed everything on its topic; fail
    /// after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    wait: Option<u64>,
}

impl Args {
    /// The lag of each hop of the pipeline (`PIPELINE_<STAGE>_GROUP` / `_TOPIC`, by default
    /// the default names), or, with `--wait`, each hop in turn until it has caught up.
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let hops: Vec<(&str, &str)> = settings
            .pipeline
            .iter()
            .map(|hop| (hop.group.as_str(), hop.topic.as_str()))
            .collect();
        match self.wait.map(Duration::from_secs) {
            None => {
                for (group, topic) in hops {
                    let lag = consumer_lag(&settings.kafka, group, topic).await?;
                    println!("{group:<12} {topic:<12} lag {lag}");
                }
                Ok(())
            }
            Some(limit) => {
                wait_caught_up(&settings.kafka, &hops, limit, |group, topic| {
                    println!("{group:<12} {topic:<12} caught up");
                })
                .await
            }
        }
    }
}
