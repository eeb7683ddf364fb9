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
