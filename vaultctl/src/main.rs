//! vaultctl: Vaultline's operator commands.
//!
//! ```text
//! vaultctl dead-letters list [SERVICE]             pending dead letters, oldest first
//! vaultctl dead-letters replay [SERVICE] [ID ...]  republish them to their source topics
//! vaultctl lag [--wait SECONDS]                    consumer lag of the pipeline's groups
//! vaultctl verify [--limit N]                      counters and BI rows against the vault
//! vaultctl rewind --service S --from T|N|P:N,...   rewind a service's group to reprocess
//!          [--dry-run] [--wait SECONDS] [--allow-skip] [--group G] [--topic T]
//! vaultctl migrate                                 apply the schema and grant the service roles
//! vaultctl tags list                               the tag rules, holders, whether applied
//! vaultctl tags apply FILE [--prune] [--dry-run]   make the rules what FILE says
//! vaultctl summary [--push JSON] [--seconds S] [--json]   what a run did (scripts/run.sh)
//! ```
//! `vaultctl --help` and `vaultctl COMMAND --help` say the same at length; both, and
//! `--version`, work without any setting. A SERVICE is `stg`, `dds` or `cdm`, or its full name
//! (`service-stg`, ...): [`service::Service`].
//!
//! - `dead-letters` ([`dead_letters`]): `list` shows the oldest 1000 and how many there are;
//!   `replay` republishes them (all, one service's, or the given ids) and marks them replayed.
//! - `lag` ([`lag`]) looks at the pipeline's groups and topics (`PIPELINE_<STAGE>_GROUP` and
//!   `_TOPIC`, by default `service-stg` on `stg_service`, ...); with `--wait` it polls until
//!   each hop, in pipeline order, has committed everything on its topic, and fails when the
//!   time runs out.
//! - `verify` ([`verify`]) prints the counters that differ from the recount over the Data
//!   Vault (docs/contract.md §3.3), then the point-in-time rows the BI views read that differ
//!   from its history (docs/bi.md), the first few of each (`--limit N`: the first N) and how
//!   many more there are, and exits 1 when there is any, 0 when both are exact.
//! - `rewind` ([`rewind`]; `replay`, its old name, still works) rewinds the consumer group of a
//!   service (default group and topic names unless `--group`/`--topic` say otherwise) to an
//!   RFC 3339 timestamp, an offset for every partition or offsets per partition, after showing
//!   what moves; it refuses while the group has active members (stop the service first, or
//!   `--wait`), and refuses to move past messages the group has not processed unless
//!   `--allow-skip`. See vault-runtime/src/rewind.rs. (Not to be confused with `dead-letters
//!   replay`, which republishes messages.)
//! - `migrate` ([`migrate`]) is the deployment's one-shot step (a compose service, a
//!   Kubernetes Job): run as the owner of the schemas, it applies pending migrations, then
//!   creates and grants the least-privilege role of each service named by `PG_STG_USER`,
//!   `PG_DDS_USER`, `PG_CDM_USER` (passwords from `PG_STG_PASSWORD`, ...), whose services start
//!   with `MIGRATIONS=verify`.
//! - `tags apply` ([`tags`]) reads a rules file (docs/tags.md), shows what changes and writes it
//!   in one transaction; service-cdm recomputes the affected users within seconds. Rules not in
//!   the file are kept unless `--prune`.
//! - `summary` ([`summary`]) is what `scripts/run.sh` prints at the end: the orders a push
//!   (datagen's answer, `--push`) sent and how far they came, the counter check, the pending
//!   dead letters and the top categories; `--json` for a program.
//!
//! Connection settings come from the environment, as for the services (`DATABASE_URL` or
//! `PG_WAREHOUSE_*`, `KAFKA_BOOTSTRAP_SERVERS` or `KAFKA_HOST`/`KAFKA_PORT`, ...), read only
//! when a command runs.
//!
//! Exit codes ([`EXIT_CODES`]): 0 done; 1 the command failed or found a problem (`verify`
//! found differences, `lag --wait` ran out of time, `rewind` refused, a database or broker
//! error); 2 a usage error or missing or invalid connection settings.

mod dead_letters;
mod lag;
mod migrate;
mod rewind;
mod service;
mod summary;
mod tags;
mod verify;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use vault_runtime::{ConfigError, KafkaSettings, ProcessEnv, Profile, Settings};
// Tag rules and the counter check are service-cdm's; vaultctl reads them from here only.
use service_cdm::{rules, verify as counter_check};

/// What the exit code says, for `--help` (and the module doc above).
const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  the command failed or found a problem: verify found differences, lag --wait ran out of
     time, rewind refused, a database or broker error
  2  a usage error, or missing or invalid connection settings

Connection settings come from the environment, as for the services (DATABASE_URL or
PG_WAREHOUSE_*, KAFKA_BOOTSTRAP_SERVERS or KAFKA_HOST/KAFKA_PORT, ...).";

/// vaultctl's own profile: no topics, no HTTP server, no Redis.
const PROFILE: Profile = Profile::tool("vaultctl");

/// Vaultline's operator commands.
#[derive(Debug, Parser)]
#[command(name = "vaultctl", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dead letters: the messages a service could not process, kept with their reasons.
    #[command(subcommand)]
    DeadLetters(dead_letters::Command),
    /// The consumer lag of each hop of the pipeline.
    Lag(lag::Args),
    /// The datamart counters against a recount from the Data Vault, and the point-in-time rows
    /// the BI views read against its history; exits 1 when any differs.
    Verify(verify::Args),
    /// Rewinds a service's consumer group so that it reprocesses from a point in time or an
    /// offset once it restarts.
    #[command(alias = "replay")]
    Rewind(rewind::Args),
    /// Applies pending migrations and grants the service roles (as the schemas' owner).
    Migrate,
    /// Tag rules: list them, or make them what a rules file says.
    #[command(subcommand)]
    Tags(tags::Command),
    /// What a run did: the orders pushed and how far they came, the counter check, pending
    /// dead letters, the top categories.
    Summary(summary::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(problem) = cli.command.check() {
        Cli::command()
            .error(clap::error::ErrorKind::ValueValidation, problem)
            .exit();
    }
    match cli.command.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vaultctl: {error:#}");
            if error.is::<ConfigError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

impl Command {
    /// What clap cannot check by itself.
    fn check(&self) -> Result<(), String> {
        match self {
            Self::DeadLetters(command) => command.check(),
            _ => Ok(()),
        }
    }

    async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::DeadLetters(command) => command.run(&settings()?).await,
            Self::Lag(args) => args.run(&settings()?).await,
            Self::Verify(args) => args.run(&settings()?).await,
            // Only Kafka is involved: no database settings needed.
            Self::Rewind(args) => args.run(&KafkaSettings::from(&ProcessEnv, PROFILE)?).await,
            Self::Migrate => migrate::run(&settings()?).await,
            Self::Tags(command) => command.run(&settings()?).await,
            Self::Summary(args) => args.run(&settings()?).await,
        }
    }
}

/// The connection settings, read when a command runs (never for `--help`).
fn settings() -> Result<Settings, ConfigError> {
    Settings::from(&ProcessEnv, PROFILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_names_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(help.contains("rewind"), "{help}");
        // The old name of `rewind` still parses, but is not offered.
        assert!(!help.contains("replay"), "{help}");
        assert!(Cli::try_parse_from(["vaultctl", "replay", "--help"])
            .is_err_and(|e| e.kind() == clap::error::ErrorKind::DisplayHelp));
    }
}
