//! The HTTP server every service runs: `GET /health` (docs/contract.md §5) and `GET /metrics`;
//! each also answers `HEAD`, as uptime checkers ask.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use serde_json::{json, Map, Value};
use warp::http::StatusCode;
use warp::Filter;

use crate::kafka;
use crate::status::{Status, WorkerState};
use crate::stores::{self, PgPool, RedisPool};

/// A dependency `/health` checks live on every request.
#[derive(Clone)]
pub enum Dependency {
    Postgres(PgPool),
    Redis(RedisPool),
    Kafka(FutureProducer),
}

impl std::fmt::Debug for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Dependency {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Redis(_) => "redis",
            Self::Kafka(_) => "kafka",
        }
    }

    pub async fn check(&self) -> Result<(), String> {
        const LIMIT: Duration = Duration::from_secs(2);
        let probe = async {
            match self {
                Self::Postgres(pool) => stores::pg_ping(pool).await,
                Self::Redis(pool) => stores::redis_ping(pool).await,
                Self::Kafka(producer) => kafka::reachable(producer, LIMIT).await,
            }
        };
        tokio::time::timeout(LIMIT + Duration::from_millis(500), probe)
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()))
    }
}

/// Everything the health endpoint looks at.
#[derive(Debug, Clone)]
pub struct HealthState {
    pub status: Arc<Status>,
    pub dependencies: Vec<Dependency>,
}

impl HealthState {
    /// The health document and whether the service is healthy.
    pub async fn report(&self) -> (bool, Value) {
        let checks =
            futures::future::join_all(self.dependencies.iter().map(|dep| dep.check())).await;
        let mut deps = Map::new();
        let mut healthy = true;
        for (dep, result) in self.dependencies.iter().zip(checks) {
            let entry = match result {
                Ok(()) => json!({"status": "up"}),
                Err(error) => {
                    healthy = false;
                    json!({"status": "down", "error": error})
                }
            };
            deps.insert(dep.name().to_owned(), entry);
        }
        let worker = self.status.snapshot();
        healthy &= matches!(worker.state, WorkerState::Running | WorkerState::Starting);
        healthy &= worker.stalled.is_none();
        healthy &= worker.faults.is_empty();
        let doc = json!({
            "service": self.status.service,
            "status": if healthy { "healthy" } else { "unhealthy" },
            "worker": worker,
            "dependencies": deps,
        });
        (healthy, doc)
    }
}

/// GET or HEAD. A HEAD request gets GET's answer: the server sends its status and headers and
/// leaves the body out (hyper does, for every HEAD response), so a route needs nothing else.
pub fn get_or_head() -> impl Filter<Extract = (), Error = warp::Rejection> + Copy {
    warp::get().or(warp::head()).unify()
}

/// Binds the HTTP port (port 0 picks a free one) and returns the listener and its address; a
/// port that cannot be bound is a configuration error naming `HTTP_PORT`.
pub fn bind(addr: SocketAddr) -> anyhow::Result<(std::net::TcpListener, SocketAddr)> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!("invalid configuration: HTTP_PORT: cannot listen on {addr}: {e}")
    })?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// Serves on an already bound listener and returns the server future, which ends when
/// `shutdown` completes. `extra` routes are tried after `/health` and `/metrics`.
pub fn serve_listener(
    listener: std::net::TcpListener,
    state: HealthState,
    extra: Option<crate::stage::Routes>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, impl Future<Output = ()>)> {
    let health_state = state.clone();
    let health = warp::path("health")
        .and(warp::path::end())
        .and(get_or_head())
        .then(move || {
            let state = health_state.clone();
            async move {
                let (healthy, doc) = state.report().await;
                let code = if healthy {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                warp::reply::with_status(warp::reply::json(&doc), code)
            }
        });
    let metrics_status = state.status.clone();
    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(get_or_head())
        .map(move || {
            warp::reply::with_header(
                metrics_status.metrics.encode(),
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        });
    let routes = health
        .or(metrics)
        .map(|reply| Box::new(reply) as Box<dyn warp::Reply>)
        .boxed();
    let routes = match extra {
        Some(extra) => routes.or(extra).unify().boxed(),
        None => routes,
    };
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let server = warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown)
        .run();
    Ok((bound, server))
}
