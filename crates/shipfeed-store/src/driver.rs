//! The SQL-level interface between the store's logic (`write.rs`, `Store`) and a
//! database. A driver knows its schema, its SQL dialect and its durability specifics; it knows
//! nothing of deduplication, dead letters, shipment states or group commit.
//!
//! Values cross this boundary as the store's own rows: JSON already serialized (by the calling
//! task, off the writer), times as [`DateTime`], providers as [`Provider`]. A driver converts them
//! to its column types (SQLite: RFC 3339 text; PostgreSQL: `timestamptz`, and text without NUL).

use std::borrow::Cow;

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

/// The stored version of an event, as the projection rules compare it with a new one.
#[derive(Debug)]
pub(crate) struct StoredEvent {
    pub(crate) event_id: String,
    pub(crate) revision: i64,
    /// The delivery its content comes from.
    pub(crate) delivery_seq: i64,
    pub(crate) shipment_key: String,
    pub(crate) content_hash: String,
    /// Its JSON, only when `content_hash` was not made by this build (it is hashed again).
    pub(crate) body: Option<String>,
    pub(crate) retracted: bool,
}

/// One feed item as stored: its kind, the event and revision it is about, and its JSON
/// (without `seq` and `type`).
#[derive(Debug)]
pub(crate) struct FeedRow<'a> {
    pub(crate) kind: &'static str,
    pub(crate) event_id: Option<Cow<'a, str>>,
    pub(crate) revision: Option<i64>,
    pub(crate) shipment_key: Cow<'a, str>,
    pub(crate) body: Cow<'a, str>,
}

/// What projecting a delivery produced, as recorded with it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProjectionRow<'a> {
    pub(crate) seq: i64,
    /// Why it is a dead letter; `None` clears a previous mark.
    pub(crate) dead_letter: Option<&'a str>,
    /// The [`Projection`](crate::Projection) as JSON.
    pub(crate) projection: &'a str,
}

/// A feed item read back.
#[derive(Debug)]
pub(crate) struct StoredFeedRow {
    pub(crate) seq: i64,
    pub(crate) kind: String,
    pub(crate) shipment_key: String,
    pub(crate) revision: Option<i64>,
    pub(crate) body: String,
}

/// A provider's own shipment id linked to the parcel (carrier and tracking number) it names.
#[derive(Debug, Clone)]
pub(crate) struct AliasRow {
    pub(crate) provider: String,
    pub(crate) provider_shipment_id: String,
    /// The parcel's shipment key.
    pub(crate) shipment_key: String,
    pub(crate) carrier: Option<String>,
    /// As the provider wrote it.
    pub(crate) tracking_number: String,
    /// The delivery that linked them last.
    pub(crate) delivery_seq: i64,
}

/// Drift of one provider, kind and key, as stored; as written, the counts of one batch, which
/// the driver adds to the stored ones (keeping the stored `first_seen` and `sample_seq`).
#[derive(Debug, Clone)]
pub(crate) struct DriftRow {
    pub(crate) provider: String,
    /// A [`DriftKind`](shipfeed_core::drift::DriftKind)'s name, or
    /// [`DRIFT_DROPPED`](crate::project::DRIFT_DROPPED) (then `key` is the kind's name).
    pub(crate) kind: String,
    pub(crate) key: String,
    pub(crate) deliveries: i64,
    pub(crate) first_seen: DateTime<Utc>,
    pub(crate) last_seen: DateTime<Utc>,
    pub(crate) sample_seq: i64,
}

/// A shipment's identity and current state, as they are stored.
#[derive(Debug)]
pub(crate) struct ShipmentRow<'a> {
    pub(crate) key: &'a str,
    pub(crate) carrier: Option<String>,
    /// In compared form ([`shipfeed_core::identity::tracking_number`]), for lookups.
    pub(crate) tracking_number: Option<String>,
    /// The merchant's order number in compared form ([`order_number_key`]), for lookups.
    pub(crate) order_number: Option<String>,
    /// The state's status, last event and when it occurred: what stalled rules search by.
    pub(crate) status: &'static str,
    pub(crate) last_event_id: String,
    pub(crate) last_occurred_at: DateTime<Utc>,
    /// The shipment reference as JSON.
    pub(crate) shipment: String,
    /// The state as JSON.
    pub(crate) state: String,
}

