//! Scalar newtypes shared by all contracts: ids, timestamps, money and order statuses.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, DurationRound, NaiveDateTime, SecondsFormat, TimeDelta, Timelike, Utc,
};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a scalar did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScalarError {
    #[error("`{0}` is not a timestamp (expected RFC 3339 or `YYYY-MM-DD HH:MM:SS[.ffffff]`)")]
    Timestamp(String),
    #[error("`{0}` is outside the years 1 to 9999 (UTC)")]
    TimestampRange(String),
    #[error("`{0}` is not an entity id (expected 24 hexadecimal characters)")]
    EntityId(String),
    #[error("`{0}` is not a decimal amount")]
    Amount(String),
}

/// Implements `Display`, `FromStr`, `Serialize` and `Deserialize` for a scalar whose wire form
/// is its text: `$text` writes the text and the type's `parse` reads it, so every path writes
/// the same text and rejects a bad one with the same [`ScalarError`].
macro_rules! text_form {
    ($ty:ident, $text:path) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&$text(self))
            }
        }

        impl FromStr for $ty {
            type Err = ScalarError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&$text(self))
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::parse(&text).map_err(de::Error::custom)
            }
        }
    };
}

/// A point in time, always UTC, truncated to microseconds, between the years 1 and 9999.
///
/// Every value must be the same after a round trip through the database, because the version
/// comparisons that make processing idempotent compare what arrives with what was stored:
/// Postgres keeps microseconds, reads a leap second `23:59:60` as the next minute, and has
/// no year 0; RFC 3339 (the form written to the wire) has four-digit years.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Wraps a UTC time, truncating it to microseconds; a leap second becomes the first
    /// second of the next minute, as in Postgres.
    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        let at = match at.nanosecond() {
            // chrono keeps a leap second as the previous second with 1e9 ns or more.
            nanos if nanos >= 1_000_000_000 => at
                .with_nanosecond(0)
                .and_then(|second| second.checked_add_signed(TimeDelta::nanoseconds(nanos.into())))
                .unwrap_or(at),
            _ => at,
        };
        let micros = TimeDelta::microseconds(1);
        Self(at.duration_trunc(micros).unwrap_or(at))
    }

    /// Parses RFC 3339 with an offset, or a naive `YYYY-MM-DD HH:MM:SS[.f]` taken as UTC.
    pub fn parse(text: &str) -> Result<Self, ScalarError> {
        let text = text.trim();
        let at = DateTime::parse_from_rfc3339(text)
            .map(|at| at.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                    .into_iter()
                    .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
                    .map(|naive| naive.and_utc())
            })
            .ok_or_else(|| ScalarError::Timestamp(text.to_owned()))?;
        let at = Self::from_datetime(at);
        if (1..=9999).contains(&at.0.year()) {
            Ok(at)
        } else {
            Err(ScalarError::TimestampRange(text.to_owned()))
        }
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }

    /// The canonical text form: RFC 3339 with a `+00:00` offset and only the fraction needed.
    pub fn to_rfc3339(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::AutoSi, false)
    }
}

text_form!(Timestamp, Timestamp::to_rfc3339);

/// The id of a dictionary entity (user, restaurant, menu item): 24 hexadecimal characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityId(String);

