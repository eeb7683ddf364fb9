//! The SQL-level interface between the store's logic (`write.rs`, `Store`) and a
//! database. A driver knows its schema, its SQL dialect and its durability specifics; it knows
//! nothing of deduplication, dead letters, shipment states or group commit.
//!
//! Values cross this boundary as the store's own rows: JSON already serialized (by the calling
//! task, off the writer), times as [`DateTime`], providers as [`Provider`]. A driver converts them
//! to its column types (SQLite: RFC 3339 text; PostgreSQL: `timestamptz`, and text without NUL).

use chrono::{DateTime, Utc};
use shipfeed_core::Provider;

use crate::{Lease, StoreError};

/// A raw delivery, as it is stored.
#[derive(Debug)]
pub(crate) struct DeliveryRow {
    pub(crate) endpoint: String,
    pub(crate) provider: Provider,
    pub(crate) received_at: DateTime<Utc>,
    /// The headers as a JSON array of `[name, value]` pairs.
    pub(crate) headers: String,
    pub(crate) body: Vec<u8>,
}

/// A canonical event, as it is stored.
#[derive(Debug)]
pub(crate) struct EventRow {
    pub(crate) event_id: String,
    pub(crate) shipment_key: String,
    pub(crate) occurred_at: DateTime<Utc>,
    pub(crate) status: Option<&'static str>,
    /// The event as JSON.
    pub(crate) body: String,
    /// The hash of its canonical content: what a new revision must change.
    pub(crate) content_hash: String,
}

/// The stored version of an event, as the write path compares it with a new one.
#[derive(Debug)]
pub(crate) struct StoredEvent {
    pub(crate) revision: i64,
    /// The delivery its content comes from.
    pub(crate) delivery_seq: i64,
    pub(crate) shipment_key: String,
    /// Empty for events stored before content hashes were kept (then `body` is hashed).
    pub(crate) content_hash: String,
    pub(crate) body: String,
    pub(crate) retracted: bool,
}

/// One feed item as stored: its kind, the event and revision it is about, and its JSON
/// (without `seq` and `type`).
#[derive(Debug)]
pub(crate) struct FeedRow<'a> {
    pub(crate) kind: &'static str,
    pub(crate) event_id: Option<&'a str>,
    pub(crate) revision: Option<i64>,
    pub(crate) shipment_key: &'a str,
    pub(crate) body: &'a str,
}

/// A feed item read back.
#[derive(Debug)]
pub(crate) struct StoredFeedRow {
    pub(crate) seq: i64,
    pub(crate) kind: String,
    pub(crate) revision: Option<i64>,
    pub(crate) body: String,
}

/// A shipment's identity and current state, as they are stored.
#[derive(Debug)]
pub(crate) struct ShipmentRow<'a> {
    pub(crate) key: &'a str,
    pub(crate) carrier: Option<&'a str>,
    pub(crate) tracking_number: Option<&'a str>,
    /// The shipment reference as JSON.
    pub(crate) shipment: String,
    /// The state as JSON.
    pub(crate) state: String,
}

/// A stored raw delivery, read back.
#[derive(Debug)]
pub(crate) struct StoredRow {
    pub(crate) seq: i64,
    pub(crate) endpoint: String,
    pub(crate) provider: String,
    pub(crate) received_at: DateTime<Utc>,
    pub(crate) headers: String,
    pub(crate) body: Vec<u8>,
    pub(crate) error: Option<String>,
}

/// A delivery's place in the pipeline, read back (without its body).
#[derive(Debug)]
pub(crate) struct DeliveryStatusRow {
    pub(crate) endpoint: String,
    pub(crate) provider: String,
    pub(crate) received_at: DateTime<Utc>,
    /// What its projection produced, as JSON; `None` while it waits for the projector.
    pub(crate) projection: Option<String>,
}

/// A dead letter read back (without the body: listings stay small).
#[derive(Debug)]
pub(crate) struct DeadLetterRow {
    pub(crate) seq: i64,
    pub(crate) endpoint: String,
    pub(crate) provider: String,
    pub(crate) received_at: DateTime<Utc>,
    pub(crate) error: String,
}

/// A shipment read back: key, shipment JSON, state JSON and its events' JSON, all from one
/// snapshot.
#[derive(Debug)]
pub(crate) struct ShipmentRows {
    pub(crate) key: String,
    pub(crate) shipment: String,
    pub(crate) state: String,
    pub(crate) events: Vec<String>,
}

/// The one connection that writes. The store's writer calls it from a single task, one group of
/// jobs per transaction, so `&mut self` is all it needs.
///
/// Transactions are plain SQL (`BEGIN`, `SAVEPOINT`, ...: the same words in both dialects),
/// sent through [`WriteDriver::execute`]; only [`WriteDriver::begin`] is the driver's own.
pub(crate) trait WriteDriver: Send {
    /// Starts a write transaction, whose commit is flushed to disk, after whatever must precede
    /// it (PostgreSQL: reconnect when the connection was lost, then take the commit-order lock).
    async fn begin(&mut self) -> Result<(), StoreError>;

