//! One timeline per parcel, on SQLite and PostgreSQL: a provider's own shipment id linked to
//! its parcel once both are known (earlier events move, each as a new revision), tracking
//! numbers compared without case, spaces or dashes, carriers kept apart, and the same scan
//! reported by two providers shown once. The PostgreSQL half fails, never skips, without a
//! server (see `store.rs`).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use shipfeed::{Provider, ShipmentRef, Status, TrackingEvent};
use shipfeed_store::{FeedItem, Store};
use support::{commit, event, ingest_events};

on_both_stores!(
    an_announced_parcel_joins_its_label_in_one_timeline,
    announced_and_labelled_in_one_batch_is_one_timeline_too,
    number_variants_are_one_parcel_and_two_carriers_two,
    one_scan_via_two_providers_is_one_scan_with_both_events,
);

/// A Sendcloud parcel event: its parcel id, and its tracking number once it has a label.
fn parcel_event(id: &str, tracking: Option<&str>, at: &str, status: Status) -> TrackingEvent {
    let mut event = event("unused", id, at, Some(status));
    event.event_id = shipfeed::EventId(format!("sendcloud:P1-{id}"));
    event.shipment = ShipmentRef {
        carrier: Some("postnl".to_owned()),
        tracking_number: tracking.map(str::to_owned),
        provider_shipment_id: Some("P1".to_owned()),
        ..ShipmentRef::default()
    };
    event
}

/// Feed items after `after` as `(kind and revision, shipment key, event or state)`.
async fn items_after(store: &Store, after: i64) -> Vec<(String, String, String)> {
    store
        .events_after(after, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|item| match item {
            FeedItem::Event(item) => (
                format!("event r{}", item.revision),
                format!(
                    "{:?}",
                    item.event
                        .shipment
                        .tracking_number
                        .as_deref()
                        .unwrap_or("-")
                ),
                item.event.event_id.as_str().to_owned(),
            ),
            FeedItem::Retraction(item) => {
                ("retraction".to_owned(), item.shipment_key, item.event_id)
            }
            FeedItem::ShipmentState(item) => (
                "shipment_state".to_owned(),
                item.shipment_key,
                format!("{:?}", item.state.map(|state| state.status)),
            ),
            FeedItem::Alert(item) => (
                "alert".to_owned(),
                item.alert.shipment_key,
                item.alert.alert_id,
            ),
            FeedItem::AlertCleared(item) => {
                ("alert_cleared".to_owned(), item.shipment_key, item.alert_id)
            }
            FeedItem::Drift(item) => ("drift".to_owned(), item.kind.to_string(), item.key),
        })
        .collect()
}

async fn an_announced_parcel_joins_its_label_in_one_timeline(store: Store) {
    let announced = parcel_event("a", None, "2024-06-01T08:00:00Z", Status::PreTransit);
    commit(&store, vec![ingest_events(&[announced])])
        .await
        .unwrap();
    let end = store.feed_end().await.unwrap();

    // Labelled: the parcel's carrier and tracking number are known; its earlier event moves.
    let labelled = parcel_event(
        "b",
        Some("3S ABC-1"),
        "2024-06-01T12:00:00Z",
        Status::InTransit,
    );
    let done = commit(&store, vec![ingest_events(&[labelled])])
        .await
        .unwrap();
    assert_eq!(done[0].events, ["sendcloud:P1-b"]);
    assert_eq!(
        done[0].revised,
        ["sendcloud:P1-a"],
        "the move is a revision"
    );
    assert_eq!(
        items_after(&store, end).await,
        [
            (
                "event r1".into(),
                "\"3S ABC-1\"".into(),
                "sendcloud:P1-b".into()
            ),
            (
                "event r2".into(),
                "\"3S ABC-1\"".into(),
                "sendcloud:P1-a".into()
            ),
            (
                "shipment_state".into(),
                "postnl:3SABC1".into(),
                "Some(InTransit)".into()
            ),
            (
                "shipment_state".into(),
                "sendcloud:id:P1".into(),
                "None".into()
            ),
        ]
    );

    // A later event known only by the parcel id lands in the parcel, as a new user expects.
    let late = parcel_event("c", None, "2024-06-02T09:00:00Z", Status::Delivered);
    commit(&store, vec![ingest_events(&[late])]).await.unwrap();
    let views = store.shipments(None, "3sabc1").await.unwrap();
    assert_eq!(views.len(), 1, "{views:?}");
    let timeline: Vec<&str> = views[0]
        .timeline
        .iter()
        .map(|event| event.event_id.as_str())
        .collect();
    assert_eq!(
        timeline,
        ["sendcloud:P1-a", "sendcloud:P1-b", "sendcloud:P1-c"]
    );
    assert_eq!(
        (views[0].key.as_str(), views[0].state.status),
        ("postnl:3SABC1", Status::Delivered)
    );
    assert!(
        views[0]
            .timeline
            .iter()
            .all(|event| event.shipment.tracking_number.as_deref() == Some("3S ABC-1")),
        "every event names the parcel"
    );
}

