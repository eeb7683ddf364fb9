//! Store conformance: the same scenarios against SQLite and PostgreSQL, plus what only
//! PostgreSQL can do (several replicas on one database).
//!
//! The PostgreSQL half needs a server (`postgres://postgres@127.0.0.1:5432/test`, or
//! `SHIPFEED_TEST_POSTGRES_URL`) and the `postgres` feature; it fails, never skips, when the
//! server is down. Each test works in a schema of its own.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use std::collections::BTreeSet;

use chrono::TimeDelta;
use shipfeed::{current_state, sort_timeline, Error, Output, Provider, RawDelivery, Status};
use shipfeed_store::{FeedItem, Projection, Store};
use support::{
    commit, event, events_of, fixture, ingest_error, ingest_events, reproject, whole_feed, Ingest,
};

on_both_stores!(
    commit_then_read_back,
    same_delivery_ten_times_stores_its_events_once,
    arrival_order_never_changes_the_state,
    dead_letter_then_replay,
    cursors_are_saved_and_read_back,
    many_ingests_in_one_commit_and_many_concurrent_commits,
    payload_text_with_nul_is_stored,
    a_failing_job_does_not_sink_the_others,
    a_lease_has_one_holder_at_a_time_and_fences_a_stale_one,
    a_lease_holder_renews_when_a_third_has_passed_and_a_takeover_fences_it,
    a_mapping_fix_is_one_revision_and_corrects_the_state,
    an_older_delivery_never_overrides_a_newer_one,
    a_changed_id_is_one_retraction_plus_one_new_event,
    a_resent_history_replayed_twice_is_no_revision,
    shipments_are_found_by_order_number_in_any_case,
    the_audit_log_is_read_newest_first_in_pages,
    some_deliveries_are_read_by_their_seqs,
);

/// The feed's items after `after`, by kind, with the event or state each is about.
async fn items_after(store: &Store, after: i64) -> Vec<(String, String)> {
    store
        .events_after(after, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|item| match item {
            FeedItem::Event(item) => (
                format!("event r{}", item.revision),
                format!("{} {:?}", item.event.event_id.as_str(), item.event.status),
            ),
            FeedItem::Retraction(item) => (format!("retraction r{}", item.revision), item.event_id),
            FeedItem::ShipmentState(item) => (
                "shipment_state".to_owned(),
                format!(
                    "{:?} -> {:?}",
                    item.previous.map(|p| p.status),
                    item.state
                        .map(|s| (s.status, s.status_event_id.as_str().to_owned()))
                ),
            ),
            FeedItem::Alert(item) => ("alert".to_owned(), item.alert.alert_id),
            FeedItem::AlertCleared(item) => ("alert_cleared".to_owned(), item.alert_id),
            FeedItem::Drift(item) => ("drift".to_owned(), format!("{} {}", item.kind, item.key)),
        })
        .collect()
}

fn outputs(events: &[shipfeed::TrackingEvent]) -> Result<Vec<Output>, Error> {
    Ok(events.iter().cloned().map(Output::Event).collect())
}

async fn a_mapping_fix_is_one_revision_and_corrects_the_state(store: Store) {
    // Stored while its code mapped to nothing: `unknown`.
    let unmapped = event("FIX1", "X9", "2024-06-01T10:00:00Z", Some(Status::Unknown));
    let id = unmapped.event_id.as_str().to_owned();
    let stored = commit(&store, vec![ingest_events(std::slice::from_ref(&unmapped))])
        .await
        .unwrap();
    let seq = stored[0].delivery_seq;
    let end = store.feed_end().await.unwrap();

    // This build knows the code: the same event (same id), delivered.
    let mut mapped = unmapped.clone();
    mapped.status = Some(Status::Delivered);
    mapped.substatus = None;
    let fixed = reproject(&store, seq, Provider::Sendcloud, outputs(&[mapped.clone()]))
        .await
        .unwrap();
    assert_eq!(
        (fixed.revised.clone(), fixed.events.len()),
        (vec![id.clone()], 0)
    );
    assert_eq!(
        items_after(&store, end).await,
        [
            ("event r2".to_owned(), format!("{id} Some(Delivered)")),
            (
                "shipment_state".to_owned(),
                format!("Some(Unknown) -> Some((Delivered, \"{id}\"))")
            ),
        ]
    );
    let view = &store.shipments(None, "FIX1").await.unwrap()[0];
    assert_eq!(
        (view.state.status, view.timeline.len()),
        (Status::Delivered, 1)
    );
    let revisions = store.revisions(&id).await.unwrap();
    let statuses: Vec<_> = revisions
        .iter()
        .map(|(r, d, e)| (*r, *d, e.status))
        .collect();
    assert_eq!(
        statuses,
        [
            (1, seq, Some(Status::Unknown)),
            (2, seq, Some(Status::Delivered))
        ],
        "the old revision is kept"
    );

    // Replaying again changes nothing.
    let end = store.feed_end().await.unwrap();
    let again = reproject(&store, seq, Provider::Sendcloud, outputs(&[mapped]))
        .await
        .unwrap();
    assert!(
        again.revised.is_empty() && again.retracted.is_empty(),
        "{again:?}"
    );
    assert!(items_after(&store, end).await.is_empty());
}

async fn an_older_delivery_never_overrides_a_newer_one(store: Store) {
    let first = event(
        "NEWER",
        "1",
        "2024-06-01T10:00:00Z",
        Some(Status::InTransit),
    );
    let mut second = first.clone();
    second.location = Some(shipfeed::Location {
        city: Some("Utrecht".into()),
        ..shipfeed::Location::default()
    });
    // A later delivery of the same event with more content: revision 2.
    let stored = commit(
        &store,
        vec![
            ingest_events(std::slice::from_ref(&first)),
            ingest_events(std::slice::from_ref(&second)),
        ],
    )
    .await
    .unwrap();
    assert_eq!(stored[1].revised, [first.event_id.as_str()]);
    // The same event received again (another time, another delivery id, not the trigger):
    // the same content, no revision.
    let mut resent = second.clone();
    resent.received_at = support::at("2024-06-02T00:00:00Z");
    resent.delivery_id = Some("another".into());
    resent.trigger = false;
    let third = commit(&store, vec![ingest_events(&[resent])])
        .await
        .unwrap();
    assert_eq!(third[0].duplicates.len(), 1, "{third:?}");
    // Projecting the older delivery again leaves the newer content in place.
    let end = store.feed_end().await.unwrap();
    let older = reproject(
        &store,
        stored[0].delivery_seq,
        Provider::Sendcloud,
        outputs(&[first]),
    )
    .await
    .unwrap();
    assert!(older.revised.is_empty(), "{older:?}");
    assert!(items_after(&store, end).await.is_empty());
    let view = &store.shipments(None, "NEWER").await.unwrap()[0];
    assert_eq!(view.timeline, [second]);
}

