//! JSON decoding that says where it failed.

use serde::Deserialize;

use crate::drift::Drift;
use crate::Error;

/// Deserializes `bytes`; on failure, re-reads them with path tracking so the error names the
/// JSON path (`parcel.status.id`) as well as the reason. The fast path pays nothing for this.
///
/// # Errors
/// [`ErrorKind::Payload`](crate::ErrorKind::Payload) with the path where decoding stopped.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Body { parcel: Parcel }
/// #[derive(serde::Deserialize)]
/// struct Parcel { id: u64 }
///
/// let err = shipfeed_core::json::decode::<Body>(br#"{"parcel": {"id": "x"}}"#).err().unwrap();
/// assert_eq!(err.path(), Some("parcel.id"));
/// ```
pub fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, Error> {
    from_bytes(bytes).map_err(|first| {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Err(tracked) => {
                let path = tracked.path().to_string();
                Error::payload(tracked.into_inner().to_string()).with_path(path)
            }
            // Unreachable in practice (same input, same decoder); keep the first error.
            Ok(_) => Error::payload(first.to_string()),
        }
    })
}

/// [`decode`], noting in `drift` (when given) every JSON field that `T` does not read, by
/// its path.
///
/// # Errors
/// As [`decode`].
pub fn decode_noting<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    drift: Option<&mut Drift>,
) -> Result<T, Error> {
    // On failure, decode again for the error's path.
    from_bytes_noting(bytes, drift).or_else(|_| decode(bytes))
}

/// [`from_bytes`], noting in `drift` (when given) every JSON field that `T` does not read, by
/// its path. Nothing is noted when decoding fails, so a caller may try another type.
///
/// # Errors
/// As [`from_bytes`].
pub fn from_bytes_noting<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    drift: Option<&mut Drift>,
) -> serde_json::Result<T> {
    let Some(drift) = drift else {
        return from_bytes(bytes);
    };
    let mut noted = drift.empty_like();
    let value = match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_ignored::deserialize(&mut de, |path| noted.unknown_field(&path))
                .and_then(|value| de.end().map(|()| value))
        }
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            serde_ignored::deserialize(&mut de, |path| noted.unknown_field(&path))
                .and_then(|value| de.end().map(|()| value))
        }
    }?;
    drift.merge(noted);
    Ok(value)
}

/// `serde_json::from_slice`, faster: one UTF-8 check of the whole body costs less than the
/// check `from_slice` makes of every borrowed string. An invalid body goes to `from_slice`,
/// which says where it is invalid. No path in the error: see [`decode`] for that.
///
/// # Errors
/// The `serde_json` error when `bytes` is not JSON of type `T`.
///
/// ```
/// let pair: (u8, &str) = shipfeed_core::json::from_bytes(br#"[1, "a"]"#).unwrap();
/// assert_eq!(pair, (1, "a"));
/// assert!(shipfeed_core::json::from_bytes::<(u8, &str)>(b"[1, \"\xff\"]").is_err());
/// ```
pub fn from_bytes<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// A JSON value read as text whether the provider sent a string, a number or a boolean
/// (ids and order numbers arrive both ways). Borrows from the input when it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub std::borrow::Cow<'a, str>);

impl<'a> Text<'a> {
    /// The text, trimmed; `None` when blank.
    pub fn non_blank(&self) -> Option<&str> {
        Some(self.0.trim()).filter(|s| !s.is_empty())
    }

    /// The trimmed text as an owned `String`; `None` when blank.
    pub fn to_non_blank(&self) -> Option<String> {
        self.non_blank().map(str::to_owned)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> serde::de::Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Owned(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Borrowed(if v {
                    "true"
                } else {
                    "false"
                })))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

/// A point in time as providers send it: a unix number (seconds or milliseconds, integer or
/// fractional), a numeric string, or date-time text. Resolve it with [`TimeValue::resolve`].
#[derive(Debug, Clone, PartialEq)]
pub enum TimeValue<'a> {
    /// A unix timestamp, seconds or milliseconds.
    Unix(f64),
    /// Date-time text (RFC 3339, or a naive form read in a configured zone).
    Text(std::borrow::Cow<'a, str>),
}

impl TimeValue<'_> {
    /// The instant, reading naive text in `zone`; `None` when it is not a time.
    pub fn resolve(&self, zone: chrono_tz::Tz) -> Option<crate::time::Instant> {
        match self {
            TimeValue::Unix(n) => {
                crate::time::from_unix_auto_f64(*n).map(crate::time::Instant::known)
            }
            TimeValue::Text(text) => match text.trim().parse::<f64>() {
                Ok(n) => crate::time::from_unix_auto_f64(n).map(crate::time::Instant::known),
                Err(_) => crate::time::parse_datetime(text, zone),
            },
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for TimeValue<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimeVisitor;
        impl<'de> serde::de::Visitor<'de> for TimeVisitor {
            type Value = TimeValue<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a unix timestamp or a date-time string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TimeValue::Text(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TimeValue::Text(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(TimeValue::Unix(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(TimeValue::Unix(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(TimeValue::Unix(v))
            }
        }
        deserializer.deserialize_any(TimeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_accepts_strings_numbers_and_booleans() {
        let v: Vec<Text<'_>> = serde_json::from_str(r#"["a", 12, 1.5, true, " "]"#).unwrap();
        let texts: Vec<_> = v.iter().map(|t| t.non_blank()).collect();
        assert_eq!(
            texts,
            [Some("a"), Some("12"), Some("1.5"), Some("true"), None]
        );
        assert!(serde_json::from_str::<Text<'_>>("{}").is_err());
    }

    #[test]
    fn time_value_resolves_numbers_numeric_strings_and_text() {
        let v: Vec<TimeValue<'_>> = serde_json::from_str(
            r#"[1712163088943, 1712163088, "1712163088", "2024-04-03T16:51:28Z"]"#,
        )
        .unwrap();
        let at: Vec<_> = v
            .iter()
            .map(|t| t.resolve(chrono_tz::UTC).map(|i| i.at.timestamp()))
            .collect();
        assert!(at.iter().all(|t| *t == Some(1_712_163_088)), "{at:?}");
        let bad: TimeValue<'_> = serde_json::from_str(r#""soon""#).unwrap();
        assert_eq!(bad.resolve(chrono_tz::UTC), None);
    }
}
