//! The durable store of the shipfeed service.
//!
//! One type, [`Store`], over two databases: SQLite ([`Store::sqlite`]), the embedded default
//! (one file, one process), and PostgreSQL (`Store::postgres`, cargo feature `postgres`), for
//! several `shipfeed serve` replicas sharing one database. [`open`] picks one from a URL or
//! path.
//!
//! The logic is written once: `write` (the work queue, group commit, the projection rules:
//! deduplication, revisions, retractions, dead letters, shipment states) and [`Store`]'s reads
//! work through a small SQL-level interface (`driver`); the `sqlite` and `postgres` modules
//! hold only schema, SQL and their durability specifics (WAL checkpoints; the commit-order
//! locks).
//!
//! It holds the pipeline's two durable halves:
//!
//! - **the inbox**: [`Store::append`] stores raw deliveries in one durable transaction (group
//!   commit with concurrent callers); when it returns `Ok` the sender may be answered;
//! - **the feed**: [`Store::project`] (and [`Store::reproject`] for replay) records what the
//!   adapters made of stored deliveries, under the projector's [`Lease`], in one transaction
//!   with the projector's cursor: events (revision 1 when new, the next revision when their
//!   content changed), retractions, dead letters, recomputed shipment states (a
//!   `shipment_state` item when a status changes), and each delivery's [`Projection`].
//!
//! Beside them it keeps the audit log of operators' actions ([`Store::record_audit`],
//! [`Store::audit`]): appended only, read newest first.
//!
//! Both halves are safe to read from a cursor ([`Store::deliveries`],
//! [`Store::events_after`]): a row never becomes visible with a smaller `seq` than one already
//! visible, so a consumer that saves the last `seq` it saw never skips one.
#![forbid(unsafe_code)]

mod alerts;
mod audit;
mod driver;
mod filter;
mod lease;
mod migrate;
#[cfg(feature = "postgres")]
mod postgres;
mod project;
mod push;
mod sqlite;
mod write;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shipfeed_core::drift::{Drift, DriftKind};
use shipfeed_core::identity::{scans, Identity, Scan};
use shipfeed_core::{
    sort_timeline, Error, ErrorKind, Headers, Output, Provider, RawDelivery, ShipmentRef,
    ShipmentState, TrackingEvent,
};
use tokio::sync::{mpsc, oneshot};

pub use alerts::{
    alert_id, stalled_rule, Alert, AlertCleared, AlertItem, StalledRules, RAISE_LIMIT,
};
pub use audit::{AuditAction, AuditEntry, AuditOutcome, AuditRecord};
use driver::{ReadDriver, ShipmentLookup, WriteDriver};
pub use filter::{Context, Dimension, Filter, FilterError, FilterSpec, ItemType, Lookup};
pub use lease::{Clock, Lease, LeaseHolder, ManualClock, SystemClock};
pub use push::{
    ControlAction, PushCommit, PushMessage, PushState, SubscriptionControl, SubscriptionStatus,
};
use write::{Done, Job, Work};

/// The name of the projector's lease and of its cursor in the inbox.
pub const PROJECTOR: &str = "projector";

/// One authenticated delivery, as it enters the inbox.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The inbound endpoint's (or SQS source's) name.
    pub endpoint: String,
    /// The provider behind the endpoint.
    pub provider: Provider,
    /// The delivery exactly as received.
    pub delivery: RawDelivery,
}

/// A stored delivery and what this build's adapter made of it, for [`Store::project`].
#[derive(Debug)]
pub struct Normalized {
    /// The delivery's inbox `seq`.
    pub delivery_seq: i64,
    /// Its provider (shipment keys without a carrier are scoped by it).
    pub provider: Provider,
    /// The adapter's outputs, or why it could not normalize the delivery (→ dead letter).
    pub outcome: Result<Vec<Output>, Error>,
    /// What the adapter noted it does not know ([`DeliveryDrift::new`]); `None` when nothing.
    /// Unknown status codes need not be in it: the store reads them from the new events.
    pub drift: Option<DeliveryDrift>,
}

/// What one delivery's adapter met and does not know
/// ([`drift::observe`](shipfeed_core::drift::observe)), with the hash of the delivery's bytes:
/// a byte-identical repeat of a delivery already counted (a provider's retry) counts no more.
#[derive(Debug, Clone)]
pub struct DeliveryDrift {
    drift: Drift,
    fingerprint: String,
    received_at: DateTime<Utc>,
}

impl DeliveryDrift {
    /// The drift noted in `delivery`; `None` when nothing was noted.
    pub fn new(drift: Drift, delivery: &RawDelivery) -> Option<Self> {
        use sha2::Digest as _;
        if drift.is_empty() {
            return None;
        }
        Some(DeliveryDrift {
            drift,
            fingerprint: hex::encode(sha2::Sha256::digest(&delivery.body)),
            received_at: delivery.received_at,
        })
    }
}

/// The most distinct keys kept per provider and kind of drift; the observations of further
/// keys are only counted ([`DriftReport::dropped`]), so a provider sending random field names
/// cannot grow the table without bound.
pub const DRIFT_KEYS_PER_KIND: usize = 200;

/// What the adapters met and do not know, per provider, kind and key ([`Store::drift`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DriftEntry {
    /// The provider whose deliveries showed it.
    pub provider: Provider,
    /// What kind of thing.
    pub kind: DriftKind,
    /// Which one: a status code, a message type, a JSON path (`parcel.new_field`), or a path
    /// and the type met (`parcel.is_return: string`).
    pub key: String,
    /// How many distinct deliveries showed it (see ARCHITECTURE.md for what counts once).
    pub deliveries: i64,
    /// When the first of them was received.
    pub first_seen: DateTime<Utc>,
    /// When the latest of them (by inbox `seq`) was received.
    pub last_seen: DateTime<Utc>,
    /// The first of them, by inbox `seq` (`GET /v1/deliveries/{seq}`).
    pub sample_delivery_seq: i64,
}

/// Observations of keys past [`DRIFT_KEYS_PER_KIND`], per provider and kind: counted, not kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DriftDropped {
    /// The provider.
    pub provider: Provider,
    /// The kind whose keys were past the cap.
    pub kind: DriftKind,
    /// How many observations (delivery and key) were not kept.
    pub observations: i64,
}

/// The drift report: `GET /v1/drift`, `shipfeed drift`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DriftReport {
    /// Every kept key, by provider, kind and key.
    pub entries: Vec<DriftEntry>,
    /// What the cap dropped.
    pub dropped: Vec<DriftDropped>,
}

