#![doc = include_str!("docs.md")]
#![forbid(unsafe_code)]

mod payload;
mod signature;
mod status;

use chrono::{DateTime, Utc};
use shipfeed_core::drift::Drift;
use shipfeed_core::json::{self, Text, TimeValue};
use shipfeed_core::{
    carrier, Adapter, CredentialKind, Credentials, Error, EventId, Location, Notice, NoticeKind,
    Output, Provider, RawDelivery, RawStatus, ShipmentRef, TrackingEvent,
};

use payload::{Carrier, Envelope, Parcel};
pub use signature::SIGNATURE_HEADER;

const PROVIDER: Provider = Provider::Sendcloud;

/// The Sendcloud adapter: legacy integration webhooks (v2 and v3 shapes) and v3 Event
/// Subscriptions (`parcels.event.created`).
#[derive(Debug, Clone, Default)]
pub struct SendcloudAdapter;

impl SendcloudAdapter {
    /// A new adapter. It holds no state: Sendcloud gives every time as a unix number or as
    /// text with an offset.
    pub fn new() -> Self {
        SendcloudAdapter
    }
}

impl Adapter for SendcloudAdapter {
    fn provider(&self) -> Provider {
        PROVIDER
    }

    fn verify(&self, delivery: &RawDelivery, credentials: &Credentials) -> Result<(), Error> {
        signature::verify(delivery, credentials)
    }

    /// The webhooks' HMAC secret, or Basic, a fixed bearer token or a header token (Event
    /// Subscriptions connections).
    fn credential_kinds(&self) -> &'static [CredentialKind] {
        signature::CREDENTIAL_KINDS
    }

    fn parse(&self, delivery: &RawDelivery) -> Result<Vec<Output>, Error> {
        parse(delivery, None).map_err(|e| e.with_provider(PROVIDER))
    }

    fn parse_noting(
        &self,
        delivery: &RawDelivery,
        drift: &mut Drift,
    ) -> Result<Vec<Output>, Error> {
        drift.documented(payload::DOCUMENTED);
        parse(delivery, Some(drift)).map_err(|e| e.with_provider(PROVIDER))
    }
}

fn parse(delivery: &RawDelivery, mut drift: Option<&mut Drift>) -> Result<Vec<Output>, Error> {
    let envelope: Envelope<'_> = json::decode_noting(&delivery.body, drift.as_deref_mut())?;
    let action = envelope.action.as_ref().and_then(Text::non_blank);
    let event_type = envelope.event_type.as_ref().and_then(Text::non_blank);
    let at = |t: &Option<TimeValue<'_>>| {
        t.as_ref()
            .and_then(|t| t.resolve(chrono_tz::UTC))
            .map(|i| i.at)
    };
    let notice = |kind, raw_type: &str| {
        let mut notice = Notice::new(PROVIDER, kind, raw_type, delivery.received_at);
        notice.occurred_at = at(&envelope.timestamp);
        notice
    };
    let output = match (action, event_type) {
        (Some("parcel_status_changed"), _) => {
            Output::Event(parcel_event(&envelope, delivery, drift)?)
        }
        (Some(kind @ ("integration_connected" | "integration_updated" | "integration_modified"
            | "integration_deleted" | "integration_credentials")), _) => {
            let mut notice = notice(NoticeKind::Integration, kind);
            notice.subject_id = envelope.integration.as_ref().and_then(|i| i.id.as_ref()).and_then(Text::to_non_blank);
            Output::Notice(notice)
        }
        (Some(kind @ "return_created"), _) => {
            let mut notice = notice(NoticeKind::ReturnCreated, kind);
            let data = envelope.data.as_ref();
            notice.subject_id = data.and_then(|d| d.id.as_ref()).and_then(Text::to_non_blank);
            let order_number = data.and_then(|d| d.order_number.as_ref()).and_then(Text::to_non_blank);
            notice.shipment = order_number.map(|order_number| ShipmentRef {
                order_number: Some(order_number),
                ..ShipmentRef::default()
            });
            Output::Notice(notice)
        }
        (Some(kind @ "test_webhook"), _) => Output::Notice(notice(NoticeKind::Ping, kind)),
        // An action nobody documented yet is data, not an error: acknowledge and count it.
        (Some(other), _) => Output::Notice(notice(NoticeKind::Other, other)),
        (None, Some(_)) => Output::Event(subscription_event(&envelope, delivery)?),
        (None, None) => {
            return Err(Error::payload(
                "neither `action` (integration webhook) nor `event_type` (event subscription) is present",
            ))
        }
    };
    Ok(vec![output])
}

