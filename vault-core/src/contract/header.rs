//! The header Vaultline puts on the messages it produces (docs/contract.md §2).

/// When the order a message derives from was first sent: the raw order's Kafka timestamp, in
/// milliseconds since the epoch, as decimal ASCII (`1796416512345`). The stages pass it on in
/// this header and let their own messages carry the time they were published: the broker's
/// time retention deletes a segment whose newest Kafka timestamp is past it, so an old order
/// replayed into the pipeline with its original timestamp would otherwise be deleted from an
/// internal topic before the next stage had read it.
pub const SENT_MS_HEADER: &str = "vaultline-sent-ms";

/// The value of [`SENT_MS_HEADER`] for `ms`.
pub fn encode_sent_ms(ms: i64) -> String {
    ms.to_string()
}

/// `ms` from a value of [`SENT_MS_HEADER`]; `None` if it is not one.
pub fn decode_sent_ms(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sent_time_round_trips_as_decimal_text() {
        for ms in [0, 1, 1_796_416_512_345, -62_135_596_800_000, i64::MAX] {
            assert_eq!(decode_sent_ms(encode_sent_ms(ms).as_bytes()), Some(ms));
        }
        assert_eq!(encode_sent_ms(1_796_416_512_345), "1796416512345");
    }

    #[test]
    fn anything_else_is_not_a_sent_time() {
        for value in [
            &b""[..],
            b" 1",
            b"1.5",
            b"0x10",
            b"\xff",
            b"99999999999999999999",
        ] {
            assert_eq!(decode_sent_ms(value), None, "{value:?}");
        }
    }
}
