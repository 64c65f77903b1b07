//! datagen's HTTP API: `GET /health`, `GET /metrics` (both also `HEAD`) and
//! `POST /push {"N": n}`, which pushes n orders and answers
//! `{"status": "success", "messages_pushed": n, ...}`; the later versions of some orders go out
//! as extra messages, counted in `later_versions`.

use std::future::Future;
use std::sync::Arc;

use rand::SeedableRng;
use serde_json::{json, Value};
use vault_runtime::{get_or_head, publish};
use warp::http::StatusCode;
use warp::reply::{self, Json, WithStatus};
use warp::Filter;

use crate::{dictionary, generate, State, MAX_PUSH};

/// Orders generated and published at a time: what a push holds in memory.
const PUSH_CHUNK: u64 = 2000;

pub(crate) fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl Future<Output = ()>> {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let health = warp::path("health")
        .and(warp::path::end())
        .and(get_or_head())
        .and(with_state.clone())
        .then(health);
    let push = warp::path("push")
        .and(warp::path::end())
        .and(warp::post())
        .and(warp::body::content_length_limit(64 * 1024))
        .and(warp::body::bytes())
        .and(with_state.clone())
        .then(|body: warp::hyper::body::Bytes, state| push(body.to_vec(), state));
    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(get_or_head())
        .and(warp::header::optional::<String>("accept"))
        .and(with_state)
        .map(|accept: Option<String>, state: Arc<State>| {
            vault_runtime::metrics_reply(state.metrics.registry(), accept.as_deref())
        });
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    Ok(warp::serve(health.or(push).or(metrics))
        .incoming(listener)
        .graceful(shutdown)
        .run())
}

/// The last results of the background checks (vault-runtime/src/probe.rs), never a check per
/// request.
async fn health(state: Arc<State>) -> WithStatus<Json> {
    let (dependencies_up, dependencies) = state.probes.report();
    let dictionary = state.dictionary.read().await;
    let loaded = dictionary
        .as_ref()
        .map(|d| json!({"users": d.users.len(), "restaurants": d.restaurants.len()}));
    let healthy = dependencies_up && loaded.is_some();
    let doc = json!({
        "service": "datagen",
        "status": if healthy { "healthy" } else { "unhealthy" },
        "dictionary": loaded,
        "dependencies": dependencies,
    });
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply::with_status(reply::json(&doc), code)
}

fn error(code: StatusCode, message: impl Into<String>) -> WithStatus<Json> {
    reply::with_status(
        reply::json(&json!({"status": "error", "error": message.into()})),
        code,
    )
}

/// Parses `{"N": n}` with 0 < n ≤ [`MAX_PUSH`].
pub(crate) fn parse_push(body: &[u8]) -> Result<u64, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let n = value
        .get("N")
        .ok_or_else(|| "body must be an object with an integer field `N`".to_owned())?;
    let n = n
        .as_i64()
        .ok_or_else(|| format!("`N` must be an integer, got {n}"))?;
    if n <= 0 {
        return Err(format!("`N` must be positive, got {n}"));
    }
    let n = n as u64;
    if n > MAX_PUSH {
        return Err(format!("`N` must be at most {MAX_PUSH}, got {n}"));
    }
    Ok(n)
}

async fn push(body: Vec<u8>, state: Arc<State>) -> WithStatus<Json> {
    let started = std::time::Instant::now();
    let n = match parse_push(&body) {
        Ok(n) => n,
        Err(message) => {
            state.metrics.failure("bad_request");
            return error(StatusCode::BAD_REQUEST, message);
        }
    };
    let Some(dictionary) = state.dictionary.read().await.clone() else {
        state.metrics.failure("dictionaries_not_loaded");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "dictionaries are not loaded yet (is Redis up?)",
        );
    };
    let ids = match state.order_ids.reserve(&state.redis, n).await {
        Ok(ids) => ids,
        Err(e) => {
            state.metrics.failure("redis");
            return error(StatusCode::SERVICE_UNAVAILABLE, format!("Redis: {e:#}"));
        }
    };
    if ids.counter_was_missing {
        // Redis lost its data (emptied, or restarted without persistence): the dictionaries
        // went with the counter, and service-stg pauses until they are back. Write back the
        // ones these orders are made from (never overwriting an entry someone loaded since).
        if let Err(e) = dictionary::store(&state.redis, &dictionary).await {
            state.metrics.failure("redis");
            return error(StatusCode::SERVICE_UNAVAILABLE, format!("Redis: {e:#}"));
        }
        tracing::info!(
            users = dictionary.users.len(),
            restaurants = dictionary.restaurants.len(),
            "Redis held no order-id counter; wrote the dictionaries back before pushing."
        );
    }
    let first_id = ids.first;
    // Chunk by chunk: a push of a million orders holds one chunk, never all of them.
    let mut generator = generate::Generator::new(
        rand::rngs::StdRng::from_os_rng(),
        &dictionary,
        first_id,
        n,
        chrono::Utc::now(),
    );
    let mut messages = 0_u64;
    while generator.remaining() > 0 {
        let chunk = generator.next_chunk(PUSH_CHUNK);
        let out = match crate::messages(&chunk) {
            Ok(out) => out,
            Err(e) => {
                state.metrics.failure("serialize");
                return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
            }
        };
        drop(chunk);
        if let Err(e) = publish(&state.producer, &state.topic, &out).await {
            state.metrics.failure("kafka");
            tracing::warn!(error = %e, "A push failed: Kafka did not take the orders.");
            return error(StatusCode::SERVICE_UNAVAILABLE, format!("Kafka: {e}"));
        }
        messages += out.len() as u64;
        state.metrics.messages.inc_by(out.len() as u64);
    }
    let later_versions = messages.saturating_sub(n);
    tracing::info!(orders = n, later_versions, first_id, "Pushed orders.");
    state.metrics.orders.inc_by(n);
    state
        .metrics
        .push_seconds
        .observe(started.elapsed().as_secs_f64());
    reply::with_status(
        reply::json(&json!({
            "status": "success",
            "messages_pushed": n,
            "later_versions": later_versions,
            "first_order_id": first_id,
            "last_order_id": ids.last,
        })),
        StatusCode::OK,
    )
}

#[cfg(test)]
mod tests {
    use super::parse_push;

    #[test]
    fn push_bodies_are_validated() {
        assert_eq!(parse_push(br#"{"N": 10000}"#), Ok(10000));
        assert!(parse_push(br#"{"N": 0}"#).is_err());
        assert!(parse_push(br#"{"N": -5}"#).is_err());
        assert!(parse_push(br#"{"N": 10000000000}"#).is_err());
        assert!(parse_push(br#"{"N": "ten"}"#).is_err());
        assert!(parse_push(br#"{"n": 10}"#).is_err());
        assert!(parse_push(b"not json").is_err());
    }
}
