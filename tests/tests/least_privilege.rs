//! Least privilege, proven (issue 16): after `vaultctl migrate`'s grants
//! (`vault_migrations::roles`) each service role holds exactly the privileges of its list —
//! nothing more on any relation of the warehouse — and is refused every other statement its
//! code never runs; each stage's warehouse probe still writes as its role and the warehouse
//! check finds nothing missing; `CREATE` on `public` is revoked even where Postgres granted it
//! to everyone; and the read API's sessions (`service_cdm::read_only`) are read-only and run
//! as the read-only role, which is refused any write and the dead letters' payloads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures::FutureExt as _;
use vault_migrations::roles::{self, Layer, ServiceRole, DATA_VAULT};
use vault_runtime::{Settings, Stage};
use vault_tests::sql::{connect, outcome, Columns, OwnedDatabase};

const PERMISSION_DENIED: &str = "42501";
const READ_ONLY_TRANSACTION: &str = "25006";

/// A database owned by a role that may create roles (as docker/postgres/10-owner.sh makes
/// it), migrated and granted as `vaultctl migrate` does; dropped with its roles at the end.
struct Warehouse {
    admin_config: tokio_postgres::Config,
    database: String,
    owner: String,
    /// `postgres://role@host:port/database` of each service role, and of the owner.
    urls: BTreeMap<&'static str, String>,
    names: BTreeMap<&'static str, String>,
}

impl Warehouse {
    async fn new() -> anyhow::Result<Self> {
        let db = OwnedDatabase::create("vaultline_lp", "vl").await?;
        let mut names = BTreeMap::new();
        let mut urls = BTreeMap::new();
        for layer in ["stg", "dds", "cdm"] {
            let name = db.role(layer);
            urls.insert(layer, db.url(&name));
            names.insert(layer, name);
        }
        urls.insert("owner", db.url(&db.owner));
        let reader = roles::reader_role(&names["cdm"]);
        urls.insert("reader", db.url(&reader));
        names.insert("reader", reader);
        Ok(Self {
            admin_config: db.admin_config,
            database: db.database,
            owner: db.owner,
            urls,
            names,
        })
    }

    /// The migrations and the grants, as `vaultctl migrate` runs them, after making `public`
    /// as open as Postgres 13 and 14 leave it.
    async fn migrate(&self) -> anyhow::Result<()> {
        let mut config = self.admin_config.clone();
        config.dbname(&self.database);
        connect(&config)
            .await?
            .batch_execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
            .await?;
        vault_migrations::run(&self.urls["owner"]).await?;
        let service_roles: Vec<ServiceRole> = [
            (Layer::Stg, "stg"),
            (Layer::Dds, "dds"),
            (Layer::Cdm, "cdm"),
        ]
        .into_iter()
        .map(|(layer, key)| ServiceRole {
            layer,
            name: self.names[key].clone(),
            password: Some(format!("{key}-password")),
        })
        .collect();
        roles::apply(&self.urls["owner"], service_roles).await
    }

    async fn client(&self, key: &str) -> anyhow::Result<tokio_postgres::Client> {
        let mut config = self.admin_config.clone();
        config.dbname(&self.database).user(&self.names[key]);
        connect(&config).await
    }

    async fn owner_client(&self) -> anyhow::Result<tokio_postgres::Client> {
        let mut config = self.admin_config.clone();
        config.dbname(&self.database).user(&self.owner);
        connect(&config).await
    }

    async fn drop(self) -> anyhow::Result<()> {
        let admin = connect(&self.admin_config).await?;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database
            ))
            .await?;
        for name in self.names.values().chain([&self.owner]) {
            admin
                .batch_execute(&format!("DROP ROLE IF EXISTS {name}"))
                .await?;
        }
        Ok(())
    }
}

