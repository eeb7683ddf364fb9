//! Unit tests of the normalization (authentication and tables are tested next to their code).

use serde_json::{json, Value};
use shipfeed_core::{
    Adapter, Credentials, ErrorKind, NoticeKind, Output, Provider, RawDelivery, Secret, Status,
    TrackingEvent, UNMAPPED,
};

use crate::signature::basic_authorization;
use crate::ShipupAdapter;

fn received_at() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_717_243_200, 0).unwrap_or_default()
}

fn parse(body: &Value) -> Result<Vec<Output>, shipfeed_core::Error> {
    let bytes = serde_json::to_vec(body).unwrap();
    ShipupAdapter::new().parse(&RawDelivery::new(bytes, received_at()))
}

fn events(outputs: &[Output]) -> Vec<&TrackingEvent> {
    outputs.iter().filter_map(Output::as_event).collect()
}

fn tracker(events: Value) -> Value {
    json!({
        "id": 345666, "object": "tracker", "uuid": "9b2f0c1e-0000-4000-8000-000000000001",
        "carrier": {"name": "Colissimo", "code": "colissimo"}, "carrier_code": "colissimo",
        "carrier_service": {"code": "base", "name": "Base"},
        "carrier_tracking_url": "https://www.laposte.fr/outils/suivre-vos-envois?code=AZ123456789BE",
        "created_at": 1530000000, "shipped_at": 1530040615, "delivered_at": null,
        "delivery_status_code": "in_transit",
        "displayable_expected_delivery_date": "2018-06-28",
        "displayable_expected_delivery_datetime": null,
        "tracking_number": "AZ123456789BE",
        "fulfillment": {"id": 36789, "object": "fulfillment", "merchant_id": "internal_id_1234",
            "fulfillment_number": "XYZABCD_1",
            "order": {"id": 311111, "object": "order", "order_number": "ABCD123", "merchant_id": "internal_id_9876"}},
        "events": events,
    })
}

fn envelope(kind: &str, object: Value, reason: Value) -> Value {
    json!({
        "id": 3124444, "object": "webhook_event", "type": kind, "livemode": true,
        "retry_count": 2, "created_at": 1530213415, "webhook_setting_id": 335777,
        "data": {"object": object, "reason": reason},
    })
}

fn three_events() -> Value {
    json!([
        {"id": 312589, "object": "event", "happened_at": 1530040615, "event_type_code": "origin_scan",
         "message": "Your package has been scanned", "raw": "{}",
         "address": {"city": "Paris", "zip": "75001", "country": "France", "country_code": "fr"},
         "standard_event": {"name": "Origin scan", "slug": "origin_scan"}},
        {"id": 313345, "object": "event", "happened_at": 1530127015, "event_type_code": "out_for_delivery",
         "message": "Your package has been sent", "created_at": 1530127315, "updated_at": 1530127315},
        {"id": 31357, "object": "event", "happened_at": 1530213415, "event_type_code": null,
         "message": "raw event message"},
    ])
}

#[test]
fn the_probe_is_a_ping() {
    for body in [json!({"livemode": "false"}), json!({"livemode": false})] {
        let outputs = parse(&body).unwrap();
        let [Output::Notice(notice)] = outputs.as_slice() else {
            panic!("{outputs:?}")
        };
        assert_eq!(notice.kind, NoticeKind::Ping);
        assert_eq!(notice.provider, Provider::Shipup);
        assert_eq!(notice.raw_type, "endpoint_probe");
    }
    // The exact bytes of the documentation, whitespace included.
    let delivery = RawDelivery::new(&b"{\n  \"livemode\": \"false\"\n}"[..], received_at())
        .with_header("Authorization", basic_authorization("shipup", "pw"));
    let credentials = Credentials::Basic {
        username: "shipup".into(),
        password: Secret::new("pw"),
    };
    let outputs = ShipupAdapter::new()
        .construct(&delivery, &credentials)
        .unwrap();
    assert_eq!(
        outputs[0].as_notice().map(|n| n.kind),
        Some(NoticeKind::Ping)
    );
    // The adapter authenticates it like everything else (a service answers it without
    // credentials because `is_probe` says it carries nothing).
    let err = ShipupAdapter::new()
        .construct(
            &RawDelivery::new(&b"{\"livemode\": \"false\"}"[..], received_at()),
            &credentials,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingSignature);
}

