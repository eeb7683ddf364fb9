//! shipfeed adapter for Seven Senders shipment events, pulled from Seven Senders' SQS-compatible
//! queue.
//!
//! Each SQS message body is one JSON object: the shipment (`id`, `order_id`, `tracking_code`,
//! `carrier`, `carrier_country`), its current `status` with `status_time`, and lists of
//! `events` and (deprecated) `tickets`. [`SevenSendersAdapter`] turns one body into canonical
//! [`TrackingEvent`]s:
//!
//! - one event for the status (`status: None` when the status is blank, null or absent: an
//!   event without a status change);
//! - one event per `events[]` entry and per `tickets[]` entry (a ticket that repeats an event
//!   with the same name and time is not emitted twice).
//!
//! `status_time` carries no zone: it is read in the zone given to
//! [`SevenSendersAdapter::new`] (UTC by [`Default`]) and the events say
//! `time_zone_known: false`. There is no signature: [`Adapter::verify`] accepts
//! [`Credentials::None`], because authenticity comes from pulling the queue with your own API
//! key. Pulling the queue is the job of a transport such as `shipfeed-sqs`; the SQS
//! `MessageId`, passed as the `MessageId` header, becomes the events' `delivery_id`.
//!
//! ```
//! use shipfeed_core::{Adapter, Credentials, RawDelivery, Status};
//! use shipfeed_sevensenders::SevenSendersAdapter;
//!
//! let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
//! let adapter = SevenSendersAdapter::new(berlin);
//! let body = br#"{"id":"s272762270","order_id":"QA_LAPI_78bf63a","tracking_code":"323288888800000003354030",
//!   "carrier":"bpost","carrier_country":"be","status":"Pickup","status_time":"03.04.2020 20:22:30",
//!   "tickets":[],"events":[]}"#;
//! let received_at = chrono::DateTime::from_timestamp(1_585_944_000, 0).unwrap();
//! let delivery = RawDelivery::new(&body[..], received_at)
//!     .with_header("MessageId", "ebd0674d-9a68-4fe1-a38c-40d6d220d058");
//!
//! let outputs = adapter.construct(&delivery, &Credentials::None).unwrap();
//! let event = outputs[0].as_event().unwrap();
//! assert_eq!(event.status, Some(Status::InTransit));
//! assert_eq!(event.substatus.as_deref(), Some("in_transit.picked_up"));
//! assert_eq!(event.occurred_at.to_rfc3339(), "2020-04-03T18:22:30+00:00"); // CEST
//! assert!(!event.time_zone_known);
//! assert_eq!(event.shipment.carrier.as_deref(), Some("bpost"));
//! assert_eq!(event.location.as_ref().unwrap().country.as_deref(), Some("BE"));
//! assert_eq!(event.delivery_id.as_deref(), Some("ebd0674d-9a68-4fe1-a38c-40d6d220d058"));
//! ```
//!
//! The rest of this page is the adapter's `docs.md`: capabilities, mapping tables with their
//! sources, and quirks.
//!
#![doc = include_str!("docs.md")]
#![forbid(unsafe_code)]

mod error;
mod payload;
mod status;

use std::borrow::Cow;
use std::collections::HashSet;

use chrono_tz::Tz;
use serde::de::IgnoredAny;
use shipfeed_core::drift::Drift;
use shipfeed_core::{
    auth, carrier, json, time, Adapter, CredentialKind, Credentials, Error, EventId, Location,
    Mapping, Output, Provider, RawDelivery, RawStatus, ShipmentRef, TrackingEvent,
};

use crate::error::PayloadError;
use crate::payload::{first_non_blank, Entry, Message, Text};

/// What a relay of Seven Senders messages over an authenticated HTTP hop may check (the queue
/// itself needs none).
const RELAY_CREDENTIALS: &[CredentialKind] = &[
    CredentialKind::Basic,
    CredentialKind::FixedBearer,
    CredentialKind::HeaderToken,
];

/// The message attribute (header) that carries the SQS message id; it becomes the events'
/// `delivery_id`. Transports put the SQS `MessageId` under this name.
pub const MESSAGE_ID_HEADER: &str = "MessageId";

/// Normalizes Seven Senders SQS message bodies. Pure: no I/O, no clock.
#[derive(Debug, Clone)]
pub struct SevenSendersAdapter {
    zone: Tz,
}

