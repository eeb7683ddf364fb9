//! SQLite driver: schema, SQL, and its durability specifics.
//!
//! **Two files**, because SQLite has one writer per file: the inbox (`<database>-inbox`, the
//! raw deliveries, only ever appended to) and the database (projections, events, feed,
//! shipments, cursors, leases), each with its own writer connection on a thread of its own. So
//! an acknowledgement waits for the inbox's flush alone, never for a projector batch (sharing
//! one file, the projector's writes held acknowledgements at a fifth of the inbox's own rate in
//! `bench ingest`). The database and the readers attach the inbox as `inbox` and read
//! `deliveries` from it; nothing writes it but the inbox writer, since a transaction over two
//! WAL files is atomic in each, not across them.
//!
//! Both files: WAL mode, readers never blocking the writer, `synchronous=FULL` (every commit
//! flushed), and checkpoints on a thread of their own, so that a writer only copies the last
//! few pages when its WAL is to start over.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use crate::driver::{
    order_number_key, AlertRow, AliasRow, AuditRow, CarrierScope, DeadLetterRow, DeliveryRow,
    DeliveryStatusRow, DriftRow, EventRow, FeedRow, ProjectionRow, PushControlRow, PushRow,
    ReadDriver, ShipmentLookup, ShipmentRow, ShipmentRows, StalledQuery, StalledRow, StoredEvent,
    StoredFeedRow, StoredRow, WriteDriver,
};
use crate::migrate::{self, Migration};
use crate::{Lease, StoreError};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: "
CREATE TABLE deliveries (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint    TEXT NOT NULL,
    provider    TEXT NOT NULL,
    received_at TEXT NOT NULL,
    headers     TEXT NOT NULL,
    body        BLOB NOT NULL,
    dead_letter INTEGER NOT NULL DEFAULT 0,
    error       TEXT
);
CREATE INDEX deliveries_dead_letters ON deliveries(seq) WHERE dead_letter = 1;
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL UNIQUE,
    delivery_seq INTEGER NOT NULL,
    shipment_key TEXT NOT NULL,
    occurred_at  TEXT NOT NULL,
    status       TEXT,
    body         TEXT NOT NULL
);
CREATE INDEX events_by_shipment ON events(shipment_key);
CREATE TABLE shipments (
    shipment_key    TEXT PRIMARY KEY,
    carrier         TEXT,
    tracking_number TEXT,
    shipment        TEXT NOT NULL,
    state           TEXT NOT NULL
);
CREATE INDEX shipments_by_tracking ON shipments(tracking_number);
CREATE TABLE notices (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_seq INTEGER NOT NULL,
    body         TEXT NOT NULL
);
CREATE TABLE cursors (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
",
    },
    // Events and notices reference their delivery, as on PostgreSQL. SQLite cannot add a
    // constraint to a table, so both are rebuilt; `seq`s are copied, so feed cursors stay valid.
    Migration {
        version: 2,
        sql: "
CREATE TABLE events_v2 (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL UNIQUE,
    delivery_seq INTEGER NOT NULL REFERENCES deliveries(seq),
    shipment_key TEXT NOT NULL,
    occurred_at  TEXT NOT NULL,
    status       TEXT,
    body         TEXT NOT NULL
);
INSERT INTO events_v2 (seq, event_id, delivery_seq, shipment_key, occurred_at, status, body)
    SELECT seq, event_id, delivery_seq, shipment_key, occurred_at, status, body FROM events;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
CREATE INDEX events_by_shipment ON events(shipment_key);
CREATE TABLE notices_v2 (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_seq INTEGER NOT NULL REFERENCES deliveries(seq),
    body         TEXT NOT NULL
);
INSERT INTO notices_v2 (seq, delivery_seq, body) SELECT seq, delivery_seq, body FROM notices;
DROP TABLE notices;
ALTER TABLE notices_v2 RENAME TO notices;
",
    },
    // Expiry in Unix milliseconds: RFC 3339 texts with varying fractions do not sort as times.
    Migration {
        version: 3,
        sql: "
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
",
    },
    // The inbox: a delivery is stored first and projected later; `projection` says what its
    // projection produced (NULL: not yet). Every delivery stored before was projected when it
    // was stored, so it gets what it produced then, and the projector starts after them.
    Migration {
        version: 4,
        sql: "
ALTER TABLE deliveries ADD COLUMN projection TEXT;
UPDATE deliveries SET projection = json_object(
    'delivery_seq', seq,
    'events', (SELECT json_group_array(event_id) FROM events WHERE delivery_seq = deliveries.seq),
    'duplicates', json_array(),
    'notices', (SELECT count(*) FROM notices WHERE delivery_seq = deliveries.seq),
    'dead_letter', CASE WHEN dead_letter = 1 THEN COALESCE(error, '') END);
INSERT INTO cursors(name, position) SELECT 'projector', COALESCE(max(seq), 0) FROM deliveries
    WHERE true ON CONFLICT(name) DO NOTHING;
",
    },
    // The feed becomes a table of its own (events in their revisions, retractions, shipment
    // state changes), starting with every stored event under its `seq`, so that saved cursors
    // stay valid. Events keep their current revision; earlier ones go to `event_revisions`.
    // Content hashes of events stored before are left empty: the writer hashes their JSON
    // when it first compares them.
    Migration {
        version: 5,
        sql: "
CREATE TABLE feed (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,
    event_id     TEXT,
    revision     INTEGER,
    shipment_key TEXT NOT NULL,
    body         TEXT NOT NULL
);
INSERT INTO feed(seq, kind, event_id, revision, shipment_key, body)
    SELECT seq, 'event', event_id, 1, shipment_key, body FROM events ORDER BY seq;
ALTER TABLE events ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
ALTER TABLE events ADD COLUMN content_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN retracted INTEGER NOT NULL DEFAULT 0;
CREATE INDEX events_by_delivery ON events(delivery_seq);
CREATE TABLE event_revisions (
    event_id     TEXT NOT NULL,
    revision     INTEGER NOT NULL,
    delivery_seq INTEGER NOT NULL REFERENCES deliveries(seq),
    body         TEXT NOT NULL,
    PRIMARY KEY (event_id, revision)
);
",
    },
    // The inbox moves to a file of its own (see the module's comment): the raw deliveries are
    // copied there under their `seq`s, and what stays is what the projector writes, renamed
    // `projections` (the events', notices' and revisions' references follow the rename). The
    // copy ignores rows already there: a crash between the two files' commits leaves this
    // migration to run again.
    Migration {
        version: 6,
        sql: "
INSERT OR IGNORE INTO inbox.deliveries(seq, endpoint, provider, received_at, headers, body)
    SELECT seq, endpoint, provider, received_at, headers, body FROM main.deliveries ORDER BY seq;
ALTER TABLE main.deliveries RENAME TO projections;
ALTER TABLE projections DROP COLUMN endpoint;
ALTER TABLE projections DROP COLUMN provider;
ALTER TABLE projections DROP COLUMN received_at;
ALTER TABLE projections DROP COLUMN headers;
ALTER TABLE projections DROP COLUMN body;
DELETE FROM projections WHERE projection IS NULL;
",
    },
    // One timeline per parcel: tracking numbers in keys are compared in their canonical form
    // (upper case, no spaces or dashes: `shipfeed_core::identity`), so keys that differed only
    // in that become one; the shipments are then recomputed from their events by the store
    // (the cursor `rebuild:shipments` asks for it), without feed items. Aliases link a
    // provider's own shipment id to its parcel.
    Migration {
        version: 7,
        sql: "
CREATE TABLE aliases (
    provider             TEXT NOT NULL,
    provider_shipment_id TEXT NOT NULL,
    shipment_key         TEXT NOT NULL,
    carrier              TEXT,
    tracking_number      TEXT NOT NULL,
    delivery_seq         INTEGER NOT NULL,
    PRIMARY KEY (provider, provider_shipment_id)
);
UPDATE events SET shipment_key = CASE
    WHEN instr(shipment_key, ':tracking:') > 0 THEN substr(shipment_key, 1, instr(shipment_key, ':tracking:') + 9)
        || upper(replace(replace(substr(shipment_key, instr(shipment_key, ':tracking:') + 10), ' ', ''), '-', ''))
    WHEN instr(shipment_key, ':id:') > 0 OR shipment_key LIKE '%:unidentified' THEN shipment_key
    ELSE substr(shipment_key, 1, instr(shipment_key, ':'))
        || upper(replace(replace(substr(shipment_key, instr(shipment_key, ':') + 1), ' ', ''), '-', ''))
END;
UPDATE feed SET shipment_key = CASE
    WHEN instr(shipment_key, ':tracking:') > 0 THEN substr(shipment_key, 1, instr(shipment_key, ':tracking:') + 9)
        || upper(replace(replace(substr(shipment_key, instr(shipment_key, ':tracking:') + 10), ' ', ''), '-', ''))
    WHEN instr(shipment_key, ':id:') > 0 OR shipment_key LIKE '%:unidentified' THEN shipment_key
    ELSE substr(shipment_key, 1, instr(shipment_key, ':'))
        || upper(replace(replace(substr(shipment_key, instr(shipment_key, ':') + 1), ' ', ''), '-', ''))
END;
DELETE FROM shipments;
INSERT INTO cursors(name, position) VALUES ('rebuild:shipments', 0)
    ON CONFLICT(name) DO NOTHING;
",
    },
    // Stalled-shipment alerts: each shipment's status, last event and its time (Unix seconds)
    // as columns, filled from the state, so that finding stalled shipments reads an index
    // rather than every shipment; and the alerts, each id once, open until cleared.
    Migration {
        version: 8,
        sql: "
ALTER TABLE shipments ADD COLUMN status TEXT;
ALTER TABLE shipments ADD COLUMN last_event_id TEXT;
ALTER TABLE shipments ADD COLUMN last_occurred_at INTEGER;
UPDATE shipments SET status = json_extract(state, '$.status'),
    last_event_id = json_extract(state, '$.last_event_id'),
    last_occurred_at = unixepoch(json_extract(state, '$.last_occurred_at'));
CREATE INDEX shipments_stalled ON shipments(status, last_occurred_at);
CREATE TABLE alerts (
    alert_id      TEXT PRIMARY KEY,
    shipment_key  TEXT NOT NULL,
    rule          TEXT NOT NULL,
    last_event_id TEXT NOT NULL,
    open          INTEGER NOT NULL DEFAULT 1,
    body          TEXT NOT NULL,
    cleared       TEXT
);
CREATE INDEX alerts_by_shipment ON alerts(shipment_key, last_event_id);
CREATE INDEX alerts_open ON alerts(shipment_key) WHERE open = 1;
",
    },
    // Contract drift: per provider, kind and key, how many distinct deliveries showed it; and
    // the fingerprints of the deliveries counted, so that a retry with the same bytes is not.
    Migration {
        version: 9,
        sql: "
CREATE TABLE drift (
    provider    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    deliveries  INTEGER NOT NULL,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    sample_seq  INTEGER NOT NULL,
    PRIMARY KEY (provider, kind, key)
);
CREATE TABLE drift_deliveries (
    provider     TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    delivery_seq INTEGER NOT NULL,
    PRIMARY KEY (provider, fingerprint)
);
",
    },
    // HTTP push subscriptions: the messages waiting for a retry or exhausted (times in Unix
    // milliseconds), and each subscription's state.
    Migration {
        version: 10,
        sql: "
CREATE TABLE push_messages (
    subscription    TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    webhook_id      TEXT NOT NULL,
    ordering_keys   TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    first_failed_at INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    body            TEXT NOT NULL,
    PRIMARY KEY (subscription, seq)
);
CREATE TABLE push_subscriptions (
    name          TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    reason        TEXT,
    changed_at    INTEGER,
    failing_since INTEGER,
    version       INTEGER NOT NULL
);
",
    },
    // Shipments by the merchant's order number (the console's search), in compared form
    // (`order_number_key`: trimmed, lower case), filled in for the shipments already stored.
    Migration {
        version: 11,
        sql: "
ALTER TABLE shipments ADD COLUMN order_number TEXT;
UPDATE shipments SET order_number = lower(trim(json_extract(shipment, '$.order_number')))
    WHERE json_valid(shipment);
UPDATE shipments SET order_number = NULL WHERE order_number = '';
CREATE INDEX shipments_by_order ON shipments (order_number);
",
    },
    // The audit log: operators' actions, appended only (AUTOINCREMENT: an id is never given
    // twice, not even after the newest entry were deleted), read newest first by id.
    Migration {
        version: 12,
        sql: "
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL
);
",
    },
];