/// The first delivery that showed a provider's drift key: its feed item, once per
/// `(provider, kind, key)` (not for keys past the cap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct DriftItem {
    /// The cursor.
    #[serde(default)]
    pub seq: i64,
    /// The provider.
    pub provider: Provider,
    /// What kind of thing.
    pub kind: DriftKind,
    /// Which one (as in [`DriftEntry::key`]).
    pub key: String,
    /// The delivery that showed it first.
    pub delivery_seq: i64,
    /// When that delivery was received.
    pub first_seen: DateTime<Utc>,
}

/// Normalized deliveries made into the rows the store writes (events serialized, hashed and
/// keyed), for [`Store::project`]. That is CPU work which `project` would otherwise do on its
/// caller's task when given the `Vec<Normalized>` itself; the projector does it on a thread of
/// its own beforehand.
pub struct PreparedBatch(Vec<(i64, project::Outcome)>);

impl PreparedBatch {
    /// The batch's rows, its shipments keyed by `identity`.
    pub fn new(batch: Vec<Normalized>, identity: &Identity) -> Self {
        PreparedBatch(
            batch
                .into_iter()
                .map(|item| {
                    (
                        item.delivery_seq,
                        project::outcome_rows(item.provider, item.outcome, item.drift, identity),
                    )
                })
                .collect(),
        )
    }
}

/// With the default [`Identity`] (every carrier apart).
impl From<Vec<Normalized>> for PreparedBatch {
    fn from(batch: Vec<Normalized>) -> Self {
        PreparedBatch::new(batch, &Identity::default())
    }
}

impl std::fmt::Debug for PreparedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedBatch")
            .field("deliveries", &self.0.len())
            .finish()
    }
}

/// Lowers the CPU priority of the calling thread (Linux: its nice value becomes
/// [`BACKGROUND_NICE`]; elsewhere nothing), for work that must not take the CPU from
/// acknowledgements: the projector's thread and the SQLite store's projection writer call it.
/// Under more load than the machine can take, the inbox then keeps its rate and latency and
/// the projection falls behind (its lag is a metric) instead of both slowing down. A priority
/// cannot be raised again without privileges, so call it only on threads of one's own.
pub fn deprioritize_current_thread() {
    #[cfg(target_os = "linux")]
    if let Err(error) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), BACKGROUND_NICE)
    {
        tracing::warn!(%error, "cannot lower the thread's priority");
    }
}

/// The nice value of [`deprioritize_current_thread`]: a CPU share about a tenth of a normal
/// thread's when both want the CPU, and all of it when nothing else does.
pub const BACKGROUND_NICE: i32 = 10;

/// What projecting one delivery produced; kept with the delivery (`GET /v1/deliveries/{seq}`).
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Projection {
    /// The delivery's inbox `seq`.
    pub delivery_seq: i64,
    /// Ids of the events stored for the first time (they entered the feed).
    pub events: Vec<String>,
    /// Ids of events already stored as they are (counted, not re-emitted).
    pub duplicates: Vec<String>,
    /// Ids of stored events whose content this delivery changed: each entered the feed again
    /// as its next revision.
    #[serde(default)]
    pub revised: Vec<String>,
    /// Ids of events this delivery used to carry and no longer does (projected again after a
    /// fix): each was retracted.
    #[serde(default)]
    pub retracted: Vec<String>,
    /// Non-tracking notices in the delivery.
    pub notices: usize,
    /// Why the delivery is a dead letter, when it is.
    pub dead_letter: Option<String>,
    /// The statuses of `events`, for metrics.
    #[serde(skip)]
    pub new_event_statuses: Vec<&'static str>,
}

/// Where a delivery is in the pipeline: stored in the inbox, and projected or not yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DeliveryStatus {
    /// Its inbox `seq`.
    pub delivery_seq: i64,
    /// Endpoint it arrived on.
    pub endpoint: String,
    /// Provider.
    pub provider: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// Whether the projector has processed it.
    pub projected: bool,
    /// What its latest projection produced (`None` until projected).
    pub projection: Option<Projection>,
}

/// How far the projector is behind the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLag {
    /// Deliveries stored but not yet projected.
    pub deliveries: i64,
    /// When the oldest of them arrived.
    pub oldest: Option<DateTime<Utc>>,
}

/// When each endpoint's (or SQS source's) last delivery arrived, as far as the most recent
/// deliveries of the inbox tell ([`Store::recent_arrivals`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentArrivals {
    /// Per endpoint or source name, the `received_at` of its last delivery among those read
    /// (the one with the greatest `seq`).
    pub last: std::collections::BTreeMap<String, DateTime<Utc>>,
    /// The `received_at` of the oldest delivery read; `None` when the inbox is empty. An
    /// endpoint missing from `last` delivered nothing since then (unless `whole_inbox`, then
    /// never).
    pub oldest: Option<DateTime<Utc>>,
    /// Whether every delivery of the inbox was read (it held no more than asked for).
    pub whole_inbox: bool,
}

/// One entry of the feed (`GET /v1/events`, every subscription). On the wire each is one
/// JSON object with its cursor and its kind beside its fields, `{"seq": N, "type": "event",
/// ...}` (schema: `schema/feed-item.schema.json`):
///
/// - `event`: a canonical event, as revision `revision` (1 when first stored; a correction
///   enters the feed again with the next revision). Consumers deduplicate on
///   `(event_id, revision)`.
/// - `retraction`: an event that no delivery carries any more (a fix changed its id, or its
///   delivery became a dead letter); its shipment's state no longer counts it.
/// - `shipment_state`: a shipment's current status changed (by the ordering rule), from
///   `previous` to `state`, so that consumers need not apply the rule themselves.
/// - `alert`: a shipment has gone without a new event for longer than its stalled rule
///   allows (raised once per rule, shipment and last event; see [`StalledRules`]).
/// - `alert_cleared`: the shipment of an alert moved on (its next event arrived), under the
///   same `alert_id`.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedItem {
    /// A canonical event, in one of its revisions.
    Event(EventItem),
    /// An event withdrawn.
    Retraction(Retraction),
    /// A shipment's status changed.
    ShipmentState(ShipmentStateChange),
    /// A stalled shipment.
    Alert(AlertItem),
    /// An alert that no longer holds.
    AlertCleared(AlertCleared),
    /// A provider's deliveries showed something the adapters do not know, for the first time.
    Drift(DriftItem),
}

impl FeedItem {
    /// The item's cursor: strictly increasing, stable across restarts.
    pub fn seq(&self) -> i64 {
        match self {
            FeedItem::Event(item) => item.seq,
            FeedItem::Retraction(item) => item.seq,
            FeedItem::ShipmentState(item) => item.seq,
            FeedItem::Alert(item) => item.seq,
            FeedItem::AlertCleared(item) => item.seq,
            FeedItem::Drift(item) => item.seq,
        }
    }

