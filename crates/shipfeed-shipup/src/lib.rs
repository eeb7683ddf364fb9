//! shipfeed adapter for [Shipup](https://developers.shipup.co) webhooks (`webhook_event`).
//!
//! [`ShipupAdapter`] checks the credentials Shipup sends (HTTP Basic, a fixed bearer token, or
//! a signed JWT checked against a key set) and turns a delivery into canonical outputs: every
//! event of the tracker (the one the delivery was sent for has `trigger: true`), a
//! `shipment_registered` notice for `tracker.new`, notices for `notification.new`,
//! `feedback.new`, unknown types and the endpoint probe. [`is_endpoint_probe`] recognizes the
//! probe, which a service answers without credentials and without storing it.
//!
//! ```
//! use shipfeed_core::{Adapter, Credentials, Output, RawDelivery, Secret, Status};
//! use shipfeed_shipup::ShipupAdapter;
//!
//! let body = br#"{"id": 3124444, "object": "webhook_event", "type": "tracker.events.new",
//!   "livemode": true, "retry_count": 0, "created_at": 1530213415,
//!   "data": {"reason": {"kind": "new", "event_id": 313345},
//!     "object": {"id": 345666, "carrier": {"code": "colissimo"}, "tracking_number": "AZ123456789BE",
//!       "events": [
//!         {"id": 312589, "happened_at": 1530040615, "event_type_code": "origin_scan"},
//!         {"id": 313345, "happened_at": 1530127015, "event_type_code": "out_for_delivery"}]}}}"#;
//! let delivery = RawDelivery::new(&body[..], chrono::DateTime::UNIX_EPOCH)
//!     .with_header("Authorization", "Bearer my-endpoint-token");
//! let credentials = Credentials::Bearer(Secret::new("my-endpoint-token"));
//!
//! let outputs = ShipupAdapter::new().construct(&delivery, &credentials)?;
//! let events: Vec<_> = outputs.iter().filter_map(Output::as_event).collect();
//! assert_eq!(events.len(), 2); // the whole history, with stable ids
//! assert_eq!(events[1].event_id.as_str(), "shipup:313345");
//! assert_eq!(events[1].status, Some(Status::OutForDelivery));
//! assert!(events[1].trigger && !events[0].trigger);
//! assert_eq!(events[0].shipment.carrier.as_deref(), Some("colissimo"));
//! # Ok::<(), shipfeed_core::Error>(())
//! ```
//!
#![doc = include_str!("docs.md")]
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
mod payload;
mod signature;
mod status;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use shipfeed_core::drift::Drift;
use shipfeed_core::json::Text;
use shipfeed_core::time::Instant;
use shipfeed_core::{
    json, Adapter, CredentialKind, Credentials, Error, EstimatedDelivery, EventId, Location,
    Mapping, Notice, NoticeKind, Output, Provider, RawDelivery, RawStatus, ShipmentRef, Status,
    TrackingEvent,
};

use crate::error::ShipupError;
use crate::payload::{text, Envelope, Event, Head, Object, Order};

/// The Shipup adapter: stateless, pure and cheap to construct.
#[derive(Debug, Clone, Default)]
pub struct ShipupAdapter;

impl ShipupAdapter {
    /// A new adapter.
    pub fn new() -> Self {
        ShipupAdapter
    }
}

impl Adapter for ShipupAdapter {
    fn provider(&self) -> Provider {
        Provider::Shipup
    }

    /// Accepts [`Credentials::Basic`] (checked with a constant-time comparison),
    /// [`Credentials::Bearer`] (a fixed token) or [`Credentials::Jwt`] (a signed token, its
    /// times checked against `received_at`); fails closed on [`Credentials::None`].
    fn verify(&self, delivery: &RawDelivery, credentials: &Credentials) -> Result<(), Error> {
        signature::verify(delivery, credentials)
    }