async fn a_changed_id_is_one_retraction_plus_one_new_event(store: Store) {
    let early = event(
        "MOVED",
        "1",
        "2024-06-01T08:00:00Z",
        Some(Status::InTransit),
    );
    let wrong = event(
        "MOVED",
        "2-wrong-zone",
        "2024-06-01T10:00:00Z",
        Some(Status::Delivered),
    );
    let stored = commit(&store, vec![ingest_events(&[early.clone(), wrong.clone()])])
        .await
        .unwrap();
    let seq = stored[0].delivery_seq;
    let end = store.feed_end().await.unwrap();

    // A fix changes how the second event's time is read, and with it its derived id.
    let right = event(
        "MOVED",
        "2",
        "2024-06-01T08:30:00Z",
        Some(Status::Delivered),
    );
    let fixed = reproject(
        &store,
        seq,
        Provider::Sendcloud,
        outputs(&[early.clone(), right.clone()]),
    )
    .await
    .unwrap();
    assert_eq!(fixed.events, [right.event_id.as_str()]);
    assert_eq!(fixed.retracted, [wrong.event_id.as_str()]);
    assert_eq!(
        items_after(&store, end).await,
        [
            (
                "event r1".to_owned(),
                format!("{} Some(Delivered)", right.event_id.as_str())
            ),
            (
                "retraction r1".to_owned(),
                wrong.event_id.as_str().to_owned()
            ),
            (
                "shipment_state".to_owned(),
                format!(
                    "Some(Delivered) -> Some((Delivered, \"{}\"))",
                    right.event_id.as_str()
                )
            ),
        ]
    );
    let view = &store.shipments(None, "MOVED").await.unwrap()[0];
    assert_eq!(
        view.state.status_event_id, right.event_id,
        "never the retracted one"
    );
    assert_eq!(view.timeline, [early.clone(), right.clone()]);
    assert_eq!(
        view.retracted,
        std::slice::from_ref(&wrong),
        "kept, apart, to show"
    );

    // Should the delivery become a dead letter, it carries nothing: all it owned is withdrawn.
    let dead = reproject(
        &store,
        seq,
        Provider::Sendcloud,
        Err(Error::payload("now refused")),
    )
    .await
    .unwrap();
    assert_eq!(dead.retracted.len(), 2, "{dead:?}");
    assert!(store.shipments(None, "MOVED").await.unwrap().is_empty());
    let last = store.events_after(0, 1000).await.unwrap().pop().unwrap();
    assert!(
        matches!(&last, FeedItem::ShipmentState(change) if change.state.is_none()),
        "{last:?}"
    );
}

async fn a_resent_history_replayed_twice_is_no_revision(store: Store) {
    let resends: Vec<_> = (0..5)
        .map(|n| {
            support::fixture_received_at(
                Provider::HappyColis,
                HISTORY,
                support::at("2024-06-01T12:00:00Z") + TimeDelta::minutes(n * 7),
            )
        })
        .collect();
    let outcomes: Vec<_> = (0..5)
        .map(|n| {
            support::fixture_received_at(
                Provider::HappyColis,
                HISTORY,
                support::at("2024-07-01T00:00:00Z") + TimeDelta::minutes(n),
            )
            .outcome
        })
        .collect();
    let stored = commit(&store, resends).await.unwrap();
    let history = stored[0].events.len();
    assert!(history > 1);
    assert!(stored.iter().all(|p| p.revised.is_empty()), "{stored:?}");
    let end = store.feed_end().await.unwrap();
    for _ in 0..2 {
        for (projection, outcome) in stored.iter().zip(&outcomes) {
            let outcome = match outcome {
                Ok(outputs) => Ok(outputs.clone()),
                Err(error) => panic!("{error}"),
            };
            let again = reproject(
                &store,
                projection.delivery_seq,
                Provider::HappyColis,
                outcome,
            )
            .await
            .unwrap();
            assert!(
                again.revised.is_empty() && again.retracted.is_empty(),
                "{again:?}"
            );
        }
    }
    assert!(
        items_after(&store, end).await.is_empty(),
        "nothing new in the feed"
    );
    assert_eq!(whole_feed(&store, 100).await.len(), history);
}

const DELIVERED: &str = "sendcloud/generated/v2-status-00011-delivered.json";
const ANNOUNCED: &str = "sendcloud/generated/v2-status-00001-announced.json";
const ATTEMPT_FAILED: &str = "sendcloud/generated/v2-status-00008-delivery-attempt-failed.json";
const TEST_WEBHOOK: &str = "sendcloud/generated/action-test-webhook.json";
const HISTORY: &str = "happycolis/generated/shipment-history-4.json";
const BROKEN: &str = "sendcloud/invalid/missing-parcel.json";