#[test]
fn only_the_exact_probe_body_is_the_probe() {
    let adapter = ShipupAdapter::new();
    let probe = |body: &[u8]| adapter.is_probe(&RawDelivery::new(body, received_at()));
    for body in [
        &br#"{"livemode": "false"}"#[..],
        br#"{"livemode":"false"}"#,
        b"{\n  \"livemode\": \"false\"\n}",
        b" {\"livemode\" : \"false\"} \r\n",
    ] {
        assert!(probe(body), "{}", String::from_utf8_lossy(body));
    }
    let tracker = serde_json::to_vec(&envelope(
        "tracker.events.new",
        tracker(three_events()),
        json!({"event_id": 313345}),
    ))
    .unwrap();
    let long = format!(r#"{{"livemode": "false"{}}}"#, " ".repeat(300));
    for body in [
        &br#"{"livemode": false}"#[..],
        br#"{"livemode": "true"}"#,
        br#"{"livemode": "False"}"#,
        br#"{"livemode": "false", "type": "tracker.new"}"#,
        br#"{"livemode": "false", "livemode": "false"}"#,
        br#"{"livemode": "false", "data": {}}"#,
        br#"{"livemode": ["false"]}"#,
        br#"["livemode", "false"]"#,
        br#"{"livemode": "false"} {}"#,
        b"",
        b"\xff\xfe",
        long.as_bytes(),
        &tracker,
    ] {
        assert!(!probe(body), "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn a_body_without_type_is_not_a_probe() {
    for body in [json!({}), json!({"livemode": true, "data": {"object": {}}})] {
        let err = parse(&body).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Payload);
        assert_eq!(err.path(), Some("type"));
        assert_eq!(err.provider(), Some(Provider::Shipup));
    }
}

#[test]
fn the_whole_history_is_emitted_and_the_reason_event_is_the_trigger() {
    let body = envelope(
        "tracker.events.new",
        tracker(three_events()),
        json!({"kind": "new", "event_id": 313345}),
    );
    let outputs = parse(&body).unwrap();
    let events = events(&outputs);
    assert_eq!(outputs.len(), 3);
    let ids: Vec<_> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["shipup:312589", "shipup:313345", "shipup:31357"]);
    let triggers: Vec<_> = events.iter().map(|e| e.trigger).collect();
    assert_eq!(triggers, [false, true, false]);
    // The tracker's current estimate goes with the trigger only.
    assert!(events[1].estimated_delivery.is_some());
    assert!(events[0].estimated_delivery.is_none() && events[2].estimated_delivery.is_none());

    let first = events[0];
    assert_eq!(first.status, Some(Status::InTransit));
    assert_eq!(first.substatus.as_deref(), Some("in_transit.picked_up"));
    assert_eq!(first.raw.code.as_deref(), Some("origin_scan"));
    assert_eq!(
        first.raw.message.as_deref(),
        Some("Your package has been scanned")
    );
    assert_eq!(first.occurred_at.to_rfc3339(), "2018-06-26T19:16:55+00:00");
    assert!(first.time_zone_known);
    assert_eq!(first.delivery_id.as_deref(), Some("3124444"));
    let location = first.location.as_ref().unwrap();
    assert_eq!(
        (
            location.city.as_deref(),
            location.postal_code.as_deref(),
            location.country.as_deref()
        ),
        (Some("Paris"), Some("75001"), Some("FR"))
    );
    // recorded_at only where it differs from occurred_at.
    assert_eq!(
        events[1].recorded_at.map(|t| t.timestamp()),
        Some(1530127315)
    );
    assert_eq!(first.recorded_at, None);

    let shipment = &first.shipment;
    assert_eq!(shipment.carrier.as_deref(), Some("colissimo"));
    assert_eq!(shipment.tracking_number.as_deref(), Some("AZ123456789BE"));
    assert_eq!(shipment.order_number.as_deref(), Some("ABCD123"));
    assert_eq!(shipment.provider_shipment_id.as_deref(), Some("345666"));
    assert_eq!(shipment.references["fulfillment_number"], "XYZABCD_1");
    assert_eq!(
        shipment.references["fulfillment_merchant_id"],
        "internal_id_1234"
    );
    assert_eq!(shipment.references["order_merchant_id"], "internal_id_9876");
    assert_eq!(shipment.references["shipped_at"], "2018-06-26T19:16:55Z");
    assert_eq!(shipment.references["carrier_service"], "base");
    assert!(!shipment.references.contains_key("delivered_at"));
}

#[test]
fn retries_normalize_identically() {
    let mut body = envelope(
        "tracker.events.new",
        tracker(three_events()),
        json!({"event_id": 31357}),
    );
    let first = parse(&body).unwrap();
    body["retry_count"] = json!(5);
    assert_eq!(parse(&body).unwrap(), first);
}

#[test]
fn a_null_code_falls_back_to_the_slug_then_to_unmapped() {
    let body = envelope(
        "tracker.events.new",
        tracker(json!([
            {"id": 1, "happened_at": 1530040615, "event_type_code": null,
             "standard_event": {"name": "At customs", "slug": "at_customs"}, "message": "Customs"},
            {"id": 2, "happened_at": 1530040616, "event_type_code": null,
             "standard_event_slug": "possible_delay", "message": null,
             "messages": {"fr": "Retard possible", "en": "Possible delay"}},
            {"id": 3, "happened_at": 1530040617, "event_type_code": null, "message": "raw event message"},
            {"id": 4, "happened_at": 1530040618, "event_type_code": "teleported", "message": "Beamed"},
        ])),
        json!({"event_id": 4}),
    );
    let outputs = parse(&body).unwrap();
    let got: Vec<_> = events(&outputs)
        .iter()
        .map(|e| {
            (
                e.status,
                e.substatus.clone(),
                e.raw.code.clone(),
                e.raw.message.clone(),
            )
        })
        .collect();
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        got,
        [
            (
                Some(Status::InTransit),
                s("in_transit.at_customs"),
                s("at_customs"),
                s("Customs")
            ),
            (
                Some(Status::Exception),
                s("exception.delayed"),
                s("possible_delay"),
                s("Possible delay")
            ),
            (
                Some(Status::Unknown),
                s(UNMAPPED),
                None,
                s("raw event message")
            ),
            (
                Some(Status::Unknown),
                s(UNMAPPED),
                s("teleported"),
                s("Beamed")
            ),
        ]
    );
}