/// The inbox file's one table; its `seq`s are the deliveries' for good.
const INBOX_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint    TEXT NOT NULL,
    provider    TEXT NOT NULL,
    received_at TEXT NOT NULL,
    headers     TEXT NOT NULL,
    body        BLOB NOT NULL
);
";

/// Where the inbox of the database at `path` lives: beside it, named the way SQLite names a
/// database's other files (`-wal`, `-shm`), so that `shipfeed.db*` is the whole store.
pub(crate) fn inbox_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-inbox");
    name.into()
}

/// How often the WAL is copied back into the database, off the writer thread.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// WAL frames the checkpoint thread may leave for the writer to copy (a few milliseconds).
const WRITER_CHECKPOINT_FRAMES: i64 = 256;

/// The WAL length (frames of one page) from which the writer makes the WAL start over: about
/// 256 MiB, so that the catch-up below happens about once a second under full load (at 16 384
/// frames, four times a second, p99 was 40 ms instead of 30 in `bench ingest`). Below it the
/// WAL grows into blocks it has used before; idle, it restarts by itself. The file keeps the
/// size it reached.
const WAL_RESTART_FRAMES: i64 = 65_536;

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] until the store is dropped. `PASSIVE` never
/// blocks the writer or readers; it copies the frames that were in the WAL when it started, so
/// rounds follow each other until at most [`WRITER_CHECKPOINT_FRAMES`] are left, and then, when
/// the WAL has reached [`WAL_RESTART_FRAMES`], the writer is told through `copied`.
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>, copied: Arc<AtomicBool>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        // A round copies the WAL as it was when the round began; what the writer committed
        // meanwhile is left for the next round. Each round is shorter than the one before, so
        // a few rounds leave only the last round's few frames.
        let mut previous_end = None;
        for _ in 0..8 {
            let end = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                row.get::<_, i64>(1)
            });
            match (end, previous_end) {
                (Ok(end), Some(previous)) if end - previous <= WRITER_CHECKPOINT_FRAMES => {
                    copied.store(end >= WAL_RESTART_FRAMES, Ordering::Release);
                    break;
                }
                (Ok(end), _) => previous_end = Some(end),
                (Err(error), _) => {
                    tracing::warn!(%error, "WAL checkpoint failed; the next round retries");
                    break;
                }
            }
        }
    }
}

/// Run by the writer between groups once the checkpoint thread has copied all but a few frames:
/// it copies those, so that the WAL is wholly copied and the next commit starts it over from
/// the beginning. Otherwise, under steady load, the checkpoint thread never catches up, the WAL
/// grows without end, and every frame lands on a new file block that the kernel must zero first
/// (measured: 40 % of the writer's time in `bench ingest`). The catch-up costs the writer a
/// few milliseconds to a few tens (copy and `fsync`): a latency spike traded for throughput.
fn finish_checkpoint(conn: &Connection, copied: &AtomicBool) {
    if copied.swap(false, Ordering::Acquire) {
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(%error, "WAL checkpoint failed; the next round retries");
        }
    }
}

fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |error| StoreError::database(context, error)
}

/// Page cache per connection, in KiB: what each one's work re-reads. The projection writer
/// revisits index pages (event ids, shipment keys) all the time; the readers serve feeds and
/// lookups; the inbox writer only appends, and the checkpoints copy the WAL without the cache.
const PROJECTION_CACHE_KIB: i64 = 16_000;
const READER_CACHE_KIB: i64 = 8_000;
const INBOX_CACHE_KIB: i64 = 2_000;
const CHECKPOINT_CACHE_KIB: i64 = 500;

/// What SQLite may allocate in this process, page caches included, before it recycles cached
/// pages rather than allocate more (a soft limit: it never fails an allocation). Measured under
/// load without it (heaptrack, `bench ingest`'s requests in a closed loop), the inbox writer's
/// cache alone held 49 MB in spite of its `cache_size`, and SQLite 71 MB in all. At 16 MiB
/// `project_drain` drains as fast as at 32 MiB (5 400-5 600 deliveries/s either way, interleaved).
const SOFT_HEAP_LIMIT_BYTES: i64 = 16 << 20;

/// Page size of a new inbox file (an existing file keeps its own): a delivery's body is about
/// 4 KB, so with the default 4 KiB pages each one spans overflow pages, and every page is a WAL
/// frame of its own, written, checksummed and later copied back one by one.
const INBOX_PAGE_SIZE: i64 = 16_384;

fn connect(path: &Path, cache_kib: i64) -> Result<Connection, StoreError> {
    connect_with(path, cache_kib, "")
}