async fn commit_then_read_back(store: Store) {
    assert_eq!(store.feed_end().await.unwrap(), 0, "empty");
    let ingests = vec![
        fixture(Provider::Sendcloud, DELIVERED),
        fixture(Provider::Sendcloud, ANNOUNCED),
        fixture(Provider::Sendcloud, ATTEMPT_FAILED),
        fixture(Provider::Sendcloud, TEST_WEBHOOK),
    ];
    let expected: Vec<_> = ingests.iter().flat_map(events_of).collect();
    assert_eq!(expected.len(), 3, "each status fixture is one event");
    let raw: Vec<(String, RawDelivery)> = ingests
        .iter()
        .map(|i| (i.endpoint.clone(), i.delivery.clone()))
        .collect();

    let committed = commit(&store, ingests).await.unwrap();
    let counts: Vec<_> = committed
        .iter()
        .map(|c| {
            (
                c.events.len(),
                c.duplicates.len(),
                c.notices,
                c.dead_letter.is_some(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            (1, 0, 0, false),
            (1, 0, 0, false),
            (1, 0, 0, false),
            (0, 0, 1, false)
        ]
    );
    assert!(committed
        .windows(2)
        .all(|w| w[0].delivery_seq < w[1].delivery_seq));

    // The feed: every event, in commit order, each followed by its new shipment's state,
    // with strictly increasing cursors.
    let feed = store.events_after(0, 100).await.unwrap();
    let events: Vec<_> = support::events(feed.clone())
        .into_iter()
        .map(|item| item.event)
        .collect();
    assert_eq!(events, expected);
    let kinds: Vec<&str> = feed
        .iter()
        .map(|item| match item {
            FeedItem::Event(_) => "event",
            FeedItem::ShipmentState(_) => "shipment_state",
            FeedItem::Retraction(_) => "retraction",
            FeedItem::Alert(_) => "alert",
            FeedItem::AlertCleared(_) => "alert_cleared",
            FeedItem::Drift(_) => "drift",
        })
        .collect();
    assert_eq!(kinds, ["event", "shipment_state"].repeat(3));
    assert!(feed.windows(2).all(|w| w[0].seq() < w[1].seq()));
    let last = feed.last().unwrap().seq();
    assert_eq!(store.feed_end().await.unwrap(), last);
    assert!(store.events_after(last, 100).await.unwrap().is_empty());
    // Paging from a cursor resumes exactly where the previous page ended.
    let first_two = store.events_after(0, 2).await.unwrap();
    assert_eq!(first_two, feed[..2]);
    let rest = store.events_after(first_two[1].seq(), 100).await.unwrap();
    assert_eq!(rest, feed[2..]);
    assert!(store.events_after(0, 0).await.unwrap().is_empty());

    // Shipments, by tracking number alone and with the carrier.
    let delivered = &expected[0];
    let tracking = delivered.shipment.tracking_number.as_deref().unwrap();
    let carrier = delivered.shipment.carrier.as_deref().unwrap();
    let views = store.shipments(None, tracking).await.unwrap();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].state.status, Status::Delivered);
    assert_eq!(
        views[0].state,
        current_state(std::slice::from_ref(delivered)).unwrap()
    );
    assert_eq!(views[0].timeline, std::slice::from_ref(delivered));
    assert_eq!(views[0].shipment, delivered.shipment);
    assert_eq!(
        store.shipments(Some(carrier), tracking).await.unwrap(),
        views
    );
    assert!(store
        .shipments(Some("another-carrier"), tracking)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .shipments(None, "NO-SUCH-PARCEL")
        .await
        .unwrap()
        .is_empty());

    // A shipment with several events: the timeline comes back in timeline order.
    let history = fixture(Provider::HappyColis, HISTORY);
    let mut history_events = events_of(&history);
    assert!(
        history_events.len() >= 3,
        "the history fixture carries a history"
    );
    commit(&store, vec![history]).await.unwrap();
    let tracking = history_events[0].shipment.tracking_number.clone().unwrap();
    let views = store.shipments(None, &tracking).await.unwrap();
    sort_timeline(&mut history_events);
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].timeline, history_events);
    assert_eq!(views[0].state, current_state(&history_events).unwrap());

    // The raw deliveries come back byte for byte, headers in order, with their arrival time.
    let odd = RawDelivery {
        body: vec![0x00, 0x9f, 0xff, b'{', 0xc3, 0x28, b'\n', 0x00],
        headers: [
            ("X-Repeated", "one"),
            ("x-repeated", "two"),
            ("X-Unicode", "Köln – 東京"),
            ("X-Empty", ""),
        ]
        .into_iter()
        .collect(),
        received_at: support::at("2024-06-01T12:34:56.123456Z"),
    };
    commit(
        &store,
        vec![Ingest {
            endpoint: "odd-endpoint".into(),
            provider: Provider::Shipup,
            delivery: odd.clone(),
            outcome: Ok(Vec::new()),
        }],
    )
    .await
    .unwrap();
    let stored = store.deliveries(0, 100, false).await.unwrap();
    assert_eq!(stored.len(), raw.len() + 2);
    assert!(stored.windows(2).all(|w| w[0].seq < w[1].seq));
    for (stored, (endpoint, delivery)) in stored.iter().zip(&raw) {
        assert_eq!(&stored.endpoint, endpoint);
        assert_eq!(stored.provider, Provider::Sendcloud);
        assert_eq!(&stored.delivery, delivery);
        assert!(!stored.dead_letter);
    }
    let last = stored.last().unwrap();
    assert_eq!(last.delivery, odd);
    assert_eq!(
        (last.endpoint.as_str(), last.provider.as_str()),
        ("odd-endpoint", "shipup")
    );
    // Paging over deliveries.
    let page = store.deliveries(stored[1].seq, 2, false).await.unwrap();
    assert_eq!(
        page.iter().map(|d| d.seq).collect::<Vec<_>>(),
        [stored[2].seq, stored[3].seq]
    );
    store.ping().await.unwrap();
}

async fn same_delivery_ten_times_stores_its_events_once(store: Store) {
    let events = events_of(&fixture(Provider::HappyColis, HISTORY));
    let n = events.len();
    let first = commit(&store, vec![fixture(Provider::HappyColis, HISTORY)])
        .await
        .unwrap();
    assert_eq!((first[0].events.len(), first[0].duplicates.len()), (n, 0));

    // Four more in one batch, then five one by one: each a retry of the same delivery.
    let batch = (0..4)
        .map(|_| fixture(Provider::HappyColis, HISTORY))
        .collect();
    let mut again = commit(&store, batch).await.unwrap();
    for _ in 0..5 {
        again.extend(
            commit(&store, vec![fixture(Provider::HappyColis, HISTORY)])
                .await
                .unwrap(),
        );
    }
    assert_eq!(again.len(), 9);
    for committed in &again {
        assert_eq!((committed.events.len(), committed.duplicates.len()), (0, n));
        assert!(committed.new_event_statuses.is_empty());
    }

    let feed = whole_feed(&store, 100).await;
    assert_eq!(feed.len(), n, "one set of events in the feed");
    let ids: BTreeSet<_> = feed.iter().map(|i| i.event.event_id.clone()).collect();
    assert_eq!(ids, events.iter().map(|e| e.event_id.clone()).collect());
    // Every retry is still kept as a raw delivery (for audit and replay).
    assert_eq!(store.deliveries(0, 100, false).await.unwrap().len(), 10);
    let tracking = events[0].shipment.tracking_number.clone().unwrap();
    let views = store.shipments(None, &tracking).await.unwrap();
    assert_eq!(views[0].state.event_count, n);
    assert_eq!(views[0].timeline.len(), n);
}