async fn announced_and_labelled_in_one_batch_is_one_timeline_too(store: Store) {
    let announced = parcel_event("a", None, "2024-06-01T08:00:00Z", Status::PreTransit);
    let labelled = parcel_event(
        "b",
        Some("3SABC2"),
        "2024-06-01T12:00:00Z",
        Status::InTransit,
    );
    commit(
        &store,
        vec![ingest_events(&[announced]), ingest_events(&[labelled])],
    )
    .await
    .unwrap();
    let views = store.shipments(Some("PostNL"), "3sabc2").await.unwrap();
    assert_eq!(views.len(), 1, "{views:?}");
    assert_eq!(views[0].timeline.len(), 2);
    let keys: Vec<String> = items_after(&store, 0)
        .await
        .into_iter()
        .filter(|(kind, _, _)| kind == "shipment_state")
        .map(|(_, key, _)| key)
        .collect();
    assert_eq!(
        keys,
        ["postnl:3SABC2", "postnl:3SABC2"],
        "never under the id"
    );
}

async fn number_variants_are_one_parcel_and_two_carriers_two(store: Store) {
    let first = event(
        "3S-ABC 9",
        "1",
        "2024-06-01T08:00:00Z",
        Some(Status::InTransit),
    );
    let second = event(
        "3sabc9",
        "2",
        "2024-06-01T09:00:00Z",
        Some(Status::Delivered),
    );
    let mut elsewhere = event(
        "3SABC9",
        "3",
        "2024-06-01T10:00:00Z",
        Some(Status::PreTransit),
    );
    elsewhere.shipment.carrier = Some("ups".to_owned());
    commit(&store, vec![ingest_events(&[first])]).await.unwrap();
    commit(&store, vec![ingest_events(&[second, elsewhere])])
        .await
        .unwrap();

    let views = store.shipments(None, " 3s-abc9 ").await.unwrap();
    let found: Vec<(&str, usize, Status)> = views
        .iter()
        .map(|view| (view.key.as_str(), view.timeline.len(), view.state.status))
        .collect();
    assert_eq!(
        found,
        [
            ("postnl:3SABC9", 2, Status::Delivered),
            ("ups:3SABC9", 1, Status::PreTransit)
        ],
        "carriers recycle numbers: never merged across carriers"
    );
    let postnl = store.shipments(Some("postnl"), "3SABC9").await.unwrap();
    assert_eq!(postnl.len(), 1);
}

async fn one_scan_via_two_providers_is_one_scan_with_both_events(store: Store) {
    let via_sendcloud = event(
        "3SSCAN",
        "s",
        "2024-06-01T08:00:00Z",
        Some(Status::InTransit),
    );
    let mut via_shipup = event(
        "3SSCAN",
        "u",
        "2024-06-01T08:03:00Z",
        Some(Status::InTransit),
    );
    via_shipup.provider = Provider::Shipup;
    via_shipup.event_id = shipfeed::EventId("shipup:3SSCAN-u".to_owned());
    commit(&store, vec![ingest_events(&[via_sendcloud])])
        .await
        .unwrap();
    commit(&store, vec![ingest_events(&[via_shipup])])
        .await
        .unwrap();

    let view = &store.shipments(None, "3sscan").await.unwrap()[0];
    assert_eq!(view.timeline.len(), 2, "both events stay");
    assert_eq!(view.scans.len(), 1, "{:?}", view.scans);
    assert_eq!(
        view.scans[0].seen_via,
        [Provider::Sendcloud, Provider::Shipup]
    );
    let events = items_after(&store, 0)
        .await
        .into_iter()
        .filter(|(kind, _, _)| kind.starts_with("event"))
        .count();
    assert_eq!(events, 2, "each provider's event is in the feed");
}