    /// HTTP Basic, a fixed bearer token, or a JWT.
    fn credential_kinds(&self) -> &'static [CredentialKind] {
        signature::CREDENTIAL_KINDS
    }

    /// Exactly the endpoint probe (see [`is_endpoint_probe`]).
    fn is_probe(&self, delivery: &RawDelivery) -> bool {
        is_endpoint_probe(&delivery.body)
    }

    /// Never panics. The endpoint probe, notifications, feedback and unknown types give a
    /// [`Notice`]; `tracker.*` deliveries give the tracker's events.
    fn parse(&self, delivery: &RawDelivery) -> Result<Vec<Output>, Error> {
        normalize(delivery, None)
    }

    fn parse_noting(
        &self,
        delivery: &RawDelivery,
        drift: &mut Drift,
    ) -> Result<Vec<Output>, Error> {
        drift.documented(payload::DOCUMENTED);
        normalize(delivery, Some(drift))
    }
}

/// The four documented webhook types, and everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WebhookType {
    TrackerNew,
    TrackerEventsNew,
    NotificationNew,
    FeedbackNew,
    Other,
}

impl WebhookType {
    fn of(raw: &str) -> Self {
        const KNOWN: [(&str, WebhookType); 4] = [
            ("tracker.new", WebhookType::TrackerNew),
            ("tracker.events.new", WebhookType::TrackerEventsNew),
            ("notification.new", WebhookType::NotificationNew),
            ("feedback.new", WebhookType::FeedbackNew),
        ];
        KNOWN
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(raw))
            .map_or(WebhookType::Other, |(_, kind)| *kind)
    }

    fn notice_kind(self) -> NoticeKind {
        match self {
            WebhookType::TrackerNew | WebhookType::TrackerEventsNew => {
                NoticeKind::ShipmentRegistered
            }
            WebhookType::NotificationNew => NoticeKind::Notification,
            WebhookType::FeedbackNew => NoticeKind::Feedback,
            WebhookType::Other => NoticeKind::Other,
        }
    }
}

/// The `raw_type` of the endpoint probe, which has no `type` of its own.
const PROBE_TYPE: &str = "endpoint_probe";

/// The probe's only member, with its documented value (a string, not a boolean).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Probe {
    livemode: String,
}

/// Whether `body` is exactly Shipup's endpoint probe, `{"livemode": "false"}`: a JSON object
/// whose only member is `livemode` with the *string* `"false"` (white space aside). Shipup
/// posts it when an endpoint is created or updated, refuses to save the endpoint without a
/// 200, and does not document whether it carries the configured credentials. It carries no
/// data, so a service may answer it without credentials and store nothing; any other body
/// (an extra member, a repeated one, `livemode: false` as a boolean, a real delivery) is not
/// the probe. Never panics.
///
/// ```
/// use shipfeed_shipup::is_endpoint_probe;
/// assert!(is_endpoint_probe(br#"{"livemode": "false"}"#));
/// assert!(!is_endpoint_probe(br#"{"livemode": "false", "type": "tracker.new"}"#));
/// assert!(!is_endpoint_probe(br#"{"livemode": false}"#));
/// ```
pub fn is_endpoint_probe(body: &[u8]) -> bool {
    // The probe is 21 bytes as documented; anything much longer is something else.
    const LONGEST: usize = 256;
    body.len() <= LONGEST
        && serde_json::from_slice::<Probe>(body).is_ok_and(|probe| probe.livemode == "false")
}

/// What every output of one delivery shares.
struct Context<'d> {
    delivery_id: Option<&'d str>,
    /// The envelope's `created_at`: set once by Shipup, so equal across retries.
    sent_at: Option<Instant>,
    received_at: DateTime<Utc>,
}