#[test]
fn without_a_usable_reason_the_latest_event_is_the_trigger() {
    for reason in [
        json!(null),
        json!({"kind": "new"}),
        json!({"event_id": 999}),
    ] {
        // Listed out of order: the latest by time wins, not the last in the list.
        let list = json!([
            {"id": 10, "happened_at": 1530040615, "event_type_code": "origin_scan"},
            {"id": 12, "happened_at": 1530213415, "event_type_code": "delivered"},
            {"id": 11, "happened_at": 1530127015, "event_type_code": "out_for_delivery"},
        ]);
        let outputs = parse(&envelope(
            "tracker.events.new",
            tracker(list),
            reason.clone(),
        ))
        .unwrap();
        let triggers: Vec<_> = events(&outputs).iter().map(|e| e.trigger).collect();
        assert_eq!(triggers, [false, true, false], "{reason}");
    }
}

#[test]
fn iso_happened_at_and_the_newer_event_shape() {
    let body = envelope(
        "tracker.events.new",
        tracker(json!([
            {"object": "event", "id": 775, "event_type_code": "label_created",
             "happened_at": "2024-07-17T00:00:00Z", "message": null, "raw": null,
             "messages": {"en": "Label created", "fr": "Etiquette créée"},
             "standard_event_slug": "in_transit", "address": null},
            {"id": 776, "event_type_code": "transit", "happened_at": "2024-07-18T09:30:00"},
        ])),
        json!({"event_id": "775"}),
    );
    let outputs = parse(&body).unwrap();
    let events = events(&outputs);
    assert_eq!(
        events[0].occurred_at.to_rfc3339(),
        "2024-07-17T00:00:00+00:00"
    );
    assert!(events[0].time_zone_known);
    assert!(events[0].trigger, "string and integer ids compare as text");
    // The code wins over the slug (the documentation pairs label_created with in_transit).
    assert_eq!(events[0].status, Some(Status::PreTransit));
    assert_eq!(events[0].raw.code.as_deref(), Some("label_created"));
    assert_eq!(events[0].raw.message.as_deref(), Some("Label created"));
    assert_eq!(events[0].location, None);
    assert!(
        !events[1].time_zone_known,
        "a zone-less time is read as UTC and flagged"
    );
}

