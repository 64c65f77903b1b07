//! Synthetic orders for the raw topic: N orders, a share of them CANCELLED, and some sent
//! again later (as extra messages) with a changed status; made chunk by chunk
//! ([`Generator`]), so that memory does not grow with N.

use chrono::{DateTime, TimeDelta, Utc};
use rand::seq::IndexedRandom;
use rand::Rng;
use vault_core::contract::{EntityRef, OrderItem, RawPayload, StatusChange, ORDER_OBJECT_TYPE};
use vault_core::{Amount, OrderId, OrderStatus, RawOrder, Restaurant, Timestamp};

use crate::dictionary::Dictionary;

/// Share of orders whose final status is CANCELLED.
const CANCELLED_SHARE: f64 = 0.2;
/// Share of orders that are sent again later with a newer version.
const RESEND_SHARE: f64 = 0.1;

/// How many of `orders` orders are sent a second time, with a newer version.
pub fn resent(orders: u64) -> u64 {
    (orders as f64 * RESEND_SHARE).floor() as u64
}

/// Generates the messages for `count` orders with ids `first_id..first_id + count`: every
/// order once, in id order, then [`resent`]`(count)` of them again with a newer version.
pub fn orders(
    rng: &mut impl Rng,
    dictionary: &Dictionary,
    first_id: i64,
    count: u64,
) -> Vec<RawOrder> {
    Generator::new(rng, dictionary, first_id, count, Utc::now()).next_chunk(count)
}

/// Generates a range of orders chunk by chunk, so that a push of any size holds one chunk in
/// memory, never all of it. Each chunk is what [`orders`] makes of its ids: every order once,
/// then the later versions of the chunk's first tenth. Given the same seed, dictionary, range,
/// `now` and chunk sizes it makes the same orders (all but `sent_dttm`), which is how the
/// benchmark's reference rebuilds what it produced without keeping it.
pub struct Generator<'d, R> {
    rng: R,
    dictionary: &'d Dictionary,
    /// The restaurants an order can be placed at: those with a menu.
    restaurants: Vec<&'d Restaurant>,
    /// Order dates are drawn back from this instant.
    now: DateTime<Utc>,
    next_id: i64,
    /// One past the last id of the range.
    end_id: i64,
}

impl<R> std::fmt::Debug for Generator<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("next_id", &self.next_id)
            .field("end_id", &self.end_id)
            .finish_non_exhaustive()
    }
}

impl<'d, R: Rng> Generator<'d, R> {
    /// The orders with ids `first_id..first_id + count`, dated up to a month before `now`.
    pub fn new(
        rng: R,
        dictionary: &'d Dictionary,
        first_id: i64,
        count: u64,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            rng,
            dictionary,
            restaurants: dictionary
                .restaurants
                .iter()
                .filter(|r| !r.menu.is_empty())
                .collect(),
            now,
            next_id: first_id,
            end_id: first_id.saturating_add(i64::try_from(count).unwrap_or(i64::MAX)),
        }
    }

    /// How many orders are still to come.
    pub fn remaining(&self) -> u64 {
        (self.end_id - self.next_id).max(0) as u64
    }

    /// The messages of the next `size` orders (fewer at the end of the range, none after it).
    pub fn next_chunk(&mut self, size: u64) -> Vec<RawOrder> {
        let count = size.min(self.remaining());
        let first_id = self.next_id;
        self.next_id += count as i64;
        let resends = resent(count);
        let mut out = Vec::with_capacity((count + resends) as usize);
        let mut later = Vec::with_capacity(resends as usize);
        for n in 0..count {
            let (Some(user), Some(restaurant)) = (
                self.dictionary.users.choose(&mut self.rng),
                self.restaurants.choose(&mut self.rng),
            ) else {
                break;
            };
            let rng = &mut self.rng;
            let size = rng.random_range(1..=4.min(restaurant.menu.len()));
            let items: Vec<OrderItem> = restaurant
                .menu
                .choose_multiple(rng, size)
                .map(|item| OrderItem {
                    id: item.id.clone(),
                    price: item.price,
                    quantity: rng.random_range(1..=3),
                    name: Some(item.name.clone()),
                    category: Some(item.category.clone()),
                })
                .collect();
            let cost = items.iter().fold(Amount::default(), |sum, item| {
                Amount::new(
                    sum.as_decimal() + item.price.as_decimal() * rust_quantity(item.quantity),
                )
            });
            let placed = self.now - TimeDelta::minutes(rng.random_range(60..60 * 24 * 30));
            let cancelled = rng.random_bool(CANCELLED_SHARE);
            let final_status = if cancelled {
                OrderStatus::Cancelled
            } else {
                OrderStatus::Closed
            };
            let resend = n < resends;
            // A re-sent order first goes out one step earlier: DELIVERING before CLOSED, or
            // CLOSED before a cancellation (a refund), which must retract what was counted.
            let first_status = match (resend, final_status) {
                (false, status) => status,
                (true, OrderStatus::Cancelled) => OrderStatus::Closed,
                (true, _) => OrderStatus::Delivering,
            };
            let order = |status: OrderStatus, extra_minutes: i64| {
                let mut statuses = vec![OrderStatus::Open, OrderStatus::Cooking];
                if status != OrderStatus::Cancelled {
                    statuses.push(OrderStatus::Delivering);
                }
                if status == OrderStatus::Closed {
                    statuses.push(OrderStatus::Closed);
                }
                if status == OrderStatus::Cancelled {
                    statuses.push(OrderStatus::Cancelled);
                }
                let changes: Vec<StatusChange> = statuses
                    .iter()
                    .enumerate()
                    .map(|(i, s)| StatusChange {
                        status: *s,
                        dttm: Timestamp::from_datetime(
                            placed + TimeDelta::minutes(10 * i as i64 + extra_minutes),
                        ),
                    })
                    .collect();
                let update_ts = changes
                    .last()
                    .map_or(Timestamp::from_datetime(placed), |c| c.dttm);
                RawOrder {
                    object_id: OrderId(first_id + n as i64),
                    object_type: ORDER_OBJECT_TYPE.to_owned(),
                    sent_dttm: Timestamp::from_datetime(Utc::now()),
                    payload: RawPayload {
                        restaurant: EntityRef {
                            id: restaurant.id.clone(),
                        },
                        user: EntityRef {
                            id: user.id.clone(),
                        },
                        date: Timestamp::from_datetime(placed),
                        order_items: items.clone(),
                        bonus_payment: Amount::default(),
                        cost,
                        payment: cost,
                        bonus_grant: Amount::default(),
                        // The source lists statuses newest first.
                        statuses: changes.into_iter().rev().collect(),
                        final_status: status,
                        update_ts,
                    },
                }
            };
            out.push(order(first_status, 0));
            if resend {
                later.push(order(final_status, 30));
            }
        }
        out.extend(later);
        out
    }
}

