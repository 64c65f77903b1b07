//! The read API's own Postgres sessions (docs/read-api.md, "Access"): a small pool beside the
//! batches' whose every session is read-only (`default_transaction_read_only`) and, where
//! `vaultctl migrate` made it, runs as the read-only role `<cdm role>_reader`
//! (`vault_migrations::roles::reader_role`): `SELECT` on what the API reads and nothing more,
//! not even the dead letters' payloads. So a bug in the API cannot write, twice over: the
//! transaction refuses any write, and so does the role — with no second credential, since
//! the cdm role may become its reader.
//!
//! Set once per session rather than per request, so that no query of the API can be written
//! without it; and a pool of its own (half of `PG_POOL_SIZE`), so that however many requests
//! wait, none takes a connection the batches need. Where no reader role is granted (a local
//! run as a superuser, or before `vaultctl migrate` ran), the sessions are still read-only, and
//! the first one says so in the log once.

use std::sync::atomic::{AtomicBool, Ordering};

use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures::future::BoxFuture;
use futures::FutureExt;
use vault_migrations::roles::READER_SUFFIX;
use vault_runtime::{pg_pool_with, PgPool, SessionLimits, Settings};

/// The API's pool: `size` read-only sessions.
pub fn pool(settings: &Settings, size: u32) -> PgPool {
    pg_pool_with(&settings.postgres, SessionLimits::SERVICE, size, setup)
}

#[derive(QueryableByName)]
struct Role {
    #[diesel(sql_type = Text)]
    role: String,
}

/// Whether the missing read-only role was reported already.
static REPORTED: AtomicBool = AtomicBool::new(false);

/// Makes a new session read-only and, when its role has a reader, that reader.
pub fn setup(conn: &mut AsyncPgConnection) -> BoxFuture<'_, diesel::QueryResult<()>> {
    async move {
        conn.batch_execute("SET default_transaction_read_only = on")
            .await?;
        let switched: Vec<Role> = diesel::sql_query(format!(
            "SELECT set_config('role', r.rolname, false) AS role FROM pg_roles r \
             WHERE r.rolname = current_user || '{READER_SUFFIX}' \
               AND pg_has_role(current_user, r.oid, 'MEMBER')"
        ))
        .load(conn)
        .await?;
        match <[Role]>::first(&switched) {
            Some(reader) => tracing::debug!(role = %reader.role, "A read API session reads as its read-only role."),
            None if !REPORTED.swap(true, Ordering::Relaxed) => tracing::warn!(
                suffix = READER_SUFFIX,
                "The read API reads as the service's own role, in read-only sessions: no \
                 read-only role named after it is granted to it (`vaultctl migrate` makes one)."
            ),
            None => {}
        }
        Ok(())
    }
    .boxed()
}
