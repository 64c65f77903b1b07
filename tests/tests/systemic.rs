//! Systemic faults (docs/failures.md): a warehouse that cannot take a stage's writes pauses
//! that stage — `/health` 503 naming the cause, no dead letter ever — and it resumes by
//! itself when the fault clears, with the counters exact.

use std::time::{Duration, Instant};

use vault_tests::expect::{assert_exact, messages};
use vault_tests::faults::{await_healthy, await_paused, health, Altered, SETTLE};
use vault_tests::pipeline::Service;

/// How long the faults last: long enough that every back-off step and every bisection
/// would have had its chance to reject something.
const FAULT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_and_a_revoked_grant_pause_the_stages_and_reject_nothing(
) -> anyhow::Result<()> {
    let Altered {
        pg: _pg,
        pipeline: p,
        admin,
        role,
    } = Altered::start(2).await?;
    let (d, sent) = p.seeded_orders((20, 4), 41, 31_000, 600).await?;
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
    await_healthy(&p).await;
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_service_pauses_it_and_rejects_nothing() -> anyhow::Result<()> {
    let Altered {
        pg: _pg,
        pipeline: p,
        admin,
        role: _,
    } = Altered::start(2).await?;
    let (d, sent) = p.seeded_orders((20, 4), 43, 32_000, 400).await?;
    let (first, second) = sent.split_at(200);
    p.produce_raw(&messages(first)).await?;
    p.settle(SETTLE).await;

    // Mid-stream, the schema of a newer release: a column the loader does not write, which
    // every insert must fill (as an upgrade's migration can leave it while the old release
    // still runs).
    admin
        .batch_execute(
            "ALTER TABLE dds.s_order_status \
                 ADD COLUMN from_a_newer_release text NOT NULL DEFAULT 'old rows'; \
             ALTER TABLE dds.s_order_status ALTER COLUMN from_a_newer_release DROP DEFAULT",
        )
        .await?;
    let faulted = Instant::now();
    p.produce_raw(&messages(second)).await?;
    await_paused(&p, Service::Dds, "requires column from_a_newer_release").await;
    while faulted.elapsed() < FAULT / 3 {
        assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The new release takes over (here: the column goes again); nothing was skipped.
    admin
        .batch_execute("ALTER TABLE dds.s_order_status DROP COLUMN from_a_newer_release")
        .await?;
    p.settle(SETTLE).await;
    assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
    assert_exact(&p, &d, &sent).await?;
    await_healthy(&p).await;
    p.shutdown().await
}
