//! Timestamps and ids: microsecond UTC time, its RFC 3339 text, UUID v7.
//!
//! Records keep their time as microseconds since the Unix epoch: reading
//! the clock and stamping a record then costs no calendar arithmetic on the
//! emitting thread; the calendar is worked out when the record is written.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, Timelike, Utc};
use uuid::{Timestamp, Uuid};

/// The current time in microseconds, and a UUID v7 of that time.
pub(crate) fn now() -> (i64, Uuid) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let micros = i64::try_from(since.as_micros()).unwrap_or(i64::MAX);
    (micros, uuid_v7(since.as_secs(), since.subsec_nanos()))
}

/// A UUID v7: 48 bits of milliseconds, then 12 bits of sub-millisecond
/// time (RFC 9562, section 6.2, method 3) so that ids sort by time to
/// about a quarter of a microsecond, then randomness from a thread-local
/// generator (no lock shared between threads, no system call).
fn uuid_v7(secs: u64, nanos: u32) -> Uuid {
    const FRACTION_BITS: u8 = 12;
    let fraction = u128::from(nanos % 1_000_000) * (1 << FRACTION_BITS) / 1_000_000;
    let ts = Timestamp::from_unix_time(secs, nanos, fraction, FRACTION_BITS);
    Uuid::new_v7(ts)
}

/// The UTC time of `micros` (the epoch for values chrono cannot represent,
/// which no record is made with).
pub(crate) fn datetime(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// Length of `2026-11-27T10:00:00.000000Z`.
pub(crate) const RFC3339_MICROS_LEN: usize = 27;

/// Formats `micros` as RFC 3339 in UTC with six fractional digits and `Z`.
///
/// Written by hand: it runs once per record per sink, and chrono's general
/// formatter costs several times more.
pub(crate) fn format_rfc3339_micros(micros: i64) -> [u8; RFC3339_MICROS_LEN] {
    let ts = datetime(micros);
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let year = ts.year().clamp(0, 9999) as u32;
    put(&mut out[0..4], year);
    put(&mut out[5..7], ts.month());
    put(&mut out[8..10], ts.day());
    put(&mut out[11..13], ts.hour());
    put(&mut out[14..16], ts.minute());
    put(&mut out[17..19], ts.second().min(59));
    put(&mut out[20..26], ts.timestamp_subsec_micros().min(999_999));
    out
}

/// Writes `n` right-aligned as decimal digits into `buf`, zero-padded.
fn put(buf: &mut [u8], mut n: u32) {
    for byte in buf.iter_mut().rev() {
        *byte = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Parses an RFC 3339 timestamp with any offset into UTC microseconds: the
/// one parser of timestamps for records read back, the API's `from`/`to`
/// and the CLI's `--from`/`--to`. Digits past the microsecond are cut, as
/// the stored form keeps microseconds.
pub(crate) fn parse_rfc3339(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[test]
    fn formats_with_micros_and_z() {
        let ts = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
            + chrono::Duration::microseconds(60_007);
        let text = format_rfc3339_micros(ts.timestamp_micros());
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            "2026-01-02T03:04:05.060007Z"
        );
    }

    #[test]
    fn now_is_v7_and_carries_the_millisecond() {
        let (micros, id) = now();
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        let id_millis = secs as i64 * 1000 + i64::from(nanos) / 1_000_000;
        assert_eq!(id_millis, micros / 1000);
    }

    #[test]
    fn ids_sort_by_time_within_a_millisecond() {
        let ids: Vec<Uuid> = (0..1000u32)
            .map(|n| uuid_v7(1_800_000_000, n * 997))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
    }

    #[test]
    fn parses_offsets_edges_and_refuses_the_rest() {
        let ok = [
            ("1970-01-01T00:00:00Z", 0),
            ("1970-01-01T01:00:00+01:00", 0),
            ("1969-12-31T23:59:59.999999Z", -1),
            ("1970-01-01t00:00:00.0000019z", 1),
            ("0000-01-01T00:00:00Z", -62_167_219_200_000_000),
            ("9999-12-31T23:59:59.999999Z", 253_402_300_799_999_999),
        ];
        for (text, micros) in ok {
            assert_eq!(parse_rfc3339(text), Some(micros), "{text}");
        }
        let mega = format!("2026-01-01T00:00:00.{}Z", "1".repeat(1 << 20));
        let bad = [
            "",
            "yesterday",
            "2026-01-01",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00Z\0",
            "\u{0}2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00+24:00",
            "+2026-01-01T00:00:00Z",
            "10000-01-01T00:00:00Z",
        ];
        for text in bad {
            assert_eq!(parse_rfc3339(text), None, "{text:?}");
        }
        // Long fractions are cut to microseconds, not refused.
        assert_eq!(parse_rfc3339(&mega), Some(1_767_225_600_111_111));
    }

    proptest! {
        #[test]
        fn format_matches_chrono_and_parses_back(micros in 0i64..253_402_300_799_999_999) {
            let ts = DateTime::from_timestamp_micros(micros).unwrap();
            let text = format_rfc3339_micros(micros);
            let text = std::str::from_utf8(&text).unwrap();
            prop_assert_eq!(text, ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            prop_assert_eq!(parse_rfc3339(text), Some(micros));
        }
    }
}
