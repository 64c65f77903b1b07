//! What a warehouse check found: how many rows of a view disagree, and the first of them,
//! read in one statement (the counter check, the point-in-time check).

use diesel::pg::Pg;
use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// How many rows a check found in all, and the first of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<T> {
    /// Every row the check found, counted by the database.
    pub total: i64,
    /// The first ones, in the check's stable order; at most the limit asked for.
    pub first: Vec<T>,
}

impl<T> Found<T> {
    /// True when the check found nothing.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// Reads `columns` of the first `limit` rows of `source` in `order`, and how many rows it has,
/// in one statement ([`first_and_total_sql`]); `total` takes the count from a row (its column
/// `total`), `shown` the row to show from it (None for the row of NULLs that says there is
/// none).
pub async fn first_and_total<R, T>(
    conn: &mut AsyncPgConnection,
    (source, columns, order): (&str, &str, &str),
    limit: i64,
    total: fn(&R) -> i64,
    shown: fn(R) -> Option<T>,
) -> diesel::QueryResult<Found<T>>
where
    R: QueryableByName<Pg> + Send + 'static,
{
    let rows: Vec<R> = diesel::sql_query(first_and_total_sql(source, columns, order))
        .bind::<BigInt, _>(limit.max(0))
        .load(conn)
        .await?;
    Ok(Found {
        total: <[R]>::first(&rows).map_or(0, total),
        first: rows.into_iter().filter_map(shown).collect(),
    })
}

/// The statement giving `columns` of the first `$1` rows of `source` in `order`, each with
/// `total`, the number of rows `source` has; one row of NULLs but `total` when it has none.
/// One statement, so the total and the rows shown come from one snapshot and `source` (a
/// recount, usually) runs once; the database counts and sorts (a top-`$1` sort), so the
/// caller holds at most `$1` rows however many there are.
fn first_and_total_sql(source: &str, columns: &str, order: &str) -> String {
    format!(
        "WITH d AS MATERIALIZED (SELECT {columns} FROM {source}) \
         SELECT t.total, f.* \
         FROM (SELECT count(*) AS total FROM d) t \
         LEFT JOIN LATERAL (SELECT * FROM d ORDER BY {order} LIMIT $1) f ON true \
         ORDER BY {order_f}",
        order_f = order
            .split(',')
            .map(|term| format!("f.{}", term.trim()))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outer_order_is_the_inner_one_on_the_rows_shown() {
        let sql = first_and_total_sql("v", "a, b", "a DESC, b");
        assert!(sql.contains("ORDER BY a DESC, b LIMIT $1"), "{sql}");
        assert!(sql.ends_with("ORDER BY f.a DESC, f.b"), "{sql}");
    }
}
