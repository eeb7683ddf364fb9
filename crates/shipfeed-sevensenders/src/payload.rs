//! Private serde types for the Seven Senders SQS message body.
//!
//! Tolerant by design: the structure of `events[]` and `tickets[]` entries is not documented,
//! so every field is optional, unknown fields are ignored, strings and numbers are both
//! accepted where an identifier or a name is expected, and strings are borrowed from the body
//! whenever they contain no escapes (core's [`Text`]).

use serde::Deserialize;
pub(crate) use shipfeed_core::json::Text;

/// One SQS message body. Every field is optional at this level; the adapter decides what a
/// usable message needs and reports the JSON path of what is missing.
#[derive(Debug, Deserialize)]
pub(crate) struct Message<'a> {
    /// Seven Senders shipment id, `"s"` + number.
    #[serde(default, borrow)]
    pub(crate) id: Option<Text<'a>>,
    /// The merchant's order reference.
    #[serde(default, borrow)]
    pub(crate) order_id: Option<Text<'a>>,
    /// The carrier's tracking number.
    #[serde(default, borrow)]
    pub(crate) tracking_code: Option<Text<'a>>,
    /// Carrier slug (`dhl`, `bpost`, `postat`, ...).
    #[serde(default, borrow)]
    pub(crate) carrier: Option<Text<'a>>,
    /// Lowercase ISO-2 country where the carrier took the parcel over.
    #[serde(default, borrow)]
    pub(crate) carrier_country: Option<Text<'a>>,
    /// Title-case status, or blank/null/absent for a message without a status change.
    #[serde(default, borrow)]
    pub(crate) status: Option<Text<'a>>,
    /// `dd.MM.yyyy HH:mm:ss`, no zone.
    #[serde(default, borrow)]
    pub(crate) status_time: Option<Text<'a>>,
    /// Events related to this milestone.
    #[serde(default, borrow)]
    pub(crate) events: Option<Vec<Option<Entry<'a>>>>,
    /// Deprecated predecessor of `events`.
    #[serde(default, borrow)]
    pub(crate) tickets: Option<Vec<Option<Entry<'a>>>>,
}

/// One `events[]` or `tickets[]` entry: an object, or (tolerated) a bare name.
#[derive(Debug)]
pub(crate) enum Entry<'a> {
    /// The documented object form.
    Fields(EntryFields<'a>),
    /// A bare name such as `"Delayed"`.
    Name(Text<'a>),
}

/// Read in one pass (object or bare name), not as an untagged enum: serde buffers an untagged
/// enum's input before trying each variant, a visible cost with several entries per message.
impl<'de: 'a, 'a> Deserialize<'de> for Entry<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use std::borrow::Cow;

        struct EntryVisitor;
        impl<'de> serde::de::Visitor<'de> for EntryVisitor {
            type Value = Entry<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event object or a bare event name")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                EntryFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Entry::Fields)
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Entry::Name(Text(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Entry::Name(Text(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Entry::Name(Text(Cow::Owned(v))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Entry::Name(Text(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Entry::Name(Text(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Entry::Name(Text(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Entry::Name(Text(Cow::Borrowed(if v {
                    "true"
                } else {
                    "false"
                }))))
            }
        }
        deserializer.deserialize_any(EntryVisitor)
    }
}

/// The fields of an entry, in the SQS spelling (`name`, `creation_time`) or the REST
/// shipment-events spelling (`event`, `description`, `creationDate`). A ticket's `id` is
/// ignored: the canonical event has no field for it (see `docs.md`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct EntryFields<'a> {
    /// SQS spelling of the event name.
    #[serde(default, borrow)]
    pub(crate) name: Option<Text<'a>>,
    /// REST spelling of the event name.
    #[serde(default, borrow)]
    pub(crate) event: Option<Text<'a>>,
    /// Human description (REST spelling).
    #[serde(default, borrow)]
    pub(crate) description: Option<Text<'a>>,
    /// SQS spelling of the time, `dd.MM.yyyy HH:mm:ss`.
    #[serde(default, borrow)]
    pub(crate) creation_time: Option<Text<'a>>,
    /// REST spelling of the time, ISO 8601 with an offset.
    #[serde(default, borrow, rename = "creationDate")]
    pub(crate) creation_date: Option<Text<'a>>,
}

impl<'a> Entry<'a> {
    /// The entry as fields (a bare name becomes the name).
    pub(crate) fn into_fields(self) -> EntryFields<'a> {
        match self {
            Entry::Fields(fields) => fields,
            Entry::Name(name) => EntryFields {
                name: Some(name),
                ..EntryFields::default()
            },
        }
    }
}

impl EntryFields<'_> {
    /// The name, whichever spelling carries a non-blank one.
    pub(crate) fn name(&self) -> Option<&str> {
        first_non_blank(&[&self.name, &self.event])
    }

    /// The time text, whichever spelling carries a non-blank one, and that spelling's key.
    pub(crate) fn time(&self) -> Option<(&str, &'static str)> {
        if let Some(t) = self.creation_time.as_ref().and_then(Text::non_blank) {
            return Some((t, "creation_time"));
        }
        self.creation_date
            .as_ref()
            .and_then(Text::non_blank)
            .map(|t| (t, "creationDate"))
    }
}

/// The first field that holds non-blank text.
pub(crate) fn first_non_blank<'s>(fields: &[&'s Option<Text<'_>>]) -> Option<&'s str> {
    fields
        .iter()
        .find_map(|field| field.as_ref().and_then(Text::non_blank))
}

/// What the adapter does not read and is not drift: the entries of `events[]` and `tickets[]`,
/// whose structure Seven Senders does not document (see [`shipfeed_core::drift::Drift::documented`]).
pub(crate) const DOCUMENTED: &[&str] = &["events[]", "tickets[]"];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn text_borrows_plain_strings_and_accepts_numbers() {
        let m: Message<'_> =
            serde_json::from_str(r#"{"id": "s1", "order_id": 42, "status": null}"#).unwrap();
        assert!(matches!(m.id.unwrap().0, Cow::Borrowed("s1")));
        assert_eq!(m.order_id.unwrap().0, "42");
        assert!(m.status.is_none());
    }

    #[test]
    fn entries_accept_both_spellings_and_bare_names() {
        let m: Message<'_> = serde_json::from_str(
            r#"{"events": [
                {"event": "Delayed", "description": "late", "creationDate": "2017-11-21T19:40:36+0000"},
                "Carded",
                null,
                {"name": "X", "creation_time": "04.08.2017 10:01:09", "extra": [1, 2]}
            ]}"#,
        )
        .unwrap();
        let events: Vec<_> = m
            .events
            .unwrap()
            .into_iter()
            .flatten()
            .map(Entry::into_fields)
            .collect();
        assert_eq!(events[0].name(), Some("Delayed"));
        assert_eq!(
            events[0].time(),
            Some(("2017-11-21T19:40:36+0000", "creationDate"))
        );
        assert_eq!(events[1].name(), Some("Carded"));
        assert_eq!(events[1].time(), None);
        assert_eq!(
            events[2].time(),
            Some(("04.08.2017 10:01:09", "creation_time"))
        );
    }
}
