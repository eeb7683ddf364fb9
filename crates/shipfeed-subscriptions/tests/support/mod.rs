//! Test support: a fresh store of either kind (PostgreSQL: a schema of its own per test, which
//! several `Store`s can open as replicas), events put into it, replicas running subscriptions,
//! and waiting on conditions with a deadline.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use prometheus_client::registry::Registry;
use serde_json::Value;
use shipfeed_core::{Output, Provider, RawDelivery, RawStatus, ShipmentRef, Status};
use shipfeed_store::{Arrival, Clock, FeedItem, ManualClock, Normalized, Store, PROJECTOR};
use shipfeed_subscriptions::{Metrics, Runner, Settings, Subscription};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Runs each scenario (an `async fn(Backend)` of the test file, which imports `Backend`) on a
/// fresh SQLite store and a fresh PostgreSQL schema.
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario(super::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario(super::Backend::Postgres).await;
            }
        }
    )*};
}

/// Where a test's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database (a SQLite file or a PostgreSQL schema) and a directory for target files;
/// both are removed when dropped.
pub struct TestDb {
    pub dir: tempfile::TempDir,
    /// What `shipfeed_store::open` takes.
    pub url: String,
    schema: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => TestDb {
                url: dir.path().join("shipfeed.db").display().to_string(),
                dir,
                schema: None,
            },
            Backend::Postgres => {
                let schema = format!("shipfeed_subs_{}", run_tag());
                pg_execute(&format!("CREATE SCHEMA {schema}")).await;
                let base = pg_base();
                let separator = if base.contains('?') { '&' } else { '?' };
                TestDb {
                    url: format!("{base}{separator}options=-csearch_path%3D{schema}"),
                    dir,
                    schema: Some(schema),
                }
            }
        }
    }

    /// A store on this database; each call is one more replica's connection to it.
    pub async fn open(&self) -> Store {
        shipfeed_store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
    }

    /// A path in the test's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        // Drop may run inside a runtime or while a test panics: a thread and runtime of its
        // own, and a bounded wait (a schema left behind is better than a hung run).
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let dropped = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|runtime| {
                    runtime.block_on(pg_try_execute(&format!(
                        "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                });
            let _ = done.send(dropped);
        });
        if !matches!(
            finished.recv_timeout(Duration::from_secs(30)),
            Ok(Ok(Ok(())))
        ) {
            eprintln!("warning: a test schema was not dropped");
        }
    }
}

