//! How a batch can fail, sorted at the adapter boundary (docs/failures.md).
//!
//! *Systemic*: a dependency is down or busy, or the warehouse cannot take writes (a missing
//! table or column, a revoked grant, a read-only database, a full disk). It says nothing about
//! the messages: the worker pauses and retries the same batch with back-off, reports the cause
//! on `/health`, and never rejects a message because of it.
//! *Suspect*: the database answered but refused the batch for a reason that may lie in one
//! message; the consume loop bisects the batch to find it. Before a lone message is rejected
//! the runtime checks the warehouse ([`diagnose`]) and the dependencies, so a systemic fault
//! that the database reported vaguely still pauses instead of rejecting.
//! Messages that are plainly bad (undecodable, unknown ids) are not failures at all: stages
//! reject them while decoding or applying, and processing goes on.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Array, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0:#}")]
    Systemic(anyhow::Error),
    #[error("batch refused: {0:#}")]
    Suspect(anyhow::Error),
}

impl Failure {
    pub fn is_systemic(&self) -> bool {
        matches!(self, Self::Systemic(_))
    }
}

/// What Postgres says for faults of the database, not of a message, whose SQLSTATE diesel
/// does not pass on (`Unknown`): timeouts and cancellations (57014, 55P03), deadlocks and
/// serialization (40P01, 40001), privileges (42501, sequences included), missing objects and
/// changed column types (42P01, 42703, 42804), resources (53100 disk full, 53200, 53300),
/// shutdown and recovery (57P01, 57P03), I/O (58030), read-only (25006). A message can only
/// cause data exceptions and constraint violations (classes 22 and 23), which none of these
/// match. The texts are Postgres's English messages; on a server set to another language
/// they do not match, and the warehouse probe (`Stage::probe`) still tells the fault apart
/// before any message is rejected.
const SYSTEMIC_MESSAGES: &[&str] = &[
    "canceling statement due to",
    "deadlock detected",
    "could not serialize access",
    "permission denied",
    "does not exist",
    "is of type",
    "could not extend file",
    "no space left on device",
    "out of memory",
    "too many connections",
    "remaining connection slots",
    "terminating connection",
    "the database system is",
    "could not write",
    "could not read",
    "could not open",
    "read-only transaction",
];

/// Whether Postgres's message names a fault of the database ([`SYSTEMIC_MESSAGES`]).
fn names_a_database_fault(message: &str) -> bool {
    let message = message.to_lowercase();
    SYSTEMIC_MESSAGES
        .iter()
        .any(|pattern| message.contains(pattern))
}

impl From<DieselError> for Failure {
    fn from(error: DieselError) -> Self {
        let systemic = match &error {
            DieselError::DatabaseError(kind, info) => {
                matches!(
                    kind,
                    DatabaseErrorKind::UnableToSendCommand
                        | DatabaseErrorKind::ClosedConnection
                        | DatabaseErrorKind::SerializationFailure
                        | DatabaseErrorKind::ReadOnlyTransaction
                ) || (matches!(kind, DatabaseErrorKind::Unknown)
                    && names_a_database_fault(info.message()))
            }
            DieselError::BrokenTransactionManager | DieselError::AlreadyInTransaction => true,
            _ => false,
        };
        let error = anyhow::Error::new(error).context("Postgres");
        if systemic {
            Self::Systemic(error)
        } else {
            Self::Suspect(error)
        }
    }
}

/// Whether `error` is Postgres answering a statement with a refusal (not a lost connection):
/// then the warehouse check can name what refused it.
pub(crate) fn refused_by_database(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<DieselError>(),
        Some(DieselError::DatabaseError(kind, _))
            if !matches!(kind, DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection)
    )
}

impl<E: std::error::Error + Send + Sync + 'static> From<bb8::RunError<E>> for Failure {
    fn from(error: bb8::RunError<E>) -> Self {
        Self::Systemic(anyhow::anyhow!("connection pool: {error}"))
    }
}

