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

/// The backend process id of a pooled connection, to watch it in `pg_stat_activity`.
pub async fn backend_pid(conn: &mut diesel_async::AsyncPgConnection) -> anyhow::Result<i32> {
    use diesel::sql_types::Integer;
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = Integer)]
        pid: i32,
    }
    let pid: Pid = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query("SELECT pg_backend_pid() AS pid"),
        conn,
    )
    .await?;
    Ok(pid.pid)
}

/// Returns once backend `pid` waits for a lock (another transaction's uncommitted row):
/// how a race test proves its second transaction met the first one's rows.
pub async fn waits_for_lock(client: &tokio_postgres::Client, pid: i32) {
    crate::eventually(
        "the second transaction waits for the first",
        std::time::Duration::from_secs(30),
        || async move {
            let row = client
                .query_one(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1",
                    &[&pid],
                )
                .await
                .ok()?;
            (row.get::<_, Option<String>>(0).as_deref() == Some("Lock")).then_some(())
        },
    )
    .await;
}
