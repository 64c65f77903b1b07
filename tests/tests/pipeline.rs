//! End to end: orders through the real broker, Redis and Postgres, the services in-process
//! (or as their real binaries where a test kills them), each test on its own database, topics
//! and consumer groups. Every fault is injected mid-stream, and each test shows that it was.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Child;
use std::time::Duration;

use datagen::dictionary::Dictionary;
use rand::SeedableRng;
use serde_json::{json, Value};
use vault_core::{EntityId, HashKey, OrderStatus, RawOrder};
use vault_tests::oracle::{assert_exact, Model};
use vault_tests::orders::{message, order, random_dictionary};
use vault_tests::pipeline::{http, Datagen, Overrides, Pipeline, Service};
use vault_tests::process::{log, spawn, terminate};
use vault_tests::sql::Columns;
use vault_tests::{eventually, unique};

const SETTLE: Duration = Duration::from_secs(180);

/// The datamarts hold exactly what the independent model (`vault_tests::oracle`) computes
/// from the messages sent and the dictionary, and agree with the recount over the Data Vault.
async fn assert_counters_match(p: &Pipeline, d: &Dictionary, sent: &[RawOrder]) {
    let mut model = Model::new();
    model.dictionary(d);
    for order in sent {
        let (_, payload) = message(order);
        model
            .sent(&payload)
            .expect("the test sent a countable order");
    }
    assert_exact(p, &model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_orders_come_out_exact_and_a_full_replay_changes_nothing() -> anyhow::Result<()> {
    let mut p = Pipeline::start(3).await?;
    let datagen = Datagen::start(&p, &p.stack.redis_url).await?;
    let datagen_addr = datagen.addr;

    for bad in [
        r#"{"N": 0}"#,
        r#"{"N": -3}"#,
        "nonsense",
        r#"{"N": 1000000000}"#,
    ] {
        let (status, body) = http(datagen_addr, "POST", "/push", bad).await?;
        assert_eq!(status, 400, "{bad} -> {body}");
        let body: Value = serde_json::from_str(&body)?;
        assert_eq!(body["status"], "error");
    }
    let (status, body) = http(datagen_addr, "POST", "/push", r#"{"N": 400}"#).await?;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body)?;
    assert_eq!(body["status"], "success");
    assert_eq!(body["messages_pushed"], 400);
    let orders = 400;
    let later = body["later_versions"].as_i64().expect("later_versions");
    assert_eq!(later, 40);

    p.settle(SETTLE).await;
    assert_eq!(
        p.count("SELECT count(*) FROM stg.order_events").await?,
        orders
    );
    assert_eq!(p.count("SELECT count(*) FROM dds.h_order").await?, orders);
    assert_eq!(
        p.count("SELECT count(*) FROM dds.order_load_state").await?,
        orders
    );
    assert_eq!(
        p.count("SELECT count(*) FROM dds.l_order_user").await?,
        orders
    );
    // Every message is a distinct version with a status change: one status row each.
    assert_eq!(
        p.count("SELECT count(*) FROM dds.s_order_status").await?,
        orders + later
    );
    assert_eq!(
        p.count("SELECT count(*) FROM cdm.order_state WHERE update_ts IS NOT NULL")
            .await?,
        orders
    );
    assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
    assert_eq!(p.counter_mismatches().await?, 0);
    assert!(
        p.count("SELECT sum(order_cnt) FROM cdm.user_category_counters")
            .await?
            > 0
    );
    // Some orders were CLOSED then CANCELLED: their counts went back to zero somewhere or
    // were retracted; either way nothing is negative.
    assert_eq!(
        p.count("SELECT count(*) FROM cdm.user_product_counters WHERE order_cnt < 0")
            .await?,
        0
    );
    for service in Service::ALL {
        let addr = p.http_addr(service).expect("running");
        let (status, body) = http(addr, "GET", "/health", "").await?;
        assert_eq!(status, 200, "{service:?}: {body}");
        let body: Value = serde_json::from_str(&body)?;
        assert_eq!(body["worker"]["state"], "running");
        let (status, metrics) = http(addr, "GET", "/metrics", "").await?;
        assert_eq!(status, 200);
        let counted = |name: &str| -> f64 {
            metrics
                .lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.rsplit(' ').next())
                .and_then(|value| value.parse().ok())
                .unwrap_or(0.0)
        };
        assert!(counted("vaultline_messages_in_total{") > 0.0, "{metrics}");
        assert!(
            counted("vaultline_batch_duration_seconds_count{") > 0.0,
            "{metrics}"
        );
        assert!(
            metrics.contains("vaultline_consumer_lag_messages{"),
            "{metrics}"
        );
        if service == Service::Cdm {
            // The periodic check against the recount (every second here, once the group has
            // no lag) runs and finds the datamarts exact; until then its result is absent.
            eventually("the recount's result", SETTLE, || async {
                let (_, metrics) = http(addr, "GET", "/metrics", "").await.ok()?;
                metrics
                    .contains("vaultline_recount_differences{service=\"service-cdm\"} 0\n")
                    .then_some(())
            })
            .await;
        }
    }

    let before = p.snapshot().await?;
    for service in Service::ALL {
        p.stop_service(service).await?;
        p.reset_group(service);
    }
    for service in Service::ALL {
        p.start_service(service).await?;
    }
    p.settle(SETTLE).await;
    assert_eq!(
        p.snapshot().await?,
        before,
        "a full replay changed the warehouse"
    );

    datagen.stop().await?;
    p.shutdown().await
}

/// Menu indexes of two dishes sharing a category, and one of another category.
fn two_of_a_category_and_another(
    d: &Dictionary,
    restaurant: usize,
) -> Option<(usize, usize, usize)> {
    let menu = &d.restaurants[restaurant].menu;
    for i in 0..menu.len() {
        for j in i + 1..menu.len() {
            if menu[i].category == menu[j].category && menu[i].id != menu[j].id {
                let k = (0..menu.len()).find(|&k| menu[k].category != menu[i].category)?;
                return Some((i, j, k));
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_older_versions_and_cancellations_leave_counters_exact() -> anyhow::Result<()> {
    let p = Pipeline::start(2).await?;
    let (d, restaurant, (i, j, k)) = loop {
        let d = random_dictionary(3, 3);
        if let Some((r, dishes)) =
            (0..3).find_map(|r| two_of_a_category_and_another(&d, r).map(|x| (r, x)))
        {
            break (d, r, dishes);
        }
    };
    p.put_dictionary(&d).await?;
    let items = [i, j, k];
    let v1 = order(&d, 42, 0, restaurant, &items, OrderStatus::Delivering, 10);
    let v2 = order(&d, 42, 0, restaurant, &items, OrderStatus::Closed, 20);
    let v3 = order(&d, 42, 0, restaurant, &items, OrderStatus::Cancelled, 30);
    let other = order(&d, 43, 1, restaurant, &[i], OrderStatus::Closed, 20);

    // Newest first, then a duplicate, then an older version.
    let mut sent = vec![v2.clone(), v2.clone(), v1.clone(), other.clone()];
    p.produce_raw(&sent.iter().map(message).collect::<Vec<_>>())
        .await?;
    p.settle(SETTLE).await;
    assert_counters_match(&p, &d, &sent).await;
    let user = HashKey::user(&d.users[0].id);
    let category = HashKey::category(&d.restaurants[restaurant].menu[i].category);
    let client = p.db().await?;
    let row = client
        .query_one(
            "SELECT order_cnt FROM cdm.user_category_counters WHERE user_id = $1::text::uuid \
             AND category_id = $2::text::uuid",
            &[&user.to_string(), &category.to_string()],
        )
        .await?;
    assert_eq!(
        row.get::<_, i32>(0),
        1,
        "two dishes of one category count once"
    );
    assert_eq!(
        p.count("SELECT count(*) FROM cdm.user_product_counters WHERE order_cnt = 1")
            .await?,
        4,
        "three dishes of order 42 and one of order 43, once each"
    );

    // CLOSED then CANCELLED: order 42 stops counting; a late CLOSED changes nothing.
    p.produce_raw(&[message(&v3), message(&v2)]).await?;
    sent.extend([v3, v2]);
    p.settle(SETTLE).await;
    assert_counters_match(&p, &d, &sent).await;
    assert_eq!(
        p.count(
            "SELECT coalesce(sum(order_cnt), 0) FROM cdm.user_product_counters \
             WHERE user_id = (SELECT h_user_pk FROM dds.l_order_user l JOIN dds.h_order o \
                              USING (h_order_pk) WHERE o.order_id = 42)"
        )
        .await?,
        0
    );
    // Status history: CLOSED (v2) then CANCELLED (v3); the older DELIVERING never applied.
    let statuses: Vec<String> = client
        .column(
            "SELECT s.status FROM dds.s_order_status s JOIN dds.h_order o USING (h_order_pk) \
             WHERE o.order_id = 42 ORDER BY s.update_ts",
        )
        .await?
        .into_iter()
        .collect();
    assert_eq!(statuses, ["CLOSED", "CANCELLED"]);
    // The staging layer holds the newest version.
    assert_eq!(
        p.count("SELECT count(*) FROM stg.order_events WHERE object_id = 42 AND payload->>'final_status' = 'CANCELLED'").await?,
        1
    );
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_kept_with_reasons_and_replayed_once_fixed() -> anyhow::Result<()> {
    let p = Pipeline::start(3).await?;
    let d = random_dictionary(5, 2);
    p.put_dictionary(&d).await?;
    let good: Vec<RawOrder> = (0..30)
        .map(|n| {
            order(
                &d,
                1000 + n,
                (n % 5) as usize,
                (n % 2) as usize,
                &[0, 1],
                OrderStatus::Closed,
                5,
            )
        })
        .collect();
    let wrapped = order(&d, 2000, 1, 0, &[2], OrderStatus::Closed, 5);

    let ghost_user = unique("x").replace('-', "");
    let ghost_user = format!(
        "{:0>24}",
        &ghost_user[ghost_user.len().saturating_sub(24)..]
    )
    .chars()
    .map(|c| if c.is_ascii_hexdigit() { c } else { 'a' })
    .collect::<String>();
    let mut unknown_user = order(&d, 3000, 0, 0, &[0], OrderStatus::Closed, 5);
    unknown_user.payload.user.id = EntityId::parse(&ghost_user)?;
    let mut unknown_restaurant = order(&d, 3001, 0, 0, &[0], OrderStatus::Closed, 5);
    unknown_restaurant.payload.restaurant.id = EntityId::parse("ffffffffffffffffffffffff")?;
    let mut unknown_item = order(&d, 3002, 0, 0, &[0], OrderStatus::Closed, 5);
    unknown_item.payload.order_items[0].id = EntityId::parse("eeeeeeeeeeeeeeeeeeeeeeee")?;
    let mut missing_field =
        serde_json::to_value(order(&d, 3003, 0, 0, &[0], OrderStatus::Closed, 5))?;
    missing_field["payload"]
        .as_object_mut()
        .expect("payload")
        .remove("update_ts");
    let mut wrong_type = serde_json::to_value(order(&d, 3004, 0, 0, &[0], OrderStatus::Closed, 5))?;
    wrong_type["payload"]["order_items"][0]["quantity"] = json!("two");
    let mut not_an_order =
        serde_json::to_value(order(&d, 3005, 0, 0, &[0], OrderStatus::Closed, 5))?;
    not_an_order["object_type"] = json!("payment");
    let mut nul = serde_json::to_value(order(&d, 3006, 0, 0, &[0], OrderStatus::Closed, 5))?;
    nul["payload"]["order_items"][0]["name"] = json!("bad\u{0}name");

    let poison: Vec<(String, Vec<u8>, &str)> = vec![
        ("p1".into(), b"{not json".to_vec(), "invalid_json"),
        ("p2".into(), b"{}".to_vec(), "invalid_field"),
        (
            "3003".into(),
            missing_field.to_string().into_bytes(),
            "invalid_field",
        ),
        (
            "3004".into(),
            wrong_type.to_string().into_bytes(),
            "invalid_field",
        ),
        (
            "3005".into(),
            not_an_order.to_string().into_bytes(),
            "wrong_object_type",
        ),
        ("3006".into(), nul.to_string().into_bytes(), "nul_character"),
        (
            "3000".into(),
            serde_json::to_vec(&unknown_user)?,
            "unknown_user",
        ),
        (
            "3001".into(),
            serde_json::to_vec(&unknown_restaurant)?,
            "unknown_restaurant",
        ),
        (
            "3002".into(),
            serde_json::to_vec(&unknown_item)?,
            "unknown_menu_item",
        ),
    ];
    let mut stream: Vec<(String, Vec<u8>)> = good.iter().map(message).collect();
    // The Python reference sends a JSON string holding the document: accepted.
    stream.push((
        "2000".into(),
        serde_json::to_vec(&serde_json::to_string(&wrapped)?)?,
    ));
    for (n, (key, payload, _)) in poison.iter().enumerate() {
        stream.insert(n * 3 + 1, (key.clone(), payload.clone()));
    }
    p.produce_raw(&stream).await?;
    p.settle(SETTLE).await;
    // The offsets moved past the poison: everything on the raw topic is committed.
    let ends = p.end_offsets(&p.raw_topic).await?;
    let committed = p
        .stack
        .committed_offsets(p.group(Service::Stg), &p.raw_topic)
        .await?;
    assert_eq!(ends.values().sum::<i64>(), stream.len() as i64);
    for (partition, end) in &ends {
        assert_eq!(
            committed.get(partition).copied().flatten(),
            Some(*end).filter(|e| *e > 0)
        );
    }

    let mut sent = good.clone();
    sent.push(wrapped);
    assert_counters_match(&p, &d, &sent).await;
    assert_eq!(p.count("SELECT count(*) FROM stg.order_events").await?, 31);
    let client = p.db().await?;
    let letters: Vec<(String, String, String)> = client
        .query(
            "SELECT error_kind, topic, reason FROM ops.dead_letters ORDER BY error_kind",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut kinds: Vec<&str> = letters.iter().map(|(k, _, _)| k.as_str()).collect();
    let mut expected: Vec<&str> = poison.iter().map(|(_, _, k)| *k).collect();
    kinds.sort_unstable();
    expected.sort_unstable();
    assert_eq!(kinds, expected);
    assert!(letters
        .iter()
        .all(|(_, topic, reason)| topic == &p.raw_topic && !reason.is_empty()));
    assert!(
        letters
            .iter()
            .any(|(_, _, reason)| reason.contains(&ghost_user)),
        "{letters:?}"
    );

    // The missing user arrives; replaying its dead letter counts the order.
    let mut user = d.users[0].clone();
    user.id = EntityId::parse(&ghost_user)?;
    p.put_redis(&ghost_user, &serde_json::to_string(&user)?)
        .await?;
    let id: i64 = client
        .one("SELECT id FROM ops.dead_letters WHERE error_kind = 'unknown_user'")
        .await?;
    let (pool, producer) = p.tools()?;
    let replayed =
        vault_runtime::replay_dead_letters(&pool, &producer, Some("service-stg"), Some(&[id]))
            .await?;
    assert_eq!(replayed, 1);
    p.settle(SETTLE).await;
    assert_eq!(p.count("SELECT count(*) FROM stg.order_events").await?, 32);
    assert_eq!(
        p.count("SELECT count(*) FROM ops.dead_letters WHERE replayed_at IS NOT NULL")
            .await?,
        1
    );
    let mut fixed = Dictionary {
        users: vec![user],
        restaurants: d.restaurants.clone(),
    };
    fixed.users.extend(d.users.clone());
    sent.push(unknown_user);
    assert_counters_match(&p, &fixed, &sent).await;
    p.shutdown().await
}

/// Starts `service` as its real binary (small batches, so that a kill finds work in hand),
/// instead of in-process.
async fn launch_binary(p: &mut Pipeline, service: Service, log: &str) -> anyhow::Result<Child> {
    let mut env = p.hand_to_binary(service).await?;
    env.insert("BATCH_MAX_MESSAGES".into(), "50".into());
    spawn(service.binary(), &env, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_killed_or_stopped_mid_stream_lose_nothing_and_count_nothing_twice(
) -> anyhow::Result<()> {
    let mut p = Pipeline::start(3).await?;
    // stg and dds as processes, to be killed with SIGKILL; cdm in-process, to be stopped.
    let logs = [unique("killed-stg") + ".log", unique("killed-dds") + ".log"];
    let mut stg = launch_binary(&mut p, Service::Stg, &logs[0]).await?;
    let mut dds_env = p.hand_to_binary(Service::Dds).await?;
    dds_env.insert("BATCH_MAX_MESSAGES".into(), "50".into());
    let (d, sent) = p.seeded_orders((20, 4), 11, 5_000, 3_500).await?;
    let (first, second) = sent.split_at(3_000);
    p.produce_raw(&first.iter().map(message).collect::<Vec<_>>())
        .await?;
    // dds starts once stg has made it a backlog, so that it is killed with work left even
    // when stg is the slower of the two.
    eventually("stg to publish a backlog for dds", SETTLE, || async {
        (p.committed(Service::Stg).await.ok()? >= 400).then_some(())
    })
    .await;
    let mut dds = spawn(Service::Dds.binary(), &dds_env, &logs[1])?;
    // Mid-stream: once counting has begun, kill stg and dds outright (SIGKILL: no clean-up,
    // no final commit) and stop cdm cleanly.
    eventually("the datamart to start filling", SETTLE, || async {
        (p.count("SELECT count(*) FROM cdm.order_state").await.ok()? > 0).then_some(())
    })
    .await;
    stg.kill()?;
    dds.kill()?;
    stg.wait()?;
    dds.wait()?;
    p.stop_service(Service::Cdm).await?;
    // Dead, they commit nothing more: what is uncommitted now was uncommitted at the kill.
    let (stg_left, dds_left) = (
        p.backlog(Service::Stg).await?,
        p.backlog(Service::Dds).await?,
    );
    eprintln!("killed with {stg_left} messages left to stg and {dds_left} to dds");
    assert!(stg_left > 0, "stg was killed with work left");
    assert!(dds_left > 0, "dds was killed with work left");

    p.produce_raw(&second.iter().map(message).collect::<Vec<_>>())
        .await?;
    let stg = launch_binary(&mut p, Service::Stg, &logs[0]).await?;
    let dds = launch_binary(&mut p, Service::Dds, &logs[1]).await?;
    p.start_service(Service::Cdm).await?;
    p.settle(SETTLE).await;
    assert_counters_match(&p, &d, &sent).await;
    let distinct: BTreeSet<i64> = sent.iter().map(|o| o.object_id.0).collect();
    assert_eq!(
        p.count("SELECT count(*) FROM cdm.order_state WHERE update_ts IS NOT NULL")
            .await?,
        distinct.len() as i64
    );
    assert_eq!(terminate(stg).await?, Some(0), "{}", log(&logs[0]));
    assert_eq!(terminate(dds).await?, Some(0), "{}", log(&logs[1]));
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_database_is_unreachable_reports_unhealthy_and_names_it(
) -> anyhow::Result<()> {
    let stack = vault_tests::stack().await;
    let env: HashMap<String, String> = [
        ("KAFKA_BOOTSTRAP_SERVERS", stack.kafka_bootstrap.as_str()),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/dwh"),
        ("KAFKA_SOURCE_TOPIC", &unique("cdm_service")),
        ("KAFKA_CONSUMER_GROUP", &unique("cdm")),
        ("HTTP_HOST", "127.0.0.1"),
        ("HTTP_PORT", "0"),
        ("KAFKA_TOPIC_PARTITIONS", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let app = service_cdm::build(vault_runtime::Settings::from(&env, service_cdm::PROFILE)?)?;
    let addr = app.http_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    // The background checks' first results (within a second or two of the start).
    let (status, body) = eventually(
        "the first checks' results",
        Duration::from_secs(30),
        || async {
            let (status, body) = http(addr, "GET", "/health", "").await.ok()?;
            let body: Value = serde_json::from_str(&body).ok()?;
            (body["dependencies"]["kafka"]["status"] == "up").then_some((status, body))
        },
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["service"], "service-cdm");
    assert_eq!(body["dependencies"]["postgres"]["status"], "down");
    // It keeps waiting for the database instead of exiting, and still stops on request.
    assert!(!task.is_finished());
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), task).await???;
    Ok(())
}

/// Every service gets small batches, so that a stream of a few thousand orders is many
/// batches long and a fault finds one in flight.
fn small_batches() -> BTreeMap<String, String> {
    BTreeMap::from([("BATCH_MAX_MESSAGES".to_owned(), "50".to_owned())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_pauses_enrichment_mid_stream_and_skips_nothing() -> anyhow::Result<()> {
    let mut redis = vault_tests::servers::PrivateRedis::start().await?;
    let p = Pipeline::start_with(
        2,
        Overrides {
            redis_url: Some(redis.url()),
            service_env: small_batches(),
            ..Overrides::default()
        },
    )
    .await?;
    let d = random_dictionary(10, 3);
    p.put_dictionary(&d).await?;
    redis.snapshot().await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    let sent = datagen::generate::orders(&mut rng, &d, 7_000, 3_000);
    p.produce_raw(&sent.iter().map(message).collect::<Vec<_>>())
        .await?;

    // Redis crashes once stg has enriched some of the stream, with most of it still to do.
    eventually("stg to be part way through", SETTLE, || async {
        let worker = p.worker(Service::Stg).await.ok()?;
        (worker["processed"].as_u64() > Some(0)).then_some(())
    })
    .await;
    redis.kill();
    // The batch in hand fails and is retried, not rejected: the stream pauses.
    let worker = p.await_retrying(Service::Stg, SETTLE).await;
    eprintln!("stg during the outage: {worker}");
    p.await_dependency_down(Service::Stg, "redis", SETTLE).await;
    let left = p.backlog(Service::Stg).await?;
    assert!(left > 0, "the outage came with work left to stg");
    assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);

    redis.restart().await?;
    p.settle(SETTLE).await;
    assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
    assert_counters_match(&p, &d, &sent).await;
    // Healthy again by the next background check of Redis (about once a second).
    let stg = p.http_addr(Service::Stg).expect("running");
    eventually(
        "service-stg healthy again",
        Duration::from_secs(30),
        || async {
            let (status, _) = http(stg, "GET", "/health", "").await.ok()?;
            (status == 200).then_some(())
        },
    )
    .await;
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_mid_stream_pauses_every_service_and_skips_nothing() -> anyhow::Result<()>
{
    let pg = vault_tests::servers::PrivatePostgres::start().await?;
    let mut p = Pipeline::start_with(
        2,
        Overrides {
            database_url: Some(pg.url()),
            service_env: small_batches(),
            ..Overrides::default()
        },
    )
    .await?;
    let (d, sent) = p.seeded_orders((10, 3), 29, 9_000, 4_000).await?;

    // A backlog on every hop: stg takes a third of the stream and stops, dds a third of what
    // stg passed on and stops, cdm has not started.
    p.stop_service(Service::Dds).await?;
    p.stop_service(Service::Cdm).await?;
    p.produce_raw(&sent.iter().map(message).collect::<Vec<_>>())
        .await?;
    let total = i64::try_from(sent.len())?;
    eventually("stg to take a third of the stream", SETTLE, || async {
        (p.committed(Service::Stg).await.ok()? >= total / 3).then_some(())
    })
    .await;
    p.stop_service(Service::Stg).await?;
    p.start_service(Service::Dds).await?;
    let enriched: i64 = p.end_offsets(&p.enriched_topic).await?.values().sum();
    eventually("dds to take a third of it", SETTLE, || async {
        (p.committed(Service::Dds).await.ok()? >= enriched / 3).then_some(())
    })
    .await;
    p.stop_service(Service::Dds).await?;

    // All three at work on their backlogs: Postgres crashes as soon as each has processed a
    // batch (the look is one local HTTP request each, so the crash follows at once).
    for service in Service::ALL {
        p.start_service(service).await?;
    }
    eventually("every service to be at work", SETTLE, || async {
        for service in Service::ALL {
            let worker = p.worker(service).await.ok()?;
            (worker["processed"].as_u64() > Some(0)).then_some(())?;
        }
        Some(())
    })
    .await;
    pg.crash()?;
    for service in Service::ALL {
        // The batch it held failed and is retried: the fault hit it mid-stream. Nothing can
        // commit while Postgres is down, so what is uncommitted now was at the crash.
        let worker = p.await_retrying(service, SETTLE).await;
        p.await_dependency_down(service, "postgres", SETTLE).await;
        let left = p.backlog(service).await?;
        eprintln!("{service:?}: {left} messages left at the crash; {worker}");
        assert!(left > 0, "the crash came with work left to {service:?}");
    }

    pg.restart().await?;
    p.settle(SETTLE).await;
    assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
    assert_counters_match(&p, &d, &sent).await;
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_crash_pauses_the_pipeline_and_skips_nothing() -> anyhow::Result<()> {
    let mut broker = vault_tests::servers::PrivateKafka::start().await?;
    let p = Pipeline::start_with(
        2,
        Overrides {
            kafka_bootstrap: Some(broker.bootstrap()),
            ..Overrides::default()
        },
    )
    .await?;
    let (d, sent) = p.seeded_orders((10, 3), 31, 11_000, 3000).await?;
    p.produce_raw(&sent.iter().map(message).collect::<Vec<_>>())
        .await?;
    let counted = eventually("the datamart to start filling", SETTLE, || async {
        let counted = p.count("SELECT count(*) FROM cdm.order_state").await.ok()?;
        (counted > 0).then_some(counted)
    })
    .await;

    broker.kill();
    // Usually mid-stream (batches in hand, offsets uncommitted); correct either way.
    eprintln!("the broker crashed with {counted} of 3000 orders in the datamart");
    p.await_dependency_down(Service::Stg, "kafka", SETTLE).await;

    broker.restart().await?;
    p.settle(SETTLE).await;
    assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
    assert_counters_match(&p, &d, &sent).await;
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_joining_and_leaving_mid_stream_share_the_partitions_and_count_exactly(
) -> anyhow::Result<()> {
    let mut p = Pipeline::start(4).await?;
    let (d, sent) = p.seeded_orders((8, 3), 37, 13_000, 6000).await?;
    let (first, second) = sent.split_at(3000);
    p.produce_raw(&first.iter().map(message).collect::<Vec<_>>())
        .await?;
    // A second instance of every service joins while the first ones work: the groups
    // rebalance mid-stream, and both instances write the same tables concurrently.
    for service in Service::ALL {
        p.start_replica(service).await?;
    }
    // Each group now has two members, each holding partitions (as the broker itself says).
    let bootstrap = p.stack.kafka_bootstrap.clone();
    for service in Service::ALL {
        let group = p.group(service).to_owned();
        let what = format!("both members of {group} to hold partitions");
        let members = eventually(&what, SETTLE, || {
            let (bootstrap, group) = (bootstrap.clone(), group.clone());
            async move {
                let members = tokio::task::spawn_blocking(move || {
                    vault_tests::servers::group_members(&bootstrap, &group)
                })
                .await
                .ok()?
                .ok()?;
                (members.len() == 2 && members.values().all(|held| *held > 0)).then_some(members)
            }
        })
        .await;
        eprintln!("{service:?}: {members:?}");
    }
    // More orders, and the replicas leave while the pipeline works on them.
    p.produce_raw(&second.iter().map(message).collect::<Vec<_>>())
        .await?;
    let counted = "SELECT count(*) FROM cdm.order_state WHERE update_ts IS NOT NULL";
    let at_leave = p.count(counted).await?;
    p.stop_replicas().await?;
    eprintln!("the replicas left with {at_leave} of 6000 orders in the datamart");
    assert!(at_leave < 6000, "the replicas left while work was pending");
    p.settle(SETTLE).await;
    assert_eq!(p.count("SELECT count(*) FROM ops.dead_letters").await?, 0);
    assert_counters_match(&p, &d, &sent).await;
    assert_eq!(p.count(counted).await?, 6000);
    p.shutdown().await
}
