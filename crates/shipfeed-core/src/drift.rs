//! Contract drift: what an adapter met in a delivery and does not know.
//!
//! Providers change their payloads without notice. An adapter tolerates what it does not
//! know (an unknown status code maps to `unknown.unmapped`, an unknown message type becomes a
//! [`Notice`](crate::Notice) of kind [`Other`](crate::NoticeKind::Other), an unknown field is
//! skipped), and notes it in a [`Drift`] so the service can say what changed, per provider.
//!
//! ```
//! use shipfeed_core::drift::{Drift, DriftKind};
//! use shipfeed_core::{json, Provider};
//!
//! #[derive(serde::Deserialize)]
//! struct Body { id: u32 }
//!
//! let mut drift = Drift::new(Provider::Sendcloud);
//! let body: Body = json::decode_noting(br#"{"id": 1, "extra": {"deep": true}}"#, Some(&mut drift)).unwrap();
//! assert_eq!(body.id, 1);
//! let seen: Vec<_> = drift.observations().iter().map(|o| (o.kind, o.key.as_str())).collect();
//! assert_eq!(seen, [(DriftKind::UnknownField, "extra")]);
//! ```

use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Output, Provider, TrackingEvent};

/// What kind of thing an adapter met and does not know.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// A status code no mapping knows (the key is the raw code, or the raw message without one).
    UnknownStatus,
    /// A message type no mapping knows: the delivery became a notice of kind `other` (the key
    /// is the provider's name for the type).
    UnknownMessageType,
    /// A JSON field the adapter does not read (the key is its path, array positions as `[]`).
    UnknownField,
    /// A value of another type than documented, which the adapter tolerated (the key is the
    /// path and the type met, `parcel.is_return: string`).
    UnexpectedType,
}

impl DriftKind {
    /// Every kind.
    pub const ALL: [DriftKind; 4] = [
        DriftKind::UnknownStatus,
        DriftKind::UnknownMessageType,
        DriftKind::UnknownField,
        DriftKind::UnexpectedType,
    ];

    /// The kind's name as it is serialized (`unknown_field`).
    pub const fn as_str(self) -> &'static str {
        match self {
            DriftKind::UnknownStatus => "unknown_status",
            DriftKind::UnknownMessageType => "unknown_message_type",
            DriftKind::UnknownField => "unknown_field",
            DriftKind::UnexpectedType => "unexpected_type",
        }
    }
}

impl std::fmt::Display for DriftKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DriftKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DriftKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| format!("unknown drift kind `{s}`"))
    }
}

/// One thing an adapter met and does not know.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Observation {
    /// What kind of thing.
    pub kind: DriftKind,
    /// Which one: a code, a message type, a JSON path (at most [`MAX_KEY_LEN`] bytes).
    pub key: String,
}

/// The longest key kept, in bytes; longer ones are cut (at a character boundary).
pub const MAX_KEY_LEN: usize = 200;

/// The most distinct observations kept for one delivery; more are only counted
/// ([`Drift::dropped`]), so a body with thousands of unknown keys costs no more memory.
pub const MAX_PER_DELIVERY: usize = 64;

/// What one delivery's adapter met and does not know: distinct observations, in the order
/// first met, at most [`MAX_PER_DELIVERY`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    provider: Provider,
    documented: &'static [&'static str],
    observations: Vec<Observation>,
    dropped: u64,
}

impl Drift {
    /// Nothing noted yet, for a delivery of `provider`.
    pub fn new(provider: Provider) -> Self {
        Drift {
            provider,
            documented: &[],
            observations: Vec::new(),
            dropped: 0,
        }
    }

