//! SIGTERM with work in flight, on every service's real binary (docs/contract.md §4): the
//! process finishes or abandons its batch, commits what is durable, flushes its producer and
//! exits 0; started again, it goes on from its committed offsets and the counters come out
//! exact — nothing lost, nothing redone wrongly. And whatever it waits on, it is gone within
//! its stop deadline (`vault_runtime::STOP_WITHIN`): a database that stopped
//! answering mid-batch holds it no longer than that.

use std::time::Duration;

use rand::SeedableRng;
use vault_runtime::STOP_WITHIN;
use vault_tests::eventually;
use vault_tests::expect::{assert_exact, messages};
use vault_tests::pipeline::{Overrides, Pipeline, Service};
use vault_tests::process::{log, spawn, terminate, terminate_timed, Stopped};

const SETTLE: Duration = Duration::from_secs(180);

/// Rows the service's own transactions write, one per message it processes when every order
/// is sent once (its first version only): what it has made durable, in messages.
fn durable(service: Service) -> &'static str {
    match service {
        Service::Stg => "SELECT count(*) FROM stg.order_events",
        Service::Dds => "SELECT count(*) FROM dds.order_load_state",
        Service::Cdm => "SELECT count(*) FROM cdm.order_state WHERE update_ts IS NOT NULL",
    }
}

async fn committed(p: &Pipeline, service: Service) -> i64 {
    p.committed(service).await.expect("committed offsets")
}

async fn terminated_mid_stream_loses_nothing(service: Service, seed: u64) -> anyhow::Result<()> {
    let mut p = Pipeline::start(2).await?;
    let mut env = p.hand_to_binary(service).await?;
    // Small batches, so that the signal finds one in flight.
    env.insert("BATCH_MAX_MESSAGES".into(), "20".into());
    let log_name = format!("{}.log", vault_tests::unique(service.binary()));
    let child = spawn(service.binary(), &env, &log_name)?;

    let d = vault_tests::orders::random_dictionary(30, 4);
    p.put_dictionary(&d).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sent = datagen::generate::orders(&mut rng, &d, 70_000 + seed as i64 * 10_000, 3_000);
    // Each order once (the later versions datagen appends are dropped), so that every message
    // the service processes leaves exactly one row of `durable(service)`.
    sent.truncate(3_000);
    p.produce_raw(&messages(&sent)).await?;
    let before = eventually("the service to be part way through", SETTLE, || async {
        let done = committed(&p, service).await;
        (done > 100).then_some(done)
    })
    .await;
    let waiting: i64 = p.end_offsets(p.topic(service)).await?.values().sum();

    assert_eq!(terminate(child).await?, Some(0), "{}", log(&log_name));
    let text = log(&log_name);
    assert!(text.contains("Worker stopped."), "{text}");
    let at_stop = committed(&p, service).await;
    eprintln!(
        "{service:?}: SIGTERM with {before} of {waiting} messages on its topic committed; \
         {at_stop} committed at exit"
    );
    assert!(
        waiting > before,
        "messages were waiting for the service when the signal came"
    );
    // What the service made durable is exactly what it committed: the batch in hand was
    // either finished and committed, or abandoned and rolled back; nothing durable is left
    // for the restart to redo, nothing committed is missing.
    assert_eq!(
        p.count(durable(service)).await?,
        at_stop,
        "rows written vs offsets committed at exit: {text}"
    );

    // Started again, it goes on from there: exactly the rest, nothing lost, nothing twice.
    let child = spawn(service.binary(), &env, &log_name)?;
    p.settle(SETTLE).await;
    assert_exact(&p, &d, &sent).await?;
    let at_end = committed(&p, service).await;
    assert!(
        at_stop < at_end,
        "the service stopped with work left for the restart ({at_stop} of {at_end})"
    );
    assert_eq!(p.count(durable(service)).await?, at_end);
    assert_eq!(terminate(child).await?, Some(0));
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_service_stg_mid_stream_commits_and_loses_nothing() -> anyhow::Result<()> {
    terminated_mid_stream_loses_nothing(Service::Stg, 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_service_dds_mid_stream_commits_and_loses_nothing() -> anyhow::Result<()> {
    terminated_mid_stream_loses_nothing(Service::Dds, 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_service_cdm_mid_stream_commits_and_loses_nothing() -> anyhow::Result<()> {
    terminated_mid_stream_loses_nothing(Service::Cdm, 3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_service_stuck_on_a_database_that_stopped_answering_within_its_deadline(
) -> anyhow::Result<()> {
    let pg = vault_tests::servers::PrivatePostgres::start().await?;
    let mut p = Pipeline::start_with(
        2,
        Overrides {
            database_url: Some(pg.create_database("warehouse").await?),
            ..Overrides::default()
        },
    )
    .await?;
    let mut env = p.hand_to_binary(Service::Stg).await?;
    // Small batches, so that the freeze finds work pending.
    env.insert("BATCH_MAX_MESSAGES".into(), "20".into());
    let log_name = format!("{}.log", vault_tests::unique("stg-frozen-db"));
    let child = spawn("service-stg", &env, &log_name)?;

    let (d, sent) = p.seeded_orders((20, 4), 17, 170_000, 3_000).await?;
    p.produce_raw(&messages(&sent)).await?;
    eventually("stg to be part way through", SETTLE, || async {
        (committed(&p, Service::Stg).await > 100).then_some(())
    })
    .await;

    // Postgres stops answering mid-stream: the batch in hand hangs (a server that never
    // answers times out no statement), and the group stops moving.
    pg.freeze()?;
    let stuck_at = eventually("stg to stop making progress", SETTLE, || async {
        let first = committed(&p, Service::Stg).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let second = committed(&p, Service::Stg).await;
        (first == second).then_some(second)
    })
    .await;
    assert!(stuck_at < 3_000, "work was pending when the database froze");

    let Stopped {
        code,
        took,
        log: text,
    } = terminate_timed(child, &log_name).await?;
    assert!(
        took < STOP_WITHIN + Duration::from_secs(5),
        "stopped {took:?} after SIGTERM: {text}"
    );
    // The attempt in hand was abandoned, not finished, and the stop was otherwise clean.
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("Stopping with a batch in hand uncommitted"),
        "{text}"
    );

    // The database answers again; the service, started again, redoes the abandoned batch.
    pg.thaw()?;
    let child = spawn("service-stg", &env, &log_name)?;
    p.settle(SETTLE).await;
    assert_exact(&p, &d, &sent).await?;
    assert_eq!(terminate(child).await?, Some(0));
    p.shutdown().await
}
