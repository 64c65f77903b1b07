//! The point-in-time check: every row the BI views read (`dds.pit_order`, its daily tables,
//! `dds.pit_product`) against the Data Vault's history. The comparison is written once, as
//! the view `dds.v_pit_differences` of the migrations (docs/bi.md); `vaultctl verify` and
//! the tests read it here.

use std::fmt;

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

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

/// The rows that differ: how many in all, and the first of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Differences {
    pub total: i64,
    /// In a stable order (table, then key); at most the limit asked for.
    pub first: Vec<Difference>,
}

impl Differences {
    /// True when the read side is exact.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

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

/// How many point-in-time rows differ from the history, and the first `limit` of them. One
/// statement: the total and the rows shown come from one snapshot, and the recount (a pass
/// over every satellite) runs once.
pub async fn differences(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> diesel::QueryResult<Differences> {
    let rows: Vec<Row> = diesel::sql_query(
        "WITH d AS MATERIALIZED (SELECT what, key, stored, recount FROM dds.v_pit_differences) \
         SELECT t.total, f.what, f.key, f.stored, f.recount \
         FROM (SELECT count(*) AS total FROM d) t \
         LEFT JOIN LATERAL (SELECT * FROM d ORDER BY what, key LIMIT $1) f ON true \
         ORDER BY f.what, f.key",
    )
    .bind::<BigInt, _>(limit.max(0))
    .load(conn)
    .await?;
    let total = <[Row]>::first(&rows).map_or(0, |row| row.total);
    let first = rows
        .into_iter()
        .filter_map(|row| {
            Some(Difference {
                what: row.what?,
                key: row.key?,
                stored: row.stored,
                recount: row.recount,
            })
        })
        .collect();
    Ok(Differences { total, first })
}
