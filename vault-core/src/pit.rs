//! An order's point in time (docs/bi.md, "At scale"): the part of its current state that
//! depends on its history, advanced version by version exactly as the satellites record the
//! versions. The Data Vault loader keeps it in `dds.pit_order` beside the satellites, so the
//! BI views read one row per order instead of recomputing every satellite's history.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::contract::{OrderStatus, Timestamp};
use crate::vault::VaultRows;
use crate::{version, HashKey};

/// The table of orders' points in time.
pub const ORDER_TABLE: &str = "dds.pit_order";
/// The columns of [`ORDER_TABLE`] a writer fills (`order_date` is generated from `order_dt`).
pub const ORDER_COLUMNS: &[&str] = &[
    "h_order_pk",
    "order_id",
    "order_dt",
    "h_user_pk",
    "status",
    "status_valid_from",
    "cost",
    "payment",
    "version_update_ts",
    "versions",
    "first_loaded_at",
];
/// The table of dishes' current categories.
pub const PRODUCT_TABLE: &str = "dds.pit_product";
/// The columns of [`PRODUCT_TABLE`].
pub const PRODUCT_COLUMNS: &[&str] = &["h_product_pk", "h_category_pk", "update_ts", "load_dt"];

/// Each dish's category in the newest order version offered that holds it; on a tie, the
/// smallest category key, as `dds.v_pit_product_recount` orders them.
#[derive(Debug, Clone, Default)]
pub struct ProductPoints(BTreeMap<HashKey, (Timestamp, Reverse<HashKey>)>);

impl ProductPoints {
    /// Takes the dishes of one order version (its Data Vault rows).
    pub fn offer(&mut self, rows: &VaultRows, version: Timestamp) {
        for line in &rows.l_order_product_categories {
            let candidate = (version, Reverse(line.h_category_pk));
            self.0
                .entry(line.h_product_pk)
                .and_modify(|held| *held = (*held).max(candidate))
                .or_insert(candidate);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (dish, category, version), in dish key order.
    pub fn points(&self) -> impl Iterator<Item = (HashKey, HashKey, Timestamp)> + '_ {
        self.0
            .iter()
            .map(|(product, (version, category))| (*product, category.0, *version))
    }
}

/// What an order's history says at its latest applied version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderPoint {
    /// The status of the latest version.
    pub status: OrderStatus,
    /// The first version of the run of versions, up to the latest, with that status: where
    /// the status satellite's current row begins (a row is written only when the status
    /// changes).
    pub status_valid_from: Timestamp,
    /// The latest applied version (`update_ts`).
    pub version: Timestamp,
    /// How many versions were applied.
    pub versions: i64,
}

impl OrderPoint {
    /// The point after applying `versions` (one order's `(status, update_ts)`, in load order)
    /// on top of `previous` (None: the order's first load).
    ///
    /// None when a version is not newer than the one applied before it: the satellites then
    /// hold versions loaded out of source order, which service-dds's gate never lets through,
    /// and the point must be derived from their history instead (`dds.refresh_pit_order`).
    pub fn advance(
        previous: Option<OrderPoint>,
        versions: impl IntoIterator<Item = (OrderStatus, Timestamp)>,
    ) -> Option<OrderPoint> {
        let mut point = previous;
        for (status, at) in versions {
            point = Some(match point {
                None => OrderPoint {
                    status,
                    status_valid_from: at,
                    version: at,
                    versions: 1,
                },
                Some(before) if version::is_newer(at, Some(before.version)) => OrderPoint {
                    status,
                    status_valid_from: if status == before.status {
                        before.status_valid_from
                    } else {
                        at
                    },
                    version: at,
                    versions: before.versions + 1,
                },
                Some(_) => return None,
            });
        }
        point
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::{Cancelled, Closed, Delivering};

    fn at(minute: u32) -> Timestamp {
        Timestamp::parse(&format!("2025-02-22 08:{minute:02}:00")).expect("timestamp")
    }

    #[test]
    fn a_first_load_starts_the_status_at_its_first_version() {
        let point = OrderPoint::advance(None, [(Delivering, at(1)), (Closed, at(2))]);
        assert_eq!(
            point,
            Some(OrderPoint {
                status: Closed,
                status_valid_from: at(2),
                version: at(2),
                versions: 2,
            })
        );
    }

    #[test]
    fn an_unchanged_status_keeps_its_start_across_loads_and_a_change_restarts_it() {
        let first = OrderPoint::advance(None, [(Closed, at(1))]);
        let same = OrderPoint::advance(first, [(Closed, at(3)), (Closed, at(4))]);
        assert_eq!(
            same.map(|p| (p.status_valid_from, p.versions)),
            Some((at(1), 3))
        );
        let changed = OrderPoint::advance(same, [(Cancelled, at(5))]);
        assert_eq!(
            changed.map(|p| (p.status, p.status_valid_from, p.version, p.versions)),
            Some((Cancelled, at(5), at(5), 4))
        );
    }

    #[test]
    fn a_version_out_of_source_order_or_repeated_leaves_it_to_the_history() {
        let first = OrderPoint::advance(None, [(Closed, at(3))]);
        assert_eq!(OrderPoint::advance(first, [(Closed, at(2))]), None);
        assert_eq!(OrderPoint::advance(first, [(Closed, at(3))]), None);
        assert_eq!(
            OrderPoint::advance(None, [(Closed, at(4)), (Delivering, at(4))]),
            None
        );
    }

    #[test]
    fn nothing_applied_changes_nothing() {
        let first = OrderPoint::advance(None, [(Closed, at(3))]);
        assert_eq!(OrderPoint::advance(first, []), first);
        assert_eq!(OrderPoint::advance(None, []), None);
    }

    #[test]
    fn a_dish_takes_the_category_of_its_newest_version_and_a_tie_the_smallest_key() {
        let mut order =
            crate::decode::enriched_order(include_bytes!("../tests/data/dds_message.json"))
                .expect("the example decodes");
        let dish = HashKey::product(&order.payload.products[0].id);
        let mut points = ProductPoints::default();
        let mut offer = |category: &str, minute: u32| {
            order.payload.products[0].category = category.to_owned();
            points.offer(&crate::vault::rows(&order), at(minute));
            points
                .points()
                .find(|(product, _, _)| *product == dish)
                .map(|(_, category, version)| (category, version))
        };
        assert_eq!(offer("b", 2), Some((HashKey::category("b"), at(2))));
        assert_eq!(offer("c", 1), Some((HashKey::category("b"), at(2))));
        let (smaller, larger) = if HashKey::category("x") < HashKey::category("y") {
            ("x", "y")
        } else {
            ("y", "x")
        };
        assert_eq!(offer(larger, 3), Some((HashKey::category(larger), at(3))));
        assert_eq!(offer(smaller, 3), Some((HashKey::category(smaller), at(3))));
        assert_eq!(offer(larger, 3), Some((HashKey::category(smaller), at(3))));
    }

    #[test]
    fn every_status_reads_back_as_written() {
        for status in [
            OrderStatus::Open,
            OrderStatus::Cooking,
            Delivering,
            Closed,
            Cancelled,
        ] {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(OrderStatus::parse("closed"), None);
    }
}