    /// Says which JSON paths the provider documents and the adapter does not read (it needs
    /// none of them): those are not drift. An entry covers every path under it (`parcel.address`
    /// covers `parcel.address.city`); array positions are written `[]`.
    pub fn documented(&mut self, paths: &'static [&'static str]) {
        self.documented = paths;
    }

    /// Nothing noted, for the same provider and documented paths.
    pub(crate) fn empty_like(&self) -> Self {
        Drift {
            documented: self.documented,
            ..Drift::new(self.provider)
        }
    }

    /// The provider whose delivery this is.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The distinct observations, in the order first met.
    pub fn observations(&self) -> &[Observation] {
        &self.observations
    }

    /// How many distinct observations past [`MAX_PER_DELIVERY`] were not kept.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether nothing was noted.
    pub fn is_empty(&self) -> bool {
        self.observations.is_empty() && self.dropped == 0
    }

    /// Notes one observation (once: a repeat within the delivery is ignored).
    pub fn note(&mut self, kind: DriftKind, key: &str) {
        // NUL cannot be stored in PostgreSQL text; replaced here, a key compares the same
        // before and after it is stored.
        let key = key.replace('\0', "\u{FFFD}");
        let key = truncate(&key);
        if self
            .observations
            .iter()
            .any(|seen| seen.kind == kind && seen.key == key)
        {
            return;
        }
        if self.observations.len() >= MAX_PER_DELIVERY {
            self.dropped += 1;
            return;
        }
        self.observations.push(Observation {
            kind,
            key: key.to_owned(),
        });
    }

    /// Notes everything `other` noted, after what this one did.
    pub fn merge(&mut self, other: Drift) {
        for observation in other.observations {
            self.note(observation.kind, &observation.key);
        }
        self.dropped += other.dropped;
    }

    /// Notes a value of an unexpected type at `path` that the adapter tolerated.
    pub fn unexpected_type(&mut self, path: &str, value: &serde_json::Value) {
        let found = match value {
            serde_json::Value::Null => "null",
            serde_json::Value::Bool(_) => "boolean",
            serde_json::Value::Number(_) => "number",
            serde_json::Value::String(_) => "string",
            serde_json::Value::Array(_) => "array",
            serde_json::Value::Object(_) => "object",
        };
        self.note(DriftKind::UnexpectedType, &format!("{path}: {found}"));
    }

    /// Notes a JSON field the decoder skipped, by its path.
    pub fn unknown_field(&mut self, path: &serde_ignored::Path<'_>) {
        let mut text = String::new();
        write_path(&mut text, path);
        let covered = self.documented.iter().any(|documented| {
            text.strip_prefix(documented)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        });
        if !covered {
            self.note(DriftKind::UnknownField, &text);
        }
    }

    /// Notes what the outputs show the adapter did not know: the message types that became
    /// notices of kind [`Other`](crate::NoticeKind::Other). Unknown status codes are noted
    /// per event by the store ([`unknown_status`]), which knows which events are new.
    pub fn outputs(&mut self, outputs: &[Output]) {
        for output in outputs {
            if let Output::Notice(notice) = output {
                if notice.kind == crate::NoticeKind::Other {
                    self.note(DriftKind::UnknownMessageType, &notice.raw_type);
                }
            }
        }
    }
}

/// Normalizes `delivery` with `adapter` ([`Adapter::parse_noting`](crate::Adapter::parse_noting)),
/// and notes the message types its outputs show the adapter did not know: everything a
/// delivery tells of drift except unknown status codes ([`unknown_status`]).
///
/// # Errors
/// The adapter's, as [`Adapter::parse`](crate::Adapter::parse); the drift noted until the error
/// is returned all the same.
pub fn observe(
    adapter: &(impl crate::Adapter + ?Sized),
    delivery: &crate::RawDelivery,
) -> (Result<Vec<Output>, crate::Error>, Drift) {
    let mut drift = Drift::new(adapter.provider());
    let outcome = adapter.parse_noting(delivery, &mut drift);
    if let Ok(outputs) = &outcome {
        drift.outputs(outputs);
    }
    (outcome, drift)
}

/// The unknown status code an event carries, if its status is unmapped: the raw code, or the
/// raw message when there is no code (`None` when there is neither).
pub fn unknown_status(event: &TrackingEvent) -> Option<&str> {
    if !event.is_unmapped() {
        return None;
    }
    event
        .raw
        .code
        .as_deref()
        .or(event.raw.message.as_deref())
        .filter(|code| !code.trim().is_empty())
}

