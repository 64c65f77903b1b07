//! `nisshi broker`, as the local stack and the tests start it, on Nisshi's own broker crate.
//!
//! Accepts the options of `nisshi broker` that the stack uses, with the same names and
//! defaults, so `scripts/stack.sh` and the tests start this binary and an installed `nisshi`
//! alike. Anything else is refused with one line, rather than ignored.

use std::process::ExitCode;
use std::time::Duration;

use nisshi_broker::broker::Broker;
use nisshi_broker::coordinator::group::administrator::{Controller, GroupCoordinatorConfig};
use nisshi_broker::{otel, TracingFormat, NODE_ID};
use nisshi_storage::ArcDynStorage;
use tokio::time::Instant;
use url::Url;
use uuid::Uuid;

const USAGE: &str = "usage: nisshi broker [--listener-url URL] [--advertised-listener-url URL] \
    [--storage-engine URL] [--group-initial-rebalance-delay DURATION] [--cluster-id ID]";

/// The options, with `nisshi broker`'s defaults.
#[derive(Debug)]
struct Options {
    cluster_id: String,
    listener: Url,
    advertised_listener: Url,
    storage: Url,
    initial_rebalance_delay: Duration,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    if args.next().as_deref() != Some("broker") {
        return Err(USAGE.into());
    }
    let url = |value: &str| Url::parse(value).map_err(|error| format!("{value}: {error}"));
    let mut options = Options {
        cluster_id: "nisshi_cluster".into(),
        listener: url("tcp://[::]:9092")?,
        advertised_listener: url("tcp://localhost:9092")?,
        storage: url("memory://nisshi/")?,
        initial_rebalance_delay: Duration::from_secs(3),
    };
    while let Some(option) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{option} needs a value\n{USAGE}"))?;
        match option.as_str() {
            "--cluster-id" => options.cluster_id = value,
            "--listener-url" => options.listener = url(&value)?,
            "--advertised-listener-url" => options.advertised_listener = url(&value)?,
            "--storage-engine" => options.storage = storage(&value)?,
            "--group-initial-rebalance-delay" => {
                options.initial_rebalance_delay = humantime::parse_duration(&value)
                    .map_err(|error| format!("{option} {value}: {error}"))?;
            }
            _ => return Err(format!("unknown option {option}\n{USAGE}")),
        }
    }
    Ok(options)
}

/// A storage engine this build has: memory://, and sqlite:// when built with feature `sqlite`.
fn storage(value: &str) -> Result<Url, String> {
    let storage = Url::parse(value).map_err(|error| format!("{value}: {error}"))?;
    match storage.scheme() {
        "memory" => Ok(storage),
        "sqlite" if cfg!(feature = "sqlite") => Ok(storage),
        "sqlite" => Err(format!(
            "--storage-engine {value}: this broker was built without the SQLite engine \
             (build tools/broker with --features sqlite; scripts/stack.sh does when \
             VAULTLINE_BROKER_SQLITE=1, as scripts/test.sh sets)"
        )),
        scheme => Err(format!(
            "--storage-engine {value}: no {scheme}:// engine in this build (memory:// or sqlite://)"
        )),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let _guard = match otel::init(TracingFormat::Text) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: tracing: {error}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let broker = Broker::<Controller<ArcDynStorage>, ArcDynStorage>::builder()
        .node_id(NODE_ID)
        .cluster_id(options.cluster_id)
        .incarnation_id(Uuid::now_v7())
        .advertised_listener(options.advertised_listener)
        .storage(options.storage)
        .listener(options.listener)
        .group_coordinator(GroupCoordinatorConfig {
            initial_rebalance_delay: options.initial_rebalance_delay,
            poll_interval: Duration::from_millis(500),
        })
        .build()
        .await;
    let outcome = match broker {
        Ok(broker) => broker.main(started).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(code) => {
            println!("nisshi broker stopped: {code}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
