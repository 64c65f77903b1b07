//! The least-privilege Postgres role of each service (issues 6 and 16): what `vaultctl migrate`
//! grants after applying the migrations, as the owner of the schemas.
//!
//! Each role gets exactly the statements its service's code runs, table by table ([`grants`]),
//! and nothing else: no UPDATE or DELETE on the insert-only Data Vault, nothing on another
//! layer, dead letters it may add but not read back (their payloads are other services' input
//! data too), and diesel's bookkeeping table to read (for `MIGRATIONS=verify`). The same list
//! gives each stage's `tables()` the privileges the warehouse check (`failure::diagnose`)
//! expects, so the check and the grants cannot drift apart. Every run first revokes everything
//! on the warehouse's schemas and grants the list again, so a privilege dropped from the list
//! is taken back. Data Vault tables added by later migrations get `SELECT, INSERT` without
//! touching this file; a table added to `stg` or `cdm` must be added here.
//!
//! service-cdm's read API reads as a role of its own, `<cdm role>_reader` ([`reader_role`]):
//! `NOLOGIN`, granted to the cdm role (which may `SET ROLE` to it but does not inherit its
//! privileges), with `SELECT` on what the API reads and nothing else (not the dead letters'
//! payloads). The API switches to it with `SET LOCAL ROLE` inside its
//! read-only transactions: no second credential.
//!
//! A role that does not exist is created (`LOGIN`, no other attribute); a role that is a
//! superuser, or may create roles or databases, or bypasses row security, is refused rather
//! than used. `CREATE` on schema `public` is revoked from `PUBLIC` (Postgres 13 and 14 grant
//! it to everyone), and a service role that could still create objects there is an error.

use std::fmt;

use anyhow::{bail, Context as _};
use diesel::connection::Connection;
use diesel::sql_types::{Bool, Text};
use diesel::{QueryableByName, RunQueryDsl};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;

/// The layer a service owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Stg,
    Dds,
    Cdm,
}

impl Layer {
    pub const ALL: [Layer; 3] = [Layer::Stg, Layer::Dds, Layer::Cdm];

    /// The schema the layer's service writes.
    pub fn schema(self) -> &'static str {
        match self {
            Layer::Stg => "stg",
            Layer::Dds => "dds",
            Layer::Cdm => "cdm",
        }
    }
}

/// What a role may do on one relation: the statements its code runs there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// `schema.relation`.
    pub relation: &'static str,
    /// Whole-table privileges, as `GRANT` and `has_table_privilege` take them: `"SELECT, INSERT"`.
    pub privileges: &'static str,
    /// Columns the role may `SELECT` (a read of chosen columns, not of the whole row).
    pub select_columns: &'static [&'static str],
    /// Columns the role may `UPDATE` (an update of chosen columns only).
    pub update_columns: &'static [&'static str],
}

impl Grant {
    const fn table(relation: &'static str, privileges: &'static str) -> Self {
        Self {
            relation,
            privileges,
            select_columns: &[],
            update_columns: &[],
        }
    }
}

/// What the Data Vault's tables are granted to service-dds: `INSERT`, and `SELECT` for the
/// satellites' "latest hashdiff" lookup and the `ON CONFLICT` skips. Hubs, links and
/// satellites are insert-only (their triggers refuse UPDATE, DELETE and TRUNCATE too).
pub const DATA_VAULT: &str = "SELECT, INSERT";

/// service-stg: the upsert of the newest version of each order.
const STG: &[Grant] = &[Grant::table("stg.order_events", "SELECT, INSERT, UPDATE")];

/// service-dds: the Data Vault ([`DATA_VAULT`], every other table of `dds`), the load state,
/// which is read `FOR UPDATE` and upserted, and the point-in-time tables, which are upserted
/// (the daily ones by `dds.pit_order`'s trigger).
const DDS: &[Grant] = &[
    Grant::table("dds.order_load_state", "SELECT, INSERT, UPDATE"),
    Grant::table("dds.pit_order", "SELECT, INSERT, UPDATE"),
    Grant::table("dds.pit_order_daily_user", "SELECT, INSERT, UPDATE"),
    Grant::table("dds.pit_order_daily", "SELECT, INSERT, UPDATE"),
    Grant::table("dds.pit_product", "SELECT, INSERT, UPDATE"),
];