fn normalize(delivery: &RawDelivery, drift: Option<&mut Drift>) -> Result<Vec<Output>, Error> {
    let envelope = match json::decode_noting::<Envelope<'_>>(&delivery.body, drift) {
        Ok(envelope) => envelope,
        Err(error) => return acknowledge_unknown_shape(delivery, error),
    };
    let ctx = Context {
        delivery_id: text(&envelope.id),
        sent_at: envelope.created_at.map(|w| w.0),
        received_at: delivery.received_at,
    };
    let Some(raw_type) = text(&envelope.kind) else {
        // `{"livemode": "false"}`, posted when an endpoint is created or updated.
        if envelope.livemode.is_some() && envelope.data.is_none() {
            let probe = Notice::new(
                Provider::Shipup,
                NoticeKind::Ping,
                PROBE_TYPE,
                ctx.received_at,
            );
            return Ok(vec![Output::Notice(probe)]);
        }
        return Err(ShipupError::NoType.into());
    };
    let kind = WebhookType::of(raw_type);
    let data = envelope.data.as_ref();
    let object = data.and_then(|d| d.object.as_ref());

    match kind {
        WebhookType::TrackerNew | WebhookType::TrackerEventsNew => {
            let tracker = object.ok_or_else(|| ShipupError::NoTracker {
                kind: raw_type.to_owned(),
            })?;
            let mut outputs = Vec::with_capacity(1 + tracker.events.as_ref().map_or(0, Vec::len));
            let trigger = if kind == WebhookType::TrackerNew {
                outputs.push(Output::Notice(tracker_notice(raw_type, tracker, &ctx)));
                Trigger::NoEvent
            } else {
                let reason = data.and_then(|d| d.reason.as_ref());
                Trigger::Named(reason.and_then(|r| text(&r.event_id)))
            };
            tracker_events(tracker, trigger, &ctx, &mut outputs)?;
            Ok(outputs)
        }
        WebhookType::NotificationNew | WebhookType::FeedbackNew | WebhookType::Other => {
            Ok(vec![Output::Notice(subject_notice(
                kind, raw_type, object, &ctx,
            ))])
        }
    }
}

/// A non-tracking type whose `data` is not shaped as we expect is still acknowledged (it
/// carries nothing we would store); a `tracker.*` type or a body that is not an envelope at
/// all gets the decoding error, with its path.
fn acknowledge_unknown_shape(delivery: &RawDelivery, error: Error) -> Result<Vec<Output>, Error> {
    let error = error.with_provider(Provider::Shipup);
    let Ok(head) = json::decode::<Head<'_>>(&delivery.body) else {
        return Err(error);
    };
    let Some(raw_type) = text(&head.kind) else {
        return Err(error);
    };
    let kind = WebhookType::of(raw_type);
    if matches!(
        kind,
        WebhookType::TrackerNew | WebhookType::TrackerEventsNew
    ) {
        return Err(error);
    }
    let mut notice = Notice::new(
        Provider::Shipup,
        kind.notice_kind(),
        raw_type,
        delivery.received_at,
    );
    notice.delivery_id = text(&head.id).map(str::to_owned);
    Ok(vec![Output::Notice(notice)])
}

/// `tracker.new`: the shipment became known to Shipup.
fn tracker_notice(raw_type: &str, tracker: &Object<'_>, ctx: &Context<'_>) -> Notice {
    let mut notice = Notice::new(
        Provider::Shipup,
        NoticeKind::ShipmentRegistered,
        raw_type,
        ctx.received_at,
    );
    notice.delivery_id = ctx.delivery_id.map(str::to_owned);
    notice.subject_id = text(&tracker.id).map(str::to_owned);
    notice.occurred_at = tracker
        .created_at
        .map(|w| w.0)
        .or(ctx.sent_at)
        .map(|i| i.at);
    notice.shipment = Some(shipment_ref(tracker, SourceKind::Tracker));
    notice
}

/// `notification.new`, `feedback.new` or an unknown type: the subject's id and time, and the
/// shipment its `source` (tracker, fulfillment or order) names.
fn subject_notice(
    kind: WebhookType,
    raw_type: &str,
    object: Option<&Object<'_>>,
    ctx: &Context<'_>,
) -> Notice {
    let mut notice = Notice::new(
        Provider::Shipup,
        kind.notice_kind(),
        raw_type,
        ctx.received_at,
    );
    notice.delivery_id = ctx.delivery_id.map(str::to_owned);
    if let Some(object) = object {
        notice.subject_id = text(&object.id).map(str::to_owned);
        notice.occurred_at = object.created_at.map(|w| w.0.at);
        // The subject itself may be a shipment (an unknown `tracker.*` type).
        let shipment = match object.source.as_deref() {
            Some(source) => SourceKind::of(source).map(|k| shipment_ref(source, k)),
            None => SourceKind::of(object)
                .filter(|_| text(&object.object).is_some())
                .map(|k| shipment_ref(object, k)),
        };
        notice.shipment = shipment.filter(|s| *s != ShipmentRef::default());
    }
    notice.occurred_at = notice.occurred_at.or(ctx.sent_at.map(|i| i.at));
    notice
}