impl From<KafkaError> for Failure {
    fn from(error: KafkaError) -> Self {
        let message_fault = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessage)
        );
        let error = anyhow::Error::new(error).context("Kafka producer");
        if message_fault {
            Self::Suspect(error)
        } else {
            Self::Systemic(error)
        }
    }
}

impl From<bb8_redis::redis::RedisError> for Failure {
    fn from(error: bb8_redis::redis::RedisError) -> Self {
        Self::Systemic(anyhow::Error::new(error).context("Redis"))
    }
}

impl From<serde_json::Error> for Failure {
    /// Serializing what a stage publishes fails only for a value that cannot be written, which
    /// belongs to the message it came from.
    fn from(error: serde_json::Error) -> Self {
        Self::Suspect(anyhow::Error::new(error).context("serializing output"))
    }
}

/// A table a stage writes, with the columns and privileges it relies on. When the database
/// refuses a batch, the runtime checks them to tell a warehouse that cannot take writes (a
/// systemic fault: pause, never reject) from a message the database refuses.
#[derive(Debug, Clone)]
pub struct TableAccess {
    /// `schema.table`.
    pub name: &'static str,
    pub columns: Vec<&'static str>,
    /// As `has_table_privilege` takes them: `"SELECT, INSERT, UPDATE"`.
    pub privileges: &'static str,
}

impl TableAccess {
    /// A table with the privileges its service role is granted on it: one list says both what
    /// `vaultctl migrate` grants and what the warehouse check expects
    /// (`vault_migrations::roles::grants`).
    ///
    /// # Panics
    /// When no service role is granted `name`: a table a stage writes must be in that list.
    pub fn granted(name: &'static str, columns: Vec<&'static str>) -> Self {
        let privileges = vault_migrations::roles::privileges(name).unwrap_or_else(|| {
            panic!("{name} is granted to no service role (migrations/src/roles.rs)")
        });
        Self {
            name,
            columns,
            privileges,
        }
    }
}

#[derive(QueryableByName)]
struct Problem {
    #[diesel(sql_type = Text)]
    problem: String,
}

