//! `vaultctl tags list|apply`: tag rules as a rules file states them (docs/tags.md).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use vault_runtime::{pg_pool, SessionLimits, Settings};

use crate::rules;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The tag rules, their holders, and whether each is applied.
    List,
    /// Makes the rules what FILE says, in one transaction; service-cdm recomputes the
    /// affected users within seconds.
    Apply {
        /// A rules file (docs/tags.md).
        file: PathBuf,
        /// Delete the rules the file does not state (kept otherwise).
        #[arg(long)]
        prune: bool,
        /// Show what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

impl Command {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        match self {
            Self::List => list(settings).await,
            Self::Apply {
                file,
                prune,
                dry_run,
            } => apply(settings, &file, prune, dry_run).await,
        }
    }
}

async fn list(settings: &Settings) -> anyhow::Result<()> {
    let pool = pg_pool(&settings.postgres, SessionLimits::OPERATOR);
    let mut conn = pool.get().await?;
    let rules = rules::list(&mut conn).await?;
    println!(
        "{:<24} {:<9} {:<26} {:>9} {:>8}  STATE",
        "TAG", "SCOPE", "TARGET", "THRESHOLD", "HOLDERS"
    );
    for held in &rules {
        let (status, r) = (&held.status, &held.status.rule);
        let state = match (r.enabled, status.applied, status.took_ms) {
            (false, true, _) => "disabled".to_owned(),
            (_, false, _) => "recomputing".to_owned(),
            (true, true, Some(ms)) => format!("applied (recomputed in {ms} ms)"),
            (true, true, None) => "applied".to_owned(),
        };
        println!(
            "{:<24} {:<9} {:<26} {:>9} {:>8}  {state}",
            r.tag,
            r.scope,
            format!("{:?}", r.target),
            r.threshold,
            held.holders
        );
    }
    println!("{} rule(s)", rules.len());
    Ok(())
}

async fn apply(
    settings: &Settings,
    file: &std::path::Path,
    prune: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    let shown = file.display();
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {shown}"))?;
    let specs = vault_core::tags::parse_rules_file(&text).with_context(|| shown.to_string())?;
    let pool = pg_pool(&settings.postgres, SessionLimits::OPERATOR);
    let mut conn = pool.get().await?;
    let plan = rules::apply(&mut conn, specs, prune, dry_run).await?;
    print!("{plan}");
    if dry_run {
        println!("dry run: nothing written");
    } else if !plan.is_empty() {
        println!("written; service-cdm recomputes the affected users within seconds");
    }
    Ok(())
}