impl SevenSendersAdapter {
    /// A new adapter reading zone-less `status_time` / `creation_time` values in `zone`.
    ///
    /// Seven Senders does not document the zone of these times; UTC (the [`Default`]) matches
    /// their REST API, `Europe/Berlin` is the other plausible reading.
    pub fn new(zone: Tz) -> Self {
        SevenSendersAdapter { zone }
    }

    /// The zone zone-less times are read in.
    pub fn zone(&self) -> Tz {
        self.zone
    }
}

impl Default for SevenSendersAdapter {
    /// Reads zone-less times as UTC.
    fn default() -> Self {
        SevenSendersAdapter::new(chrono_tz::UTC)
    }
}

impl Adapter for SevenSendersAdapter {
    fn provider(&self) -> Provider {
        Provider::SevenSenders
    }

    /// Accepts [`Credentials::None`]: Seven Senders messages carry no signature, and their
    /// authenticity comes from the queue credentials (the API key) used to pull them. Other
    /// credentials go through [`auth::verify_credentials`] (for messages relayed over an
    /// authenticated HTTP hop).
    ///
    /// # Errors
    /// [`ErrorKind::Config`](shipfeed_core::ErrorKind::Config) for an HMAC secret (nothing is
    /// signed) or a JWT, and the missing/invalid errors of Basic, Bearer or header-token
    /// checks.
    fn verify(&self, delivery: &RawDelivery, credentials: &Credentials) -> Result<(), Error> {
        match credentials {
            Credentials::None => Ok(()),
            other => auth::check_kind(Provider::SevenSenders, RELAY_CREDENTIALS, other.kind())
                .and_then(|()| auth::verify_credentials(delivery, other, None))
                .map_err(|e| e.with_provider(Provider::SevenSenders)),
        }
    }

    /// None needed; for a relay over HTTP, Basic, a fixed bearer token or a header token.
    fn credential_kinds(&self) -> &'static [CredentialKind] {
        RELAY_CREDENTIALS
    }

    /// One event for the status (with `status: None` when it is blank), one per event and per
    /// ticket. Never panics.
    ///
    /// # Errors
    /// [`ErrorKind::Payload`](shipfeed_core::ErrorKind::Payload), with the JSON path, when the
    /// body is not a JSON object, names no shipment, holds an unreadable time, or carries
    /// nothing datable.
    fn parse(&self, delivery: &RawDelivery) -> Result<Vec<Output>, Error> {
        self.parse_with(delivery, None)
    }

    fn parse_noting(
        &self,
        delivery: &RawDelivery,
        drift: &mut Drift,
    ) -> Result<Vec<Output>, Error> {
        drift.documented(crate::payload::DOCUMENTED);
        self.parse_with(delivery, Some(drift))
    }
}

impl SevenSendersAdapter {
    /// [`Adapter::parse`], noting unknown fields in `drift` when given.
    fn parse_with(
        &self,
        delivery: &RawDelivery,
        drift: Option<&mut Drift>,
    ) -> Result<Vec<Output>, Error> {
        let body = delivery.body.as_slice();
        let is_object = body.trim_ascii_start().first() == Some(&b'{');
        let mut message: Message<'_> = match json::decode_noting(body, drift) {
            Ok(message) if is_object => message,
            // serde reads a struct from an array too; a body must be an object.
            Ok(_) => return Err(PayloadError::NotAnObject.into()),
            Err(_) if !is_object && serde_json::from_slice::<IgnoredAny>(body).is_ok() => {
                return Err(PayloadError::NotAnObject.into())
            }
            Err(e) => return Err(e.with_provider(Provider::SevenSenders)),
        };
        let events = entries(message.events.take());
        let tickets = entries(message.tickets.take());
        Ok(Normalizer::new(self.zone, &message, delivery)?
            .run(&message, &events, &tickets)?
            .into_iter()
            .map(Output::Event)
            .collect())
    }
}

/// What every event of one message shares.
struct Normalizer<'m> {
    zone: Tz,
    shipment_key: String,
    shipment: ShipmentRef,
    location: Option<Location>,
    delivery: &'m RawDelivery,
    status_time: Option<&'m str>,
    seen: HashSet<EventId>,
    out: Vec<TrackingEvent>,
}

/// Parses a time field, naming `path` when it cannot be read.
fn parse_time(
    text: &str,
    zone: Tz,
    path: impl FnOnce() -> String,
) -> Result<time::Instant, PayloadError> {
    json::TimeValue::Text(Cow::Borrowed(text))
        .resolve(zone)
        .ok_or_else(|| PayloadError::BadTime {
            path: path(),
            value: text.to_owned(),
        })
}

