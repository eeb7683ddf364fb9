//! Private serde wire types for HappyColis webhook messages.
//!
//! Only the fields the adapter reads are declared; everything else (addresses, details, meta,
//! fields HappyColis adds later) is skipped by serde. Text and times borrow from the body
//! whenever the JSON string has no escapes.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use shipfeed_core::drift::Drift;
use shipfeed_core::json::{Text, TimeValue};
use shipfeed_core::Error;

/// A JSON object read as `T`.
///
/// Derived struct impls also accept an array and fill fields by position, which would misread
/// a body whose shape changed instead of reporting it.
#[derive(Debug)]
pub(crate) struct Object<T>(pub(crate) T);

impl<T> Deref for Object<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = Object<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }

        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

/// `header` in either documented form.
///
/// Current: `organizationId`, `messageId`, `webhookId`, `type`, `date`.
/// Older (webhooks/event-payloads page): `id`, `type`, `timestamp`, `organization`,
/// `application`. Only the fields the adapter uses are read.
#[derive(Debug, Deserialize)]
pub(crate) struct Header<'a> {
    /// `shipment/shipping_event`, `order/created`, ...
    #[serde(rename = "type", borrow)]
    pub(crate) kind: Text<'a>,
    /// Current form: the message id HappyColis tells subscribers to deduplicate on.
    #[serde(rename = "messageId", default, borrow)]
    pub(crate) message_id: Option<Text<'a>>,
    /// Older form of the message id.
    #[serde(default, borrow)]
    pub(crate) id: Option<Text<'a>>,
    /// Current form: when the message was enqueued (ISO 8601).
    #[serde(default, borrow)]
    pub(crate) date: Option<TimeValue<'a>>,
    /// Older form of `date`; its format is not documented (ISO text or a unix number).
    #[serde(default, borrow)]
    pub(crate) timestamp: Option<TimeValue<'a>>,
}

impl Header<'_> {
    /// `messageId`, else the older `id`.
    pub(crate) fn delivery_id(&self) -> Option<&str> {
        self.message_id
            .as_ref()
            .and_then(Text::non_blank)
            .or_else(|| self.id.as_ref().and_then(Text::non_blank))
    }

    /// `date`, else the older `timestamp`, as given.
    pub(crate) fn sent_at(&self) -> Option<&TimeValue<'_>> {
        self.date.as_ref().or(self.timestamp.as_ref())
    }
}

/// The shipment object carried by `shipment/*` messages.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Shipment<'a> {
    #[serde(default, borrow)]
    pub(crate) id: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) external_id: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) shipping_method_name: Option<Text<'a>>,
    /// `DRAFT`, `OPENED` or `COMPLETED`.
    #[serde(default, borrow)]
    pub(crate) state: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) label: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) reference: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) tracking_url: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) tracking: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) estimated_at: Option<TimeValue<'a>>,
    /// The whole history, oldest first; `null` or absent reads as empty.
    #[serde(default, borrow)]
    pub(crate) events: Option<Vec<Object<ShippingEvent<'a>>>>,
}

/// One entry of `events`.
///
/// Webhook samples use `event`, `eventCode`, `eventMessage`, `eventDescription`,
/// `eventCountry`, `eventDate`, `date`, `comment`; the `shipmentAddEvent` mutation writes
/// `message`, `location`, `city`, `country`, which are read too.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ShippingEvent<'a> {
    #[serde(default, borrow)]
    pub(crate) id: Option<Text<'a>>,
    /// The `ShippingEventEnum` value.
    #[serde(default, borrow)]
    pub(crate) event: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) event_code: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) event_message: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) event_description: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) event_country: Option<Text<'a>>,
    /// Carrier time.
    #[serde(default, borrow)]
    pub(crate) event_date: Option<TimeValue<'a>>,
    /// HappyColis recording time.
    #[serde(default, borrow)]
    pub(crate) date: Option<TimeValue<'a>>,
    #[serde(default, borrow)]
    pub(crate) comment: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) message: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) location: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) city: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) country: Option<Text<'a>>,
}

/// The fast path: a header and a shipment-shaped body (most traffic is `shipment/*`).
#[derive(Debug, Deserialize)]
struct ShipmentEnvelope<'a> {
    #[serde(borrow)]
    header: Object<Header<'a>>,
    #[serde(default, borrow)]
    body: Option<Object<Shipment<'a>>>,
}

/// The fallback for messages whose body is not shipment-shaped (orders, delivery orders,
/// types nobody has documented): the body is read as loose JSON, only for its `id`.
#[derive(Debug, Deserialize)]
struct LooseEnvelope<'a> {
    #[serde(borrow)]
    header: Object<Header<'a>>,
    #[serde(default)]
    body: serde_json::Value,
}

/// What the body turned out to be.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per delivery, never stored in a collection
pub(crate) enum Body<'a> {
    /// Shipment-shaped (for any message type: order bodies often fit too).
    Shipment(Shipment<'a>),
    /// `body` absent or `null`.
    Missing,
    /// Not shipment-shaped; only its `id` (string or number) is kept.
    Other { id: Option<String> },
}

/// A decoded message.
#[derive(Debug)]
pub(crate) struct Message<'a> {
    pub(crate) header: Header<'a>,
    pub(crate) body: Body<'a>,
}

