//! The HTTP server every service runs: `GET /health` (docs/contract.md §5) and `GET /metrics`;
//! each also answers `HEAD`, as uptime checkers ask.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::Filter;

pub use crate::probe::Dependency;
use crate::probe::Probes;
use crate::status::{Status, WorkerState};

/// Everything the health endpoint looks at: the worker's state and the last results of the
/// background dependency checks (never a check of its own: [`crate::probe`]).
#[derive(Debug, Clone)]
pub struct HealthState {
    pub status: Arc<Status>,
    pub probes: Arc<Probes>,
}

impl HealthState {
    /// The health document and whether the service is healthy.
    pub fn report(&self) -> (bool, Value) {
        let (mut healthy, deps) = self.probes.report();
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

/// The name a request's path is counted under in `vaultline_http_requests_total{route}`:
/// `/health`, `/metrics`, a route template the stage names, or `other` (any path, so that
/// scanners cannot grow the label set).
pub type RouteNames = fn(&str) -> Option<&'static str>;

fn route_label(path: &str, names: RouteNames) -> &'static str {
    match path {
        "/health" => "/health",
        "/metrics" => "/metrics",
        _ => names(path).unwrap_or("other"),
    }
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
/// `shutdown` completes. `extra` routes are tried after `/health` and `/metrics`; every
/// request is counted and timed by route ([`RouteNames`]) and status.
pub fn serve_listener(
    listener: std::net::TcpListener,
    state: HealthState,
    extra: Option<crate::stage::Routes>,
    route_names: RouteNames,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, impl Future<Output = ()>)> {
    let health_state = state.clone();
    let health = warp::path("health")
        .and(warp::path::end())
        .and(get_or_head())
        .map(move || {
            let (healthy, doc) = health_state.report();
            let code = if healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            warp::reply::with_status(warp::reply::json(&doc), code)
        });
    let metrics_status = state.status.clone();
    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(get_or_head())
        .and(warp::header::optional::<String>("accept"))
        .map(move |accept: Option<String>| {
            crate::exposition::reply(metrics_status.metrics.registry(), accept.as_deref())
        });
    let routes = health
        .map(|reply| Box::new(reply) as Box<dyn warp::Reply>)
        .or(metrics.map(|reply| Box::new(reply) as Box<dyn warp::Reply>))
        .unify()
        .boxed();
    let routes = match extra {
        Some(extra) => routes.or(extra).unify().boxed(),
        None => routes,
    };
    let counted = state.status.clone();
    let routes = routes.with(warp::log::custom(move |info| {
        let route = route_label(info.path(), route_names);
        counted
            .metrics
            .request(route, info.status().as_u16(), info.elapsed());
    }));
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let server = warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown)
        .run();
    Ok((bound, server))
}
