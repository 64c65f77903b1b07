//! SIGTERM while a service waits on someone else's lock, on the real binary: a rule edit left
//! open in a `psql` session holds the lock every datamart batch takes on `cdm.tag_rules`.
//! service-cdm's statements give up at the session's lock timeout (a systemic pause, not a
//! rejection); a SIGTERM meanwhile abandons the attempt after the stop grace and the process
//! is gone well within its stop deadline. Started again once the edit commits, it redoes the
//! abandoned work and the counters come out exact (docs/failures.md, "Nothing waits forever").

use std::time::Duration;

use vault_runtime::STOP_WITHIN;
use vault_tests::eventually;
use vault_tests::expect::{assert_exact, messages};
use vault_tests::pipeline::{Pipeline, Service};
use vault_tests::process::{spawn, terminate, terminate_timed, Stopped};

const SETTLE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_service_cdm_waiting_on_a_rule_edit_held_open() -> anyhow::Result<()> {
    let mut p = Pipeline::start(2).await?;
    let env = p.hand_to_binary(Service::Cdm).await?;
    let log_name = format!("{}.log", vault_tests::unique("cdm-rule-edit"));
    let child = spawn("service-cdm", &env, &log_name)?;

    let (d, sent) = p.seeded_orders((20, 4), 23, 230_000, 600).await?;
    let (first, second) = sent.split_at(300);
    p.produce_raw(&messages(first)).await?;
    p.settle(SETTLE).await;

    // The edit is left open; the next orders reach service-cdm, which waits on its lock.
    let editor = p.db().await?;
    editor
        .batch_execute("BEGIN; UPDATE cdm.tag_rules SET threshold = threshold")
        .await?;
    p.produce_raw(&messages(second)).await?;
    let observer = p.db().await?;
    eventually(
        "service-cdm to wait on the rule edit's lock",
        SETTLE,
        || async {
            let waiting: i64 = observer
                .query_one(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                 WHERE NOT l.granted AND c.relname = 'tag_rules'",
                    &[],
                )
                .await
                .ok()?
                .get(0);
            (waiting > 0).then_some(())
        },
    )
    .await;

    let Stopped {
        took, log: text, ..
    } = terminate_timed(child, &log_name).await?;
    assert!(
        took < STOP_WITHIN,
        "stopped {took:?} after SIGTERM, past its deadline: {text}"
    );
    assert_eq!(
        p.count("SELECT count(*) FROM ops.dead_letters").await?,
        0,
        "{text}"
    );

    // The edit commits; service-cdm, started again, counts what it abandoned.
    editor.batch_execute("COMMIT").await?;
    let child = spawn("service-cdm", &env, &log_name)?;
    p.settle(SETTLE).await;
    assert_exact(&p, &d, &sent).await?;
    assert_eq!(terminate(child).await?, Some(0));
    p.shutdown().await
}
