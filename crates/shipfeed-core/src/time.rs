//! Timestamp parsing every adapter needs: unix seconds or milliseconds, ISO 8601 with or without
//! an offset, and naive local formats interpreted in a configurable zone.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Unix values at or above this are milliseconds: as seconds it would be the year 5138.
const MILLIS_THRESHOLD: i64 = 100_000_000_000;

/// An instant and whether the source stated its zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant {
    /// The instant in UTC.
    pub at: DateTime<Utc>,
    /// `false` when the source gave a local time and a configured zone was assumed.
    pub zone_known: bool,
}

impl Instant {
    /// An instant whose zone the source stated.
    pub fn known(at: DateTime<Utc>) -> Self {
        Instant {
            at,
            zone_known: true,
        }
    }
}

/// Interprets a unix timestamp given in seconds or in milliseconds.
///
/// ```
/// use shipfeed_core::time::from_unix_auto;
/// let ms = from_unix_auto(1_712_163_088_943).unwrap();
/// let s = from_unix_auto(1_712_163_088).unwrap();
/// assert_eq!(ms.to_rfc3339(), "2024-04-03T16:51:28.943+00:00");
/// assert_eq!(s.to_rfc3339(), "2024-04-03T16:51:28+00:00");
/// ```
pub fn from_unix_auto(value: i64) -> Option<DateTime<Utc>> {
    if value.abs() >= MILLIS_THRESHOLD {
        DateTime::from_timestamp_millis(value)
    } else {
        DateTime::from_timestamp(value, 0)
    }
}

/// Like [`from_unix_auto`] for JSON numbers that may carry a fraction (`1525271885.993`).
pub fn from_unix_auto_f64(value: f64) -> Option<DateTime<Utc>> {
    if !value.is_finite() {
        return None;
    }
    let millis = if value.abs() >= MILLIS_THRESHOLD as f64 {
        value
    } else {
        value * 1000.0
    };
    if millis.abs() > 8.0e15 {
        return None;
    }
    DateTime::from_timestamp_millis(millis.round() as i64)
}

/// Naive forms seen in provider payloads, tried in order after RFC 3339 fails.
const NAIVE_FORMATS: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%d-%m-%Y %H:%M:%S",
    "%d.%m.%Y %H:%M:%S",
    "%Y-%m-%dT%H:%M",
];

/// Parses ISO 8601 / RFC 3339 text, or one of the naive day-first or ISO forms providers use
/// (`03-04-2024 16:51:28`, `06.08.2017 12:01:08`, `2019-02-03T06:48:07`), reading naive times
/// in `zone`.
///
/// ```
/// use shipfeed_core::time::parse_datetime;
/// let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
/// let t = parse_datetime("06.08.2017 12:01:08", berlin).unwrap();
/// assert_eq!(t.at.to_rfc3339(), "2017-08-06T10:01:08+00:00");
/// assert!(!t.zone_known);
/// let t = parse_datetime("2024-03-16T06:00:00.000Z", berlin).unwrap();
/// assert!(t.zone_known);
/// ```
pub fn parse_datetime(text: &str, zone: Tz) -> Option<Instant> {
    let text = text.trim();
    // The day-first forms (Seven Senders, Sendcloud) are read directly: the format-string
    // parsers below re-read their pattern on every call, which dominated normalizing a Seven
    // Senders message. Same result; anything else (or an invalid date) takes the general path.
    if let Some(naive) = day_first(text) {
        if let Some(at) = in_zone(naive, zone) {
            return Some(Instant {
                at,
                zone_known: false,
            });
        }
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(Instant::known(at.with_timezone(&Utc)));
    }
    // "+0000" offsets without a colon (Seven Senders' REST API style).
    if let Ok(at) = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(Instant::known(at.with_timezone(&Utc)));
    }
    NAIVE_FORMATS
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .and_then(|naive| in_zone(naive, zone))
        .map(|at| Instant {
            at,
            zone_known: false,
        })
}

