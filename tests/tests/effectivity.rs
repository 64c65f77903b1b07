//! Order effectivity end to end (docs/contract.md §3.3, clarified): an order counts for the dishes of its
//! latest version, each under the category it had in that version, and for the user that
//! version names. A dish moved between categories in the menu, a dish a later version drops,
//! an order re-sent for another user (and back), and the `verify` check that compares the
//! datamarts with the recount over the Data Vault — all through the real broker, Redis and
//! Postgres, with expectations from a small model written here from the messages sent.

use std::collections::BTreeMap;
use std::time::Duration;

use datagen::dictionary::{synthetic, Dictionary};
use service_cdm::verify;
use uuid::Uuid;
use vault_core::{OrderStatus, RawOrder};
use vault_tests::pipeline::Pipeline;
use vault_tests::process::binary;
use vault_tests::{eventually, orders};

const SETTLE: Duration = Duration::from_secs(180);

/// Counter rows by (user hub key, product or category hub key), as text.
type Counters = BTreeMap<(String, String), i64>;

/// A hub key computed here, from docs/contract.md §3.1 alone.
fn hub_key(business_key: &str) -> String {
    Uuid::new_v3(&Uuid::NAMESPACE_X500, business_key.as_bytes()).to_string()
}

/// One order version as sent, with what the test knows about it: the category each dish had
/// in the menu when it was sent.
#[derive(Debug, Clone)]
struct Sent {
    order: i64,
    minute: i64,
    user: String,
    status: OrderStatus,
    /// (product id, category name)
    dishes: Vec<(String, String)>,
}

/// The model of docs/contract.md §3.3: each order's latest version; if CLOSED, +1 for each distinct dish
/// and each distinct category of that version.
fn expected(sent: &[Sent]) -> (Counters, Counters) {
    let mut latest: BTreeMap<i64, &Sent> = BTreeMap::new();
    for version in sent {
        let newer = latest
            .get(&version.order)
            .is_none_or(|seen| version.minute > seen.minute);
        if newer {
            latest.insert(version.order, version);
        }
    }
    let (mut products, mut categories) = (Counters::new(), Counters::new());
    for version in latest.values() {
        if version.status != OrderStatus::Closed {
            continue;
        }
        let user = hub_key(&version.user);
        let mut dishes: Vec<&String> = version.dishes.iter().map(|(p, _)| p).collect();
        dishes.sort();
        dishes.dedup();
        for product in dishes {
            *products
                .entry((user.clone(), hub_key(product)))
                .or_default() += 1;
        }
        let mut kinds: Vec<&String> = version.dishes.iter().map(|(_, c)| c).collect();
        kinds.sort();
        kinds.dedup();
        for category in kinds {
            *categories
                .entry((user.clone(), hub_key(category)))
                .or_default() += 1;
        }
    }
    (products, categories)
}

fn raw_order(d: &Dictionary, version: &Sent, restaurant: usize) -> RawOrder {
    let menu = &d.restaurants[restaurant].menu;
    let dishes: Vec<usize> = version
        .dishes
        .iter()
        .map(|(id, _)| {
            menu.iter()
                .position(|m| m.id.as_str() == id)
                .expect("a dish of the menu")
        })
        .collect();
    let user = d
        .users
        .iter()
        .position(|u| u.id.as_str() == version.user)
        .expect("a user of the dictionary");
    orders::order(
        d,
        version.order,
        user,
        restaurant,
        &dishes,
        version.status,
        version.minute,
    )
}

async fn send(p: &Pipeline, d: &Dictionary, restaurant: usize, versions: &[&Sent]) {
    let messages: Vec<(String, Vec<u8>)> = versions
        .iter()
        .map(|v| {
            let order = raw_order(d, v, restaurant);
            (
                order.object_id.to_string(),
                serde_json::to_vec(&order).expect("serialize"),
            )
        })
        .collect();
    p.produce_raw(&messages).await.expect("produce");
}

async fn rows(p: &Pipeline, sql: &str) -> Counters {
    p.db()
        .await
        .expect("db")
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect()
}

