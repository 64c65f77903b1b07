//! Upgrading a warehouse that holds data: the schema of the previous release, rows written as
//! that release wrote them, then the new migrations. The old rows must be intact, the orders
//! loaded before the upgrade must get their effectivity (their dishes, and the user of their
//! latest version also where an order was re-sent for another user), and the recount views
//! must agree with the counters the old release kept.

use vault_core::HashKey;
use vault_tests::sql::Columns;
use vault_tests::stack;

/// The last migration of the previous release: `2026-11-21-000001_warehouse`.
const PREVIOUS_RELEASE: &str = "20261121000001";

async fn client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn key(business_key: &str) -> String {
    HashKey::of(business_key).to_string()
}

/// Row counts of the tables the previous release had, and the counters' contents.
async fn fingerprint(db: &tokio_postgres::Client) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for table in [
        "dds.h_order",
        "dds.h_user",
        "dds.h_product",
        "dds.h_category",
        "dds.l_order_user",
        "dds.l_order_product",
        "dds.l_product_category",
        "dds.s_order_status",
        "dds.order_load_state",
        "cdm.order_state",
    ] {
        let row = db
            .query_one(&format!("SELECT count(*)::text FROM {table}"), &[])
            .await?;
        out.push((table.to_owned(), row.get(0)));
    }
    for (table, key) in [
        ("cdm.user_product_counters", "product_id"),
        ("cdm.user_category_counters", "category_id"),
    ] {
        let row = db
            .query_one(
                &format!(
                    "SELECT string_agg(user_id || ':' || {key} || '=' || order_cnt, ',' \
                     ORDER BY user_id, {key}) FROM {table}"
                ),
                &[],
            )
            .await?;
        out.push((table.to_owned(), row.get(0)));
    }
    Ok(out)
}