fn parcel_event(
    envelope: &Envelope<'_>,
    delivery: &RawDelivery,
    drift: Option<&mut Drift>,
) -> Result<TrackingEvent, Error> {
    let parcel = envelope.parcel.as_ref().ok_or_else(|| {
        Error::payload("`parcel_status_changed` without a `parcel`").with_path("parcel")
    })?;
    let resolve = |t: &Option<TimeValue<'_>>| {
        t.as_ref()
            .and_then(|t| t.resolve(chrono_tz::UTC))
            .map(|i| i.at)
    };
    let sent_at = resolve(&envelope.timestamp);
    let carrier_at = resolve(&envelope.carrier_status_change_timestamp);
    // The carrier's own time is when it happened; `timestamp` is when Sendcloud recorded it.
    let occurred_at = carrier_at.or(sent_at).ok_or_else(|| {
        Error::payload("no usable `timestamp` or `carrier_status_change_timestamp`")
            .with_path("timestamp")
    })?;

    let status = parcel.status.as_ref();
    let status_id = status.and_then(|s| s.id.as_ref()).and_then(Text::non_blank);
    let status_code = status
        .and_then(|s| s.code.as_ref())
        .and_then(Text::non_blank);
    let status_message = status
        .and_then(|s| s.message.as_ref())
        .and_then(Text::non_blank);
    let mapping = status::map_status(
        status_id.and_then(|id| id.parse().ok()),
        status_code,
        status_message,
    );
    let raw = RawStatus {
        code: status_id.or(status_code).map(str::to_owned),
        message: status_message.map(str::to_owned),
    };
    let shipment = parcel_shipment(parcel, drift);
    let event_id = EventId::derived(
        PROVIDER,
        &[
            shipment.provider_shipment_id.as_deref().unwrap_or(""),
            shipment.tracking_number.as_deref().unwrap_or(""),
            &occurred_at.timestamp_millis().to_string(),
            status_id.or(status_code).or(status_message).unwrap_or(""),
        ],
    );
    Ok(TrackingEvent {
        event_id,
        provider: PROVIDER,
        status: Some(mapping.status),
        substatus: mapping.substatus.map(str::to_owned),
        raw,
        occurred_at,
        time_zone_known: true,
        recorded_at: sent_at.filter(|at| *at != occurred_at),
        received_at: delivery.received_at,
        shipment,
        location: None,
        estimated_delivery: None,
        message: None,
        delivery_id: None,
        trigger: true,
    })
}

fn parcel_shipment(parcel: &Parcel<'_>, drift: Option<&mut Drift>) -> ShipmentRef {
    let text = |f: &Option<Text<'_>>| f.as_ref().and_then(Text::to_non_blank);
    let tracking_url = text(&parcel.tracking_url);
    let carrier = match &parcel.carrier {
        Some(Carrier::Code(code)) => carrier::normalize(code),
        Some(Carrier::Object { code, name }) => code
            .as_ref()
            .and_then(Text::non_blank)
            .and_then(carrier::normalize)
            .or_else(|| {
                name.as_ref()
                    .and_then(Text::non_blank)
                    .and_then(carrier::recognize)
            }),
        None => None,
    }
    .or_else(|| tracking_url.as_deref().and_then(carrier_from_tracking_url))
    .or_else(|| {
        let method = parcel.shipment.as_ref()?.name.as_ref()?;
        carrier::recognize(method.non_blank()?)
    });
    let mut shipment = ShipmentRef {
        carrier,
        tracking_number: text(&parcel.tracking_number),
        order_number: text(&parcel.order_number),
        provider_shipment_id: text(&parcel.id),
        tracking_url,
        ..ShipmentRef::default()
    };
    for (name, value) in [
        ("shipment_uuid", &parcel.shipment_uuid),
        ("external_order_id", &parcel.external_order_id),
        ("external_shipment_id", &parcel.external_shipment_id),
        ("colli_uuid", &parcel.colli_uuid),
        ("reference", &parcel.reference),
    ] {
        shipment.add_reference(name, text(value));
    }
    match &parcel.is_return {
        Some(serde_json::Value::Bool(true)) => shipment.add_reference("is_return", Some("true")),
        Some(serde_json::Value::Bool(false) | serde_json::Value::Null) | None => {}
        // Documented as a boolean; anything else is read as not a return, and noted.
        Some(other) => {
            if let Some(drift) = drift {
                drift.unexpected_type("parcel.is_return", other);
            }
        }
    }
    shipment
}

