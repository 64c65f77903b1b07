//! Recovery after `kill -9` (docs/failures.md, "Crashes"): the real service-stg binary is
//! killed under load and started again; it must be committing again within 15 s, with
//! nothing lost or counted twice. Once with dynamic group membership (the group notices the
//! dead member when its session expires) and once with static membership
//! (`KAFKA_GROUP_INSTANCE_ID`, e.g. a pod name, stable across restarts of its container).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use vault_tests::expect::{assert_exact, messages};
use vault_tests::pipeline::{http, Pipeline, Service};
use vault_tests::process::{spawn, terminate};
use vault_tests::{eventually, unique};

const SETTLE: Duration = Duration::from_secs(180);
/// The promise: processing again within this long after the restart.
const RESUME_WITHIN: Duration = Duration::from_secs(15);

async fn committed_total(p: &Pipeline) -> i64 {
    p.committed(Service::Stg).await.expect("committed offsets")
}

async fn killed_under_load_resumes_quickly(static_membership: bool) -> anyhow::Result<()> {
    let mut p = Pipeline::start(3).await?;
    let mut env = p.hand_to_binary(Service::Stg).await?;
    let port = env["HTTP_PORT"].clone();
    env.insert("BATCH_MAX_MESSAGES".into(), "200".into());
    if static_membership {
        env.insert("KAFKA_GROUP_INSTANCE_ID".into(), unique("stg-pod"));
    }
    let log = format!("{}.log", unique("recovery-stg"));
    let mut child = spawn("service-stg", &env, &log)?;

    let d = vault_tests::orders::random_dictionary(50, 5);
    p.put_dictionary(&d).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(if static_membership { 5 } else { 7 });
    let sent = datagen::generate::orders(&mut rng, &d, 50_000, 12_000);
    let messages = messages(&sent);
    p.produce_raw(&messages).await?;
    let total: i64 = p.end_offsets(&p.raw_topic).await?.values().sum();
    eventually("stg to be part way through", SETTLE, || async {
        let done = committed_total(&p).await;
        (done > 1000 && done < total).then_some(())
    })
    .await;

    // kill -9, then start it again at once, as a supervisor would.
    child.kill()?;
    child.wait()?;
    let at_kill = committed_total(&p).await;
    assert!(at_kill < total, "the kill came while work was pending");
    let restarted = Instant::now();
    let child = spawn("service-stg", &env, &log)?;
    let resumed = eventually("stg to commit again after the restart", SETTLE, || async {
        (committed_total(&p).await > at_kill).then(|| restarted.elapsed())
    })
    .await;
    assert!(
        resumed <= RESUME_WITHIN,
        "processing resumed {resumed:?} after the restart (static membership: {static_membership})"
    );
    eprintln!("static membership {static_membership}: resumed {resumed:?} after the restart");

    p.settle(SETTLE).await;
    assert_exact(&p, &d, &sent).await?;
    assert_eq!(
        p.count("SELECT count(*) FROM stg.order_events").await?,
        12_000
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    eventually("stg to report healthy", Duration::from_secs(30), || async {
        let (status, _) = http(addr, "GET", "/health", "").await.ok()?;
        (status == 200).then_some(())
    })
    .await;

    assert_eq!(terminate(child).await?, Some(0));
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_under_load_commits_again_within_15_s() -> anyhow::Result<()> {
    killed_under_load_resumes_quickly(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_static_membership_a_killed_service_takes_its_partitions_back_at_once(
) -> anyhow::Result<()> {
    killed_under_load_resumes_quickly(true).await
}