/// The datamarts and the recount views both equal the model, and `verify` finds nothing.
async fn assert_exact(p: &Pipeline, sent: &[Sent], step: &str) {
    let (products, categories) = expected(sent);
    let counters = |table: &str, key: &str| {
        format!(
            "SELECT user_id::text, {key}::text, order_cnt::bigint FROM {table} WHERE order_cnt > 0"
        )
    };
    assert_eq!(
        rows(p, &counters("cdm.user_product_counters", "product_id")).await,
        products,
        "{step}: product counters"
    );
    assert_eq!(
        rows(p, &counters("cdm.user_category_counters", "category_id")).await,
        categories,
        "{step}: category counters"
    );
    assert_eq!(
        rows(p, &counters("cdm.v_user_product_recount", "product_id")).await,
        products,
        "{step}: product recount"
    );
    assert_eq!(
        rows(p, &counters("cdm.v_user_category_recount", "category_id")).await,
        categories,
        "{step}: category recount"
    );
    assert_eq!(differences(p).await, Vec::new(), "{step}: verify");
}

/// Every difference `verify` finds (these tests make few: all of them fit under the limit).
async fn differences(p: &Pipeline) -> Vec<verify::Difference> {
    let (pool, _) = p.tools().expect("tools");
    let mut conn = pool.get().await.expect("a connection");
    let found = verify::differences(&mut conn, 1_000).await.expect("verify");
    assert_eq!(found.total, found.first.len() as i64, "{found:?}");
    found.first
}

/// The lines of `vaultctl verify` output that name a difference.
fn difference_lines(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|line| line.contains(" != recount "))
        .collect()
}