#[test]
fn a_new_tracker_is_a_registration_plus_its_events() {
    let outputs = parse(&envelope(
        "tracker.new",
        tracker(three_events()),
        json!({"kind": "new"}),
    ))
    .unwrap();
    assert_eq!(outputs.len(), 4);
    let notice = outputs[0].as_notice().unwrap();
    assert_eq!(notice.kind, NoticeKind::ShipmentRegistered);
    assert_eq!(notice.raw_type, "tracker.new");
    assert_eq!(notice.subject_id.as_deref(), Some("345666"));
    assert_eq!(notice.delivery_id.as_deref(), Some("3124444"));
    assert_eq!(notice.occurred_at.map(|t| t.timestamp()), Some(1530000000));
    assert_eq!(
        notice
            .shipment
            .as_ref()
            .and_then(|s| s.tracking_number.as_deref()),
        Some("AZ123456789BE")
    );
    let events = events(&outputs);
    assert!(
        events.iter().all(|e| !e.trigger),
        "history that came with the tracker is context"
    );
    assert!(
        events[2].estimated_delivery.is_some(),
        "the latest event carries the estimate"
    );
}

#[test]
fn a_tracker_without_events_gets_its_delivery_status() {
    let mut object = tracker(json!([]));
    object["delivery_status_code"] = json!("pending");
    object["displayable_expected_delivery_datetime"] = json!("2018-06-28T14:00:00+02:00");
    let outputs = parse(&envelope("tracker.new", object.clone(), json!(null))).unwrap();
    assert_eq!(outputs.len(), 2);
    let event = outputs[1].as_event().unwrap();
    assert_eq!(event.status, Some(Status::PreTransit));
    assert_eq!(event.raw.code.as_deref(), Some("pending"));
    assert_eq!(event.occurred_at.timestamp(), 1530000000);
    assert!(event.trigger);
    assert!(event.event_id.as_str().starts_with("shipup:h"));
    let estimate = event.estimated_delivery.as_ref().unwrap();
    assert_eq!(estimate.date.to_string(), "2018-06-28");
    assert_eq!(
        estimate.at.map(|t| t.to_rfc3339()).as_deref(),
        Some("2018-06-28T12:00:00+00:00")
    );

    // Same tracker, same status: same id, whatever the delivery.
    let mut again = envelope("tracker.new", object.clone(), json!(null));
    again["id"] = json!(99);
    again["created_at"] = json!(1530300000);
    assert_eq!(
        parse(&again).unwrap()[1].as_event().unwrap().event_id,
        event.event_id
    );

    object["delivery_status_code"] = json!("delayed");
    object["events"] = json!(null);
    let outputs = parse(&envelope("tracker.events.new", object.clone(), json!(null))).unwrap();
    let event = outputs[0].as_event().unwrap();
    assert_eq!(event.substatus.as_deref(), Some("exception.delayed"));

    object["delivery_status_code"] = json!("beamed_up");
    let outputs = parse(&envelope("tracker.events.new", object, json!(null))).unwrap();
    assert!(outputs[0].as_event().unwrap().is_unmapped());
}

