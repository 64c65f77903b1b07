//! `vaultctl rewind` (`replay`, its old name, still works): rewinds a service's consumer group
//! so that it reprocesses from a point in time or an offset once it restarts
//! (vault-runtime/src/rewind.rs).

use std::time::Duration;

use vault_runtime::{rewind_group, KafkaSettings, RewindRequest, RewindStart};

use crate::service::Service;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit code 0 when rewound (or planned, with --dry-run), 1 when refused \
                        (active members, unprocessed messages skipped) or failed."
)]
pub struct Args {
    /// The service whose consumer group to rewind (stg, dds, cdm; or service-stg, ...).
    #[arg(long, value_enum)]
    service: Service,
    /// Where to: an RFC 3339 timestamp (the first message at or after it, per partition; on
    /// dds_service and cdm_service a message's timestamp is when the stage before published
    /// it), an offset for every partition, or offsets per partition (0:120,1:80).
    #[arg(long, value_name = "TIMESTAMP|OFFSET|P:OFFSET,...")]
    from: RewindStart,
    /// Show what would move; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Wait this long for the group's members to stop instead of refusing at once.
    #[arg(long, value_name = "SECONDS")]
    wait: Option<u64>,
    /// Allow moving past messages the group has not processed (they are never processed).
    #[arg(long)]
    allow_skip: bool,
    /// The consumer group, when not the service's default one.
    #[arg(long)]
    group: Option<String>,
    /// The topic, when not the service's default source topic.
    #[arg(long)]
    topic: Option<String>,
}

impl Args {
    pub async fn run(self, kafka: &KafkaSettings) -> anyhow::Result<()> {
        rewind_group(kafka, &self.request(), |line| println!("{line}")).await?;
        Ok(())
    }

    fn request(self) -> RewindRequest {
        let (default_group, default_topic) = self.service.default_hop();
        RewindRequest {
            group: self.group.unwrap_or_else(|| default_group.to_owned()),
            topic: self.topic.unwrap_or_else(|| default_topic.to_owned()),
            from: self.from,
            dry_run: self.dry_run,
            wait: self.wait.map(Duration::from_secs),
            allow_skip: self.allow_skip,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `vaultctl rewind` alone, to parse its arguments.
    #[derive(Debug, Parser)]
    struct Rewind {
        #[command(flatten)]
        args: Args,
    }

    fn parse(line: &str) -> Result<RewindRequest, String> {
        Rewind::try_parse_from(std::iter::once("rewind").chain(line.split_whitespace()))
            .map(|rewind| rewind.args.request())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn rewind_takes_the_service_defaults_unless_told_otherwise() {
        let request = parse("--service dds --from 0:10,2:7 --dry-run").expect("a valid request");
        assert_eq!(request.group, "service-dds");
        assert_eq!(request.topic, "dds_service");
        assert!(request.dry_run);
        assert_eq!(request.wait, None);

        let request =
            parse("--service stg --from 2026-11-22T15:00:00Z --wait 30 --group g --topic t")
                .expect("a valid request");
        assert_eq!((request.group.as_str(), request.topic.as_str()), ("g", "t"));
        assert_eq!(request.wait, Some(Duration::from_secs(30)));
        assert!(!request.dry_run);
        assert!(!request.allow_skip);
        assert!(
            parse("--service cdm --from 5 --allow-skip")
                .expect("a valid request")
                .allow_skip
        );
        // The full name means the same service.
        let request = parse("--service service-cdm --from 5").expect("a valid request");
        assert_eq!(request.group, "service-cdm");
    }

    #[test]
    fn rewind_names_what_is_wrong_with_its_arguments() {
        for (line, problem) in [
            ("--from 0", "--service <SERVICE>"),
            ("--service stg", "--from <TIMESTAMP|OFFSET|P:OFFSET,...>"),
            (
                "--service datagen --from 0",
                "invalid value 'datagen' for '--service",
            ),
            ("--service stg --from soon", "RFC 3339"),
            (
                "--service stg --from 0 --wait",
                "a value is required for '--wait",
            ),
            (
                "--service stg --from 0 --wait 1.5",
                "invalid value '1.5' for '--wait",
            ),
            (
                "--service stg --from 0 --force",
                "unexpected argument '--force'",
            ),
        ] {
            let error = parse(line).expect_err(line);
            assert!(error.contains(problem), "{line}: {error}");
        }
    }
}
