//! Redis faults (docs/failures.md), each on a Redis of the test's own: emptied mid-stream
//! (FLUSHALL, as a restart without persistence leaves it) service-stg pauses instead of
//! dead-lettering valid orders, and every order arrives once the dictionaries are back; frozen
//! (SIGSTOP) a command fails within its timeout and the batch is retried, not hung; a user
//! that is really unknown is still one dead letter; and datagen never issues an order id
//! twice, whatever happens to its counter.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bb8_redis::redis::{self, AsyncCommands};
use datagen::dictionary::Dictionary;
use datagen::order_ids::{time_floor, OrderIds, COUNTER_KEY};
use rand::SeedableRng;
use serde_json::Value;
use vault_core::{OrderStatus, RawOrder};
use vault_runtime::REDIS_COMMAND_TIMEOUT;
use vault_tests::eventually;
use vault_tests::oracle::{assert_exact, Model};
use vault_tests::orders::{message, order, random_dictionary};
use vault_tests::pipeline::{http, Datagen, Overrides, Pipeline, Service};
use vault_tests::servers::PrivateRedis;
use vault_tests::sql::Columns;

const SETTLE: Duration = Duration::from_secs(180);
/// How long a fault is held: every back-off step up to several seconds gets its chance to
/// reject something.
const HOLD: Duration = Duration::from_secs(8);

/// A pipeline whose services use `redis`, in small batches so that a few thousand orders take
/// service-stg long enough to fault it mid-stream.
async fn pipeline_on(redis: &PrivateRedis) -> anyhow::Result<Pipeline> {
    Pipeline::start_with(
        2,
        Overrides {
            redis_url: Some(redis.url()),
            service_env: [("BATCH_MAX_MESSAGES".to_owned(), "20".to_owned())].into(),
            ..Overrides::default()
        },
    )
    .await
}

async fn health(p: &Pipeline, service: Service) -> anyhow::Result<(u16, Value)> {
    let (status, body) = http(p.http_addr(service).expect("running"), "GET", "/health", "").await?;
    Ok((status, serde_json::from_str(&body)?))
}

