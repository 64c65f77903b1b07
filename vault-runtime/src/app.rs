//! The shape every service shares: build from settings, then run until a shutdown future
//! completes (zero-to-production style), so tests can run services in-process.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::watch;

use crate::config::{ConfigError, Migrations, Settings};
use crate::consume::{Backoff, Worker};
use crate::http::{self, Dependency, HealthState};
use crate::kafka;
use crate::metrics::Metrics;
use crate::probe::Probes;
use crate::stage::{Companion, Context, Needs, Output, Routes, Runner, Stage};
use crate::status::{Status, WorkerState};
use crate::stores;

/// A built service: HTTP bound, clients created, nothing running yet.
pub struct Application<S> {
    settings: Settings,
    status: Arc<Status>,
    /// Flushed at shutdown, when the stage publishes.
    producer: Option<FutureProducer>,
    worker: Worker<S>,
    http_addr: SocketAddr,
    health: HealthState,
    listener: std::net::TcpListener,
    routes: Option<Routes>,
    companions: Vec<Companion>,
    stop: (watch::Sender<bool>, watch::Receiver<bool>),
}

impl<S> std::fmt::Debug for Application<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("service", &self.settings.service)
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl<S: Stage> Application<S> {
    /// Creates clients and binds the HTTP port. Connections are made lazily: a dependency
    /// that is down at start is waited for, not a reason to exit. What the stage needs that
    /// the settings do not give (a destination topic, Redis) is a configuration error here.
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = stores::pg_pool(&settings.postgres, stores::SessionLimits::SERVICE);
        let mut dependencies = vec![Dependency::Postgres(pool.clone())];
        let needs = S::Needs::build(&settings, &mut dependencies)?;
        let output = if S::PUBLISHES {
            let topic = settings.kafka.destination_topic.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid configuration: KAFKA_DESTINATION_TOPIC: is required by {}",
                    settings.service
                )
            })?;
            Some(Output {
                producer: kafka::producer(&settings.kafka)?,
                topic,
            })
        } else {
            None
        };
        let source = settings.kafka.source_topic.clone().ok_or_else(|| {
            anyhow::anyhow!("invalid configuration: KAFKA_SOURCE_TOPIC: is required")
        })?;
        let consumer = kafka::consumer(&settings.kafka)?;
        let producer = output.as_ref().map(|output| output.producer.clone());
        let kafka_probe = match &producer {
            Some(producer) => producer.clone(),
            None => kafka::producer(&settings.kafka)?,
        };
        dependencies.push(Dependency::Kafka(kafka_probe));
        let stage = S::new(needs, &settings)?;
        let mut metrics = Metrics::new(settings.service);
        stage.register_metrics(metrics.stage_registry());
        let status = Arc::new(Status::with_metrics(settings.service, metrics));
        let context = Context {
            settings: settings.clone(),
            pool: pool.clone(),
            status: status.clone(),
        };
        let stop = watch::channel(false);
        let routes = stage.routes(&context);
        let companions = stage.companions(&context, stop.1.clone())?;
        let (listener, http_addr) = http::bind(settings.http_addr)?;
        let probes = Arc::new(Probes::new(dependencies, status.metrics.probes.clone()));
        let worker = Worker {
            consumer,
            topic: source,
            runner: Runner {
                stage,
                service: settings.service,
                pool,
                output,
                status: status.clone(),
            },
            probes: probes.clone(),
            batch: settings.batch,
            status: status.clone(),
        };
        Ok(Self {
            settings,
            status: status.clone(),
            producer,
            worker,
            http_addr,
            health: HealthState { status, probes },
            listener,
            routes,
            companions,
            stop,
        })
    }

    /// The address `/health` and `/metrics` are served on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn status(&self) -> Arc<Status> {
        self.status.clone()
    }

    /// Runs until `shutdown` completes: applies migrations (waiting for Postgres), creates
    /// missing topics, then consumes. On shutdown the in-flight batch is finished or abandoned
    /// uncommitted, durable offsets are committed and the producer is flushed.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = self.stop;
        let service = self.settings.service;
        let mut http_stop = stop_rx.clone();
        let (_, server) = http::serve_listener(
            self.listener,
            self.health.clone(),
            self.routes,
            S::route_name,
            async move {
                let _ = http_stop.wait_for(|stop| *stop).await;
            },
        )?;
        let server = tokio::spawn(server);
        let probes = tokio::spawn(self.health.probes.clone().run(stop_rx.clone()));
        let monitor = tokio::spawn(crate::monitor::run(
            self.settings.clone(),
            self.worker.topic.clone(),
            self.status.clone(),
            stop_rx.clone(),
        ));
        tracing::info!(service, http = %self.http_addr, "Service starting.");

        let settings = self.settings.clone();
        let status = self.status.clone();
        let worker = self.worker;
        let companions = self.companions;
        let mut prepare_stop = stop_rx.clone();
        let work = async move {
            let ready = tokio::select! {
                biased;
                _ = prepare_stop.wait_for(|stop| *stop) => false,
                prepared = prepare(&settings, &status) => {
                    prepared?;
                    true
                }
            };
            if ready {
                // Companions and the worker run together; the first error ends them all.
                let companions = futures::future::try_join_all(companions);
                tokio::try_join!(worker.run(stop_rx), companions)?;
            }
            anyhow::Ok(())
        };
        let mut work = Box::pin(work);
        let result = tokio::select! {
            result = &mut work => result,
            () = shutdown => {
                tracing::info!(service, "Shutdown requested; finishing the in-flight batch.");
                let _ = stop_tx.send(true);
                work.await
            }
        };
        let _ = stop_tx.send(true);
        if let Some(producer) = &self.producer {
            let _ = producer.flush(Duration::from_secs(10));
        }
        if result.is_err() {
            self.status.set_state(WorkerState::Failed);
        }
        let _ = server.await;
        let _ = monitor.await;
        let _ = probes.await;
        tracing::info!(service, "Service stopped.");
        result
    }
}