/// Which delivery-level object a shipment reference is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    Tracker,
    Fulfillment,
    Order,
}

impl SourceKind {
    /// From the object's `object` field; an untagged object is read as a tracker. Other
    /// objects (a notification, a feedback) name no shipment.
    fn of(object: &Object<'_>) -> Option<Self> {
        match text(&object.object) {
            None => Some(SourceKind::Tracker),
            Some(name) if name.eq_ignore_ascii_case("tracker") => Some(SourceKind::Tracker),
            Some(name) if name.eq_ignore_ascii_case("fulfillment") => Some(SourceKind::Fulfillment),
            Some(name) if name.eq_ignore_ascii_case("order") => Some(SourceKind::Order),
            Some(_) => None,
        }
    }
}

fn owned(field: &Option<Text<'_>>) -> Option<String> {
    text(field).map(str::to_owned)
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Shipment identity from a tracker (or a fulfillment / order a notification came from).
fn shipment_ref(object: &Object<'_>, kind: SourceKind) -> ShipmentRef {
    let mut shipment = ShipmentRef::default();
    match kind {
        SourceKind::Tracker => {
            let carrier = object.carrier.as_ref();
            shipment.carrier = carrier
                .and_then(|c| text(&c.code))
                .or_else(|| text(&object.carrier_code))
                .or_else(|| carrier.and_then(|c| text(&c.name)))
                .and_then(shipfeed_core::carrier::normalize);
            shipment.tracking_number = owned(&object.tracking_number);
            shipment.provider_shipment_id = owned(&object.id);
            shipment.tracking_url = owned(&object.carrier_tracking_url);
            shipment.add_reference("tracker_uuid", text(&object.uuid));
            let service = object.carrier_service.as_ref();
            shipment.add_reference("carrier_service", service.and_then(|s| text(&s.code)));
            for (name, at) in [
                ("shipped_at", object.shipped_at),
                (
                    "first_delivery_attempted_at",
                    object.first_delivery_attempted_at,
                ),
                ("delivered_at", object.delivered_at),
            ] {
                shipment.add_reference(name, at.map(|w| rfc3339(w.0.at)));
            }
            if let Some(f) = &object.fulfillment {
                add_fulfillment(&mut shipment, &f.id, &f.fulfillment_number, &f.merchant_id);
                add_order(&mut shipment, f.order.as_ref());
            }
        }
        SourceKind::Fulfillment => {
            add_fulfillment(
                &mut shipment,
                &object.id,
                &object.fulfillment_number,
                &object.merchant_id,
            );
            add_order(&mut shipment, object.order.as_ref());
        }
        SourceKind::Order => {
            shipment.order_number = owned(&object.order_number);
            shipment.add_reference("order_id", text(&object.id));
            shipment.add_reference("order_merchant_id", text(&object.merchant_id));
        }
    }
    shipment
}

fn add_fulfillment(
    shipment: &mut ShipmentRef,
    id: &Option<Text<'_>>,
    number: &Option<Text<'_>>,
    merchant_id: &Option<Text<'_>>,
) {
    shipment.add_reference("fulfillment_id", text(id));
    shipment.add_reference("fulfillment_number", text(number));
    shipment.add_reference("fulfillment_merchant_id", text(merchant_id));
    // The fulfillment number stands in for the order number when no order is attached.
    if shipment.order_number.is_none() {
        shipment.order_number = owned(number);
    }
}

fn add_order(shipment: &mut ShipmentRef, order: Option<&Order<'_>>) {
    let Some(order) = order else { return };
    if let Some(number) = text(&order.order_number) {
        shipment.order_number = Some(number.to_owned());
    }
    shipment.add_reference("order_id", text(&order.id));
    shipment.add_reference("order_merchant_id", text(&order.merchant_id));
}

/// Which of a tracker's events the delivery was sent for.
#[derive(Debug, Clone, Copy)]
enum Trigger<'a> {
    /// `tracker.events.new`: `data.reason.event_id`, when given.
    Named(Option<&'a str>),
    /// `tracker.new`: the delivery is about the tracker; its events are context.
    NoEvent,
}

/// The tracker's expected delivery, from its display fields. Unparseable values are dropped:
/// they are a display aid and never worth rejecting a delivery for.
fn estimated_delivery(tracker: &Object<'_>) -> Option<EstimatedDelivery> {
    let at = tracker
        .displayable_expected_delivery_datetime
        .as_ref()
        .and_then(|t| t.resolve(chrono_tz::UTC))
        .map(|i| i.at);
    let date = text(&tracker.displayable_expected_delivery_date)
        .and_then(|d| d.get(..10))
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .or_else(|| at.map(|at| at.date_naive()))?;
    Some(EstimatedDelivery { date, at })
}

/// A key naming the tracker, for derived event ids: its id, its uuid, or carrier and number.
fn tracker_key(tracker: &Object<'_>, shipment: &ShipmentRef) -> String {
    text(&tracker.id)
        .or_else(|| text(&tracker.uuid))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let carrier = shipment.carrier.as_deref().unwrap_or("");
            let number = shipment.tracking_number.as_deref().unwrap_or("");
            format!("{carrier}/{number}")
        })
}

