//! The projector against real stores (SQLite, and PostgreSQL in a schema of its own) with the
//! real Sendcloud adapter: batches from the cursor, dead letters that cannot stop it, fencing
//! of a stale holder, replay in the running projector's place, and one projector at a time
//! across two replicas. Lease expiry runs on a hand-moved clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta};
use serde_json::{json, Value};
use shipfeed::registry::{self, Settings};
use shipfeed::{Adapter, Credentials, Error, Output, Provider, RawDelivery};
use shipfeed_projector::{
    Adapters, ProjectionObserver, Projector, ProjectorOptions, ReplayFilter, ReplayOutcome,
};
use shipfeed_store::{Arrival, LeaseHolder, ManualClock, Store, StoreError, PROJECTOR};
use shipfeed_testkit::postgres::Schema;
use tokio::sync::{watch, Notify};

/// A store under test and what keeps its database alive.
struct TestStore {
    store: Store,
    _dir: Option<tempfile::TempDir>,
    _schema: Option<Schema>,
}

fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    TestStore {
        store: Store::sqlite(dir.path().join("shipfeed.db")).unwrap(),
        _dir: Some(dir),
        _schema: None,
    }
}

async fn postgres() -> TestStore {
    let schema = Schema::create().await;
    TestStore {
        store: Store::postgres(&schema.url).await.unwrap(),
        _dir: None,
        _schema: Some(schema),
    }
}

/// Runs a scenario on a fresh SQLite store and on a fresh PostgreSQL store, as two tests.
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::sqlite();
                super::$scenario(db.store.clone()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = super::postgres().await;
                super::$scenario(db.store.clone()).await;
            }
        }
    )*};
}

on_both_stores!(
    a_seven_senders_time_replayed_in_its_zone_is_corrected,
    each_delivery_is_projected_once_and_none_can_stop_the_cursor,
    a_stale_projector_is_fenced_and_its_successor_continues,
    replay_pauses_the_running_projector_which_resumes_after,
    replaying_deliveries_by_seq_says_what_became_of_each,
    alerts_follow_the_projectors_clock_under_its_lease,
);

/// An adapter that panics on every delivery (a bug in a mapping), counting its calls.
struct Panicking(AtomicUsize);

impl Adapter for Panicking {
    fn provider(&self) -> Provider {
        Provider::Sendcloud
    }
    fn verify(&self, _: &RawDelivery, _: &Credentials) -> Result<(), Error> {
        Ok(())
    }
    fn parse(&self, _: &RawDelivery) -> Result<Vec<Output>, Error> {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("index out of bounds in a status table");
    }
}

/// What the projector reported of its lag, last.
#[derive(Default)]
struct LastLag(Mutex<Option<(i64, f64)>>);

impl ProjectionObserver for LastLag {
    fn lag(&self, deliveries: i64, seconds: f64) {
        *self.0.lock().unwrap() = Some((deliveries, seconds));
    }
}

fn sendcloud() -> Arc<dyn Adapter> {
    registry::adapter(Provider::Sendcloud, &Settings::default())
        .unwrap()
        .into()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        DateTime::parse_from_rfc3339("2024-06-01T12:00:00Z")
            .unwrap()
            .to_utc(),
    ))
}

fn projector(
    store: &Store,
    adapters: Adapters,
    holder: &str,
    clock: &Arc<ManualClock>,
    observer: Arc<dyn ProjectionObserver>,
) -> Projector {
    Projector::new(
        store.clone(),
        adapters,
        observer,
        ProjectorOptions {
            batch: 64,
            lease_ttl: TimeDelta::seconds(3),
            holder: holder.to_owned(),
            attempts: 3,
            ..ProjectorOptions::default()
        },
        Arc::clone(clock) as Arc<dyn shipfeed_store::Clock>,
    )
}

fn fixture_body(relative: &str) -> Vec<u8> {
    std::fs::read(shipfeed_testkit::fixtures_dir().join(relative)).unwrap()
}

/// A Sendcloud status delivery for its own parcel.
fn parcel(id: u64) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&fixture_body(
        "sendcloud/generated/v2-status-00011-delivered.json",
    ))
    .unwrap();
    body["parcel"]["id"] = json!(id);
    body["parcel"]["tracking_number"] = json!(format!("3SPROJ{id:07}"));
    serde_json::to_vec(&body).unwrap()
}

