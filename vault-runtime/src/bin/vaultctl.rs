//! vaultctl: operator commands.
//!
//! ```text
//! vaultctl dead-letters list [SERVICE]             pending dead letters, oldest first
//! vaultctl dead-letters replay [SERVICE] [ID ...]  republish them to their source topics
//! vaultctl lag [--wait SECONDS]                    consumer lag of the pipeline's groups
//! vaultctl verify [--limit N]                       counters against a recount from the vault
//! vaultctl replay --service S --from T|N|P:N,...   rewind a service's group to reprocess
//!          [--dry-run] [--wait SECONDS] [--allow-skip] [--group G] [--topic T]
//! vaultctl migrate                                 apply the schema and grant the service roles
//! vaultctl tags list                               the tag rules, holders, whether applied
//! vaultctl tags apply FILE [--prune] [--dry-run]   make the rules what FILE says
//! ```
//! `tags apply` reads a rules file (docs/tags.md), shows what changes and writes it in one
//! transaction; service-cdm recomputes the affected users within seconds. Rules not in the file
//! are kept unless `--prune`.
//! `verify` prints the counters that differ from the recount over the Data Vault (docs/contract.md §3.3),
//! the first few (`--limit N`: the first N) and how many more there are, and exits 1 when there
//! is any, 0 when the datamarts are exact.
//! `migrate` is the deployment's one-shot step (a compose service, a Kubernetes Job): run as
//! the owner of the schemas, it applies pending migrations, then creates and grants the
//! least-privilege role of each service named by `PG_STG_USER`, `PG_DDS_USER`, `PG_CDM_USER`
//! (passwords from `PG_STG_PASSWORD`, ...), whose services start with `MIGRATIONS=verify`.
//! `lag` looks at the pipeline's groups and topics (`PIPELINE_<STAGE>_GROUP` and `_TOPIC`, by
//! default `service-stg` on `stg_service`, ...); with
//! `--wait` it polls until each hop, in pipeline order, has committed everything on its
//! topic, and fails when the time runs out.
//! `replay` rewinds the consumer group of service S (`stg`, `dds`, `cdm`; default group and
//! topic names unless `--group`/`--topic` say otherwise) to an RFC 3339 timestamp, an offset
//! for every partition or offsets per partition, after showing what moves; it refuses while
//! the group has active members (stop the service first, or `--wait`), and refuses to move
//! past messages the group has not processed unless `--allow-skip`. See
//! `vault_runtime::rewind`.
//! Connection settings come from the environment, as for the services (`DATABASE_URL` or
//! `PG_WAREHOUSE_*`, `KAFKA_BOOTSTRAP_SERVERS` or `KAFKA_HOST`/`KAFKA_PORT`, ...).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use vault_migrations::roles::{Layer, ServiceRole};
use vault_runtime::config::variables::{
    PG_CDM_PASSWORD, PG_CDM_USER, PG_DDS_PASSWORD, PG_DDS_USER, PG_STG_PASSWORD, PG_STG_USER,
};
use vault_runtime::config::{Env, KafkaSettings, ProcessEnv, Profile, Settings};
use vault_runtime::{dead_letter, kafka, rewind, rules, stores, verify};

const PROFILE: Profile = Profile {
    service: "vaultctl",
    source_topic: None,
    destination_topic: None,
    consumer_group: "vaultctl",
    http_port: 0,
    uses_redis: false,
};