/// Runs `test` on a fresh migrated warehouse, then drops it whatever happened.
async fn on_warehouse<F>(test: F) -> anyhow::Result<()>
where
    F: for<'w> FnOnce(&'w Warehouse) -> futures::future::BoxFuture<'w, anyhow::Result<()>>,
{
    let warehouse = Warehouse::new().await?;
    let result = AssertUnwindSafe(async {
        warehouse.migrate().await?;
        test(&warehouse).await
    })
    .catch_unwind()
    .await;
    warehouse.drop().await?;
    match result {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

const PRIVILEGES: [&str; 7] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
];

/// What the lists say `role` holds on each relation, whole-table and per column, as
/// `(relation, privilege, column or "")`.
fn expected(grants: &[roles::Grant]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for grant in grants {
        for privilege in grant
            .privileges
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            out.insert((grant.relation.into(), privilege.into(), String::new()));
        }
        for (privilege, columns) in [
            ("SELECT", grant.select_columns),
            ("UPDATE", grant.update_columns),
        ] {
            for column in columns {
                out.insert((grant.relation.into(), privilege.into(), (*column).into()));
            }
        }
    }
    out
}

/// What `role` holds on the warehouse's relations, from the catalog: whole-table privileges
/// and, where it lacks the table-wide one, column privileges.
async fn held(
    owner: &tokio_postgres::Client,
    role: &str,
) -> anyhow::Result<BTreeSet<(String, String, String)>> {
    let mut out = BTreeSet::new();
    let rows = owner
        .query(
            "SELECT n.nspname || '.' || c.relname, p.privilege, '' \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             CROSS JOIN unnest($2::text[]) AS p(privilege) \
             WHERE n.nspname IN ('stg', 'dds', 'cdm', 'ops', 'bi') AND c.relkind IN ('r', 'p', 'v', 'm') \
               AND has_table_privilege($1, c.oid, p.privilege) \
             UNION ALL \
             SELECT n.nspname || '.' || c.relname, p.privilege, a.attname::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             CROSS JOIN unnest(ARRAY['SELECT', 'UPDATE']) AS p(privilege) \
             WHERE n.nspname IN ('stg', 'dds', 'cdm', 'ops', 'bi') AND c.relkind IN ('r', 'p', 'v', 'm') \
               AND NOT has_table_privilege($1, c.oid, p.privilege) \
               AND has_column_privilege($1, c.oid, a.attnum, p.privilege)",
            &[&role, &PRIVILEGES.to_vec()],
        )
        .await?;
    for row in rows {
        out.insert((row.get(0), row.get(1), row.get(2)));
    }
    Ok(out)
}