#[test]
fn notifications_feedback_and_unknown_types_are_notices() {
    let notification = json!({"object": "notification", "id": 849927739, "category": "package_delivered",
        "slug": "package_delivered_to_3rd_party", "created_at": 1530170040, "updated_at": 1530255600,
        "source": tracker(json!([]))});
    let outputs = parse(&envelope("notification.new", notification, json!(null))).unwrap();
    let [Output::Notice(notice)] = outputs.as_slice() else {
        panic!("{outputs:?}")
    };
    assert_eq!(notice.kind, NoticeKind::Notification);
    assert_eq!(notice.subject_id.as_deref(), Some("849927739"));
    assert_eq!(notice.occurred_at.map(|t| t.timestamp()), Some(1530170040));
    assert_eq!(
        notice
            .shipment
            .as_ref()
            .and_then(|s| s.order_number.as_deref()),
        Some("ABCD123")
    );

    let order_source = json!({"object": "notification", "id": 1, "source":
        {"object": "order", "id": 311111, "order_number": "ABCD123", "merchant_id": "m-1"}});
    let outputs = parse(&envelope("notification.new", order_source, json!(null))).unwrap();
    let shipment = outputs[0]
        .as_notice()
        .and_then(|n| n.shipment.clone())
        .unwrap();
    assert_eq!(shipment.order_number.as_deref(), Some("ABCD123"));
    assert_eq!(shipment.provider_shipment_id, None);

    let feedback = json!({"id": 88333, "object": "feedback", "satisfied": false, "score": 6,
        "created_at": 1530213415, "source": tracker(json!([]))});
    let outputs = parse(&envelope("feedback.new", feedback, json!(null))).unwrap();
    assert_eq!(
        outputs[0].as_notice().map(|n| n.kind),
        Some(NoticeKind::Feedback)
    );

    let outputs = parse(&envelope(
        "tracker.archived",
        json!({"id": 5, "object": "tracker"}),
        json!(null),
    ))
    .unwrap();
    let notice = outputs[0].as_notice().unwrap();
    assert_eq!(
        (notice.kind, notice.raw_type.as_str()),
        (NoticeKind::Other, "tracker.archived")
    );
    assert_eq!(
        notice.occurred_at.map(|t| t.timestamp()),
        Some(1530213415),
        "falls back to the envelope"
    );
    assert_eq!(
        notice
            .shipment
            .as_ref()
            .and_then(|s| s.provider_shipment_id.as_deref()),
        Some("5")
    );
}

#[test]
fn odd_shapes_of_non_tracking_types_are_still_acknowledged() {
    for kind in ["notification.new", "feedback.new", "something.else"] {
        let body = json!({"id": 7, "type": kind, "created_at": "later", "data": {"object": ["not", "an", "object"]}});
        let outputs = parse(&body).unwrap();
        let notice = outputs[0].as_notice().unwrap();
        assert_eq!(notice.delivery_id.as_deref(), Some("7"));
        assert_eq!(notice.raw_type, kind);
    }
}

