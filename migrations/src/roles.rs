//! The least-privilege Postgres role of each service (issue 6): what `vaultctl migrate` grants
//! after applying the migrations, as the owner of the schemas.
//!
//! Each service writes its own layer and the dead letters, and nothing else: service-stg the
//! `stg` schema, service-dds `dds`, service-cdm `cdm`; each may add rows to `ops.dead_letters`
//! and read diesel's bookkeeping table (for `MIGRATIONS=verify`). Grants are re-applied on every
//! run, so tables added by later migrations are covered without touching this file, and any
//! privilege on another layer is revoked. A role that does not exist is created (`LOGIN`, no
//! other attribute); a role that is a superuser, or may create roles or databases, or bypasses
//! row security, is refused rather than used.

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
    }
    let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(database_url)
        .context("cannot connect to Postgres to grant the service roles")?;
    conn.transaction(|conn| {
        for role in roles {
            apply_one(conn, role).with_context(|| format!("role {}", role.name))?;
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
    let mut statements = vec![
        format!("GRANT USAGE ON SCHEMA {own}, ops TO {name}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {own} TO {name}"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {own} TO {name}"),
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA ops FROM {name}"),
        format!("GRANT SELECT, INSERT ON ops.dead_letters TO {name}"),
        format!("GRANT USAGE ON SEQUENCE ops.dead_letters_id_seq TO {name}"),
        format!("GRANT SELECT ON __diesel_schema_migrations TO {name}"),
    ];
    for other in Layer::ALL.iter().filter(|layer| **layer != role.layer) {
        let schema = other.schema();
        statements.push(format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {name}"
        ));
        statements.push(format!(
            "REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {name}"
        ));
        statements.push(format!("REVOKE ALL ON SCHEMA {schema} FROM {name}"));
    }
    for statement in statements {
        diesel::sql_query(&statement)
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
    fn debug_hides_the_password() {
        let role = ServiceRole {
            layer: Layer::Stg,
            name: "vaultline_stg".into(),
            password: Some("hunter2".into()),
        };
        assert!(!format!("{role:?}").contains("hunter2"));
    }
}
