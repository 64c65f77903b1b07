//! The counter check (docs/contract.md §3.3): every datamart counter against a recount from the Data
//! Vault. The recount itself is written once, as views in the migrations (`order_effectivity`,
//! with the user of each order's latest version from `order_user_effectivity`):
//! `cdm.v_user_product_recount`, `cdm.v_user_category_recount`, compared in
//! `cdm.v_counter_differences`; `vaultctl verify`, `scripts/run.sh`, the tests and any
//! periodic check all read the same views.

use std::fmt;

use diesel::sql_types::{Integer, Nullable, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// Which datamart a difference is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Counter {
    /// `cdm.user_product_counters`
    Product,
    /// `cdm.user_category_counters`
    Category,
}

impl Counter {
    pub fn as_str(&self) -> &'static str {
        match self {
            Counter::Product => "product",
            Counter::Category => "category",
        }
    }
}

/// One counter whose value differs from the recount (a missing row counts as 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub counter: Counter,
    /// The user hub key.
    pub user_id: Uuid,
    /// The product or category hub key.
    pub item_id: Uuid,
    /// The product or category name, where the warehouse knows it.
    pub item_name: Option<String>,
    /// What the datamart holds.
    pub counted: i32,
    /// What the Data Vault says it should hold.
    pub recounted: i32,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<8} user {} item {} ({}): counter {} != recount {}",
            self.counter.as_str(),
            self.user_id,
            self.item_id,
            self.item_name.as_deref().unwrap_or("?"),
            self.counted,
            self.recounted
        )
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    counter: String,
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    item_id: Uuid,
    #[diesel(sql_type = Nullable<Text>)]
    item_name: Option<String>,
    #[diesel(sql_type = Integer)]
    counted: i32,
    #[diesel(sql_type = Integer)]
    recounted: i32,
}

/// Every counter that differs from the recount, products first, in a stable order; empty
/// when the datamarts are exact. Read in one statement, so both datamarts are compared at
/// one snapshot.
pub async fn differences(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<Difference>> {
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT counter, user_id, item_id, item_name, counted, recounted \
         FROM cdm.v_counter_differences ORDER BY counter DESC, user_id, item_id",
    )
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Difference {
            counter: if row.counter == "category" {
                Counter::Category
            } else {
                Counter::Product
            },
            user_id: row.user_id,
            item_id: row.item_id,
            item_name: row.item_name,
            counted: row.counted,
            recounted: row.recounted,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_reads_as_one_line_naming_both_values() {
        let difference = Difference {
            counter: Counter::Category,
            user_id: Uuid::nil(),
            item_id: Uuid::nil(),
            item_name: Some("Пицца".into()),
            counted: 2,
            recounted: 1,
        };
        let line = difference.to_string();
        assert!(line.starts_with("category"), "{line}");
        assert!(line.contains("(Пицца)"), "{line}");
        assert!(line.ends_with("counter 2 != recount 1"), "{line}");
    }
}