/// service-cdm: the datamart step (`handler.rs`, `tags.rs`), the rule watcher and recompute,
/// the tag outbox relay and the counter check (`service-cdm/src/verify.rs`).
const CDM: &[Grant] = &[
    Grant::table("cdm.order_state", "SELECT, INSERT, UPDATE"),
    Grant::table("cdm.user_product_counters", "SELECT, INSERT, UPDATE"),
    Grant::table("cdm.user_category_counters", "SELECT, INSERT, UPDATE"),
    // Read, and locked (`LOCK TABLE ... IN SHARE [ROW EXCLUSIVE] MODE`), which Postgres allows
    // only with UPDATE, DELETE or TRUNCATE; a trigger refuses the actual writes to anyone but
    // the table's owner (rules are changed by operators, `vaultctl rules`).
    Grant::table("cdm.tag_rules", "SELECT, UPDATE"),
    Grant::table("cdm.tag_rules_applied", "SELECT, INSERT, UPDATE, DELETE"),
    // Grants are inserted, counts updated and revokes deleted.
    Grant::table("cdm.user_tags", "SELECT, INSERT, UPDATE, DELETE"),
    // The outbox: inserted with the change, marked published by the relay.
    Grant {
        relation: "cdm.user_tag_events",
        privileges: "SELECT, INSERT",
        select_columns: &[],
        update_columns: &["published_at"],
    },
    // The rule watcher: which rules the tags do not reflect yet.
    Grant::table("cdm.v_tag_rule_status", "SELECT"),
    Grant::table("cdm.v_counter_differences", "SELECT"),
    Grant::table("cdm.v_user_product_recount", "SELECT"),
    Grant::table("cdm.v_user_category_recount", "SELECT"),
];

/// Every service: a rejected message is added, never read back, changed or deleted. The
/// insert's `ON CONFLICT (service, topic, partition, "offset") DO NOTHING` (a redelivered
/// message is kept once) needs `SELECT` on exactly those columns.
const DEAD_LETTERS: Grant = Grant {
    relation: "ops.dead_letters",
    privileges: "INSERT",
    select_columns: &["service", "topic", "partition", "offset"],
    update_columns: &[],
};

/// The read API's role: what `service-cdm/src/api.rs` and `overview.rs` read. The dead
/// letters without their keys and payloads (the summary counts them by service).
const READER: &[Grant] = &[
    Grant::table("cdm.user_product_counters", "SELECT"),
    Grant::table("cdm.user_category_counters", "SELECT"),
    Grant::table("cdm.order_state", "SELECT"),
    Grant::table("cdm.tag_rules", "SELECT"),
    // `/api/v1/tags`: the rules with whether each is applied (the view reads
    // cdm.tag_rules_applied as its owner, so the reader needs nothing on that table).
    Grant::table("cdm.v_tag_rule_status", "SELECT"),
    Grant::table("cdm.user_tags", "SELECT"),
    Grant {
        relation: "ops.dead_letters",
        privileges: "",
        select_columns: &[
            "id",
            "service",
            "topic",
            "partition",
            "offset",
            "error_kind",
            "reason",
            "received_at",
            "replayed_at",
        ],
        update_columns: &[],
    },
];

/// The suffix of the read API's role name, after the cdm role's.
pub const READER_SUFFIX: &str = "_reader";

/// The read API's role for service-cdm's role `cdm`.
pub fn reader_role(cdm: &str) -> String {
    format!("{cdm}{READER_SUFFIX}")
}

/// Exactly what `layer`'s service role is granted, relation by relation, besides the Data
/// Vault's tables (service-dds: [`DATA_VAULT`] on every table of `dds` not listed) and the
/// bookkeeping every role shares (the dead letters, the sequences of its own schema, diesel's
/// table).
pub fn grants(layer: Layer) -> Vec<Grant> {
    let own = match layer {
        Layer::Stg => STG,
        Layer::Dds => DDS,
        Layer::Cdm => CDM,
    };
    own.iter().copied().chain([DEAD_LETTERS]).collect()
}

