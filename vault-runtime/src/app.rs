//! The shape every service shares: build from settings, then run until a shutdown future
//! completes (zero-to-production style), so tests can run services in-process.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::watch;

use crate::config::{Migrations, Settings};
use crate::consume::{Handler, Worker};
use crate::http::{self, Dependency, HealthState};
use crate::kafka;
use crate::status::{Status, WorkerState};
use crate::stores::{self, PgPool, RedisPool};

/// What a handler is built from.
#[derive(Clone)]
pub struct Context {
    pub settings: Settings,
    pub pg: PgPool,
    pub redis: Option<RedisPool>,
    /// Present when the service publishes (it has a destination topic).
    pub producer: Option<FutureProducer>,
    pub status: Arc<Status>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("service", &self.settings.service)
            .finish_non_exhaustive()
    }
}

/// A built service: HTTP bound, clients created, nothing running yet.
pub struct Application<H> {
    context: Context,
    worker: Worker<H>,
    http_addr: SocketAddr,
    health: HealthState,
    listener: std::net::TcpListener,
}

impl<H> std::fmt::Debug for Application<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("service", &self.context.settings.service)
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Application<H> {
    /// Creates clients and binds the HTTP port. Connections are made lazily: a dependency
    /// that is down at start is waited for, not a reason to exit.
    pub fn build(
        settings: Settings,
        make_handler: impl FnOnce(&Context) -> anyhow::Result<H>,
    ) -> anyhow::Result<Self> {
        let status = Arc::new(Status::new(settings.service));
        let pg = stores::pg_pool(&settings.postgres);
        let redis = settings
            .redis
            .as_ref()
            .map(stores::redis_pool)
            .transpose()?;
        let producer = match &settings.kafka.destination_topic {
            Some(_) => Some(kafka::producer(&settings.kafka)?),
            None => None,
        };
        let source = settings.kafka.source_topic.clone().ok_or_else(|| {
            anyhow::anyhow!("invalid configuration: KAFKA_SOURCE_TOPIC: is required")
        })?;
        let consumer = kafka::consumer(&settings.kafka)?;
        let mut dependencies = vec![Dependency::Postgres(pg.clone())];
        if let Some(redis) = &redis {
            dependencies.push(Dependency::Redis(redis.clone()));
        }
        let kafka_probe = match &producer {
            Some(producer) => producer.clone(),
            None => kafka::producer(&settings.kafka)?,
        };
        dependencies.push(Dependency::Kafka(kafka_probe));
        let context = Context {
            settings: settings.clone(),
            pg: pg.clone(),
            redis,
            producer,
            status: status.clone(),
        };
        let handler = make_handler(&context)?;
        let (listener, http_addr) = http::bind(settings.http_addr)?;
        let worker = Worker {
            consumer,
            topic: source,
            handler,
            pool: pg,
            dependencies: dependencies.clone(),
            batch: settings.batch,
            status: status.clone(),
        };
        Ok(Self {
            context,
            worker,
            http_addr,
            health: HealthState {
                status,
                dependencies,
            },
            listener,
        })
    }

    /// The address `/health` and `/metrics` are served on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn status(&self) -> Arc<Status> {
        self.context.status.clone()
    }

    /// Runs until `shutdown` completes: applies migrations (waiting for Postgres), creates
    /// missing topics, then consumes. On shutdown the in-flight batch is finished or abandoned
    /// uncommitted, durable offsets are committed and the producer is flushed.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let service = self.context.settings.service;
        let mut http_stop = stop_rx.clone();
        let (_, server) = http::serve_listener(self.listener, self.health.clone(), async move {
            let _ = http_stop.wait_for(|stop| *stop).await;
        })?;
        let server = tokio::spawn(server);
        tracing::info!(service, http = %self.http_addr, "Service starting.");

        let context = self.context.clone();
        let worker = self.worker;
        let mut prepare_stop = stop_rx.clone();
        let work = async move {
            let ready = tokio::select! {
                biased;
                _ = prepare_stop.wait_for(|stop| *stop) => false,
                result = prepare(&context) => { result?; true }
            };
            if ready {
                worker.run(stop_rx).await?;
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
        if let Some(producer) = &self.context.producer {
            let _ = producer.flush(Duration::from_secs(10));
        }
        if result.is_err() {
            self.context.status.set_state(WorkerState::Failed);
        }
        let _ = server.await;
        tracing::info!(service, "Service stopped.");
        result
    }
}

/// Applies migrations and creates topics, retrying while dependencies are down.
async fn prepare(context: &Context) -> anyhow::Result<()> {
    let settings = &context.settings;
    let mut backoff = Duration::from_millis(200);
    loop {
        match schema_ready(settings).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "Cannot apply migrations yet; retrying.");
                context
                    .status
                    .record_error(format!("migrations: {error:#}"));
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    if let Some(partitions) = settings.kafka.create_topics_partitions {
        let topics: Vec<&str> = [
            &settings.kafka.source_topic,
            &settings.kafka.destination_topic,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
        let mut backoff = Duration::from_millis(200);
        while let Err(error) = kafka::ensure_topics(&settings.kafka, &topics, partitions).await {
            tracing::warn!(error = %format!("{error:#}"), "Cannot create topics yet; retrying.");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
    Ok(())
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
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The body of every service's `main`: settings from the environment (one clear line and
/// exit code 2 when they are bad), then run until SIGTERM/SIGINT.
pub async fn main_for<H: Handler>(
    profile: crate::config::Profile,
    make_handler: impl FnOnce(&Context) -> anyhow::Result<H>,
) -> std::process::ExitCode {
    init_tracing();
    let settings = match Settings::from_env(profile) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{}: {error}", profile.service);
            return std::process::ExitCode::from(2);
        }
    };
    let app = match Application::build(settings, make_handler) {
        Ok(app) => app,
        Err(error) => {
            eprintln!("{}: {error:#}", profile.service);
            return std::process::ExitCode::from(2);
        }
    };
    match app.run_until_stopped(crate::shutdown::signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "Service failed.");
            std::process::ExitCode::FAILURE
        }
    }
}