    /// The shipment the item is about (none for drift, which is about a provider).
    pub fn shipment_key(&self) -> Option<&str> {
        match self {
            FeedItem::Event(item) => Some(&item.shipment_key),
            FeedItem::Retraction(item) => Some(&item.shipment_key),
            FeedItem::ShipmentState(item) => Some(&item.shipment_key),
            FeedItem::Alert(item) => Some(&item.alert.shipment_key),
            FeedItem::AlertCleared(item) => Some(&item.shipment_key),
            FeedItem::Drift(_) => None,
        }
    }

    /// The event, when the item is one.
    pub fn as_event(&self) -> Option<&TrackingEvent> {
        match self {
            FeedItem::Event(item) => Some(&item.event),
            _ => None,
        }
    }
}

/// A canonical event in the feed.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct EventItem {
    /// The cursor.
    pub seq: i64,
    /// 1, 2, ...: which version of the event this is.
    pub revision: i64,
    /// The shipment it belongs to in this revision (see [`shipfeed_core::identity`]): what
    /// orders it among the shipment's items.
    pub shipment_key: String,
    /// The canonical event.
    #[serde(flatten)]
    pub event: TrackingEvent,
}

/// An event withdrawn from its shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Retraction {
    /// The cursor.
    #[serde(default)]
    pub seq: i64,
    /// The event withdrawn.
    pub event_id: String,
    /// Its last revision.
    pub revision: i64,
    /// The shipment it belonged to.
    pub shipment_key: String,
    /// The delivery whose new projection no longer yields it.
    pub delivery_seq: i64,
}

/// A shipment's status changed.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ShipmentStateChange {
    /// The cursor.
    #[serde(default)]
    pub seq: i64,
    /// The shipment (see [`shipfeed_core::identity`]).
    pub shipment_key: String,
    /// Its identity, from its latest event (none when no event is left).
    pub shipment: Option<ShipmentRef>,
    /// The status before (none for a new shipment).
    pub previous: Option<StatusChange>,
    /// The state now, with the event that set its status (none when no event is left).
    pub state: Option<ShipmentState>,
}

/// A status and the event that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct StatusChange {
    /// The status.
    pub status: shipfeed_core::Status,
    /// Its substatus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<String>,
    /// The event that set it.
    pub status_event_id: shipfeed_core::EventId,
}

/// The most feed items one [`Store::feed_page`] call reads past its cursor when a filter is
/// set (more only when the page asked for is larger).
pub const FILTER_SCAN_LIMIT: usize = 5_000;

/// How many items [`Store::feed_page`] reads at a time.
const FILTER_SCAN_CHUNK: usize = 500;

/// A page of the feed read through a [`Filter`] ([`Store::feed_page`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedPage {
    /// The items the filter admits, in cursor order.
    pub items: Vec<FeedItem>,
    /// Where the next page starts: the `seq` of the last item read, admitted or not (the
    /// `after` asked for when nothing was read).
    pub next_cursor: i64,
}

/// A dead letter: an authentic delivery that could not be normalized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DeadLetter {
    /// Sequence number of the raw delivery.
    pub delivery_seq: i64,
    /// Endpoint it arrived on.
    pub endpoint: String,
    /// Provider.
    pub provider: Provider,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// Why normalizing failed.
    pub error: String,
}

/// How many dead letters one endpoint's deliveries count now ([`Store::dead_letter_counts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterCount {
    /// The endpoint (or SQS source) the deliveries arrived on.
    pub endpoint: String,
    /// Its provider.
    pub provider: Provider,
    /// Its deliveries that are dead letters now (a replay that projects one takes it off).
    pub count: i64,
}

/// A stored raw delivery, for replay.
#[derive(Debug, Clone)]
pub struct StoredDelivery {
    /// Sequence number.
    pub seq: i64,
    /// Endpoint it arrived on.
    pub endpoint: String,
    /// Provider.
    pub provider: Provider,
    /// The delivery as received.
    pub delivery: RawDelivery,
    /// Whether it is currently a dead letter.
    pub dead_letter: bool,
}

/// A shipment's current state and its timeline.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ShipmentView {
    /// `carrier:tracking_number` (or a provider-scoped key when either is missing).
    pub key: String,
    /// Identity, from the latest event.
    pub shipment: ShipmentRef,
    /// Current state by the ordering rule.
    pub state: ShipmentState,
    /// Every event, in timeline order.
    pub timeline: Vec<TrackingEvent>,
    /// The timeline as physical scans: the same scan reported by several providers is one
    /// scan "seen via" each of them (its events stay in `timeline` and in the feed).
    pub scans: Vec<Scan>,
    /// Events that were retracted (a replay found no delivery yields them any more), in
    /// timeline order: no longer in `timeline` nor in the state, kept to show what changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retracted: Vec<TrackingEvent>,
}