/// What the read API's role is granted.
pub fn reader_grants() -> Vec<Grant> {
    READER.to_vec()
}

/// The whole-table privileges a service role holds on `relation` (`"SELECT, INSERT"`), for
/// the warehouse check; `None` when no service role may use it.
pub fn privileges(relation: &str) -> Option<&'static str> {
    Layer::ALL
        .iter()
        .flat_map(|layer| grants(*layer))
        .find(|grant| grant.relation == relation)
        .map(|grant| grant.privileges)
        .or_else(|| relation.starts_with("dds.").then_some(DATA_VAULT))
}

/// A service's database role, as `vaultctl migrate` reads it from `PG_<LAYER>_USER` and
/// `PG_<LAYER>_PASSWORD`.
#[derive(Clone)]
pub struct ServiceRole {
    pub layer: Layer,
    /// A plain lower-case identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes).
    pub name: String,
    /// Set (or changed) on every run when present; absent leaves the role's password alone.
    pub password: Option<String>,
}

impl fmt::Debug for ServiceRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRole")
            .field("layer", &self.layer)
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

/// Creates the roles that do not exist, sets the passwords given, and grants each exactly what
/// its service needs, in one transaction. Run it after [`crate::run`], as the schemas' owner
/// (with `CREATEROLE` when a role must be created or its password set).
pub async fn apply(database_url: &str, roles: Vec<ServiceRole>) -> anyhow::Result<()> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || apply_blocking(&url, &roles))
        .await
        .context("role task panicked")?
}

fn apply_blocking(database_url: &str, roles: &[ServiceRole]) -> anyhow::Result<()> {
    for role in roles {
        if !is_plain_identifier(&role.name) {
            bail!(
                "role name `{}` must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63 bytes)",
                role.name
            );
        }
        if role.layer == Layer::Cdm && !is_plain_identifier(&reader_role(&role.name)) {
            bail!(
                "role name `{}` is too long: the read API's role `{}` must fit in 63 bytes",
                role.name,
                reader_role(&role.name)
            );
        }
    }
    let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(database_url)
        .context("cannot connect to Postgres to grant the service roles")?;
    conn.transaction(|conn| {
        // Postgres 13 and 14 let every role create objects in `public`; nothing of Vaultline
        // lives there but diesel's bookkeeping table. A no-op (with a warning) where this role
        // does not own the schema: checked per role below.
        diesel::sql_query("REVOKE CREATE ON SCHEMA public FROM PUBLIC").execute(conn)?;
        for role in roles {
            apply_one(conn, role).with_context(|| format!("role {}", role.name))?;
            if role.layer == Layer::Cdm {
                let reader = reader_role(&role.name);
                apply_reader(conn, &reader, &role.name)
                    .with_context(|| format!("role {reader}"))?;
            }
        }
        anyhow::Ok(())
    })?;
    tracing::info!(
        roles = ?roles.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        "Granted the service roles their layers."
    );
    Ok(())
}

