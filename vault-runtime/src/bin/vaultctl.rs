//! vaultctl: operator commands.
//!
//! ```text
//! vaultctl dead-letters list [SERVICE]             pending dead letters, oldest first
//! vaultctl dead-letters replay [SERVICE] [ID ...]  republish them to their source topics
//! vaultctl lag [--wait SECONDS]                    consumer lag of the pipeline's groups
//! vaultctl migrate                                 apply the schema and grant the service roles
//! ```
//! `migrate` is the deployment's one-shot step (a compose service, a Kubernetes Job): run as
//! the owner of the schemas, it applies pending migrations, then creates and grants the
//! least-privilege role of each service named by `PG_STG_USER`, `PG_DDS_USER`, `PG_CDM_USER`
//! (passwords from `PG_STG_PASSWORD`, ...), whose services start with `MIGRATIONS=verify`.
//! `lag` looks at the default groups and topics (`service-stg` on `stg_service`, ...); with
//! `--wait` it polls until each hop, in pipeline order, has committed everything on its
//! topic, and fails when the time runs out.
//! Connection settings come from the environment, as for the services (`DATABASE_URL` or
//! `PG_WAREHOUSE_*`, `KAFKA_BOOTSTRAP_SERVERS` or `KAFKA_HOST`/`KAFKA_PORT`, ...).

use std::process::ExitCode;
use std::time::Duration;

use vault_migrations::roles::{Layer, ServiceRole};
use vault_runtime::config::{Env, KafkaSettings, ProcessEnv, Profile, Settings};
use vault_runtime::{dead_letter, kafka, stores};

const PROFILE: Profile = Profile {
    service: "vaultctl",
    source_topic: None,
    destination_topic: None,
    consumer_group: "vaultctl",
    http_port: 0,
    uses_redis: false,
};

const USAGE: &str = "usage: vaultctl dead-letters list [SERVICE]\n       vaultctl dead-letters replay [SERVICE] [ID ...]\n       vaultctl lag [--wait SECONDS]\n       vaultctl migrate";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
        ["lag"] => lag(&settings.kafka, None).await,
        ["migrate"] => migrate(&settings).await,
        ["lag", "--wait", seconds] => match seconds.parse::<u64>() {
            Ok(seconds) => lag(&settings.kafka, Some(Duration::from_secs(seconds))).await,
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

async fn list(settings: &Settings, service: Option<&str>) -> anyhow::Result<()> {
    let pool = stores::pg_pool(&settings.postgres);
    let mut conn = pool.get().await?;
    let letters = dead_letter::pending(&mut conn, service, 1000).await?;
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
    println!("{} pending", letters.len());
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
    let pool = stores::pg_pool(&settings.postgres);
    let producer = kafka::producer(kafka_settings)?;
    let only = (!ids.is_empty()).then_some(ids.as_slice());
    let replayed = dead_letter::replay(&pool, &producer, service, only).await?;
    println!("replayed {replayed} dead letter(s)");
    Ok(())
}

async fn lag(kafka: &KafkaSettings, wait: Option<Duration>) -> anyhow::Result<()> {
    match wait {
        None => {
            for (group, topic) in kafka::PIPELINE_HOPS {
                let lag = kafka::lag(kafka, group, topic).await?;
                println!("{group:<12} {topic:<12} lag {lag}");
            }
            Ok(())
        }
        Some(limit) => {
            kafka::wait_caught_up(kafka, &kafka::PIPELINE_HOPS, limit, |group, topic| {
                println!("{group:<12} {topic:<12} caught up");
            })
            .await
        }
    }
}

/// Each service's role: the variables naming it and its password.
const SERVICE_ROLES: [(Layer, &str, &str); 3] = [
    (Layer::Stg, "PG_STG_USER", "PG_STG_PASSWORD"),
    (Layer::Dds, "PG_DDS_USER", "PG_DDS_PASSWORD"),
    (Layer::Cdm, "PG_CDM_USER", "PG_CDM_PASSWORD"),
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