/// Store failures.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed or could not be reached: temporary from the caller's point of view
    /// (answer 503 and let the provider retry, or leave the queue message for redelivery).
    #[error("{context}")]
    Database {
        /// What the store was doing.
        context: String,
        /// The database client's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The store cannot work as configured: a malformed or unsupported URL, a backend this
    /// build lacks, a schema newer than this shipfeed.
    #[error("{0}")]
    Config(String),
    /// What the call names does not exist (replaying a delivery that is not stored).
    #[error("{0}")]
    NotFound(String),
    /// The store's writer has stopped (shutdown or crash).
    #[error("the store is shutting down")]
    Closed,
    /// A write made on behalf of a lease under an epoch the lease no longer has: another
    /// holder has taken it over since, and this write was refused.
    #[error("lease `{lease}` is no longer held under epoch {epoch} (now {current:?})")]
    Fenced {
        /// The lease's name.
        lease: String,
        /// The epoch the write carried.
        epoch: i64,
        /// The lease's epoch now (`None`: never granted).
        current: Option<i64>,
    },
    /// A broken invariant inside the store (a bug, reported rather than panicking).
    #[error("internal store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// A database error with what the store was doing.
    pub(crate) fn database(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Database {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn internal(what: impl Into<String>) -> Self {
        StoreError::Internal(what.into())
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        let kind = match error {
            StoreError::Database { .. } | StoreError::Closed => ErrorKind::Unavailable,
            StoreError::Config(_) | StoreError::NotFound(_) | StoreError::Fenced { .. } => {
                ErrorKind::Config
            }
            StoreError::Internal(_) => ErrorKind::Unavailable,
        };
        Error::new(kind, error.to_string()).with_source(error)
    }
}

/// The durable store behind the service: cheap to clone (clones share the writers and the
/// readers).
///
/// Every write is queued to a writer, which takes whatever is queued (up to 512 jobs) into
/// one transaction, so one flush to disk covers many deliveries; should a job fail, the group
/// runs again with a savepoint per job, so that it cannot sink the others. Inbox appends go
/// to the **inbox writer**, everything else (projections, cursors, leases) to the **feed
/// writer**, so acknowledgements never wait for a projection: on PostgreSQL these are two
/// connections, each with its own commit-order lock; on SQLite, which has one writer per file,
/// two files, the inbox beside the database. That logic is written once (`write.rs`); SQLite
/// and PostgreSQL differ only in their drivers.
#[derive(Clone)]
pub struct Store {
    inbox: mpsc::Sender<Job>,
    writer: mpsc::Sender<Job>,
    reader: Arc<dyn ReadDriver>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// A writer whose driver blocks (SQLite): its own thread, driving the write loop on a
/// current-thread runtime, so it never takes a worker from the caller's runtime.
/// The projection writer runs `background` ([`deprioritize_current_thread`]).
fn start_on_thread(
    name: &str,
    driver: impl WriteDriver + 'static,
    background: bool,
) -> Result<mpsc::Sender<Job>, StoreError> {
    let (jobs, queue) = mpsc::channel(write::QUEUE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| StoreError::database("start the writer's runtime", e))?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if background {
                deprioritize_current_thread();
            }
            runtime.block_on(write::write_loop(driver, queue))
        })
        .map_err(|e| StoreError::database("start the writer thread", e))?;
    Ok(jobs)
}

impl Store {
    /// The embedded default: a SQLite database at `path`, created and migrated when needed,
    /// with its inbox beside it in `<path>-inbox` (back up the database first, then the
    /// inbox: the inbox only grows, so it then holds every delivery the database refers to).
    /// Needs no runtime: the writers and the WAL checkpoints run on threads of their own.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store = shipfeed_store::Store::sqlite(dir.path().join("shipfeed.db"))?;
    /// # drop(store);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`StoreError::Database`] when the file cannot be opened or migrated,
    /// [`StoreError::Config`] when its schema is newer than this shipfeed's.
    pub fn sqlite(path: impl AsRef<std::path::Path>) -> Result<Self, StoreError> {
        let (inbox, feed, reader) = sqlite::open(path.as_ref())?;
        Ok(Store {
            inbox: start_on_thread("shipfeed-inbox-writer", inbox, false)?,
            writer: start_on_thread("shipfeed-feed-writer", feed, true)?,
            reader: Arc::new(reader),
        }
        .maintained())
    }

    /// Queues, ahead of any other write, what a migration left to the store's logic (shipment
    /// states to recompute); a no-op job otherwise. Its failure is logged, and it runs again at
    /// the next start.
    fn maintained(self) -> Self {
        let (reply, _) = oneshot::channel();
        let job = Job {
            work: Work::RebuildShipments,
            reply,
        };
        if self.writer.try_send(job).is_err() {
            tracing::warn!("could not queue the shipment rebuild; it runs at the next start");
        }
        self
    }

    /// Where [`Store::sqlite`] keeps the inbox of the database at `path`.
    ///
    /// ```
    /// let inbox = shipfeed_store::Store::sqlite_inbox_path("data/shipfeed.db".as_ref());
    /// assert_eq!(inbox, std::path::Path::new("data/shipfeed.db-inbox"));
    /// ```
    pub fn sqlite_inbox_path(path: &std::path::Path) -> std::path::PathBuf {
        sqlite::inbox_path(path)
    }

    /// A PostgreSQL database shared by several replicas (see `postgres` for the design): connects
    /// (no TLS) to `url`, creates or checks the schema, and starts the writer task. A
    /// `search_path` given in the URL (`?options=-csearch_path%3Dshipfeed`) is honoured: the
    /// tables live in its first schema, which must exist. Must be called within a Tokio runtime.
    ///
    /// # Errors
    /// [`StoreError::Config`] for an invalid URL or a schema of an unknown version,
    /// [`StoreError::Database`] when the database cannot be reached or migrated.
    #[cfg(feature = "postgres")]
    pub async fn postgres(url: &str) -> Result<Self, StoreError> {
        let (inbox, feed, reader) = postgres::connect(url).await?;
        let spawn = |driver| {
            let (jobs, queue) = mpsc::channel(write::QUEUE);
            tokio::spawn(write::write_loop(driver, queue));
            jobs
        };
        Ok(Store {
            inbox: spawn(inbox),
            writer: spawn(feed),
            reader: Arc::new(reader),
        }
        .maintained())
    }

    async fn submit(&self, work: Work) -> Result<Done, StoreError> {
        let writer = if work.acknowledges() {
            &self.inbox
        } else {
            &self.writer
        };
        let (reply, done) = oneshot::channel();
        writer
            .send(Job { work, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// Appends authenticated deliveries to the inbox in one durable transaction and returns
    /// their `seq`s, in order; `Ok` means they are on disk, so the sender may be answered.
    /// Nothing is normalized here: the projector does that from the inbox.
    ///
    /// # Errors
    /// [`StoreError`] when nothing was stored.
    pub async fn append(&self, arrivals: Vec<Arrival>) -> Result<Vec<i64>, StoreError> {
        let rows = arrivals.into_iter().map(write::delivery_row).collect();
        match self.submit(Work::Append(rows)).await? {
            Done::Append(seqs) => Ok(seqs),
            _ => Err(StoreError::internal("the writer answered another job")),
        }
    }

    /// Records what the adapters made of stored deliveries, in one transaction, on behalf of
    /// the holder of `lease` (the projector's, or replay's): its events are inserted with
    /// `event_id` unique (duplicates counted, not re-inserted), a dead letter is set or
    /// cleared, every touched shipment's state is recomputed from the set of its events, and
    /// each delivery keeps what its projection produced. When `cursor` is given, that cursor
    /// moves in the same transaction, so a crash repeats at most this batch.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when the lease was taken over (nothing is stored);
    /// [`StoreError::NotFound`] for a `seq` with no delivery; any other [`StoreError`] when
    /// nothing was stored.
    pub async fn project(
        &self,
        lease: &Lease,
        cursor: Option<(&str, i64)>,
        batch: impl Into<PreparedBatch>,
    ) -> Result<Vec<Projection>, StoreError> {
        self.project_work(lease, cursor, batch.into(), false).await
    }

    /// Records what this build's adapters make of deliveries projected before (replay), as
    /// [`project`](Store::project) does, and more: an event whose content changed becomes its
    /// next revision (unless a later delivery carries it), and an event a delivery used to
    /// carry and no longer yields is retracted. Projecting the same deliveries again changes
    /// nothing.
    ///
    /// # Errors
    /// As [`project`](Store::project).
    pub async fn reproject(
        &self,
        lease: &Lease,
        batch: impl Into<PreparedBatch>,
    ) -> Result<Vec<Projection>, StoreError> {
        self.project_work(lease, None, batch.into(), true).await
    }

    async fn project_work(
        &self,
        lease: &Lease,
        cursor: Option<(&str, i64)>,
        batch: PreparedBatch,
        again: bool,
    ) -> Result<Vec<Projection>, StoreError> {
        let work = Work::Project {
            lease: (lease.name.clone(), lease.epoch),
            cursor: cursor.map(|(name, position)| (name.to_owned(), position)),
            items: batch.0,
            again,
        };
        match self.submit(work).await? {
            Done::Project(done) => Ok(done),
            _ => Err(StoreError::internal("the writer answered another job")),
        }
    }

    /// Saves the position of a named feed consumer.
    ///
    /// # Errors
    /// [`StoreError`] when nothing was stored.
    pub async fn save_cursor(&self, name: &str, position: i64) -> Result<(), StoreError> {
        self.submit_cursor(Work::SaveCursor(name.to_owned(), position, None))
            .await
    }

    /// Saves the position of a named feed consumer that runs under `lease`: in the same
    /// transaction, the lease must still have the epoch it was granted with.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when the lease was taken over since (nothing is saved); any
    /// other [`StoreError`] when nothing was stored.
    pub async fn save_cursor_under(
        &self,
        lease: &Lease,
        name: &str,
        position: i64,
    ) -> Result<(), StoreError> {
        let held = Some((lease.name.clone(), lease.epoch));
        self.submit_cursor(Work::SaveCursor(name.to_owned(), position, held))
            .await
    }

    async fn submit_cursor(&self, work: Work) -> Result<(), StoreError> {
        match self.submit(work).await? {
            Done::SaveCursor => Ok(()),
            _ => Err(StoreError::internal("the writer answered another job")),
        }
    }

    /// Grants `holder` the lease `name` from `now` for `ttl`, unless another holder has it
    /// and it has not run out: a renewal keeps the lease's epoch, a first grant or a takeover
    /// gets a new one. `None` when someone else holds it.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// use chrono::{DateTime, TimeDelta};
    /// let dir = tempfile::tempdir()?;
    /// let store = shipfeed_store::Store::sqlite(dir.path().join("shipfeed.db"))?;
    /// let (now, ttl) = (DateTime::UNIX_EPOCH, TimeDelta::seconds(10));
    /// let a = store.acquire_lease("projector", "replica-a", now, ttl).await?.unwrap();
    /// assert!(store.acquire_lease("projector", "replica-b", now, ttl).await?.is_none());
    /// let later = now + TimeDelta::seconds(11); // a has not renewed: b takes over
    /// let b = store.acquire_lease("projector", "replica-b", later, ttl).await?.unwrap();
    /// assert_eq!(b.epoch, a.epoch + 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: chrono::TimeDelta,
    ) -> Result<Option<Lease>, StoreError> {
        self.lease_work(name, holder, now, ttl, false).await
    }

    /// Takes lease `name` over for `holder` from `now` for `ttl`, whoever holds it, under a
    /// new epoch (an operator's `shipfeed replay` taking the projector's place): the previous
    /// holder's next write under the lease is refused with [`StoreError::Fenced`].
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn take_over_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: chrono::TimeDelta,
    ) -> Result<Lease, StoreError> {
        self.lease_work(name, holder, now, ttl, true)
            .await?
            .ok_or_else(|| StoreError::internal("a forced lease was not granted"))
    }

    async fn lease_work(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: chrono::TimeDelta,
        force: bool,
    ) -> Result<Option<Lease>, StoreError> {
        let work = Work::AcquireLease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            now,
            until: now + ttl,
            force,
        };
        match self.submit(work).await? {
            Done::Lease(lease) => Ok(lease),
            _ => Err(StoreError::internal("the writer answered another job")),
        }
    }

    /// Gives up lease `name` held under `epoch` (at shutdown), so that the next holder need
    /// not wait for it to run out. A lease taken over since is left alone.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn release_lease(
        &self,
        name: &str,
        epoch: i64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let work = Work::ReleaseLease {
            name: name.to_owned(),
            epoch,
            now,
        };
        match self.submit(work).await? {
            Done::Released => Ok(()),
            _ => Err(StoreError::internal("the writer answered another job")),
        }
    }

    /// Raises the stalled-shipment alerts due at `now` under `rules` (at most [`RAISE_LIMIT`]
    /// per call: call again while it returns that many), on behalf of the holder of the
    /// projector's `lease`, in one transaction: each alert is stored under its deterministic
    /// id ([`alert_id`]) and enters the feed as an `alert` item, once. A shipment is stalled
    /// when `now` is at least its rule's quiet time past its last event's `occurred_at`; a
    /// terminal one never is. Returns the alerts raised by this call (none already raised).
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when the lease was taken over (nothing is stored); any other
    /// [`StoreError`] when nothing was stored.
    pub async fn raise_stalled(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        rules: &StalledRules,
    ) -> Result<Vec<Alert>, StoreError> {
        let work = Work::RaiseAlerts {
            lease: (lease.name.clone(), lease.epoch),
            now,
            rules: rules.clone(),
        };
        match self.submit(work).await? {
            Done::Alerts(alerts) => Ok(alerts),
            _ => Err(StoreError::internal("the writer answered another job")),
        }
    }

    /// Writes one round of an HTTP push subscription's driver, holder of `lease`, in one
    /// transaction: messages parked or delivered, its failing time, its disabling, and its
    /// cursor (`cursor` names it).
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when the lease was taken over (nothing is stored); any other
    /// [`StoreError`] when nothing was stored.
    pub async fn commit_push(
        &self,
        lease: &Lease,
        subscription: &str,
        cursor: &str,
        round: PushCommit,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let work = Work::CommitPush {
            lease: (lease.name.clone(), lease.epoch),
            subscription: subscription.to_owned(),
            cursor: cursor.to_owned(),
            round,
            now,
        };
        match self.submit(work).await? {
            Done::SaveCursor => Ok(()),
            _ => Err(StoreError::internal("the writer answered another job")),
        }
    }

    /// An operator's pause, resume (re-enable) or disabling of an HTTP push subscription, at
    /// `now`: its state after the change. The replica driving it reads it at its next round.
    ///
    /// # Errors
    /// [`StoreError`] when nothing was stored.
    pub async fn control_subscription(
        &self,
        subscription: &str,
        action: ControlAction,
        now: DateTime<Utc>,
    ) -> Result<SubscriptionControl, StoreError> {
        let work = Work::ControlPush {
            subscription: subscription.to_owned(),
            action,
            now,
        };
        match self.submit(work).await? {
            Done::Control(control) => Ok(control),
            _ => Err(StoreError::internal("the writer answered another job")),
        }
    }

    /// Puts the exhausted messages of an HTTP push subscription first parked at or after
    /// `since` (all when `None`) back on schedule, due at `now`, each with the same
    /// `webhook-id` as before; returns how many.
    ///
    /// # Errors
    /// [`StoreError`] when nothing was stored.
    pub async fn redeliver(
        &self,
        subscription: &str,
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let work = Work::Redeliver {
            subscription: subscription.to_owned(),
            since,
            now,
        };
        match self.submit(work).await? {
            Done::Redelivered(count) => Ok(count),
            _ => Err(StoreError::internal("the writer answered another job")),
        }
    }

    /// Appends an operator's action to the audit log, in a transaction of its own; returns
    /// the id it was given (greater than every earlier entry's). Its `detail` must hold
    /// nothing secret or personal: names, parameters, counts.
    ///
    /// # Errors
    /// [`StoreError`] when nothing was stored.
    pub async fn record_audit(&self, record: AuditRecord) -> Result<i64, StoreError> {
        match self.submit(Work::RecordAudit(record)).await? {
            Done::Audited(id) => Ok(id),
            _ => Err(StoreError::internal("the writer answered another job")),
        }
    }

    /// Up to `limit` entries of the audit log with an id below `before` (from the newest when
    /// `None`), newest first: the next page's `before` is the last entry's id.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// use shipfeed_store::{AuditAction, AuditOutcome, AuditRecord};
    /// let dir = tempfile::tempdir()?;
    /// let store = shipfeed_store::Store::sqlite(dir.path().join("shipfeed.db"))?;
    /// let pause = |target: &str| AuditRecord {
    ///     at: chrono::DateTime::UNIX_EPOCH,
    ///     actor: "operator".into(),
    ///     action: AuditAction::Pause,
    ///     target: target.into(),
    ///     outcome: AuditOutcome::Ok,
    ///     detail: serde_json::json!({}),
    /// };
    /// let first = store.record_audit(pause("orders")).await?;
    /// let second = store.record_audit(pause("billing")).await?;
    /// assert!(second > first);
    /// let newest = store.audit(None, 1).await?;
    /// assert_eq!((newest[0].id, newest[0].target.as_str()), (second, "billing"));
    /// assert_eq!(store.audit(Some(second), 10).await?[0].id, first);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn audit(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self.reader.audit(before, sql_limit(limit)).await?;
        Ok(rows.into_iter().filter_map(audit::entry).collect())
    }

    /// The stored state of an HTTP push subscription (active at version 0 when never changed).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn subscription_control(
        &self,
        subscription: &str,
    ) -> Result<SubscriptionControl, StoreError> {
        Ok(self
            .reader
            .push_controls(Some(subscription))
            .await?
            .into_iter()
            .next()
            .map_or_else(|| SubscriptionControl::new(subscription), push::control))
    }

    /// Up to `limit` messages an HTTP push subscription has parked (waiting for a retry, or
    /// exhausted), after feed `seq` `after`, by `seq`; only those in `state` when given.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn push_messages(
        &self,
        subscription: &str,
        state: Option<PushState>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<PushMessage>, StoreError> {
        let rows = self
            .reader
            .push_messages(
                subscription,
                state.map(PushState::as_str),
                after,
                sql_limit(limit),
            )
            .await?;
        Ok(rows.into_iter().map(push::message).collect())
    }

    /// Up to `limit` open alerts (raised, not cleared) whose id is greater than `after` (""
    /// for the first page), by id.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn open_alerts(&self, after: &str, limit: usize) -> Result<Vec<Alert>, StoreError> {
        let rows = self.reader.open_alerts(after, sql_limit(limit)).await?;
        Ok(rows
            .iter()
            .filter_map(|body| parse_stored(body, "alert"))
            .collect())
    }

    /// The number of open alerts (raised, not cleared) per rule (`stalled.<status>`); rules
    /// without an open alert are left out. Reads the open alerts only.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn open_alert_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        Ok(self.reader.open_alert_counts().await?.into_iter().collect())
    }

    /// Up to `limit` events with a cursor greater than `after`, in cursor order. An event
    /// never becomes visible with a smaller `seq` than one already visible, so a consumer that
    /// saves the last `seq` it saw never skips one.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn events_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<FeedItem>, StoreError> {
        let rows = self.reader.events_after(after, sql_limit(limit)).await?;
        Ok(rows.into_iter().filter_map(feed_item).collect())
    }

    /// Up to `limit` items after `after` that `filter` admits, reading at most
    /// [`FILTER_SCAN_LIMIT`] items (or `limit`, when larger) past `after`, so that a filter
    /// matching little cannot make one call read the whole feed. The page's `next_cursor` is the
    /// last item *read*, passed or not: a consumer resuming from it never reads a filtered-out
    /// item again, and an empty page whose `next_cursor` moved means "more to scan".
    ///
    /// Revisions, retractions and cleared alerts that do not match by themselves pass when what
    /// they follow up did (see [`Filter`]); deciding that reads the event's revisions (the
    /// alert) from the store, for those items only.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn feed_page(
        &self,
        after: i64,
        limit: usize,
        filter: &Filter,
    ) -> Result<FeedPage, StoreError> {
        let limit = limit.max(1);
        if filter.is_empty() {
            let items = self.events_after(after, limit).await?;
            let next_cursor = items.last().map_or(after, FeedItem::seq);
            return Ok(FeedPage { items, next_cursor });
        }
        let budget = FILTER_SCAN_LIMIT.max(limit);
        let chunk = FILTER_SCAN_CHUNK.max(limit);
        let mut page = FeedPage {
            items: Vec::new(),
            next_cursor: after,
        };
        let mut scanned = 0;
        while scanned < budget && page.items.len() < limit {
            let want = chunk.min(budget - scanned);
            let batch = self.events_after(page.next_cursor, want).await?;
            let Some(last) = batch.last().map(FeedItem::seq) else {
                break;
            };
            let read = batch.len();
            for item in batch {
                page.next_cursor = item.seq();
                if self.admits(filter, &item).await? {
                    page.items.push(item);
                    if page.items.len() == limit {
                        return Ok(page);
                    }
                }
            }
            page.next_cursor = last;
            scanned += read;
            if read < want {
                break; // the feed's end (or rows this build cannot read, left for next time)
            }
        }
        Ok(page)
    }

    /// Whether `filter` admits `item`, reading what it needs to decide.
    async fn admits(&self, filter: &Filter, item: &FeedItem) -> Result<bool, StoreError> {
        let context = match filter.lookup(item) {
            None => Context::None,
            Some(Lookup::Revisions(event_id)) => Context::Revisions(
                self.revisions(event_id)
                    .await?
                    .into_iter()
                    .map(|(revision, _, event)| (revision, event))
                    .collect(),
            ),
            Some(Lookup::Alert(alert_id)) => Context::Alert(
                self.reader
                    .alert(alert_id)
                    .await?
                    .and_then(|body| parse_stored(&body, "alert"))
                    .map(Box::new),
            ),
        };
        Ok(filter.matches(item, &context))
    }

    /// Every stored version of an event, oldest first: `(revision, delivery_seq, event)`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn revisions(
        &self,
        event_id: &str,
    ) -> Result<Vec<(i64, i64, TrackingEvent)>, StoreError> {
        let rows = self.reader.revisions(event_id).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(revision, delivery, body)| {
                Some((revision, delivery, parse_stored(&body, "event")?))
            })
            .collect())
    }

    /// Shipments with this tracking number (and carrier, when given), each with its state, its
    /// timeline and its scans. The number is compared in
    /// [`tracking_number`](shipfeed_core::identity::tracking_number) form (case, white space
    /// and dashes do not count), the carrier as its slug.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn shipments(
        &self,
        carrier: Option<&str>,
        tracking_number: &str,
    ) -> Result<Vec<ShipmentView>, StoreError> {
        let lookup = ShipmentLookup::Tracking {
            carrier: carrier.and_then(shipfeed_core::carrier::normalize),
            number: shipfeed_core::identity::tracking_number(tracking_number),
        };
        self.shipment_views(&lookup).await
    }

    /// The shipments of the merchant's order `order_number` (surrounding white space and case
    /// ignored), with their states and timelines.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn shipments_by_order(
        &self,
        order_number: &str,
    ) -> Result<Vec<ShipmentView>, StoreError> {
        if order_number.trim().is_empty() {
            return Ok(Vec::new());
        }
        self.shipment_views(&ShipmentLookup::Order(order_number.to_owned()))
            .await
    }

    async fn shipment_views(
        &self,
        lookup: &ShipmentLookup,
    ) -> Result<Vec<ShipmentView>, StoreError> {
        let rows = self.reader.shipments(lookup).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let (mut timeline, mut retracted): (Vec<TrackingEvent>, Vec<TrackingEvent>) =
                    (Vec::new(), Vec::new());
                for (body, is_retracted) in &row.events {
                    if let Some(event) = parse_stored(body, "event") {
                        if *is_retracted {
                            retracted.push(event);
                        } else {
                            timeline.push(event);
                        }
                    }
                }
                sort_timeline(&mut timeline);
                sort_timeline(&mut retracted);
                Some(ShipmentView {
                    shipment: parse_stored(&row.shipment, "shipment")?,
                    state: parse_stored(&row.state, "state")?,
                    key: row.key,
                    scans: scans(&timeline),
                    timeline,
                    retracted,
                })
            })
            .collect())
    }

    /// Up to `limit` dead letters after the delivery sequence number `after`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn dead_letters(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = self.reader.dead_letters(after, sql_limit(limit)).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Some(DeadLetter {
                    provider: parse_provider(&row.provider, row.seq)?,
                    delivery_seq: row.seq,
                    endpoint: row.endpoint,
                    received_at: row.received_at,
                    error: row.error,
                })
            })
            .collect())
    }

    /// The number of dead letters now, per endpoint and provider (those of a provider this
    /// build does not know are left out). Reads the dead letters only, not every delivery.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn dead_letter_counts(&self) -> Result<Vec<DeadLetterCount>, StoreError> {
        let rows = self.reader.dead_letter_counts().await?;
        Ok(rows
            .into_iter()
            .filter_map(|(endpoint, provider, count)| {
                Some(DeadLetterCount {
                    provider: parse_provider(&provider, 0)?,
                    endpoint,
                    count,
                })
            })
            .collect())
    }

    /// Up to `limit` stored raw deliveries after `after` (only dead letters when asked), for
    /// replay.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn deliveries(
        &self,
        after: i64,
        limit: usize,
        dead_letters_only: bool,
    ) -> Result<Vec<StoredDelivery>, StoreError> {
        let rows = self
            .reader
            .deliveries(after, sql_limit(limit), dead_letters_only)
            .await?;
        Ok(rows.into_iter().filter_map(stored_delivery).collect())
    }

    /// The stored raw deliveries with these `seq`s (those that exist), in `seq` order, for
    /// replaying some deliveries by name.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn deliveries_at(&self, seqs: &[i64]) -> Result<Vec<StoredDelivery>, StoreError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.reader.deliveries_at(seqs.to_vec()).await?;
        Ok(rows.into_iter().filter_map(stored_delivery).collect())
    }

    /// The saved position of a named feed consumer (0 when none).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn cursor(&self, name: &str) -> Result<i64, StoreError> {
        Ok(self.saved_cursor(name).await?.unwrap_or(0))
    }

    /// The saved position of a named feed consumer, `None` when it never saved one (a new
    /// subscription, which decides where it starts).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn saved_cursor(&self, name: &str) -> Result<Option<i64>, StoreError> {
        self.reader.cursor(name).await
    }

    /// The `seq` of the last item in the feed (0 when it is empty): where a consumer that
    /// wants only what comes next starts.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn feed_end(&self) -> Result<i64, StoreError> {
        self.reader.feed_end().await
    }

    /// Where delivery `seq` is in the pipeline; `None` when no delivery has that `seq`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn delivery(&self, seq: i64) -> Result<Option<DeliveryStatus>, StoreError> {
        let Some(row) = self.reader.delivery(seq).await? else {
            return Ok(None);
        };
        let projection: Option<Projection> = row
            .projection
            .as_deref()
            .and_then(|text| parse_stored(text, "projection"));
        Ok(Some(DeliveryStatus {
            delivery_seq: seq,
            endpoint: row.endpoint,
            provider: row.provider,
            received_at: row.received_at,
            projected: row.projection.is_some(),
            projection,
        }))
    }

    /// How far a projector whose cursor is `cursor` is behind the inbox.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn inbox_lag(&self, cursor: i64) -> Result<InboxLag, StoreError> {
        let (last, oldest) = self.reader.inbox_after(cursor).await?;
        Ok(InboxLag {
            deliveries: (last - cursor).max(0),
            oldest,
        })
    }

    /// When each endpoint's last delivery arrived, among the last `limit` deliveries of the
    /// inbox (read by `seq`, without their bodies): what a restarted service knows of each
    /// endpoint's silence. An endpoint silent for longer than those deliveries cover is not in
    /// [`RecentArrivals::last`]; [`RecentArrivals::oldest`] bounds its silence from below.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let store = shipfeed_store::Store::sqlite(dir.path().join("shipfeed.db"))?;
    /// let arrivals = store.recent_arrivals(10_000).await?;
    /// assert!(arrivals.last.is_empty() && arrivals.oldest.is_none() && arrivals.whole_inbox);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn recent_arrivals(&self, limit: usize) -> Result<RecentArrivals, StoreError> {
        let limit = limit.max(1);
        let rows = self.reader.recent_arrivals(sql_limit(limit)).await?;
        let mut arrivals = RecentArrivals {
            whole_inbox: rows.len() < limit,
            oldest: rows.last().map(|(_, _, received_at)| *received_at),
            ..RecentArrivals::default()
        };
        // Newest first: an endpoint's first row is its last delivery.
        for (_, endpoint, received_at) in rows {
            arrivals.last.entry(endpoint).or_insert(received_at);
        }
        Ok(arrivals)
    }

    /// What the adapters met and do not know, per provider, kind and key (only `provider`'s
    /// when given), sorted by provider, kind and key.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn drift(&self, provider: Option<Provider>) -> Result<DriftReport, StoreError> {
        let rows = self
            .reader
            .drift(provider.map(|provider| provider.as_str().to_owned()))
            .await?;
        let mut report = DriftReport::default();
        for row in rows {
            let Some(provider) = parse_provider(&row.provider, row.sample_seq) else {
                continue;
            };
            if row.kind == project::DRIFT_DROPPED {
                if let Ok(kind) = row.key.parse() {
                    report.dropped.push(DriftDropped {
                        provider,
                        kind,
                        observations: row.deliveries,
                    });
                }
                continue;
            }
            let Ok(kind) = row.kind.parse() else {
                tracing::warn!(
                    kind = row.kind,
                    "skipping drift of a kind this build does not know"
                );
                continue;
            };
            report.entries.push(DriftEntry {
                provider,
                kind,
                key: row.key,
                deliveries: row.deliveries,
                first_seen: row.first_seen,
                last_seen: row.last_seen,
                sample_delivery_seq: row.sample_seq,
            });
        }
        report.entries.sort_by(|a, b| {
            (a.provider.as_str(), a.kind, &a.key).cmp(&(b.provider.as_str(), b.kind, &b.key))
        });
        report
            .dropped
            .sort_by(|a, b| (a.provider.as_str(), a.kind).cmp(&(b.provider.as_str(), b.kind)));
        Ok(report)
    }

    /// Whether the store answers (for `/readyz`).
    ///
    /// # Errors
    /// [`StoreError`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.reader.ping().await
    }
}

