//! Enriched order → Data Vault rows (docs/contract.md §3.2, §3.3): one typed row per table.
//!
//! Each Data Vault table is a struct here whose fields are the table's columns, declared once
//! with [`table!`]: the struct, the table's name and its column list (name, SQL type, how to
//! read the value from a row) come from the same declaration, so a loader writes a table from
//! its type alone — nothing is matched by position. Rows carry no load time or source: the
//! loader stamps those, since they describe the load, not the order.
//!
//! Besides the tables of docs/contract.md §3.2, an order version yields its effectivity (docs/contract.md §3.3, see
//! the migration `order_effectivity`): a [`SOrderVersion`] row, and for every dish of the
//! version an [`LOrderProductCategory`] link (dish, order and the category the dish has in
//! this version) with a [`SOrderProductCategoryEffectivity`] row saying the link is in effect
//! at this version. The version's user is recorded the same way: an [`SOrderUserEffectivity`]
//! row says the order→user link is in effect at this version (see the migration
//! `order_user_effectivity`), since a later version of an order may name another user.

use std::collections::BTreeMap;

use crate::contract::{Amount, EnrichedOrder, OrderId, OrderStatus, Timestamp};
use crate::keys::HashKey;

/// A Data Vault table: its schema-qualified name and the columns a row fills.
pub trait Table: Sized + 'static {
    /// Schema-qualified, e.g. `dds.h_user`.
    const NAME: &'static str;
    /// Every column a row of this table fills, in declaration order. `load_dt` and
    /// `load_src` are not among them: they describe the load.
    fn columns() -> Vec<Column<Self>>;
}

/// The column of an order-scoped table naming the order each row belongs to
/// (docs/contract.md §3.2.1, "Order-scoped tables").
pub const ORDER_SCOPE: &str = "order_id";

/// The order a row of `R` belongs to, when `R` is order-scoped (it has an [`ORDER_SCOPE`]
/// column: the order hub, an order's links and satellites). Such rows are written only by loads
/// of their order, so an order never loaded has none of them.
pub fn order_of<R: Table>() -> Option<fn(&R) -> i64> {
    R::columns()
        .into_iter()
        .find_map(|column| match column.value {
            Value::BigInt(get) if column.name == ORDER_SCOPE => Some(get),
            _ => None,
        })
}

/// A table whose rows are written once by key and never again: hubs, links, and the
/// effectivity rows (keyed by link and version). A row whose key is there already is skipped.
pub trait InsertOnce: Table {
    /// The key that identifies a row: rows of a batch are deduplicated and written in its
    /// order. The table's primary key; for an order's links and effectivity rows, the primary
    /// key has the order id in front of it (docs/contract.md §3.2.1, "Order-scoped tables").
    type Key: Ord + Copy;
    fn key(&self) -> Self::Key;
}

/// A history satellite: a row is added only when its hashdiff differs from the current
/// (latest loaded) row of its hub.
pub trait History: Table {
    /// The hub key column.
    const HUB: &'static str;
    /// The column the current-row lookup matches: the hub key, or for an order's satellite
    /// the order id, which the table is indexed by (docs/contract.md §3.2.1, "Order-scoped
    /// tables"). Either names the hub, since an order's hash key is a function of its id.
    const SCOPE: &'static str = Self::HUB;
    /// The hashdiff column.
    const HASHDIFF: &'static str;
    fn hub(&self) -> HashKey;
    fn hashdiff(&self) -> HashKey;
}

/// One column of table `R`: its name and its typed value in a row.
#[derive(Debug)]
pub struct Column<R> {
    pub name: &'static str,
    pub value: Value<R>,
}

/// How to read one column from a row, by SQL type.
#[derive(Debug)]
pub enum Value<R> {
    /// `uuid`
    Key(fn(&R) -> HashKey),
    /// `text`
    Text(fn(&R) -> &str),
    /// `numeric`
    Amount(fn(&R) -> Amount),
    /// `timestamptz`
    Time(fn(&R) -> Timestamp),
    /// `bigint`
    BigInt(fn(&R) -> i64),
}