#[tokio::test]
async fn the_new_migrations_keep_old_rows_and_give_old_orders_their_effectivity(
) -> anyhow::Result<()> {
    let url = stack().await.fresh_database().await?;
    assert!(vault_migrations::versions()?.contains(&PREVIOUS_RELEASE.to_owned()));
    let applied = vault_migrations::run_through(&url, PREVIOUS_RELEASE).await?;
    assert_eq!(applied, [PREVIOUS_RELEASE]);
    let db = client(&url).await?;

    // As the previous release wrote them. User u ordered:
    //   order 1: dishes x (soup) and y (dessert), CLOSED at 10:00; its 11:00 version (still
    //            CLOSED) dropped y — the old vault keeps both links and one status row;
    //   order 2: dish x after the menu moved it to pizza, CLOSED;
    // user v ordered y in order 3, CANCELLED, which the datamart has not applied yet.
    // Orders re-sent for another user (two order–user links each; the link loaded last is
    // never the user of the latest version, so only the evidence the migration reads decides):
    //   order 4: y, CLOSED, first for v, then u, then v again at 13:00: staging holds the 13:00
    //            version and the datamart applied it (counting it for v);
    //   order 5: x, CANCELLED, u then v then u again at 12:00: only the datamart's state says so
    //            (staging no longer holds the order);
    //   order 6: x, CANCELLED, u then v then u again at 12:00: only staging says so.
    let (u, v) = (
        key("aaaaaaaaaaaaaaaaaaaaaaa1"),
        key("aaaaaaaaaaaaaaaaaaaaaaa2"),
    );
    let (x, y) = (
        key("bbbbbbbbbbbbbbbbbbbbbbb1"),
        key("bbbbbbbbbbbbbbbbbbbbbbb2"),
    );
    let (soup, dessert, pizza) = (key("Супы"), key("Десерты"), key("Пицца"));
    let (o1, o2, o3) = (key("1"), key("2"), key("3"));
    let (o4, o5, o6) = (key("4"), key("5"), key("6"));
    let link = |a: &str, b: &str| {
        HashKey::link(a.parse().expect("key"), b.parse().expect("key")).to_string()
    };
    db.batch_execute(&format!(
        "INSERT INTO dds.h_user VALUES ('{u}', 'aaaaaaaaaaaaaaaaaaaaaaa1', now(), 'old'), \
                                      ('{v}', 'aaaaaaaaaaaaaaaaaaaaaaa2', now(), 'old');
         INSERT INTO dds.h_product VALUES ('{x}', 'bbbbbbbbbbbbbbbbbbbbbbb1', now(), 'old'), \
                                         ('{y}', 'bbbbbbbbbbbbbbbbbbbbbbb2', now(), 'old');
         INSERT INTO dds.h_category VALUES ('{soup}', 'Супы', now(), 'old'), \
             ('{dessert}', 'Десерты', now(), 'old'), ('{pizza}', 'Пицца', now(), 'old');
         INSERT INTO dds.h_order VALUES ('{o1}', 1, '2025-02-22 10:00Z', now(), 'old'), \
             ('{o2}', 2, '2025-02-22 12:00Z', now(), 'old'), \
             ('{o3}', 3, '2025-02-22 12:00Z', now(), 'old'), \
             ('{o4}', 4, '2025-02-22 10:00Z', now(), 'old'), \
             ('{o5}', 5, '2025-02-22 10:00Z', now(), 'old'), \
             ('{o6}', 6, '2025-02-22 10:00Z', now(), 'old');
         INSERT INTO dds.l_order_user VALUES ('{lo1}', '{o1}', '{u}', now(), 'old'), \
             ('{lo2}', '{o2}', '{u}', now(), 'old'), ('{lo3}', '{o3}', '{v}', now(), 'old'), \
             ('{lo4v}', '{o4}', '{v}', '2025-02-22 10:00Z', 'old'), \
             ('{lo4u}', '{o4}', '{u}', '2025-02-22 11:00Z', 'old'), \
             ('{lo5u}', '{o5}', '{u}', '2025-02-22 10:00Z', 'old'), \
             ('{lo5v}', '{o5}', '{v}', '2025-02-22 11:00Z', 'old'), \
             ('{lo6u}', '{o6}', '{u}', '2025-02-22 10:00Z', 'old'), \
             ('{lo6v}', '{o6}', '{v}', '2025-02-22 11:00Z', 'old');
         INSERT INTO dds.l_order_product VALUES ('{p1x}', '{o1}', '{x}', now(), 'old'), \
             ('{p1y}', '{o1}', '{y}', now(), 'old'), ('{p2x}', '{o2}', '{x}', now(), 'old'), \
             ('{p3y}', '{o3}', '{y}', now(), 'old'), ('{p4y}', '{o4}', '{y}', now(), 'old'), \
             ('{p5x}', '{o5}', '{x}', now(), 'old'), ('{p6x}', '{o6}', '{x}', now(), 'old');
         INSERT INTO dds.l_product_category VALUES \
             ('{xs}', '{x}', '{soup}', '2025-02-22 10:00Z', 'old'), \
             ('{yd}', '{y}', '{dessert}', '2025-02-22 10:00Z', 'old'), \
             ('{xp}', '{x}', '{pizza}', '2025-02-22 12:00Z', 'old');
         INSERT INTO dds.s_order_status VALUES \
             ('{o1}', 'CLOSED', gen_random_uuid(), '2025-02-22 10:00Z', now(), 'old'), \
             ('{o2}', 'CLOSED', gen_random_uuid(), '2025-02-22 12:00Z', now(), 'old'), \
             ('{o3}', 'CANCELLED', gen_random_uuid(), '2025-02-22 12:00Z', now(), 'old'), \
             ('{o4}', 'CLOSED', gen_random_uuid(), '2025-02-22 10:00Z', now(), 'old'), \
             ('{o5}', 'CANCELLED', gen_random_uuid(), '2025-02-22 10:00Z', now(), 'old'), \
             ('{o6}', 'CANCELLED', gen_random_uuid(), '2025-02-22 10:00Z', now(), 'old');
         INSERT INTO dds.order_load_state VALUES ('{o1}', 1, '2025-02-22 11:00Z', now()), \
             ('{o2}', 2, '2025-02-22 12:00Z', now()), ('{o3}', 3, '2025-02-22 12:00Z', now()), \
             ('{o4}', 4, '2025-02-22 13:00Z', now()), ('{o5}', 5, '2025-02-22 12:00Z', now()), \
             ('{o6}', 6, '2025-02-22 12:00Z', now());
         INSERT INTO stg.order_events (object_id, object_type, sent_dttm, update_ts, payload) \
             VALUES (4, 'order', '2025-02-22 13:00Z', '2025-02-22 13:00Z', \
                     '{{\"user\": {{\"id\": \"aaaaaaaaaaaaaaaaaaaaaaa2\"}}}}'), \
                    (6, 'order', '2025-02-22 12:00Z', '2025-02-22 12:00Z', \
                     '{{\"user\": {{\"id\": \"aaaaaaaaaaaaaaaaaaaaaaa1\"}}}}');
         INSERT INTO cdm.order_state (order_id, user_id, update_ts, counted, product_ids, \
                                      category_ids) VALUES \
             ('{o1}', '{u}', '2025-02-22 11:00Z', true, '{{{x}}}', '{{{soup}}}'), \
             ('{o2}', '{u}', '2025-02-22 12:00Z', true, '{{{x}}}', '{{{pizza}}}'), \
             ('{o4}', '{v}', '2025-02-22 13:00Z', true, '{{{y}}}', '{{{dessert}}}'), \
             ('{o5}', '{u}', '2025-02-22 12:00Z', false, '{{{x}}}', '{{{pizza}}}');
         INSERT INTO cdm.user_product_counters (user_id, product_id, product_name, order_cnt) \
             VALUES ('{u}', '{x}', 'Борщ', 2), ('{u}', '{y}', 'Торт', 0), ('{v}', '{y}', 'Торт', 1);
         INSERT INTO cdm.user_category_counters (user_id, category_id, category_name, \
             order_cnt) VALUES ('{u}', '{soup}', 'Супы', 1), ('{u}', '{dessert}', 'Десерты', 0), \
             ('{u}', '{pizza}', 'Пицца', 1), ('{v}', '{dessert}', 'Десерты', 1);",
        lo1 = link(&o1, &u),
        lo2 = link(&o2, &u),
        lo3 = link(&o3, &v),
        p1x = link(&o1, &x),
        p1y = link(&o1, &y),
        p2x = link(&o2, &x),
        p3y = link(&o3, &y),
        lo4v = link(&o4, &v),
        lo4u = link(&o4, &u),
        lo5u = link(&o5, &u),
        lo5v = link(&o5, &v),
        lo6u = link(&o6, &u),
        lo6v = link(&o6, &v),
        p4y = link(&o4, &y),
        p5x = link(&o5, &x),
        p6x = link(&o6, &x),
        xs = link(&x, &soup),
        yd = link(&y, &dessert),
        xp = link(&x, &pizza),
    ))
    .await
    .map_err(|e| anyhow::anyhow!("writing the old rows: {e:?}"))?;
    // The previous release's recount counts the dropped dessert, both categories of x in both
    // orders, and order 4 for both its users: the disagreement the upgrade fixes.
    let dessert_of = |user: &str| {
        format!(
            "SELECT coalesce(sum(order_cnt), 0)::bigint FROM cdm.v_user_category_recount \
             WHERE category_id = '{dessert}' AND user_id = '{user}'"
        )
    };
    let old_dessert: i64 = db.query_one(&dessert_of(&u), &[]).await?.get(0);
    assert_eq!(
        old_dessert, 2,
        "order 1's dropped dish, and order 4 for its former user"
    );
    let old_dessert: i64 = db.query_one(&dessert_of(&v), &[]).await?.get(0);
    assert_eq!(old_dessert, 1);
    let before = fingerprint(&db).await?;

    let applied = vault_migrations::run(&url).await?;
    let all = vault_migrations::versions()?;
    assert_eq!(applied, all[1..], "every later migration, once");
    assert_eq!(fingerprint(&db).await?, before, "old rows changed");

    // Every old order has its latest version, and its dishes under one category each.
    let versions: Vec<(i64, String)> = db
        .pairs(
            "SELECT o.order_id, v.update_ts::text FROM dds.s_order_version v \
             JOIN dds.h_order o USING (h_order_pk) ORDER BY 1",
        )
        .await?
        .into_iter()
        .collect();
    assert_eq!(
        versions,
        [
            (1, "2025-02-22 11:00:00+00".to_owned()),
            (2, "2025-02-22 12:00:00+00".to_owned()),
            (3, "2025-02-22 12:00:00+00".to_owned()),
            (4, "2025-02-22 13:00:00+00".to_owned()),
            (5, "2025-02-22 12:00:00+00".to_owned()),
            (6, "2025-02-22 12:00:00+00".to_owned())
        ]
    );
    // And the user of that version, one each: the only link, or the one the evidence names.
    let users: Vec<(i64, String, String)> = db
        .query(
            "SELECT o.order_id, u.user_id, l.hk_order_user_pk::text \
             FROM dds.v_order_latest_user l JOIN dds.h_order o USING (h_order_pk) \
             JOIN dds.h_user u USING (h_user_pk) ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let (first, second) = ("aaaaaaaaaaaaaaaaaaaaaaa1", "aaaaaaaaaaaaaaaaaaaaaaa2");
    let user_of = |order: i64, source: &str, h_order: &str, h_user: &str| {
        (order, source.to_owned(), link(h_order, h_user))
    };
    assert_eq!(
        users,
        [
            user_of(1, first, &o1, &u),
            user_of(2, first, &o2, &u),
            user_of(3, second, &o3, &v),
            user_of(4, second, &o4, &v),
            user_of(5, first, &o5, &u),
            user_of(6, first, &o6, &u),
        ]
    );
    let effective: i64 = db
        .query_one("SELECT count(*) FROM dds.s_order_user_effectivity", &[])
        .await?
        .get(0);
    assert_eq!(effective, 6, "one user per applied version");
    let facts: Vec<(i64, String)> = db
        .pairs("SELECT order_id, user_id FROM bi.fact_order ORDER BY 1")
        .await?
        .into_iter()
        .collect();
    assert_eq!(
        facts,
        [
            (1, first),
            (2, first),
            (3, second),
            (4, second),
            (5, first),
            (6, first)
        ]
        .map(|(order, user)| (order, user.to_owned())),
        "one fact per order, with its latest version's user"
    );
    let lines: Vec<(i64, String, String, String)> = db
        .query(
            "SELECT o.order_id, l.h_product_pk::text, l.h_category_pk::text, \
                    l.hk_order_product_category_pk::text \
             FROM dds.v_order_latest_lines l JOIN dds.h_order o USING (h_order_pk) \
             ORDER BY 1, 2",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let line = |order: &str, product: &str, category: &str| {
        let k = |s: &str| s.parse::<HashKey>().expect("key");
        HashKey::link3(k(order), k(product), k(category)).to_string()
    };
    assert_eq!(
        lines,
        [
            (1, x.clone(), soup.clone(), line(&o1, &x, &soup)),
            (2, x.clone(), pizza.clone(), line(&o2, &x, &pizza)),
            (3, y.clone(), dessert.clone(), line(&o3, &y, &dessert)),
            (4, y.clone(), dessert.clone(), line(&o4, &y, &dessert)),
            (5, x.clone(), pizza.clone(), line(&o5, &x, &pizza)),
            (6, x.clone(), pizza.clone(), line(&o6, &x, &pizza)),
        ],
        "the migration's keys are the loader's (docs/contract.md §3.1)"
    );

    // The recount now means what the counters mean.
    let differences: i64 = db
        .query_one("SELECT count(*) FROM cdm.v_counter_differences", &[])
        .await?
        .get(0);
    assert_eq!(differences, 0);
    let recount: Vec<(String, String, i32)> = db
        .query(
            "SELECT user_id::text, category_id::text, order_cnt FROM cdm.v_user_category_recount \
             ORDER BY 1, 2",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut expected = vec![
        (u.clone(), soup.clone(), 1),
        (u.clone(), pizza.clone(), 1),
        (v.clone(), dessert.clone(), 1),
    ];
    expected.sort();
    assert_eq!(recount, expected);

    // The new tables are insert-only too.
    for statement in [
        "UPDATE dds.s_order_version SET update_ts = now()",
        "DELETE FROM dds.l_order_product_category",
        "TRUNCATE dds.s_order_product_category_effectivity",
        "DELETE FROM dds.s_order_user_effectivity",
        "UPDATE dds.s_order_user_effectivity SET update_ts = now()",
    ] {
        let error = db
            .batch_execute(statement)
            .await
            .expect_err("insert-only table");
        assert!(format!("{error:?}").contains("insert-only"), "{error:?}");
    }
    Ok(())
}
