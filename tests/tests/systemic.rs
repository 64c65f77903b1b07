//! Systemic faults (docs/failures.md): a warehouse that cannot take a stage's writes pauses
//! that stage — `/health` 503 naming the cause, no dead letter ever — and it resumes by
//! itself when the fault clears, with the counters exact.

use std::time::{Duration, Instant};

use datagen::dictionary::synthetic;
use rand::SeedableRng;
use vault_core::RawOrder;
use vault_tests::expect::{expected, stored};
use vault_tests::pipeline::{http, Overrides, Pipeline, Service};
use vault_tests::{eventually, stack};

const SETTLE: Duration = Duration::from_secs(180);
/// How long the faults last: long enough that every back-off step and every bisection
/// would have had its chance to reject something.
const FAULT: Duration = Duration::from_secs(30);

fn messages(orders: &[RawOrder]) -> Vec<(String, Vec<u8>)> {
    orders
        .iter()
        .map(|o| {
            (
                o.object_id.to_string(),
                serde_json::to_vec(o).expect("serialize"),
            )
        })
        .collect()
}

/// Waits until `service` answers 503 with a pause cause that mentions `needle`.
async fn await_paused(p: &Pipeline, service: Service, needle: &str) {
    let addr = p.http_addr(service).expect("running");
    let what = format!("{service:?} to pause naming {needle}");
    eventually(&what, SETTLE, || async {
        let (status, body) = http(addr, "GET", "/health", "").await.ok()?;
        let body: serde_json::Value = serde_json::from_str(&body).ok()?;
        let cause = body["worker"]["cause"].as_str()?;
        (status == 503 && cause.contains(needle)).then_some(())
    })
    .await;
}

async fn health(p: &Pipeline, service: Service) -> anyhow::Result<(u16, serde_json::Value)> {
    let (status, body) = http(p.http_addr(service).expect("running"), "GET", "/health", "").await?;
    Ok((status, serde_json::from_str(&body)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_and_a_revoked_grant_pause_the_stages_and_reject_nothing(
) -> anyhow::Result<()> {
    let (admin_url, role_url) = stack().await.fresh_database_with_role().await?;
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

    // Mid-stream: the category datamart disappears (renamed) and service-dds loses its
    // right to write order statuses, while orders keep coming.
    admin
        .batch_execute(&format!(
            "ALTER TABLE cdm.user_category_counters RENAME TO user_category_counters_away; \
             REVOKE INSERT ON dds.s_order_status FROM {role}"
        ))
        .await?;
    let faulted = Instant::now();
    p.produce_raw(&messages(second)).await?;
    await_paused(&p, Service::Dds, "dds.s_order_status").await;
    // service-cdm pauses too once events reach it; dds publishes nothing while paused, so
    // feed it the first half's events again by replaying what dds already published: the
    // counter topic holds them, and a fresh look is enough to hit the missing table.
    p.produce(&p.counter_topic, &replayed_counter_events(&p).await?)
        .await?;
    await_paused(&p, Service::Cdm, "cdm.user_category_counters").await;
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
    assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
    let (products, categories) = expected(&d, &sent);
    assert_eq!(
        stored(&p, "cdm.user_product_counters", "product_id").await?,
        products
    );
    assert_eq!(
        stored(&p, "cdm.user_category_counters", "category_id").await?,
        categories
    );
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

/// The messages already on the counter topic, to produce again (a replay changes nothing).
async fn replayed_counter_events(p: &Pipeline) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = p
        .stack
        .kafka_config()
        .set("group.id", vault_tests::unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[p.counter_topic.as_str()])?;
    let ends: i64 = p.end_offsets(&p.counter_topic).await?.values().sum();
    // Polling blocks: off the async threads, which the services run on.
    let out = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (out.len() as i64) < ends.min(50) && Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                out.push((
                    String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                    message.payload().unwrap_or_default().to_vec(),
                ));
            }
        }
        out
    })
    .await?;
    anyhow::ensure!(!out.is_empty(), "no counter events to replay");
    Ok(out)
}