/// A fresh dictionary (its own user and restaurant ids, so the shared Redis holds no other
/// test's menu under them) whose restaurant 0 has at least two dishes.
fn dictionary() -> Dictionary {
    loop {
        let d = synthetic(Uuid::new_v4().as_u64_pair().0, 2, 1);
        if d.restaurants[0].menu.len() >= 2 {
            return d;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dish_moved_between_categories_counts_under_the_category_of_each_orders_version(
) -> anyhow::Result<()> {
    let p = Pipeline::start(2).await?;
    let mut d = dictionary();
    let soup = "Супы".to_owned();
    let pizza = "Пицца".to_owned();
    d.restaurants[0].menu[0].category = soup.clone();
    p.put_dictionary(&d).await?;
    let dish = d.restaurants[0].menu[0].id.as_str().to_owned();
    let user = d.users[0].id.as_str().to_owned();
    let version = |order, minute, status, category: &String| Sent {
        order,
        minute,
        user: user.clone(),
        status,
        dishes: vec![(dish.clone(), category.clone())],
    };
    let order = 7_100_000;

    // The first order is CLOSED while the dish is a soup.
    let mut sent = vec![version(order, 10, OrderStatus::Closed, &soup)];
    send(&p, &d, 0, &[&sent[0]]).await;
    p.settle(SETTLE).await;
    assert_exact(&p, &sent, "first order closed").await;

    // The menu files the dish under pizza; the second order is CLOSED with it.
    // (`put_dictionary` never overwrites a key; the menu change must.)
    d.restaurants[0].menu[0].category = pizza.clone();
    let restaurant = &d.restaurants[0];
    p.put_redis(restaurant.id.as_str(), &serde_json::to_string(restaurant)?)
        .await?;
    sent.push(version(order + 1, 20, OrderStatus::Closed, &pizza));
    send(&p, &d, 0, &[&sent[1]]).await;
    p.settle(SETTLE).await;
    assert_exact(&p, &sent, "second order closed").await;
    let (_, categories) = expected(&sent);
    let user_key = hub_key(&user);
    assert_eq!(categories[&(user_key.clone(), hub_key(&soup))], 1);
    assert_eq!(categories[&(user_key.clone(), hub_key(&pizza))], 1);

    // The first order is CANCELLED (enriched now, when the dish is a pizza): soups go to 0,
    // pizza stays 1.
    sent.push(version(order, 30, OrderStatus::Cancelled, &pizza));
    send(&p, &d, 0, &[&sent[2]]).await;
    p.settle(SETTLE).await;
    assert_exact(&p, &sent, "first order cancelled").await;
    let (products, categories) = expected(&sent);
    assert!(!categories.contains_key(&(user_key.clone(), hub_key(&soup))));
    assert_eq!(categories[&(user_key.clone(), hub_key(&pizza))], 1);
    assert_eq!(products[&(user_key, hub_key(&dish))], 1);
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dish_a_later_version_drops_stops_counting_for_that_order() -> anyhow::Result<()> {
    let p = Pipeline::start(2).await?;
    let mut d = dictionary();
    d.restaurants[0].menu[0].category = "Супы".to_owned();
    d.restaurants[0].menu[1].category = "Десерты".to_owned();
    p.put_dictionary(&d).await?;
    let dish = |i: usize| {
        let item = &d.restaurants[0].menu[i];
        (item.id.as_str().to_owned(), item.category.clone())
    };
    let (first_user, other_user) = (
        d.users[0].id.as_str().to_owned(),
        d.users[1].id.as_str().to_owned(),
    );
    let order = 7_200_000;
    let both = Sent {
        order,
        minute: 10,
        user: first_user.clone(),
        status: OrderStatus::Closed,
        dishes: vec![dish(0), dish(1)],
    };
    let other = Sent {
        order: order + 1,
        minute: 10,
        user: other_user,
        status: OrderStatus::Closed,
        dishes: vec![dish(1)],
    };
    let mut sent = vec![both.clone(), other.clone()];
    send(&p, &d, 0, &[&both, &other]).await;
    p.settle(SETTLE).await;
    assert_exact(&p, &sent, "both dishes closed").await;

    // A later version drops the dessert; a late duplicate of the older version follows it in
    // the same stream and must change nothing.
    let dropped = Sent {
        minute: 20,
        dishes: vec![dish(0)],
        ..both.clone()
    };
    sent.extend([dropped.clone(), both.clone()]);
    send(&p, &d, 0, &[&dropped, &both]).await;
    p.settle(SETTLE).await;
    assert_exact(&p, &sent, "dessert dropped").await;
    let (products, categories) = expected(&sent);
    let user_key = hub_key(&first_user);
    assert!(!products.contains_key(&(user_key.clone(), hub_key(&dish(1).0))));
    assert!(!categories.contains_key(&(user_key.clone(), hub_key("Десерты"))));
    assert_eq!(products[&(user_key, hub_key(&dish(0).0))], 1);
    // The vault keeps the history: the dropped dish is still linked to the order, with an
    // effectivity row at the first version only.
    assert_eq!(
        p.count(&format!(
            "SELECT count(*) FROM dds.l_order_product_category l \
             JOIN dds.h_order o USING (h_order_pk) WHERE o.order_id = {order}"
        ))
        .await?,
        2
    );
    assert_eq!(
        p.count(&format!(
            "SELECT count(*) FROM dds.s_order_product_category_effectivity e \
             JOIN dds.l_order_product_category l USING (hk_order_product_category_pk) \
             JOIN dds.h_order o USING (h_order_pk) WHERE o.order_id = {order}"
        ))
        .await?,
        3,
        "two dishes at the first version, one at the second"
    );
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_nothing_on_exact_counters_and_counts_every_corrupted_one_showing_the_first(
) -> anyhow::Result<()> {
    let p = Pipeline::start(2).await?;
    let d = dictionary();
    p.put_dictionary(&d).await?;
    let user = d.users[0].id.as_str().to_owned();
    let (dish, category) = {
        let item = &d.restaurants[0].menu[0];
        (item.id.as_str().to_owned(), item.category.clone())
    };
    let order = 7_300_000;
    let sent = vec![Sent {
        order,
        minute: 10,
        user: user.clone(),
        status: OrderStatus::Closed,
        dishes: vec![(dish.clone(), category.clone())],
    }];
    send(&p, &d, 0, &[&sent[0]]).await;
    p.settle(SETTLE).await;
    assert_exact(&p, &sent, "one order closed").await;
    let (code, out) = p.vaultctl(&["verify"]).await?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("counters match the recount"), "{out}");

    let db = p.db().await?;
    db.execute(
        "UPDATE cdm.user_category_counters SET order_cnt = order_cnt + 4 \
         WHERE user_id = $1::text::uuid AND category_id = $2::text::uuid",
        &[&hub_key(&user), &hub_key(&category)],
    )
    .await?;
    let found = differences(&p).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let difference = &found[0];
    assert_eq!(difference.datamart, verify::Datamart::Category);
    assert_eq!(difference.user_id.to_string(), hub_key(&user));
    assert_eq!(difference.item_id.to_string(), hub_key(&category));
    assert_eq!((difference.counted, difference.recounted), (5, 1));
    assert_eq!(difference.item_name.as_deref(), Some(category.as_str()));

    // A counter the datamart lost is a difference too.
    db.execute(
        "DELETE FROM cdm.user_product_counters WHERE user_id = $1::text::uuid",
        &[&hub_key(&user)],
    )
    .await?;
    let found = differences(&p).await;
    assert_eq!(found.len(), 2, "{found:?}");
    let lost = found
        .iter()
        .find(|f| f.datamart == verify::Datamart::Product)
        .expect("the lost product counter");
    assert_eq!(lost.item_id.to_string(), hub_key(&dish));
    assert_eq!((lost.counted, lost.recounted), (0, 1));
    assert_eq!(p.counter_mismatches().await?, 2);

    // `vaultctl verify` shows the first of them, says how many more, and fails.
    let (code, out) = p.vaultctl(&["verify", "--limit", "1"]).await?;
    assert_eq!(code, 1, "{out}");
    let shown = difference_lines(&out);
    assert_eq!(shown.len(), 1, "{out}");
    assert!(shown[0].starts_with("product"), "products first: {out}");
    assert!(out.contains("... and 1 more"), "{out}");
    assert!(out.contains("2 counter(s) differ"), "{out}");

    // Many differences: counters of a user the Data Vault never saw. The output stays at
    // the default limit, and the total counts them all.
    db.execute(
        "INSERT INTO cdm.user_product_counters (user_id, product_id, product_name, order_cnt) \
         SELECT $1::text::uuid, gen_random_uuid(), 'ghost', 1 FROM generate_series(1, 48)",
        &[&Uuid::new_v4().to_string()],
    )
    .await?;
    let (code, out) = p.vaultctl(&["verify"]).await?;
    assert_eq!(code, 1, "{out}");
    assert_eq!(difference_lines(&out).len(), 20, "{out}");
    assert!(out.contains("... and 30 more"), "{out}");
    assert!(out.contains("50 counter(s) differ"), "{out}");
    assert_eq!(p.counter_mismatches().await?, 50);
    let (code, out) = p.vaultctl(&["verify", "--limit", "0"]).await?;
    assert_eq!((code, difference_lines(&out).len()), (1, 0), "{out}");
    assert!(out.contains("... and 50 more"), "{out}");
    assert!(out.contains("point-in-time rows match"), "{out}");

    // A point-in-time row the BI views read, changed behind the loader: verify names it
    // after the counters (the daily tables follow it by trigger, so only the order differs).
    db.execute(
        "UPDATE dds.pit_order SET cost = cost + 1 WHERE order_id = $1",
        &[&order],
    )
    .await?;
    let (code, out) = p.vaultctl(&["verify", "--limit", "1"]).await?;
    assert_eq!(code, 1, "{out}");
    let point = out
        .lines()
        .find(|line| line.starts_with("dds.pit_order "))
        .unwrap_or_else(|| panic!("no point-in-time difference shown: {out}"));
    assert!(point.contains(&hub_key(&order.to_string())), "{point}");
    assert!(point.contains(" != history "), "{point}");
    assert!(
        out.contains("50 counter(s) differ from the recount from the Data Vault; 1 point-in-time row(s) differ"),
        "{out}"
    );
    p.shutdown().await
}

/// The users holding `tag`, by user hub key, with their order_cnt.
async fn holders(p: &Pipeline, tag: &str) -> BTreeMap<String, i64> {
    p.db()
        .await
        .expect("db")
        .query(
            "SELECT user_id::text, order_cnt::bigint FROM cdm.user_tags WHERE tag = $1",
            &[&tag],
        )
        .await
        .expect("user tags")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// `vaultctl verify` against the pipeline's warehouse: its exit code and output.
fn vaultctl_verify(p: &Pipeline) -> (i32, String) {
    let output = std::process::Command::new(binary("vaultctl"))
        .env_clear()
        .env("DATABASE_URL", &p.database_url)
        .env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
        .arg("verify")
        .output()
        .expect("vaultctl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// After each step: the datamarts and the recount equal the model, `vaultctl verify` passes,
/// and the tag (one CLOSED order of the category earns it) is held by exactly the users the
/// model counts.
async fn assert_step(p: &Pipeline, sent: &[Sent], tag: &str, category: &str, step: &str) {
    assert_exact(p, sent, step).await;
    let (code, output) = vaultctl_verify(p);
    assert_eq!(code, 0, "{step}: vaultctl verify: {output}");
    let (_, categories) = expected(sent);
    let want: BTreeMap<String, i64> = categories
        .into_iter()
        .filter(|((_, c), _)| *c == hub_key(category))
        .map(|((user, _), n)| (user, n))
        .collect();
    let what = format!("{step}: the tag to be held by {want:?}");
    eventually(&what, Duration::from_secs(30), || async {
        (holders(p, tag).await == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_re_sent_for_another_user_counts_for_the_user_of_its_latest_version(
) -> anyhow::Result<()> {
    let p = Pipeline::start(2).await?;
    let d = dictionary();
    p.put_dictionary(&d).await?;
    p.migrated().await;
    let (dish, category) = {
        let item = &d.restaurants[0].menu[0];
        (item.id.as_str().to_owned(), item.category.clone())
    };
    let (a, b) = (
        d.users[0].id.as_str().to_owned(),
        d.users[1].id.as_str().to_owned(),
    );
    let tag = "Regular";
    let db = p.db().await?;
    db.execute(
        "INSERT INTO cdm.tag_rules (tag, scope, target, threshold) VALUES ($1, 'category', $2, 1)",
        &[&tag, &category],
    )
    .await?;
    p.await_count(
        "the tag rule to be applied",
        Duration::from_secs(30),
        "SELECT count(*) FROM cdm.tag_rules_applied WHERE tag = 'Regular'",
        1,
    )
    .await;
    let version = |order, minute, user: &String, status| Sent {
        order,
        minute,
        user: user.clone(),
        status,
        dishes: vec![(dish.clone(), category.clone())],
    };
    let (order, together) = (7_400_000, 7_400_001);
    let (a_key, b_key) = (hub_key(&a), hub_key(&b));

    // CLOSED for A.
    let mut sent = vec![version(order, 10, &a, OrderStatus::Closed)];
    send(&p, &d, 0, &[&sent[0]]).await;
    p.settle(SETTLE).await;
    assert_step(&p, &sent, tag, &category, "closed for A").await;

    // A later version names B: the order counts for B and no longer for A. Another order does
    // the same within one batch (both versions applied in one load).
    let to_b = version(order, 20, &b, OrderStatus::Closed);
    let (first, second) = (
        version(together, 10, &a, OrderStatus::Closed),
        version(together, 20, &b, OrderStatus::Closed),
    );
    sent.extend([to_b.clone(), first.clone(), second.clone()]);
    send(&p, &d, 0, &[&to_b, &first, &second]).await;
    p.settle(SETTLE).await;
    assert_step(&p, &sent, tag, &category, "re-sent for B").await;
    let (products, _) = expected(&sent);
    assert_eq!(products[&(b_key.clone(), hub_key(&dish))], 2);
    assert!(!products.contains_key(&(a_key.clone(), hub_key(&dish))));

    // Back to A; a late duplicate of the version for B changes nothing.
    let back = version(order, 30, &a, OrderStatus::Closed);
    sent.extend([back.clone(), to_b.clone()]);
    send(&p, &d, 0, &[&back, &to_b]).await;
    p.settle(SETTLE).await;
    assert_step(&p, &sent, tag, &category, "back to A").await;
    let (products, _) = expected(&sent);
    assert_eq!(products[&(a_key.clone(), hub_key(&dish))], 1);
    assert_eq!(products[&(b_key.clone(), hub_key(&dish))], 1);

    // A CANCELLED later version, naming B: the order counts for nobody.
    let cancelled = version(order, 40, &b, OrderStatus::Cancelled);
    sent.push(cancelled.clone());
    send(&p, &d, 0, &[&cancelled]).await;
    p.settle(SETTLE).await;
    assert_step(&p, &sent, tag, &category, "cancelled for B").await;
    let (products, _) = expected(&sent);
    assert!(!products.contains_key(&(a_key.clone(), hub_key(&dish))));
    assert_eq!(
        products[&(b_key.clone(), hub_key(&dish))],
        1,
        "the other order"
    );

    // The vault keeps both links of the order and says which applied at each version.
    let users: Vec<(String, String)> = db
        .query(
            "SELECT to_char(e.update_ts AT TIME ZONE 'UTC', 'HH24:MI'), u.user_id FROM dds.s_order_user_effectivity e \
             JOIN dds.l_order_user l USING (hk_order_user_pk) \
             JOIN dds.h_user u USING (h_user_pk) JOIN dds.h_order o USING (h_order_pk) \
             WHERE o.order_id = $1 ORDER BY 1",
            &[&order],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let at = |minute: i64| format!("08:{minute}");
    assert_eq!(
        users,
        [
            (at(10), a.clone()),
            (at(20), b.clone()),
            (at(30), a.clone()),
            (at(40), b.clone())
        ]
    );
    assert_eq!(
        p.count(&format!(
            "SELECT count(*) FROM dds.l_order_user JOIN dds.h_order o USING (h_order_pk) \
             WHERE o.order_id IN ({order}, {together})"
        ))
        .await?,
        4
    );
    assert_eq!(
        p.count(&format!(
            "SELECT count(*) FROM bi.fact_order WHERE order_id IN ({order}, {together})"
        ))
        .await?,
        2,
        "one fact per order"
    );
    p.shutdown().await
}