fn rust_quantity(quantity: i64) -> rust_decimal::Decimal {
    rust_decimal::Decimal::from(quantity)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::dictionary::synthetic;

    #[test]
    fn a_push_holds_the_asked_orders_plus_their_later_versions() {
        let d = synthetic(1, 120, 12);
        for n in [1, 9, 10, 1000] {
            let orders = orders(&mut StdRng::seed_from_u64(n), &d, 1, n);
            assert_eq!(orders.len() as u64, n + resent(n));
            let distinct: BTreeSet<i64> = orders.iter().map(|o| o.object_id.0).collect();
            assert_eq!(distinct.len() as u64, n);
        }
    }

    #[test]
    fn ids_are_consecutive_and_resent_orders_come_later_with_a_newer_version() {
        let d = synthetic(1, 120, 12);
        let list = orders(&mut StdRng::seed_from_u64(3), &d, 500, 1000);
        let distinct: BTreeSet<i64> = list.iter().map(|o| o.object_id.0).collect();
        assert_eq!(distinct.len(), 1000);
        assert_eq!(distinct.first(), Some(&500));
        assert_eq!(distinct.last(), Some(&1499));
        let mut seen: BTreeMap<i64, &RawOrder> = BTreeMap::new();
        for order in &list {
            if let Some(previous) = seen.get(&order.object_id.0) {
                assert!(order.payload.update_ts > previous.payload.update_ts);
                assert_ne!(order.payload.final_status, previous.payload.final_status);
            }
            seen.insert(order.object_id.0, order);
        }
    }

    #[test]
    fn a_share_of_orders_is_cancelled_and_some_are_closed_then_cancelled() {
        let d = synthetic(1, 120, 12);
        let list = orders(&mut StdRng::seed_from_u64(5), &d, 1, 2000);
        let cancelled = list
            .iter()
            .filter(|o| o.payload.final_status == OrderStatus::Cancelled)
            .count();
        assert!(cancelled > 100 && cancelled < 800, "{cancelled}");
        let mut closed_first = BTreeSet::new();
        let mut refunds = 0;
        for order in &list {
            match order.payload.final_status {
                OrderStatus::Closed => {
                    closed_first.insert(order.object_id);
                }
                OrderStatus::Cancelled if closed_first.contains(&order.object_id) => refunds += 1,
                _ => {}
            }
        }
        assert!(refunds > 0);
    }

    #[test]
    fn chunk_by_chunk_a_range_yields_each_of_its_ids_once_as_a_first_version() {
        let d = synthetic(1, 120, 12);
        for (n, chunk) in [(1, 7), (2005, 2000), (10_000, 999), (300, 300)] {
            let mut generator = Generator::new(StdRng::seed_from_u64(n), &d, 7000, n, Utc::now());
            let mut firsts = BTreeSet::new();
            let mut messages = 0;
            while generator.remaining() > 0 {
                let list = generator.next_chunk(chunk);
                assert!(!list.is_empty());
                messages += list.len() as u64;
                for order in list {
                    firsts.insert(order.object_id.0);
                }
            }
            assert!(generator.next_chunk(chunk).is_empty());
            assert_eq!(firsts.len() as u64, n);
            assert_eq!(firsts.first(), Some(&7000));
            assert_eq!(firsts.last(), Some(&(7000 + n as i64 - 1)));
            assert!(messages > n || n < 10, "{n}: later versions too");
        }
    }

    #[test]
    fn one_seed_and_one_instant_make_the_same_orders_again() {
        let d = synthetic(1, 120, 12);
        let now = Utc::now();
        let run = || {
            let mut generator = Generator::new(StdRng::seed_from_u64(11), &d, 1, 500, now);
            let mut all = Vec::new();
            while generator.remaining() > 0 {
                all.extend(generator.next_chunk(128));
            }
            all.into_iter()
                .map(|order| (order.object_id, order.payload))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn cost_is_the_sum_of_item_prices_times_quantities() {
        let d = synthetic(1, 120, 12);
        for order in orders(&mut StdRng::seed_from_u64(9), &d, 1, 50) {
            let sum: rust_decimal::Decimal = order
                .payload
                .order_items
                .iter()
                .map(|i| i.price.as_decimal() * rust_decimal::Decimal::from(i.quantity))
                .sum();
            assert_eq!(order.payload.cost.as_decimal(), sum);
        }
    }
}
