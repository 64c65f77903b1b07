//! Systemic faults (docs/failures.md): a warehouse that cannot take a stage's writes pauses
//! that stage — `/health` 503 naming the cause, no dead letter ever — and it resumes by
//! itself when the fault clears, with the counters exact.

use std::time::{Duration, Instant};

use datagen::dictionary::synthetic;
use rand::SeedableRng;
use vault_tests::expect::{assert_exact, messages};
use vault_tests::pipeline::{http, Overrides, Pipeline, Service};
use vault_tests::{database_with_role, eventually};

const SETTLE: Duration = Duration::from_secs(180);
/// How long the faults last: long enough that every back-off step and every bisection
/// would have had its chance to reject something.
const FAULT: Duration = Duration::from_secs(30);

/// Waits until `service` answers 503 with a pause cause that mentions `needle`; on time-out
/// the panic shows the last answer.
async fn await_paused(p: &Pipeline, service: Service, needle: &str) {
    let addr = p.http_addr(service).expect("running");
    let last = std::sync::Mutex::new(String::new());
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Ok((status, body)) = http(addr, "GET", "/health", "").await {
            let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let cause = doc["worker"]["cause"].as_str().unwrap_or_default();
            if status == 503 && cause.contains(needle) {
                return;
            }
            *last.lock().expect("lock") = format!("{status} {body}");
        }
        assert!(
            Instant::now() < deadline,
            "{service:?} did not pause naming {needle}; last answer: {}",
            last.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn health(p: &Pipeline, service: Service) -> anyhow::Result<(u16, serde_json::Value)> {
    let (status, body) = http(p.http_addr(service).expect("running"), "GET", "/health", "").await?;
    Ok((status, serde_json::from_str(&body)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_and_a_revoked_grant_pause_the_stages_and_reject_nothing(
) -> anyhow::Result<()> {
    // A private server: the warehouse is altered under the services, and nothing else may
    // touch it meanwhile.
    let pg = vault_tests::servers::PrivatePostgres::start().await?;
    let database_url = pg.create_database("warehouse").await?;
    let (admin_url, role_url) = database_with_role(&pg.url(), &database_url).await?;
    let role = role_url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .expect("a role")
        .to_owned();
    let p = Pipeline::start_with(
        2,
        Overrides {
            database_url: Some(role_url),
            ..Overrides::default()
        },
    )
    .await?;
    let (admin, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let d = synthetic(uuid::Uuid::new_v4().as_u64_pair().0, 20, 4);
    p.put_dictionary(&d).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(41);
    let sent = datagen::generate::orders(&mut rng, &d, 31_000, 600);
    let (first, second) = sent.split_at(200);
    p.produce_raw(&messages(first)).await?;
    p.settle(SETTLE).await;

    // Mid-stream, while orders keep coming: the category datamart disappears (renamed) ...
    admin
        .batch_execute(
            "ALTER TABLE cdm.user_category_counters RENAME TO user_category_counters_away",
        )
        .await?;
    let faulted = Instant::now();
    let (second, third) = second.split_at(200);
    p.produce_raw(&messages(second)).await?;
    await_paused(&p, Service::Cdm, "cdm.user_category_counters").await;
    // ... and service-dds loses its right to write order statuses.
    admin
        .batch_execute(&format!("REVOKE INSERT ON dds.s_order_status FROM {role}"))
        .await?;
    p.produce_raw(&messages(third)).await?;
    await_paused(&p, Service::Dds, "dds.s_order_status").await;
    let (status, body) = health(&p, Service::Stg).await?;
    assert_eq!(status, 200, "stg is not affected: {body}");

    // Hold the faults: nothing is rejected, and the work stays pending, not skipped.
    while faulted.elapsed() < FAULT {
        assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for service in [Service::Dds, Service::Cdm] {
        let (status, body) = health(&p, service).await?;
        assert_eq!(status, 503, "{service:?} still paused: {body}");
        assert!(body["worker"]["retries"].as_u64() > Some(3), "{body}");
    }
    let ends = p.end_offsets(&p.enriched_topic).await?;
    let committed = p
        .stack
        .committed_offsets(p.group(Service::Dds), &p.enriched_topic)
        .await?;
    let pending: i64 = ends
        .iter()
        .map(|(partition, end)| end - committed.get(partition).copied().flatten().unwrap_or(0))
        .sum();
    assert!(pending > 0, "dds has work it could not commit");

    // The fault clears; both stages resume by themselves.
    admin
        .batch_execute(&format!(
            "ALTER TABLE cdm.user_category_counters_away RENAME TO user_category_counters; \
             GRANT INSERT ON dds.s_order_status TO {role}"
        ))
        .await?;
    p.settle(SETTLE).await;
    assert_exact(&p, &d, &sent).await?;
    for service in Service::ALL {
        let what = format!("{service:?} to report healthy again");
        eventually(&what, Duration::from_secs(30), || async {
            let (status, _) = health(&p, service).await.ok()?;
            (status == 200).then_some(())
        })
        .await;
    }
    p.shutdown().await
}
