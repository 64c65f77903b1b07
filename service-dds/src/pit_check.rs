//! The point-in-time check: every row the BI views read (`dds.pit_order`, its daily tables,
//! `dds.pit_product`) against the Data Vault's history. The comparison is written once, as
//! the view `dds.v_pit_differences` of the migrations (docs/bi.md); `vaultctl verify` and
//! the tests read it here.

use std::fmt;

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::AsyncPgConnection;

/// One point-in-time row that differs from the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The table, e.g. `dds.pit_order`.
    pub what: String,
    /// The row's key, as text.
    pub key: String,
    /// The stored row, as text; None where it is missing.
    pub stored: Option<String>,
    /// The row the history gives, as text; None where there should be none.
    pub recount: Option<String>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: stored {} != history {}",
            self.what,
            self.key,
            self.stored.as_deref().unwrap_or("(none)"),
            self.recount.as_deref().unwrap_or("(none)")
        )
    }
}

/// The rows that differ: how many in all, and the first of them (table, then key).
pub type Differences = vault_runtime::Found<Difference>;

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = Nullable<Text>)]
    what: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    key: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    stored: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    recount: Option<String>,
}

/// How many point-in-time rows differ from the history, and the first `limit` of them (the
/// recount, a pass over every satellite, runs once).
pub async fn differences(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> diesel::QueryResult<Differences> {
    vault_runtime::first_and_total(
        conn,
        (
            "dds.v_pit_differences",
            "what, key, stored, recount",
            "what, key",
        ),
        limit,
        |row: &Row| row.total,
        |row| {
            Some(Difference {
                what: row.what?,
                key: row.key?,
                stored: row.stored,
                recount: row.recount,
            })
        },
    )
    .await
}