    /// Runs a statement without parameters or results (`COMMIT`, `SAVEPOINT job`, ...).
    async fn execute(&mut self, sql: &'static str) -> Result<(), StoreError>;

    /// Appends a raw delivery to the inbox; returns its `seq`.
    async fn insert_delivery(&mut self, row: &DeliveryRow) -> Result<i64, StoreError>;

    /// Records what projecting delivery `seq` produced (`projection`, as JSON) and sets or
    /// clears its dead-letter reason; `false` when there is no such delivery.
    async fn set_projection(
        &mut self,
        seq: i64,
        dead_letter: Option<&str>,
        projection: &str,
    ) -> Result<bool, StoreError>;

    /// Inserts an event of delivery `seq` unless its `event_id` is stored; `true` if inserted.
    async fn insert_event(&mut self, seq: i64, row: &EventRow) -> Result<bool, StoreError>;

    /// The stored version of an event.
    async fn event(&mut self, event_id: &str) -> Result<Option<StoredEvent>, StoreError>;

    /// Keeps the stored version of an event as revision history, then replaces it by `row`
    /// (from delivery `seq`) under `revision`, not retracted.
    async fn revise_event(
        &mut self,
        seq: i64,
        row: &EventRow,
        revision: i64,
    ) -> Result<(), StoreError>;

    /// Marks an event retracted (it stays stored, out of its shipment's timeline).
    async fn retract_event(&mut self, event_id: &str) -> Result<(), StoreError>;

    /// `(event_id, shipment_key, revision)` of the events whose content comes from delivery
    /// `seq` and that are not retracted.
    async fn owned_events(&mut self, seq: i64) -> Result<Vec<(String, String, i64)>, StoreError>;

    /// Appends an item to the feed; returns its `seq`.
    async fn append_feed(&mut self, row: &FeedRow<'_>) -> Result<i64, StoreError>;

    /// The stored state of a shipment (JSON), if it has one.
    async fn shipment_state(&mut self, key: &str) -> Result<Option<String>, StoreError>;

    /// Removes a shipment that has no events left (all retracted).
    async fn delete_shipment(&mut self, key: &str) -> Result<(), StoreError>;

    /// Inserts a notice (as JSON) of delivery `seq`.
    async fn insert_notice(&mut self, seq: i64, body: &str) -> Result<(), StoreError>;

    /// How many events (not retracted) are stored under a shipment key.
    async fn count_events(&mut self, key: &str) -> Result<usize, StoreError>;

    /// The JSON of every event (not retracted) stored under a shipment key.
    async fn events_of(&mut self, key: &str) -> Result<Vec<String>, StoreError>;

    /// Inserts or replaces a shipment's identity and state.
    async fn upsert_shipment(&mut self, row: &ShipmentRow<'_>) -> Result<(), StoreError>;

    /// Saves a named cursor.
    async fn save_cursor(&mut self, name: &str, position: i64) -> Result<(), StoreError>;

    /// The lease of this name, if one was ever granted.
    async fn lease(&mut self, name: &str) -> Result<Option<Lease>, StoreError>;

    /// Inserts or replaces a lease.
    async fn put_lease(&mut self, lease: &Lease) -> Result<(), StoreError>;

    /// Runs between two groups, outside any transaction (SQLite: the WAL catch-up).
    async fn after_group(&mut self) {}
}

/// The connections that read (the feed, lookups, replay). Shared by every clone of a store.
#[async_trait::async_trait]
pub(crate) trait ReadDriver: Send + Sync {
    /// Up to `limit` feed items after `after`, in `seq` order.
    async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<StoredFeedRow>, StoreError>;

    /// Every stored version of an event: `(revision, delivery_seq, JSON)`, oldest first.
    async fn revisions(&self, event_id: &str) -> Result<Vec<(i64, i64, String)>, StoreError>;

    /// The greatest `seq` in the feed, 0 when it is empty.
    async fn feed_end(&self) -> Result<i64, StoreError>;

    /// The shipments with this tracking number (and carrier, when given), by key.
    async fn shipments(
        &self,
        carrier: Option<&str>,
        tracking_number: &str,
    ) -> Result<Vec<ShipmentRows>, StoreError>;

    /// Up to `limit` dead letters after delivery `after`, in `seq` order.
    async fn dead_letters(&self, after: i64, limit: i64) -> Result<Vec<DeadLetterRow>, StoreError>;

    /// Up to `limit` deliveries after `after`, in `seq` order; only dead letters when asked.
    async fn deliveries(
        &self,
        after: i64,
        limit: i64,
        dead_letters_only: bool,
    ) -> Result<Vec<StoredRow>, StoreError>;

    /// The place of one delivery in the pipeline.
    async fn delivery(&self, seq: i64) -> Result<Option<DeliveryStatusRow>, StoreError>;

    /// The inbox's last `seq` (0 when empty) and when the first delivery after `after`
    /// arrived (`None` when there is none): the projector's lag.
    async fn inbox_after(&self, after: i64) -> Result<(i64, Option<DateTime<Utc>>), StoreError>;

    /// The saved position of a named cursor.
    async fn cursor(&self, name: &str) -> Result<Option<i64>, StoreError>;

    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
}