const USAGE: &str = "usage: vaultctl dead-letters list [SERVICE]\n       vaultctl dead-letters replay [SERVICE] [ID ...]\n       vaultctl lag [--wait SECONDS]\n       vaultctl verify [--limit N]\n       vaultctl migrate\n       vaultctl tags list\n       vaultctl tags apply FILE [--prune] [--dry-run]\n       vaultctl replay --service S --from TIMESTAMP|OFFSET|P:OFFSET,... [--dry-run] [--wait SECONDS] [--allow-skip] [--group G] [--topic T]";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("replay") {
        // Only Kafka is involved: no database settings needed.
        return match KafkaSettings::from(&ProcessEnv, PROFILE) {
            Ok(kafka) => replay_group(&kafka, &args[1..]).await,
            Err(error) => {
                eprintln!("vaultctl: {error}");
                ExitCode::from(2)
            }
        };
    }
    let settings = match Settings::from(&ProcessEnv, PROFILE) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("vaultctl: {error}");
            return ExitCode::from(2);
        }
    };
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["dead-letters", "list", rest @ ..] => list(&settings, rest.first().copied()).await,
        ["dead-letters", "replay", rest @ ..] => replay(&settings, &settings.kafka, rest).await,
        ["lag"] => lag(&settings, None).await,
        ["verify"] => verify(&settings, VERIFY_LIMIT).await,
        ["verify", "--limit", limit] => match limit.parse::<i64>() {
            Ok(limit) if limit >= 0 => verify(&settings, limit).await,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        },
        ["migrate"] => migrate(&settings).await,
        ["tags", "list"] => tags_list(&settings).await,
        ["tags", "apply", file, flags @ ..]
            if flags.iter().all(|f| matches!(*f, "--prune" | "--dry-run")) =>
        {
            tags_apply(
                &settings,
                file,
                flags.contains(&"--prune"),
                flags.contains(&"--dry-run"),
            )
            .await
        }
        ["lag", "--wait", seconds] => match seconds.parse::<u64>() {
            Ok(seconds) => lag(&settings, Some(Duration::from_secs(seconds))).await,
            Err(_) => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vaultctl: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The most dead letters `dead-letters list` shows (the oldest); it says how many there are.
const LIST_LIMIT: i64 = 1000;

async fn list(settings: &Settings, service: Option<&str>) -> anyhow::Result<()> {
    let pool = stores::pg_pool(&settings.postgres, stores::SessionLimits::OPERATOR);
    let mut conn = pool.get().await?;
    let letters = dead_letter::pending(&mut conn, service, None, 0, i64::MAX, LIST_LIMIT).await?;
    let total = dead_letter::count_pending(&mut conn, service).await?;
    println!(
        "{:>8}  {:<12} {:<24} {:<22} REASON",
        "ID", "SERVICE", "SOURCE", "KIND"
    );
    for l in &letters {
        let source = format!("{}/{}@{}", l.topic, l.partition, l.offset);
        println!(
            "{:>8}  {:<12} {:<24} {:<22} {}",
            l.id, l.service, source, l.error_kind, l.reason
        );
    }
    if total > letters.len() as i64 {
        println!("{total} pending; the oldest {} shown", letters.len());
    } else {
        println!("{total} pending");
    }
    Ok(())
}

async fn replay(
    settings: &Settings,
    kafka_settings: &KafkaSettings,
    rest: &[&str],
) -> anyhow::Result<()> {
    let (service, ids): (Option<&str>, Vec<i64>) = match rest.split_first() {
        Some((first, tail)) if first.parse::<i64>().is_err() => (
            Some(*first),
            tail.iter().map(|id| id.parse()).collect::<Result<_, _>>()?,
        ),
        _ => (
            None,
            rest.iter().map(|id| id.parse()).collect::<Result<_, _>>()?,
        ),
    };
    let pool = stores::pg_pool(&settings.postgres, stores::SessionLimits::OPERATOR);
    let producer = kafka::producer(kafka_settings)?;
    let only = (!ids.is_empty()).then_some(ids.as_slice());
    let replayed = dead_letter::replay(&pool, &producer, service, only).await?;
    println!("replayed {replayed} dead letter(s)");
    Ok(())
}

/// The lag of each hop of the pipeline (`PIPELINE_<STAGE>_GROUP` / `_TOPIC`, by default the
/// default names), or, with `wait`, each hop in turn until it has caught up.
async fn lag(settings: &Settings, wait: Option<Duration>) -> anyhow::Result<()> {
    let hops: Vec<(&str, &str)> = settings
        .pipeline
        .iter()
        .map(|hop| (hop.group.as_str(), hop.topic.as_str()))
        .collect();
    match wait {
        None => {
            for (group, topic) in hops {
                let lag = kafka::lag(&settings.kafka, group, topic).await?;
                println!("{group:<12} {topic:<12} lag {lag}");
            }
            Ok(())
        }
        Some(limit) => {
            kafka::wait_caught_up(&settings.kafka, &hops, limit, |group, topic| {
                println!("{group:<12} {topic:<12} caught up");
            })
            .await
        }
    }
}

/// Each service's role: the variables naming it and its password.
const SERVICE_ROLES: [(Layer, &str, &str); 3] = [
    (Layer::Stg, PG_STG_USER.name, PG_STG_PASSWORD.name),
    (Layer::Dds, PG_DDS_USER.name, PG_DDS_PASSWORD.name),
    (Layer::Cdm, PG_CDM_USER.name, PG_CDM_PASSWORD.name),
];

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let url = settings.postgres.url.expose();
    let applied = vault_migrations::run(url).await?;
    println!("applied {} migration(s)", applied.len());
    let roles: Vec<ServiceRole> = SERVICE_ROLES
        .into_iter()
        .filter_map(|(layer, user, password)| {
            ProcessEnv.get(user).map(|name| ServiceRole {
                layer,
                name,
                password: ProcessEnv.get(password),
            })
        })
        .collect();
    let names: Vec<&str> = roles.iter().map(|role| role.name.as_str()).collect();
    let names = if names.is_empty() {
        "none (PG_STG_USER, PG_DDS_USER and PG_CDM_USER are unset)".to_owned()
    } else {
        names.join(", ")
    };
    vault_migrations::roles::apply(url, roles).await?;
    println!("service roles granted: {names}");
    Ok(())
}