async fn arrival_order_never_changes_the_state(store: Store) {
    // One parcel's life, including an unmapped code, an event without a status change, and an
    // in-transit scan that happened before the delivery.
    let life = |tracking: &str| {
        vec![
            event(
                tracking,
                "1",
                "2024-04-01T08:00:00Z",
                Some(Status::PreTransit),
            ),
            event(
                tracking,
                "2",
                "2024-04-01T18:00:00Z",
                Some(Status::InTransit),
            ),
            event(
                tracking,
                "3",
                "2024-04-02T07:00:00Z",
                Some(Status::InTransit),
            ),
            event(
                tracking,
                "4",
                "2024-04-02T09:00:00Z",
                Some(Status::OutForDelivery),
            ),
            event(
                tracking,
                "5",
                "2024-04-02T14:30:00Z",
                Some(Status::Delivered),
            ),
            event(tracking, "6", "2024-04-03T10:00:00Z", Some(Status::Unknown)),
            event(tracking, "7", "2024-04-03T11:00:00Z", None),
        ]
    };
    for seed in 0..8_u64 {
        let tracking = format!("3SORDER{seed}");
        let all = life(&tracking);
        let mut arrival = all.clone();
        if seed > 0 {
            support::shuffle(&mut arrival, seed); // seed 0: in order
        }
        let mut seen = Vec::new();
        // Deliveries of 1, 2 or 3 events: a shipment's first delivery is then sometimes its
        // whole known history, sometimes part of it.
        for delivery in arrival.chunks(1 + seed as usize % 3) {
            seen.extend_from_slice(delivery);
            commit(&store, vec![ingest_events(delivery)]).await.unwrap();
            let views = store.shipments(Some("postnl"), &tracking).await.unwrap();
            // After each arrival the state is that of the set seen so far, whatever the order
            // (no state at all while only the event without a status has arrived).
            let state = views.first().map(|view| &view.state);
            assert_eq!(
                state,
                current_state(&seen).as_ref(),
                "seed {seed}, {} seen",
                seen.len()
            );
            assert!(views.len() <= 1);
        }
        let view = &store.shipments(None, &tracking).await.unwrap()[0];
        assert_eq!(view.state.status, Status::Delivered, "seed {seed}");
        assert_eq!(
            view.state.status_event_id.as_str(),
            format!("sendcloud:{tracking}-5")
        );
        assert_eq!(
            view.state.last_event_id.as_str(),
            format!("sendcloud:{tracking}-7")
        );
        assert_eq!(view.state.event_count, 7);
        let mut timeline = all;
        sort_timeline(&mut timeline);
        assert_eq!(view.timeline, timeline, "seed {seed}");
    }
}

/// Entries come back newest first, each with what was recorded and an increasing id; a page
/// ends before the id it is given, and entries too old for a page are on the next.
async fn the_audit_log_is_read_newest_first_in_pages(store: Store) {
    use shipfeed_store::{AuditAction, AuditOutcome, AuditRecord};
    assert!(store.audit(None, 10).await.unwrap().is_empty());
    let at = support::at("2024-06-01T12:00:00.123456Z");
    let record = |action, target: &str, outcome| AuditRecord {
        at,
        actor: "cli:ops".to_owned(),
        action,
        target: target.to_owned(),
        outcome,
        detail: serde_json::json!({"parameters": {"since": null}, "result": {"redelivered": 3}}),
    };
    let mut ids = Vec::new();
    for (action, target, outcome) in [
        (AuditAction::Pause, "orders", AuditOutcome::Ok),
        (AuditAction::Redeliver, "orders", AuditOutcome::Ok),
        (AuditAction::Resume, "nosuch", AuditOutcome::Error),
        (AuditAction::Replay, "deliveries 12-13", AuditOutcome::Ok),
    ] {
        ids.push(
            store
                .record_audit(record(action, target, outcome))
                .await
                .unwrap(),
        );
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let newest = store.audit(None, 2).await.unwrap();
    assert_eq!(
        newest.iter().map(|e| e.id).collect::<Vec<_>>(),
        [ids[3], ids[2]]
    );
    assert_eq!(
        (
            newest[0].action,
            newest[0].target.as_str(),
            newest[0].outcome
        ),
        (AuditAction::Replay, "deliveries 12-13", AuditOutcome::Ok)
    );
    assert_eq!(
        (newest[1].action, newest[1].outcome),
        (AuditAction::Resume, AuditOutcome::Error)
    );
    assert_eq!(newest[0].at, at, "the time reads back exactly");
    assert_eq!(newest[0].actor, "cli:ops");
    assert_eq!(newest[0].detail["result"]["redelivered"], 3);
    let older = store.audit(Some(newest[1].id), 2).await.unwrap();
    assert_eq!(
        older.iter().map(|e| e.id).collect::<Vec<_>>(),
        [ids[1], ids[0]]
    );
    assert!(store.audit(Some(ids[0]), 2).await.unwrap().is_empty());
    assert_eq!(store.audit(None, 100).await.unwrap().len(), 4);
    // Its entries stay out of the feed.
    assert!(store.events_after(0, 10).await.unwrap().is_empty());
}

/// Deliveries named by their seqs: those stored, in seq order, each once, dead letter or not.
async fn some_deliveries_are_read_by_their_seqs(store: Store) {
    let committed = commit(
        &store,
        vec![
            fixture(Provider::Sendcloud, ANNOUNCED),
            fixture(Provider::Sendcloud, BROKEN),
            fixture(Provider::Sendcloud, DELIVERED),
        ],
    )
    .await
    .unwrap();
    let seqs: Vec<i64> = committed.iter().map(|p| p.delivery_seq).collect();
    let read = store
        .deliveries_at(&[seqs[2], 999_999, seqs[1], seqs[2], 0])
        .await
        .unwrap();
    assert_eq!(
        read.iter()
            .map(|d| (d.seq, d.dead_letter))
            .collect::<Vec<_>>(),
        [(seqs[1], true), (seqs[2], false)]
    );
    assert_eq!(
        read[1].delivery.body,
        fixture(Provider::Sendcloud, DELIVERED).delivery.body
    );
    assert!(store.deliveries_at(&[]).await.unwrap().is_empty());
}

async fn dead_letter_then_replay(store: Store) {
    let broken = fixture(Provider::Sendcloud, BROKEN);
    let reason = broken.outcome.as_ref().err().map(ToString::to_string);
    assert!(reason.is_some(), "the invalid fixture does not normalize");
    let good = fixture(Provider::Sendcloud, ANNOUNCED);
    let broken_body = broken.delivery.body.clone();
    let committed = commit(&store, vec![good, broken]).await.unwrap();
    assert_eq!(committed[1].dead_letter, reason);
    assert_eq!(committed[1].events.len(), 0);
    let seq = committed[1].delivery_seq;

    let dead = store.dead_letters(0, 100).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].delivery_seq, seq);
    assert_eq!(Some(&dead[0].error), reason.as_ref());
    assert_eq!(
        (dead[0].endpoint.as_str(), dead[0].provider.as_str()),
        ("sendcloud", "sendcloud")
    );
    assert_eq!(dead[0].received_at, support::received_at());
    assert!(store.dead_letters(seq, 100).await.unwrap().is_empty());

    let only_dead = store.deliveries(0, 100, true).await.unwrap();
    assert_eq!(only_dead.len(), 1);
    assert_eq!(only_dead[0].seq, seq);
    assert!(only_dead[0].dead_letter);
    assert_eq!(only_dead[0].delivery.body, broken_body);
    assert_eq!(store.deliveries(0, 100, false).await.unwrap().len(), 2);

    // After a mapping fix the delivery normalizes: replay records its events, clears the mark.
    let fixed = events_of(&fixture(Provider::Sendcloud, DELIVERED));
    let outputs: Vec<Output> = fixed.iter().cloned().map(Output::Event).collect();
    let before = whole_feed(&store, 100).await.len();
    let replayed = reproject(&store, seq, Provider::Sendcloud, Ok(outputs.clone()))
        .await
        .unwrap();
    assert_eq!(
        replayed,
        Projection {
            delivery_seq: seq,
            events: fixed
                .iter()
                .map(|e| e.event_id.as_str().to_owned())
                .collect(),
            duplicates: Vec::new(),
            revised: Vec::new(),
            retracted: Vec::new(),
            notices: 0,
            dead_letter: None,
            new_event_statuses: vec!["delivered"],
        }
    );
    assert!(store.dead_letters(0, 100).await.unwrap().is_empty());
    assert!(store.deliveries(0, 100, true).await.unwrap().is_empty());
    let feed = whole_feed(&store, 100).await;
    assert_eq!(feed.len(), before + fixed.len());
    assert_eq!(feed.last().unwrap().event, fixed[0]);
    let tracking = fixed[0].shipment.tracking_number.clone().unwrap();
    assert_eq!(
        store.shipments(None, &tracking).await.unwrap()[0]
            .state
            .status,
        Status::Delivered
    );

    // Replaying again inserts nothing new.
    let again = reproject(&store, seq, Provider::Sendcloud, Ok(outputs))
        .await
        .unwrap();
    assert_eq!(
        (again.events.len(), again.duplicates.len()),
        (0, fixed.len())
    );
    assert_eq!(whole_feed(&store, 100).await.len(), feed.len());

    // A replay that fails marks the delivery dead again; an unknown delivery is an error.
    let failed = reproject(
        &store,
        seq,
        Provider::Sendcloud,
        Err(Error::payload("still broken")),
    )
    .await
    .unwrap();
    assert!(failed.dead_letter.unwrap().contains("still broken"));
    assert_eq!(
        store.dead_letters(0, 100).await.unwrap()[0].delivery_seq,
        seq
    );
    let unknown = reproject(&store, seq + 1000, Provider::Sendcloud, Ok(Vec::new())).await;
    assert!(unknown.is_err(), "replay of a delivery that does not exist");
    assert_eq!(whole_feed(&store, 100).await.len(), feed.len());

    // A dead letter among good deliveries of the same commit sinks nothing.
    let mixed = commit(
        &store,
        vec![
            ingest_error(b"\x00not json", Error::payload("not json")),
            fixture(Provider::Sendcloud, ATTEMPT_FAILED),
        ],
    )
    .await
    .unwrap();
    assert!(mixed[0].dead_letter.is_some());
    assert_eq!(mixed[1].events.len(), 1);
}