/// Appends the tracker's events (or, when it has none, its current status) to `outputs`.
fn tracker_events(
    tracker: &Object<'_>,
    trigger: Trigger<'_>,
    ctx: &Context<'_>,
    outputs: &mut Vec<Output>,
) -> Result<(), Error> {
    let shipment = shipment_ref(tracker, SourceKind::Tracker);
    let key = tracker_key(tracker, &shipment);
    let raw_events = tracker.events.as_deref().unwrap_or_default();

    if raw_events.is_empty() {
        if let Some(mut event) = status_event(tracker, shipment, &key, ctx) {
            event.estimated_delivery = estimated_delivery(tracker);
            outputs.push(Output::Event(event));
        }
        return Ok(());
    }

    let facts = TrackerFacts {
        shipment: &shipment,
        key: &key,
        delivered_at: tracker.delivered_at.map(|w| w.0.at),
    };
    let mut events = raw_events
        .iter()
        .enumerate()
        .map(|(index, raw)| tracking_event(raw, index, &facts, ctx))
        .collect::<Result<Vec<_>, Error>>()?;

    // The latest event (by time, then by position in Shipup's list).
    let latest = events
        .iter()
        .enumerate()
        .max_by_key(|(index, e)| (e.occurred_at, *index))
        .map(|(index, _)| index);
    let trigger = match trigger {
        Trigger::Named(id) => id
            .and_then(|id| raw_events.iter().position(|e| text(&e.id) == Some(id)))
            // Reason missing or naming an event not in the list: Shipup sends one delivery
            // per new event and new events are the latest, so the latest is the best guess.
            .or(latest),
        Trigger::NoEvent => None,
    };
    if let Some(index) = trigger.or(latest) {
        if let Some(event) = events.get_mut(index) {
            event.estimated_delivery = estimated_delivery(tracker);
        }
    }
    if let Some(event) = trigger.and_then(|index| events.get_mut(index)) {
        event.trigger = true;
    }
    outputs.extend(events.into_iter().map(Output::Event));
    Ok(())
}

/// What every event of one tracker shares.
#[derive(Clone, Copy)]
struct TrackerFacts<'t> {
    shipment: &'t ShipmentRef,
    key: &'t str,
    delivered_at: Option<DateTime<Utc>>,
}

