//! The least-privilege service roles against a real Postgres: what `vaultctl migrate` grants
//! (`vault_migrations::roles`), each role doing its service's kind of writes and refused the
//! others' layers, none privileged, and `MIGRATIONS=verify`'s read-only check working where
//! diesel's own check is refused. The services themselves run under these roles in
//! `deploy_wiring.rs`.

use std::panic::AssertUnwindSafe;

use futures::FutureExt as _;
use vault_migrations::roles::{Layer, ServiceRole};
use vault_tests::sql::{connect, outcome, OwnedDatabase};

const PERMISSION_DENIED: &str = "42501";

#[tokio::test]
async fn each_service_role_writes_only_its_layer_and_none_is_privileged() -> anyhow::Result<()> {
    let db = OwnedDatabase::create("vaultline_roles", "vr").await?;
    let (admin_config, admin) = (&db.admin_config, &db.admin);
    let (database, owner) = (&db.database, &db.owner);
    let names = [
        (Layer::Stg, db.role("stg")),
        (Layer::Dds, db.role("dds")),
        (Layer::Cdm, db.role("cdm")),
    ];

    // Asserts panic; the clean-up below runs anyway, then the panic goes on.
    let result = AssertUnwindSafe(async {
        let mut owner_config = admin_config.clone();
        owner_config.user(owner).dbname(database);
        let owner_url = db.url(owner);
        vault_migrations::run(&owner_url).await?;
        let roles: Vec<ServiceRole> = names
            .iter()
            .map(|(layer, name)| ServiceRole {
                layer: *layer,
                name: name.clone(),
                password: Some(format!("{name}-password")),
            })
            .collect();
        vault_migrations::roles::apply(&owner_url, roles.clone()).await?;
        // Idempotent: a second run (every `vaultctl migrate` does one) changes nothing.
        vault_migrations::roles::apply(&owner_url, roles).await?;

        let mut clients = Vec::new();
        for (_, name) in &names {
            let mut config = owner_config.clone();
            config.user(name);
            clients.push(connect(&config).await?);
        }
        let [stg, dds, cdm] = [&clients[0], &clients[1], &clients[2]];

        // Each service's kind of write, on its own layer, succeeds.
        let own = [
            (stg, "INSERT INTO stg.order_events (object_id, object_type, sent_dttm, update_ts, payload) \
                   VALUES (1, 'order', now(), now(), '{}') \
                   ON CONFLICT (object_id) DO UPDATE SET payload = EXCLUDED.payload \
                   WHERE stg.order_events.update_ts < EXCLUDED.update_ts"),
            (dds, "INSERT INTO dds.h_order (h_order_pk, order_id, order_dt, load_dt, load_src) \
                   VALUES (gen_random_uuid(), 1, now(), now(), 'test') ON CONFLICT DO NOTHING; \
                   SELECT h_order_pk, update_ts FROM dds.order_load_state"),
            (cdm, "BEGIN; INSERT INTO cdm.order_state (order_id) VALUES (gen_random_uuid()) \
                   ON CONFLICT DO NOTHING; \
                   SELECT order_id FROM cdm.order_state ORDER BY order_id FOR UPDATE; \
                   INSERT INTO cdm.user_product_counters (user_id, product_id, product_name, order_cnt) \
                   VALUES (gen_random_uuid(), gen_random_uuid(), 'p', 1) \
                   ON CONFLICT (user_id, product_id) DO UPDATE SET order_cnt = \
                   cdm.user_product_counters.order_cnt + 1; COMMIT"),
        ];
        for (client, sql) in own {
            assert_eq!(outcome(client, sql).await, None, "{sql}");
        }
        // Each may add dead letters (a redelivered one is kept once), twice over, but not read
        // them back: their payloads are every service's input.
        for (i, client) in clients.iter().enumerate() {
            let sql = format!(
                "INSERT INTO ops.dead_letters (service, topic, partition, \"offset\", payload, error_kind, reason) \
                 VALUES ('s{i}', 't', 0, 0, 'x', 'k', 'r') ON CONFLICT DO NOTHING; \
                 INSERT INTO ops.dead_letters (service, topic, partition, \"offset\", payload, error_kind, reason) \
                 VALUES ('s{i}', 't', 0, 0, 'x', 'k', 'r') \
                 ON CONFLICT (service, topic, partition, \"offset\") DO NOTHING"
            );
            assert_eq!(outcome(client, &sql).await, None, "{sql}");
            let read = "SELECT payload FROM ops.dead_letters";
            assert_eq!(
                outcome(client, read).await.as_deref(),
                Some(PERMISSION_DENIED),
                "{read}"
            );
        }

        // service-cdm's counter check reads the recount over dds through cdm's views, which
        // run as their owner: allowed, though the role may not read dds itself (refused below).
        let check = "SELECT count(*) FROM cdm.v_counter_differences; \
                     SELECT count(*) FROM cdm.v_user_product_recount; \
                     SELECT count(*) FROM cdm.v_user_category_recount";
        assert_eq!(outcome(cdm, check).await, None, "{check}");

        // Nothing of another layer, no replaying of dead letters, no DDL.
        let refused = [
            (stg, "INSERT INTO cdm.order_state (order_id) VALUES (gen_random_uuid())"),
            (stg, "UPDATE cdm.user_product_counters SET order_cnt = 0"),
            (stg, "SELECT count(*) FROM dds.h_order"),
            (dds, "DELETE FROM stg.order_events"),
            (dds, "INSERT INTO cdm.order_state (order_id) VALUES (gen_random_uuid())"),
            (cdm, "SELECT count(*) FROM stg.order_events"),
            (cdm, "SELECT count(*) FROM dds.h_order"),
            (stg, "SELECT count(*) FROM cdm.v_counter_differences"),
            (cdm, "INSERT INTO dds.h_order (h_order_pk, order_id, order_dt, load_dt, load_src) \
                   VALUES (gen_random_uuid(), 2, now(), now(), 'x')"),
            (stg, "UPDATE ops.dead_letters SET replayed_at = now()"),
            (cdm, "DELETE FROM ops.dead_letters"),
            (stg, "CREATE TABLE stg.intruder (id int)"),
            (dds, "DROP TABLE dds.h_order"),
            (cdm, "CREATE TABLE public.intruder (id int)"),
        ];
        for (client, sql) in refused {
            assert_eq!(
                outcome(client, sql).await.as_deref(),
                Some(PERMISSION_DENIED),
                "must be refused: {sql}"
            );
        }

        let privileged: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1) \
                 AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls)",
                &[&names.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>()],
            )
            .await?
            .get(0);
        assert_eq!(privileged, 0, "a service role is privileged");
        let with_password: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_authid WHERE rolname = ANY($1) AND rolpassword IS NOT NULL",
                &[&names.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>()],
            )
            .await?
            .get(0);
        assert_eq!(with_password, 3, "each role's password is set");

        // MIGRATIONS=verify: the read-only check works for a service role, diesel's does not.
        let stg_url = owner_url.replacen(&format!("//{owner}@"), &format!("//{}@", names[0].1), 1);
        assert_eq!(vault_migrations::pending(&stg_url).await?, Vec::<String>::new());
        assert!(
            vault_migrations::run(&stg_url).await.is_err(),
            "diesel's migration check must be refused to a service role"
        );
        // A superuser named as a service role is refused, not used.
        let superuser = admin_config.get_user().unwrap_or("postgres").to_owned();
        let refused = vault_migrations::roles::apply(
            &owner_url,
            vec![ServiceRole {
                layer: Layer::Cdm,
                name: superuser,
                password: None,
            }],
        )
        .await;
        assert!(refused.is_err(), "a superuser was accepted as a service role");
        anyhow::Ok(())
    })
    .catch_unwind()
    .await;

    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await?;
    let reader = vault_migrations::roles::reader_role(&names[2].1);
    for name in names.iter().map(|(_, n)| n).chain([&reader, owner]) {
        admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {name}"))
            .await?;
    }
    match result {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