/// Decodes a message in one pass when the body is shipment-shaped. Otherwise, a type that
/// does not carry a shipment is read loosely (it only becomes a notice), and a shipment type
/// gets the error with its JSON path.
///
/// `carries_shipment` says, from the header type, whether the body must be a shipment.
/// Unknown fields are noted in `drift` when given (of a loosely read body, only the header's).
pub(crate) fn decode<'a>(
    bytes: &'a [u8],
    carries_shipment: fn(&str) -> bool,
    mut drift: Option<&mut Drift>,
) -> Result<Message<'a>, Error> {
    use shipfeed_core::json::from_bytes_noting;
    if let Ok(envelope) = from_bytes_noting::<ShipmentEnvelope<'_>>(bytes, drift.as_deref_mut()) {
        return Ok(envelope.into_message());
    }
    if let Ok(loose) = from_bytes_noting::<LooseEnvelope<'_>>(bytes, drift) {
        if !carries_shipment(&loose.header.kind.0) {
            let id = match loose.body.get("id") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            return Ok(Message {
                header: loose.header.0,
                body: Body::Other { id },
            });
        }
    }
    // Not understood: decode again with path tracking so the error says where.
    shipfeed_core::json::decode::<ShipmentEnvelope<'_>>(bytes).map(ShipmentEnvelope::into_message)
}

impl<'a> ShipmentEnvelope<'a> {
    fn into_message(self) -> Message<'a> {
        Message {
            header: self.header.0,
            body: self
                .body
                .map_or(Body::Missing, |shipment| Body::Shipment(shipment.0)),
        }
    }
}

/// Fields HappyColis documents that the adapter does not read: not contract drift. Paths as
/// [`shipfeed_core::drift::Drift::documented`] reads them.
pub(crate) const DOCUMENTED: &[&str] = &[
    "body.addresses",
    "body.createdAt",
    "body.currency",
    "body.customer",
    "body.deliveredAt",
    "body.details",
    "body.events[].meta",
    "body.events[].shipmentId",
    "body.externalReference",
    "body.firstAttemptedAt",
    "body.format",
    "body.issuedAt",
    "body.lastEvent",
    "body.locationId",
    "body.meta",
    "body.orderId",
    "body.organizationId",
    "body.origin",
    "body.shippedAt",
    "body.shippingMethodId",
    "body.sku",
    "body.stock",
    "body.totalPrice",
    "body.volume",
    "body.volumeSellingUnit",
    "body.weight",
    "body.weightSellingUnit",
    "header.application",
    "header.organization",
    "header.organizationId",
    "header.webhookId",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn always(_: &str) -> bool {
        true
    }

    fn never(_: &str) -> bool {
        false
    }

    #[test]
    fn text_borrows_plain_strings_and_accepts_numbers() {
        let body = br#"{"header":{"type":"shipment/created","messageId":"m-1","date":"2024-01-01T00:00:00.000Z"},
            "body":{"id":"s-1","reference":1234,"events":[{"id":"e\u0031","event":"NEW"}]}}"#;
        let message = decode(body, always, None).unwrap();
        assert!(matches!(
            message.header.kind.0,
            std::borrow::Cow::Borrowed(_)
        ));
        let Body::Shipment(shipment) = message.body else {
            panic!("shipment expected")
        };
        assert_eq!(shipment.reference.unwrap().non_blank(), Some("1234"));
        let events = shipment.events.unwrap();
        // An escaped string cannot borrow, and is still read.
        assert_eq!(events[0].id.as_ref().unwrap().non_blank(), Some("e1"));
    }

    #[test]
    fn old_header_keys_are_read() {
        let body = br#"{"header":{"id":"old-1","type":"order/created","timestamp":1710569100,"organization":"o","application":"a"},"body":{"id":"ord-1"}}"#;
        let message = decode(body, never, None).unwrap();
        assert_eq!(message.header.delivery_id(), Some("old-1"));
        let sent = message
            .header
            .sent_at()
            .unwrap()
            .resolve(chrono_tz::UTC)
            .unwrap();
        assert_eq!(sent.at.to_rfc3339(), "2024-03-16T06:05:00+00:00");
    }

    #[test]
    fn a_body_that_is_not_a_shipment_is_loose_for_other_types_only() {
        let body = br#"{"header":{"type":"order/updated","messageId":"m"},"body":{"id":42,"events":"none"}}"#;
        let message = decode(body, never, None).unwrap();
        assert!(matches!(message.body, Body::Other { id: Some(ref id) } if id == "42"));

        let err = decode(body, always, None).unwrap_err();
        assert_eq!(err.path(), Some("body.events"));
    }

    #[test]
    fn errors_name_the_json_path() {
        let body = br#"{"header":{"type":"shipment/shipping_event"},"body":{"events":[{"id":"a"},{"id":{"x":1}}]}}"#;
        let err = decode(body, always, None).unwrap_err();
        assert_eq!(err.path(), Some("body.events[1].id"));
        let err = decode(br#"{"body":{}}"#, always, None).unwrap_err();
        assert!(err.message().contains("missing field `header`"), "{err}");
    }

    #[test]
    fn arrays_are_not_read_as_objects() {
        let body = br#"{"header":{"type":"shipment/created"},"body":["s-1","EXT-1"]}"#;
        let err = decode(body, always, None).unwrap_err();
        assert_eq!(err.path(), Some("body"));
        let body = br#"{"header":{"type":"shipment/created"},"body":{"events":[["e-1","NEW"]]}}"#;
        let err = decode(body, always, None).unwrap_err();
        assert_eq!(err.path(), Some("body.events[0]"));
        let err = decode(br#"{"header":["shipment/created"]}"#, never, None).unwrap_err();
        assert_eq!(err.path(), Some("header"));
    }
}