/// One tracker event in canonical form (`trigger: false`, no estimate: the caller decides).
fn tracking_event(
    event: &Event<'_>,
    index: usize,
    tracker: &TrackerFacts<'_>,
    ctx: &Context<'_>,
) -> Result<TrackingEvent, Error> {
    let TrackerFacts {
        shipment,
        key: tracker_key,
        delivered_at,
    } = *tracker;
    let occurred = event
        .happened_at
        .or(event.created_at)
        .map(|w| w.0)
        .ok_or(ShipupError::UntimedEvent { index })?;
    let slug = text(&event.standard_event_slug)
        .or_else(|| event.standard_event.as_ref().and_then(|s| text(&s.slug)));
    let type_code = text(&event.event_type_code);
    let (mut mapping, code) = status::map_event(type_code, slug);
    if type_code.is_none() && mapping == Mapping::unmapped() && delivered_at == Some(occurred.at) {
        // No code, but Shipup declares the tracker delivered at exactly this instant (as in its
        // documentation example): this is the delivery. Stable, since `delivered_at` is too.
        mapping = Mapping::status(Status::Delivered);
    }
    let event_id = match text(&event.id) {
        Some(id) => EventId::from_provider(Provider::Shipup, id),
        None => EventId::derived(
            Provider::Shipup,
            &[
                "event",
                tracker_key,
                &rfc3339(occurred.at),
                code.unwrap_or(""),
            ],
        ),
    };
    let recorded_at = event
        .created_at
        .or(event.updated_at)
        .map(|w| w.0.at)
        .filter(|at| *at != occurred.at);
    let location = event.address.as_ref().and_then(|a| {
        Location {
            city: owned(&a.city),
            postal_code: owned(&a.zip),
            country: text(&a.country_code)
                .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
                .map(str::to_ascii_uppercase),
            description: None,
        }
        .non_empty()
    });
    Ok(TrackingEvent {
        event_id,
        provider: Provider::Shipup,
        status: Some(mapping.status),
        substatus: mapping.substatus.map(str::to_owned),
        raw: RawStatus {
            code: code.map(str::to_owned),
            message: event_message(event),
        },
        occurred_at: occurred.at,
        time_zone_known: occurred.zone_known,
        recorded_at,
        received_at: ctx.received_at,
        shipment: shipment.clone(),
        location,
        estimated_delivery: None,
        message: None,
        delivery_id: ctx.delivery_id.map(str::to_owned),
        trigger: false,
    })
}

/// `message`, else the English entry of `messages`, else the first non-blank one.
fn event_message(event: &Event<'_>) -> Option<String> {
    if let Some(message) = text(&event.message) {
        return Some(message.to_owned());
    }
    let messages = event.messages.as_ref()?;
    let english = messages
        .iter()
        .find(|(lang, _)| lang.eq_ignore_ascii_case("en"))
        .and_then(|(_, m)| text(m));
    english
        .or_else(|| messages.values().find_map(text))
        .map(str::to_owned)
}

/// A tracker with no events still has a `delivery_status_code` (usually `pending`); it becomes
/// one event at the tracker's creation time so the shipment has a state. `None` when there is
/// no code or no stable time to give it.
fn status_event(
    tracker: &Object<'_>,
    shipment: ShipmentRef,
    tracker_key: &str,
    ctx: &Context<'_>,
) -> Option<TrackingEvent> {
    let code = text(&tracker.delivery_status_code)?;
    let occurred = tracker.created_at.map(|w| w.0).or(ctx.sent_at)?;
    let mapping = status::map_delivery_status_code(code).unwrap_or(Mapping::unmapped());
    Some(TrackingEvent {
        event_id: EventId::derived(
            Provider::Shipup,
            &[
                "delivery_status_code",
                tracker_key,
                &rfc3339(occurred.at),
                code,
            ],
        ),
        provider: Provider::Shipup,
        status: Some(mapping.status),
        substatus: mapping.substatus.map(str::to_owned),
        raw: RawStatus {
            code: Some(code.to_owned()),
            message: None,
        },
        occurred_at: occurred.at,
        time_zone_known: occurred.zone_known,
        recorded_at: None,
        received_at: ctx.received_at,
        shipment,
        location: None,
        estimated_delivery: None,
        message: None,
        delivery_id: ctx.delivery_id.map(str::to_owned),
        trigger: true,
    })
}

#[cfg(test)]
mod tests;
