//! Test support: a fresh store of either kind, and deliveries built from real fixtures or
//! from hand-written events.
#![allow(dead_code, unused_macros, unreachable_pub, clippy::unwrap_used)] // test code: panics are the failure reports

use std::path::Path;

use chrono::{DateTime, Utc};
use shipfeed::registry::{self, Settings};
use shipfeed::{
    Credentials, Error, EventId, Output, Provider, RawDelivery, RawStatus, Secret, ShipmentRef,
    Status, TrackingEvent,
};
use shipfeed_store::{Arrival, EventItem, FeedItem, Normalized, Projection, Store, PROJECTOR};

/// Runs every scenario listed against a fresh SQLite store and a fresh PostgreSQL store (the
/// PostgreSQL half only with the `postgres` feature, and then it fails, never skips, without a
/// server). A scenario takes the `Store`, or with `test_store:` first the whole `TestStore`.
macro_rules! on_both_stores {
    (test_store: $($scenario:ident),* $(,)?) => {
        on_both_stores!(@with |db| &db; $($scenario),*);
    };
    ($($scenario:ident),* $(,)?) => {
        on_both_stores!(@with |db| db.store.clone(); $($scenario),*);
    };
    (@with |$db:ident| $arg:expr; $($scenario:ident),*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let $db = crate::support::sqlite().await;
                    crate::$scenario($arg).await;
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let $db = crate::support::postgres().await;
                    crate::$scenario($arg).await;
                }
            )*
        }
    };
}

/// A delivery and what its adapter made of it: what the service's inbox stores and what its
/// projector then records.
#[derive(Debug)]
pub struct Ingest {
    pub endpoint: String,
    pub provider: Provider,
    pub delivery: RawDelivery,
    pub outcome: Result<Vec<Output>, Error>,
}

/// The projector's lease for tests: every caller is the same holder, so concurrent callers
/// (two replicas' tests) share one epoch rather than fence each other.
pub async fn test_lease(store: &Store) -> shipfeed_store::Lease {
    store
        .acquire_lease(PROJECTOR, "test", Utc::now(), chrono::TimeDelta::hours(1))
        .await
        .unwrap()
        .expect("the tests' projector lease")
}

/// Appends the deliveries to the inbox, then projects them, as the service's two stages do.
pub async fn commit(
    store: &Store,
    batch: Vec<Ingest>,
) -> Result<Vec<Projection>, shipfeed_store::StoreError> {
    let (arrivals, outcomes): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|ingest| {
            (
                Arrival {
                    endpoint: ingest.endpoint,
                    provider: ingest.provider,
                    delivery: ingest.delivery,
                },
                (ingest.provider, ingest.outcome),
            )
        })
        .unzip();
    let seqs = store.append(arrivals).await?;
    let batch: Vec<Normalized> = seqs
        .into_iter()
        .zip(outcomes)
        .map(|(delivery_seq, (provider, outcome))| Normalized {
            delivery_seq,
            provider,
            outcome,
            drift: None,
        })
        .collect();
    store.project(&test_lease(store).await, None, batch).await
}

/// Projects stored delivery `seq` again with this outcome, as replay does.
pub async fn reproject(
    store: &Store,
    seq: i64,
    provider: Provider,
    outcome: Result<Vec<Output>, Error>,
) -> Result<Projection, shipfeed_store::StoreError> {
    let item = Normalized {
        delivery_seq: seq,
        provider,
        outcome,
        drift: None,
    };
    let mut done = store
        .reproject(&test_lease(store).await, vec![item])
        .await?;
    Ok(done.pop().unwrap())
}

/// A store under test, with whatever keeps its database alive (and removes it afterwards).
pub struct TestStore {
    pub store: Store,
    _sqlite_dir: Option<tempfile::TempDir>,
    #[cfg(feature = "postgres")]
    pub schema: Option<pg::Schema>,
}

impl TestStore {
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Another `Store` on the same database: a second replica, or the same one restarted.
    pub async fn open_again(&self) -> Store {
        #[cfg(feature = "postgres")]
        if let Some(schema) = &self.schema {
            return Store::postgres(&schema.url).await.unwrap();
        }
        let dir = self
            ._sqlite_dir
            .as_ref()
            .expect("a SQLite store has its directory");
        Store::sqlite(dir.path().join("shipfeed.db")).unwrap()
    }
}

/// A SQLite store on a fresh file in a temporary directory.
pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shipfeed.db");
    let store = shipfeed_store::Store::sqlite(&path).unwrap();
    TestStore {
        store,
        _sqlite_dir: Some(dir),
        #[cfg(feature = "postgres")]
        schema: None,
    }
}

/// A PostgreSQL store in a fresh schema of its own (dropped when the test ends, pass or fail).
#[cfg(feature = "postgres")]
pub async fn postgres() -> TestStore {
    let schema = pg::Schema::create().await;
    let store = shipfeed_store::Store::postgres(&schema.url)
        .await
        .unwrap_or_else(|e| panic!("Store::postgres in schema {}: {e}", schema.name));
    TestStore {
        store,
        _sqlite_dir: None,
        schema: Some(schema),
    }
}

