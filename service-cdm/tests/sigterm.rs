//! The real binary under SIGTERM: it stops its worker, commits and exits 0 (Kubernetes sends
//! SIGTERM on every rollout, so anything else would look like a crash).

use std::process::{Command, Stdio};
use std::time::Duration;

use vault_tests::{eventually, stack, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_service_cleanly_with_exit_code_zero() -> anyhow::Result<()> {
    let stack = stack().await;
    let database = stack.fresh_database().await?;
    let topic = unique("cdm_service");
    stack.create_topics(std::slice::from_ref(&topic), 1).await?;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_service-cdm"))
        .env("KAFKA_BOOTSTRAP_SERVERS", &stack.kafka_bootstrap)
        .env("DATABASE_URL", &database)
        .env("KAFKA_SOURCE_TOPIC", &topic)
        .env("KAFKA_CONSUMER_GROUP", unique("cdm"))
        .env("HTTP_HOST", "127.0.0.1")
        .env("HTTP_PORT", port.to_string())
        .env("KAFKA_TOPIC_PARTITIONS", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    eventually(
        "the service to report healthy",
        Duration::from_secs(60),
        || async {
            let (status, body) = vault_tests::pipeline::http(addr, "GET", "/health", "")
                .await
                .ok()?;
            (status == 200 && body.contains("\"running\"")).then_some(())
        },
    )
    .await;

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(status.status.code(), Some(0), "{log}");
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("Worker stopped."), "{log}");
    Ok(())
}
