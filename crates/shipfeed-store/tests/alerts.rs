//! Stalled-shipment alerts on SQLite and PostgreSQL, on a hand-moved clock: raised once when
//! a shipment's last event is as old as its rule allows, never before and never for a
//! terminal shipment, cleared once by the shipment's next event (in the projection that
//! records it), per-carrier overrides, the same ids from a second store and after a restart,
//! and an evaluation under a lease taken over since is refused. The PostgreSQL half fails,
//! never skips, without a server (see `store.rs`).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use chrono::TimeDelta;
use shipfeed::{Status, TrackingEvent};
use shipfeed_store::{
    alert_id, Alert, AlertCleared, Clock, FeedItem, ManualClock, StalledRules, Store, StoreError,
    PROJECTOR,
};
use support::{at, commit, event, ingest_events, test_lease, TestStore};

on_both_stores!(
    test_store:
    raised_once_at_the_threshold_and_cleared_once_by_the_next_event,
    a_terminal_shipment_is_never_stalled,
    a_carrier_override_is_respected,
    a_second_store_and_a_restarted_one_derive_the_same_ids,
    a_stale_lease_holder_cannot_raise,
    a_late_older_event_does_not_clear,
);

/// A parcel of carrier `carrier` (the support's events are `postnl`).
fn parcel(carrier: &str, tracking: &str, id: &str, at: &str, status: Status) -> TrackingEvent {
    let mut event = event(tracking, id, at, Some(status));
    event.shipment.carrier = Some(carrier.to_owned());
    event
}

/// Raises what is due at the clock's time under the tests' projector lease.
async fn raise(store: &Store, clock: &ManualClock, rules: &StalledRules) -> Vec<Alert> {
    store
        .raise_stalled(&test_lease(store).await, clock.now(), rules)
        .await
        .unwrap()
}

async fn alerts_in_feed(store: &Store) -> (Vec<Alert>, Vec<AlertCleared>) {
    let mut raised = Vec::new();
    let mut cleared = Vec::new();
    for item in store.events_after(0, 10_000).await.unwrap() {
        match item {
            FeedItem::Alert(item) => raised.push(item.alert),
            FeedItem::AlertCleared(item) => cleared.push(item),
            _ => {}
        }
    }
    (raised, cleared)
}

fn seconds(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

async fn raised_once_at_the_threshold_and_cleared_once_by_the_next_event(db: &TestStore) {
    let store = db.store();
    let rules = StalledRules::default();
    let first = parcel(
        "postnl",
        "STALL1",
        "1",
        "2024-06-01T10:00:00Z",
        Status::InTransit,
    );
    commit(store, vec![ingest_events(std::slice::from_ref(&first))])
        .await
        .unwrap();
    let clock = ManualClock::new(at("2024-06-01T10:00:00Z"));

    // One second short of 72 hours: not stalled.
    clock.advance(TimeDelta::hours(72) - seconds(1));
    assert!(raise(store, &clock, &rules).await.is_empty());
    assert!(store.open_alerts("", 100).await.unwrap().is_empty());

    // At 72 hours: raised, with an id from rule, shipment and last event.
    clock.advance(seconds(1));
    let raised = raise(store, &clock, &rules).await;
    let expected_id = alert_id(
        "stalled.in_transit",
        "postnl:STALL1",
        first.event_id.as_str(),
    );
    assert_eq!(raised.len(), 1, "{raised:?}");
    let alert = &raised[0];
    assert_eq!(alert.alert_id, expected_id);
    assert_eq!(
        (alert.rule.as_str(), alert.status, alert.since),
        ("stalled.in_transit", Status::InTransit, first.occurred_at)
    );
    assert_eq!(alert.shipment_key, "postnl:STALL1");
    assert_eq!(alert.shipment.tracking_number.as_deref(), Some("STALL1"));
    assert_eq!(alert.max_quiet_seconds, 72 * 3600);

    // Evaluating again, now or later, raises nothing new.
    assert!(raise(store, &clock, &rules).await.is_empty());
    clock.advance(TimeDelta::hours(5));
    assert!(raise(store, &clock, &rules).await.is_empty());
    assert_eq!(store.open_alerts("", 100).await.unwrap(), raised);
    let (in_feed, cleared) = alerts_in_feed(store).await;
    assert_eq!(in_feed, raised, "one alert item in the feed");
    assert!(cleared.is_empty());

    // The next event clears it, in the projection that records the event, once.
    let next = parcel(
        "postnl",
        "STALL1",
        "2",
        "2024-06-04T16:00:00Z",
        Status::InTransit,
    );
    commit(store, vec![ingest_events(std::slice::from_ref(&next))])
        .await
        .unwrap();
    let (_, cleared) = alerts_in_feed(store).await;
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert_eq!(cleared[0].alert_id, expected_id);
    assert_eq!(cleared[0].cleared_by.as_ref(), Some(&next.event_id));
    assert_eq!(cleared[0].status, Some(Status::InTransit));
    assert!(store.open_alerts("", 100).await.unwrap().is_empty());
    // The clearing item follows the event that cleared it.
    let kinds: Vec<&str> = store
        .events_after(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|item| match item {
            FeedItem::Event(_) => "event",
            FeedItem::ShipmentState(_) => "shipment_state",
            FeedItem::Alert(_) => "alert",
            FeedItem::AlertCleared(_) => "alert_cleared",
            FeedItem::Retraction(_) => "retraction",
            FeedItem::Drift(_) => "drift",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "event",
            "shipment_state",
            "alert",
            "event",
            "shipment_state",
            "alert_cleared"
        ]
    );

    let after_next = parcel(
        "postnl",
        "STALL1",
        "3",
        "2024-06-04T17:00:00Z",
        Status::InTransit,
    );
    commit(
        store,
        vec![ingest_events(std::slice::from_ref(&after_next))],
    )
    .await
    .unwrap();
    assert_eq!(alerts_in_feed(store).await.1.len(), 1, "cleared once");

    // Quiet again for 72 hours after its new last event: a new alert, with a new id.
    let clock = ManualClock::new(after_next.occurred_at + TimeDelta::hours(72));
    let again = raise(store, &clock, &rules).await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].alert_id,
        alert_id(
            "stalled.in_transit",
            "postnl:STALL1",
            after_next.event_id.as_str()
        )
    );
    assert_ne!(again[0].alert_id, expected_id);
    assert_eq!(store.open_alerts("", 100).await.unwrap(), again);
}