/// Waits until service-stg answers 503 with a cause that mentions `needle` and at least one
/// retry; returns that answer. On time-out the panic shows the last answer.
async fn await_stg_paused(p: &Pipeline, needle: &str) -> Value {
    let deadline = Instant::now() + SETTLE;
    let mut last = String::new();
    loop {
        if let Ok((status, body)) = health(p, Service::Stg).await {
            let cause = body["worker"]["cause"].as_str().unwrap_or_default();
            if status == 503
                && cause.contains(needle)
                && body["worker"]["retries"].as_u64() > Some(0)
            {
                return body;
            }
            last = format!("{status} {body}");
        }
        assert!(
            Instant::now() < deadline,
            "service-stg did not pause naming `{needle}`; last answer: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many orders service-stg has staged.
async fn staged(p: &Pipeline) -> anyhow::Result<i64> {
    p.count("SELECT count(*) FROM stg.order_events").await
}

/// Waits until service-stg has staged some of the `total` orders, and returns how many.
async fn some_staged(p: &Pipeline) -> i64 {
    eventually(
        "service-stg to stage some of the orders",
        SETTLE,
        || async {
            let n = staged(p).await.ok()?;
            (n > 0).then_some(n)
        },
    )
    .await
}

/// Holds a fault for [`HOLD`]: nothing may be rejected meanwhile.
async fn hold_without_dead_letters(p: &Pipeline) -> anyhow::Result<()> {
    let held = Instant::now();
    while held.elapsed() < HOLD {
        assert_eq!(
            p.count("SELECT count(*) FROM ops.dead_letters").await?,
            0,
            "a Redis fault made a dead letter"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// The model of what the datamarts must hold after `sent`.
fn model_of(d: &Dictionary, sent: &[RawOrder]) -> Model {
    let mut model = Model::new();
    model.dictionary(d);
    for order in sent {
        model
            .sent(&message(order).1)
            .expect("the test sent a countable order");
    }
    model
}

/// Orders of `d`: `count` of them from id `first`, with the later versions of some.
fn orders_of(d: &Dictionary, first: i64, count: u64, seed: u64) -> Vec<RawOrder> {
    datagen::generate::orders(
        &mut rand::rngs::StdRng::seed_from_u64(seed),
        d,
        first,
        count,
    )
}

/// After a fault has been healed: everything arrives, nothing was rejected, the counters are
/// exact and agree with the recount, and service-stg is healthy again.
async fn assert_everything_arrived(
    p: &Pipeline,
    d: &Dictionary,
    sent: &[RawOrder],
    total: i64,
) -> anyhow::Result<()> {
    p.settle(SETTLE).await;
    assert_eq!(staged(p).await?, total);
    assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
    assert_exact(p, &model_of(d, sent)).await;
    eventually(
        "service-stg to report healthy again",
        Duration::from_secs(30),
        || async {
            let (status, _) = health(p, Service::Stg).await.ok()?;
            (status == 200).then_some(())
        },
    )
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_emptied_mid_stream_pauses_service_stg_and_every_order_arrives_once_the_dictionaries_are_back(
) -> anyhow::Result<()> {
    let redis = PrivateRedis::start().await?;
    let p = pipeline_on(&redis).await?;
    let d = random_dictionary(40, 6);
    p.put_dictionary(&d).await?;
    let total = 3000;
    let sent = orders_of(&d, 51_000, total, 61);
    p.produce_raw(&vault_tests::expect::messages(&sent)).await?;

    // Redis is emptied while service-stg is in the middle of the orders.
    let before = some_staged(&p).await;
    redis.flush_all().await?;
    assert!(
        before < total as i64,
        "service-stg had staged all the orders before Redis was emptied: the fault missed"
    );
    let paused = await_stg_paused(&p, "Redis holds no dictionaries").await;
    assert_eq!(paused["worker"]["state"], "retrying", "{paused}");

    // The pause holds: no valid order becomes an `unknown_user` dead letter, and the orders
    // after the fault wait instead of being skipped.
    hold_without_dead_letters(&p).await?;
    let waiting = staged(&p).await?;
    assert!(
        waiting < total as i64,
        "orders were waiting when Redis was emptied ({waiting} of {total} staged)"
    );
    let (status, body) = health(&p, Service::Stg).await?;
    assert_eq!(status, 503, "still paused: {body}");
    assert!(
        body["worker"]["retries"].as_u64() > paused["worker"]["retries"].as_u64(),
        "retried meanwhile: {body}"
    );

    // The dictionaries are loaded again, as datagen does; service-stg resumes by itself.
    p.put_dictionary(&d).await?;
    assert_everything_arrived(&p, &d, &sent, total as i64).await?;
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_fails_each_command_within_the_timeout_and_service_stg_retries_until_it_answers(
) -> anyhow::Result<()> {
    let redis = PrivateRedis::start().await?;

    // A command on a connection already open does not wait for ever ...
    let pool = vault_runtime::redis_pool(&vault_runtime::RedisSettings {
        url: vault_runtime::Secret::new(redis.url()),
        pool_size: 2,
    })?;
    let mut conn = pool.get_owned().await?;
    let () = conn.set("probe", "1").await?;
    redis.freeze()?;
    let asked = Instant::now();
    let answer: Result<Result<Vec<Option<String>>, redis::RedisError>, _> =
        tokio::time::timeout(REDIS_COMMAND_TIMEOUT * 3, conn.mget(&["probe", "other"])).await;
    let waited = asked.elapsed();
    assert!(
        matches!(answer, Ok(Err(_))),
        "a frozen Redis answered or hung: {answer:?}"
    );
    assert!(
        waited < REDIS_COMMAND_TIMEOUT + Duration::from_secs(2),
        "{waited:?}"
    );
    // ... and neither does taking a connection from the pool.
    drop(conn);
    let asked = Instant::now();
    let checkout = tokio::time::timeout(REDIS_COMMAND_TIMEOUT * 3, pool.get()).await;
    assert!(
        matches!(checkout, Ok(Err(_))),
        "a checkout hung or succeeded"
    );
    assert!(
        asked.elapsed() < REDIS_COMMAND_TIMEOUT * 2,
        "{:?}",
        asked.elapsed()
    );
    redis.thaw()?;

    // service-stg, with Redis frozen mid-stream, pauses and retries instead of hanging.
    let p = pipeline_on(&redis).await?;
    let d = random_dictionary(40, 6);
    p.put_dictionary(&d).await?;
    let total = 3000;
    let sent = orders_of(&d, 71_000, total, 73);
    p.produce_raw(&vault_tests::expect::messages(&sent)).await?;
    let before = some_staged(&p).await;
    redis.freeze()?;
    assert!(
        before < total as i64,
        "service-stg had staged all the orders before Redis froze: the fault missed"
    );
    let paused = await_stg_paused(&p, "Redis").await;
    hold_without_dead_letters(&p).await?;
    let (status, body) = health(&p, Service::Stg).await?;
    assert_eq!(status, 503, "still paused: {body}");
    assert!(
        body["worker"]["retries"].as_u64() > paused["worker"]["retries"].as_u64(),
        "each attempt timed out and was retried: {body}"
    );
    assert!(staged(&p).await? < total as i64, "orders were waiting");
    redis.thaw()?;
    assert_everything_arrived(&p, &d, &sent, total as i64).await?;
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unknown_user_among_known_ones_is_one_dead_letter_and_nothing_pauses(
) -> anyhow::Result<()> {
    let redis = PrivateRedis::start().await?;
    let p = pipeline_on(&redis).await?;
    let d = random_dictionary(10, 3);
    p.put_dictionary(&d).await?;
    // A user and a restaurant Redis does not hold.
    let stranger = random_dictionary(1, 1);
    let known: Vec<RawOrder> = (0..30)
        .map(|i| {
            order(
                &d,
                81_000 + i,
                i as usize % 10,
                i as usize % 3,
                &[0],
                OrderStatus::Closed,
                0,
            )
        })
        .collect();
    let mut unknown_user = order(&d, 81_100, 0, 0, &[0], OrderStatus::Closed, 0);
    unknown_user.payload.user.id = stranger.users[0].id.clone();
    let mut batch: Vec<(String, Vec<u8>)> = known.iter().map(message).collect();
    batch.insert(15, message(&unknown_user));
    p.produce_raw(&batch).await?;
    p.settle(SETTLE).await;

    // An order alone in its batch, naming only a user and a restaurant Redis does not hold:
    // every lookup misses, but Redis does hold dictionaries, so it is the order's fault.
    let lone = order(&stranger, 81_200, 0, 0, &[0], OrderStatus::Closed, 0);
    p.produce_raw(&[message(&lone)]).await?;
    p.settle(SETTLE).await;

    let letters: HashMap<String, String> = p
        .db()
        .await?
        .pairs(
            "SELECT convert_from(message_key, 'UTF8'), error_kind FROM ops.dead_letters \
             WHERE service = 'service-stg'",
        )
        .await?
        .into_iter()
        .collect();
    assert_eq!(
        letters,
        HashMap::from([
            ("81100".to_owned(), "unknown_user".to_owned()),
            ("81200".to_owned(), "unknown_user".to_owned()),
        ])
    );
    assert_eq!(
        p.count("SELECT count(*) FROM ops.dead_letters").await?,
        2,
        "nothing else was rejected"
    );
    assert_eq!(staged(&p).await?, known.len() as i64);
    let (status, body) = health(&p, Service::Stg).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["worker"]["retries"], 0, "nothing paused: {body}");
    assert_exact(&p, &model_of(&d, &known)).await;
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagen_after_redis_is_emptied_issues_only_new_order_ids_and_writes_its_dictionaries_back(
) -> anyhow::Result<()> {
    let redis = PrivateRedis::start().await?;
    let p = pipeline_on(&redis).await?;
    let datagen = Datagen::start(&p, &redis.url()).await?;
    let addr = datagen.addr;
    // The counter as datagen used to start it, far below the time floor.
    p.put_redis(COUNTER_KEY, "10000000").await?;
    let push = || async {
        let (status, body) = http(addr, "POST", "/push", r#"{"N": 300}"#).await?;
        anyhow::ensure!(status == 200, "POST /push answered {status}: {body}");
        let body: Value = serde_json::from_str(&body)?;
        let id = |field: &str| body[field].as_i64().expect("an order id");
        anyhow::Ok((id("first_order_id"), id("last_order_id")))
    };
    let floor = time_floor(chrono::Utc::now());
    let first = push().await?;
    assert!(first.0 > floor, "ids start above the time floor: {first:?}");
    p.settle(SETTLE).await;
    assert_eq!(staged(&p).await?, 300);

    // Redis loses everything: the counter and the dictionaries.
    redis.flush_all().await?;
    let pool = vault_runtime::redis_pool(&vault_runtime::RedisSettings {
        url: vault_runtime::Secret::new(redis.url()),
        pool_size: 1,
    })?;
    let keys: i64 = redis::cmd("DBSIZE")
        .query_async(&mut *pool.get().await?)
        .await?;
    assert_eq!(keys, 0, "Redis was emptied");
    let second = push().await?;
    assert!(
        second.0 > first.1,
        "an id was issued again after the flush: {first:?} then {second:?}"
    );
    p.settle(SETTLE).await;
    // Every order is a new row: no id named an order already staged.
    assert_eq!(staged(&p).await?, 600);
    for (from, to) in [first, second] {
        assert_eq!(
            p.count(&format!(
                "SELECT count(*) FROM stg.order_events WHERE object_id BETWEEN {from} AND {to}"
            ))
            .await?,
            300
        );
    }
    // datagen wrote its dictionaries back before pushing: nothing rejected, nothing paused.
    assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
    assert_eq!(p.counter_mismatches().await?, 0);
    datagen.stop().await?;
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_id_blocks_stay_disjoint_across_replicas_and_above_every_id_issued_before_a_flush(
) -> anyhow::Result<()> {
    let redis = PrivateRedis::start().await?;
    let pool = vault_runtime::redis_pool(&vault_runtime::RedisSettings {
        url: vault_runtime::Secret::new(redis.url()),
        pool_size: 4,
    })?;
    let set_counter = |value: i64| {
        let pool = pool.clone();
        async move {
            let () = pool.get().await?.set(COUNTER_KEY, value).await?;
            anyhow::Ok(())
        }
    };

    // A counter left far below the floor (as datagen used to start it) is raised to it.
    set_counter(10_000_000).await?;
    let floor = time_floor(chrono::Utc::now());
    let a = std::sync::Arc::new(OrderIds::default());
    let first = a.reserve(&pool, 100).await?;
    assert!(first.first > floor, "{first:?}");
    assert!(!first.counter_was_missing);

    // Two replicas at once: their blocks never overlap.
    let b = std::sync::Arc::new(OrderIds::default());
    let reserve_many = |ids: std::sync::Arc<OrderIds>| {
        let pool = pool.clone();
        async move {
            let mut blocks = Vec::new();
            for _ in 0..20 {
                blocks.push(ids.reserve(&pool, 1000).await?);
            }
            anyhow::Ok(blocks)
        }
    };
    let (from_a, from_b) = tokio::try_join!(reserve_many(a.clone()), reserve_many(b))?;
    let mut blocks: Vec<(i64, i64)> = from_a
        .iter()
        .chain(&from_b)
        .map(|r| (r.first, r.last))
        .collect();
    blocks.sort_unstable();
    for pair in blocks.windows(2) {
        assert!(pair[0].1 < pair[1].0, "overlapping blocks: {pair:?}");
    }
    assert!(blocks[0].0 > first.last);

    // A counter that ran ahead of the clock (a fast run), then Redis loses it: this process
    // still goes on above every id it issued.
    let ahead = time_floor(chrono::Utc::now()) + 1_000_000_000;
    set_counter(ahead).await?;
    let fast = a.reserve(&pool, 10).await?;
    assert_eq!(fast.first, ahead + 1);
    redis.flush_all().await?;
    let after = a.reserve(&pool, 10).await?;
    assert!(after.counter_was_missing);
    assert!(after.first > fast.last, "{fast:?} then {after:?}");
    Ok(())
}