fn apply_one(
    conn: &mut AsyncConnectionWrapper<AsyncPgConnection>,
    role: &ServiceRole,
) -> anyhow::Result<()> {
    let name = role.name.as_str();
    // `name` is a checked plain identifier, so it can stand in the SQL text as it is.
    diesel::sql_query(format!(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN \
             CREATE ROLE {name} LOGIN; \
           END IF; \
         END $$"
    ))
    .execute(conn)?;
    let privileged = diesel::sql_query(
        "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls AS flag \
         FROM pg_roles WHERE rolname = $1",
    )
    .bind::<Text, _>(name)
    .get_result::<Flag>(conn)?;
    if privileged.flag {
        bail!("is a superuser or may create roles or databases or bypass row security; a service role must have none of these");
    }
    if let Some(password) = &role.password {
        // The password travels as a bound parameter into a transaction-local setting, so the
        // statement text (which Postgres may log) never contains it.
        diesel::sql_query(
            "SELECT set_config('vaultline.role_password', $1, true) IS NOT NULL AS flag",
        )
        .bind::<Text, _>(password)
        .get_result::<Flag>(conn)?;
        diesel::sql_query(format!(
            "DO $$ BEGIN \
               EXECUTE format('ALTER ROLE {name} LOGIN PASSWORD %L', \
                              current_setting('vaultline.role_password')); \
             END $$"
        ))
        .execute(conn)?;
        diesel::sql_query(
            "SELECT set_config('vaultline.role_password', '', true) IS NOT NULL AS flag",
        )
        .get_result::<Flag>(conn)?;
    }
    let own = role.layer.schema();
    let mut statements = revoke_everything(name);
    statements.push(format!("GRANT USAGE ON SCHEMA {own}, ops TO {name}"));
    statements.extend(grant_statements(name, &grants(role.layer)));
    if role.layer == Layer::Dds {
        // Every base table of `dds` not listed is the Data Vault's (views get nothing).
        let listed: Vec<String> = DDS.iter().map(|g| format!("'{}'", g.relation)).collect();
        statements.push(format!(
            "DO $$ DECLARE t regclass; BEGIN \
               FOR t IN SELECT c.oid::regclass FROM pg_class c \
                        JOIN pg_namespace n ON n.oid = c.relnamespace \
                        WHERE n.nspname = 'dds' AND c.relkind IN ('r', 'p') \
                          AND format('dds.%s', c.relname) <> ALL (ARRAY[{}]) LOOP \
                 EXECUTE format('GRANT {DATA_VAULT} ON %s TO {name}', t); \
               END LOOP; \
             END $$",
            listed.join(", ")
        ));
    }
    statements.extend([
        // The sequences behind its own tables' ids and the dead letters' (nextval only).
        format!("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {own} TO {name}"),
        format!("GRANT USAGE ON SEQUENCE ops.dead_letters_id_seq TO {name}"),
        format!("GRANT SELECT ON __diesel_schema_migrations TO {name}"),
    ]);
    execute(conn, &statements)?;
    let creates = diesel::sql_query("SELECT has_schema_privilege($1, 'public', 'CREATE') AS flag")
        .bind::<Text, _>(name)
        .get_result::<Flag>(conn)?;
    if creates.flag {
        bail!(
            "may create objects in schema public, and this role cannot revoke that (it does not \
             own the schema); as its owner or a superuser run \
             `REVOKE CREATE ON SCHEMA public FROM PUBLIC` (and from {name}), then migrate again"
        );
    }
    Ok(())
}

/// The read API's role: created `NOLOGIN` when missing, granted [`READER`] only, and granted
/// to the cdm role so that the API can `SET LOCAL ROLE` to it.
fn apply_reader(
    conn: &mut AsyncConnectionWrapper<AsyncPgConnection>,
    reader: &str,
    cdm: &str,
) -> anyhow::Result<()> {
    diesel::sql_query(format!(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{reader}') THEN \
             CREATE ROLE {reader} NOLOGIN; \
           END IF; \
         END $$"
    ))
    .execute(conn)?;
    let privileged = diesel::sql_query(
        "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolcanlogin AS flag \
         FROM pg_roles WHERE rolname = $1",
    )
    .bind::<Text, _>(reader)
    .get_result::<Flag>(conn)?;
    if privileged.flag {
        bail!("may log in, or is a superuser, or may create roles or databases or bypass row security; the read API's role must do none of these");
    }
    let mut statements = revoke_everything(reader);
    statements.push(format!("GRANT USAGE ON SCHEMA cdm, ops TO {reader}"));
    statements.extend(grant_statements(reader, READER));
    // The cdm role may become its reader but does not hold the reader's privileges itself
    // (it reads no dead letter back): NOINHERIT, and on Postgres 16+ the grant's own option.
    statements.push(format!("ALTER ROLE {cdm} NOINHERIT"));
    let version =
        diesel::sql_query("SELECT current_setting('server_version_num')::int >= 160000 AS flag")
            .get_result::<Flag>(conn)?;
    statements.push(if version.flag {
        format!("GRANT {reader} TO {cdm} WITH INHERIT FALSE")
    } else {
        format!("GRANT {reader} TO {cdm}")
    });
    execute(conn, &statements)
}

