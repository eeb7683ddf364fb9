//! Contract drift on SQLite and PostgreSQL: what the adapters met and do not know counts once
//! per distinct delivery (not per retry with the same bytes, not again on replay, not for an
//! event sent again), is kept up to a cap per provider and kind, and enters the feed once per
//! key. The PostgreSQL half fails, never skips, without a server (see `store.rs`).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use chrono::{DateTime, TimeDelta, Utc};
use shipfeed::drift::{self, DriftKind};
use shipfeed::sendcloud::SendcloudAdapter;
use shipfeed::{Provider, RawDelivery};
use shipfeed_store::{
    Arrival, DeliveryDrift, DriftEntry, DriftItem, FeedItem, Normalized, Store, DRIFT_KEYS_PER_KIND,
};
use support::test_lease;

on_both_stores!(
    a_new_field_and_code_count_once_per_distinct_delivery,
    an_event_sent_again_does_not_count_its_code_again,
    keys_past_the_cap_are_counted_not_kept,
);

fn at(minutes: i64) -> DateTime<Utc> {
    support::received_at() + TimeDelta::minutes(minutes)
}

/// A Sendcloud parcel event of parcel `parcel` at `timestamp` (ms) with status `status`, and
/// `extra` spliced into the parcel object (unknown fields).
fn parcel_body(parcel: u32, timestamp: u64, status: u32, extra: &str) -> String {
    format!(
        r#"{{"action": "parcel_status_changed", "timestamp": {timestamp},
            "parcel": {{"id": {parcel}, "tracking_number": "3SDRIFT{parcel}", "carrier": {{"code": "postnl"}},
                       "status": {{"id": {status}, "message": "m"}}{extra}}}}}"#
    )
}

/// Appends the bodies (received at the given times) to the inbox and projects them in one
/// batch, with the Sendcloud adapter, noting drift as the projector does; returns their seqs.
async fn deliver(store: &Store, bodies: &[(&str, DateTime<Utc>)]) -> Vec<i64> {
    let deliveries: Vec<RawDelivery> = bodies
        .iter()
        .map(|(body, at)| RawDelivery::new(body.as_bytes(), *at))
        .collect();
    let arrivals = deliveries
        .iter()
        .map(|delivery| Arrival {
            endpoint: "sendcloud".to_owned(),
            provider: Provider::Sendcloud,
            delivery: delivery.clone(),
        })
        .collect();
    let seqs = store.append(arrivals).await.unwrap();
    let batch = normalized(&seqs, &deliveries);
    store
        .project(&test_lease(store).await, None, batch)
        .await
        .unwrap();
    seqs
}

fn normalized(seqs: &[i64], deliveries: &[RawDelivery]) -> Vec<Normalized> {
    seqs.iter()
        .zip(deliveries)
        .map(|(seq, delivery)| {
            let (outcome, noted) = drift::observe(&SendcloudAdapter::new(), delivery);
            Normalized {
                delivery_seq: *seq,
                provider: Provider::Sendcloud,
                outcome,
                drift: DeliveryDrift::new(noted, delivery),
            }
        })
        .collect()
}

/// Projects the stored deliveries again, as `shipfeed replay` does.
async fn replay(store: &Store) {
    let stored = store.deliveries(0, 1000, false).await.unwrap();
    let seqs: Vec<i64> = stored.iter().map(|s| s.seq).collect();
    let deliveries: Vec<RawDelivery> = stored.into_iter().map(|s| s.delivery).collect();
    store
        .reproject(&test_lease(store).await, normalized(&seqs, &deliveries))
        .await
        .unwrap();
}

/// The entry of `(kind, key)`, if kept.
async fn entry(store: &Store, kind: DriftKind, key: &str) -> Option<DriftEntry> {
    let report = store.drift(Some(Provider::Sendcloud)).await.unwrap();
    report
        .entries
        .into_iter()
        .find(|entry| entry.kind == kind && entry.key == key)
}

async fn drift_items(store: &Store) -> Vec<DriftItem> {
    store
        .events_after(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|item| match item {
            FeedItem::Drift(item) => Some(item),
            _ => None,
        })
        .collect()
}