async fn tags_list(settings: &Settings) -> anyhow::Result<()> {
    let pool = stores::pg_pool(&settings.postgres, stores::SessionLimits::OPERATOR);
    let mut conn = pool.get().await?;
    let rules = rules::list(&mut conn).await?;
    println!(
        "{:<24} {:<9} {:<26} {:>9} {:>8}  STATE",
        "TAG", "SCOPE", "TARGET", "THRESHOLD", "HOLDERS"
    );
    for r in &rules {
        let state = match (r.enabled, r.applied, r.took_ms) {
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
            r.holders
        );
    }
    println!("{} rule(s)", rules.len());
    Ok(())
}

async fn tags_apply(
    settings: &Settings,
    file: &str,
    prune: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
    let specs = vault_core::tags::parse_rules_file(&text).with_context(|| file.to_owned())?;
    let pool = stores::pg_pool(&settings.postgres, stores::SessionLimits::OPERATOR);
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

/// How many differences `verify` prints unless `--limit` says otherwise.
const VERIFY_LIMIT: i64 = 20;

/// Prints the first `limit` counters that differ from the recount and how many more there
/// are; an error (exit 1) when any differs.
async fn verify(settings: &Settings, limit: i64) -> anyhow::Result<()> {
    let pool = stores::pg_pool(&settings.postgres, stores::SessionLimits::OPERATOR);
    let mut conn = pool.get().await?;
    let differences = verify::differences(&mut conn, limit).await?;
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

/// `vaultctl replay ...`: exit 0 when rewound (or planned, with `--dry-run`), 1 when refused
/// or failed, 2 on bad arguments.
async fn replay_group(kafka: &KafkaSettings, args: &[String]) -> ExitCode {
    let request = match replay_request(args) {
        Ok(request) => request,
        Err(problem) => {
            eprintln!("vaultctl replay: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match rewind::replay(kafka, &request, |line| println!("{line}")).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vaultctl replay: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn replay_request(args: &[String]) -> Result<rewind::Request, String> {
    let (mut service, mut from, mut group, mut topic) = (None, None, None, None);
    let (mut dry_run, mut allow_skip, mut wait) = (false, false, None);
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--service" => service = Some(value()?),
            "--from" => from = Some(value()?),
            "--group" => group = Some(value()?),
            "--topic" => topic = Some(value()?),
            "--wait" => {
                let seconds: u64 = value()?
                    .parse()
                    .map_err(|_| "--wait takes whole seconds".to_owned())?;
                wait = Some(Duration::from_secs(seconds));
            }
            "--dry-run" => dry_run = true,
            "--allow-skip" => allow_skip = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let service = service.ok_or("--service is required")?;
    let (default_group, default_topic) = rewind::default_hop(&service)
        .ok_or_else(|| format!("unknown service {service} (stg, dds or cdm)"))?;
    let from = from
        .ok_or("--from is required")?
        .parse()
        .map_err(|e: rewind::StartError| e.to_string())?;
    Ok(rewind::Request {
        group: group.unwrap_or_else(|| default_group.to_owned()),
        topic: topic.unwrap_or_else(|| default_topic.to_owned()),
        from,
        dry_run,
        wait,
        allow_skip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn replay_takes_the_service_defaults_unless_told_otherwise() {
        let request = replay_request(&args("--service dds --from 0:10,2:7 --dry-run"))
            .expect("a valid request");
        assert_eq!(request.group, "service-dds");
        assert_eq!(request.topic, "dds_service");
        assert!(request.dry_run);
        assert_eq!(request.wait, None);

        let request = replay_request(&args(
            "--service stg --from 2026-11-22T15:00:00Z --wait 30 --group g --topic t",
        ))
        .expect("a valid request");
        assert_eq!((request.group.as_str(), request.topic.as_str()), ("g", "t"));
        assert_eq!(request.wait, Some(Duration::from_secs(30)));
        assert!(!request.dry_run);
        assert!(!request.allow_skip);
        assert!(
            replay_request(&args("--service cdm --from 5 --allow-skip"))
                .expect("a valid request")
                .allow_skip
        );
    }

    #[test]
    fn replay_names_what_is_wrong_with_its_arguments() {
        for (line, problem) in [
            ("--from 0", "--service is required"),
            ("--service stg", "--from is required"),
            ("--service datagen --from 0", "unknown service"),
            ("--service stg --from soon", "RFC 3339"),
            ("--service stg --from 0 --wait", "--wait needs a value"),
            ("--service stg --from 0 --wait 1.5", "whole seconds"),
            ("--service stg --from 0 --force", "unknown argument --force"),
        ] {
            let error = replay_request(&args(line)).expect_err(line);
            assert!(error.contains(problem), "{line}: {error}");
        }
    }
}
