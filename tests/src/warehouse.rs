//! A warehouse of a test's own, for tests that work on the tables without the services: a
//! fresh database with the schema applied, a pool opened as a service opens it, and a client.

use vault_runtime::{pg_pool, Migrations, PgPool, PostgresSettings, Secret, SessionLimits};

use crate::stack;

/// A fresh, migrated database: its URL, a pool of two service sessions, and a client.
pub async fn migrated() -> anyhow::Result<(String, PgPool, tokio_postgres::Client)> {
    let url = stack().await.fresh_database().await?;
    vault_migrations::run(&url).await?;
    let pool = pg_pool(
        &PostgresSettings {
            url: Secret::new(&url),
            pool_size: 2,
            migrations: Migrations::Apply,
        },
        SessionLimits::SERVICE,
    );
    let client = connect(&url).await?;
    Ok((url, pool, client))
}

/// Connects to `url` and drives the connection in the background.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    crate::sql::connect(&url.parse()?).await
}