async fn a_new_field_and_code_count_once_per_distinct_delivery(store: Store) {
    let first = parcel_body(1, 1_712_163_088_000, 77_777, r#", "colour": "red""#);
    // The delivery, its retry in a later batch, and two more copies in one batch.
    let seqs = deliver(&store, &[(&first, at(0))]).await;
    deliver(&store, &[(&first, at(5))]).await;
    deliver(&store, &[(&first, at(6)), (&first, at(7))]).await;
    let field = entry(&store, DriftKind::UnknownField, "parcel.colour")
        .await
        .expect("the new field is recorded");
    let code = entry(&store, DriftKind::UnknownStatus, "77777")
        .await
        .expect("the new code is recorded");
    for entry in [&field, &code] {
        assert_eq!(entry.deliveries, 1, "{entry:?}");
        assert_eq!(entry.sample_delivery_seq, seqs[0]);
        assert_eq!((entry.first_seen, entry.last_seen), (at(0), at(0)));
    }

    // A second, distinct delivery (a later scan) with the same field and code.
    let second = parcel_body(1, 1_712_163_999_000, 77_777, r#", "colour": "blue""#);
    deliver(&store, &[(&second, at(10))]).await;
    // An unknown action: a notice of kind `other`.
    let action = r#"{"action": "parcel_teleported", "timestamp": 1712163088000}"#;
    deliver(&store, &[(action, at(11)), (action, at(12))]).await;
    for (kind, key, deliveries) in [
        (DriftKind::UnknownField, "parcel.colour", 2),
        (DriftKind::UnknownStatus, "77777", 2),
        (DriftKind::UnknownMessageType, "parcel_teleported", 1),
    ] {
        let entry = entry(&store, kind, key).await.unwrap();
        assert_eq!(entry.deliveries, deliveries, "{entry:?}");
        assert_eq!(
            entry.first_seen,
            if deliveries == 2 { at(0) } else { at(11) }
        );
    }
    assert_eq!(
        entry(&store, DriftKind::UnknownField, "parcel.colour")
            .await
            .unwrap()
            .last_seen,
        at(10)
    );
    let before = store.drift(None).await.unwrap();
    assert_eq!(before.entries.len(), 3, "{before:?}");

    // Replay counts nothing again, and adds no feed item.
    let items = drift_items(&store).await;
    replay(&store).await;
    replay(&store).await;
    assert_eq!(store.drift(None).await.unwrap(), before);
    assert_eq!(drift_items(&store).await, items);

    // One feed item per key, from the delivery that showed it first.
    let mut keys: Vec<(DriftKind, String, i64)> = items
        .iter()
        .map(|item| (item.kind, item.key.clone(), item.delivery_seq))
        .collect();
    keys.sort();
    assert_eq!(keys.len(), 3, "{items:?}");
    assert_eq!(
        keys[0],
        (DriftKind::UnknownStatus, "77777".to_owned(), seqs[0])
    );
    assert_eq!(
        keys[2],
        (DriftKind::UnknownField, "parcel.colour".to_owned(), seqs[0])
    );
    assert!(items
        .iter()
        .all(|item| item.provider == Provider::Sendcloud));
}

async fn an_event_sent_again_does_not_count_its_code_again(store: Store) {
    // Different bytes (another received time inside the body is not needed: a header-less
    // retry with re-ordered keys), the same event: its code counted once.
    let body = parcel_body(2, 1_712_163_088_000, 88_888, "");
    let reordered = format!(" {body}");
    deliver(&store, &[(&body, at(0))]).await;
    deliver(&store, &[(&reordered, at(1))]).await;
    let code = entry(&store, DriftKind::UnknownStatus, "88888")
        .await
        .unwrap();
    assert_eq!(code.deliveries, 1);
    // A known status adds nothing.
    deliver(
        &store,
        &[(&parcel_body(2, 1_712_163_099_000, 11, ""), at(2))],
    )
    .await;
    assert_eq!(store.drift(None).await.unwrap().entries.len(), 1);
}

async fn keys_past_the_cap_are_counted_not_kept(store: Store) {
    // 60 new fields per delivery (under the per-delivery cap); 4 deliveries, 240 keys.
    let body = |n: usize| {
        let fields: String = (0..60).map(|i| format!(r#", "f{n}_{i}": 1"#)).collect();
        parcel_body(3, 1_712_163_088_000 + n as u64, 11, &fields)
    };
    let bodies: Vec<String> = (0..4).map(body).collect();
    deliver(
        &store,
        &[
            (&bodies[0], at(0)),
            (&bodies[1], at(1)),
            (&bodies[2], at(2)),
        ],
    )
    .await;
    deliver(&store, &[(&bodies[3], at(3))]).await;
    let report = store.drift(Some(Provider::Sendcloud)).await.unwrap();
    let fields = report
        .entries
        .iter()
        .filter(|entry| entry.kind == DriftKind::UnknownField)
        .count();
    assert_eq!(fields, DRIFT_KEYS_PER_KIND);
    assert_eq!(report.dropped.len(), 1, "{:?}", report.dropped);
    assert_eq!(report.dropped[0].kind, DriftKind::UnknownField);
    assert_eq!(report.dropped[0].observations, 40);
    assert_eq!(drift_items(&store).await.len(), DRIFT_KEYS_PER_KIND);

    // A kept key still counts; a new one is dropped.
    let more = parcel_body(3, 1_712_163_188_000, 11, r#", "f0_0": 1, "brand_new": 1"#);
    deliver(&store, &[(&more, at(4))]).await;
    assert_eq!(
        entry(&store, DriftKind::UnknownField, "parcel.f0_0")
            .await
            .unwrap()
            .deliveries,
        2
    );
    assert!(entry(&store, DriftKind::UnknownField, "parcel.brand_new")
        .await
        .is_none());
    let report = store.drift(Some(Provider::Sendcloud)).await.unwrap();
    assert_eq!(report.dropped[0].observations, 41);
}
