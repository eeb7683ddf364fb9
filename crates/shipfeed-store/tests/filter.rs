//! `Store::feed_page` on both stores: a filter's page, its cursor past what it leaves out, the
//! bound on what one call reads, and follow-ups (retractions) judged by what they follow up.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use shipfeed::{Output, Provider, Status};
use shipfeed_store::{
    Clock, FeedItem, Filter, ManualClock, StalledRules, Store, FILTER_SCAN_LIMIT,
};
use support::{at, commit, event, ingest_events, reproject, test_lease};

on_both_stores!(
    a_filter_matching_nothing_reads_a_bounded_stretch_per_call,
    a_retraction_reaches_whoever_got_the_event,
    a_cleared_alert_reaches_whoever_got_the_alert,
);

fn filter(query: &[(&str, &str)]) -> Filter {
    Filter::from_query(query.iter().copied()).unwrap()
}

async fn a_filter_matching_nothing_reads_a_bounded_stretch_per_call(store: Store) {
    // One delivery of many parcels: each an event, then its shipment state.
    let parcels = FILTER_SCAN_LIMIT / 2 + 100;
    let events: Vec<_> = (0..parcels)
        .map(|n| {
            event(
                &format!("BOUND{n}"),
                "11",
                "2024-06-01T10:00:00Z",
                Some(Status::Delivered),
            )
        })
        .collect();
    commit(&store, vec![ingest_events(&events)]).await.unwrap();
    let end = store.feed_end().await.unwrap();
    let first_stretch = store.events_after(0, FILTER_SCAN_LIMIT).await.unwrap();
    assert_eq!(first_stretch.len(), FILTER_SCAN_LIMIT);

    let nothing = filter(&[("carrier", "dhl")]);
    let page = store.feed_page(0, 100, &nothing).await.unwrap();
    assert!(page.items.is_empty());
    assert_eq!(
        page.next_cursor,
        first_stretch.last().unwrap().seq(),
        "read at most FILTER_SCAN_LIMIT items, and moved past them"
    );
    let page = store
        .feed_page(page.next_cursor, 100, &nothing)
        .await
        .unwrap();
    assert_eq!((page.items.len(), page.next_cursor), (0, end));
    let page = store.feed_page(end, 100, &nothing).await.unwrap();
    assert_eq!(
        (page.items.len(), page.next_cursor),
        (0, end),
        "nothing more"
    );

    // A full page ends at its last item; the next one goes on from there.
    let states = filter(&[("type", "shipment_state")]);
    let page = store.feed_page(0, 3, &states).await.unwrap();
    assert_eq!(page.items.len(), 3);
    assert!(page
        .items
        .iter()
        .all(|item| matches!(item, FeedItem::ShipmentState(_))));
    assert_eq!(page.next_cursor, page.items[2].seq());
    let next = store.feed_page(page.next_cursor, 1, &states).await.unwrap();
    assert!(next.items[0].seq() > page.next_cursor);
    // Unfiltered, as `events_after`.
    let page = store.feed_page(0, 7, &Filter::default()).await.unwrap();
    assert_eq!(page.items, store.events_after(0, 7).await.unwrap());
    assert_eq!(page.next_cursor, page.items[6].seq());
}

async fn a_retraction_reaches_whoever_got_the_event(store: Store) {
    let delivered = event(
        "RETRACT1",
        "11",
        "2024-06-01T10:00:00Z",
        Some(Status::Delivered),
    );
    let stored = commit(
        &store,
        vec![ingest_events(std::slice::from_ref(&delivered))],
    )
    .await
    .unwrap();
    let end = store.feed_end().await.unwrap();
    // A fix gives the delivery's event another id and status: the old one is retracted.
    let replaced = event(
        "RETRACT1",
        "8",
        "2024-06-01T10:00:00Z",
        Some(Status::AttemptFailed),
    );
    let fixed = reproject(
        &store,
        stored[0].delivery_seq,
        Provider::Sendcloud,
        Ok(vec![Output::Event(replaced)]),
    )
    .await
    .unwrap();
    assert_eq!(fixed.retracted, [delivered.event_id.as_str().to_owned()]);

    let kinds = |items: &[FeedItem]| -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                FeedItem::Event(item) => format!("event {:?}", item.event.status),
                FeedItem::Retraction(item) => format!("retraction {}", item.event_id),
                FeedItem::ShipmentState(item) => {
                    format!("state {:?}", item.state.as_ref().map(|s| s.status))
                }
                other => format!("{other:?}"),
            })
            .collect()
    };
    let retraction = format!("retraction {}", delivered.event_id.as_str());
    for (query, expected) in [
        // It got the delivered event: it gets its retraction, not the new event.
        (&[("status", "delivered")][..], vec![retraction.clone()]),
        (
            &[("status", "attempt_failed")][..],
            vec![
                "event Some(AttemptFailed)".to_owned(),
                "state Some(AttemptFailed)".to_owned(),
            ],
        ),
        (&[("type", "retraction")][..], vec![retraction.clone()]),
        (&[("type", "retraction"), ("carrier", "dhl")][..], vec![]),
        (&[("status", "in_transit")][..], vec![]),
    ] {
        let page = store.feed_page(end, 100, &filter(query)).await.unwrap();
        assert_eq!(kinds(&page.items), expected, "{query:?}");
    }
}

async fn a_cleared_alert_reaches_whoever_got_the_alert(store: Store) {
    let mut quiet = event(
        "CLEAR1",
        "1",
        "2024-06-01T10:00:00Z",
        Some(Status::InTransit),
    );
    quiet.shipment.carrier = Some("dhl".to_owned());
    commit(&store, vec![ingest_events(std::slice::from_ref(&quiet))])
        .await
        .unwrap();
    let clock = ManualClock::new(at("2024-06-04T10:00:00Z")); // 72 hours later: stalled
    let raised = store
        .raise_stalled(
            &test_lease(&store).await,
            clock.now(),
            &StalledRules::default(),
        )
        .await
        .unwrap();
    assert_eq!(raised.len(), 1);
    let mut next = event(
        "CLEAR1",
        "2",
        "2024-06-04T11:00:00Z",
        Some(Status::Delivered),
    );
    next.shipment.carrier = Some("dhl".to_owned());
    commit(&store, vec![ingest_events(std::slice::from_ref(&next))])
        .await
        .unwrap();

    for (query, expected) in [
        (
            &[("status", "in_transit"), ("type", "alert,alert_cleared")][..],
            &["alert", "alert_cleared"][..],
        ),
        (&[("type", "alert")][..], &["alert", "alert_cleared"][..]),
        (
            &[("carrier", "DHL"), ("type", "alert_cleared")][..],
            &["alert_cleared"][..],
        ),
        (
            &[("provider", "sendcloud"), ("type", "alert_cleared")][..],
            &["alert_cleared"][..],
        ),
        // Judged as its alert: the stalled status, not the status it moved to.
        (
            &[("status", "delivered"), ("type", "alert,alert_cleared")][..],
            &[][..],
        ),
        (
            &[("carrier", "postnl"), ("type", "alert_cleared")][..],
            &[][..],
        ),
    ] {
        let page = store.feed_page(0, 100, &filter(query)).await.unwrap();
        let kinds: Vec<&str> = page
            .items
            .iter()
            .map(|item| match item {
                FeedItem::Alert(_) => "alert",
                FeedItem::AlertCleared(_) => "alert_cleared",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, expected, "{query:?}");
    }
}