/// Cuts `key` to at most [`MAX_KEY_LEN`] bytes at a character boundary.
fn truncate(key: &str) -> &str {
    if key.len() <= MAX_KEY_LEN {
        return key;
    }
    let mut end = MAX_KEY_LEN;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

/// Writes `path` as `a.b[].c`: positions in arrays are left out, so that one field of every
/// element is one path, not one per element.
fn write_path(out: &mut String, path: &serde_ignored::Path<'_>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, .. } => {
            write_path(out, parent);
            out.push_str("[]");
        }
        Path::Map { parent, key } => {
            write_path(out, parent);
            if !out.is_empty() {
                out.push('.');
            }
            let _ = write!(out, "{key}");
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => write_path(out, parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc_support::event;
    use crate::{Notice, NoticeKind, Status};

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)] // read only by serde
    struct Body {
        a: u8,
        items: Vec<Item>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        id: u8,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        b: u8,
    }

    fn fields(json: &str) -> Vec<String> {
        let mut drift = Drift::new(Provider::Shipup);
        crate::json::decode_noting::<Body>(json.as_bytes(), Some(&mut drift)).unwrap();
        drift.observations().iter().map(|o| o.key.clone()).collect()
    }

    #[test]
    fn unknown_fields_are_noted_by_path_once_per_delivery() {
        assert_eq!(
            fields(
                r#"{"a": 1, "new": 2, "items": [{"id": 1, "x": 1}, {"id": 2, "x": 2}],
                    "inner": {"b": 1, "c": {"d": 1}}}"#
            ),
            ["new", "items[].x", "inner.c"]
        );
        assert!(fields(r#"{"a": 1, "items": [], "inner": null}"#).is_empty());
    }

    #[test]
    fn nothing_is_noted_when_decoding_fails() {
        let mut drift = Drift::new(Provider::Shipup);
        let bad = br#"{"new": 1, "a": "not a number", "items": []}"#;
        assert!(crate::json::from_bytes_noting::<Body>(bad, Some(&mut drift)).is_err());
        assert!(drift.is_empty());
    }

    #[test]
    fn documented_paths_and_what_is_under_them_are_not_drift() {
        let mut drift = Drift::new(Provider::Shipup);
        drift.documented(&["new", "inner.c"]);
        let body = br#"{"a": 1, "new": {"x": 1}, "newer": 1, "items": [],
                        "inner": {"b": 1, "c": {"d": 1}, "cc": 1}}"#;
        crate::json::decode_noting::<Body>(body, Some(&mut drift)).unwrap();
        let keys: Vec<_> = drift
            .observations()
            .iter()
            .map(|o| o.key.as_str())
            .collect();
        assert_eq!(keys, ["newer", "inner.cc"]);
    }

    #[test]
    fn observations_past_the_cap_are_counted_not_kept() {
        let mut drift = Drift::new(Provider::Sendcloud);
        for i in 0..MAX_PER_DELIVERY + 5 {
            drift.note(DriftKind::UnknownField, &format!("f{i}"));
            drift.note(DriftKind::UnknownField, "f0");
        }
        assert_eq!(drift.observations().len(), MAX_PER_DELIVERY);
        assert_eq!(drift.dropped(), 5);
    }

    #[test]
    fn long_keys_are_cut_at_a_character_boundary() {
        let mut drift = Drift::new(Provider::Sendcloud);
        drift.note(DriftKind::UnknownField, &"é".repeat(150));
        assert!(drift.observations()[0].key.len() <= MAX_KEY_LEN);
        assert!(drift.observations()[0].key.starts_with('é'));
    }

    #[test]
    fn other_notices_are_unknown_message_types_and_unmapped_events_unknown_codes() {
        let mut drift = Drift::new(Provider::Sendcloud);
        let at = chrono::DateTime::default();
        drift.outputs(&[
            Output::Notice(Notice::new(
                Provider::Sendcloud,
                NoticeKind::Other,
                "brand_new",
                at,
            )),
            Output::Notice(Notice::new(
                Provider::Sendcloud,
                NoticeKind::Ping,
                "ping",
                at,
            )),
        ]);
        assert_eq!(
            drift.observations(),
            [Observation {
                kind: DriftKind::UnknownMessageType,
                key: "brand_new".into()
            }]
        );
        let mut unmapped = event("e", "2024-01-01T00:00:00Z", Status::Unknown);
        unmapped.substatus = Some(crate::UNMAPPED.into());
        unmapped.raw.code = Some("77".into());
        assert_eq!(unknown_status(&unmapped), Some("77"));
        let known = event("e", "2024-01-01T00:00:00Z", Status::Delivered);
        assert_eq!(unknown_status(&known), None);
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in DriftKind::ALL {
            assert_eq!(kind.as_str().parse::<DriftKind>(), Ok(kind));
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.as_str())
            );
        }
        assert!("nope".parse::<DriftKind>().is_err());
    }
}
