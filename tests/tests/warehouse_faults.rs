//! Faults of the warehouse that Postgres reports in many ways — a table renamed away, a lock
//! held by someone else, a statement that runs out of time, a tablespace with no space left —
//! each injected while the stage under test has batches in flight. Each must pause that stage
//! (`/health` 503 naming the cause), turn no message into a dead letter, and leave the
//! counters equal to the recount once it heals (docs/failures.md).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use datagen::dictionary::Dictionary;
use rand::SeedableRng;
use vault_core::contract::RawOrder;
use vault_core::HashKey;
use vault_runtime::Stage;
use vault_tests::expect::{assert_exact, expected, messages};
use vault_tests::faults::{
    await_healthy, await_paused, health, hold_without_dead_letters, Altered, SETTLE,
};
use vault_tests::pipeline::{Pipeline, Service};
use vault_tests::sql::Columns;

/// How long each fault is held: past several back-off steps and bisections, each of which
/// would have rejected something under the old classification.
const HOLD: Duration = Duration::from_secs(12);

fn orders(seed: u64, d: &Dictionary, first_id: i64, n: u64) -> Vec<RawOrder> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    datagen::generate::orders(&mut rng, d, first_id, n)
}

async fn dictionary(p: &Pipeline) -> anyhow::Result<Dictionary> {
    let d = vault_tests::orders::random_dictionary(20, 4);
    p.put_dictionary(&d).await?;
    Ok(d)
}

/// The retries `service` has made so far, from its `/health`.
async fn retries(p: &Pipeline, service: Service) -> anyhow::Result<u64> {
    let (_, doc) = health(p, service).await?;
    Ok(doc["worker"]["retries"].as_u64().unwrap_or(0))
}

/// A fault injected mid-stream: `inject` runs on the admin session right after the second
/// half of the orders is produced (so the stage under test has them in flight), `heal` once
/// the stage has paused naming `cause` and held it for `hold`. `{role}` in either stands for
/// the services' role. `setup`, given the dictionary and the orders, writes SQL run before
/// any order is produced.
struct Fault {
    service: Service,
    cause: &'static str,
    inject: &'static str,
    heal: &'static str,
    hold: Duration,
    setup: Option<fn(&Dictionary, &[RawOrder]) -> String>,
}

/// Runs `fault` over 400 orders: the stage pauses naming the cause, nothing becomes a dead
/// letter while it holds, and once healed every order counts exactly and every service is
/// healthy again.
async fn paused_by(fault: Fault, seed: u64, first_id: i64) -> anyhow::Result<()> {
    let Altered {
        pg: _pg,
        pipeline: p,
        admin,
        role,
    } = Altered::start(2).await?;
    let d = dictionary(&p).await?;
    let sent = orders(seed, &d, first_id, 400);
    if let Some(setup) = fault.setup {
        p.migrated().await;
        let sql = setup(&d, &sent);
        admin.batch_execute(&sql).await.context(sql)?;
    }
    let (first, second) = sent.split_at(200);
    p.produce_raw(&messages(first)).await?;
    p.settle(SETTLE).await;

    let before = retries(&p, fault.service).await?;
    p.produce_raw(&messages(second)).await?;
    admin
        .batch_execute(&fault.inject.replace("{role}", &role))
        .await?;
    let faulted = Instant::now();
    let doc = await_paused(&p, fault.service, fault.cause).await;
    assert!(
        doc["worker"]["retries"].as_u64() > Some(before),
        "the fault hit a batch in flight: {doc}"
    );
    hold_without_dead_letters(&p, faulted + fault.hold).await?;
    admin
        .batch_execute(&fault.heal.replace("{role}", &role))
        .await?;
    p.settle(SETTLE).await;
    assert_exact(&p, &d, &sent).await?;
    assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
    await_healthy(&p).await;
    p.shutdown().await
}