/// Jobs queued together share one transaction; one that fails (replaying a delivery that was
/// never stored) must fail alone, whichever jobs it happened to be grouped with.
async fn a_failing_job_does_not_sink_the_others(store: Store) {
    let mut jobs = tokio::task::JoinSet::new();
    for i in 0..50 {
        let store = store.clone();
        jobs.spawn(async move {
            let tracking = format!("GROUP{i:02}");
            let committed = commit(
                &store,
                vec![ingest_events(&[event(
                    &tracking,
                    "a",
                    "2024-05-01T08:00:00Z",
                    Some(Status::InTransit),
                )])],
            )
            .await;
            let replayed = reproject(&store, 1_000_000 + i, Provider::Sendcloud, Ok(vec![])).await;
            (committed, replayed)
        });
    }
    while let Some(joined) = jobs.join_next().await {
        let (committed, replayed) = joined.unwrap();
        assert_eq!(committed.unwrap()[0].events.len(), 1);
        let error = replayed.unwrap_err();
        assert!(
            matches!(error, shipfeed_store::StoreError::NotFound(_)),
            "{error}"
        );
    }
    assert_eq!(whole_feed(&store, 100).await.len(), 50);
}

async fn a_lease_has_one_holder_at_a_time_and_fences_a_stale_one(store: Store) {
    let t0 = support::at("2024-06-01T12:00:00Z");
    let ttl = TimeDelta::seconds(10);
    let after = |seconds| t0 + TimeDelta::seconds(seconds);
    let acquire = |holder: &'static str, now| {
        let store = store.clone();
        async move {
            store
                .acquire_lease("projector", holder, now, ttl)
                .await
                .unwrap()
        }
    };

    let a = acquire("a", t0).await.expect("a free lease is granted");
    assert_eq!(
        (a.holder.as_str(), a.epoch, a.expires_at),
        ("a", 1, after(10))
    );
    assert_eq!(acquire("b", t0).await, None, "held by a");
    let renewed = acquire("a", after(5)).await.expect("the holder renews");
    assert_eq!((renewed.epoch, renewed.expires_at), (1, after(15)));
    assert_eq!(acquire("b", after(14)).await, None, "not run out yet");

    // a stalls past its lease: b takes over under a new epoch, and a can no longer write.
    let b = acquire("b", after(15)).await.expect("a lease that ran out");
    assert_eq!(b.epoch, 2);
    assert_eq!(acquire("a", after(16)).await, None);
    let error = store
        .save_cursor_under(&renewed, "projector", 10)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            shipfeed_store::StoreError::Fenced {
                epoch: 1,
                current: Some(2),
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(store.cursor("projector").await.unwrap(), 0, "nothing saved");
    store.save_cursor_under(&b, "projector", 20).await.unwrap();
    assert_eq!(store.cursor("projector").await.unwrap(), 20);

    // Released, it is free at once; a release under an old epoch leaves the new holder alone.
    store
        .release_lease("projector", b.epoch, after(17))
        .await
        .unwrap();
    let again = acquire("a", after(17)).await.expect("released");
    assert_eq!(again.epoch, 3);
    store
        .release_lease("projector", b.epoch, after(18))
        .await
        .unwrap();
    assert_eq!(acquire("b", after(18)).await, None, "a still holds it");
    assert!(acquire("c", after(18)).await.is_none());
}

async fn a_lease_holder_renews_when_a_third_has_passed_and_a_takeover_fences_it(store: Store) {
    use std::sync::Arc;

    use shipfeed_store::{LeaseHolder, ManualClock, StoreError};
    let clock = Arc::new(ManualClock::new(support::at("2024-06-01T12:00:00Z")));
    let ttl = TimeDelta::seconds(30);
    let holder =
        |name: &str| LeaseHolder::new(store.clone(), "projector", name, ttl, clock.clone());
    let (mut a, mut b) = (holder("a"), holder("b"));
    assert_eq!(a.renew_every(), std::time::Duration::from_secs(10));

    let first = a.hold().await.unwrap().expect("free");
    assert_eq!(
        a.hold().await.unwrap().as_ref(),
        Some(&first),
        "not due: kept as is"
    );
    clock.advance(TimeDelta::seconds(10));
    let renewed = a.hold().await.unwrap().expect("still a's");
    assert_eq!(renewed.epoch, first.epoch);
    assert_eq!(
        renewed.expires_at,
        first.expires_at + TimeDelta::seconds(10)
    );
    assert!(b.hold().await.unwrap().is_none());

    // b takes over (as replay does); a's next write is refused, and a stands by.
    let taken = b.take_over().await.unwrap();
    assert_eq!(taken.epoch, first.epoch + 1);
    let error = store
        .save_cursor_under(&renewed, "projector", 5)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Fenced { .. }), "{error}");
    a.lost();
    assert!(a.hold().await.unwrap().is_none(), "b holds it now");
    store
        .save_cursor_under(&taken, "projector", 5)
        .await
        .unwrap();

    // b gives it back; a gets it at once, under yet another epoch.
    b.release().await.unwrap();
    let back = a.hold().await.unwrap().expect("released");
    assert_eq!(back.epoch, taken.epoch + 1);
}

