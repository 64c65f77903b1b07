//! The warehouse schema (docs/contract.md §3) as diesel migrations, embedded in the binary.
//!
//! Every service applies them at start. Several replicas may start at once, so the run holds a
//! Postgres advisory lock: one applies, the others wait and then find nothing pending.
//! Deployments with a least-privilege role per service instead run `vaultctl migrate` once as
//! the schema's owner ([`run`], then [`roles::apply`]) and start the services with
//! `MIGRATIONS=verify` ([`pending`], which needs only `SELECT` on diesel's bookkeeping table).

pub mod roles;

use anyhow::Context;
use diesel::connection::Connection;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::sql_types::{Bool, Text};
use diesel::{QueryableByName, RunQueryDsl};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// The embedded migrations (folder `migrations/sql`).
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("sql");

/// An arbitrary, fixed advisory lock key shared by every Vaultline process.
const LOCK_KEY: i64 = 0x7661_756c_746c_696e;

/// Applies pending migrations; returns the versions it applied (empty when up to date).
pub async fn run(database_url: &str) -> anyhow::Result<Vec<String>> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || run_blocking(&url, None))
        .await
        .context("migration task panicked")?
}

/// Applies pending migrations up to and including `last` (a version as [`versions`] lists
/// it), and no later one: the schema of an earlier release, for upgrade tests.
pub async fn run_through(database_url: &str, last: &str) -> anyhow::Result<Vec<String>> {
    let (url, last) = (database_url.to_owned(), last.to_owned());
    tokio::task::spawn_blocking(move || run_blocking(&url, Some(&last)))
        .await
        .context("migration task panicked")?
}

/// The versions of every embedded migration, oldest first (e.g. `20261121000001`).
pub fn versions() -> anyhow::Result<Vec<String>> {
    let mut versions: Vec<String> = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map_err(|e| anyhow::anyhow!("reading the embedded migrations failed: {e}"))?
        .iter()
        .map(|m| m.name().version().to_string())
        .collect();
    versions.sort();
    Ok(versions)
}

fn run_blocking(database_url: &str, last: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(database_url)
        .context("cannot connect to Postgres to apply migrations")?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({LOCK_KEY})"))
        .execute(&mut conn)
        .context("cannot take the migration lock")?;
    let applied = match last {
        None => conn
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect::<Vec<_>>()),
        Some(last) => conn.pending_migrations(MIGRATIONS).and_then(|pending| {
            pending
                .iter()
                .filter(|m| m.name().version().to_string().as_str() <= last)
                .map(|m| conn.run_migration(m.as_ref()).map(|v| v.to_string()))
                .collect()
        }),
    }
    .map_err(|e| anyhow::anyhow!("applying migrations failed: {e}"));
    // The lock is session-scoped: it goes with the connection even if unlocking fails.
    let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({LOCK_KEY})")).execute(&mut conn);
    let applied = applied?;
    if !applied.is_empty() {
        tracing::info!(versions = ?applied, "Applied warehouse migrations.");
    }
    Ok(applied)
}

/// The embedded migrations the database has not recorded as applied (all of them when diesel's
/// bookkeeping table does not exist yet). Only reads: unlike diesel's own check, which first
/// runs `CREATE TABLE IF NOT EXISTS`, this works for a role without `CREATE` on the schema.
pub async fn pending(database_url: &str) -> anyhow::Result<Vec<String>> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || pending_blocking(&url))
        .await
        .context("migration check panicked")?
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

#[derive(QueryableByName)]
struct AppliedVersion {
    #[diesel(sql_type = Text)]
    version: String,
}

fn pending_blocking(database_url: &str) -> anyhow::Result<Vec<String>> {
    let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(database_url)
        .context("cannot connect to Postgres to check migrations")?;
    let embedded: Vec<String> = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map_err(|e| anyhow::anyhow!("reading the embedded migrations failed: {e}"))?
        .iter()
        .map(|migration| migration.name().version().to_string())
        .collect();
    let table =
        diesel::sql_query("SELECT to_regclass('__diesel_schema_migrations') IS NOT NULL AS exists")
            .get_result::<Exists>(&mut conn)
            .context("cannot look up the migrations table")?;
    if !table.exists {
        return Ok(embedded);
    }
    let applied: Vec<String> =
        diesel::sql_query("SELECT version::text AS version FROM __diesel_schema_migrations")
            .load::<AppliedVersion>(&mut conn)
            .context("cannot read which migrations are applied")?
            .into_iter()
            .map(|row| row.version)
            .collect();
    Ok(embedded
        .into_iter()
        .filter(|version| !applied.contains(version))
        .collect())
}