async fn a_terminal_shipment_is_never_stalled(db: &TestStore) {
    let store = db.store();
    let mut rules = StalledRules::default();
    // A rule for a terminal status cannot even be written down.
    assert!(matches!(
        rules.set(Status::Delivered, Some(TimeDelta::hours(1))),
        Err(StoreError::Config(_))
    ));
    rules.set(Status::OutForDelivery, None).unwrap();
    let events = [
        parcel(
            "postnl",
            "DONE1",
            "1",
            "2024-06-01T10:00:00Z",
            Status::InTransit,
        ),
        parcel(
            "postnl",
            "DONE1",
            "2",
            "2024-06-02T10:00:00Z",
            Status::Delivered,
        ),
        parcel(
            "postnl",
            "GONE1",
            "1",
            "2024-06-01T10:00:00Z",
            Status::Cancelled,
        ),
        // No rule for this status: never stalled either.
        parcel(
            "postnl",
            "OFD1",
            "1",
            "2024-06-01T10:00:00Z",
            Status::OutForDelivery,
        ),
    ];
    commit(store, vec![ingest_events(&events)]).await.unwrap();
    let clock = ManualClock::new(at("2025-06-01T00:00:00Z"));
    assert!(raise(store, &clock, &rules).await.is_empty());
    assert!(alerts_in_feed(store).await.0.is_empty());
}

async fn a_carrier_override_is_respected(db: &TestStore) {
    let store = db.store();
    let mut rules = StalledRules::default();
    rules
        .set_for_carrier("DHL", Status::InTransit, Some(TimeDelta::hours(96)))
        .unwrap();
    rules
        .set_for_carrier("dhl", Status::PreTransit, None)
        .unwrap();
    let events = [
        parcel(
            "postnl",
            "CAR1",
            "1",
            "2024-06-01T10:00:00Z",
            Status::InTransit,
        ),
        parcel(
            "dhl",
            "CAR2",
            "1",
            "2024-06-01T10:00:00Z",
            Status::InTransit,
        ),
        parcel(
            "dhl",
            "CAR3",
            "1",
            "2024-06-01T10:00:00Z",
            Status::PreTransit,
        ),
        parcel(
            "postnl",
            "CAR4",
            "1",
            "2024-06-01T10:00:00Z",
            Status::PreTransit,
        ),
    ];
    commit(store, vec![ingest_events(&events)]).await.unwrap();
    let keys = |alerts: Vec<Alert>| -> Vec<String> {
        let mut keys: Vec<String> = alerts.into_iter().map(|a| a.shipment_key).collect();
        keys.sort();
        keys
    };

    // 48 hours: postnl's pre_transit (dhl's is off).
    let clock = ManualClock::new(at("2024-06-03T10:00:00Z"));
    assert_eq!(keys(raise(store, &clock, &rules).await), ["postnl:CAR4"]);
    // 72 hours: postnl's in_transit, not dhl's.
    clock.advance(TimeDelta::hours(24));
    assert_eq!(keys(raise(store, &clock, &rules).await), ["postnl:CAR1"]);
    clock.advance(TimeDelta::hours(24) - seconds(1));
    assert!(raise(store, &clock, &rules).await.is_empty());
    // 96 hours: dhl's in_transit, with its own quiet time.
    clock.advance(seconds(1));
    let dhl = raise(store, &clock, &rules).await;
    assert_eq!(dhl.len(), 1);
    assert_eq!(dhl[0].shipment_key, "dhl:CAR2");
    assert_eq!(dhl[0].max_quiet_seconds, 96 * 3600);
    // A year on: dhl's pre_transit is still off.
    clock.advance(TimeDelta::days(365));
    assert!(raise(store, &clock, &rules).await.is_empty());
}