fn arrival(endpoint: &str, body: Vec<u8>) -> Arrival {
    Arrival {
        endpoint: endpoint.to_owned(),
        provider: Provider::Sendcloud,
        delivery: RawDelivery::new(body, shipfeed_testkit::received_at()),
    }
}

/// The event items of the feed.
async fn feed_events(store: &Store) -> Vec<shipfeed::TrackingEvent> {
    store
        .events_after(0, 1000)
        .await
        .unwrap()
        .iter()
        .filter_map(|item| item.as_event().cloned())
        .collect()
}

async fn projection(store: &Store, seq: i64) -> shipfeed_store::Projection {
    let status = store.delivery(seq).await.unwrap().expect("stored");
    assert!(status.projected, "{status:?}");
    status.projection.expect("a projection")
}

/// Waits until delivery `seq` is projected.
async fn wait_projected(store: &Store, seq: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store.delivery(seq).await.unwrap().unwrap().projected {
        assert!(Instant::now() < deadline, "delivery {seq} not projected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn each_delivery_is_projected_once_and_none_can_stop_the_cursor(store: Store) {
    let panicking = Arc::new(Panicking(AtomicUsize::new(0)));
    let mut adapters = Adapters::new();
    adapters.insert("sendcloud", sendcloud());
    adapters.insert("buggy", Arc::clone(&panicking) as Arc<dyn Adapter>);
    let clock = clock();
    let observer = Arc::new(LastLag::default());
    let projector = projector(&store, adapters, "a", &clock, observer.clone());
    let seqs = store
        .append(vec![
            arrival("sendcloud", parcel(1)),
            arrival(
                "sendcloud",
                fixture_body("sendcloud/invalid/missing-parcel.json"),
            ),
            arrival("buggy", parcel(2)),
            arrival("gone", parcel(3)),
            arrival("sendcloud", parcel(4)),
        ])
        .await
        .unwrap();
    let mut holder = LeaseHolder::new(
        store.clone(),
        PROJECTOR,
        "a",
        TimeDelta::seconds(3),
        clock.clone(),
    );
    let lease = holder.hold().await.unwrap().unwrap();
    assert_eq!(projector.step(&lease).await.unwrap(), 5);
    assert_eq!(
        projector.step(&lease).await.unwrap(),
        0,
        "projected to the end"
    );
    assert_eq!(store.cursor(PROJECTOR).await.unwrap(), seqs[4]);
    assert_eq!(*observer.0.lock().unwrap(), Some((0, 0.0)), "no lag left");

    let [good, broken, buggy, gone, last] = [0, 1, 2, 3, 4].map(|i| seqs[i]);
    let good = projection(&store, good).await;
    assert_eq!((good.events.len(), good.dead_letter), (1, None));
    let broken = projection(&store, broken).await.dead_letter.unwrap();
    assert!(broken.contains("parcel"), "{broken}");
    let buggy = projection(&store, buggy).await.dead_letter.unwrap();
    assert!(
        buggy.contains("panicked 3 times") && buggy.contains("status table"),
        "{buggy}"
    );
    assert_eq!(
        panicking.0.load(Ordering::SeqCst),
        3,
        "tried a bounded number of times"
    );
    let gone = projection(&store, gone).await.dead_letter.unwrap();
    assert!(gone.contains("`gone`"), "{gone}");
    assert_eq!(projection(&store, last).await.events.len(), 1);

    let feed = feed_events(&store).await;
    assert_eq!(feed.len(), 2, "one event per good delivery");
    let dead: Vec<i64> = store
        .dead_letters(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|d| d.delivery_seq)
        .collect();
    assert_eq!(dead, [seqs[1], seqs[2], seqs[3]]);
}

async fn a_stale_projector_is_fenced_and_its_successor_continues(store: Store) {
    let clock = clock();
    let adapters = || {
        let mut adapters = Adapters::new();
        adapters.insert("sendcloud", sendcloud());
        adapters
    };
    let a = projector(&store, adapters(), "a", &clock, Arc::new(()));
    let b = projector(&store, adapters(), "b", &clock, Arc::new(()));
    let holder = |name: &str| {
        LeaseHolder::new(
            store.clone(),
            PROJECTOR,
            name,
            TimeDelta::seconds(3),
            clock.clone(),
        )
    };
    let (mut a_lease, mut b_lease) = (holder("a"), holder("b"));
    let stale = a_lease.hold().await.unwrap().unwrap();
    store
        .append(vec![
            arrival("sendcloud", parcel(10)),
            arrival("sendcloud", parcel(11)),
        ])
        .await
        .unwrap();
    assert_eq!(a.step(&stale).await.unwrap(), 2);
    assert!(b_lease.hold().await.unwrap().is_none(), "a holds it");

    // a stalls past its lease; b takes over, and a's next batch is refused whole.
    clock.advance(TimeDelta::seconds(4));
    let current = b_lease.hold().await.unwrap().expect("a's lease ran out");
    assert_eq!(current.epoch, stale.epoch + 1);
    let seq = store
        .append(vec![arrival("sendcloud", parcel(12))])
        .await
        .unwrap()[0];
    let error = a.step(&stale).await.unwrap_err();
    assert!(matches!(error, StoreError::Fenced { .. }), "{error}");
    assert!(!store.delivery(seq).await.unwrap().unwrap().projected);
    assert_eq!(b.step(&current).await.unwrap(), 1);
    let ids: Vec<String> = feed_events(&store)
        .await
        .into_iter()
        .map(|event| event.event_id.as_str().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        3,
        "each once: {ids:?}"
    );
}

async fn replay_pauses_the_running_projector_which_resumes_after(store: Store) {
    let clock = clock();
    let mut adapters = Adapters::new();
    adapters.insert("sendcloud", sendcloud());
    let running = projector(&store, adapters.clone(), "service", &clock, Arc::new(()));
    let wake = Arc::new(Notify::new());
    let (stop, stopping) = watch::channel(false);
    let task = tokio::spawn(running.run(Arc::clone(&wake), stopping));

    let first = store
        .append(vec![arrival("sendcloud", parcel(20))])
        .await
        .unwrap()[0];
    wake.notify_one();
    wait_projected(&store, first).await;

    // An operator replays; the service's projector has its lease taken over meanwhile.
    let operator = projector(&store, adapters, "operator", &clock, Arc::new(()));
    let summary = operator
        .replay(&ReplayFilter::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(
        (summary.replayed, summary.duplicates),
        (1, 1),
        "{summary:?}"
    );

    // Released: the service's projector takes the lease again and goes on.
    let next = store
        .append(vec![arrival("sendcloud", parcel(21))])
        .await
        .unwrap()[0];
    wake.notify_one();
    wait_projected(&store, next).await;
    assert_eq!(projection(&store, next).await.events.len(), 1);
    assert_eq!(feed_events(&store).await.len(), 2);
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Deliveries named by seq: a dead letter of an endpoint configured only since (the fix) is
/// recovered, one whose payload is broken stays a dead letter with its reason, a good one is
/// projected again, one the projector has not reached is left to it, an unknown seq is not
/// found; before the fix, the moved endpoint's dead letter is skipped.
async fn replaying_deliveries_by_seq_says_what_became_of_each(store: Store) {
    let clock = clock();
    let mut before_fix = Adapters::new();
    before_fix.insert("sendcloud", sendcloud());
    let mut fixed = before_fix.clone();
    fixed.insert("sendcloud-eu", sendcloud());
    let service = projector(&store, before_fix, "service", &clock, Arc::new(()));
    let seqs = store
        .append(vec![
            arrival("sendcloud", parcel(30)),
            arrival(
                "sendcloud",
                fixture_body("sendcloud/invalid/missing-parcel.json"),
            ),
            arrival("sendcloud-eu", parcel(31)),
        ])
        .await
        .unwrap();
    let lease = LeaseHolder::new(
        store.clone(),
        PROJECTOR,
        "service",
        TimeDelta::seconds(3),
        clock.clone(),
    )
    .hold()
    .await
    .unwrap()
    .unwrap();
    assert_eq!(service.step(&lease).await.unwrap(), 3);
    let [good, broken, moved] = [0, 1, 2].map(|i| seqs[i]);
    assert!(projection(&store, moved).await.dead_letter.is_some());
    let waiting = store
        .append(vec![arrival("sendcloud", parcel(32))])
        .await
        .unwrap()[0];

    let unfixed = service.replay_deliveries(&[moved].into()).await.unwrap();
    assert_eq!(unfixed.deliveries.len(), 1);
    assert_eq!(unfixed.deliveries[0].outcome, ReplayOutcome::Skipped);
    assert!(
        unfixed.deliveries[0]
            .error
            .as_deref()
            .unwrap()
            .contains("`sendcloud-eu`"),
        "{unfixed:?}"
    );
    assert_eq!((unfixed.summary.skipped, unfixed.summary.replayed), (1, 0));

    let operator = projector(&store, fixed, "operator", &clock, Arc::new(()));
    let report = operator
        .replay_deliveries(&[999_999, waiting, moved, broken, good].into())
        .await
        .unwrap();
    let outcomes: Vec<(i64, ReplayOutcome, bool)> = report
        .deliveries
        .iter()
        .map(|d| (d.seq, d.outcome, d.error.is_some()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (good, ReplayOutcome::Projected, false),
            (broken, ReplayOutcome::DeadLetter, true),
            (moved, ReplayOutcome::Recovered, false),
            (waiting, ReplayOutcome::Pending, false),
            (999_999, ReplayOutcome::NotFound, false),
        ]
    );
    assert!(
        report.deliveries[1]
            .error
            .as_deref()
            .unwrap()
            .contains("parcel"),
        "{report:?}"
    );
    let summary = &report.summary;
    assert_eq!(
        (
            summary.replayed,
            summary.recovered,
            summary.dead_letters,
            summary.new_events,
            summary.duplicates
        ),
        (3, 1, 1, 1, 1),
        "{summary:?}"
    );
    let recovered = projection(&store, moved).await;
    assert_eq!((recovered.events.len(), recovered.dead_letter), (1, None));
    assert!(
        !store.delivery(waiting).await.unwrap().unwrap().projected,
        "left to the projector"
    );
    assert_eq!(store.cursor(PROJECTOR).await.unwrap(), moved);
    assert_eq!(feed_events(&store).await.len(), 2);
}

/// Seven Senders gives times without a zone. Stored while the source was configured as UTC,
/// then replayed once the source says Europe/Berlin: the event's time is corrected (as a
/// revision, or as a retraction and a new event when the time is part of its id), and the
/// shipment's state rests on the corrected event only.
async fn a_seven_senders_time_replayed_in_its_zone_is_corrected(store: Store) {
    let clock = clock();
    let adapters_in = |zone: chrono_tz::Tz| {
        let mut adapters = Adapters::new();
        let adapter = registry::adapter(
            Provider::SevenSenders,
            &Settings::with_source_time_zone(zone),
        )
        .unwrap();
        adapters.insert("sevensenders", Arc::<dyn Adapter>::from(adapter));
        adapters
    };
    let body = br#"{"id":"s1","order_id":"SF-1","tracking_code":"3SZONE0001","carrier":"dhl","status":"Delivered","status_time":"03.04.2024 20:22:30","tickets":[],"events":[]}"#;
    let seq = store
        .append(vec![Arrival {
            endpoint: "sevensenders".into(),
            provider: Provider::SevenSenders,
            delivery: RawDelivery::new(body.to_vec(), shipfeed_testkit::received_at()),
        }])
        .await
        .unwrap()[0];
    let utc = projector(
        &store,
        adapters_in(chrono_tz::UTC),
        "service",
        &clock,
        Arc::new(()),
    );
    let lease = LeaseHolder::new(
        store.clone(),
        PROJECTOR,
        "service",
        TimeDelta::seconds(3),
        clock.clone(),
    )
    .hold()
    .await
    .unwrap()
    .unwrap();
    assert_eq!(utc.step(&lease).await.unwrap(), 1);
    let stored = feed_events(&store).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        stored[0].occurred_at.to_rfc3339(),
        "2024-04-03T20:22:30+00:00"
    );

    let berlin = projector(
        &store,
        adapters_in(chrono_tz::Europe::Berlin),
        "operator",
        &clock,
        Arc::new(()),
    );
    let summary = berlin
        .replay(&ReplayFilter::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(summary.replayed, 1, "{summary:?}");
    assert_eq!(
        summary.revised + summary.retracted,
        1,
        "one correction: {summary:?}"
    );
    let view = &store.shipments(None, "3SZONE0001").await.unwrap()[0];
    let times: Vec<String> = view
        .timeline
        .iter()
        .map(|event| event.occurred_at.to_rfc3339())
        .collect();
    assert_eq!(
        times,
        ["2024-04-03T18:22:30+00:00"],
        "CEST is UTC+2 in April"
    );
    assert_eq!(view.state.status_event_id, view.timeline[0].event_id);
    let status = store.delivery(seq).await.unwrap().unwrap();
    assert!(status.projected, "{status:?}");
    // Replayed again: nothing more changes.
    let again = berlin
        .replay(&ReplayFilter::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(
        (again.revised, again.retracted, again.new_events),
        (0, 0, 0),
        "{again:?}"
    );
}

/// Two replicas, each running its projector, get every delivery: exactly one projects at a
/// time, so each delivery is projected once (a second projection of a delivery would record
/// its events as duplicates of themselves).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_postgres_project_each_delivery_once() {
    let schema = Schema::create().await;
    let clock = clock();
    let mut replicas = Vec::new();
    let (stop, stopping) = watch::channel(false);
    for name in ["replica-a", "replica-b"] {
        let store = Store::postgres(&schema.url).await.unwrap();
        let mut adapters = Adapters::new();
        adapters.insert("sendcloud", sendcloud());
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(
            projector(&store, adapters, name, &clock, Arc::new(()))
                .run(Arc::clone(&wake), stopping.clone()),
        );
        replicas.push((store, wake, task));
    }
    let mut seqs = Vec::new();
    for n in 0..200u64 {
        let (store, wake, _) = &replicas[usize::try_from(n % 2).unwrap()];
        seqs.extend(
            store
                .append(vec![arrival("sendcloud", parcel(100 + n))])
                .await
                .unwrap(),
        );
        wake.notify_one();
    }
    let store = &replicas[0].0;
    let last = *seqs.iter().max().unwrap();
    wait_projected(store, last).await;
    for seq in &seqs {
        let projection = projection(store, *seq).await;
        assert_eq!(
            (projection.events.len(), projection.duplicates.len()),
            (1, 0),
            "delivery {seq}: {projection:?}"
        );
    }
    assert_eq!(feed_events(store).await.len(), 200);
    stop.send(true).unwrap();
    for (_, _, task) in replicas {
        task.await.unwrap();
    }
}

async fn alerts_follow_the_projectors_clock_under_its_lease(store: Store) {
    // A Sendcloud parcel in transit since 2024-04-03T17:51:28.908Z (its carrier's time).
    let since = DateTime::from_timestamp_millis(1_712_166_688_908).unwrap();
    let clock = Arc::new(ManualClock::new(since + TimeDelta::hours(71)));
    let mut adapters = Adapters::new();
    adapters.insert("sendcloud", sendcloud());
    let a = projector(&store, adapters.clone(), "a", &clock, Arc::new(()));
    let b = projector(&store, adapters, "b", &clock, Arc::new(()));
    let holder = |name: &str| {
        LeaseHolder::new(
            store.clone(),
            PROJECTOR,
            name,
            TimeDelta::seconds(3),
            clock.clone(),
        )
    };
    let (mut a_lease, mut b_lease) = (holder("a"), holder("b"));
    let lease = a_lease.hold().await.unwrap().unwrap();
    store
        .append(vec![arrival(
            "sendcloud",
            fixture_body("sendcloud/generated/v2-status-00003-en-route-to-sorting-center.json"),
        )])
        .await
        .unwrap();
    assert_eq!(a.step(&lease).await.unwrap(), 1);

    // 71 hours quiet by the projector's clock: not yet; 72: raised, once.
    assert!(a.raise_alerts(&lease).await.unwrap().is_empty());
    clock.advance(TimeDelta::hours(1));
    let raised = a.raise_alerts(&lease).await.unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].since, since);
    assert_eq!(raised[0].rule, "stalled.in_transit");
    assert!(a.raise_alerts(&lease).await.unwrap().is_empty());

    // a stalls past its lease and b takes over: a's evaluation is refused.
    clock.advance(TimeDelta::seconds(4));
    let current = b_lease.hold().await.unwrap().expect("a's lease ran out");
    let refused = a.raise_alerts(&lease).await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "{refused:?}"
    );
    assert!(
        b.raise_alerts(&current).await.unwrap().is_empty(),
        "raised once"
    );
}