async fn cursors_are_saved_and_read_back(store: Store) {
    assert_eq!(store.cursor("stdout").await.unwrap(), 0);
    assert_eq!(store.saved_cursor("stdout").await.unwrap(), None);
    store.save_cursor("stdout", 42).await.unwrap();
    assert_eq!(store.cursor("stdout").await.unwrap(), 42);
    store.save_cursor("stdout", 7).await.unwrap();
    assert_eq!(store.cursor("stdout").await.unwrap(), 7);
    assert_eq!(store.saved_cursor("stdout").await.unwrap(), Some(7));
    store
        .save_cursor("billing-sync", 1_000_000_000_000)
        .await
        .unwrap();
    assert_eq!(
        store.cursor("billing-sync").await.unwrap(),
        1_000_000_000_000
    );
    assert_eq!(store.cursor("stdout").await.unwrap(), 7);
    assert_eq!(store.cursor("nobody").await.unwrap(), 0);
}

async fn many_ingests_in_one_commit_and_many_concurrent_commits(store: Store) {
    // 100 deliveries of two events each, in one commit.
    let batch: Vec<Ingest> = (0..100)
        .map(|i| {
            let tracking = format!("BATCH{i:03}");
            ingest_events(&[
                event(
                    &tracking,
                    "a",
                    "2024-05-01T08:00:00Z",
                    Some(Status::InTransit),
                ),
                event(
                    &tracking,
                    "b",
                    "2024-05-02T08:00:00Z",
                    Some(Status::Delivered),
                ),
            ])
        })
        .collect();
    let committed = commit(&store, batch).await.unwrap();
    assert_eq!(committed.len(), 100);
    assert!(committed
        .iter()
        .all(|c| c.events.len() == 2 && c.duplicates.is_empty()));

    // 200 concurrent commits: each its own event plus one event every one of them carries.
    let shared = event(
        "SHARED",
        "x",
        "2024-05-03T08:00:00Z",
        Some(Status::InTransit),
    );
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let own = event(
                    &format!("CONC{i:03}"),
                    "1",
                    "2024-05-03T09:00:00Z",
                    Some(Status::OutForDelivery),
                );
                commit(&store, vec![ingest_events(&[own, shared])]).await
            })
        })
        .collect();
    // Meanwhile, replays of deliveries that do not exist fail, in the same write groups as
    // the commits, without sinking them.
    let failing: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                reproject(&store, 1_000_000 + i, Provider::Sendcloud, Ok(Vec::new())).await
            })
        })
        .collect();
    for task in failing {
        assert!(task.await.unwrap().is_err());
    }
    let mut new_events = 0;
    let mut duplicates = 0;
    for task in tasks {
        let committed = task.await.unwrap().unwrap();
        new_events += committed[0].events.len();
        duplicates += committed[0].duplicates.len();
    }
    assert_eq!((new_events, duplicates), (201, 199));

    let feed = whole_feed(&store, 37).await;
    assert_eq!(feed.len(), 200 + 201);
    assert!(
        feed.windows(2).all(|w| w[0].seq < w[1].seq),
        "seqs strictly increase"
    );
    let ids: BTreeSet<_> = feed.iter().map(|i| i.event.event_id.clone()).collect();
    assert_eq!(ids.len(), feed.len(), "no event twice");
    for i in [0, 57, 199] {
        let views = store.shipments(None, &format!("CONC{i:03}")).await.unwrap();
        assert_eq!(views[0].state.status, Status::OutForDelivery);
    }
    let shared_view = store.shipments(None, "SHARED").await.unwrap();
    assert_eq!(shared_view[0].timeline, [shared]);
    assert_eq!(store.deliveries(0, 1000, false).await.unwrap().len(), 300);
}

async fn payload_text_with_nul_is_stored(store: Store) {
    // An authentic payload may carry NUL characters; storing it must not fail (or the provider
    // would retry forever), and the event must come back as it went in.
    let mut odd = event(
        "NUL\0PARCEL",
        "1",
        "2024-06-01T10:00:00Z",
        Some(Status::InTransit),
    );
    odd.message = Some("line one\0line two".into());
    let mut ingest = ingest_events(std::slice::from_ref(&odd));
    ingest.delivery.headers.insert("X-Odd", "a\0b");
    let delivery = ingest.delivery.clone();
    let committed = commit(&store, vec![ingest]).await.unwrap();
    assert_eq!(committed[0].events.len(), 1);
    let feed = support::events(store.events_after(0, 10).await.unwrap());
    assert_eq!(feed[0].event, odd);
    let views = store.shipments(None, "NUL\0PARCEL").await.unwrap();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].timeline, std::slice::from_ref(&odd));
    assert_eq!(
        store.deliveries(0, 10, false).await.unwrap()[0].delivery,
        delivery
    );

    let dead = commit(
        &store,
        vec![ingest_error(b"{}", Error::payload("bad \0 byte"))],
    )
    .await
    .unwrap();
    assert!(dead[0].dead_letter.is_some());
    let listed = store.dead_letters(0, 10).await.unwrap();
    assert!(listed[0].error.contains("bad"), "{}", listed[0].error);
}

#[tokio::test]
async fn open_picks_the_backend_from_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.db");
    let store = shipfeed_store::open(plain.to_str().unwrap()).await.unwrap();
    store.ping().await.unwrap();
    assert!(plain.exists());

    let prefixed = dir.path().join("prefixed.db");
    let url = format!("sqlite://{}", prefixed.display());
    shipfeed_store::open(&url)
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
    assert!(prefixed.exists());

    let error = shipfeed_store::open("mysql://localhost/shipfeed")
        .await
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("unsupported store URL scheme"),
        "{error}"
    );

    #[cfg(not(feature = "postgres"))]
    {
        let error = shipfeed_store::open("postgres://postgres@127.0.0.1/test")
            .await
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("no PostgreSQL support"),
            "{error}"
        );
    }
    #[cfg(feature = "postgres")]
    {
        let schema = support::pg::Schema::create().await;
        let store = shipfeed_store::open(&schema.url).await.unwrap();
        store.ping().await.unwrap();
        let url = schema.url.replacen("postgres://", "postgresql://", 1);
        shipfeed_store::open(&url)
            .await
            .unwrap()
            .ping()
            .await
            .unwrap();
    }
}

