//! `vaultctl dead-letters list|replay`: the messages a service could not process, kept in
//! `ops.dead_letters` with their reasons (docs/failures.md), and their republishing.

use clap::{Subcommand, ValueEnum as _};
use vault_runtime::{
    count_pending_dead_letters, pending_dead_letters, pg_pool, producer, replay_dead_letters,
    SessionLimits, Settings,
};

use crate::service::Service;

/// The most dead letters `dead-letters list` shows (the oldest); it says how many there are.
const LIST_LIMIT: i64 = 1000;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pending dead letters, oldest first (the first 1000), and how many there are.
    List {
        /// Only this service's (stg, dds, cdm; or service-stg, ...).
        #[arg(value_enum)]
        service: Option<Service>,
    },
    /// Republishes pending dead letters to their source topics and marks them replayed; the
    /// owning service processes them afresh.
    #[command(override_usage = "vaultctl dead-letters replay [SERVICE] [ID]...")]
    Replay {
        /// An optional service first (stg, dds, cdm; or service-stg, ...), then the ids of the
        /// dead letters to replay; none: all pending ones (of that service).
        #[arg(value_name = "SERVICE|ID", value_parser = selector)]
        selectors: Vec<Selector>,
    },
}

/// One argument of `dead-letters replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    Service(Service),
    Id(i64),
}

fn selector(text: &str) -> Result<Selector, String> {
    if let Ok(id) = text.parse() {
        return Ok(Selector::Id(id));
    }
    Service::from_str(text, false)
        .map(Selector::Service)
        .map_err(|_| {
            format!("`{text}` is neither a service (stg, dds, cdm) nor a dead letter's id")
        })
}

impl Command {
    /// A service may only come first, and once.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Self::Replay { selectors } => match selectors.iter().skip(1).find_map(|s| match s {
                Selector::Service(service) => Some(service),
                Selector::Id(_) => None,
            }) {
                Some(service) => Err(format!(
                    "{} is a service: name it first, then the ids",
                    service.name()
                )),
                None => Ok(()),
            },
            Self::List { .. } => Ok(()),
        }
    }

    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        match self {
            Self::List { service } => list(settings, service).await,
            Self::Replay { selectors } => {
                let (service, ids) = match selectors.split_first() {
                    Some((Selector::Service(service), ids)) => (Some(*service), ids),
                    _ => (None, selectors.as_slice()),
                };
                let ids: Vec<i64> = ids
                    .iter()
                    .filter_map(|s| match s {
                        Selector::Id(id) => Some(*id),
                        Selector::Service(_) => None,
                    })
                    .collect();
                replay(settings, service, &ids).await
            }
        }
    }
}

async fn list(settings: &Settings, service: Option<Service>) -> anyhow::Result<()> {
    let service = service.map(Service::name);
    let pool = pg_pool(&settings.postgres, SessionLimits::OPERATOR);
    let mut conn = pool.get().await?;
    let letters = pending_dead_letters(&mut conn, service, None, 0, i64::MAX, LIST_LIMIT).await?;
    let total = count_pending_dead_letters(&mut conn, service).await?;
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

async fn replay(settings: &Settings, service: Option<Service>, ids: &[i64]) -> anyhow::Result<()> {
    let pool = pg_pool(&settings.postgres, SessionLimits::OPERATOR);
    let producer = producer(&settings.kafka)?;
    let only = (!ids.is_empty()).then_some(ids);
    let replayed = replay_dead_letters(&pool, &producer, service.map(Service::name), only).await?;
    println!("replayed {replayed} dead letter(s)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_takes_an_optional_service_then_ids() {
        assert_eq!(selector("12"), Ok(Selector::Id(12)));
        assert_eq!(selector("stg"), Ok(Selector::Service(Service::Stg)));
        assert_eq!(selector("service-dds"), Ok(Selector::Service(Service::Dds)));
        assert!(selector("datagen").is_err());
        let replay = |selectors| Command::Replay { selectors };
        assert!(
            replay(vec![Selector::Service(Service::Stg), Selector::Id(1)])
                .check()
                .is_ok()
        );
        assert!(
            replay(vec![Selector::Id(1), Selector::Service(Service::Stg)])
                .check()
                .is_err()
        );
    }
}