/// `DD.MM.YYYY HH:MM:SS` or `DD-MM-YYYY HH:MM:SS` exactly, as `%d.%m.%Y %H:%M:%S` and
/// `%d-%m-%Y %H:%M:%S` read them; `None` for any other text or an impossible date or time.
fn day_first(text: &str) -> Option<NaiveDateTime> {
    let b = text.as_bytes();
    if b.len() != 19 || !matches!(b[2], b'.' | b'-') || b[5] != b[2] {
        return None;
    }
    if b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0_u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(number(6..10)?).ok()?,
        number(3..5)?,
        number(0..2)?,
    )?;
    date.and_hms_opt(number(11..13)?, number(14..16)?, number(17..19)?)
}

/// Reads a naive local time in `zone`. An ambiguous time (autumn DST fold) takes the earlier
/// instant; a time inside the spring gap is moved forward by the gap, as clocks do.
pub fn in_zone(naive: NaiveDateTime, zone: Tz) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => Some(at.with_timezone(&Utc)),
        LocalResult::None => zone
            .from_local_datetime(&(naive + chrono::Duration::hours(1)))
            .earliest()
            .map(|at| at.with_timezone(&Utc)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_first_fast_path_agrees_with_the_formats() {
        for text in [
            "03.04.2024 20:22:30",
            "03-04-2024 09:12:44",
            "29.02.2024 00:00:00",
            "31.12.1999 23:59:59",
        ] {
            let format = if text.as_bytes()[2] == b'.' {
                "%d.%m.%Y %H:%M:%S"
            } else {
                "%d-%m-%Y %H:%M:%S"
            };
            assert_eq!(
                day_first(text),
                NaiveDateTime::parse_from_str(text, format).ok(),
                "{text}"
            );
        }
        for text in [
            "31.02.2024 10:00:00",
            "03.04.2024 24:00:00",
            "03.04-2024 10:00:00",
            "3.04.2024 10:00:000",
            "03.04.2024T20:22:30",
            "aa.bb.cccc dd:ee:ff",
        ] {
            assert_eq!(day_first(text), None, "{text}");
        }
        // Leap seconds and impossible dates still go through the general path.
        let berlin: Tz = "Europe/Berlin".parse().unwrap_or(chrono_tz::UTC);
        assert_eq!(parse_datetime("31.02.2024 10:00:00", berlin), None);
    }

    #[test]
    fn seconds_and_millis_agree() {
        assert_eq!(
            from_unix_auto(1_525_271_885),
            from_unix_auto(1_525_271_885_000)
        );
        assert_eq!(
            from_unix_auto_f64(1_525_271_885.5),
            from_unix_auto(1_525_271_885_500)
        );
        assert_eq!(from_unix_auto_f64(f64::NAN), None);
        assert_eq!(from_unix_auto_f64(1e300), None);
    }

    #[test]
    fn naive_forms_take_the_zone_and_say_so() {
        let utc = chrono_tz::UTC;
        let t = parse_datetime("03-04-2024 16:51:28", utc).unwrap();
        assert_eq!(t.at.to_rfc3339(), "2024-04-03T16:51:28+00:00");
        assert!(!t.zone_known);
        let t = parse_datetime("2019-02-03T06:48:07", utc).unwrap();
        assert_eq!(t.at.to_rfc3339(), "2019-02-03T06:48:07+00:00");
        let t = parse_datetime("2017-11-21T19:40:36+0000", utc).unwrap();
        assert!(t.zone_known);
        assert_eq!(parse_datetime("yesterday", utc), None);
    }

    #[test]
    fn dst_gap_and_fold_are_resolved_without_failing() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 02:30 does not exist on 2024-03-31 in Berlin; clocks jump to 03:30 CEST = 01:30 UTC.
        let gap = parse_datetime("31.03.2024 02:30:00", berlin).unwrap();
        assert_eq!(gap.at.to_rfc3339(), "2024-03-31T01:30:00+00:00");
        // 02:30 happens twice on 2024-10-27; the earlier one is 00:30 UTC.
        let fold = parse_datetime("27.10.2024 02:30:00", berlin).unwrap();
        assert_eq!(fold.at.to_rfc3339(), "2024-10-27T00:30:00+00:00");
    }
}