/// `first` runs before anything else: settings that only a new, empty file takes.
fn connect_with(path: &Path, cache_kib: i64, first: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(db("open the SQLite database"))?;
    conn.execute_batch(&format!(
        "{first} PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;
         PRAGMA temp_store = MEMORY; PRAGMA cache_size = -{cache_kib};
         PRAGMA soft_heap_limit = {SOFT_HEAP_LIMIT_BYTES};",
    ))
    .map_err(db("configure the SQLite connection"))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db("read the schema version"))?;
    for migration in migrate::pending(version, MIGRATIONS)? {
        let tx = conn.transaction().map_err(db("migrate the schema"))?;
        tx.execute_batch(migration.sql)
            .map_err(db("migrate the schema"))?;
        tx.pragma_update(None, "user_version", migration.version)
            .map_err(db("migrate the schema"))?;
        tx.commit().map_err(db("migrate the schema"))?;
    }
    Ok(())
}

/// Attaches the inbox to a connection of the database, as `inbox`.
fn attach_inbox(conn: &Connection, inbox: &Path) -> Result<(), StoreError> {
    let inbox = inbox
        .to_str()
        .ok_or_else(|| StoreError::Config(format!("the inbox path {inbox:?} is not UTF-8")))?;
    conn.execute("ATTACH DATABASE ?1 AS inbox", [inbox])
        .map_err(db("attach the inbox"))?;
    Ok(())
}

/// A writer's connection to one file, with the thread that checkpoints that file's WAL; the
/// thread stops when the returned sender is dropped. The projection side's checkpoints run
/// `background` ([`crate::deprioritize_current_thread`]), as its writer does.
fn writer_of(
    path: &Path,
    cache_kib: i64,
    first: &str,
    background: bool,
) -> Result<(Connection, Arc<AtomicBool>, mpsc::Sender<()>), StoreError> {
    let conn = connect_with(path, cache_kib, first)?;
    // Checkpoints run on their own thread, not inside the writer's commits.
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")
        .map_err(db("configure the SQLite writer"))?;
    let checkpointer = connect(path, CHECKPOINT_CACHE_KIB)?;
    let (stop_checkpoints, stop) = mpsc::channel::<()>();
    let copied = Arc::new(AtomicBool::new(false));
    let copied_by_thread = Arc::clone(&copied);
    std::thread::Builder::new()
        .name("shipfeed-sqlite-checkpoint".into())
        .spawn(move || {
            if background {
                crate::deprioritize_current_thread();
            }
            checkpoint_loop(checkpointer, stop, copied_by_thread);
        })
        .map_err(|e| StoreError::database("start the checkpoint thread", e))?;
    Ok((conn, copied, stop_checkpoints))
}

/// Opens (creating and migrating when needed) the database at `path` and its inbox beside it
/// ([`inbox_path`]): the inbox writer, the database's writer and the readers' connection.
pub(crate) fn open(path: &Path) -> Result<(SqliteWriter, SqliteWriter, SqliteReader), StoreError> {
    let inbox = inbox_path(path);
    let (inbox_conn, inbox_copied, stop_inbox_checkpoints) = writer_of(
        &inbox,
        INBOX_CACHE_KIB,
        &format!("PRAGMA page_size = {INBOX_PAGE_SIZE};"),
        false,
    )?;
    inbox_conn
        .execute_batch(INBOX_SCHEMA)
        .map_err(db("create the inbox"))?;
    let (mut feed_conn, feed_copied, stop_checkpoints) =
        writer_of(path, PROJECTION_CACHE_KIB, "", true)?;
    attach_inbox(&feed_conn, &inbox)?;
    migrate(&mut feed_conn)?;
    feed_conn
        .execute_batch("PRAGMA foreign_keys = ON;")
        .map_err(db("configure the SQLite writer"))?;
    let reader = connect(path, READER_CACHE_KIB)?;
    attach_inbox(&reader, &inbox)?;
    Ok((
        SqliteWriter {
            conn: inbox_conn,
            checkpoint_copied: inbox_copied,
        },
        SqliteWriter {
            conn: feed_conn,
            checkpoint_copied: feed_copied,
        },
        SqliteReader(Arc::new(ReaderConn {
            conn: Mutex::new(reader),
            _stop_checkpoints: [stop_inbox_checkpoints, stop_checkpoints],
        })),
    ))
}

/// RFC 3339 with as many fractional digits as needed, so that a time reads back exactly.
fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn parse_time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// A writer's connection (the inbox's or the database's). Its calls block, which is right on
/// the writer's own thread.
pub(crate) struct SqliteWriter {
    conn: Connection,
    /// Set by the checkpoint thread when the writer is to finish the checkpoint.
    checkpoint_copied: Arc<AtomicBool>,
}

impl WriteDriver for SqliteWriter {
    async fn begin(&mut self) -> Result<(), StoreError> {
        // Events reference their delivery's projection, which is recorded after them.
        self.execute("BEGIN; PRAGMA defer_foreign_keys = ON;").await
    }

    async fn execute(&mut self, sql: &'static str) -> Result<(), StoreError> {
        self.conn.execute_batch(sql).map_err(db(sql))
    }