/// A stored JSON value read back; one that no longer parses is logged and left out rather than
/// failing the whole read (it cannot come from this build's writer).
pub(crate) fn parse_stored<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Option<T> {
    match serde_json::from_str(text) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(%error, what, "skipping an unreadable stored value");
            None
        }
    }
}

/// A feed row read back as its item.
fn feed_item(row: driver::StoredFeedRow) -> Option<FeedItem> {
    let seq = row.seq;
    match row.kind.as_str() {
        "event" => Some(FeedItem::Event(EventItem {
            seq,
            revision: row.revision.unwrap_or(1),
            shipment_key: row.shipment_key,
            event: parse_stored(&row.body, "event")?,
        })),
        "retraction" => Some(FeedItem::Retraction(Retraction {
            seq,
            ..parse_stored(&row.body, "retraction")?
        })),
        "shipment_state" => Some(FeedItem::ShipmentState(ShipmentStateChange {
            seq,
            ..parse_stored(&row.body, "shipment state")?
        })),
        "alert" => Some(FeedItem::Alert(AlertItem {
            seq,
            alert: parse_stored(&row.body, "alert")?,
        })),
        "alert_cleared" => Some(FeedItem::AlertCleared(AlertCleared {
            seq,
            ..parse_stored(&row.body, "alert cleared")?
        })),
        "drift" => Some(FeedItem::Drift(DriftItem {
            seq,
            ..parse_stored(&row.body, "drift")?
        })),
        other => {
            tracing::warn!(
                kind = other,
                seq,
                "skipping a feed item of a kind this build does not know"
            );
            None
        }
    }
}

