//! What the service's `/metrics` reads from the store at each scrape (and once at startup), on
//! SQLite and PostgreSQL: dead letters per endpoint, open alerts per rule, and each endpoint's
//! last arrival among the inbox's most recent deliveries. The PostgreSQL half fails, never
//! skips, without a server (see `store.rs`).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use shipfeed::{Error, ErrorKind, Provider, Status};
use shipfeed_store::{Clock, DeadLetterCount, ManualClock, StalledRules, Store};
use support::{at, commit, event, ingest_error, ingest_events, reproject, test_lease, Ingest};

on_both_stores!(
    dead_letters_are_counted_per_endpoint_and_a_replay_takes_them_off,
    open_alerts_are_counted_per_rule_until_cleared,
    recent_arrivals_give_each_endpoints_last_delivery_within_the_window,
);

/// A delivery of `endpoint` its adapter could not normalize.
fn dead(endpoint: &str) -> Ingest {
    Ingest {
        endpoint: endpoint.to_owned(),
        ..ingest_error(
            b"{\"not\": \"a parcel\"}",
            Error::new(ErrorKind::Payload, "no parcel"),
        )
    }
}

async fn dead_letters_are_counted_per_endpoint_and_a_replay_takes_them_off(store: Store) {
    assert!(store.dead_letter_counts().await.unwrap().is_empty());
    let fine = ingest_events(&[event(
        "DL1",
        "1",
        "2024-06-01T10:00:00Z",
        Some(Status::InTransit),
    )]);
    let projections = commit(
        &store,
        vec![
            dead("sendcloud-eu"),
            fine,
            dead("sendcloud-eu"),
            dead("other"),
        ],
    )
    .await
    .unwrap();
    let mut counts = store.dead_letter_counts().await.unwrap();
    counts.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    let count = |endpoint: &str, count| DeadLetterCount {
        endpoint: endpoint.to_owned(),
        provider: Provider::Sendcloud,
        count,
    };
    assert_eq!(counts, [count("other", 1), count("sendcloud-eu", 2)]);

    // Replayed with a fixed mapping, the first is a dead letter no more.
    let seq = projections[0].delivery_seq;
    let fixed = event("DL2", "1", "2024-06-01T10:00:00Z", Some(Status::InTransit));
    reproject(
        &store,
        seq,
        Provider::Sendcloud,
        Ok(vec![shipfeed::Output::Event(fixed)]),
    )
    .await
    .unwrap();
    let mut counts = store.dead_letter_counts().await.unwrap();
    counts.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    assert_eq!(counts, [count("other", 1), count("sendcloud-eu", 1)]);
}

async fn open_alerts_are_counted_per_rule_until_cleared(store: Store) {
    assert!(store.open_alert_counts().await.unwrap().is_empty());
    let quiet = |tracking: &str, status| event(tracking, "1", "2024-06-01T10:00:00Z", Some(status));
    commit(
        &store,
        vec![ingest_events(&[
            quiet("OA1", Status::InTransit),
            quiet("OA2", Status::InTransit),
            quiet("OA3", Status::Exception),
            quiet("OA4", Status::Delivered),
        ])],
    )
    .await
    .unwrap();
    let clock = ManualClock::new(at("2024-06-10T10:00:00Z"));
    let raised = store
        .raise_stalled(
            &test_lease(&store).await,
            clock.now(),
            &StalledRules::default(),
        )
        .await
        .unwrap();
    assert_eq!(raised.len(), 3, "{raised:?}");
    let counts = store.open_alert_counts().await.unwrap();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [
            ("stalled.exception".to_owned(), 1),
            ("stalled.in_transit".to_owned(), 2)
        ]
    );

    // The next event of OA1 clears its alert.
    let next = event("OA1", "2", "2024-06-10T11:00:00Z", Some(Status::InTransit));
    commit(&store, vec![ingest_events(&[next])]).await.unwrap();
    let counts = store.open_alert_counts().await.unwrap();
    assert_eq!(counts.get("stalled.in_transit"), Some(&1), "{counts:?}");
}

async fn recent_arrivals_give_each_endpoints_last_delivery_within_the_window(store: Store) {
    let empty = store.recent_arrivals(3).await.unwrap();
    assert!(empty.last.is_empty() && empty.oldest.is_none() && empty.whole_inbox);
    let arriving = |endpoint: &str, tracking: &str, received: &str| {
        let mut ingest = ingest_events(&[event(
            tracking,
            "1",
            "2024-06-01T10:00:00Z",
            Some(Status::InTransit),
        )]);
        ingest.endpoint = endpoint.to_owned();
        ingest.delivery.received_at = at(received);
        ingest
    };
    commit(
        &store,
        vec![
            arriving("happycolis", "RA1", "2024-06-01T08:00:00Z"),
            arriving("sendcloud", "RA2", "2024-06-01T09:00:00Z"),
            arriving("shipup", "RA3", "2024-06-01T10:00:00Z"),
            arriving("sendcloud", "RA4", "2024-06-01T11:00:00.5Z"),
        ],
    )
    .await
    .unwrap();

    // The last three: happycolis is older than the window, whose oldest bounds its silence.
    let recent = store.recent_arrivals(3).await.unwrap();
    assert!(!recent.whole_inbox);
    assert_eq!(recent.oldest, Some(at("2024-06-01T09:00:00Z")));
    assert_eq!(
        recent.last.into_iter().collect::<Vec<_>>(),
        [
            ("sendcloud".to_owned(), at("2024-06-01T11:00:00.5Z")),
            ("shipup".to_owned(), at("2024-06-01T10:00:00Z")),
        ]
    );

    let all = store.recent_arrivals(10).await.unwrap();
    assert!(all.whole_inbox);
    assert_eq!(all.oldest, Some(at("2024-06-01T08:00:00Z")));
    assert_eq!(
        all.last.get("happycolis"),
        Some(&at("2024-06-01T08:00:00Z"))
    );
    assert_eq!(all.last.len(), 3);
}