impl<R> Value<R> {
    /// The column's SQL type.
    pub fn sql_type(&self) -> &'static str {
        match self {
            Value::Key(_) => "uuid",
            Value::Text(_) => "text",
            Value::Amount(_) => "numeric",
            Value::Time(_) => "timestamptz",
            Value::BigInt(_) => "bigint",
        }
    }
}

/// Declares a table's row struct (fields = columns) and its [`Table`] impl in one place.
macro_rules! table {
    (
        $(#[$meta:meta])*
        $name:ident = $table:literal {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty as $kind:ident ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )+
        }

        impl Table for $name {
            const NAME: &'static str = $table;
            fn columns() -> Vec<Column<Self>> {
                vec![$(Column { name: stringify!($field), value: column!($kind, $field) },)+]
            }
        }
    };
}

/// The typed getter of one field, by the kind named in [`table!`].
macro_rules! column {
    (Key, $field:ident) => {
        Value::Key(|row| row.$field)
    };
    (Text, $field:ident) => {
        Value::Text(|row| row.$field.as_str())
    };
    (Amount, $field:ident) => {
        Value::Amount(|row| row.$field)
    };
    (Time, $field:ident) => {
        Value::Time(|row| row.$field)
    };
    (OrderId, $field:ident) => {
        Value::BigInt(|row| row.$field.0)
    };
}

/// Declares a table insert-once, keyed by a hash key, or by a hash key and an order version.
macro_rules! keyed_by {
    ($name:ident, $key:ident) => {
        impl InsertOnce for $name {
            type Key = HashKey;
            fn key(&self) -> HashKey {
                self.$key
            }
        }
    };
    ($name:ident, $key:ident, $version:ident) => {
        impl InsertOnce for $name {
            type Key = (HashKey, Timestamp);
            fn key(&self) -> Self::Key {
                (self.$key, self.$version)
            }
        }
    };
}