/// Checks that the warehouse can take a stage's writes: every table exists with its columns,
/// this role may use its schema and has the privileges, no table it inserts into requires a
/// column it does not write (a schema migrated for a newer release, e.g. while a rolling
/// upgrade still runs the old one: every insert would be refused, whatever the message), and
/// the session is not read-only.
/// Returns every problem found, as sentences an operator can act on; empty when none. A
/// connection failure is itself reported as a problem.
pub async fn diagnose(conn: &mut AsyncPgConnection, tables: &[TableAccess]) -> Vec<String> {
    let names: Vec<&str> = tables.iter().map(|t| t.name).collect();
    let columns: Vec<String> = tables.iter().map(|t| t.columns.join(",")).collect();
    let privileges: Vec<&str> = tables.iter().map(|t| t.privileges).collect();
    // Catalog lookups by name instead of regclass casts: those raise errors (no USAGE on the
    // schema) where a problem should be reported. Each privilege is checked on its own:
    // `has_table_privilege` with a list is true when *any* of them is held.
    let query = diesel::sql_query(
        "WITH wanted AS ( \
             SELECT split_part(name, '.', 1) AS schema, split_part(name, '.', 2) AS tab, name, \
                    string_to_array(cols, ',') AS cols, privs \
             FROM unnest($1::text[], $2::text[], $3::text[]) AS w(name, cols, privs)), \
         found AS ( \
             SELECT w.*, n.oid AS nsp, c.oid AS rel FROM wanted w \
             LEFT JOIN pg_namespace n ON n.nspname = w.schema \
             LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.tab) \
         SELECT problem FROM ( \
             SELECT CASE \
                 WHEN nsp IS NULL THEN format('schema %s does not exist', schema) \
                 WHEN NOT has_schema_privilege(nsp, 'USAGE') \
                     THEN format('no USAGE privilege on schema %s', schema) \
                 WHEN rel IS NULL THEN format('table %s does not exist', name) \
                 WHEN EXISTS (SELECT 1 FROM unnest(string_to_array(privs, ',')) AS p \
                              WHERE NOT has_table_privilege(rel, trim(p))) \
                     THEN (SELECT format('no %s privilege on %s', \
                                         string_agg(trim(p), ', '), name) \
                           FROM unnest(string_to_array(privs, ',')) AS p \
                           WHERE NOT has_table_privilege(rel, trim(p))) \
                 ELSE (SELECT format('table %s has no column %s', name, string_agg(col, ', ')) \
                       FROM unnest(cols) AS col \
                       WHERE col <> '' AND NOT EXISTS (SELECT 1 FROM pg_attribute a \
                           WHERE a.attrelid = rel AND a.attname = col AND NOT a.attisdropped) \
                       HAVING count(*) > 0) \
             END AS problem FROM found \
             UNION ALL \
             SELECT format('table %s requires column %s, which this build of the service does \
                            not write: the warehouse schema is newer than the service (run the \
                            release the schema was migrated for)', \
                           name, string_agg(a.attname::text, ', ' ORDER BY a.attnum)) \
             FROM found JOIN pg_attribute a ON a.attrelid = rel \
             WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attnotnull AND NOT a.atthasdef \
               AND a.attidentity = '' AND a.attgenerated = '' \
               AND upper(privs) LIKE '%INSERT%' AND NOT (a.attname::text = ANY (cols)) \
             GROUP BY name \
             UNION ALL \
             SELECT 'the database is read-only (transaction_read_only is on)' \
             WHERE current_setting('transaction_read_only') = 'on' \
             UNION ALL \
             SELECT 'the database is a standby in recovery' WHERE pg_is_in_recovery() \
         ) AS p WHERE problem IS NOT NULL",
    )
    .bind::<Array<Text>, _>(names)
    .bind::<Array<Text>, _>(columns)
    .bind::<Array<Text>, _>(privileges);
    match query.load::<Problem>(conn).await {
        Ok(rows) => rows.into_iter().map(|row| row.problem).collect(),
        Err(error) => vec![format!("cannot check the warehouse: {error}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_systemic_and_a_check_violation_is_suspect() {
        let closed = DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new("server closed the connection".to_owned()),
        );
        assert!(Failure::from(closed).is_systemic());
        let check = DieselError::DatabaseError(
            DatabaseErrorKind::CheckViolation,
            Box::new("violates check constraint".to_owned()),
        );
        assert!(!Failure::from(check).is_systemic());
    }

    fn unknown(message: &str) -> DieselError {
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(message.to_owned()))
    }

    #[test]
    fn timeouts_deadlocks_privileges_and_a_full_disk_are_systemic() {
        for message in [
            "canceling statement due to statement timeout",
            "canceling statement due to lock timeout",
            "deadlock detected",
            "permission denied for sequence dead_letters_id_seq",
            "relation \"dds.s_order_version\" does not exist",
            "column \"order_cnt\" is of type text but expression is of type bigint",
            "could not extend file \"base/16384/16385\": No space left on device",
            "terminating connection due to administrator command",
        ] {
            assert!(Failure::from(unknown(message)).is_systemic(), "{message}");
        }
    }

    #[test]
    fn a_value_the_database_cannot_hold_stays_suspect() {
        for message in [
            "numeric field overflow",
            "invalid input syntax for type uuid: \"x\"",
            "value too long for type character varying(64)",
            "date/time field value out of range: \"2023-02-30\"",
        ] {
            assert!(!Failure::from(unknown(message)).is_systemic(), "{message}");
        }
    }

    #[test]
    fn a_read_only_database_is_systemic() {
        let read_only = DieselError::DatabaseError(
            DatabaseErrorKind::ReadOnlyTransaction,
            Box::new("cannot execute INSERT in a read-only transaction".to_owned()),
        );
        assert!(Failure::from(read_only).is_systemic());
    }
}
