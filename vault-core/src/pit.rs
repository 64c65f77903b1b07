//! An order's point in time (docs/bi.md, "At scale"): the part of its current state that
//! depends on its history, advanced version by version exactly as the satellites record the
//! versions. The Data Vault loader keeps it in `dds.pit_order` beside the satellites, so the
//! BI views read one row per order instead of recomputing every satellite's history.

use crate::contract::{OrderStatus, Timestamp};
use crate::version;

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
