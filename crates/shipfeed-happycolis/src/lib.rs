#![doc = include_str!("docs.md")]
#![forbid(unsafe_code)]

mod error;
mod payload;
mod signature;
mod status;

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use shipfeed_core::drift::Drift;
use shipfeed_core::json::{Text, TimeValue};
use shipfeed_core::time::Instant;
use shipfeed_core::{
    carrier, Adapter, CredentialKind, Credentials, Error, EstimatedDelivery, EventId, Location,
    Notice, NoticeKind, Output, Provider, RawDelivery, RawStatus, ShipmentRef, Status,
    TrackingEvent,
};

use crate::error::{tagged, HappyColisError};
use crate::payload::{Body, Message, Shipment, ShippingEvent};

/// The header HappyColis signs deliveries in: Base64(HMAC-SHA256(raw body, client secret)).
pub const SIGNATURE_HEADER: &str = signature::SIGNATURE_HEADER;

/// The HappyColis adapter: webhook messages (`{header, body}`) into canonical outputs.
///
/// Stateless and cheap to construct; one instance serves every HappyColis endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct HappyColisAdapter;

impl HappyColisAdapter {
    /// A new adapter.
    pub fn new() -> Self {
        HappyColisAdapter
    }
}

impl Adapter for HappyColisAdapter {
    fn provider(&self) -> Provider {
        Provider::HappyColis
    }

    /// Checks `x-happycolis-webhook-signature` (with [`Credentials::Hmac`]) or a subscription
    /// header (with [`Credentials::HeaderToken`]) over the raw bytes, in constant time.
    ///
    /// # Errors
    /// `MissingSignature` / `InvalidSignature` when the delivery is not authentic,
    /// `MissingSecret` for [`Credentials::None`] or an empty secret, `Config` for Basic,
    /// bearer or JWT credentials (HappyColis sends none of them). Never panics.
    fn verify(&self, delivery: &RawDelivery, credentials: &Credentials) -> Result<(), Error> {
        signature::verify(delivery, credentials)
    }

    /// Its signature's HMAC secret, or a subscription header token.
    fn credential_kinds(&self) -> &'static [CredentialKind] {
        signature::CREDENTIAL_KINDS
    }

    /// One event per entry of the shipment's `events` history for `shipment/*` messages; a
    /// [`Notice`] for a shipment with no events, for `order/*` and `delivery-order/*`, and for
    /// any other type. Unknown `ShippingEventEnum` values are `unknown.unmapped`.
    ///
    /// # Errors
    /// `Payload` (with the JSON path) when the bytes are not a HappyColis message, or a
    /// `shipment/*` message has no body or an event without a readable time. Never panics.
    fn parse(&self, delivery: &RawDelivery) -> Result<Vec<Output>, Error> {
        let message = payload::decode(&delivery.body, carries_shipment, None).map_err(tagged)?;
        normalize(message, delivery.received_at)
    }

    fn parse_noting(
        &self,
        delivery: &RawDelivery,
        drift: &mut Drift,
    ) -> Result<Vec<Output>, Error> {
        drift.documented(payload::DOCUMENTED);
        let message =
            payload::decode(&delivery.body, carries_shipment, Some(drift)).map_err(tagged)?;
        normalize(message, delivery.received_at)
    }
}

/// Which entries of a shipment's history are marked `trigger: true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The most recently dated entry: the event the message was sent for.
    Newest,
    /// Every entry: nothing was sent about this shipment before.
    All,
    /// No entry: the message reports a state change whose event was already sent.
    None,
}

/// What a message type means to the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageType {
    Shipment(Trigger),
    Order,
    Other,
}