/// Which carriers a search for stalled shipments covers.
#[derive(Debug, Clone)]
pub(crate) enum CarrierScope<'a> {
    /// This carrier's shipments alone.
    Only(&'a str),
    /// Every shipment but those of these carriers (shipments without a carrier included).
    Except(Vec<&'a str>),
}

/// A search for shipments that may be stalled: in `status`, of `carriers`, whose last event
/// occurred at or before `before`, and without an alert of `rule` on that last event yet.
#[derive(Debug)]
pub(crate) struct StalledQuery<'a> {
    pub(crate) status: &'a str,
    pub(crate) carriers: CarrierScope<'a>,
    pub(crate) before: DateTime<Utc>,
    pub(crate) rule: &'a str,
    pub(crate) limit: i64,
}

/// A shipment found by a [`StalledQuery`]: key, shipment JSON and state JSON.
#[derive(Debug)]
pub(crate) struct StalledRow {
    pub(crate) key: String,
    pub(crate) shipment: String,
    pub(crate) state: String,
}

/// An alert as it is stored (open until cleared).
#[derive(Debug)]
pub(crate) struct AlertRow<'a> {
    pub(crate) alert_id: &'a str,
    pub(crate) shipment_key: &'a str,
    pub(crate) rule: &'a str,
    pub(crate) last_event_id: &'a str,
    /// The [`Alert`](crate::Alert) as JSON.
    pub(crate) body: &'a str,
}

/// A push message as stored (see [`PushMessage`](crate::PushMessage)).
#[derive(Debug, Clone)]
pub(crate) struct PushRow {
    pub(crate) subscription: String,
    pub(crate) seq: i64,
    pub(crate) webhook_id: String,
    /// The ordering keys as a JSON array.
    pub(crate) ordering_keys: String,
    pub(crate) state: String,
    pub(crate) attempts: i64,
    pub(crate) next_attempt_at: DateTime<Utc>,
    pub(crate) first_failed_at: DateTime<Utc>,
    pub(crate) last_status: Option<i64>,
    pub(crate) last_error: Option<String>,
    pub(crate) body: String,
}

/// A push subscription's state as stored (see
/// [`SubscriptionControl`](crate::SubscriptionControl)).
#[derive(Debug, Clone)]
pub(crate) struct PushControlRow {
    pub(crate) name: String,
    pub(crate) status: String,
    pub(crate) reason: Option<String>,
    pub(crate) changed_at: Option<DateTime<Utc>>,
    pub(crate) failing_since: Option<DateTime<Utc>>,
    pub(crate) version: i64,
}

/// An audit log entry as stored (see [`AuditEntry`](crate::AuditEntry)).
#[derive(Debug, Clone)]
pub(crate) struct AuditRow {
    /// Given by the database on insert (ignored there).
    pub(crate) id: i64,
    pub(crate) at: DateTime<Utc>,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) target: String,
    pub(crate) outcome: String,
    /// The detail as JSON.
    pub(crate) detail: String,
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
    /// Each event's JSON and whether it is retracted.
    pub(crate) events: Vec<(String, bool)>,
}

/// How shipments are looked up.
pub(crate) enum ShipmentLookup {
    /// By normalized tracking number, and carrier when given.
    Tracking {
        carrier: Option<String>,
        number: String,
    },
    /// By the merchant's order number, compared as [`order_number_key`] makes it.
    Order(String),
}