#[tokio::test]
async fn the_warehouse_check_covers_every_data_vault_table() -> anyhow::Result<()> {
    let (_, _, db) = vault_tests::warehouse::migrated().await?;
    let in_schema: BTreeSet<String> = db
        .column("SELECT 'dds.' || tablename FROM pg_tables WHERE schemaname = 'dds'")
        .await?
        .into_iter()
        .collect();
    let checked: BTreeSet<String> = service_dds::DdsStage::tables()
        .iter()
        .map(|table| table.name.to_owned())
        .collect();
    assert_eq!(
        checked, in_schema,
        "the tables service-dds checks are the Data Vault's tables"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_effectivity_table_renamed_mid_stream_pauses_dds_and_rejects_nothing(
) -> anyhow::Result<()> {
    let Altered {
        pg: _pg,
        pipeline: p,
        admin,
        ..
    } = Altered::start(2).await?;
    let d = dictionary(&p).await?;
    let sent = orders(43, &d, 51_000, 800);
    let mut chunks = sent.chunks(200);
    p.produce_raw(&messages(chunks.next().expect("a chunk")))
        .await?;
    p.settle(SETTLE).await;

    for table in [
        "l_order_product_category",
        "s_order_version",
        "s_order_product_category_effectivity",
    ] {
        let before = retries(&p, Service::Dds).await?;
        // The next orders are on their way to service-dds when the table goes.
        p.produce_raw(&messages(chunks.next().expect("a chunk")))
            .await?;
        admin
            .batch_execute(&format!("ALTER TABLE dds.{table} RENAME TO {table}_away"))
            .await?;
        let faulted = Instant::now();
        let doc = await_paused(&p, Service::Dds, &format!("dds.{table}")).await;
        assert!(
            doc["worker"]["retries"].as_u64() > Some(before),
            "the fault hit a batch in flight: {doc}"
        );
        hold_without_dead_letters(&p, faulted + HOLD).await?;
        admin
            .batch_execute(&format!("ALTER TABLE dds.{table}_away RENAME TO {table}"))
            .await?;
        p.settle(SETTLE).await;
    }
    assert_exact(&p, &d, &sent[..800]).await?;
    assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
    await_healthy(&p).await;
    p.shutdown().await
}

/// Someone edits a rule in psql and leaves the transaction open: it holds the table lock that
/// every datamart batch needs to read the rules consistently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_edit_held_open_pauses_cdm_on_its_lock_timeout_and_rejects_nothing(
) -> anyhow::Result<()> {
    let fault = Fault {
        service: Service::Cdm,
        cause: "lock timeout",
        inject: "BEGIN; UPDATE cdm.tag_rules SET threshold = threshold",
        heal: "COMMIT",
        hold: HOLD,
        setup: None,
    };
    paused_by(fault, 44, 52_000).await
}

/// Every statement writing order statuses outlasts the session's statement timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_pauses_dds_and_rejects_nothing() -> anyhow::Result<()> {
    let fault = Fault {
        service: Service::Dds,
        cause: "statement timeout",
        inject: "CREATE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$; \
                 CREATE TRIGGER slow BEFORE INSERT ON dds.s_order_status \
                     FOR EACH STATEMENT EXECUTE FUNCTION public.slow()",
        heal: "DROP TRIGGER slow ON dds.s_order_status",
        hold: Duration::from_secs(2),
        setup: None,
    };
    paused_by(fault, 45, 53_000).await
}

/// A refusal Postgres reports as a constraint violation — a message fault by its kind — and
/// that the catalog check cannot see: only the warehouse probe, which writes a made-up row
/// the same way, tells that the table refuses every row, not the messages' rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constraint_refusing_every_row_pauses_dds_through_the_probe_and_rejects_nothing(
) -> anyhow::Result<()> {
    let fault = Fault {
        service: Service::Dds,
        cause: "a test write to the warehouse failed",
        inject: "ALTER TABLE dds.s_order_cost ADD CONSTRAINT refuses_all CHECK (false) NOT VALID",
        heal: "ALTER TABLE dds.s_order_cost DROP CONSTRAINT refuses_all",
        hold: HOLD,
        setup: None,
    };
    paused_by(fault, 47, 55_000).await
}

/// A tag rule on a category that some user's counter reaches only in the last quarter of
/// the orders (docs/contract.md §6.1): the batch that counts that order writes a tag event.
fn a_rule_crossed_in_the_last_quarter(d: &Dictionary, sent: &[RawOrder]) -> String {
    let (_, before) = expected(d, &sent[..sent.len() * 3 / 4]);
    let (_, after) = expected(d, sent);
    let ((_, category), threshold) = after
        .iter()
        .filter_map(|(key, &count)| {
            let earlier = before.get(key).copied().unwrap_or(0);
            (count > earlier).then_some((key, earlier + 1))
        })
        .max_by_key(|(_, threshold)| *threshold)
        .expect("a counter that grows in the last quarter");
    let name = d
        .restaurants
        .iter()
        .flat_map(|r| &r.menu)
        .map(|item| item.category.as_str())
        .find(|name| HashKey::category(name).to_string() == *category)
        .expect("a category of the menus");
    format!(
        "INSERT INTO cdm.tag_rules (tag, scope, target, threshold) \
         VALUES ('Late Lover', 'category', '{}', {threshold})",
        name.replace('\'', "''")
    )
}

