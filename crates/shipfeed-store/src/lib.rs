//! The durable store of the shipfeed service.
//!
//! One trait, [`Store`], and two implementations: [`SqliteStore`], the embedded default (one
//! file, one process), and `PostgresStore` (cargo feature `postgres`), for several
//! `shipfeed serve` replicas sharing one PostgreSQL database. [`open`] picks one from a URL or
//! path.
//!
//! A commit takes a batch of deliveries and, in **one transaction**, stores each raw delivery,
//! inserts its canonical events with `event_id` unique (duplicates are counted, not
//! re-inserted), records a dead letter for what could not be normalized, and recomputes the
//! state of every touched shipment from the *set* of its events
//! ([`shipfeed_core::current_state`]). When `commit` returns `Ok`, all of it is durable. Both
//! stores group-commit: concurrent calls share one transaction, so one flush to disk covers
//! many deliveries.
//!
//! The feed ([`Store::events_after`]) is safe to resume from a cursor: an event never becomes
//! visible with a smaller `seq` than one already visible, so a consumer that saves the last
//! `seq` it saw never skips an event.
#![forbid(unsafe_code)]

#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shipfeed_core::{
    Error, Output, Provider, RawDelivery, ShipmentRef, ShipmentState, TrackingEvent,
};

#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// One authenticated delivery and what its adapter made of it.
#[derive(Debug)]
pub struct Ingest {
    /// The inbound endpoint's name.
    pub endpoint: String,
    /// The provider behind the endpoint.
    pub provider: Provider,
    /// The delivery exactly as received.
    pub delivery: RawDelivery,
    /// The adapter's outputs, or why it could not normalize the delivery (→ dead letter).
    pub outcome: Result<Vec<Output>, Error>,
}

/// What a commit did with one [`Ingest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Committed {
    /// Sequence number of the stored raw delivery.
    pub delivery_seq: i64,
    /// Events stored for the first time (they enter the feed).
    pub new_events: usize,
    /// Events already stored under the same `event_id` (counted, not re-emitted).
    pub duplicates: usize,
    /// Non-tracking notices in the delivery.
    pub notices: usize,
    /// Why the delivery became a dead letter, when it did.
    pub dead_letter: Option<String>,
    /// Event ids stored for the first time, for metrics.
    #[serde(skip)]
    pub new_event_statuses: Vec<String>,
}

/// One entry of the event feed. On the wire it is a canonical output line with its cursor
/// beside the tag: `{"seq": N, "type": "event", ...the event's fields}` (schema:
/// `schema/feed-item.schema.json`), so the `type` tag can grow other kinds of item.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename = "event")]
#[schemars(rename = "FeedItem", transform = feed_item_tag)]
pub struct FeedItem {
    /// The cursor: strictly increasing, stable across restarts.
    pub seq: i64,
    /// The canonical event.
    #[serde(flatten)]
    pub event: TrackingEvent,
}

/// schemars leaves out the `type` tag serde writes for a tagged struct; this puts it in.
fn feed_item_tag(schema: &mut schemars::Schema) {
    if let Some(properties) = schema
        .ensure_object()
        .entry("properties")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
    {
        properties.insert(
            "type".to_owned(),
            serde_json::json!({"type": "string", "const": "event"}),
        );
    }
    if let Some(required) = schema
        .ensure_object()
        .entry("required")
        .or_insert_with(|| serde_json::json!([]))
        .as_array_mut()
    {
        required.insert(0, serde_json::json!("type"));
    }
}

/// A dead letter: an authentic delivery that could not be normalized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Sequence number of the raw delivery.
    pub delivery_seq: i64,
    /// Endpoint it arrived on.
    pub endpoint: String,
    /// Provider.
    pub provider: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// Why normalizing failed.
    pub error: String,
}

/// A stored raw delivery, for replay.
#[derive(Debug, Clone)]
pub struct StoredDelivery {
    /// Sequence number.
    pub seq: i64,
    /// Endpoint it arrived on.
    pub endpoint: String,
    /// Provider name.
    pub provider: String,
    /// The delivery as received.
    pub delivery: RawDelivery,
    /// Whether it is currently a dead letter.
    pub dead_letter: bool,
}

/// A shipment's current state and its timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShipmentView {
    /// `carrier:tracking_number` (or a provider-scoped key when either is missing).
    pub key: String,
    /// Identity, from the latest event.
    pub shipment: ShipmentRef,
    /// Current state by the ordering rule.
    pub state: ShipmentState,
    /// Every event, in timeline order.
    pub timeline: Vec<TrackingEvent>,
}