impl MessageType {
    /// Reads a header `type`, ignoring case and accepting the Kafka-topic spelling
    /// (`shipment.shipping_event`).
    fn classify(kind: &str) -> Self {
        let folded: String = kind
            .trim()
            .chars()
            .map(|c| {
                if c == '.' {
                    '/'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        match folded.as_str() {
            "shipment/shipping_event" | "shipment/delivered" => {
                MessageType::Shipment(Trigger::Newest)
            }
            "shipment/created" => MessageType::Shipment(Trigger::All),
            "shipment/completed" => MessageType::Shipment(Trigger::None),
            other
                if ["order/", "delivery-order/", "delivery_order/"]
                    .iter()
                    .any(|prefix| other.starts_with(prefix)) =>
            {
                MessageType::Order
            }
            _ => MessageType::Other,
        }
    }
}

fn carries_shipment(kind: &str) -> bool {
    matches!(MessageType::classify(kind), MessageType::Shipment(_))
}

/// Times in HappyColis payloads are JavaScript ISO strings in UTC; a naive time (never seen)
/// is read as UTC and flagged `time_zone_known: false`.
fn instant(value: &TimeValue<'_>) -> Option<Instant> {
    value.resolve(chrono_tz::UTC)
}

fn text<'t>(value: &'t Option<Text<'_>>) -> Option<&'t str> {
    value.as_ref().and_then(Text::non_blank)
}

fn normalize(message: Message<'_>, received_at: DateTime<Utc>) -> Result<Vec<Output>, Error> {
    let header = &message.header;
    let raw_type = header.kind.0.trim();
    let context = Context {
        raw_type,
        delivery_id: header.delivery_id().map(str::to_owned),
        sent_at: header.sent_at().and_then(instant).map(|i| i.at),
        received_at,
    };
    match MessageType::classify(raw_type) {
        MessageType::Shipment(trigger) => match &message.body {
            Body::Shipment(shipment) => shipment_outputs(shipment, trigger, &context),
            Body::Missing | Body::Other { .. } => Err(HappyColisError::MissingShipment {
                kind: raw_type.to_owned(),
            }
            .into()),
        },
        kind @ (MessageType::Order | MessageType::Other) => {
            let mut notice = context.notice(if kind == MessageType::Order {
                NoticeKind::Order
            } else {
                NoticeKind::Other
            });
            notice.subject_id = match &message.body {
                Body::Shipment(shipment) => text(&shipment.id).map(str::to_owned),
                Body::Other { id } => id.clone(),
                Body::Missing => None,
            };
            Ok(vec![Output::Notice(notice)])
        }
    }
}

/// What every output of one delivery shares.
struct Context<'m> {
    raw_type: &'m str,
    delivery_id: Option<String>,
    sent_at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
}

impl Context<'_> {
    fn notice(&self, kind: NoticeKind) -> Notice {
        let mut notice = Notice::new(Provider::HappyColis, kind, self.raw_type, self.received_at);
        notice.delivery_id = self.delivery_id.clone();
        notice.occurred_at = self.sent_at;
        notice
    }
}

/// The times of one history entry.
struct EventTimes {
    occurred: Instant,
    recorded_at: Option<DateTime<Utc>>,
    /// HappyColis orders its history by `date` (recording time); the newest entry triggered
    /// the message.
    order_key: DateTime<Utc>,
}

/// `eventDate` (carrier time) when it reads as a time, else `date` (HappyColis recording
/// time); `date` becomes `recorded_at` where it differs.
fn event_times(index: usize, event: &ShippingEvent<'_>) -> Result<EventTimes, Error> {
    let recorded = event.date.as_ref().and_then(instant);
    let occurred = event
        .event_date
        .as_ref()
        .and_then(instant)
        .or(recorded)
        .ok_or(HappyColisError::NoEventTime { index })?;
    Ok(EventTimes {
        occurred,
        recorded_at: recorded.map(|r| r.at).filter(|at| *at != occurred.at),
        order_key: recorded.map_or(occurred.at, |r| r.at),
    })
}

fn shipment_outputs(
    shipment: &Shipment<'_>,
    trigger: Trigger,
    context: &Context<'_>,
) -> Result<Vec<Output>, Error> {
    let identity = shipment_ref(shipment);
    let events = shipment.events.as_deref().unwrap_or_default();
    if events.is_empty() {
        let mut notice = context.notice(NoticeKind::ShipmentRegistered);
        notice.subject_id = identity.provider_shipment_id.clone();
        notice.shipment = Some(identity);
        return Ok(vec![Output::Notice(notice)]);
    }

    let times = events
        .iter()
        .enumerate()
        .map(|(index, event)| event_times(index, event))
        .collect::<Result<Vec<_>, _>>()?;
    // Ties go to the later entry: HappyColis appends the new event at the end.
    let newest = times
        .iter()
        .enumerate()
        .max_by_key(|(index, t)| (t.order_key, *index))
        .map(|(index, _)| index);
    let estimated = shipment.estimated_at.as_ref().and_then(estimated_delivery);

    let outputs = events
        .iter()
        .zip(times)
        .enumerate()
        .map(|(index, (event, times))| {
            let is_trigger = match trigger {
                Trigger::Newest => Some(index) == newest,
                Trigger::All => true,
                Trigger::None => false,
            };
            Output::Event(tracking_event(
                event,
                times,
                &identity,
                estimated.clone(),
                is_trigger,
                context,
            ))
        })
        .collect();
    Ok(outputs)
}

fn shipment_ref(shipment: &Shipment<'_>) -> ShipmentRef {
    let tracking = text(&shipment.tracking);
    let label = text(&shipment.label);
    let method = text(&shipment.shipping_method_name);
    let mut identity = ShipmentRef {
        // Only a carrier the method name names; "Livraison express" is no carrier.
        carrier: method.and_then(carrier::recognize),
        tracking_number: tracking.or(label).map(str::to_owned),
        order_number: None,
        provider_shipment_id: text(&shipment.id).map(str::to_owned),
        references: BTreeMap::new(),
        tracking_url: text(&shipment.tracking_url).map(str::to_owned),
    };
    identity.add_reference("reference", text(&shipment.reference));
    identity.add_reference("external_id", text(&shipment.external_id));
    identity.add_reference("shipping_method", method);
    identity.add_reference("shipment_state", text(&shipment.state));
    if tracking.is_some() && label != tracking {
        identity.add_reference("label", label);
    }
    identity
}

/// `estimatedAt`: the instant, and its day in Europe/Paris. HappyColis is a French platform;
/// a date stored as local midnight (`2024-03-16T23:00:00.000Z`) and one stored as UTC midnight
/// both land on the intended day there, where the UTC day would be one early for the first.
fn estimated_delivery(value: &TimeValue<'_>) -> Option<EstimatedDelivery> {
    if let Some(instant) = instant(value) {
        return Some(EstimatedDelivery {
            date: instant
                .at
                .with_timezone(&chrono_tz::Europe::Paris)
                .date_naive(),
            at: Some(instant.at),
        });
    }
    match value {
        TimeValue::Text(day) => NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d")
            .ok()
            .map(|date| EstimatedDelivery { date, at: None }),
        TimeValue::Unix(_) => None,
    }
}

fn tracking_event(
    event: &ShippingEvent<'_>,
    times: EventTimes,
    identity: &ShipmentRef,
    estimated_delivery: Option<EstimatedDelivery>,
    trigger: bool,
    context: &Context<'_>,
) -> TrackingEvent {
    let code = text(&event.event);
    // No code at all is "no usable information", not an unmapped code to count.
    let (status, substatus) = match code {
        Some(code) => {
            let mapping = status::map_status(code);
            (mapping.status, mapping.substatus)
        }
        None => (Status::Unknown, None),
    };
    let raw_message = text(&event.event_message).or(text(&event.message));

    let mut shipment = identity.clone();
    shipment.add_reference("carrier_event_code", text(&event.event_code));

    let event_id = match text(&event.id) {
        Some(id) => EventId::from_provider(Provider::HappyColis, id),
        None => {
            let owner = identity
                .provider_shipment_id
                .as_deref()
                .or(identity.tracking_number.as_deref())
                .unwrap_or_default();
            let at = times.occurred.at.to_rfc3339();
            EventId::derived(
                Provider::HappyColis,
                &[owner, &at, code.unwrap_or_default()],
            )
        }
    };

    TrackingEvent {
        event_id,
        provider: Provider::HappyColis,
        status: Some(status),
        substatus: substatus.map(str::to_owned),
        raw: RawStatus {
            code: code.map(str::to_owned),
            message: raw_message.map(str::to_owned),
        },
        occurred_at: times.occurred.at,
        time_zone_known: times.occurred.zone_known,
        recorded_at: times.recorded_at,
        received_at: context.received_at,
        shipment,
        location: location(event),
        estimated_delivery,
        message: description(event, raw_message),
        delivery_id: context.delivery_id.clone(),
        trigger,
    }
}

/// `eventDescription` and the operator's `comment`, joined when both are present, leaving out
/// what repeats the raw message.
fn description(event: &ShippingEvent<'_>, raw_message: Option<&str>) -> Option<String> {
    let parts: Vec<&str> = [text(&event.event_description), text(&event.comment)]
        .into_iter()
        .flatten()
        .filter(|part| Some(*part) != raw_message)
        .collect();
    (!parts.is_empty()).then(|| parts.join(" | "))
}

/// `eventCountry` (or the mutation's `country`) as ISO-2 upper case; a value that is not two
/// letters is kept as the description rather than dropped or passed off as a code.
fn location(event: &ShippingEvent<'_>) -> Option<Location> {
    let country = text(&event.event_country).or(text(&event.country));
    let (country, unrecognized) = match country {
        Some(c) if c.len() == 2 && c.chars().all(|ch| ch.is_ascii_alphabetic()) => {
            (Some(c.to_ascii_uppercase()), None)
        }
        other => (None, other),
    };
    Location {
        city: text(&event.city).map(str::to_owned),
        postal_code: None,
        country,
        description: text(&event.location).or(unrecognized).map(str::to_owned),
    }
    .non_empty()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use serde_json::{json, Value};
    use shipfeed_core::{ErrorKind, UNMAPPED};

    use super::*;

    fn received_at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_717_243_200, 0).unwrap()
    }

    fn event(id: &str, code: &str, date: &str) -> Value {
        json!({"id": id, "shipmentId": "shp-1", "event": code, "eventCode": null, "eventMessage": null,
               "eventDescription": null, "eventCountry": null, "eventDate": null, "date": date,
               "comment": null, "meta": null})
    }

    fn message(kind: &str, events: Value) -> Value {
        json!({
            "header": {"organizationId": "org-1", "messageId": "msg-1", "webhookId": "wh-1",
                       "type": kind, "date": "2024-03-16T06:05:00.000Z"},
            "body": {"id": "shp-1", "externalId": "EXT-1", "shippingMethodName": "Colissimo Domicile",
                     "lastEvent": "IN_TRANSIT", "state": "OPENED", "label": "6A123", "reference": "SHP-1",
                     "trackingUrl": "https://example.com/t/6A123", "tracking": "6A123",
                     "estimatedAt": "2024-03-17T18:00:00.000Z", "addresses": [], "details": [],
                     "events": events}
        })
    }

    #[test]
    fn unknown_fields_are_noted_and_documented_ones_are_not() {
        let mut body = message("shipment/shipping_event", history(2));
        body["body"]["carbonFootprint"] = json!({"grams": 120});
        body["body"]["events"][0]["channel"] = json!("api");
        body["header"]["webhookId"] = json!("wh-2");
        let bytes = serde_json::to_vec(&body).unwrap();
        let mut drift = Drift::new(Provider::HappyColis);
        HappyColisAdapter::new()
            .parse_noting(&RawDelivery::new(bytes, received_at()), &mut drift)
            .unwrap();
        let keys: BTreeSet<&str> = drift
            .observations()
            .iter()
            .map(|o| o.key.as_str())
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["body.carbonFootprint", "body.events[].channel"])
        );
    }

    fn parse(body: &Value) -> Result<Vec<Output>, Error> {
        let bytes = serde_json::to_vec(body).unwrap();
        HappyColisAdapter::new().parse(&RawDelivery::new(bytes, received_at()))
    }

    fn events(outputs: &[Output]) -> Vec<&TrackingEvent> {
        outputs.iter().filter_map(Output::as_event).collect()
    }

    fn history(n: usize) -> Value {
        let codes = [
            "NEW",
            "INFO_RECEIVED",
            "IN_TRANSIT",
            "OUT_FOR_DELIVERY",
            "DELIVERED",
        ];
        Value::Array(
            (0..n)
                .map(|i| {
                    event(
                        &format!("ev-{i}"),
                        codes[i % codes.len()],
                        &format!("2024-03-1{i}T08:00:00.000Z"),
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn a_shipping_event_emits_the_whole_history_and_triggers_the_newest() {
        let mut body = message("shipment/shipping_event", history(2));
        body["body"]["events"][1] = json!({
            "id": "ev-1", "event": "IN_TRANSIT", "eventCode": "D101",
            "eventMessage": "Parcel in transit at sorting center",
            "eventDescription": "Parcel scanned at Rungis sorting center", "eventCountry": "fr",
            "eventDate": "2024-03-16T06:00:00.000Z", "date": "2024-03-16T06:05:00.000Z"});
        let outputs = parse(&body).unwrap();
        let events = events(&outputs);
        assert_eq!(events.len(), 2);
        assert_eq!(
            events.iter().map(|e| e.trigger).collect::<Vec<_>>(),
            [false, true]
        );

        let first = events[0];
        assert_eq!(first.event_id.as_str(), "happycolis:ev-0");
        assert_eq!(first.status, Some(Status::PreTransit));
        assert_eq!(first.occurred_at.to_rfc3339(), "2024-03-10T08:00:00+00:00");
        assert_eq!(first.recorded_at, None);
        assert_eq!(first.location, None);

        let newest = events[1];
        assert_eq!(newest.event_id.as_str(), "happycolis:ev-1");
        assert_eq!(newest.status, Some(Status::InTransit));
        assert_eq!(newest.substatus, None);
        assert_eq!(newest.raw.code.as_deref(), Some("IN_TRANSIT"));
        assert_eq!(
            newest.raw.message.as_deref(),
            Some("Parcel in transit at sorting center")
        );
        assert_eq!(
            newest.message.as_deref(),
            Some("Parcel scanned at Rungis sorting center")
        );
        assert_eq!(newest.occurred_at.to_rfc3339(), "2024-03-16T06:00:00+00:00");
        assert_eq!(
            newest.recorded_at.unwrap().to_rfc3339(),
            "2024-03-16T06:05:00+00:00"
        );
        assert!(newest.time_zone_known);
        assert_eq!(
            newest.location.as_ref().unwrap().country.as_deref(),
            Some("FR")
        );
        assert_eq!(newest.delivery_id.as_deref(), Some("msg-1"));
        assert_eq!(newest.received_at, received_at());

        let shipment = &newest.shipment;
        assert_eq!(shipment.carrier.as_deref(), Some("colissimo"));
        assert_eq!(shipment.tracking_number.as_deref(), Some("6A123"));
        assert_eq!(shipment.provider_shipment_id.as_deref(), Some("shp-1"));
        assert_eq!(
            shipment.tracking_url.as_deref(),
            Some("https://example.com/t/6A123")
        );
        assert_eq!(shipment.references["reference"], "SHP-1");
        assert_eq!(shipment.references["external_id"], "EXT-1");
        assert_eq!(shipment.references["shipment_state"], "OPENED");
        assert_eq!(shipment.references["carrier_event_code"], "D101");
        assert!(
            !shipment.references.contains_key("label"),
            "label equals tracking"
        );
        assert!(!first.shipment.references.contains_key("carrier_event_code"));

        let estimate = newest.estimated_delivery.as_ref().unwrap();
        assert_eq!(estimate.date.to_string(), "2024-03-17");
        assert_eq!(
            estimate.at.unwrap().to_rfc3339(),
            "2024-03-17T18:00:00+00:00"
        );
    }

    #[test]
    fn the_older_envelope_is_read_too() {
        let mut body = message("shipment/shipping_event", history(1));
        body["header"] = json!({"id": "old-msg-9", "type": "shipment/shipping_event",
            "timestamp": "2024-03-16T06:05:00.000Z", "organization": "org-1", "application": "app-1"});
        let outputs = parse(&body).unwrap();
        let events = events(&outputs);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].delivery_id.as_deref(), Some("old-msg-9"));
        assert!(events[0].trigger);

        let mut order = json!({"header": {"id": 77, "type": "order/created", "timestamp": 1710569100000_u64},
                               "body": {"id": "ord-1"}});
        let notice = parse(&order).unwrap()[0].as_notice().cloned().unwrap();
        assert_eq!(notice.delivery_id.as_deref(), Some("77"));
        assert_eq!(
            notice.occurred_at.unwrap().to_rfc3339(),
            "2024-03-16T06:05:00+00:00"
        );
        order["header"]["extra"] = json!({"anything": [1, 2]});
        assert!(parse(&order).is_ok(), "unknown header fields are tolerated");
    }

    #[test]
    fn resent_histories_deduplicate_to_one_event_each() {
        let first = parse(&message("shipment/shipping_event", history(3))).unwrap();
        let second = parse(&message("shipment/shipping_event", history(4))).unwrap();
        let all: Vec<&TrackingEvent> = events(&first).into_iter().chain(events(&second)).collect();
        assert_eq!(all.len(), 7);
        let ids: BTreeSet<&str> = all.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids.len(), 4);
        // The same carrier event is the same canonical event in both deliveries, trigger aside.
        for (a, b) in events(&first).iter().zip(events(&second)) {
            assert_eq!(
                (a.event_id.clone(), a.status, a.occurred_at),
                (b.event_id.clone(), b.status, b.occurred_at)
            );
        }
        let triggers: Vec<&str> = all
            .iter()
            .filter(|e| e.trigger)
            .map(|e| e.event_id.as_str())
            .collect();
        assert_eq!(triggers, ["happycolis:ev-2", "happycolis:ev-3"]);
    }

    #[test]
    fn the_trigger_is_the_most_recently_dated_entry_not_the_last() {
        let events_json = json!([
            event("a", "IN_TRANSIT", "2024-03-16T06:05:00.000Z"),
            event("b", "OUT_FOR_DELIVERY", "2024-03-17T07:00:00.000Z"),
            event("c", "INFO_RECEIVED", "2024-03-15T16:00:00.000Z"),
        ]);
        let outputs = parse(&message("shipment/shipping_event", events_json)).unwrap();
        let triggered: Vec<_> = events(&outputs)
            .iter()
            .filter(|e| e.trigger)
            .map(|e| e.event_id.to_string())
            .collect();
        assert_eq!(triggered, ["happycolis:b"]);
    }

    #[test]
    fn created_triggers_everything_and_completed_nothing() {
        let created = parse(&message("shipment/created", history(2))).unwrap();
        assert!(events(&created).iter().all(|e| e.trigger));
        let completed = parse(&message("shipment/completed", history(5))).unwrap();
        assert_eq!(events(&completed).len(), 5);
        assert!(events(&completed).iter().all(|e| !e.trigger));
        let delivered = parse(&message("Shipment/Delivered", history(5))).unwrap();
        assert_eq!(events(&delivered).iter().filter(|e| e.trigger).count(), 1);
        let topic_style = parse(&message("shipment.shipping_event", history(2))).unwrap();
        assert_eq!(events(&topic_style).len(), 2);
    }

    #[test]
    fn an_empty_history_is_a_registered_shipment() {
        for events_json in [json!([]), Value::Null] {
            let outputs = parse(&message("shipment/created", events_json)).unwrap();
            assert_eq!(outputs.len(), 1);
            let notice = outputs[0].as_notice().unwrap();
            assert_eq!(notice.kind, NoticeKind::ShipmentRegistered);
            assert_eq!(notice.raw_type, "shipment/created");
            assert_eq!(notice.subject_id.as_deref(), Some("shp-1"));
            assert_eq!(notice.delivery_id.as_deref(), Some("msg-1"));
            assert_eq!(
                notice.occurred_at.unwrap().to_rfc3339(),
                "2024-03-16T06:05:00+00:00"
            );
            assert_eq!(
                notice.shipment.as_ref().unwrap().tracking_number.as_deref(),
                Some("6A123")
            );
        }
    }

    #[test]
    fn other_types_are_notices_never_errors() {
        let cases = [
            (
                "order/created",
                json!({"id": "ord-1", "state": "OPENED"}),
                NoticeKind::Order,
                Some("ord-1"),
            ),
            (
                "delivery-order/shipped",
                json!({"id": "do-1", "events": "not a list"}),
                NoticeKind::Order,
                Some("do-1"),
            ),
            (
                "product/updated",
                json!({"id": 12}),
                NoticeKind::Other,
                Some("12"),
            ),
            (
                "shipment/label_printed",
                json!(["odd"]),
                NoticeKind::Other,
                None,
            ),
            ("", Value::Null, NoticeKind::Other, None),
        ];
        for (kind, body, expected, subject) in cases {
            let msg = json!({"header": {"type": kind, "messageId": "m"}, "body": body});
            let outputs = parse(&msg).unwrap_or_else(|e| panic!("{kind}: {e}"));
            let notice = outputs[0].as_notice().unwrap();
            assert_eq!(
                (notice.kind, notice.subject_id.as_deref()),
                (expected, subject),
                "{kind}"
            );
            assert_eq!(notice.raw_type, kind);
        }
    }

    #[test]
    fn unknown_and_odd_enum_values_are_data() {
        let events_json = json!([
            event("a", "CUSTOMS_HOLD", "2024-03-16T06:05:00.000Z"),
            event("b", "out_for_delivery", "2024-03-17T07:00:00.000Z"),
            json!({"id": "c", "event": null, "date": "2024-03-17T08:00:00.000Z"}),
        ]);
        let outputs = parse(&message("shipment/shipping_event", events_json)).unwrap();
        let events = events(&outputs);
        assert_eq!(events[0].status, Some(Status::Unknown));
        assert_eq!(events[0].substatus.as_deref(), Some(UNMAPPED));
        assert_eq!(events[0].raw.code.as_deref(), Some("CUSTOMS_HOLD"));
        assert!(events[0].is_unmapped());
        assert_eq!(events[1].status, Some(Status::OutForDelivery));
        assert_eq!(events[1].raw.code.as_deref(), Some("out_for_delivery"));
        assert_eq!(events[2].status, Some(Status::Unknown));
        assert!(!events[2].is_unmapped());
        assert_eq!(events[2].raw.code, None);
    }

    #[test]
    fn an_entry_without_id_gets_a_stable_derived_id() {
        let entry = json!({"event": "IN_TRANSIT", "date": "2024-03-16T06:05:00.000Z"});
        let once = parse(&message("shipment/shipping_event", json!([entry.clone()]))).unwrap();
        let again = parse(&message(
            "shipment/completed",
            json!([event("x", "NEW", "2024-03-15T00:00:00Z"), entry]),
        ))
        .unwrap();
        let id = &events(&once)[0].event_id;
        assert!(id.as_str().starts_with("happycolis:h"), "{id}");
        assert_eq!(id, &events(&again)[1].event_id);
    }

    #[test]
    fn times_fall_back_to_the_recording_date() {
        let events_json = json!([
            {"id": "a", "event": "IN_TRANSIT", "eventDate": "yesterday", "date": "2024-03-16T06:05:00.000Z"},
            {"id": "b", "event": "IN_TRANSIT", "eventDate": "2024-03-16T08:00:00+02:00", "date": "2024-03-16T06:05:00.000Z"},
        ]);
        let outputs = parse(&message("shipment/shipping_event", events_json)).unwrap();
        let events = events(&outputs);
        assert_eq!(
            events[0].occurred_at.to_rfc3339(),
            "2024-03-16T06:05:00+00:00"
        );
        assert_eq!(events[0].recorded_at, None);
        assert_eq!(
            events[1].occurred_at.to_rfc3339(),
            "2024-03-16T06:00:00+00:00"
        );
        assert_eq!(
            events[1].recorded_at.unwrap().to_rfc3339(),
            "2024-03-16T06:05:00+00:00"
        );
    }

    #[test]
    fn payload_errors_are_tagged_and_located() {
        let no_time = message(
            "shipment/shipping_event",
            json!([event("a", "NEW", "2024-03-15T00:00:00Z"), {"id": "b", "event": "NEW"}]),
        );
        let err = parse(&no_time).unwrap_err();
        assert_eq!(
            (err.kind(), err.path()),
            (ErrorKind::Payload, Some("body.events[1].date"))
        );
        assert_eq!(err.provider(), Some(Provider::HappyColis));

        let mut no_body = message("shipment/created", json!([]));
        no_body["body"] = Value::Null;
        let err = parse(&no_body).unwrap_err();
        assert_eq!((err.kind(), err.path()), (ErrorKind::Payload, Some("body")));

        let mut not_a_list = message("shipment/shipping_event", json!([]));
        not_a_list["body"]["events"] = json!({"0": {}});
        let err = parse(&not_a_list).unwrap_err();
        assert_eq!(
            (err.kind(), err.path()),
            (ErrorKind::Payload, Some("body.events"))
        );
        assert!(!err.kind().is_authentication());
        assert_eq!(err.provider(), Some(Provider::HappyColis));

        let err = HappyColisAdapter::new()
            .parse(&RawDelivery::new(&b"{\"header\":"[..], received_at()))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Payload);
        assert_eq!(err.provider(), Some(Provider::HappyColis));
    }

    #[test]
    fn locations_keep_iso_codes_and_words_apart() {
        let events_json = json!([
            {"id": "a", "event": "AVAILABLE_FOR_PICKUP", "date": "2024-03-16T06:05:00.000Z",
             "city": "Lyon", "location": "Relais Tabac du Centre", "country": "fr"},
            {"id": "b", "event": "IN_TRANSIT", "date": "2024-03-16T06:05:00.000Z", "eventCountry": "Belgique"},
        ]);
        let outputs = parse(&message("shipment/shipping_event", events_json)).unwrap();
        let events = events(&outputs);
        let pickup = events[0].location.as_ref().unwrap();
        assert_eq!(
            (pickup.city.as_deref(), pickup.country.as_deref()),
            (Some("Lyon"), Some("FR"))
        );
        assert_eq!(
            pickup.description.as_deref(),
            Some("Relais Tabac du Centre")
        );
        let words = events[1].location.as_ref().unwrap();
        assert_eq!(
            (words.country.as_deref(), words.description.as_deref()),
            (None, Some("Belgique"))
        );
    }

    #[test]
    fn carriers_are_recognized_never_guessed() {
        let mut body = message("shipment/shipping_event", history(1));
        body["body"]["shippingMethodName"] = json!("Livraison express 24h");
        body["body"]["label"] = json!("LBL-1");
        let outputs = parse(&body).unwrap();
        let shipment = &events(&outputs)[0].shipment;
        assert_eq!(shipment.carrier, None);
        assert_eq!(
            shipment.references["shipping_method"],
            "Livraison express 24h"
        );
        assert_eq!(shipment.references["label"], "LBL-1");
    }

    #[test]
    fn an_estimated_day_is_read_in_paris() {
        for (raw, day, has_time) in [
            (json!("2024-03-16T23:00:00.000Z"), "2024-03-17", true),
            (json!("2024-03-17T00:00:00.000Z"), "2024-03-17", true),
            (json!("2024-03-17"), "2024-03-17", false),
        ] {
            let mut body = message("shipment/shipping_event", history(1));
            body["body"]["estimatedAt"] = raw;
            let outputs = parse(&body).unwrap();
            let estimate = events(&outputs)[0].estimated_delivery.clone().unwrap();
            assert_eq!(
                (estimate.date.to_string().as_str(), estimate.at.is_some()),
                (day, has_time)
            );
        }
    }

    fn sample() -> Vec<u8> {
        serde_json::to_vec(&message("shipment/shipping_event", history(4))).unwrap()
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = HappyColisAdapter::new().parse(&RawDelivery::new(bytes, received_at()));
        }

        #[test]
        fn damaged_messages_never_panic(cut in 0usize..2000, at in 0usize..2000, byte in any::<u8>()) {
            let mut bytes = sample();
            if let Some(b) = bytes.get_mut(at) {
                *b = byte;
            }
            bytes.truncate(cut);
            let adapter = HappyColisAdapter::new();
            let delivery = RawDelivery::new(bytes, received_at());
            if let Err(err) = adapter.parse(&delivery) {
                prop_assert_eq!(err.provider(), Some(Provider::HappyColis));
            }
            let creds = Credentials::Hmac(shipfeed_core::Secret::new("s"));
            prop_assert!(adapter.construct(&delivery, &creds).is_err());
        }
    }
}