/// Tag events take their id from a sequence the role may no longer use, while a rule is
/// crossed by orders in flight; the table grants are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_sequence_pauses_cdm_and_rejects_nothing() -> anyhow::Result<()> {
    let fault = Fault {
        service: Service::Cdm,
        cause: "sequence",
        inject: "REVOKE USAGE, SELECT, UPDATE ON SEQUENCE cdm.user_tag_events_id_seq FROM {role}",
        heal: "GRANT USAGE, SELECT, UPDATE ON SEQUENCE cdm.user_tag_events_id_seq TO {role}",
        hold: HOLD,
        setup: Some(a_rule_crossed_in_the_last_quarter),
    };
    paused_by(fault, 48, 56_000).await
}

/// The tag outbox relay and the rule watcher run beside the batch loop: their failures are
/// named on `/health` (503) and cleared once they work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_outbox_relay_and_rule_watcher_are_named_on_health_until_they_recover(
) -> anyhow::Result<()> {
    let Altered {
        pg: _pg,
        pipeline: p,
        admin,
        ..
    } = Altered::start(1).await?;
    p.migrated().await;
    await_healthy(&p).await;
    admin
        .batch_execute(
            "ALTER TABLE cdm.user_tag_events RENAME TO user_tag_events_away; \
             ALTER TABLE cdm.tag_rules_applied RENAME TO tag_rules_applied_away",
        )
        .await?;
    let doc = vault_tests::eventually("both companions to be named", SETTLE, || async {
        let (status, doc) = health(&p, Service::Cdm).await.ok()?;
        let faults = &doc["worker"]["faults"];
        (status == 503
            && faults["tag_outbox"].as_str()?.contains("user_tag_events")
            && faults["tag_rule_watcher"]
                .as_str()?
                .contains("tag_rules_applied"))
        .then_some(doc)
    })
    .await;
    eprintln!("{doc}");
    admin
        .batch_execute(
            "ALTER TABLE cdm.user_tag_events_away RENAME TO user_tag_events; \
             ALTER TABLE cdm.tag_rules_applied_away RENAME TO tag_rules_applied",
        )
        .await?;
    await_healthy(&p).await;
    let (_, doc) = health(&p, Service::Cdm).await?;
    assert!(doc["worker"]["faults"].is_null(), "{doc}");
    p.shutdown().await
}

/// Mounts a tmpfs of `megabytes` at `dir` for the private Postgres; false, with a visible
/// line, where this machine does not allow it (not root, or a container without the
/// capability): the full-disk case then does not run, and says so.
fn small_filesystem(dir: &std::path::Path, megabytes: u32) -> anyhow::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m,mode=0700")])
        .arg("tmpfs")
        .arg(dir)
        .status()
        .is_ok_and(|status| status.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root); the full-disk case did not run");
        return Ok(false);
    }
    let _ = std::process::Command::new("chown")
        .arg("postgres:postgres")
        .arg(dir)
        .status();
    Ok(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tablespace_pauses_cdm_and_rejects_nothing() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(vault_tests::unique("vaultline-tablespace"));
    if !small_filesystem(&dir, 4)? {
        return Ok(());
    }
    // Declared before the server, so dropped after it (locals drop in reverse order).
    let _unmount = Unmount(dir.clone());
    let Altered {
        pg: _pg,
        pipeline: p,
        admin,
        ..
    } = Altered::start(2).await?;
    let d = dictionary(&p).await?;
    let sent = orders(46, &d, 54_000, 1_200);
    let (first, second) = sent.split_at(200);
    p.produce_raw(&messages(first)).await?;
    p.settle(SETTLE).await;

    // The product datamart moves to a small tablespace, which a filler then fills up.
    admin
        .batch_execute(&format!(
            "CREATE TABLESPACE small LOCATION '{}'",
            dir.display()
        ))
        .await?;
    admin
        .batch_execute(
            "ALTER TABLE cdm.user_product_counters SET TABLESPACE small; \
             CREATE TABLE public.filler (pad text) TABLESPACE small",
        )
        .await?;
    loop {
        let filled = admin
            .batch_execute(
                "INSERT INTO public.filler \
                 SELECT repeat(md5(g::text), 60) FROM generate_series(1, 500) AS g",
            )
            .await;
        match filled {
            Ok(()) => continue,
            Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL) => {
                break
            }
            Err(error) => anyhow::bail!("filling the tablespace: {error:?}"),
        }
    }
    p.produce_raw(&messages(second)).await?;
    let faulted = Instant::now();
    await_paused(&p, Service::Cdm, "No space left on device").await;
    hold_without_dead_letters(&p, faulted + HOLD).await?;
    admin.batch_execute("DROP TABLE public.filler").await?;
    p.settle(SETTLE).await;
    assert_exact(&p, &d, &sent).await?;
    await_healthy(&p).await;
    p.shutdown().await
}

/// Unmounts the test's tmpfs when dropped (the server using it is gone by then).
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir(&self.0);
    }
}