#[test]
fn malformed_tracker_deliveries_are_payload_errors_with_a_path() {
    let cases = [
        (
            envelope("tracker.events.new", json!({"events": "none"}), json!(null)),
            "data.object.events",
        ),
        (
            envelope(
                "tracker.events.new",
                tracker(json!([{"id": 1, "happened_at": "soon"}])),
                json!(null),
            ),
            "data.object.events[0].happened_at",
        ),
        (
            envelope(
                "tracker.events.new",
                tracker(json!([{"id": 1, "event_type_code": "transit"}])),
                json!(null),
            ),
            "data.object.events[0].happened_at",
        ),
        (json!({"type": "tracker.new", "data": {}}), "data.object"),
        (
            json!({"type": "tracker.new", "data": {"object": {"carrier": "colissimo"}}}),
            "data.object.carrier",
        ),
    ];
    for (body, path) in cases {
        let err = parse(&body).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Payload, "{body}");
        assert_eq!(err.path(), Some(path), "{body}");
        assert_eq!(err.provider(), Some(Provider::Shipup));
    }
    let err = ShipupAdapter::new()
        .parse(&RawDelivery::new(
            &b"{\"type\": \"tracker.new\", "[..],
            received_at(),
        ))
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.provider()),
        (ErrorKind::Payload, Some(Provider::Shipup))
    );
}

#[test]
fn no_prefix_of_a_real_body_panics() {
    let body = serde_json::to_vec(&envelope(
        "tracker.events.new",
        tracker(three_events()),
        json!({"event_id": 31357}),
    ))
    .unwrap();
    let adapter = ShipupAdapter::new();
    for end in 0..body.len() {
        let _ = adapter.parse(&RawDelivery::new(&body[..end], received_at()));
    }
    for garbage in [
        &b""[..],
        b"null",
        b"[]",
        b"\"x\"",
        b"{\"type\": 5}",
        b"\xff\xfe",
        b"{\"events\":[]}",
    ] {
        let _ = adapter.parse(&RawDelivery::new(garbage, received_at()));
    }
}

#[test]
fn a_codeless_event_at_the_trackers_delivered_at_is_the_delivery() {
    let mut object = tracker(three_events());
    object["delivered_at"] = json!(1530213415);
    object["delivery_status_code"] = json!("delivered");
    let outputs = parse(&envelope(
        "tracker.events.new",
        object.clone(),
        json!({"event_id": 31357}),
    ))
    .unwrap();
    let last = events(&outputs)[2];
    assert_eq!(
        (last.status, last.substatus.as_deref()),
        (Some(Status::Delivered), None)
    );
    assert_eq!(last.raw.code, None);

    // Any other instant, or a code present (even unknown), leaves the event alone.
    object["delivered_at"] = json!(1530213416);
    let outputs = parse(&envelope("tracker.events.new", object.clone(), json!(null))).unwrap();
    assert!(events(&outputs)[2].is_unmapped());
    object["delivered_at"] = json!(1530213415);
    object["events"][2]["event_type_code"] = json!("teleported");
    let outputs = parse(&envelope("tracker.events.new", object, json!(null))).unwrap();
    assert!(events(&outputs)[2].is_unmapped());
}

#[test]
fn an_unknown_field_is_noted_and_a_documented_one_is_not() {
    let mut body = json!({
        "id": "evt_1", "object": "event", "type": "tracker.events.new", "created_at": 1530040615,
        "data": {"object": tracker(json!([]))},
    });
    body["data"]["object"]["co2_grams"] = json!(120);
    let bytes = serde_json::to_vec(&body).unwrap();
    let mut drift = shipfeed_core::drift::Drift::new(Provider::Shipup);
    ShipupAdapter::new()
        .parse_noting(&RawDelivery::new(bytes, received_at()), &mut drift)
        .unwrap();
    let keys: Vec<&str> = drift
        .observations()
        .iter()
        .map(|o| o.key.as_str())
        .collect();
    // `object` (top level) is documented; the new field is not.
    assert_eq!(keys, ["data.object.co2_grams"]);
}