/// Takes back every privilege `name` holds on the warehouse's schemas and their relations.
fn revoke_everything(name: &str) -> Vec<String> {
    let schemas = "stg, dds, cdm, ops";
    vec![
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA {schemas} FROM {name}"),
        format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schemas} FROM {name}"),
        format!("REVOKE ALL ON SCHEMA {schemas} FROM {name}"),
    ]
}

fn grant_statements(name: &str, grants: &[Grant]) -> Vec<String> {
    let mut statements = Vec::new();
    for grant in grants {
        let relation = quoted_relation(grant.relation);
        if !grant.privileges.is_empty() {
            statements.push(format!(
                "GRANT {} ON {relation} TO {name}",
                grant.privileges
            ));
        }
        for (privilege, columns) in [
            ("SELECT", grant.select_columns),
            ("UPDATE", grant.update_columns),
        ] {
            if !columns.is_empty() {
                let columns: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
                statements.push(format!(
                    "GRANT {privilege} ({}) ON {relation} TO {name}",
                    columns.join(", ")
                ));
            }
        }
    }
    statements
}

/// `schema.relation` as SQL: both parts are plain identifiers written in this file.
fn quoted_relation(relation: &str) -> String {
    match relation.split_once('.') {
        Some((schema, table)) => format!("\"{schema}\".\"{table}\""),
        None => format!("\"{relation}\""),
    }
}

fn execute(
    conn: &mut AsyncConnectionWrapper<AsyncPgConnection>,
    statements: &[String],
) -> anyhow::Result<()> {
    for statement in statements {
        diesel::sql_query(statement)
            .execute(conn)
            .with_context(|| statement.clone())?;
    }
    Ok(())
}

fn is_plain_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && name.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_identifiers_are_role_names() {
        for good in ["vaultline_stg", "_x", "a1"] {
            assert!(is_plain_identifier(good), "{good}");
        }
        for bad in [
            "",
            "1a",
            "Stg",
            "a-b",
            "a b",
            "a;drop",
            "x\"y",
            &"a".repeat(64),
        ] {
            assert!(!is_plain_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn no_service_role_may_update_or_delete_the_data_vault_or_the_dead_letters() {
        for layer in Layer::ALL {
            for grant in grants(layer) {
                let insert_only = (grant.relation.starts_with("dds.")
                    && grant.relation != "dds.order_load_state"
                    && !grant.relation.starts_with("dds.pit_"))
                    || grant.relation == "ops.dead_letters";
                if insert_only {
                    assert!(
                        !grant.privileges.contains("UPDATE")
                            && !grant.privileges.contains("DELETE")
                            && grant.update_columns.is_empty(),
                        "{grant:?}"
                    );
                }
                assert!(!grant.privileges.contains("TRUNCATE"), "{grant:?}");
            }
        }
        assert_eq!(privileges("dds.h_order"), Some(DATA_VAULT));
        assert_eq!(privileges("cdm.user_tag_events"), Some("SELECT, INSERT"));
        assert_eq!(privileges("ops.dead_letters"), Some("INSERT"));
        assert_eq!(privileges("stg.nothing"), None);
    }

    #[test]
    fn the_reader_reads_no_dead_letter_payload_and_writes_nothing() {
        for grant in reader_grants() {
            assert!(matches!(grant.privileges, "" | "SELECT"), "{grant:?}");
            assert!(grant.update_columns.is_empty(), "{grant:?}");
            assert!(!grant.select_columns.contains(&"payload"), "{grant:?}");
            assert!(!grant.select_columns.contains(&"message_key"), "{grant:?}");
        }
        assert_eq!(reader_role("vaultline_cdm"), "vaultline_cdm_reader");
    }

    #[test]
    fn debug_hides_the_password() {
        let role = ServiceRole {
            layer: Layer::Stg,
            name: "vaultline_stg".into(),
            password: Some("hunter2".into()),
        };
        assert!(!format!("{role:?}").contains("hunter2"));
    }
}