/// Store failures. Every one is temporary from the caller's point of view: answer 503 and let
/// the provider retry, or leave the queue message for redelivery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(String),
    /// The store's writer has stopped (shutdown or crash).
    #[error("the store is shutting down")]
    Closed,
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        Error::new(shipfeed_core::ErrorKind::Unavailable, error.to_string())
    }
}

/// The durable store behind the service.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Stores the batch in one durable transaction; `Ok` means it is on disk.
    ///
    /// # Errors
    /// [`StoreError`] when nothing was stored (the whole batch is rolled back).
    async fn commit(&self, batch: Vec<Ingest>) -> Result<Vec<Committed>, StoreError>;

    /// Up to `limit` events with a cursor greater than `after`, in cursor order.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<FeedItem>, StoreError>;

    /// Shipments with this tracking number (and carrier, when given).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    async fn shipments(
        &self,
        carrier: Option<&str>,
        tracking_number: &str,
    ) -> Result<Vec<ShipmentView>, StoreError>;

    /// Up to `limit` dead letters after the delivery sequence number `after`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    async fn dead_letters(&self, after: i64, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;

    /// Up to `limit` stored raw deliveries after `after` (only dead letters when asked), for replay.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    async fn deliveries(
        &self,
        after: i64,
        limit: usize,
        dead_letters_only: bool,
    ) -> Result<Vec<StoredDelivery>, StoreError>;

    /// Records the outcome of re-normalizing stored delivery `seq` (replay): its events are
    /// inserted (deduplicated by id) and its dead-letter mark is set or cleared.
    ///
    /// # Errors
    /// [`StoreError`] when nothing was stored.
    async fn replace_outcome(
        &self,
        seq: i64,
        provider: Provider,
        outcome: Result<Vec<Output>, Error>,
    ) -> Result<Committed, StoreError>;

    /// The saved position of a named feed consumer (0 when none).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    async fn cursor(&self, name: &str) -> Result<i64, StoreError>;

    /// Saves the position of a named feed consumer.
    ///
    /// # Errors
    /// [`StoreError`] when nothing was stored.
    async fn save_cursor(&self, name: &str, position: i64) -> Result<(), StoreError>;

    /// Whether the store answers (for `/readyz`).
    ///
    /// # Errors
    /// [`StoreError`] when it does not.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The key a shipment is stored under: `carrier:tracking_number`, falling back to the
/// provider's own shipment id, so that events without a carrier still group per shipment.
pub fn shipment_key(provider: Provider, shipment: &ShipmentRef) -> String {
    match (
        &shipment.carrier,
        &shipment.tracking_number,
        &shipment.provider_shipment_id,
    ) {
        (Some(carrier), Some(tracking), _) => format!("{carrier}:{tracking}"),
        (None, Some(tracking), _) => format!("{provider}:tracking:{tracking}"),
        (_, None, Some(id)) => format!("{provider}:id:{id}"),
        (_, None, None) => format!("{provider}:unidentified"),
    }
}

/// Opens the store named by `url_or_path`:
///
/// - `postgres://...` or `postgresql://...`: a `PostgresStore` (needs the `postgres` feature;
///   without it this answers an error saying so);
/// - `sqlite://PATH` or a plain file path: a [`SqliteStore`] on that file, created when missing.
///
/// Any other `scheme://` is an error rather than a file with a strange name.
///
/// # Errors
/// [`StoreError::Database`] when the store cannot be opened, connected or migrated, or the URL
/// names a backend this build does not have.
pub async fn open(url_or_path: &str) -> Result<Arc<dyn Store>, StoreError> {
    let scheme = url_or_path
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("postgres" | "postgresql") => open_postgres(url_or_path).await,
        Some("sqlite") | None => {
            let path = match url_or_path.split_once("://") {
                Some((_, path)) => path.to_owned(),
                None => url_or_path.to_owned(),
            };
            if path.is_empty() {
                return Err(StoreError::Database("empty SQLite database path".into()));
            }
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(path))
                .await
                .map_err(|e| StoreError::Database(format!("open SQLite store: {e}")))??;
            Ok(Arc::new(store))
        }
        Some(other) => Err(StoreError::Database(format!(
            "unsupported store URL scheme `{other}://` (use postgres://, postgresql://, sqlite:// or a file path)"
        ))),
    }
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(PostgresStore::connect(url).await?))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str) -> Result<Arc<dyn Store>, StoreError> {
    Err(StoreError::Database(
        "this build has no PostgreSQL support (build shipfeed-store with the `postgres` feature)"
            .into(),
    ))
}