/// A stored delivery read back (left out when its headers or provider cannot be read).
fn stored_delivery(row: driver::StoredRow) -> Option<StoredDelivery> {
    let headers: Vec<(String, String)> = parse_stored(&row.headers, "headers")?;
    Some(StoredDelivery {
        provider: parse_provider(&row.provider, row.seq)?,
        seq: row.seq,
        endpoint: row.endpoint,
        delivery: RawDelivery {
            body: row.body,
            headers: headers.into_iter().collect::<Headers>(),
            received_at: row.received_at,
        },
        dead_letter: row.error.is_some(),
    })
}

/// A stored provider name read back; one this build does not know is logged and left out.
fn parse_provider(name: &str, seq: i64) -> Option<Provider> {
    match name.parse() {
        Ok(provider) => Some(provider),
        Err(error) => {
            tracing::warn!(%error, delivery = seq, "skipping a delivery of an unknown provider");
            None
        }
    }
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Opens the store named by `url_or_path`:
///
/// - `postgres://...` or `postgresql://...`: PostgreSQL (needs the `postgres` feature;
///   without it this answers an error saying so);
/// - `sqlite://PATH` or a plain file path: SQLite on that file, created when missing.
///
/// Any other `scheme://` is an error rather than a file with a strange name.
///
/// # Errors
/// [`StoreError::Config`] when the URL names a backend this build does not have or is
/// malformed; [`StoreError::Database`] when the store cannot be opened, connected or migrated.
pub async fn open(url_or_path: &str) -> Result<Store, StoreError> {
    let (scheme, rest) = match url_or_path.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, url_or_path),
    };
    match scheme.as_deref() {
        Some("postgres" | "postgresql") => open_postgres(url_or_path).await,
        Some("sqlite") | None => {
            if rest.is_empty() {
                return Err(StoreError::Config("empty SQLite database path".into()));
            }
            let path = rest.to_owned();
            tokio::task::spawn_blocking(move || Store::sqlite(path))
                .await
                .map_err(|e| StoreError::internal(format!("open SQLite store: {e}")))?
        }
        Some(other) => Err(StoreError::Config(format!(
            "unsupported store URL scheme `{other}://` (use postgres://, postgresql://, sqlite:// or a file path)"
        ))),
    }
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Store, StoreError> {
    Store::postgres(url).await
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str) -> Result<Store, StoreError> {
    Err(StoreError::Config(
        "this build has no PostgreSQL support (build shipfeed-store with the `postgres` feature)"
            .into(),
    ))
}