/// Declares a history satellite's hub and hashdiff columns, and for an order's satellite the
/// column its current row is looked up by.
macro_rules! history {
    ($name:ident, $hub:ident, $hashdiff:ident $(, by $scope:ident)?) => {
        impl History for $name {
            const HUB: &'static str = stringify!($hub);
            $(const SCOPE: &'static str = stringify!($scope);)?
            const HASHDIFF: &'static str = stringify!($hashdiff);
            fn hub(&self) -> HashKey {
                self.$hub
            }
            fn hashdiff(&self) -> HashKey {
                self.$hashdiff
            }
        }
    };
}

/// Declares a hub keyed by its hash key alone, with its business key as text.
macro_rules! hub {
    ($(#[$meta:meta])* $name:ident = $table:literal { $pk:ident, $business_key:ident }) => {
        table! {
            $(#[$meta])*
            $name = $table {
                $pk: HashKey as Key,
                $business_key: String as Text,
            }
        }
        keyed_by!($name, $pk);
    };
}

/// Declares a link: its row, its key (the hash of its hub keys in field order, by
/// `HashKey::link` or `HashKey::link3`) and the constructor that computes it. An order's link
/// (`in order_id`) also carries the order id, which the table is indexed by (docs/contract.md
/// §3.2.1, "Order-scoped tables"); its constructor takes the order id first.
macro_rules! link {
    (
        $(#[$meta:meta])*
        $name:ident = $table:literal { $pk:ident = $link:ident($($hub:ident),+) }
    ) => {
        table! {
            $(#[$meta])*
            $name = $table {
                $pk: HashKey as Key,
                $($hub: HashKey as Key,)+
            }
        }
        keyed_by!($name, $pk);

        impl $name {
            pub fn new($($hub: HashKey),+) -> Self {
                Self {
                    $pk: HashKey::$link($($hub),+),
                    $($hub,)+
                }
            }
        }
    };
    (
        $(#[$meta:meta])*
        $name:ident = $table:literal { $pk:ident = $link:ident($($hub:ident),+) } in $scope:ident
    ) => {
        table! {
            $(#[$meta])*
            $name = $table {
                $pk: HashKey as Key,
                $($hub: HashKey as Key,)+
                $scope: OrderId as OrderId,
            }
        }
        keyed_by!($name, $pk);

        impl $name {
            pub fn new($scope: OrderId, $($hub: HashKey),+) -> Self {
                Self {
                    $pk: HashKey::$link($($hub),+),
                    $($hub,)+
                    $scope,
                }
            }
        }
    };
}

// ---------------------------------------------------------------- hubs

table! {
    HOrder = "dds.h_order" {
        h_order_pk: HashKey as Key,
        order_id: OrderId as OrderId,
        order_dt: Timestamp as Time,
    }
}
keyed_by!(HOrder, h_order_pk);
hub!(HUser = "dds.h_user" { h_user_pk, user_id });
hub!(HRestaurant = "dds.h_restaurant" { h_restaurant_pk, restaurant_id });
hub!(HProduct = "dds.h_product" { h_product_pk, product_id });
hub!(
    /// Categories have no id of their own: the business key is the name.
    HCategory = "dds.h_category" { h_category_pk, category_name }
);

// ---------------------------------------------------------------- links

link!(LOrderUser = "dds.l_order_user" {
    hk_order_user_pk = link(h_order_pk, h_user_pk)
} in order_id);
link!(LOrderProduct = "dds.l_order_product" {
    hk_order_product_pk = link(h_order_pk, h_product_pk)
} in order_id);
link!(LProductCategory = "dds.l_product_category" {
    hk_product_category_pk = link(h_product_pk, h_category_pk)
});
link!(LProductRestaurant = "dds.l_product_restaurant" {
    hk_product_restaurant_pk = link(h_product_pk, h_restaurant_pk)
});
link!(
    /// A dish in an order under the category it had there (docs/contract.md §3.3).
    LOrderProductCategory = "dds.l_order_product_category" {
        hk_order_product_category_pk = link3(h_order_pk, h_product_pk, h_category_pk)
    } in order_id
);

// ---------------------------------------------------------------- satellites
// `update_ts` is the order version a row came from.

table! {
    SUserNames = "dds.s_user_names" {
        h_user_pk: HashKey as Key,
        username: String as Text,
        userlogin: String as Text,
        hk_user_names_hashdiff: HashKey as Key,
        update_ts: Timestamp as Time,
    }
}
table! {
    SRestaurantNames = "dds.s_restaurant_names" {
        h_restaurant_pk: HashKey as Key,
        name: String as Text,
        hk_restaurant_names_hashdiff: HashKey as Key,
        update_ts: Timestamp as Time,
    }
}
table! {
    SProductNames = "dds.s_product_names" {
        h_product_pk: HashKey as Key,
        name: String as Text,
        hk_product_names_hashdiff: HashKey as Key,
        update_ts: Timestamp as Time,
    }
}
table! {
    SOrderCost = "dds.s_order_cost" {
        h_order_pk: HashKey as Key,
        order_id: OrderId as OrderId,
        cost: Amount as Amount,
        payment: Amount as Amount,
        hk_order_cost_hashdiff: HashKey as Key,
        update_ts: Timestamp as Time,
    }
}
table! {
    SOrderStatus = "dds.s_order_status" {
        h_order_pk: HashKey as Key,
        order_id: OrderId as OrderId,
        status: OrderStatus as Text,
        hk_order_status_hashdiff: HashKey as Key,
        update_ts: Timestamp as Time,
    }
}
table! {
    /// One row per applied order version: the newest is the order's latest version, even
    /// when that version lists no dish.
    SOrderVersion = "dds.s_order_version" {
        h_order_pk: HashKey as Key,
        order_id: OrderId as OrderId,
        update_ts: Timestamp as Time,
    }
}
table! {
    /// The link of an order and its user is in effect at this order version: the version names
    /// that user. A later version may name another user, whose link then takes over.
    SOrderUserEffectivity = "dds.s_order_user_effectivity" {
        hk_order_user_pk: HashKey as Key,
        order_id: OrderId as OrderId,
        update_ts: Timestamp as Time,
    }
}
table! {
    /// The link of a dish, its order and its category is in effect at this order version.
    SOrderProductCategoryEffectivity = "dds.s_order_product_category_effectivity" {
        hk_order_product_category_pk: HashKey as Key,
        order_id: OrderId as OrderId,
        update_ts: Timestamp as Time,
    }
}

keyed_by!(SOrderVersion, h_order_pk, update_ts);
keyed_by!(SOrderUserEffectivity, hk_order_user_pk, update_ts);
keyed_by!(
    SOrderProductCategoryEffectivity,
    hk_order_product_category_pk,
    update_ts
);

history!(SUserNames, h_user_pk, hk_user_names_hashdiff);
history!(
    SRestaurantNames,
    h_restaurant_pk,
    hk_restaurant_names_hashdiff
);
history!(SProductNames, h_product_pk, hk_product_names_hashdiff);
history!(SOrderCost, h_order_pk, hk_order_cost_hashdiff, by order_id);
history!(SOrderStatus, h_order_pk, hk_order_status_hashdiff, by order_id);

/// What is done with one load's rows, one call per table ([`VaultRows::visit`]).
pub trait Visitor<'r> {
    /// The rows of an insert-once table (hub, link or effectivity).
    fn insert_once<R: InsertOnce>(&mut self, rows: Vec<&'r R>);
    /// The rows of a history satellite.
    fn history<R: History>(&mut self, rows: Vec<&'r R>);
}

/// Declares [`VaultRows`] and its [`VaultRows::visit`] from one list, so the tables a load
/// writes and the tables anything else derives from it (the warehouse check) cannot differ.
macro_rules! vault_rows {
    ( $( $field:ident : $kind:ident $shape:ident $row:ty ),+ $(,)? ) => {
        /// Every Data Vault row one order version yields, one field per table. Collections
        /// are deduplicated and sorted by key, so loading them in this order takes row locks
        /// in a stable order.
        #[derive(Debug, Clone, PartialEq)]
        pub struct VaultRows {
            $( pub $field: vault_rows!(@type $shape $row), )+
        }

        impl VaultRows {
            /// Hands the rows of `loads` to `visitor` table by table, in load order: hubs,
            /// then links, then satellites (with no foreign keys, integrity holds by this
            /// order). Every table is visited, even one with no rows.
            pub fn visit<'r>(loads: &'r [VaultRows], visitor: &mut impl Visitor<'r>) {
                $( visitor.$kind::<$row>(vault_rows!(@collect $shape loads $field)); )+
            }
        }
    };
    (@type one $row:ty) => { $row };
    (@type many $row:ty) => { Vec<$row> };
    (@collect one $loads:ident $field:ident) => { $loads.iter().map(|r| &r.$field).collect() };
    (@collect many $loads:ident $field:ident) => {
        $loads.iter().flat_map(|r| &r.$field).collect()
    };
}

vault_rows! {
    h_order: insert_once one HOrder,
    h_user: insert_once one HUser,
    h_restaurant: insert_once one HRestaurant,
    h_products: insert_once many HProduct,
    h_categories: insert_once many HCategory,
    l_order_user: insert_once one LOrderUser,
    l_order_products: insert_once many LOrderProduct,
    l_product_categories: insert_once many LProductCategory,
    l_product_restaurants: insert_once many LProductRestaurant,
    l_order_product_categories: insert_once many LOrderProductCategory,
    s_user_names: history one SUserNames,
    s_restaurant_names: history one SRestaurantNames,
    s_product_names: history many SProductNames,
    s_order_cost: history one SOrderCost,
    s_order_status: history one SOrderStatus,
    s_order_version: insert_once one SOrderVersion,
    s_order_user_effectivity: insert_once one SOrderUserEffectivity,
    s_order_product_category_effectivity: insert_once many SOrderProductCategoryEffectivity,
}

/// One table a load writes: its name and the columns a row fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumns {
    pub name: &'static str,
    pub columns: Vec<&'static str>,
}

/// Every table a load writes, in load order, with the columns it fills.
pub fn tables() -> Vec<TableColumns> {
    struct Names(Vec<TableColumns>);
    impl Names {
        fn add<R: Table>(&mut self) {
            self.0.push(TableColumns {
                name: R::NAME,
                columns: R::columns().iter().map(|c| c.name).collect(),
            });
        }
    }
    impl Visitor<'_> for Names {
        fn insert_once<R: InsertOnce>(&mut self, _: Vec<&R>) {
            self.add::<R>();
        }
        fn history<R: History>(&mut self, _: Vec<&R>) {
            self.add::<R>();
        }
    }
    let mut names = Names(Vec::new());
    VaultRows::visit(&[], &mut names);
    names.0
}

/// Maps one enriched order version to its Data Vault rows.
pub fn rows(order: &EnrichedOrder) -> VaultRows {
    let p = &order.payload;
    let version = p.update_ts;
    let h_order = HashKey::order(p.id);
    let h_user = HashKey::user(&p.user.id);
    let h_restaurant = HashKey::restaurant(&p.restaurant.id);

    // Keyed maps deduplicate products listed twice (the last listing wins, as in the counter
    // events) and sort by key. Categories come from the deduplicated products, so that no
    // category hub is loaded for a listing that does not count.
    let mut products = BTreeMap::new();
    for product in &p.products {
        let category = HashKey::category(&product.category);
        products.insert(HashKey::product(&product.id), (product, category));
    }
    let categories: BTreeMap<HashKey, String> = products
        .values()
        .map(|(product, category)| (*category, product.category.clone()))
        .collect();

    let mut l_product_categories: Vec<LProductCategory> = products
        .iter()
        .map(|(pk, (_, category))| LProductCategory::new(*pk, *category))
        .collect();
    l_product_categories.sort_by_key(|link| link.hk_product_category_pk);
    let mut l_order_product_categories: Vec<LOrderProductCategory> = products
        .iter()
        .map(|(pk, (_, category))| LOrderProductCategory::new(p.id, h_order, *pk, *category))
        .collect();
    l_order_product_categories.sort_by_key(|link| link.hk_order_product_category_pk);
    let l_order_user = LOrderUser::new(p.id, h_order, h_user);
    let cost_text = p.cost.to_string();
    let payment_text = p.payment.to_string();

    VaultRows {
        h_order: HOrder {
            h_order_pk: h_order,
            order_id: p.id,
            order_dt: p.date,
        },
        h_user: HUser {
            h_user_pk: h_user,
            user_id: p.user.id.to_string(),
        },
        h_restaurant: HRestaurant {
            h_restaurant_pk: h_restaurant,
            restaurant_id: p.restaurant.id.to_string(),
        },
        h_products: products
            .iter()
            .map(|(pk, (product, _))| HProduct {
                h_product_pk: *pk,
                product_id: product.id.to_string(),
            })
            .collect(),
        h_categories: categories
            .iter()
            .map(|(pk, name)| HCategory {
                h_category_pk: *pk,
                category_name: name.clone(),
            })
            .collect(),
        s_order_user_effectivity: SOrderUserEffectivity {
            hk_order_user_pk: l_order_user.hk_order_user_pk,
            order_id: p.id,
            update_ts: version,
        },
        l_order_user,
        l_order_products: products
            .keys()
            .map(|pk| LOrderProduct::new(p.id, h_order, *pk))
            .collect(),
        l_product_categories,
        l_product_restaurants: products
            .keys()
            .map(|pk| LProductRestaurant::new(*pk, h_restaurant))
            .collect(),
        s_order_product_category_effectivity: l_order_product_categories
            .iter()
            .map(|link| SOrderProductCategoryEffectivity {
                hk_order_product_category_pk: link.hk_order_product_category_pk,
                order_id: p.id,
                update_ts: version,
            })
            .collect(),
        l_order_product_categories,
        s_user_names: SUserNames {
            h_user_pk: h_user,
            username: p.user.name.clone(),
            userlogin: p.user.login.clone(),
            hk_user_names_hashdiff: HashKey::hashdiff(&[&p.user.name, &p.user.login]),
            update_ts: version,
        },
        s_restaurant_names: SRestaurantNames {
            h_restaurant_pk: h_restaurant,
            name: p.restaurant.name.clone(),
            hk_restaurant_names_hashdiff: HashKey::hashdiff(&[&p.restaurant.name]),
            update_ts: version,
        },
        s_product_names: products
            .iter()
            .map(|(pk, (product, _))| SProductNames {
                h_product_pk: *pk,
                name: product.name.clone(),
                hk_product_names_hashdiff: HashKey::hashdiff(&[&product.name]),
                update_ts: version,
            })
            .collect(),
        s_order_cost: SOrderCost {
            h_order_pk: h_order,
            order_id: p.id,
            cost: p.cost,
            payment: p.payment,
            hk_order_cost_hashdiff: HashKey::hashdiff(&[&cost_text, &payment_text]),
            update_ts: version,
        },
        s_order_status: SOrderStatus {
            h_order_pk: h_order,
            order_id: p.id,
            status: p.status,
            hk_order_status_hashdiff: HashKey::hashdiff(&[p.status.as_str()]),
            update_ts: version,
        },
        s_order_version: SOrderVersion {
            h_order_pk: h_order,
            order_id: p.id,
            update_ts: version,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn names<R: Table>() -> Vec<&'static str> {
        R::columns().iter().map(|c| c.name).collect()
    }

    fn types<R: Table>() -> Vec<&'static str> {
        R::columns().iter().map(|c| c.value.sql_type()).collect()
    }

    fn key(text: &str) -> HashKey {
        HashKey::of(text)
    }

    fn at(text: &str) -> Timestamp {
        Timestamp::parse(text).expect("timestamp")
    }

    /// Every table: its name, and its columns with their SQL types (docs/contract.md §3.2.1).
    fn all_tables() -> Vec<(&'static str, Vec<&'static str>, Vec<&'static str>)> {
        fn of<R: Table>() -> (&'static str, Vec<&'static str>, Vec<&'static str>) {
            (R::NAME, names::<R>(), types::<R>())
        }
        vec![
            of::<HOrder>(),
            of::<HUser>(),
            of::<HRestaurant>(),
            of::<HProduct>(),
            of::<HCategory>(),
            of::<LOrderUser>(),
            of::<LOrderProduct>(),
            of::<LProductCategory>(),
            of::<LProductRestaurant>(),
            of::<LOrderProductCategory>(),
            of::<SUserNames>(),
            of::<SRestaurantNames>(),
            of::<SProductNames>(),
            of::<SOrderCost>(),
            of::<SOrderStatus>(),
            of::<SOrderVersion>(),
            of::<SOrderUserEffectivity>(),
            of::<SOrderProductCategoryEffectivity>(),
        ]
    }

    #[test]
    fn a_load_visits_every_table_with_the_columns_it_declares() {
        let visited: Vec<(&str, Vec<&str>)> = tables()
            .into_iter()
            .map(|table| (table.name, table.columns))
            .collect();
        let declared: Vec<(&str, Vec<&str>)> = all_tables()
            .into_iter()
            .map(|(name, columns, _)| (name, columns))
            .collect();
        assert_eq!(visited, declared);
    }

    #[test]
    fn every_table_has_its_own_name_and_each_column_once() {
        let tables = all_tables();
        let distinct: BTreeSet<&str> = tables.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(distinct.len(), tables.len());
        for (name, columns, _) in &tables {
            assert!(name.starts_with("dds."), "{name}");
            let distinct: BTreeSet<&str> = columns.iter().copied().collect();
            assert_eq!(distinct.len(), columns.len(), "{name}: {columns:?}");
            assert!(!columns.contains(&"load_dt") && !columns.contains(&"load_src"));
        }
    }

    #[test]
    fn columns_carry_the_names_and_types_of_the_contract() {
        assert_eq!(names::<HOrder>(), ["h_order_pk", "order_id", "order_dt"]);
        assert_eq!(types::<HOrder>(), ["uuid", "bigint", "timestamptz"]);
        assert_eq!(names::<HCategory>(), ["h_category_pk", "category_name"]);
        assert_eq!(
            names::<LProductRestaurant>(),
            [
                "hk_product_restaurant_pk",
                "h_product_pk",
                "h_restaurant_pk"
            ]
        );
        assert_eq!(
            names::<SUserNames>(),
            [
                "h_user_pk",
                "username",
                "userlogin",
                "hk_user_names_hashdiff",
                "update_ts"
            ]
        );
        assert_eq!(
            types::<SOrderCost>(),
            [
                "uuid",
                "bigint",
                "numeric",
                "numeric",
                "uuid",
                "timestamptz"
            ]
        );
        assert_eq!(
            names::<LOrderProductCategory>(),
            [
                "hk_order_product_category_pk",
                "h_order_pk",
                "h_product_pk",
                "h_category_pk",
                "order_id"
            ]
        );
        assert_eq!(
            names::<SOrderProductCategoryEffectivity>(),
            ["hk_order_product_category_pk", "order_id", "update_ts"]
        );
        assert_eq!(
            names::<SOrderVersion>(),
            ["h_order_pk", "order_id", "update_ts"]
        );
        assert_eq!(
            names::<SOrderUserEffectivity>(),
            ["hk_order_user_pk", "order_id", "update_ts"]
        );
        assert_eq!(
            types::<SOrderUserEffectivity>(),
            ["uuid", "bigint", "timestamptz"]
        );
    }

    #[test]
    fn history_satellites_name_hub_and_hashdiff_columns_they_have() {
        fn check<R: History>() {
            let columns = names::<R>();
            assert_eq!(columns[0], R::HUB, "{}", R::NAME);
            assert!(columns.contains(&R::HASHDIFF), "{}", R::NAME);
            assert!(columns.contains(&"update_ts"), "{}", R::NAME);
            assert!(columns.contains(&R::SCOPE), "{}", R::NAME);
        }
        check::<SUserNames>();
        check::<SRestaurantNames>();
        check::<SProductNames>();
        check::<SOrderCost>();
        check::<SOrderStatus>();
        assert_eq!(SUserNames::SCOPE, "h_user_pk");
        assert_eq!(SOrderCost::SCOPE, ORDER_SCOPE);
        assert_eq!(SOrderStatus::SCOPE, ORDER_SCOPE);
    }

    #[test]
    fn the_order_hub_and_an_orders_links_and_satellites_are_order_scoped() {
        let scoped: Vec<&str> = tables()
            .into_iter()
            .filter(|table| table.columns.contains(&ORDER_SCOPE))
            .map(|table| table.name)
            .collect();
        assert_eq!(
            scoped,
            [
                "dds.h_order",
                "dds.l_order_user",
                "dds.l_order_product",
                "dds.l_order_product_category",
                "dds.s_order_cost",
                "dds.s_order_status",
                "dds.s_order_version",
                "dds.s_order_user_effectivity",
                "dds.s_order_product_category_effectivity",
            ]
        );
        let row = SOrderVersion {
            h_order_pk: HashKey::order(OrderId(7)),
            order_id: OrderId(7),
            update_ts: Timestamp::parse("2026-12-03 10:00:00").expect("timestamp"),
        };
        assert_eq!(
            order_of::<SOrderVersion>().map(|order| order(&row)),
            Some(7)
        );
    }

    #[test]
    fn each_column_reads_the_field_it_names() {
        let row = SOrderCost {
            h_order_pk: key("order"),
            order_id: OrderId(7),
            cost: Amount::from_i64(100),
            payment: Amount::from_i64(90),
            hk_order_cost_hashdiff: key("diff"),
            update_ts: at("2025-02-22 08:00:00"),
        };
        for column in SOrderCost::columns() {
            match (column.name, column.value) {
                ("h_order_pk", Value::Key(get)) => assert_eq!(get(&row), key("order")),
                ("order_id", Value::BigInt(get)) => assert_eq!(get(&row), 7),
                ("cost", Value::Amount(get)) => assert_eq!(get(&row), Amount::from_i64(100)),
                ("payment", Value::Amount(get)) => assert_eq!(get(&row), Amount::from_i64(90)),
                ("hk_order_cost_hashdiff", Value::Key(get)) => assert_eq!(get(&row), key("diff")),
                ("update_ts", Value::Time(get)) => {
                    assert_eq!(get(&row), at("2025-02-22 08:00:00"))
                }
                (name, _) => panic!("unexpected column {name}"),
            }
        }
        let status = SOrderStatus {
            h_order_pk: key("order"),
            order_id: OrderId(7),
            status: OrderStatus::Cancelled,
            hk_order_status_hashdiff: key("diff"),
            update_ts: at("2025-02-22 08:00:00"),
        };
        let text = SOrderStatus::columns()
            .into_iter()
            .find_map(|c| match c.value {
                Value::Text(get) if c.name == "status" => Some(get(&status).to_owned()),
                _ => None,
            });
        assert_eq!(text.as_deref(), Some("CANCELLED"));
        let order = HOrder {
            h_order_pk: key("order"),
            order_id: OrderId(2301365),
            order_dt: at("2025-02-22 08:00:00"),
        };
        let id = HOrder::columns().into_iter().find_map(|c| match c.value {
            Value::BigInt(get) => Some(get(&order)),
            _ => None,
        });
        assert_eq!(id, Some(2301365));
    }

    #[test]
    fn insert_once_keys_identify_the_row() {
        let version = at("2025-02-22 08:00:00");
        let link = LOrderProductCategory::new(OrderId(7), key("o"), key("p"), key("c"));
        assert_eq!(link.key(), link.hk_order_product_category_pk);
        let effectivity = SOrderProductCategoryEffectivity {
            hk_order_product_category_pk: link.hk_order_product_category_pk,
            order_id: OrderId(7),
            update_ts: version,
        };
        assert_eq!(
            effectivity.key(),
            (link.hk_order_product_category_pk, version)
        );
        let user = LOrderUser::new(OrderId(7), key("o"), key("u"));
        let in_effect = SOrderUserEffectivity {
            hk_order_user_pk: user.hk_order_user_pk,
            order_id: OrderId(7),
            update_ts: version,
        };
        assert_eq!(in_effect.key(), (user.hk_order_user_pk, version));
    }

    #[test]
    fn the_order_product_category_key_links_its_three_hubs_in_the_order_of_its_name() {
        let (o, p, c) = (key("o"), key("p"), key("c"));
        let link = LOrderProductCategory::new(OrderId(7), o, p, c);
        assert_eq!(
            link.hk_order_product_category_pk,
            HashKey::of(&format!("{o}_{p}_{c}"))
        );
        assert_ne!(
            link.hk_order_product_category_pk,
            LOrderProductCategory::new(OrderId(7), o, c, p).hk_order_product_category_pk
        );
        assert_ne!(
            link.hk_order_product_category_pk,
            LOrderProductCategory::new(OrderId(7), o, p, key("другая"))
                .hk_order_product_category_pk
        );
    }
}

/// Inputs the fuzzer found (vault-core/fuzz).
#[cfg(test)]
mod found_by_fuzzing {
    use super::*;
    use crate::contract::{EnrichedPayload, EnrichedProduct, RestaurantRef, UserRef};
    use crate::events;
    use crate::test_support::entity;

    #[test]
    fn a_product_listed_twice_yields_the_category_of_its_last_listing_only() {
        // Found by fuzzing: the second listing's category got a hub although neither the
        // product–category link nor the counter events used it.
        let at = Timestamp::parse("2023-08-05 06:28:54").expect("timestamp");
        let listing = |category: &str| EnrichedProduct {
            id: entity("1b3e42939c414bc1ea69e2fe"),
            price: Amount::from_i64(250),
            quantity: 1,
            name: "Пирог с капустой".to_owned(),
            category: category.to_owned(),
        };
        let order = EnrichedOrder {
            object_id: OrderId(2301365),
            object_type: "order".to_owned(),
            payload: EnrichedPayload {
                id: OrderId(2301365),
                date: at,
                cost: Amount::from_i64(500),
                payment: Amount::from_i64(500),
                status: OrderStatus::Closed,
                update_ts: at,
                restaurant: RestaurantRef {
                    id: entity("a51e4e31ae4602047ec52534"),
                    name: "Пекарня у дома".to_owned(),
                },
                user: UserRef {
                    id: entity("626a81ce9a8cd1920641e296"),
                    name: "Ирина".to_owned(),
                    login: "isokolova".to_owned(),
                },
                products: vec![listing("Выпечка"), listing("Напитки")],
            },
        };
        let rows = rows(&order);
        let drinks = HashKey::category("Напитки");
        let categories: Vec<HashKey> = rows
            .h_categories
            .iter()
            .map(|hub| hub.h_category_pk)
            .collect();
        assert_eq!(categories, vec![drinks]);
        assert_eq!(rows.l_product_categories.len(), 1);
        assert_eq!(rows.l_product_categories[0].h_category_pk, drinks);
        let version = events::order_version(&events::cdm_events(&order)).expect("one version");
        assert_eq!(
            version.categories.keys().copied().collect::<Vec<_>>(),
            categories
        );
    }
}