#[cfg(feature = "postgres")]
mod replicas {
    //! What only a shared database can show: several PostgreSQL stores (as several replicas
    //! would have) on the same tables.

    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use shipfeed::{current_state, sort_timeline, Status, TrackingEvent};
    use shipfeed_store::Store;

    use crate::support::{self, commit, event, ingest_events, pg::Schema};

    /// Thirty parcels, six events each, at times that do not follow their ids.
    fn parcels() -> BTreeMap<String, Vec<TrackingEvent>> {
        let statuses = [
            Status::PreTransit,
            Status::InTransit,
            Status::InTransit,
            Status::OutForDelivery,
            Status::AttemptFailed,
            Status::Delivered,
        ];
        (0..30)
            .map(|p| {
                let tracking = format!("REPLICA{p:02}");
                let events = statuses
                    .iter()
                    .enumerate()
                    .map(|(i, status)| {
                        let hour = (i * 3 + p % 3) % 24;
                        let time = format!("2024-06-0{}T{hour:02}:15:00Z", 1 + i / 2);
                        event(&tracking, &format!("{i}"), &time, Some(*status))
                    })
                    .collect();
                (tracking, events)
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_replicas_store_each_event_once_agree_and_the_feed_never_skips() {
        let schema = Schema::create().await;
        let a = Store::postgres(&schema.url).await.unwrap();
        let b = Store::postgres(&schema.url).await.unwrap();
        let feed_reader = Store::postgres(&schema.url).await.unwrap();

        // Each parcel arrives as one delivery per event plus one delivery with its whole history
        // (as HappyColis and Shipup resend it); both replicas receive every delivery.
        let parcels = parcels();
        let mut deliveries: Vec<Vec<TrackingEvent>> = Vec::new();
        for events in parcels.values() {
            deliveries.extend(events.iter().map(|e| vec![e.clone()]));
            deliveries.push(events.clone());
        }
        let total_events: usize = parcels.values().map(Vec::len).sum();
        let occurrences: usize = deliveries.iter().map(Vec::len).sum();

        // A consumer polls the feed while the replicas write, saving the cursor it reached.
        let writing = Arc::new(AtomicBool::new(true));
        let reader = poll_feed(feed_reader, Arc::clone(&writing));

        let mut tasks = Vec::new();
        for (r, replica) in [&a, &b].into_iter().enumerate() {
            let mut order: Vec<usize> = (0..deliveries.len()).collect();
            support::shuffle(&mut order, 1 + r as u64);
            for i in order {
                let replica = replica.clone();
                let events = deliveries[i].clone();
                tasks.push(tokio::spawn(async move {
                    commit(&replica, vec![ingest_events(&events)]).await
                }));
            }
        }
        let (mut new_events, mut duplicates) = (0, 0);
        for task in tasks {
            let committed = task.await.unwrap().unwrap();
            new_events += committed[0].events.len();
            duplicates += committed[0].duplicates.len();
        }
        writing.store(false, Ordering::SeqCst);
        let seen = reader.await.unwrap();

        // Each event stored once, whichever replica got it first.
        assert_eq!(new_events, total_events);
        assert_eq!(duplicates, 2 * occurrences - total_events);
        let feed = support::whole_feed(&a, 1000).await;
        assert_eq!(feed.len(), total_events);
        let ids: BTreeSet<_> = feed.iter().map(|i| i.event.event_id.clone()).collect();
        assert_eq!(ids.len(), total_events, "no event twice");

        // The consumer that polled during the writes saw exactly the final feed: every event,
        // once, in cursor order; no event appeared behind a cursor it had already passed.
        let final_feed: Vec<_> = feed
            .iter()
            .map(|item| (item.seq, item.event.event_id.clone()))
            .collect();
        assert_eq!(seen, final_feed);

        // Both replicas give the same state, the one the whole set of events decides.
        for (tracking, events) in &parcels {
            let via_a = a.shipments(Some("postnl"), tracking).await.unwrap();
            let via_b = b.shipments(Some("postnl"), tracking).await.unwrap();
            assert_eq!(via_a, via_b);
            assert_eq!(via_a.len(), 1);
            assert_eq!(via_a[0].state, current_state(events).unwrap());
            assert_eq!(via_a[0].state.status, Status::Delivered);
            let mut timeline = events.clone();
            sort_timeline(&mut timeline);
            assert_eq!(via_a[0].timeline, timeline);
        }
    }

    /// Polls the feed from cursor 0 until `writing` is false and the feed has nothing more,
    /// the way a consumer does, returning every `(seq, event_id)` it was given.
    fn poll_feed(
        store: Store,
        writing: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<Vec<(i64, shipfeed::EventId)>> {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut cursor = 0;
            loop {
                let still_writing = writing.load(Ordering::SeqCst);
                let page = store.events_after(cursor, 16).await.unwrap();
                if let Some(last) = page.last() {
                    cursor = last.seq();
                } else if !still_writing {
                    return seen;
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                seen.extend(
                    support::events(page)
                        .into_iter()
                        .map(|item| (item.seq, item.event.event_id)),
                );
            }
        })
    }

    /// The cursor hazard on its own: two replicas insert different events at the same time. A
    /// transaction that took smaller `seq`s but committed later would be skipped by a consumer
    /// already past them. (Without the write lock this loses hundreds of events per run.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_feed_consumer_never_skips_while_two_replicas_write() {
        let schema = Schema::create().await;
        let a = Store::postgres(&schema.url).await.unwrap();
        let b = Store::postgres(&schema.url).await.unwrap();
        let writing = Arc::new(AtomicBool::new(true));
        let consumer = poll_feed(
            Store::postgres(&schema.url).await.unwrap(),
            Arc::clone(&writing),
        );
        let mut tasks = Vec::new();
        for (r, replica) in [&a, &b].into_iter().enumerate() {
            for i in 0..400 {
                let replica = replica.clone();
                let parcel = event(
                    &format!("SKIP{r}-{i:03}"),
                    "1",
                    "2024-06-01T10:00:00Z",
                    Some(Status::InTransit),
                );
                tasks.push(tokio::spawn(async move {
                    commit(&replica, vec![ingest_events(&[parcel])]).await
                }));
            }
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        writing.store(false, Ordering::SeqCst);
        let seen = consumer.await.unwrap();
        let feed: Vec<_> = support::whole_feed(&a, 1000)
            .await
            .into_iter()
            .map(|item| (item.seq, item.event.event_id))
            .collect();
        assert_eq!(feed.len(), 800);
        assert_eq!(
            seen.len(),
            feed.len(),
            "the consumer missed {} events",
            feed.len().saturating_sub(seen.len())
        );
        assert_eq!(seen, feed);
    }

    /// The same hazard in the inbox, which the projector reads with a cursor: two replicas
    /// append at once while a reader goes through `deliveries(after)`; it must see every
    /// acknowledged delivery, in `seq` order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_inbox_reader_never_skips_while_two_replicas_append() {
        let schema = Schema::create().await;
        let a = Store::postgres(&schema.url).await.unwrap();
        let b = Store::postgres(&schema.url).await.unwrap();
        let writing = Arc::new(AtomicBool::new(true));
        let reader = Store::postgres(&schema.url).await.unwrap();
        let still_writing = Arc::clone(&writing);
        let consumer = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut cursor = 0;
            loop {
                let writing = still_writing.load(Ordering::SeqCst);
                let page = reader.deliveries(cursor, 16, false).await.unwrap();
                if let Some(last) = page.last() {
                    cursor = last.seq;
                } else if !writing {
                    return seen;
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                seen.extend(page.into_iter().map(|stored| stored.seq));
            }
        });
        let mut tasks = Vec::new();
        for replica in [&a, &b] {
            for i in 0..400u32 {
                let replica = replica.clone();
                let arrival = shipfeed_store::Arrival {
                    endpoint: "sendcloud".into(),
                    provider: shipfeed::Provider::Sendcloud,
                    delivery: shipfeed::RawDelivery::new(
                        i.to_string().into_bytes(),
                        support::received_at(),
                    ),
                };
                tasks.push(tokio::spawn(
                    async move { replica.append(vec![arrival]).await },
                ));
            }
        }
        let mut acknowledged = Vec::new();
        for task in tasks {
            acknowledged.extend(task.await.unwrap().unwrap());
        }
        writing.store(false, Ordering::SeqCst);
        let seen = consumer.await.unwrap();
        acknowledged.sort_unstable();
        assert_eq!(acknowledged.len(), 800);
        assert_eq!(
            seen.len(),
            acknowledged.len(),
            "the reader missed {} deliveries",
            acknowledged.len().saturating_sub(seen.len())
        );
        assert_eq!(seen, acknowledged);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stores_connecting_at_once_migrate_once() {
        let schema = Schema::create().await;
        let connects: Vec<_> = (0..4)
            .map(|_| {
                let url = schema.url.clone();
                tokio::spawn(async move { Store::postgres(&url).await })
            })
            .collect();
        let mut stores = Vec::new();
        for connect in connects {
            stores.push(connect.await.unwrap().unwrap());
        }
        let client = schema.client().await;
        let versions: Vec<i32> = client
            .query(
                "SELECT version FROM shipfeed_schema_version ORDER BY version",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(
            versions,
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            "each migration applied once"
        );
        let tables: BTreeSet<String> = client
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
                &[&schema.name],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let expected = [
            "alerts",
            "aliases",
            "audit_log",
            "cursors",
            "deliveries",
            "drift",
            "drift_deliveries",
            "event_revisions",
            "events",
            "feed",
            "leases",
            "notices",
            "push_messages",
            "push_subscriptions",
            "shipfeed_schema_version",
            "shipments",
        ];
        assert_eq!(tables, expected.iter().map(|t| t.to_string()).collect());

        // A later start finds the schema in place; every store works on the same tables.
        stores.push(Store::postgres(&schema.url).await.unwrap());
        let only = event(
            "MIGRATED",
            "1",
            "2024-06-01T10:00:00Z",
            Some(Status::InTransit),
        );
        commit(&stores[0], vec![ingest_events(&[only])])
            .await
            .unwrap();
        for store in &stores {
            assert_eq!(support::whole_feed(store, 10).await.len(), 1);
        }
    }

    /// Replicas asking for the same lease at the same instant: exactly one is granted it,
    /// whichever commits first, and the others see it held.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_racing_for_a_lease_get_one_holder() {
        let schema = Schema::create().await;
        let mut replicas = Vec::new();
        for _ in 0..4 {
            replicas.push(Store::postgres(&schema.url).await.unwrap());
        }
        let now = support::at("2024-06-01T12:00:00Z");
        let mut racing = tokio::task::JoinSet::new();
        for (i, replica) in replicas.iter().enumerate() {
            let replica = replica.clone();
            racing.spawn(async move {
                replica
                    .acquire_lease(
                        "projector",
                        &format!("replica-{i}"),
                        now,
                        chrono::TimeDelta::seconds(10),
                    )
                    .await
                    .unwrap()
            });
        }
        let mut granted = Vec::new();
        while let Some(lease) = racing.join_next().await {
            granted.extend(lease.unwrap());
        }
        assert_eq!(granted.len(), 1, "{granted:?}");
        assert_eq!(granted[0].epoch, 1);
    }

    #[tokio::test]
    async fn a_schema_of_a_newer_version_is_refused() {
        let schema = Schema::create().await;
        drop(Store::postgres(&schema.url).await.unwrap());
        schema
            .client()
            .await
            .batch_execute("INSERT INTO shipfeed_schema_version (version) VALUES (99)")
            .await
            .unwrap();
        let error = Store::postgres(&schema.url).await.err().unwrap();
        assert!(error.to_string().contains("schema version 99"), "{error}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_database_error() {
        let error = Store::postgres("postgres://postgres@127.0.0.1:1/test?connect_timeout=2")
            .await
            .err()
            .unwrap();
        assert!(
            matches!(error, shipfeed_store::StoreError::Database { .. }),
            "{error}"
        );
        let error = Store::postgres("postgres://[not a url")
            .await
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("invalid PostgreSQL URL"),
            "{error}"
        );
    }
}

async fn shipments_are_found_by_order_number_in_any_case(store: Store) {
    let mut first = event(
        "ORDERED1",
        "1",
        "2024-06-01T08:00:00Z",
        Some(Status::InTransit),
    );
    first.shipment.order_number = Some("ORD-77".to_owned());
    // A second parcel of the same order, and a parcel of another order.
    let mut second = event(
        "ORDERED2",
        "1",
        "2024-06-01T09:00:00Z",
        Some(Status::InTransit),
    );
    second.shipment.order_number = Some("ORD-77".to_owned());
    let mut other = event(
        "ORDERED3",
        "1",
        "2024-06-01T09:00:00Z",
        Some(Status::InTransit),
    );
    other.shipment.order_number = Some("ORD-770".to_owned());
    commit(&store, vec![ingest_events(&[first, second, other])])
        .await
        .unwrap();
    let keys = |views: Vec<shipfeed_store::ShipmentView>| -> Vec<String> {
        views.into_iter().map(|view| view.key).collect()
    };
    assert_eq!(
        keys(store.shipments_by_order(" ord-77 ").await.unwrap()),
        ["postnl:ORDERED1", "postnl:ORDERED2"]
    );
    assert_eq!(
        keys(store.shipments_by_order("ORD-770").await.unwrap()),
        ["postnl:ORDERED3"]
    );
    assert!(store.shipments_by_order("ORD-7").await.unwrap().is_empty());
    assert!(store.shipments_by_order("  ").await.unwrap().is_empty());
}