    async fn insert_deliveries(&mut self, rows: &[DeliveryRow]) -> Result<Vec<i64>, StoreError> {
        let mut insert = self
            .conn
            .prepare_cached(
                "INSERT INTO deliveries(endpoint, provider, received_at, headers, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(db("store a delivery"))?;
        rows.iter()
            .map(|row| {
                insert.insert(params![
                    row.endpoint,
                    row.provider.as_str(),
                    time_text(row.received_at),
                    row.headers,
                    row.body,
                ])
            })
            .collect::<rusqlite::Result<_>>()
            .map_err(db("store a delivery"))
    }

    async fn set_projections(&mut self, rows: &[ProjectionRow<'_>]) -> Result<usize, StoreError> {
        let mut upsert = self
            .conn
            .prepare_cached(
                "INSERT INTO projections(seq, dead_letter, error, projection)
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM inbox.deliveries WHERE seq = ?1)
                 ON CONFLICT(seq) DO UPDATE
                 SET dead_letter = excluded.dead_letter, error = excluded.error,
                     projection = excluded.projection",
            )
            .map_err(db("record a projection"))?;
        let mut updated = 0;
        for row in rows {
            updated += upsert
                .execute(params![
                    row.seq,
                    row.dead_letter.is_some(),
                    row.dead_letter,
                    row.projection
                ])
                .map_err(db("record a projection"))?;
        }
        Ok(updated)
    }

    async fn stored_events(
        &mut self,
        event_ids: &[&str],
        hash_prefix: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut select = self
            .conn
            .prepare_cached(&format!("SELECT {STORED_EVENT} WHERE event_id = ?1"))
            .map_err(db("read events"))?;
        let mut events = Vec::new();
        for event_id in event_ids {
            if let Some(event) = select
                .query_row(params![event_id, hash_prefix], stored_event)
                .optional()
                .map_err(db("read events"))?
            {
                events.push(event);
            }
        }
        Ok(events)
    }

    async fn owned_events(
        &mut self,
        delivery_seqs: &[i64],
        hash_prefix: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut select = self
            .conn
            .prepare_cached(&format!(
                "SELECT {STORED_EVENT} WHERE delivery_seq = ?1 AND retracted = 0 ORDER BY seq"
            ))
            .map_err(db("read a delivery's events"))?;
        let mut events = Vec::new();
        for seq in delivery_seqs {
            let rows = select
                .query_map(params![seq, hash_prefix], stored_event)
                .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                .map_err(db("read a delivery's events"))?;
            events.extend(rows);
        }
        Ok(events)
    }

    async fn insert_events(&mut self, rows: &[(i64, &EventRow)]) -> Result<(), StoreError> {
        let mut insert = self
            .conn
            .prepare_cached(
                "INSERT INTO events(event_id, delivery_seq, shipment_key, occurred_at, status, body, content_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(db("store an event"))?;
        for (seq, row) in rows {
            insert
                .execute(params![
                    row.event_id,
                    seq,
                    row.shipment_key,
                    time_text(row.occurred_at),
                    row.status,
                    row.body,
                    row.content_hash,
                ])
                .map_err(db("store an event"))?;
        }
        Ok(())
    }

    async fn revise_event(
        &mut self,
        seq: i64,
        row: &EventRow,
        revision: i64,
    ) -> Result<(), StoreError> {
        let revise = || -> rusqlite::Result<()> {
            self.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO event_revisions(event_id, revision, delivery_seq, body)
                     SELECT event_id, revision, delivery_seq, body FROM events WHERE event_id = ?1",
                )?
                .execute([&row.event_id])?;
            self.conn
                .prepare_cached(
                    "UPDATE events SET delivery_seq = ?2, shipment_key = ?3, occurred_at = ?4,
                         status = ?5, body = ?6, content_hash = ?7, revision = ?8, retracted = 0
                     WHERE event_id = ?1",
                )?
                .execute(params![
                    row.event_id,
                    seq,
                    row.shipment_key,
                    time_text(row.occurred_at),
                    row.status,
                    row.body,
                    row.content_hash,
                    revision,
                ])?;
            Ok(())
        };
        revise().map_err(db("store a revision"))
    }

    async fn retract_event(&mut self, event_id: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE events SET retracted = 1 WHERE event_id = ?1")
            .and_then(|mut update| update.execute([event_id]))
            .map_err(db("retract an event"))?;
        Ok(())
    }

    async fn append_feed(&mut self, rows: &[FeedRow<'_>]) -> Result<(), StoreError> {
        let mut insert = self
            .conn
            .prepare_cached(
                "INSERT INTO feed(kind, event_id, revision, shipment_key, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(db("append to the feed"))?;
        for row in rows {
            insert
                .execute(params![
                    row.kind,
                    row.event_id,
                    row.revision,
                    row.shipment_key,
                    row.body
                ])
                .map_err(db("append to the feed"))?;
        }
        Ok(())
    }

    async fn shipment_events(
        &mut self,
        keys: &[&str],
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut select = self
            .conn
            .prepare_cached("SELECT body FROM events WHERE shipment_key = ?1 AND retracted = 0")
            .map_err(db("read a shipment's events"))?;
        let mut events = Vec::new();
        for key in keys {
            let bodies = select
                .query_map([key], |row| row.get::<_, String>(0))
                .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                .map_err(db("read a shipment's events"))?;
            events.extend(bodies.into_iter().map(|body| ((*key).to_owned(), body)));
        }
        Ok(events)
    }

    async fn shipment_states(
        &mut self,
        keys: &[&str],
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut select = self
            .conn
            .prepare_cached("SELECT state FROM shipments WHERE shipment_key = ?1")
            .map_err(db("read a shipment state"))?;
        let mut states = Vec::new();
        for key in keys {
            if let Some(state) = select
                .query_row([key], |row| row.get::<_, String>(0))
                .optional()
                .map_err(db("read a shipment state"))?
            {
                states.push(((*key).to_owned(), state));
            }
        }
        Ok(states)
    }

    async fn aliases(&mut self, ids: &[(&str, &str)]) -> Result<Vec<AliasRow>, StoreError> {
        let mut select = self
            .conn
            .prepare_cached(
                "SELECT provider, provider_shipment_id, shipment_key, carrier, tracking_number,
                        delivery_seq
                 FROM aliases WHERE provider = ?1 AND provider_shipment_id = ?2",
            )
            .map_err(db("read aliases"))?;
        let mut aliases = Vec::new();
        for (provider, id) in ids {
            if let Some(alias) = select
                .query_row(params![provider, id], |r| {
                    Ok(AliasRow {
                        provider: r.get(0)?,
                        provider_shipment_id: r.get(1)?,
                        shipment_key: r.get(2)?,
                        carrier: r.get(3)?,
                        tracking_number: r.get(4)?,
                        delivery_seq: r.get(5)?,
                    })
                })
                .optional()
                .map_err(db("read aliases"))?
            {
                aliases.push(alias);
            }
        }
        Ok(aliases)
    }

    async fn upsert_aliases(&mut self, rows: &[AliasRow]) -> Result<(), StoreError> {
        let mut upsert = self
            .conn
            .prepare_cached(
                "INSERT INTO aliases(provider, provider_shipment_id, shipment_key, carrier,
                                     tracking_number, delivery_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(provider, provider_shipment_id) DO UPDATE
                 SET shipment_key = excluded.shipment_key, carrier = excluded.carrier,
                     tracking_number = excluded.tracking_number,
                     delivery_seq = excluded.delivery_seq",
            )
            .map_err(db("store aliases"))?;
        for row in rows {
            upsert
                .execute(params![
                    row.provider,
                    row.provider_shipment_id,
                    row.shipment_key,
                    row.carrier,
                    row.tracking_number,
                    row.delivery_seq
                ])
                .map_err(db("store aliases"))?;
        }
        Ok(())
    }

    async fn shipment_keys(&mut self) -> Result<Vec<String>, StoreError> {
        let mut select = self
            .conn
            .prepare_cached("SELECT DISTINCT shipment_key FROM events WHERE retracted = 0")
            .map_err(db("read shipment keys"))?;
        select
            .query_map([], |row| row.get(0))
            .and_then(Iterator::collect)
            .map_err(db("read shipment keys"))
    }

    async fn drift_keys(
        &mut self,
        providers: &[&str],
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let mut select = self
            .conn
            .prepare_cached("SELECT provider, kind, key FROM drift WHERE provider = ?1")
            .map_err(db("read drift"))?;
        let mut keys = Vec::new();
        for provider in providers {
            let rows = select
                .query_map([provider], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(db("read drift"))?;
            for row in rows {
                keys.push(row.map_err(db("read drift"))?);
            }
        }
        Ok(keys)
    }

    async fn drift_fingerprints(
        &mut self,
        fingerprints: &[(&str, &str)],
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut select = self
            .conn
            .prepare_cached(
                "SELECT 1 FROM drift_deliveries WHERE provider = ?1 AND fingerprint = ?2",
            )
            .map_err(db("read drift fingerprints"))?;
        let mut seen = Vec::new();
        for (provider, fingerprint) in fingerprints {
            if select
                .exists(params![provider, fingerprint])
                .map_err(db("read drift fingerprints"))?
            {
                seen.push(((*provider).to_owned(), (*fingerprint).to_owned()));
            }
        }
        Ok(seen)
    }

    async fn record_drift(
        &mut self,
        rows: &[DriftRow],
        fingerprints: &[(&str, &str, i64)],
    ) -> Result<(), StoreError> {
        let mut upsert = self
            .conn
            .prepare_cached(
                "INSERT INTO drift(provider, kind, key, deliveries, first_seen, last_seen,
                                   sample_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(provider, kind, key) DO UPDATE
                 SET deliveries = drift.deliveries + excluded.deliveries,
                     last_seen = excluded.last_seen",
            )
            .map_err(db("store drift"))?;
        for row in rows {
            upsert
                .execute(params![
                    row.provider,
                    row.kind,
                    row.key,
                    row.deliveries,
                    time_text(row.first_seen),
                    time_text(row.last_seen),
                    row.sample_seq
                ])
                .map_err(db("store drift"))?;
        }
        let mut insert = self
            .conn
            .prepare_cached(
                "INSERT INTO drift_deliveries(provider, fingerprint, delivery_seq)
                 VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )
            .map_err(db("store drift fingerprints"))?;
        for (provider, fingerprint, seq) in fingerprints {
            insert
                .execute(params![provider, fingerprint, seq])
                .map_err(db("store drift fingerprints"))?;
        }
        Ok(())
    }

    async fn saved_cursor(&mut self, name: &str) -> Result<Option<i64>, StoreError> {
        self.conn
            .prepare_cached("SELECT position FROM cursors WHERE name = ?1")
            .and_then(|mut select| select.query_row([name], |r| r.get(0)).optional())
            .map_err(db("read a cursor"))
    }

    async fn delete_shipment(&mut self, key: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM shipments WHERE shipment_key = ?1")
            .and_then(|mut delete| delete.execute([key]))
            .map_err(db("remove a shipment"))?;
        Ok(())
    }

    async fn insert_notices(&mut self, rows: &[(i64, &str)]) -> Result<(), StoreError> {
        let mut insert = self
            .conn
            .prepare_cached("INSERT INTO notices(delivery_seq, body) VALUES (?1, ?2)")
            .map_err(db("store a notice"))?;
        for (seq, body) in rows {
            insert
                .execute(params![seq, body])
                .map_err(db("store a notice"))?;
        }
        Ok(())
    }

    async fn upsert_shipments(&mut self, rows: &[ShipmentRow<'_>]) -> Result<(), StoreError> {
        let mut upsert = self
            .conn
            .prepare_cached(
                "INSERT INTO shipments(shipment_key, carrier, tracking_number, shipment, state,
                                       status, last_event_id, last_occurred_at, order_number)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(shipment_key) DO UPDATE SET carrier = excluded.carrier,
                     tracking_number = excluded.tracking_number, shipment = excluded.shipment,
                     order_number = excluded.order_number,
                     state = excluded.state, status = excluded.status,
                     last_event_id = excluded.last_event_id,
                     last_occurred_at = excluded.last_occurred_at",
            )
            .map_err(db("store a shipment state"))?;
        for row in rows {
            upsert
                .execute(params![
                    row.key,
                    row.carrier,
                    row.tracking_number,
                    row.shipment,
                    row.state,
                    row.status,
                    row.last_event_id,
                    row.last_occurred_at.timestamp(),
                    row.order_number,
                ])
                .map_err(db("store a shipment state"))?;
        }
        Ok(())
    }

    async fn save_cursor(&mut self, name: &str, position: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO cursors(name, position) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET position = excluded.position",
            )
            .and_then(|mut save| save.execute(params![name, position]))
            .map_err(db("save a cursor"))?;
        Ok(())
    }

    async fn lease(&mut self, name: &str) -> Result<Option<Lease>, StoreError> {
        self.conn
            .prepare_cached("SELECT holder, epoch, expires_at FROM leases WHERE name = ?1")
            .and_then(|mut select| {
                select
                    .query_row([name], |r| {
                        Ok(Lease {
                            name: name.to_owned(),
                            holder: r.get(0)?,
                            epoch: r.get(1)?,
                            expires_at: DateTime::from_timestamp_millis(r.get(2)?)
                                .unwrap_or_default(),
                        })
                    })
                    .optional()
            })
            .map_err(db("read a lease"))
    }

    async fn put_lease(&mut self, lease: &Lease) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO leases(name, holder, epoch, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET holder = excluded.holder,
                     epoch = excluded.epoch, expires_at = excluded.expires_at",
            )
            .and_then(|mut upsert| {
                upsert.execute(params![
                    lease.name,
                    lease.holder,
                    lease.epoch,
                    lease.expires_at.timestamp_millis(),
                ])
            })
            .map_err(db("store a lease"))?;
        Ok(())
    }

    async fn stalled(&mut self, query: &StalledQuery<'_>) -> Result<Vec<StalledRow>, StoreError> {
        // Whole seconds here; the store compares the exact times afterwards.
        let before = query.before.timestamp();
        let (only, except) = match &query.carriers {
            CarrierScope::Only(carrier) => (Some(*carrier), String::from("[]")),
            CarrierScope::Except(carriers) => (None, crate::project::to_json(carriers)),
        };
        let mut select = self
            .conn
            .prepare_cached(
                "SELECT s.shipment_key, s.shipment, s.state FROM shipments s
                 WHERE s.status = ?1 AND s.last_occurred_at <= ?2
                   AND (CASE WHEN ?3 IS NULL
                        THEN s.carrier IS NULL OR s.carrier NOT IN (SELECT value FROM json_each(?4))
                        ELSE s.carrier = ?3 END)
                   AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.shipment_key = s.shipment_key
                                   AND a.last_event_id = s.last_event_id AND a.rule = ?5)
                 ORDER BY s.last_occurred_at, s.shipment_key LIMIT ?6",
            )
            .map_err(db("find stalled shipments"))?;
        let rows = select
            .query_map(
                params![query.status, before, only, except, query.rule, query.limit],
                |r| {
                    Ok(StalledRow {
                        key: r.get(0)?,
                        shipment: r.get(1)?,
                        state: r.get(2)?,
                    })
                },
            )
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(db("find stalled shipments"))?;
        Ok(rows)
    }

    async fn insert_alerts(&mut self, rows: &[AlertRow<'_>]) -> Result<Vec<String>, StoreError> {
        let mut insert = self
            .conn
            .prepare_cached(
                "INSERT INTO alerts(alert_id, shipment_key, rule, last_event_id, body)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(alert_id) DO NOTHING",
            )
            .map_err(db("store an alert"))?;
        let mut inserted = Vec::new();
        for row in rows {
            let stored = insert
                .execute(params![
                    row.alert_id,
                    row.shipment_key,
                    row.rule,
                    row.last_event_id,
                    row.body
                ])
                .map_err(db("store an alert"))?;
            if stored > 0 {
                inserted.push(row.alert_id.to_owned());
            }
        }
        Ok(inserted)
    }

    async fn open_alerts(&mut self, keys: &[&str]) -> Result<Vec<String>, StoreError> {
        let mut select = self
            .conn
            .prepare_cached(
                "SELECT body FROM alerts WHERE shipment_key = ?1 AND open = 1 ORDER BY alert_id",
            )
            .map_err(db("read open alerts"))?;
        let mut bodies = Vec::new();
        for key in keys {
            let rows = select
                .query_map([key], |row| row.get::<_, String>(0))
                .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                .map_err(db("read open alerts"))?;
            bodies.extend(rows);
        }
        Ok(bodies)
    }

    async fn clear_alerts(&mut self, rows: &[(&str, &str)]) -> Result<(), StoreError> {
        let mut update = self
            .conn
            .prepare_cached("UPDATE alerts SET open = 0, cleared = ?2 WHERE alert_id = ?1")
            .map_err(db("clear an alert"))?;
        for (alert_id, cleared) in rows {
            update
                .execute(params![alert_id, cleared])
                .map_err(db("clear an alert"))?;
        }
        Ok(())
    }

    async fn upsert_push(&mut self, rows: &[PushRow]) -> Result<(), StoreError> {
        let mut upsert = self
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO push_messages(subscription, seq, webhook_id, ordering_keys,
                     state, attempts, next_attempt_at, first_failed_at, last_status, last_error, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .map_err(db("store a push message"))?;
        for row in rows {
            upsert
                .execute(params![
                    row.subscription,
                    row.seq,
                    row.webhook_id,
                    row.ordering_keys,
                    row.state,
                    row.attempts,
                    row.next_attempt_at.timestamp_millis(),
                    row.first_failed_at.timestamp_millis(),
                    row.last_status,
                    row.last_error,
                    row.body,
                ])
                .map_err(db("store a push message"))?;
        }
        Ok(())
    }

    async fn delete_push(&mut self, subscription: &str, seqs: &[i64]) -> Result<(), StoreError> {
        let mut delete = self
            .conn
            .prepare_cached("DELETE FROM push_messages WHERE subscription = ?1 AND seq = ?2")
            .map_err(db("remove a push message"))?;
        for seq in seqs {
            delete
                .execute(params![subscription, seq])
                .map_err(db("remove a push message"))?;
        }
        Ok(())
    }

    async fn redeliver_push(
        &mut self,
        subscription: &str,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE push_messages SET state = 'pending', attempts = 0, next_attempt_at = ?3
                 WHERE subscription = ?1 AND state = 'exhausted' AND first_failed_at >= ?2",
            )
            .and_then(|mut update| {
                update.execute(params![
                    subscription,
                    since.timestamp_millis(),
                    now.timestamp_millis()
                ])
            })
            .map_err(db("redeliver push messages"))?;
        Ok(changed as u64)
    }

    async fn push_control(&mut self, name: &str) -> Result<Option<PushControlRow>, StoreError> {
        self.conn
            .prepare_cached(&format!("{PUSH_CONTROL} WHERE name = ?1"))
            .and_then(|mut select| select.query_row([name], push_control_row).optional())
            .map_err(db("read a push subscription's state"))
    }

    async fn put_push_control(&mut self, row: &PushControlRow) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO push_subscriptions(name, status, reason, changed_at,
                     failing_since, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut put| {
                put.execute(params![
                    row.name,
                    row.status,
                    row.reason,
                    row.changed_at.map(|t| t.timestamp_millis()),
                    row.failing_since.map(|t| t.timestamp_millis()),
                    row.version,
                ])
            })
            .map_err(db("store a push subscription's state"))?;
        Ok(())
    }

    async fn insert_audit(&mut self, row: &AuditRow) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO audit_log(at, actor, action, target, outcome, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut insert| {
                insert.insert(params![
                    time_text(row.at),
                    row.actor,
                    row.action,
                    row.target,
                    row.outcome,
                    row.detail,
                ])
            })
            .map_err(db("record an audit entry"))
    }