#[tokio::test]
async fn each_role_holds_exactly_its_grants_and_is_refused_every_other_statement(
) -> anyhow::Result<()> {
    on_warehouse(|w| {
        async move {
            let owner = w.owner_client().await?;
            // The Data Vault's tables, for service-dds's default.
            let vault: Vec<String> = owner
                .column(
                    "SELECT 'dds.' || c.relname FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = 'dds' AND c.relkind IN ('r', 'p') \
                       AND c.relname <> 'order_load_state'",
                )
                .await?
                .into_iter()
                .collect();
            assert!(vault.len() >= 15, "{vault:?}");
            for (key, layer) in [("stg", Layer::Stg), ("dds", Layer::Dds), ("cdm", Layer::Cdm)] {
                let mut want = expected(&roles::grants(layer));
                if layer == Layer::Dds {
                    for table in &vault {
                        for privilege in DATA_VAULT.split(", ") {
                            want.insert((table.clone(), privilege.into(), String::new()));
                        }
                    }
                }
                let have = held(&owner, &w.names[key]).await?;
                assert_eq!(have, want, "{key}: held (left) vs listed (right)");
            }
            let reader = held(&owner, &w.names["reader"]).await?;
            assert_eq!(reader, expected(&roles::reader_grants()), "reader");

            let (stg, dds, cdm) = (
                w.client("stg").await?,
                w.client("dds").await?,
                w.client("cdm").await?,
            );
            // What the code runs, and a little more that it needs, is allowed.
            let allowed = [
                (&cdm, "BEGIN; LOCK TABLE cdm.tag_rules IN SHARE MODE; ROLLBACK"),
                (&cdm, "BEGIN; LOCK TABLE cdm.tag_rules IN SHARE ROW EXCLUSIVE MODE; ROLLBACK"),
                (&cdm, "UPDATE cdm.user_tag_events SET published_at = now() WHERE id = ANY('{-1}')"),
                (&cdm, "DELETE FROM cdm.user_tags WHERE tag = 'none'"),
                (&cdm, "DELETE FROM cdm.tag_rules_applied WHERE tag = 'none'"),
                (&dds, "SELECT h_order_pk FROM dds.order_load_state FOR UPDATE"),
            ];
            for (client, sql) in allowed {
                assert_eq!(outcome(client, sql).await, None, "must be allowed: {sql}");
            }
            // Everything else its code never runs is refused.
            let refused = [
                (&stg, "DELETE FROM stg.order_events"),
                (&stg, "TRUNCATE stg.order_events"),
                (&stg, "SELECT payload FROM ops.dead_letters"),
                (&stg, "UPDATE ops.dead_letters SET reason = ''"),
                (&stg, "DELETE FROM ops.dead_letters"),
                (&stg, "CREATE TABLE public.intruder (id int)"),
                (&dds, "UPDATE dds.h_order SET load_src = 'x'"),
                (&dds, "DELETE FROM dds.h_order"),
                (&dds, "DELETE FROM dds.s_order_status"),
                (&dds, "TRUNCATE dds.l_order_user"),
                (&dds, "DELETE FROM dds.order_load_state"),
                (&dds, "SELECT count(*) FROM dds.v_order_latest_status"),
                (&dds, "SELECT payload FROM ops.dead_letters"),
                (&dds, "CREATE TABLE public.intruder (id int)"),
                (&cdm, "DELETE FROM cdm.order_state"),
                (&cdm, "DELETE FROM cdm.user_product_counters"),
                (&cdm, "TRUNCATE cdm.user_category_counters"),
                (&cdm, "UPDATE cdm.user_tag_events SET tag = 'x'"),
                (&cdm, "DELETE FROM cdm.user_tag_events"),
                (&cdm, "INSERT INTO cdm.tag_rules (tag, scope, target, threshold) VALUES ('t', 'category', 'c', 1)"),
                (&cdm, "UPDATE cdm.tag_rules SET threshold = 2"),
                (&cdm, "DELETE FROM cdm.tag_rules"),
                (&cdm, "SELECT payload FROM ops.dead_letters"),
                (&cdm, "SELECT message_key FROM ops.dead_letters"),
                (&cdm, "UPDATE ops.dead_letters SET replayed_at = now()"),
                (&cdm, "CREATE TABLE public.intruder (id int)"),
                (&cdm, "CREATE TABLE cdm.intruder (id int)"),
            ];
            for (client, sql) in refused {
                assert_eq!(
                    outcome(client, sql).await.as_deref(),
                    Some(PERMISSION_DENIED),
                    "must be refused: {sql}"
                );
            }
            // The owner (vaultctl rules) still changes rules.
            let rule = "INSERT INTO cdm.tag_rules (tag, scope, target, threshold) \
                        VALUES ('owner-made', 'category', 'c', 1); \
                        UPDATE cdm.tag_rules SET threshold = 2 WHERE tag = 'owner-made'; \
                        DELETE FROM cdm.tag_rules WHERE tag = 'owner-made'";
            assert_eq!(outcome(&owner, rule).await, None, "{rule}");
            Ok(())
        }
        .boxed()
    })
    .await
}

/// A stage's warehouse probe and a dead letter, as its role, rolled back; and the warehouse
/// check over the stage's tables finds nothing missing.
async fn probe_as<S: Stage>(stage: &S, url: &str) -> anyhow::Result<()> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    let problems = vault_runtime::diagnose_warehouse(&mut conn, &S::tables()).await;
    assert_eq!(problems, Vec::<String>::new(), "{url}");
    conn.begin_test_transaction().await?;
    stage
        .probe(&mut conn)
        .await
        .map_err(|failure| anyhow::anyhow!("{failure:#}"))?;
    let letter = vault_runtime::DeadLetter {
        topic: "probe".into(),
        partition: 0,
        offset: 1,
        key: None,
        payload: b"{}".to_vec(),
        kind: "probe".into(),
        reason: "a test".into(),
    };
    vault_runtime::insert_dead_letters(&mut conn, "service-test", &[letter]).await?;
    Ok(())
}

fn settings(profile: vault_runtime::Profile, url: &str) -> anyhow::Result<Settings> {
    let env: HashMap<String, String> = [
        ("DATABASE_URL".to_owned(), url.to_owned()),
        ("REDIS_URL".to_owned(), "redis://127.0.0.1:1".to_owned()),
    ]
    .into();
    Ok(Settings::from(&env, profile)?)
}

