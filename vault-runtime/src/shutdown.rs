//! Shutdown on SIGTERM or SIGINT, injected into the application as a future, with a deadline
//! that holds whatever the service waits on.

use std::time::Duration;

/// How long a service may take to stop once signalled: the in-flight batch finishes or is
/// abandoned, offsets are committed, the producer flushed. Past it the process exits anyway
/// (code 1, one line), leaving the uncommitted tail to be redelivered: a final offset commit
/// with no broker answering, or a query to a database that stopped answering, would otherwise
/// hold it forever. Below the 30 s that Kubernetes (`terminationGracePeriodSeconds`) and
/// compose (`stop_grace_period`) give before SIGKILL, so the service says why it stopped.
pub const STOP_WITHIN: Duration = Duration::from_secs(25);

/// Completes when the process receives SIGTERM or SIGINT (Ctrl-C), and from then on holds the
/// process to [`STOP_WITHIN`]. The deadline is a thread of its own, not a task: it must fire
/// even when every runtime thread is stuck in a blocking call.
pub async fn signal() {
    received().await;
    let spawned = std::thread::Builder::new()
        .name("stop-deadline".into())
        .spawn(|| {
            std::thread::sleep(STOP_WITHIN);
            tracing::error!(
                "Not stopped {}s after the signal; exiting with the work in hand uncommitted (it will be redelivered).",
                STOP_WITHIN.as_secs()
            );
            std::process::exit(1);
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "Cannot start the stop deadline's thread; stopping without one.");
    }
}

/// Completes when the process receives SIGTERM or SIGINT (Ctrl-C).
async fn received() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Received SIGINT, shutting down."),
        () = terminate => tracing::info!("Received SIGTERM, shutting down."),
    }
}