#[cfg(feature = "postgres")]
pub use shipfeed_testkit::postgres as pg;

/// The `received_at` the fixtures are loaded with.
pub fn received_at() -> DateTime<Utc> {
    shipfeed_testkit::received_at()
}

/// The path of a fixture file, relative to the workspace's `fixtures/` directory.
pub fn fixture_path(relative: &str) -> std::path::PathBuf {
    shipfeed_testkit::fixtures_dir().join(relative)
}

/// A real fixture delivery, normalized by its provider's adapter the way the service does:
/// signed fixtures through `construct` (signature checked), the others through `parse`.
pub fn fixture(provider: Provider, relative: &str) -> Ingest {
    fixture_received_at(provider, relative, received_at())
}

/// [`fixture`], received at another time (a resend of the same delivery).
pub fn fixture_received_at(provider: Provider, relative: &str, at: DateTime<Utc>) -> Ingest {
    let path = fixture_path(relative);
    assert!(Path::new(&path).exists(), "missing fixture {relative}");
    let (mut delivery, signed) = shipfeed_testkit::load(&path);
    delivery.received_at = at;
    let adapter = registry::adapter(provider, &Settings::default()).unwrap();
    let credentials = Credentials::Hmac(Secret::new(shipfeed_testkit::FIXTURE_SECRET));
    let outcome = if signed {
        adapter.construct(&delivery, &credentials)
    } else {
        adapter.parse(&delivery)
    };
    Ingest {
        endpoint: provider.as_str().to_owned(),
        provider,
        delivery,
        outcome,
    }
}

/// The events of an ingest's outcome (none for a dead letter).
pub fn events_of(ingest: &Ingest) -> Vec<TrackingEvent> {
    match &ingest.outcome {
        Ok(outputs) => outputs
            .iter()
            .filter_map(Output::as_event)
            .cloned()
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// An RFC 3339 time.
pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// A hand-written Sendcloud-like event for the parcel `tracking` with carrier `postnl`.
pub fn event(tracking: &str, id: &str, occurred_at: &str, status: Option<Status>) -> TrackingEvent {
    let occurred_at = at(occurred_at);
    TrackingEvent {
        event_id: EventId(format!("sendcloud:{tracking}-{id}")),
        provider: Provider::Sendcloud,
        status,
        substatus: status
            .filter(|s| *s == Status::Unknown)
            .map(|_| "unknown.unmapped".to_owned()),
        raw: RawStatus {
            code: Some(id.to_owned()),
            message: Some(format!("{status:?}")),
        },
        occurred_at,
        time_zone_known: true,
        recorded_at: None,
        received_at: occurred_at,
        shipment: ShipmentRef {
            carrier: Some("postnl".to_owned()),
            tracking_number: Some(tracking.to_owned()),
            ..ShipmentRef::default()
        },
        location: None,
        estimated_delivery: None,
        message: None,
        delivery_id: None,
        trigger: true,
    }
}

/// A delivery carrying these events (its body is their JSON, as an adapter would have read).
pub fn ingest_events(events: &[TrackingEvent]) -> Ingest {
    let body = serde_json::to_vec(events).unwrap();
    Ingest {
        endpoint: "sendcloud".to_owned(),
        provider: Provider::Sendcloud,
        delivery: RawDelivery::new(body, received_at())
            .with_header("Content-Type", "application/json"),
        outcome: Ok(events.iter().cloned().map(Output::Event).collect()),
    }
}

/// A delivery its adapter could not normalize.
pub fn ingest_error(body: &[u8], error: Error) -> Ingest {
    Ingest {
        endpoint: "sendcloud".to_owned(),
        provider: Provider::Sendcloud,
        delivery: RawDelivery::new(body.to_vec(), received_at()),
        outcome: Err(error),
    }
}

/// The event items among feed items.
pub fn events(items: Vec<FeedItem>) -> Vec<EventItem> {
    items
        .into_iter()
        .filter_map(|item| match item {
            FeedItem::Event(event) => Some(event),
            _ => None,
        })
        .collect()
}

/// Every event item of the feed, paged `page` at a time, checking the cursor order on the way.
pub async fn whole_feed(store: &Store, page: usize) -> Vec<EventItem> {
    let mut items: Vec<FeedItem> = Vec::new();
    let mut cursor = 0;
    loop {
        let batch = store.events_after(cursor, page).await.unwrap();
        assert!(
            batch.len() <= page,
            "events_after returned more than the limit"
        );
        let Some(last) = batch.last() else {
            assert!(items.windows(2).all(|w| w[0].seq() < w[1].seq()));
            return events(items);
        };
        cursor = last.seq();
        items.extend(batch);
    }
}

/// Fisher–Yates with a small deterministic generator, so failures reproduce.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    for i in (1..items.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = usize::try_from((state >> 33) % (i as u64 + 1)).unwrap();
        items.swap(i, j);
    }
}