/// A present, non-blank text field.
fn field<'t>(f: &'t Option<Text<'_>>) -> Option<&'t str> {
    f.as_ref().and_then(Text::non_blank)
}

/// Sendcloud's tracking links name the carrier: `...forward?carrier=postnl&code=...`.
fn carrier_from_tracking_url(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("carrier="))
        .and_then(carrier::normalize)
}

fn subscription_event(
    envelope: &Envelope<'_>,
    delivery: &RawDelivery,
) -> Result<TrackingEvent, Error> {
    let data = envelope
        .data
        .as_ref()
        .ok_or_else(|| Error::payload("event subscription without `data`").with_path("data"))?;
    let event = data.event.as_ref().ok_or_else(|| {
        Error::payload("event subscription without `data.event`").with_path("data.event")
    })?;
    let occurred_at: DateTime<Utc> = event
        .timestamp
        .as_ref()
        .and_then(|t| t.resolve(chrono_tz::UTC))
        .map(|i| i.at)
        .ok_or_else(|| {
            Error::payload("no usable event timestamp").with_path("data.event.timestamp")
        })?;
    let phase = field(&event.phase);
    let exception = field(&event.exception).filter(|e| !e.eq_ignore_ascii_case("none"));
    let sub_status = field(&event.sub_status);
    let mapping = status::map_subscription_event(phase, exception, event.is_returned == Some(true));
    let phase_code = match (phase, exception) {
        (Some(p), Some(e)) => Some(format!("{p}/{e}")),
        (Some(p), None) => Some(p.to_owned()),
        (None, e) => e.map(str::to_owned),
    };
    let parcel = data.parcel.as_ref();
    let parcel_text = |f: Option<&Option<Text<'_>>>| f.and_then(|t| field(t)).map(str::to_owned);
    let shipment = ShipmentRef {
        carrier: parcel_text(parcel.map(|p| &p.carrier_code))
            .as_deref()
            .and_then(carrier::normalize),
        tracking_number: parcel_text(parcel.map(|p| &p.tracking_number)),
        provider_shipment_id: parcel_text(parcel.map(|p| &p.parcel_id)),
        ..ShipmentRef::default()
    };
    let location = event.location_details.as_ref().and_then(|l| {
        Location {
            city: field(&l.city).map(str::to_owned),
            postal_code: field(&l.postal_code).map(str::to_owned),
            country: field(&l.country_code).map(str::to_ascii_uppercase),
            description: None,
        }
        .non_empty()
    });
    let event_id = EventId::derived(
        PROVIDER,
        &[
            shipment.provider_shipment_id.as_deref().unwrap_or(""),
            shipment.tracking_number.as_deref().unwrap_or(""),
            &occurred_at.timestamp_millis().to_string(),
            phase_code.as_deref().unwrap_or(""),
            sub_status.unwrap_or(""),
        ],
    );
    Ok(TrackingEvent {
        event_id,
        provider: PROVIDER,
        status: Some(mapping.status),
        substatus: mapping.substatus.map(str::to_owned),
        raw: RawStatus {
            code: sub_status.map(str::to_owned).or(phase_code),
            message: field(&event.description).map(str::to_owned),
        },
        occurred_at,
        time_zone_known: true,
        recorded_at: None,
        received_at: delivery.received_at,
        shipment,
        location,
        estimated_delivery: None,
        message: None,
        delivery_id: None,
        trigger: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipfeed_core::drift::DriftKind;
    use shipfeed_core::{ErrorKind, Status};

    fn parse_str(body: &str) -> Result<Vec<Output>, Error> {
        SendcloudAdapter::new().parse(&RawDelivery::new(body, DateTime::default()))
    }

    fn only_event(body: &str) -> TrackingEvent {
        let outputs = parse_str(body).unwrap();
        assert_eq!(outputs.len(), 1);
        outputs[0].as_event().cloned().unwrap()
    }

    #[test]
    fn v2_parcel_status_changed_maps_status_carrier_and_time() {
        let event = only_event(
            r#"{"action": "parcel_status_changed", "timestamp": 1712163088943, "carrier_status_change_timestamp": 1712163088908,
                "parcel": {"id": 42, "tracking_number": "3SABC", "status": {"id": 93, "message": "Shipment collected by customer"},
                "carrier": {"code": "postnl"}, "order_number": 1001, "external_order_id": "AMZ1"}}"#,
        );
        assert_eq!(event.status, Some(Status::Delivered));
        assert_eq!(
            event.substatus.as_deref(),
            Some("delivered.collected_by_recipient")
        );
        assert_eq!(event.raw.code.as_deref(), Some("93"));
        assert_eq!(event.shipment.carrier.as_deref(), Some("postnl"));
        assert_eq!(event.shipment.order_number.as_deref(), Some("1001"));
        assert_eq!(
            event.occurred_at.to_rfc3339(),
            "2024-04-03T16:51:28.908+00:00"
        );
        assert_eq!(
            event.recorded_at.map(|t| t.timestamp_millis()),
            Some(1_712_163_088_943)
        );
    }

    #[test]
    fn seconds_timestamps_are_tolerated() {
        let event = only_event(
            r#"{"action": "parcel_status_changed", "timestamp": 1712163088, "parcel": {"status": {"id": 11}}}"#,
        );
        assert_eq!(event.occurred_at.timestamp(), 1_712_163_088);
        assert_eq!(event.status, Some(Status::Delivered));
    }

    #[test]
    fn v3_code_without_id_and_carrier_from_tracking_url() {
        let event = only_event(
            r#"{"action": "parcel_status_changed", "timestamp": 1712163088943,
                "parcel": {"status": {"code": "AWAITING_CUSTOMER_PICKUP", "message": "Awaiting customer pickup"},
                "tracking_url": "https://tracking.sendcloud.sc/forward?carrier=postnl&code=3SYZ&destination=NL"}}"#,
        );
        assert_eq!(event.status, Some(Status::AvailableForPickup));
        assert_eq!(event.raw.code.as_deref(), Some("AWAITING_CUSTOMER_PICKUP"));
        assert_eq!(event.shipment.carrier.as_deref(), Some("postnl"));
    }

    #[test]
    fn unknown_status_is_unmapped_but_kept() {
        let event = only_event(
            r#"{"action": "parcel_status_changed", "timestamp": 1712163088943, "parcel": {"status": {"id": 77777, "message": "Beamed up"}}}"#,
        );
        assert!(event.is_unmapped());
        assert_eq!(event.raw.code.as_deref(), Some("77777"));
        assert_eq!(event.raw.message.as_deref(), Some("Beamed up"));
    }

    #[test]
    fn the_same_body_always_gives_the_same_event_id() {
        let body = r#"{"action": "parcel_status_changed", "timestamp": 1712163088943, "parcel": {"id": 1, "status": {"id": 3}}}"#;
        let a = SendcloudAdapter::new()
            .parse(&RawDelivery::new(body, DateTime::default()))
            .unwrap();
        let later = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let b = SendcloudAdapter::new()
            .parse(&RawDelivery::new(body, later))
            .unwrap();
        assert_eq!(
            a[0].as_event().unwrap().event_id,
            b[0].as_event().unwrap().event_id
        );
    }

    #[test]
    fn non_tracking_actions_are_notices() {
        for (action, kind) in [
            ("integration_connected", NoticeKind::Integration),
            ("integration_updated", NoticeKind::Integration),
            ("integration_deleted", NoticeKind::Integration),
            ("integration_credentials", NoticeKind::Integration),
            ("return_created", NoticeKind::ReturnCreated),
            ("test_webhook", NoticeKind::Ping),
            ("something_new", NoticeKind::Other),
        ] {
            let body = format!(
                r#"{{"action": "{action}", "timestamp": 1525271885993, "integration": {{"id": 7}}, "data": {{"id": 42}}}}"#
            );
            let outputs = parse_str(&body).unwrap();
            let notice = outputs[0].as_notice().unwrap();
            assert_eq!((notice.kind, notice.raw_type.as_str()), (kind, action));
        }
    }

    #[test]
    fn missing_parcel_and_missing_time_are_payload_errors_with_paths() {
        let err = parse_str(r#"{"action": "parcel_status_changed", "timestamp": 1}"#).unwrap_err();
        assert_eq!(
            (err.kind(), err.path()),
            (ErrorKind::Payload, Some("parcel"))
        );
        let err = parse_str(r#"{"action": "parcel_status_changed", "parcel": {}}"#).unwrap_err();
        assert_eq!(err.path(), Some("timestamp"));
        let err = parse_str(r#"{"action": "parcel_status_changed", "parcel": {"status": []}}"#)
            .unwrap_err();
        assert_eq!(err.path(), Some("parcel.status"));
        assert_eq!(err.provider(), Some(Provider::Sendcloud));
        assert_eq!(parse_str("[]").unwrap_err().kind(), ErrorKind::Payload);
        assert_eq!(parse_str("{}").unwrap_err().kind(), ErrorKind::Payload);
    }

    #[test]
    fn unknown_fields_and_unexpected_types_are_noted() {
        let body = r#"{"action": "parcel_status_changed", "timestamp": 1712163088943, "brand_new": 1,
            "parcel": {"status": {"id": 3, "colour": "red"}, "is_return": "yes"}}"#;
        let mut drift = Drift::new(PROVIDER);
        let outputs = SendcloudAdapter::new()
            .parse_noting(&RawDelivery::new(body, DateTime::default()), &mut drift)
            .unwrap();
        assert_eq!(outputs, parse_str(body).unwrap());
        let noted: Vec<_> = drift
            .observations()
            .iter()
            .map(|o| (o.kind, o.key.as_str()))
            .collect();
        assert_eq!(
            noted,
            [
                (DriftKind::UnknownField, "brand_new"),
                (DriftKind::UnknownField, "parcel.status.colour"),
                (DriftKind::UnexpectedType, "parcel.is_return: string"),
            ]
        );
    }

    #[test]
    fn event_subscription_maps_phase_exception_and_location() {
        let event = only_event(
            r#"{"event_type": "parcels.event.created", "data": {
                "parcel": {"parcel_id": 9, "tracking_number": "JJD1", "carrier_code": "dhl_de"},
                "event": {"timestamp": "2025-01-02T10:00:00+01:00", "phase": "in_transit", "exception": "delivery_delay",
                          "sub_status": "DELAYED", "description": "Late", "location_details": {"city": "Köln", "country_code": "de"}}}}"#,
        );
        assert_eq!(event.status, Some(Status::Exception));
        assert_eq!(event.substatus.as_deref(), Some("exception.delayed"));
        assert_eq!(event.raw.code.as_deref(), Some("DELAYED"));
        assert_eq!(event.occurred_at.to_rfc3339(), "2025-01-02T09:00:00+00:00");
        assert_eq!(event.shipment.carrier.as_deref(), Some("dhl"));
        assert_eq!(event.location.unwrap().country.as_deref(), Some("DE"));
    }
}