async fn a_second_store_and_a_restarted_one_derive_the_same_ids(db: &TestStore) {
    let store = db.store();
    let rules = StalledRules::default();
    let events = [
        parcel(
            "postnl",
            "REP1",
            "1",
            "2024-06-01T10:00:00Z",
            Status::InTransit,
        ),
        parcel(
            "postnl",
            "REP2",
            "1",
            "2024-06-01T10:00:00Z",
            Status::Exception,
        ),
    ];
    commit(store, vec![ingest_events(&events)]).await.unwrap();
    let clock = ManualClock::new(at("2024-06-10T00:00:00Z"));

    // A second replica on the same database raises them; the first then has nothing new.
    let replica = db.open_again().await;
    let by_replica = raise(&replica, &clock, &rules).await;
    assert_eq!(by_replica.len(), 2, "{by_replica:?}");
    assert!(raise(store, &clock, &rules).await.is_empty());
    let ids: Vec<String> = by_replica.iter().map(|a| a.alert_id.clone()).collect();
    let expected: Vec<String> = events
        .iter()
        .map(|e| {
            let rule = format!("stalled.{}", e.status.unwrap().as_str());
            let key = format!("postnl:{}", e.shipment.tracking_number.as_deref().unwrap());
            alert_id(&rule, &key, e.event_id.as_str())
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(sorted, expected_sorted);

    // Restarted: the same open alerts, and evaluating again is still a no-op.
    drop(replica);
    let restarted = db.open_again().await;
    assert!(raise(&restarted, &clock, &rules).await.is_empty());
    let open: Vec<String> = restarted
        .open_alerts("", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.alert_id)
        .collect();
    assert_eq!(open, expected_sorted);
    // Paged by id.
    let first_page = restarted.open_alerts("", 1).await.unwrap();
    let second_page = restarted
        .open_alerts(&first_page[0].alert_id, 10)
        .await
        .unwrap();
    assert_eq!(
        (first_page.len(), second_page.len()),
        (1, 1),
        "{first_page:?} {second_page:?}"
    );
    assert_eq!(
        alerts_in_feed(store).await.0.len(),
        2,
        "each alert once in the feed"
    );
}

async fn a_stale_lease_holder_cannot_raise(db: &TestStore) {
    let store = db.store();
    let events = [parcel(
        "postnl",
        "FENCE1",
        "1",
        "2024-06-01T10:00:00Z",
        Status::InTransit,
    )];
    commit(store, vec![ingest_events(&events)]).await.unwrap();
    let clock = ManualClock::new(at("2024-06-10T00:00:00Z"));
    let ttl = TimeDelta::seconds(15);
    let stale = store
        .take_over_lease(PROJECTOR, "replica-a", clock.now(), ttl)
        .await
        .unwrap();
    // replica-a stalls past its lease; replica-b takes over.
    clock.advance(TimeDelta::seconds(20));
    let current = store
        .acquire_lease(PROJECTOR, "replica-b", clock.now(), ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.epoch, stale.epoch + 1);
    let refused = store
        .raise_stalled(&stale, clock.now(), &StalledRules::default())
        .await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "{refused:?}"
    );
    assert!(alerts_in_feed(store).await.0.is_empty(), "nothing stored");
    let raised = store
        .raise_stalled(&current, clock.now(), &StalledRules::default())
        .await
        .unwrap();
    assert_eq!(raised.len(), 1);
}

async fn a_late_older_event_does_not_clear(db: &TestStore) {
    let store = db.store();
    let rules = StalledRules::default();
    let last = parcel(
        "postnl",
        "LATE1",
        "2",
        "2024-06-02T10:00:00Z",
        Status::InTransit,
    );
    commit(store, vec![ingest_events(std::slice::from_ref(&last))])
        .await
        .unwrap();
    let clock = ManualClock::new(last.occurred_at + TimeDelta::hours(80));
    assert_eq!(raise(store, &clock, &rules).await.len(), 1);
    // An older scan delivered late: the shipment has not moved since, so it stays stalled.
    let older = parcel(
        "postnl",
        "LATE1",
        "1",
        "2024-06-01T10:00:00Z",
        Status::PreTransit,
    );
    commit(store, vec![ingest_events(&[older])]).await.unwrap();
    assert!(alerts_in_feed(store).await.1.is_empty());
    assert_eq!(store.open_alerts("", 10).await.unwrap().len(), 1);
    assert!(raise(store, &clock, &rules).await.is_empty());
}