impl<'m> Normalizer<'m> {
    fn new(
        zone: Tz,
        message: &'m Message<'_>,
        delivery: &'m RawDelivery,
    ) -> Result<Self, PayloadError> {
        let id = first_non_blank(&[&message.id]);
        let tracking = first_non_blank(&[&message.tracking_code]);
        let shipment_key = match (id, tracking) {
            (Some(id), _) => id.to_owned(),
            (None, Some(tracking)) => format!("tracking_code:{tracking}"),
            (None, None) => return Err(PayloadError::NoShipment),
        };
        let shipment = ShipmentRef {
            carrier: message
                .carrier
                .as_ref()
                .and_then(Text::non_blank)
                .and_then(carrier::normalize),
            tracking_number: tracking.map(str::to_owned),
            order_number: first_non_blank(&[&message.order_id]).map(str::to_owned),
            provider_shipment_id: id.map(str::to_owned),
            ..ShipmentRef::default()
        };
        let location = Location {
            country: first_non_blank(&[&message.carrier_country]).map(str::to_uppercase),
            ..Location::default()
        }
        .non_empty();
        Ok(Normalizer {
            zone,
            shipment_key,
            shipment,
            location,
            delivery,
            status_time: first_non_blank(&[&message.status_time]),
            seen: HashSet::new(),
            out: Vec::new(),
        })
    }

    fn run(
        mut self,
        message: &Message<'_>,
        events: &[(usize, payload::EntryFields<'_>)],
        tickets: &[(usize, payload::EntryFields<'_>)],
    ) -> Result<Vec<TrackingEvent>, PayloadError> {
        let raw_status = message.status.as_ref().map(|s| s.0.as_ref());
        let status_text = raw_status.map(str::trim).filter(|s| !s.is_empty());
        match (status_text, self.status_time) {
            (_, Some(time_text)) => {
                let at = parse_time(time_text, self.zone, || "status_time".to_owned())?;
                let mapping = status_text.and_then(status::map_status);
                let raw = RawStatus {
                    code: status_text.map(|_| raw_status.unwrap_or_default().to_owned()),
                    message: None,
                };
                self.push(
                    "status",
                    status_text.unwrap_or(""),
                    time_text,
                    at,
                    mapping,
                    raw,
                );
            }
            (Some(status), None) => {
                return Err(PayloadError::StatusWithoutTime {
                    status: status.to_owned(),
                })
            }
            (None, None) => {}
        }

        let mut event_keys = HashSet::new();
        for (index, entry) in events {
            let (name, time_text, at) = self.entry_time(entry, "events", *index)?;
            event_keys.insert((status::fold(name), time_text.to_owned()));
            self.push_entry("event", entry, name, time_text, at);
        }
        for (index, entry) in tickets {
            let (name, time_text, at) = self.entry_time(entry, "tickets", *index)?;
            // Tickets are the deprecated twin of events: one repeating an event is not news.
            if event_keys.contains(&(status::fold(name), time_text.to_owned())) {
                continue;
            }
            self.push_entry("ticket", entry, name, time_text, at);
        }

        if self.out.is_empty() {
            return Err(PayloadError::Empty);
        }
        Ok(self.out)
    }

    /// The entry's name (possibly empty), its time text (falling back to `status_time`) and
    /// the instant it denotes.
    fn entry_time<'e>(
        &self,
        entry: &'e payload::EntryFields<'_>,
        list: &str,
        index: usize,
    ) -> Result<(&'e str, &'e str, time::Instant), PayloadError>
    where
        'm: 'e,
    {
        let name = entry.name().unwrap_or("");
        match entry.time() {
            Some((text, key)) => {
                let at = parse_time(text, self.zone, || format!("{list}[{index}].{key}"))?;
                Ok((name, text, at))
            }
            None => {
                let text = self
                    .status_time
                    .ok_or_else(|| PayloadError::EntryWithoutTime {
                        path: format!("{list}[{index}]"),
                    })?;
                let at = parse_time(text, self.zone, || "status_time".to_owned())?;
                Ok((name, text, at))
            }
        }
    }

    fn push_entry(
        &mut self,
        kind: &str,
        entry: &payload::EntryFields<'_>,
        name: &str,
        time_text: &str,
        at: time::Instant,
    ) {
        let raw = RawStatus {
            code: (!name.is_empty()).then(|| name.to_owned()),
            message: first_non_blank(&[&entry.description]).map(str::to_owned),
        };
        let mapping = status::map_event(name);
        self.push(kind, name, time_text, at, mapping, raw);
    }

    fn push(
        &mut self,
        kind: &str,
        name: &str,
        time_text: &str,
        at: time::Instant,
        mapping: Option<Mapping>,
        raw: RawStatus,
    ) {
        let folded = status::fold(name);
        let event_id = EventId::derived(
            Provider::SevenSenders,
            &[&self.shipment_key, kind, &folded, time_text.trim()],
        );
        if !self.seen.insert(event_id.clone()) {
            return;
        }
        self.out.push(TrackingEvent {
            event_id,
            provider: Provider::SevenSenders,
            status: mapping.map(|m| m.status),
            substatus: mapping.and_then(|m| m.substatus).map(str::to_owned),
            raw,
            occurred_at: at.at,
            time_zone_known: at.zone_known,
            recorded_at: None,
            received_at: self.delivery.received_at,
            shipment: self.shipment.clone(),
            location: self.location.clone(),
            estimated_delivery: None,
            message: None,
            delivery_id: self
                .delivery
                .headers
                .get(MESSAGE_ID_HEADER)
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned),
            trigger: true,
        });
    }
}

/// The non-null entries of a list, with their index in the original list.
fn entries<'a>(list: Option<Vec<Option<Entry<'a>>>>) -> Vec<(usize, payload::EntryFields<'a>)> {
    list.unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(index, entry)| entry.map(|e| (index, e.into_fields())))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use shipfeed_core::{ErrorKind, Status};

