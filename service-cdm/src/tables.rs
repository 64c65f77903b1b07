//! The datamart's tables as service-cdm's code names them, written once: the tables the batch
//! step writes ([`crate::CdmStage`]'s `tables()`), and the two counter tables with their
//! columns, from which the batch step, the tag settling and recompute, the read API and the
//! dashboard build their SQL. (The tables come from `migrations/sql`; the tags' own SQL is in
//! `tags/store.rs`.)

use vault_core::tags::Scope;

/// What the datamart step knows of each order (the last version counted and what it counted).
pub const ORDER_STATE: &str = "cdm.order_state";
/// The tag rules, edited by operators (`vaultctl tags apply`).
pub const TAG_RULES: &str = "cdm.tag_rules";
/// Who holds which tag now.
pub const USER_TAGS: &str = "cdm.user_tags";
/// The tag outbox: every grant and revoke, published from here.
pub const USER_TAG_EVENTS: &str = "cdm.user_tag_events";

/// One datamart of counters: its table and the names of its key and label columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterTable {
    /// `schema.table`.
    pub table: &'static str,
    /// The product or category hub key.
    pub key: &'static str,
    /// The product or category name.
    pub name: &'static str,
}

impl CounterTable {
    pub const PRODUCTS: CounterTable = CounterTable {
        table: "cdm.user_product_counters",
        key: "product_id",
        name: "product_name",
    };
    pub const CATEGORIES: CounterTable = CounterTable {
        table: "cdm.user_category_counters",
        key: "category_id",
        name: "category_name",
    };

    /// The datamart a tag rule of `scope` counts in.
    pub const fn of(scope: Scope) -> CounterTable {
        match scope {
            Scope::Category => Self::CATEGORIES,
            Scope::Product => Self::PRODUCTS,
        }
    }
}