/// An order number as the lookup compares it and the `order_number` column holds it: trimmed
/// and lower case (a support agent types `ord-1042` for `ORD-1042`).
pub(crate) fn order_number_key(order_number: &str) -> String {
    order_number.trim().to_lowercase()
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

    /// Appends raw deliveries to the inbox, in order; returns their `seq`s.
    async fn insert_deliveries(&mut self, rows: &[DeliveryRow]) -> Result<Vec<i64>, StoreError>;

    /// Records what projecting each delivery produced and sets or clears its dead-letter
    /// reason; returns how many of them are stored (the others are not touched).
    async fn set_projections(&mut self, rows: &[ProjectionRow<'_>]) -> Result<usize, StoreError>;

    /// The stored versions of the events with these ids (those that are stored). `body` is
    /// read only for events whose `content_hash` does not start with `hash_prefix`.
    async fn stored_events(
        &mut self,
        event_ids: &[&str],
        hash_prefix: &str,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// The stored versions of the events whose content comes from these deliveries and that
    /// are not retracted, in the order they were first stored (`body` as in
    /// [`stored_events`](WriteDriver::stored_events)).
    async fn owned_events(
        &mut self,
        delivery_seqs: &[i64],
        hash_prefix: &str,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Inserts new events, each with the delivery (`seq`) its content comes from.
    async fn insert_events(&mut self, rows: &[(i64, &EventRow)]) -> Result<(), StoreError>;

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

    /// Appends items to the feed, in order (their `seq`s follow that order).
    async fn append_feed(&mut self, rows: &[FeedRow<'_>]) -> Result<(), StoreError>;

    /// `(shipment_key, JSON)` of every event (not retracted) stored under these keys.
    async fn shipment_events(&mut self, keys: &[&str])
        -> Result<Vec<(String, String)>, StoreError>;

    /// `(shipment_key, state JSON)` of the shipments with these keys that have a state.
    async fn shipment_states(&mut self, keys: &[&str])
        -> Result<Vec<(String, String)>, StoreError>;

    /// The aliases of these `(provider, provider_shipment_id)` pairs that are stored.
    async fn aliases(&mut self, ids: &[(&str, &str)]) -> Result<Vec<AliasRow>, StoreError>;

    /// Inserts or replaces aliases (each pair once).
    async fn upsert_aliases(&mut self, rows: &[AliasRow]) -> Result<(), StoreError>;

    /// The key of every shipment that has events (not retracted).
    async fn shipment_keys(&mut self) -> Result<Vec<String>, StoreError>;

    /// Removes a shipment that has no events left (all retracted).
    async fn delete_shipment(&mut self, key: &str) -> Result<(), StoreError>;

    /// Inserts notices (as JSON), each of delivery `seq`.
    async fn insert_notices(&mut self, rows: &[(i64, &str)]) -> Result<(), StoreError>;

    /// Inserts or replaces shipments' identities and states (each key once).
    async fn upsert_shipments(&mut self, rows: &[ShipmentRow<'_>]) -> Result<(), StoreError>;

    /// The `(provider, kind, key)` of every drift row stored for these providers (bounded:
    /// [`DRIFT_KEYS_PER_KIND`](crate::DRIFT_KEYS_PER_KIND) per provider and kind).
    async fn drift_keys(
        &mut self,
        providers: &[&str],
    ) -> Result<Vec<(String, String, String)>, StoreError>;

    /// Which of these `(provider, body fingerprint)` pairs were counted for drift before.
    async fn drift_fingerprints(
        &mut self,
        fingerprints: &[(&str, &str)],
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// Adds a batch's drift counts (each `(provider, kind, key)` once) and records the
    /// fingerprints `(provider, fingerprint, seq)` of the deliveries it counted.
    async fn record_drift(
        &mut self,
        rows: &[DriftRow],
        fingerprints: &[(&str, &str, i64)],
    ) -> Result<(), StoreError>;

    /// The position of a named cursor, if saved.
    async fn saved_cursor(&mut self, name: &str) -> Result<Option<i64>, StoreError>;

    /// Saves a named cursor.
    async fn save_cursor(&mut self, name: &str, position: i64) -> Result<(), StoreError>;

    /// The lease of this name, if one was ever granted.
    async fn lease(&mut self, name: &str) -> Result<Option<Lease>, StoreError>;

    /// Inserts or replaces a lease.
    async fn put_lease(&mut self, lease: &Lease) -> Result<(), StoreError>;

    /// Shipments that may be stalled, oldest last event first (see [`StalledQuery`]).
    async fn stalled(&mut self, query: &StalledQuery<'_>) -> Result<Vec<StalledRow>, StoreError>;

    /// Stores alerts, each id once; returns the ids stored now (those already stored, open
    /// or cleared, are left as they are).
    async fn insert_alerts(&mut self, rows: &[AlertRow<'_>]) -> Result<Vec<String>, StoreError>;

    /// The JSON of the open alerts of these shipments.
    async fn open_alerts(&mut self, keys: &[&str]) -> Result<Vec<String>, StoreError>;

    /// Closes alerts: `(alert_id, the alert_cleared item's JSON)`.
    async fn clear_alerts(&mut self, rows: &[(&str, &str)]) -> Result<(), StoreError>;

    /// Inserts or replaces push messages (each `(subscription, seq)` once).
    async fn upsert_push(&mut self, rows: &[PushRow]) -> Result<(), StoreError>;

    /// Removes a subscription's push messages.
    async fn delete_push(&mut self, subscription: &str, seqs: &[i64]) -> Result<(), StoreError>;

    /// Puts a subscription's exhausted messages first parked at or after `since` back to
    /// pending, due at `now`, with no attempt made; returns how many.
    async fn redeliver_push(
        &mut self,
        subscription: &str,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// A push subscription's state, if ever stored.
    async fn push_control(&mut self, name: &str) -> Result<Option<PushControlRow>, StoreError>;

    /// Inserts or replaces a push subscription's state.
    async fn put_push_control(&mut self, row: &PushControlRow) -> Result<(), StoreError>;

    /// Appends an entry to the audit log (its `id` is ignored); returns the id it was given,
    /// greater than every id given before.
    async fn insert_audit(&mut self, row: &AuditRow) -> Result<i64, StoreError>;

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

    /// The shipments `lookup` finds, by key, each with all its events (retracted ones too).
    async fn shipments(&self, lookup: &ShipmentLookup) -> Result<Vec<ShipmentRows>, StoreError>;

    /// Up to `limit` dead letters after delivery `after`, in `seq` order.
    async fn dead_letters(&self, after: i64, limit: i64) -> Result<Vec<DeadLetterRow>, StoreError>;

    /// `(endpoint, provider, count)` of the current dead letters, per endpoint and provider.
    async fn dead_letter_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError>;

    /// Up to `limit` deliveries after `after`, in `seq` order; only dead letters when asked.
    async fn deliveries(
        &self,
        after: i64,
        limit: i64,
        dead_letters_only: bool,
    ) -> Result<Vec<StoredRow>, StoreError>;

    /// The deliveries with these `seq`s (those that are stored), in `seq` order.
    async fn deliveries_at(&self, seqs: Vec<i64>) -> Result<Vec<StoredRow>, StoreError>;

    /// The place of one delivery in the pipeline.
    async fn delivery(&self, seq: i64) -> Result<Option<DeliveryStatusRow>, StoreError>;

    /// The inbox's last `seq` (0 when empty) and when the first delivery after `after`
    /// arrived (`None` when there is none): the projector's lag.
    async fn inbox_after(&self, after: i64) -> Result<(i64, Option<DateTime<Utc>>), StoreError>;

    /// `(seq, endpoint, received_at)` of the last `limit` deliveries of the inbox, newest
    /// first (read by `seq`, without their headers and bodies).
    async fn recent_arrivals(
        &self,
        limit: i64,
    ) -> Result<Vec<(i64, String, DateTime<Utc>)>, StoreError>;

    /// Every drift row (only `provider`'s when given).
    async fn drift(&self, provider: Option<String>) -> Result<Vec<DriftRow>, StoreError>;

    /// The saved position of a named cursor.
    async fn cursor(&self, name: &str) -> Result<Option<i64>, StoreError>;

    /// Up to `limit` open alerts (JSON) with an id greater than `after`, by id.
    async fn open_alerts(&self, after: &str, limit: i64) -> Result<Vec<String>, StoreError>;

    /// `(rule, count)` of the open alerts, per rule.
    async fn open_alert_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// The JSON of the alert stored under `alert_id`, open or cleared.
    async fn alert(&self, alert_id: &str) -> Result<Option<String>, StoreError>;

    /// Up to `limit` push messages of a subscription after feed `seq` `after`, by `seq`;
    /// only those in `state` when given.
    async fn push_messages(
        &self,
        subscription: &str,
        state: Option<&'static str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<PushRow>, StoreError>;

    /// The stored state of every push subscription (only `name`'s when given).
    async fn push_controls(&self, name: Option<&str>) -> Result<Vec<PushControlRow>, StoreError>;

    /// Up to `limit` audit log entries with an id below `before` (all when `None`), newest
    /// (greatest id) first.
    async fn audit(&self, before: Option<i64>, limit: i64) -> Result<Vec<AuditRow>, StoreError>;

    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
}