/// The test PostgreSQL server (`SHIPFEED_TEST_POSTGRES_URL` overrides).
pub fn pg_base() -> String {
    std::env::var("SHIPFEED_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

async fn pg_try_execute(sql: &str) -> Result<(), String> {
    let (client, connection) = tokio_postgres::connect(&pg_base(), tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    client.batch_execute(sql).await.map_err(|e| e.to_string())
}

async fn pg_execute(sql: &str) {
    if let Err(error) = pg_try_execute(sql).await {
        panic!(
            "PostgreSQL at {} is needed by this test and did not do `{sql}`: {error}\n\
             start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            pg_base()
        );
    }
}

/// NATS with JetStream for the NATS tests (`SHIPFEED_TEST_NATS_URL` overrides).
pub fn nats_url() -> String {
    std::env::var("SHIPFEED_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A tag no other test (in this run or another) uses: for schema names and event ids (NATS
/// JetStream is shared and drops a message id it saw recently).
pub fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Puts `count` new events into the feed and returns their event ids, in feed order. The one
/// place the tests produce feed items (today by committing deliveries; when the store gets an
/// inbox and a projector, only this changes).
pub async fn add_events(store: &Store, count: usize) -> Vec<String> {
    let tag = run_tag();
    let parcels: Vec<(String, usize)> = (0..count).map(|n| (format!("SUB{tag}N{n}"), n)).collect();
    store_events(store, &parcels).await
}

/// Puts `per_parcel` events of each of `parcels` new parcels into the feed, interleaved (the
/// first event of every parcel, then the second, ...); returns each parcel's tracking number
/// with its event ids in feed order.
pub async fn add_parcel_events(
    store: &Store,
    parcels: usize,
    per_parcel: usize,
) -> Vec<(String, Vec<String>)> {
    let tag = run_tag();
    let trackings: Vec<String> = (0..parcels).map(|p| format!("P{tag}X{p}")).collect();
    let events: Vec<(String, usize)> = (0..per_parcel)
        .flat_map(|n| trackings.iter().map(move |tracking| (tracking.clone(), n)))
        .collect();
    let ids = store_events(store, &events).await;
    trackings
        .iter()
        .map(|tracking| {
            let mine = ids
                .iter()
                .filter(|id| id.contains(&format!("{tracking}-")))
                .cloned()
                .collect();
            (tracking.clone(), mine)
        })
        .collect()
}

/// Stores one delivered event per `(tracking number, n)` (its id `sendcloud:<tracking>-<n>`,
/// occurring `n` seconds after noon) and projects them; their ids in feed order.
async fn store_events(store: &Store, events: &[(String, usize)]) -> Vec<String> {
    let at = DateTime::parse_from_rfc3339("2024-06-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let ingests: Vec<(Arrival, Result<Vec<Output>, shipfeed_core::Error>)> = events
        .iter()
        .map(|(tracking, n)| {
            let tracking = tracking.clone();
            let mut event = shipfeed_core::doc_support::event(
                &format!("sendcloud:{tracking}-{n}"),
                "2024-06-01T12:00:00Z",
                Status::Delivered,
            );
            event.occurred_at += TimeDelta::seconds(*n as i64);
            event.raw = RawStatus {
                code: Some("11".to_owned()),
                message: Some("Delivered".to_owned()),
            };
            event.shipment = ShipmentRef {
                carrier: Some("postnl".to_owned()),
                tracking_number: Some(tracking),
                ..ShipmentRef::default()
            };
            let arrival = Arrival {
                endpoint: "sendcloud".to_owned(),
                provider: Provider::Sendcloud,
                delivery: RawDelivery::new(serde_json::to_vec(&event).unwrap(), at),
            };
            (arrival, Ok(vec![Output::Event(event)]))
        })
        .collect();
    let ids = ingests
        .iter()
        .filter_map(|(_, outcome)| outcome.as_ref().ok())
        .flat_map(|outputs| outputs.iter().filter_map(Output::as_event))
        .map(|event| event.event_id.0.clone())
        .collect();
    let (arrivals, outcomes): (Vec<Arrival>, Vec<_>) = ingests.into_iter().unzip();
    let seqs = store.append(arrivals).await.unwrap();
    let lease = store
        .acquire_lease(PROJECTOR, "tests", Utc::now(), TimeDelta::hours(1))
        .await
        .unwrap()
        .expect("the tests' projector lease");
    let batch: Vec<Normalized> = seqs
        .into_iter()
        .zip(outcomes)
        .map(|(delivery_seq, outcome)| Normalized {
            delivery_seq,
            provider: Provider::Sendcloud,
            outcome,
            drift: None,
        })
        .collect();
    let projected = store.project(&lease, None, batch).await.unwrap();
    assert!(
        projected.iter().all(|p| p.events.len() == 1),
        "{projected:?}"
    );
    ids
}

/// Feed items per event [`add_events`] stores: the event, then its new parcel's first state.
pub const ITEMS_PER_EVENT: i64 = 2;

/// The events of the whole feed: `(seq, event_id)` in order (each new parcel's shipment state
/// follows its event in the feed; these tests follow the events).
pub async fn feed(store: &Store) -> Vec<(i64, String)> {
    let mut items = Vec::new();
    let mut after = 0;
    loop {
        let batch = store.events_after(after, 1000).await.unwrap();
        let Some(last) = batch.last() else {
            return items;
        };
        after = last.seq();
        items.extend(batch.into_iter().filter_map(|item| match item {
            FeedItem::Event(item) => Some((item.seq, item.event.event_id.0)),
            _ => None,
        }));
    }
}

/// The event lines among the complete JSON lines of a target file so far, as
/// `(seq, event_id)`.
pub fn lines(path: &Path) -> Vec<(i64, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Only whole lines: a write may be under way.
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|line| {
            let item: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(item["seq"].is_i64(), "{item}");
            item
        })
        .filter(|item| item["type"] == "event")
        .map(|item| {
            (
                item["seq"].as_i64().unwrap(),
                item["event_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Waits until `condition` answers `Ok`, asking every 20 ms, for at most 60 s; then fails
/// with `what` and the state its last `Err` described.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match condition().await {
            Ok(()) => return,
            Err(state) => assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {state}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the saved cursor `name` is at `seq`.
pub async fn wait_for_cursor(store: &Store, name: &str, seq: i64) {
    wait_until(&format!("cursor {name} at {seq}"), || async {
        match store.saved_cursor(name).await.unwrap() {
            Some(saved) if saved == seq => Ok(()),
            other => Err(format!("saved: {other:?}")),
        }
    })
    .await;
}

/// The lease length of the test replicas, on their manual clock. Idle replicas look every
/// third of it in real time (and at once when told of new events).
pub const TTL: TimeDelta = TimeDelta::seconds(3);

/// A manual clock for the replicas of one test.
pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        DateTime::parse_from_rfc3339("2024-06-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
    ))
}

/// One replica: subscriptions running over its own store, with its own metrics.
pub struct Replica {
    pub id: String,
    pub store: Store,
    wake: Arc<Notify>,
    registry: Registry,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Replica {
    /// Starts `subscriptions` as replica `id`, with leases on `clock`.
    pub async fn start(
        store: Store,
        id: &str,
        clock: Arc<dyn Clock>,
        subscriptions: &[Subscription],
    ) -> Replica {
        Replica::start_with(store, subscriptions, |settings| {
            settings.with_replica(id).with_clock(clock)
        })
        .await
    }

    /// Starts `subscriptions` with the test settings as `adjust` changes them.
    pub async fn start_with(
        store: Store,
        subscriptions: &[Subscription],
        adjust: impl FnOnce(Settings) -> Settings,
    ) -> Replica {
        let settings = adjust(
            Settings::default()
                .with_lease_ttl(TTL)
                .with_retry(Duration::from_millis(20), Duration::from_millis(200)),
        );
        let id = settings.replica().to_owned();
        let mut registry = Registry::default();
        let wake = Arc::new(Notify::new());
        let runner = Runner::new(
            store.clone(),
            Arc::clone(&wake),
            Metrics::register(&mut registry),
            settings,
        );
        let (stop, shutdown) = watch::channel(false);
        let tasks = runner.start(subscriptions, &shutdown).await.unwrap();
        Replica {
            id,
            store,
            wake,
            registry,
            stop,
            tasks,
        }
    }

    /// Tells the replica new events are stored (what the service's ingest path does).
    pub fn notify(&self) {
        self.wake.notify_waiters();
    }

    /// The value of one of its series (`name{subscription="..."}`), `None` when absent.
    pub fn metric(&self, series: &str) -> Option<i64> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }

    /// Whether it holds subscription `name`'s lease, by its gauge.
    pub fn holds(&self, name: &str) -> bool {
        self.metric(&format!(
            "shipfeed_subscription_lease_held{{subscription=\"{name}\"}}"
        )) == Some(1)
    }

    /// A graceful stop: each task finishes, releases its lease and ends.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        for task in self.tasks {
            task.await.unwrap();
        }
    }

    /// A crash: the tasks are dropped where they are, their leases left to run out.
    pub async fn abort(self) {
        for task in self.tasks {
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
        }
    }
}