impl EntityId {
    pub fn parse(text: &str) -> Result<Self, ScalarError> {
        if text.len() == 24 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(ScalarError::EntityId(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

text_form!(EntityId, EntityId::as_str);

/// The business key of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub i64);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A money amount, exact (no binary floating point once parsed).
///
/// Accepts JSON integers, JSON decimals and decimal strings. Writes integers as JSON
/// integers and fractions as JSON numbers when a reader gets the same amount back from the
/// number, else as a decimal string: a double holds about 16 significant digits, and
/// `numeric(19,5)` up to 19, so `12345678901234.56789` travels as `"12345678901234.56789"`
/// (docs/contract.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(Decimal);

impl Amount {
    pub fn new(value: Decimal) -> Self {
        Self(value.normalize())
    }

    pub fn from_i64(value: i64) -> Self {
        Self(Decimal::from(value))
    }

    pub fn parse(text: &str) -> Result<Self, ScalarError> {
        Decimal::from_str(text.trim())
            .or_else(|_| Decimal::from_scientific(text.trim()))
            .map(Self::new)
            .map_err(|_| ScalarError::Amount(text.to_owned()))
    }

    pub fn as_decimal(&self) -> Decimal {
        self.0
    }

    /// Whether the amount fits an SQL `numeric(precision, scale)` column without overflow.
    pub fn fits_numeric(&self, precision: u32, scale: u32) -> bool {
        let integer_digits = precision.saturating_sub(scale).min(18);
        self.0.abs() < Decimal::from(10_i64.pow(integer_digits))
    }
}

impl fmt::Display for Amount {
    /// The canonical text form (no trailing zeros), also used in satellite hashdiffs and as
    /// the literal bound to `numeric` columns.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.normalize())
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = self.0.normalize();
        if value.scale() == 0 {
            if let Some(integer) = value.to_i64() {
                return serializer.serialize_i64(integer);
            }
        }
        match self.as_exact_f64() {
            Some(float) => serializer.serialize_f64(float),
            None => serializer.serialize_str(&value.to_string()),
        }
    }
}

impl Amount {
    /// The double that reads back as exactly this amount, if there is one. Readers turn a JSON
    /// number into the nearest double and that into its shortest decimal text (as
    /// [`Deserialize`] does), so the amount survives only if that text is the amount itself.
    fn as_exact_f64(&self) -> Option<f64> {
        // Parsing the decimal text rounds correctly, unlike arithmetic on the mantissa.
        let float: f64 = self.0.to_string().parse().ok()?;
        let back = Amount::parse(&float.to_string()).ok()?;
        (float.is_finite() && back == *self).then_some(float)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AmountVisitor;

        impl Visitor<'_> for AmountVisitor {
            type Value = Amount;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a decimal string")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
                Ok(Amount::from_i64(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
                Ok(Amount::new(Decimal::from(v)))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Amount, E> {
                if !v.is_finite() {
                    return Err(E::custom(format!("`{v}` is not a finite amount")));
                }
                // Display of f64 is the shortest text that round-trips, so 0.1 stays 0.1.
                Amount::parse(&v.to_string()).map_err(E::custom)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
                Amount::parse(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(AmountVisitor)
    }
}

/// The lifecycle status of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderStatus {
    Open,
    Cooking,
    Delivering,
    Closed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Open => "OPEN",
            Self::Cooking => "COOKING",
            Self::Delivering => "DELIVERING",
            Self::Closed => "CLOSED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// The status named `text` as [`OrderStatus::as_str`] writes it.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Open,
            Self::Cooking,
            Self::Delivering,
            Self::Closed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// Whether an order whose latest status is this one counts in the datamarts.
    pub fn counts(&self) -> bool {
        matches!(self, Self::Closed)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_naive_timestamps_denote_the_same_instant() {
        let naive = Timestamp::parse("2023-08-05 06:28:54").expect("naive");
        let iso = Timestamp::parse("2023-08-05T06:28:54+00:00").expect("iso");
        let shifted = Timestamp::parse("2023-08-05T09:28:54+03:00").expect("offset");
        assert_eq!(naive, iso);
        assert_eq!(iso, shifted);
        assert_eq!(iso.to_rfc3339(), "2023-08-05T06:28:54+00:00");
    }

    #[test]
    fn timestamps_keep_microseconds_and_drop_nanoseconds() {
        let micro = Timestamp::parse("2025-02-22T09:43:14.049943+00:00").expect("micros");
        assert_eq!(micro.to_rfc3339(), "2025-02-22T09:43:14.049943+00:00");
        let nano = Timestamp::parse("2025-02-22 09:43:14.049943999").expect("nanos");
        assert_eq!(nano, micro);
    }

    #[test]
    fn timestamps_outside_the_years_1_to_9999_are_rejected() {
        // Found by fuzzing: these parsed, but their RFC 3339 form did not parse back.
        for text in [
            "+10000-01-01 00:00:00",
            "9999-12-31T23:59:59-05:00",
            "-0001-01-01 00:00:00",
            "0000-12-31T23:59:59+00:00",
        ] {
            assert_eq!(
                Timestamp::parse(text),
                Err(ScalarError::TimestampRange(text.to_owned())),
                "{text}"
            );
        }
        for text in ["0001-01-01 00:00:00", "9999-12-31T23:59:59.999999+00:00"] {
            let at = Timestamp::parse(text).expect(text);
            assert_eq!(Timestamp::parse(&at.to_rfc3339()), Ok(at));
        }
    }

    #[test]
    fn a_leap_second_is_the_first_second_of_the_next_minute_as_in_postgres() {
        let leap = Timestamp::parse("2016-12-31T23:59:60.5Z").expect("leap second");
        let next = Timestamp::parse("2017-01-01 00:00:00.5").expect("next minute");
        assert_eq!(leap, next);
        assert_eq!(leap.to_rfc3339(), "2017-01-01T00:00:00.500+00:00");
    }

    #[test]
    fn garbage_is_not_a_timestamp() {
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse("2023-13-05 06:28:54").is_err());
    }

    #[test]
    fn entity_ids_are_24_hex_characters() {
        assert!(EntityId::parse("626a81ce9a8cd1920641e296").is_ok());
        assert!(EntityId::parse("626a81ce9a8cd1920641e29").is_err());
        assert!(EntityId::parse("626a81ce9a8cd1920641e29z").is_err());
    }

    #[test]
    fn amounts_are_exact_and_canonical() {
        let a: Amount = serde_json::from_str("1410").expect("int");
        let b: Amount = serde_json::from_str("1410.0").expect("float");
        let c: Amount = serde_json::from_str("\"1410.00\"").expect("string");
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.to_string(), "1410");
        assert_eq!(serde_json::to_string(&a).expect("ser"), "1410");
        let d: Amount = serde_json::from_str("0.1").expect("fraction");
        assert_eq!(d.to_string(), "0.1");
        assert_eq!(serde_json::to_string(&d).expect("ser"), "0.1");
    }

    #[test]
    fn amounts_a_json_number_cannot_hold_exactly_travel_as_decimal_strings() {
        // Found by fuzzing: both came back as 100000000000000 and 12345678901234.568.
        for text in [
            "99999999999999.99999",
            "12345678901234.56789",
            "0.123456789012345678",
        ] {
            let amount = Amount::parse(text).expect("amount");
            let wire = serde_json::to_string(&amount).expect("ser");
            assert_eq!(wire, format!("\"{text}\""));
            let back: Amount = serde_json::from_str(&wire).expect("de");
            assert_eq!(back, amount);
        }
    }

    #[test]
    fn amounts_a_json_number_holds_exactly_stay_numbers() {
        for (text, wire) in [("0.1", "0.1"), ("1410.5", "1410.5"), ("1e-7", "1e-7")] {
            let amount = Amount::parse(text).expect("amount");
            assert_eq!(serde_json::to_string(&amount).expect("ser"), wire);
            let back: Amount = serde_json::from_str(wire).expect("de");
            assert_eq!(back, amount);
        }
    }

    #[test]
    fn amounts_know_whether_they_fit_a_numeric_column() {
        assert!(Amount::from_i64(99_999_999_999_999).fits_numeric(19, 5));
        assert!(!Amount::from_i64(100_000_000_000_000).fits_numeric(19, 5));
        assert!(!Amount::from_i64(-100_000_000_000_000).fits_numeric(19, 5));
    }

    #[test]
    fn statuses_use_upper_case_names() {
        let s: OrderStatus = serde_json::from_str("\"CANCELLED\"").expect("status");
        assert_eq!(s, OrderStatus::Cancelled);
        assert!(serde_json::from_str::<OrderStatus>("\"closed\"").is_err());
        assert!(OrderStatus::Closed.counts());
        assert!(!OrderStatus::Cancelled.counts());
    }
}