    async fn after_group(&mut self) {
        finish_checkpoint(&self.conn, &self.checkpoint_copied);
    }
}

/// The columns of [`StoredRow`], from the inbox's `deliveries` and `projections`.
const STORED_DELIVERY: &str = "SELECT seq, endpoint, provider, received_at, headers, body,
        CASE WHEN dead_letter = 1 THEN COALESCE(error, '') END
    FROM deliveries LEFT JOIN projections USING (seq)";

fn stored_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow {
        seq: r.get(0)?,
        endpoint: r.get(1)?,
        provider: r.get(2)?,
        received_at: parse_time(&r.get::<_, String>(3)?),
        headers: r.get(4)?,
        body: r.get(5)?,
        error: r.get(6)?,
    })
}

/// The columns of [`PushControlRow`], from `push_subscriptions`.
const PUSH_CONTROL: &str =
    "SELECT name, status, reason, changed_at, failing_since, version FROM push_subscriptions";

/// The columns of [`PushRow`], from `push_messages`.
const PUSH_MESSAGE: &str = "SELECT subscription, seq, webhook_id, ordering_keys, state, attempts,
    next_attempt_at, first_failed_at, last_status, last_error, body FROM push_messages";

fn millis(value: Option<i64>) -> Option<DateTime<Utc>> {
    value.and_then(DateTime::from_timestamp_millis)
}