#[tokio::test]
async fn each_stage_s_probe_writes_as_its_role_and_the_api_reads_as_its_read_only_role(
) -> anyhow::Result<()> {
    on_warehouse(|w| {
        async move {
            let stg_settings = settings(service_stg::PROFILE, &w.urls["stg"])?;
            let redis =
                vault_runtime::redis_pool(stg_settings.redis.as_ref().expect("stg reads Redis"))?;
            let stg = service_stg::StgStage::new(redis, &stg_settings)?;
            probe_as(&stg, &w.urls["stg"]).await?;
            let dds_settings = settings(service_dds::PROFILE, &w.urls["dds"])?;
            let dds = service_dds::DdsStage::new((), &dds_settings)?;
            probe_as(&dds, &w.urls["dds"]).await?;
            let cdm_settings = settings(service_cdm::PROFILE, &w.urls["cdm"])?;
            let cdm = service_cdm::CdmStage::new((), &cdm_settings)?;
            probe_as(&cdm, &w.urls["cdm"]).await?;
            // service-cdm's probe draws from the tag outbox's sequence, the one sequence its
            // batches draw from, so it tells a revoked sequence apart where Postgres's message
            // is not in English (docs/failures.md).
            let owner = w.owner_client().await?;
            let sequence = "SEQUENCE cdm.user_tag_events_id_seq";
            let role = &w.names["cdm"];
            owner
                .batch_execute(&format!(
                    "REVOKE USAGE, SELECT, UPDATE ON {sequence} FROM {role}"
                ))
                .await?;
            let refused = probe_as(&cdm, &w.urls["cdm"])
                .await
                .expect_err("a probe without the outbox's sequence");
            assert!(
                format!("{refused:#}").contains("user_tag_events_id_seq"),
                "{refused:#}"
            );
            owner
                .batch_execute(&format!(
                    "GRANT USAGE, SELECT, UPDATE ON {sequence} TO {role}"
                ))
                .await?;
            probe_as(&cdm, &w.urls["cdm"]).await?;

            // The read API's session: the reader role, read-only.
            let pool = service_cdm::read_only::pool(&cdm_settings, 1);
            let mut conn = pool.get().await?;
            let who: Vec<Who> = diesel_async::RunQueryDsl::load(
                diesel::sql_query("SELECT current_user::text AS name"),
                &mut conn,
            )
            .await?;
            assert_eq!(who[0].name, w.names["reader"]);
            let counts = "SELECT service, count(*) FROM ops.dead_letters GROUP BY service; \
                          SELECT count(*) FROM cdm.user_tags; SELECT count(*) FROM cdm.tag_rules";
            conn.batch_execute(counts).await?;
            let write = "INSERT INTO cdm.user_tags (user_id, tag, order_cnt) \
                         VALUES (gen_random_uuid(), 'x', 1)";
            assert_eq!(
                refusal(conn.batch_execute(write).await),
                Some(READ_ONLY_TRANSACTION.to_owned()),
                "the API's session must refuse a write: {write}"
            );
            // Even in a read-write transaction, the role refuses it, and the payloads.
            for sql in [
                format!("BEGIN READ WRITE; {write}"),
                "BEGIN; SELECT payload FROM ops.dead_letters".to_owned(),
            ] {
                let refused = refusal(conn.batch_execute(&sql).await);
                conn.batch_execute("ROLLBACK").await?;
                assert_eq!(refused, Some(PERMISSION_DENIED.to_owned()), "{sql}");
            }
            Ok(())
        }
        .boxed()
    })
    .await
}

#[derive(diesel::QueryableByName)]
struct Who {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// Why diesel's statement was refused, as the SQLSTATE its message stands for (diesel keeps the
/// message, not the code), or `None` when it succeeded.
fn refusal(result: diesel::QueryResult<()>) -> Option<String> {
    match result {
        Ok(()) => None,
        Err(diesel::result::Error::DatabaseError(_, info)) => {
            Some(info.message().to_owned()).map(|message| {
                if message.contains("read-only transaction") {
                    READ_ONLY_TRANSACTION.to_owned()
                } else if message.contains("permission denied") {
                    PERMISSION_DENIED.to_owned()
                } else {
                    message
                }
            })
        }
        Err(other) => Some(other.to_string()),
    }
}