    use super::*;

    fn at() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    fn parse(body: &str) -> Result<Vec<TrackingEvent>, Error> {
        SevenSendersAdapter::default()
            .parse(&RawDelivery::new(body, at()))
            .map(|outs| {
                outs.into_iter()
                    .filter_map(|o| o.as_event().cloned())
                    .collect()
            })
    }

    #[test]
    fn unknown_fields_are_noted_but_not_inside_undocumented_entries() {
        let body = r#"{"id": "s1", "status": "Delivered", "status_time": "01.02.2024 10:00:00",
            "co2": {"grams": 5}, "events": [{"event": "Delivered", "date": "01.02.2024 10:00:00", "extra": 1}]}"#;
        let mut drift = Drift::new(Provider::SevenSenders);
        let noted = SevenSendersAdapter::default()
            .parse_noting(&RawDelivery::new(body, at()), &mut drift)
            .unwrap();
        assert_eq!(
            noted,
            SevenSendersAdapter::default()
                .parse(&RawDelivery::new(body, at()))
                .unwrap()
        );
        let keys: Vec<&str> = drift
            .observations()
            .iter()
            .map(|o| o.key.as_str())
            .collect();
        assert_eq!(keys, ["co2"]);
    }

    #[test]
    fn blank_null_and_absent_status_give_events_without_status() {
        for status in [
            r#""status": "","#,
            r#""status": null,"#,
            r#""status": "  ","#,
            "",
        ] {
            let body = format!(r#"{{"id": "s1", {status} "status_time": "01.02.2024 10:00:00"}}"#);
            let events = parse(&body).unwrap();
            assert_eq!(events.len(), 1, "{body}");
            assert_eq!(events[0].status, None);
            assert_eq!(events[0].substatus, None);
            assert_eq!(events[0].raw, RawStatus::default());
        }
    }

    #[test]
    fn zone_is_configurable_and_flagged_unknown() {
        let body = r#"{"id": "s1", "status": "Delivered", "status_time": "06.08.2017 12:01:08"}"#;
        let berlin: Tz = "Europe/Berlin".parse().unwrap_or(chrono_tz::UTC);
        let outs = SevenSendersAdapter::new(berlin)
            .parse(&RawDelivery::new(body, at()))
            .unwrap();
        let event = outs[0].as_event().unwrap();
        assert_eq!(event.occurred_at.to_rfc3339(), "2017-08-06T10:01:08+00:00");
        assert!(!event.time_zone_known);
        let utc = parse(body).unwrap();
        assert_eq!(utc[0].occurred_at.to_rfc3339(), "2017-08-06T12:01:08+00:00");
        // The id does not depend on the configured zone, nor on received_at.
        assert_eq!(utc[0].event_id, event.event_id);
    }

    #[test]
    fn event_id_ignores_received_at_and_status_case() {
        let a = SevenSendersAdapter::default()
            .parse(&RawDelivery::new(
                r#"{"id":"s1","status":"Delivered","status_time":"06.08.2017 12:01:08"}"#,
                at(),
            ))
            .unwrap();
        let b = SevenSendersAdapter::default()
            .parse(&RawDelivery::new(
                r#"{"id":"s1","status":"DELIVERED","status_time":"06.08.2017 12:01:08"}"#,
                at() + chrono::Duration::hours(5),
            ))
            .unwrap();
        assert_eq!(
            a[0].as_event().unwrap().event_id,
            b[0].as_event().unwrap().event_id
        );
    }

    #[test]
    fn tickets_repeating_events_are_emitted_once() {
        let body = r#"{"id":"s3030665","status":"Delivered","status_time":"06.08.2017 12:01:08",
            "tickets":[{"id":"1","name":"Light damage","creation_time":"04.08.2017 10:01:09"},
                       {"id":"2","name":"Delayed","creation_time":"03.08.2017 10:00:00"}],
            "events":[{"name":"Light damage","creation_time":"04.08.2017 10:01:09"}]}"#;
        let events = parse(body).unwrap();
        let kinds: Vec<_> = events.iter().map(|e| e.raw.code.as_deref()).collect();
        assert_eq!(
            kinds,
            [Some("Delivered"), Some("Light damage"), Some("Delayed")]
        );
        assert_eq!(events[2].substatus.as_deref(), Some("exception.delayed"));
    }

    #[test]
    fn entries_without_time_fall_back_to_status_time() {
        let body = r#"{"id":"s1","status":"","status_time":"01.02.2024 10:00:00",
            "events":["Carded", {"event":"Delayed","description":"late","creationDate":"2024-02-01T09:00:00+0000"}]}"#;
        let events = parse(body).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[1].occurred_at, events[0].occurred_at);
        assert_eq!(events[1].status, None);
        assert!(events[2].time_zone_known);
        assert_eq!(events[2].raw.message.as_deref(), Some("late"));
        assert_eq!(events[2].status, Some(Status::Exception));
    }

    #[test]
    fn malformed_bodies_are_payload_errors_with_paths() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", None),
            ("not json", None),
            ("[1, 2]", None),
            (r#""s1""#, None),
            (
                r#"{"status":"Delivered","status_time":"06.08.2017 12:01:08"}"#,
                Some("id"),
            ),
            (r#"{"id":"s1","status":"Delivered"}"#, Some("status_time")),
            (
                r#"{"id":"s1","status":"Delivered","status_time":"2017/08/06"}"#,
                Some("status_time"),
            ),
            (
                r#"{"id":"s1","status":"Delivered","status_time":"31.02.2017 12:00:00"}"#,
                Some("status_time"),
            ),
            (
                r#"{"id":"s1","status":{"name":"x"},"status_time":"06.08.2017 12:01:08"}"#,
                Some("status"),
            ),
            (r#"{"id":"s1","events":{"name":"x"}}"#, Some("events")),
            (
                r#"{"id":"s1","events":[{"name":"Delayed"}]}"#,
                Some("events[0]"),
            ),
            (
                r#"{"id":"s1","status_time":"06.08.2017 12:01:08","events":[{"name":"x","creation_time":"soon"}]}"#,
                Some("events[0].creation_time"),
            ),
            (r#"{"id":"s1"}"#, None),
        ];
        for (body, path) in cases {
            let err = parse(body).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Payload, "{body}");
            assert_eq!(err.provider(), Some(Provider::SevenSenders), "{body}");
            assert_eq!(err.path(), *path, "{body}: {err}");
        }
    }

    #[test]
    fn verify_accepts_no_credentials_and_checks_relay_credentials() {
        let adapter = SevenSendersAdapter::default();
        let delivery = RawDelivery::new("{}", at());
        assert!(adapter.verify(&delivery, &Credentials::None).is_ok());
        let err = adapter
            .verify(&delivery, &Credentials::Hmac("x".into()))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.provider(), Some(Provider::SevenSenders));
        let bearer = Credentials::Bearer("t".into());
        let err = adapter.verify(&delivery, &bearer).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingSignature);
        let relayed = delivery.clone().with_header("Authorization", "Bearer t");
        assert!(adapter.verify(&relayed, &bearer).is_ok());
    }
}