fn push_control_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PushControlRow> {
    Ok(PushControlRow {
        name: row.get(0)?,
        status: row.get(1)?,
        reason: row.get(2)?,
        changed_at: millis(row.get(3)?),
        failing_since: millis(row.get(4)?),
        version: row.get(5)?,
    })
}

fn push_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PushRow> {
    Ok(PushRow {
        subscription: row.get(0)?,
        seq: row.get(1)?,
        webhook_id: row.get(2)?,
        ordering_keys: row.get(3)?,
        state: row.get(4)?,
        attempts: row.get(5)?,
        next_attempt_at: millis(row.get(6)?).unwrap_or_default(),
        first_failed_at: millis(row.get(7)?).unwrap_or_default(),
        last_status: row.get(8)?,
        last_error: row.get(9)?,
        body: row.get(10)?,
    })
}

/// The columns of [`StoredEvent`], from `events`; `?2` is the hash prefix of this build.
const STORED_EVENT: &str = "event_id, revision, delivery_seq, shipment_key, content_hash,
    CASE WHEN substr(content_hash, 1, length(?2)) = ?2 THEN NULL ELSE body END, retracted
    FROM events";

fn stored_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        event_id: row.get(0)?,
        revision: row.get(1)?,
        delivery_seq: row.get(2)?,
        shipment_key: row.get(3)?,
        content_hash: row.get(4)?,
        body: row.get(5)?,
        retracted: row.get(6)?,
    })
}

/// The readers' connection, one query at a time on the blocking pool.
fn shipment_rows(row: &rusqlite::Row<'_>) -> rusqlite::Result<ShipmentRows> {
    Ok(ShipmentRows {
        key: row.get(0)?,
        shipment: row.get(1)?,
        state: row.get(2)?,
        events: Vec::new(),
    })
}

pub(crate) struct SqliteReader(Arc<ReaderConn>);

struct ReaderConn {
    conn: Mutex<Connection>,
    /// Dropped with the store, which stops the checkpoint threads.
    _stop_checkpoints: [mpsc::Sender<()>; 2],
}