/// Checks the Kafka credentials while it applies migrations, then creates topics, retrying
/// while dependencies are down. Fails only when the brokers refuse the credentials.
async fn prepare(settings: &Settings, status: &Status) -> anyhow::Result<()> {
    let migrations = async {
        Backoff::DEFAULT
            .retry(
                || schema_ready(settings),
                |error, _| {
                    tracing::warn!(error = %format!("{error:#}"), "Cannot apply migrations yet; retrying.");
                    status.record_error(format!("migrations: {error:#}"));
                },
            )
            .await;
        anyhow::Ok(())
    };
    // Concurrently: a rejection is fatal even while Postgres is still down.
    tokio::try_join!(kafka_credentials(settings, status), migrations)?;
    if let Some(partitions) = settings.kafka.create_topics_partitions {
        let topics: Vec<&str> = [
            &settings.kafka.source_topic,
            &settings.kafka.destination_topic,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
        Backoff::DEFAULT
            .retry(
                || kafka::ensure_topics(&settings.kafka, &topics, partitions),
                |error, _| {
                    tracing::warn!(error = %format!("{error:#}"), "Cannot create topics yet; retrying.");
                    status.record_error(format!("topics: {error:#}"));
                },
            )
            .await;
    }
    Ok(())
}

/// How long one credentials check waits for a broker to answer either way.
const CREDENTIALS_CHECK: Duration = Duration::from_secs(10);

/// Waits until the brokers take the SASL credentials. Refused credentials are a configuration
/// error (docs/failures.md, "Fatal"): retrying would only hide a wrong password behind
/// "Kafka is down" forever. A broker that does not answer is an outage: paused and retried.
async fn kafka_credentials(settings: &Settings, status: &Status) -> anyhow::Result<()> {
    let mut pause = Backoff::DEFAULT.first();
    loop {
        match kafka::check_credentials(&settings.kafka, CREDENTIALS_CHECK).await {
            Ok(()) => return Ok(()),
            Err(kafka::CredentialsCheck::Rejected(error)) => return Err(error.into()),
            Err(kafka::CredentialsCheck::Unanswered(error)) => {
                tracing::warn!(%error, "Cannot reach Kafka to check its credentials yet; retrying.");
                status.record_error(format!("kafka: {error}"));
            }
        }
        tokio::time::sleep(pause).await;
        pause = Backoff::DEFAULT.next(pause);
    }
}

/// Applies pending migrations (`MIGRATIONS=apply`), or checks that none is pending
/// (`MIGRATIONS=verify`: `vaultctl migrate` applies them as the schema's owner).
async fn schema_ready(settings: &Settings) -> anyhow::Result<()> {
    let url = settings.postgres.url.expose();
    match settings.postgres.migrations {
        Migrations::Apply => vault_migrations::run(url).await.map(drop),
        Migrations::Verify => {
            let pending = vault_migrations::pending(url).await?;
            anyhow::ensure!(
                pending.is_empty(),
                "waiting for `vaultctl migrate` to apply {pending:?} (MIGRATIONS=verify)"
            );
            Ok(())
        }
    }
}

/// Installs the log subscriber: JSON lines when `LOG_FORMAT=json`, text otherwise;
/// `RUST_LOG` filters (default `info`).
pub fn init_tracing() {
    use crate::config::variables::{Fallback, LOG_FORMAT, RUST_LOG};
    use tracing_subscriber::EnvFilter;
    let default = match RUST_LOG.default {
        Fallback::Value(filter) => filter,
        Fallback::Program(_) | Fallback::Unset(_) => "info",
    };
    let filter = EnvFilter::try_from_env(RUST_LOG.name).unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let json = std::env::var(LOG_FORMAT.name).is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The body of every service's `main`: settings from the environment (one clear line and
/// exit code 2 when they are bad), then run until SIGTERM/SIGINT.
pub async fn main_for<S: Stage>(profile: crate::config::Profile) -> std::process::ExitCode {
    init_tracing();
    let settings = match Settings::from_env(profile) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{}: {error}", profile.service);
            return std::process::ExitCode::from(2);
        }
    };
    let app = match Application::<S>::build(settings) {
        Ok(app) => app,
        Err(error) => {
            eprintln!("{}: {error:#}", profile.service);
            return std::process::ExitCode::from(2);
        }
    };
    match app.run_until_stopped(crate::shutdown::signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Found only once connected (credentials the brokers refuse): as fatal as a bad setting.
        Err(error) if error.is::<ConfigError>() => {
            eprintln!("{}: {error}", profile.service);
            std::process::ExitCode::from(2)
        }
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "Service failed.");
            std::process::ExitCode::FAILURE
        }
    }
}
