//! Timestamps and ids: microsecond UTC time, its RFC 3339 text, UUID v7.

use chrono::{DateTime, Datelike, SubsecRound, Timelike, Utc};
use uuid::{NoContext, Timestamp, Uuid};

/// `now` cut to the microsecond, the precision every backend keeps.
pub(crate) fn truncate_to_micros(now: DateTime<Utc>) -> DateTime<Utc> {
    now.trunc_subsecs(6)
}

/// A UUID v7 for a record made at `at`: 48 bits of milliseconds, then
/// randomness from a thread-local generator (no lock shared between threads,
/// no system call).
pub(crate) fn uuid_v7(at: DateTime<Utc>) -> Uuid {
    let secs = u64::try_from(at.timestamp()).unwrap_or(0);
    Uuid::new_v7(Timestamp::from_unix(NoContext, secs, at.timestamp_subsec_nanos()))
}

/// Length of `2026-11-27T10:00:00.000000Z`.
pub(crate) const RFC3339_MICROS_LEN: usize = 27;

/// Formats `ts` as RFC 3339 in UTC with six fractional digits and `Z`.
///
/// Written by hand: it runs once per record per sink, and chrono's general
/// formatter costs several times more.
pub(crate) fn format_rfc3339_micros(ts: DateTime<Utc>) -> [u8; RFC3339_MICROS_LEN] {
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

/// Parses an RFC 3339 timestamp with any offset into UTC microseconds.
pub(crate) fn parse_rfc3339(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| truncate_to_micros(t.with_timezone(&Utc)))
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
        let text = format_rfc3339_micros(ts);
        assert_eq!(std::str::from_utf8(&text).unwrap(), "2026-01-02T03:04:05.060007Z");
    }

    #[test]
    fn uuid_is_v7_and_carries_the_millisecond() {
        let ts = Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap();
        let id = uuid_v7(ts);
        assert_eq!(id.get_version_num(), 7);
        let (secs, _) = id.get_timestamp().unwrap().to_unix();
        assert_eq!(secs as i64, ts.timestamp());
    }

    proptest! {
        #[test]
        fn format_matches_chrono_and_parses_back(micros in 0i64..253_402_300_799_999_999) {
            let ts = DateTime::from_timestamp_micros(micros).unwrap();
            let text = format_rfc3339_micros(ts);
            let text = std::str::from_utf8(&text).unwrap();
            prop_assert_eq!(text, ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            prop_assert_eq!(parse_rfc3339(text), Some(ts));
        }
    }
}