impl SqliteReader {
    async fn read<T: Send + 'static>(
        &self,
        what: &'static str,
        query: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            let mut conn = reader.conn.lock().map_err(|_| StoreError::Closed)?;
            query(&mut conn).map_err(db(what))
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

#[async_trait::async_trait]
impl ReadDriver for SqliteReader {
    async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<StoredFeedRow>, StoreError> {
        self.read("read the feed", move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT seq, kind, revision, body, shipment_key FROM feed WHERE seq > ?1
                 ORDER BY seq LIMIT ?2",
            )?;
            let rows = select.query_map(params![after, limit], |row| {
                Ok(StoredFeedRow {
                    seq: row.get(0)?,
                    kind: row.get(1)?,
                    revision: row.get(2)?,
                    body: row.get(3)?,
                    shipment_key: row.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn revisions(&self, event_id: &str) -> Result<Vec<(i64, i64, String)>, StoreError> {
        let event_id = event_id.to_owned();
        self.read("read an event's revisions", move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT revision, delivery_seq, body FROM event_revisions WHERE event_id = ?1
                 UNION ALL SELECT revision, delivery_seq, body FROM events WHERE event_id = ?1
                 ORDER BY 1",
            )?;
            let rows = select.query_map([event_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
        .await
    }

    async fn feed_end(&self) -> Result<i64, StoreError> {
        self.read("read the feed's end", |conn| {
            conn.query_row("SELECT COALESCE(max(seq), 0) FROM feed", [], |r| r.get(0))
        })
        .await
    }

    async fn shipments(&self, lookup: &ShipmentLookup) -> Result<Vec<ShipmentRows>, StoreError> {
        let (by_order, first, carrier) = match lookup {
            ShipmentLookup::Tracking { carrier, number } => {
                (false, number.clone(), carrier.clone())
            }
            ShipmentLookup::Order(number) => (true, order_number_key(number), None),
        };
        self.read("read shipments", move |conn| {
            // One snapshot for the states and the timelines, so that they agree.
            let tx = conn.transaction()?;
            let mut shipments: Vec<ShipmentRows> = {
                let mut select = if by_order {
                    tx.prepare_cached(
                        "SELECT shipment_key, shipment, state FROM shipments
                         WHERE order_number = ?1 ORDER BY shipment_key",
                    )?
                } else {
                    tx.prepare_cached(
                        "SELECT shipment_key, shipment, state FROM shipments
                         WHERE tracking_number = ?1 AND (?2 IS NULL OR carrier = ?2)
                         ORDER BY shipment_key",
                    )?
                };
                let rows = if by_order {
                    select.query_map(params![first], shipment_rows)?
                } else {
                    select.query_map(params![first, carrier], shipment_rows)?
                };
                rows.collect::<rusqlite::Result<_>>()?
            };
            for shipment in &mut shipments {
                let mut select = tx
                    .prepare_cached("SELECT body, retracted FROM events WHERE shipment_key = ?1")?;
                let bodies =
                    select.query_map([&shipment.key], |row| Ok((row.get(0)?, row.get(1)?)))?;
                shipment.events = bodies.collect::<rusqlite::Result<_>>()?;
            }
            tx.commit()?;
            Ok(shipments)
        })
        .await
    }

    async fn dead_letters(&self, after: i64, limit: i64) -> Result<Vec<DeadLetterRow>, StoreError> {
        self.read("read dead letters", move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT seq, endpoint, provider, received_at, COALESCE(error, '')
                 FROM projections JOIN deliveries USING (seq)
                 WHERE dead_letter = 1 AND seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = select.query_map(params![after, limit], |r| {
                Ok(DeadLetterRow {
                    seq: r.get(0)?,
                    endpoint: r.get(1)?,
                    provider: r.get(2)?,
                    received_at: parse_time(&r.get::<_, String>(3)?),
                    error: r.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn dead_letter_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.read("count dead letters", move |conn| {
            // The partial index `deliveries_dead_letters` (it followed the table's rename to
            // `projections`) holds the dead letters alone; each is then looked up in the inbox.
            let mut select = conn.prepare_cached(
                "SELECT endpoint, provider, count(*)
                 FROM projections JOIN deliveries USING (seq)
                 WHERE dead_letter = 1 GROUP BY endpoint, provider",
            )?;
            let rows = select.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
        .await
    }

    async fn deliveries(
        &self,
        after: i64,
        limit: i64,
        dead_letters_only: bool,
    ) -> Result<Vec<StoredRow>, StoreError> {
        self.read("read deliveries", move |conn| {
            let mut select = conn.prepare_cached(&format!(
                "{STORED_DELIVERY} WHERE seq > ?1 AND (?3 = 0 OR dead_letter = 1)
                 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = select.query_map(params![after, limit, dead_letters_only], stored_row)?;
            rows.collect()
        })
        .await
    }

    async fn deliveries_at(&self, mut seqs: Vec<i64>) -> Result<Vec<StoredRow>, StoreError> {
        seqs.sort_unstable();
        seqs.dedup();
        self.read("read deliveries", move |conn| {
            let mut select = conn.prepare_cached(&format!("{STORED_DELIVERY} WHERE seq = ?1"))?;
            let mut rows = Vec::with_capacity(seqs.len());
            for seq in seqs {
                rows.extend(select.query_row([seq], stored_row).optional()?);
            }
            Ok(rows)
        })
        .await
    }

    async fn delivery(&self, seq: i64) -> Result<Option<DeliveryStatusRow>, StoreError> {
        self.read("read a delivery", move |conn| {
            conn.query_row(
                "SELECT endpoint, provider, received_at, projection
                 FROM deliveries LEFT JOIN projections USING (seq) WHERE seq = ?1",
                [seq],
                |r| {
                    Ok(DeliveryStatusRow {
                        endpoint: r.get(0)?,
                        provider: r.get(1)?,
                        received_at: parse_time(&r.get::<_, String>(2)?),
                        projection: r.get(3)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    async fn inbox_after(&self, after: i64) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        self.read("read the inbox's end", move |conn| {
            let last = conn.query_row("SELECT COALESCE(max(seq), 0) FROM deliveries", [], |r| {
                r.get(0)
            })?;
            let oldest: Option<String> = conn
                .query_row(
                    "SELECT received_at FROM deliveries WHERE seq > ?1 ORDER BY seq LIMIT 1",
                    [after],
                    |r| r.get(0),
                )
                .optional()?;
            Ok((last, oldest.as_deref().map(parse_time)))
        })
        .await
    }

    async fn recent_arrivals(
        &self,
        limit: i64,
    ) -> Result<Vec<(i64, String, DateTime<Utc>)>, StoreError> {
        self.read("read the inbox's recent arrivals", move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT seq, endpoint, received_at FROM deliveries ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows = select.query_map([limit], |r| {
                Ok((r.get(0)?, r.get(1)?, parse_time(&r.get::<_, String>(2)?)))
            })?;
            rows.collect()
        })
        .await
    }

    async fn drift(&self, provider: Option<String>) -> Result<Vec<DriftRow>, StoreError> {
        self.read("read drift", move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT provider, kind, key, deliveries, first_seen, last_seen, sample_seq
                 FROM drift WHERE ?1 IS NULL OR provider = ?1",
            )?;
            let rows = select.query_map([provider], |r| {
                Ok(DriftRow {
                    provider: r.get(0)?,
                    kind: r.get(1)?,
                    key: r.get(2)?,
                    deliveries: r.get(3)?,
                    first_seen: parse_time(&r.get::<_, String>(4)?),
                    last_seen: parse_time(&r.get::<_, String>(5)?),
                    sample_seq: r.get(6)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn cursor(&self, name: &str) -> Result<Option<i64>, StoreError> {
        let name = name.to_owned();
        self.read("read a cursor", move |conn| {
            conn.query_row(
                "SELECT position FROM cursors WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    async fn open_alerts(&self, after: &str, limit: i64) -> Result<Vec<String>, StoreError> {
        let after = after.to_owned();
        self.read("read open alerts", move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT body FROM alerts WHERE open = 1 AND alert_id > ?1 ORDER BY alert_id LIMIT ?2",
            )?;
            let rows = select.query_map(params![after, limit], |row| row.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn open_alert_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read("count open alerts", move |conn| {
            let mut select = conn
                .prepare_cached("SELECT rule, count(*) FROM alerts WHERE open = 1 GROUP BY rule")?;
            let rows = select.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn alert(&self, alert_id: &str) -> Result<Option<String>, StoreError> {
        let alert_id = alert_id.to_owned();
        self.read("read an alert", move |conn| {
            conn.prepare_cached("SELECT body FROM alerts WHERE alert_id = ?1")?
                .query_row([alert_id], |row| row.get(0))
                .optional()
        })
        .await
    }

    async fn push_messages(
        &self,
        subscription: &str,
        state: Option<&'static str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<PushRow>, StoreError> {
        let subscription = subscription.to_owned();
        self.read("read push messages", move |conn| {
            let mut select = conn.prepare_cached(&format!(
                "{PUSH_MESSAGE} WHERE subscription = ?1 AND (?2 IS NULL OR state = ?2) AND seq > ?3
                 ORDER BY seq LIMIT ?4"
            ))?;
            let rows = select.query_map(params![subscription, state, after, limit], push_row)?;
            rows.collect()
        })
        .await
    }

    async fn push_controls(&self, name: Option<&str>) -> Result<Vec<PushControlRow>, StoreError> {
        let name = name.map(str::to_owned);
        self.read("read push subscriptions' state", move |conn| {
            let mut select = conn.prepare_cached(&format!(
                "{PUSH_CONTROL} WHERE ?1 IS NULL OR name = ?1 ORDER BY name"
            ))?;
            let rows = select.query_map([name], push_control_row)?;
            rows.collect()
        })
        .await
    }

    async fn audit(&self, before: Option<i64>, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        self.read("read the audit log", move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT id, at, actor, action, target, outcome, detail FROM audit_log
                 WHERE ?1 IS NULL OR id < ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = select.query_map(params![before, limit], |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: parse_time(&r.get::<_, String>(1)?),
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    outcome: r.get(5)?,
                    detail: r.get(6)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read("ping", |conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
        })
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn commit_rows(conn: &Connection, rows: usize) {
        for _ in 0..rows {
            conn.execute("INSERT INTO t VALUES (zeroblob(3000))", [])
                .unwrap();
        }
    }

    #[test]
    fn the_writer_rewinds_the_wal_only_when_told_it_was_copied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let wal_size = || {
            std::fs::metadata(dir.path().join("wal.db-wal"))
                .unwrap()
                .len()
        };
        let conn = connect(&path, READER_CACHE_KIB).unwrap();
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0; CREATE TABLE t(x BLOB);")
            .unwrap();
        commit_rows(&conn, 40);
        let first = wal_size();

        // Not told: nothing is copied, and new commits append to the WAL.
        let copied = AtomicBool::new(false);
        finish_checkpoint(&conn, &copied);
        commit_rows(&conn, 5);
        let grown = wal_size();
        assert!(grown > first, "{grown} bytes after {first}");

        // Told: the writer copies what is left, and its next commits start the WAL over,
        // writing into the file's first blocks instead of growing it.
        let copied = AtomicBool::new(true);
        finish_checkpoint(&conn, &copied);
        assert!(!copied.load(Ordering::Acquire), "the request is consumed");
        commit_rows(&conn, 5);
        assert_eq!(wal_size(), grown, "the WAL was rewound, not extended");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 50);
    }

    #[test]
    fn a_version_1_database_migrates_in_place_keeping_its_sequence_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = connect(&path, READER_CACHE_KIB).unwrap();
            conn.execute_batch(MIGRATIONS[0].sql).unwrap();
            conn.execute_batch(
                "PRAGMA user_version = 1;
                 INSERT INTO deliveries(seq, endpoint, provider, received_at, headers, body)
                     VALUES (7, 'sendcloud', 'sendcloud', '2024-06-01T00:00:00Z', '[]', x'7B7D');
                 INSERT INTO events(seq, event_id, delivery_seq, shipment_key, occurred_at, body)
                     VALUES (41, 'sendcloud:e1', 7, 'postnl:3S', '2024-06-01T00:00:00Z', '{}');
                 INSERT INTO notices(seq, delivery_seq, body) VALUES (3, 7, '{}');",
            )
            .unwrap();
        }
        let (_inbox, mut writer, _reader) = open(&path).unwrap();
        let conn = &writer.conn;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.last().unwrap().version);
        let kept: (i64, i64) = conn
            .query_row("SELECT seq, delivery_seq FROM events", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(kept, (41, 7), "feed cursors stay valid");
        let moved: (i64, Vec<u8>) = conn
            .query_row("SELECT seq, body FROM inbox.deliveries", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(
            moved,
            (7, b"{}".to_vec()),
            "the delivery moved to the inbox"
        );
        // Stored before the inbox, the delivery was projected then: the projector starts
        // after it, and it keeps what it produced.
        let projector: i64 = conn
            .query_row(
                "SELECT position FROM cursors WHERE name = 'projector'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(projector, 7);
        let projection: String = conn
            .query_row(
                "SELECT projection FROM projections WHERE seq = 7",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let projection: crate::Projection = serde_json::from_str(&projection).unwrap();
        assert_eq!(
            (
                projection.events,
                projection.notices,
                projection.dead_letter
            ),
            (vec!["sendcloud:e1".to_owned()], 1, None)
        );

        // Events now reference their delivery, and new ones continue the sequence.
        let row = |event_id: &str| EventRow {
            event_id: event_id.to_owned(),
            shipment_key: "postnl:3S".to_owned(),
            occurred_at: DateTime::default(),
            status: None,
            body: "{}".to_owned(),
            content_hash: String::new(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let orphan = runtime.block_on(writer.insert_events(&[(999, &row("sendcloud:orphan"))]));
        assert!(orphan.is_err(), "an event of no delivery is refused");
        runtime
            .block_on(writer.insert_events(&[(7, &row("sendcloud:e2"))]))
            .unwrap();
        let next: i64 = writer
            .conn
            .query_row(
                "SELECT seq FROM events WHERE event_id = 'sendcloud:e2'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(next > 41, "{next}");
    }

    #[test]
    fn the_inbox_move_runs_again_after_a_crash_between_the_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v5.db");
        let delivery = "INSERT INTO deliveries(seq, endpoint, provider, received_at, headers, body)
                        VALUES (7, 'sendcloud', 'sendcloud', '2024-06-01T00:00:00Z', '[]', x'7B7D');";
        {
            let conn = connect(&path, READER_CACHE_KIB).unwrap();
            for migration in &MIGRATIONS[..5] {
                conn.execute_batch(migration.sql).unwrap();
            }
            conn.execute_batch(&format!("PRAGMA user_version = 5; {delivery}"))
                .unwrap();
            // The inbox's copy committed, the database's rename did not.
            let inbox = connect(&inbox_path(&path), READER_CACHE_KIB).unwrap();
            inbox
                .execute_batch(&format!("{INBOX_SCHEMA} {delivery}"))
                .unwrap();
        }
        let (mut inbox, _writer, _reader) = open(&path).unwrap();
        let rows: i64 = inbox
            .conn
            .query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let next = runtime
            .block_on(inbox.insert_deliveries(&[DeliveryRow {
                endpoint: "sendcloud".to_owned(),
                provider: shipfeed_core::Provider::Sendcloud,
                received_at: DateTime::default(),
                headers: "[]".to_owned(),
                body: b"{}".to_vec(),
            }]))
            .unwrap();
        assert_eq!(next, [8], "the inbox continues the sequence");
    }

    #[test]
    fn a_hash_stored_by_an_earlier_build_is_made_again_from_the_stored_event() {
        use shipfeed_core::{doc_support::event, Output, Provider, Status};

        let dir = tempfile::tempdir().unwrap();
        let (mut inbox, mut writer, _reader) = open(&dir.path().join("hash.db")).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let delivery = || DeliveryRow {
            endpoint: "sendcloud".to_owned(),
            provider: Provider::Sendcloud,
            received_at: DateTime::default(),
            headers: "[]".to_owned(),
            body: b"{}".to_vec(),
        };
        let seqs = runtime
            .block_on(inbox.insert_deliveries(&[delivery(), delivery()]))
            .unwrap();
        // The same event, received twice: only per-delivery fields differ.
        let carried = |received_at: &str| {
            let mut carried = event("sendcloud:e1", "2024-06-01T08:00:00Z", Status::InTransit);
            carried.received_at = DateTime::parse_from_rfc3339(received_at).unwrap().into();
            crate::project::outcome_rows(
                Provider::Sendcloud,
                Ok(vec![Output::Event(carried)]),
                None,
                &shipfeed_core::identity::Identity::default(),
            )
        };
        let project = |writer: &mut SqliteWriter, seq: i64, received_at: &str| {
            runtime.block_on(async {
                writer.begin().await.unwrap();
                let done = crate::project::project(writer, &[(seq, carried(received_at))], false)
                    .await
                    .unwrap();
                writer.execute("COMMIT").await.unwrap();
                done
            })
        };
        let first = project(&mut writer, seqs[0], "2024-06-01T09:00:00Z");
        assert_eq!(first[0].events, ["sendcloud:e1"]);
        // As an earlier build stored it: a hash made another way.
        writer
            .conn
            .execute("UPDATE events SET content_hash = 'ab12'", [])
            .unwrap();
        let again = project(&mut writer, seqs[1], "2024-06-02T09:00:00Z");
        assert_eq!(
            (again[0].duplicates.as_slice(), again[0].revised.as_slice()),
            (["sendcloud:e1".to_owned()].as_slice(), [].as_slice()),
            "the stored event is hashed again, and its content is the same"
        );
    }

    #[test]
    fn keys_of_one_parcel_written_differently_become_one_shipment_after_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v6.db");
        {
            let conn = connect(&path, READER_CACHE_KIB).unwrap();
            let inbox = connect(&inbox_path(&path), READER_CACHE_KIB).unwrap();
            inbox.execute_batch(INBOX_SCHEMA).unwrap();
            attach_inbox(&conn, &inbox_path(&path)).unwrap();
            for migration in MIGRATIONS.iter().take_while(|m| m.version <= 6) {
                conn.execute_batch(migration.sql).unwrap();
            }
            let event = |id: &str, tracking: &str, at: &str| {
                serde_json::json!({
                    "event_id": id, "provider": "sendcloud", "status": "in_transit",
                    "raw": {}, "occurred_at": at, "time_zone_known": true,
                    "received_at": at, "shipment": {"carrier": "postnl", "tracking_number": tracking},
                    "trigger": true
                })
                .to_string()
            };
            conn.execute_batch(
                "PRAGMA user_version = 6;
                 INSERT INTO inbox.deliveries(seq, endpoint, provider, received_at, headers, body)
                     VALUES (7, 'sendcloud', 'sendcloud', '2024-06-01T00:00:00Z', '[]', x'7B7D');
                 INSERT INTO projections(seq, projection) VALUES (7, '{}');
                 INSERT INTO shipments(shipment_key, shipment, state) VALUES
                     ('postnl:3s abc', '{}', '{}'), ('postnl:3SABC', '{}', '{}');",
            )
            .unwrap();
            for (id, key, tracking, at) in [
                (
                    "sendcloud:1",
                    "postnl:3s abc",
                    "3s abc",
                    "2024-06-01T08:00:00Z",
                ),
                (
                    "sendcloud:2",
                    "postnl:3SABC",
                    "3SABC",
                    "2024-06-01T09:00:00Z",
                ),
                ("sendcloud:3", "sendcloud:id:P1", "", "2024-06-01T07:00:00Z"),
            ] {
                conn.execute(
                    "INSERT INTO events(event_id, delivery_seq, shipment_key, occurred_at, body)
                     VALUES (?1, 7, ?2, ?3, ?4)",
                    params![id, key, at, event(id, tracking, at)],
                )
                .unwrap();
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = crate::Store::sqlite(&path).unwrap();
            // Writes run in order: once this is saved, the rebuild queued at start has run.
            store.save_cursor("test", 1).await.unwrap();
            let views = store.shipments(Some("postnl"), "3sabc").await.unwrap();
            let found: Vec<(&str, usize)> = views
                .iter()
                .map(|view| (view.key.as_str(), view.timeline.len()))
                .collect();
            assert_eq!(found, [("postnl:3SABC", 2)]);
            assert_eq!(
                store
                    .saved_cursor(crate::project::REBUILD_SHIPMENTS)
                    .await
                    .unwrap(),
                None
            );
        });
        let conn = connect(&path, READER_CACHE_KIB).unwrap();
        let keys: Vec<String> = conn
            .prepare("SELECT DISTINCT shipment_key FROM events ORDER BY 1")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            keys,
            ["postnl:3SABC", "sendcloud:id:P1"],
            "an id key is left as it was"
        );
    }

    #[test]
    fn migration_8_fills_the_stalled_columns_from_the_stored_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v7.db");
        {
            let conn = connect(&path, READER_CACHE_KIB).unwrap();
            let inbox = connect(&inbox_path(&path), READER_CACHE_KIB).unwrap();
            inbox.execute_batch(INBOX_SCHEMA).unwrap();
            attach_inbox(&conn, &inbox_path(&path)).unwrap();
            for migration in MIGRATIONS.iter().take_while(|m| m.version <= 7) {
                conn.execute_batch(migration.sql).unwrap();
            }
            let state = serde_json::json!({
                "status": "in_transit", "terminal": false,
                "status_event_id": "sendcloud:1", "status_occurred_at": "2024-06-01T08:00:00.250Z",
                "last_event_id": "sendcloud:1", "last_occurred_at": "2024-06-01T08:00:00.250Z",
                "event_count": 1
            });
            conn.execute_batch(
                "PRAGMA user_version = 7; DELETE FROM cursors WHERE name = 'rebuild:shipments';",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO shipments(shipment_key, carrier, tracking_number, shipment, state)
                 VALUES ('postnl:3SABC', 'postnl', '3SABC', '{}', ?1)",
                [state.to_string()],
            )
            .unwrap();
        }
        let (_inbox, writer, _reader) = open(&path).unwrap();
        let row: (String, String, i64) = writer
            .conn
            .query_row(
                "SELECT status, last_event_id, last_occurred_at FROM shipments",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let at = DateTime::parse_from_rfc3339("2024-06-01T08:00:00Z").unwrap();
        assert_eq!(
            row,
            (
                "in_transit".to_owned(),
                "sendcloud:1".to_owned(),
                at.timestamp()
            )
        );
        let version: i64 = writer
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.last().unwrap().version);
    }

    #[test]
    fn a_new_database_has_every_migration_and_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let (_inbox, writer, _reader) = open(&path).unwrap();
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(
            versions,
            (1..=12).collect::<Vec<_>>(),
            "one step each, in order"
        );
        let version: i64 = writer
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 12);
        let mut select = writer
            .conn
            .prepare(
                "SELECT name FROM main.sqlite_master WHERE type = 'table'
                 AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .unwrap();
        let tables: Vec<String> = select
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            tables,
            [
                "alerts",
                "aliases",
                "audit_log",
                "cursors",
                "drift",
                "drift_deliveries",
                "event_revisions",
                "events",
                "feed",
                "leases",
                "notices",
                "projections",
                "push_messages",
                "push_subscriptions",
                "shipments",
            ]
        );
    }
}
