//! Test support: a fresh store of either kind, and deliveries built from real fixtures or
//! from hand-written events.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // test code: panics are the failure reports

use std::path::Path;

use chrono::{DateTime, Utc};
use shipfeed::registry::{self, Settings};
use shipfeed::{
    Credentials, Error, EventId, Output, Provider, RawDelivery, RawStatus, Secret, ShipmentRef,
    Status, TrackingEvent,
};
use shipfeed_store::{Arrival, Normalized, Projection, Store, PROJECTOR};

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
    let batch = seqs
        .into_iter()
        .zip(outcomes)
        .map(|(delivery_seq, (provider, outcome))| Normalized {
            delivery_seq,
            provider,
            outcome,
        })
        .collect();
    store.project(&test_lease(store).await, None, batch).await
}

/// Projects stored delivery `seq` again with this outcome (what replay does).
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
    };
    let mut done = store
        .project(&test_lease(store).await, None, vec![item])
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
pub mod pg {
    //! A private schema per test on the test PostgreSQL server.

    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio_postgres::{Client, NoTls};

    /// The server the tests use unless `SHIPFEED_TEST_POSTGRES_URL` says otherwise.
    pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    pub fn base_url() -> String {
        std::env::var("SHIPFEED_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
    }

    /// A plain client on the test server; fails the test loudly when the server is not up.
    pub async fn admin() -> Client {
        let url = base_url();
        let (client, connection) = match tokio_postgres::connect(&url, NoTls).await {
            Ok(pair) => pair,
            Err(error) => panic!(
                "\n\nPostgreSQL is not reachable at {url}: {error} ({:?})\n\
                 The PostgreSQL store tests need a running server. Start the local one with\n\
                 \n    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
                 \n(and create the database once: createdb -h 127.0.0.1 -U postgres test),\n\
                 or point SHIPFEED_TEST_POSTGRES_URL at another server.\n",
                std::error::Error::source(&error).map(ToString::to_string)
            ),
        };
        tokio::spawn(connection);
        client
    }

    fn random_suffix() -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        format!("{:016x}", hasher.finish())
    }

    /// The URL of the test server with `search_path` set to `schema`.
    pub fn url_with_search_path(base: &str, schema: &str) -> String {
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}options=-csearch_path%3D{schema}")
    }

    /// A fresh schema `shipfeed_t_<random>`, dropped with everything in it on drop.
    pub struct Schema {
        pub name: String,
        pub url: String,
    }

    impl Schema {
        pub async fn create() -> Schema {
            let name = format!("shipfeed_t_{}", random_suffix());
            admin()
                .await
                .batch_execute(&format!("CREATE SCHEMA {name}"))
                .await
                .unwrap_or_else(|e| panic!("CREATE SCHEMA {name}: {e:?}"));
            let url = url_with_search_path(&base_url(), &name);
            Schema { name, url }
        }

        /// A client whose search path is this schema, to look at the tables directly.
        pub async fn client(&self) -> Client {
            let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
            tokio::spawn(connection);
            client
        }
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let name = self.name.clone();
            // Drop may run inside a runtime (or while a test panics): use a thread of its own,
            // and give up (leaving the schema behind) rather than hang the test run.
            let (done, dropped) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let result = runtime.map_err(|e| e.to_string()).and_then(|runtime| {
                    runtime.block_on(async {
                        let (client, connection) = tokio_postgres::connect(&base_url(), NoTls)
                            .await
                            .map_err(|e| e.to_string())?;
                        tokio::spawn(connection);
                        client
                            .batch_execute(&format!(
                                "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                            ))
                            .await
                            .map_err(|e| format!("{e:?}"))
                    })
                });
                let _ = done.send(result);
            });
            match dropped.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    eprintln!("warning: test schema {} not dropped: {error}", self.name)
                }
                Err(_) => eprintln!("warning: test schema {} not dropped in time", self.name),
            }
        }
    }
}

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
    let path = fixture_path(relative);
    assert!(Path::new(&path).exists(), "missing fixture {relative}");
    let (delivery, signed) = shipfeed_testkit::load(&path);
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

/// Every event of the feed, paged `page` at a time, checking the cursor order on the way.
pub async fn whole_feed(store: &Store, page: usize) -> Vec<shipfeed_store::FeedItem> {
    let mut items: Vec<shipfeed_store::FeedItem> = Vec::new();
    let mut cursor = 0;
    loop {
        let batch = store.events_after(cursor, page).await.unwrap();
        assert!(
            batch.len() <= page,
            "events_after returned more than the limit"
        );
        let Some(last) = batch.last() else {
            return items;
        };
        cursor = last.seq;
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
