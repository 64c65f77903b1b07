//! Version ordering of orders (docs/contract.md §2.1, §3.2): an order's versions are ordered by
//! `update_ts`, and the newest wins. A version equal to one already seen is a repeat, never an
//! update, so ties keep what was there first.
//!
//! This is the one place that rule is written: staging (which raw version to keep), the Data
//! Vault gate (which versions to load) and the datamart (which version to count) all ask here.

use crate::contract::Timestamp;

/// Whether `candidate` replaces `current`: only a strictly newer version does, and anything
/// replaces nothing.
pub fn is_newer(candidate: Timestamp, current: Option<Timestamp>) -> bool {
    current.is_none_or(|current| candidate > current)
}

/// The newest of `versions` by the key `version_of`; on a tie, the first one seen.
pub fn newest<T>(
    versions: impl IntoIterator<Item = T>,
    version_of: impl Fn(&T) -> Timestamp,
) -> Option<T> {
    let mut newest: Option<(Timestamp, T)> = None;
    for item in versions {
        let version = version_of(&item);
        if is_newer(version, newest.as_ref().map(|(v, _)| *v)) {
            newest = Some((version, item));
        }
    }
    newest.map(|(_, item)| item)
}

/// The versions that apply, in arrival order, given the newest one already applied (`floor`):
/// each must be newer than everything applied or arrived before it, so a late older version or
/// a repeat changes nothing whether it comes in the same batch as the newer one or later.
pub fn applicable<T>(
    mut floor: Option<Timestamp>,
    arrived: impl IntoIterator<Item = T>,
    version_of: impl Fn(&T) -> Timestamp,
) -> Vec<T> {
    let mut applied = Vec::new();
    for item in arrived {
        let version = version_of(&item);
        if is_newer(version, floor) {
            floor = Some(version);
            applied.push(item);
        }
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u32) -> Timestamp {
        Timestamp::parse(&format!("2025-02-22 08:{minute:02}:00")).expect("timestamp")
    }

    #[test]
    fn a_later_version_is_newer_and_an_equal_or_older_one_is_not() {
        assert!(is_newer(at(2), Some(at(1))));
        assert!(!is_newer(at(1), Some(at(1))));
        assert!(!is_newer(at(0), Some(at(1))));
    }

    #[test]
    fn any_version_is_newer_than_none() {
        assert!(is_newer(at(0), None));
    }

    #[test]
    fn the_newest_wins_and_a_tie_keeps_the_first_seen() {
        let versions = [("a", at(1)), ("b", at(3)), ("c", at(3)), ("d", at(2))];
        assert_eq!(newest(versions, |(_, v)| *v), Some(("b", at(3))));
        assert_eq!(newest(Vec::<(&str, Timestamp)>::new(), |(_, v)| *v), None);
    }

    #[test]
    fn only_versions_newer_than_everything_before_them_apply() {
        let arrived = [
            ("v2", at(2)),
            ("v2 again", at(2)),
            ("v1", at(1)),
            ("v3", at(3)),
        ];
        let applied: Vec<&str> = applicable(None, arrived, |(_, v)| *v)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(applied, ["v2", "v3"]);
    }

    #[test]
    fn nothing_at_or_below_the_floor_applies() {
        let arrived = [at(1), at(2), at(3)];
        assert_eq!(applicable(Some(at(2)), arrived, |v| *v), [at(3)]);
        assert!(applicable(Some(at(3)), arrived, |v| *v).is_empty());
    }
}
