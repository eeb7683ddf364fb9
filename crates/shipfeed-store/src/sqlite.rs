//! SQLite store: one writer thread that group-commits whatever is queued (one fsync for many
//! deliveries), WAL journal so readers never block it, `synchronous=FULL` so a commit that
//! returned survives a power cut, and WAL checkpoints on a thread of their own, so that the
//! writer only copies the last few pages when the WAL is to start over.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use shipfeed_core::{
    current_state, sort_timeline, Error, Headers, Output, Provider, RawDelivery, TrackingEvent,
};
use tokio::sync::oneshot;

use crate::{
    shipment_key, Committed, DeadLetter, FeedItem, Ingest, ShipmentView, Store, StoreError,
    StoredDelivery,
};

/// How many queued jobs one transaction takes at most.
const MAX_GROUP: usize = 512;

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
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
";

enum Work {
    Commit(Vec<(DeliveryRow, Outcome)>),
    Replace(i64, Outcome),
    SaveCursor(String, i64),
}

/// A raw delivery as the columns it is stored in.
struct DeliveryRow {
    endpoint: String,
    provider: &'static str,
    received_at: String,
    headers: String,
    body: Vec<u8>,
}

impl DeliveryRow {
    /// The delivery's row and its outcome's rows.
    fn new(ingest: Ingest) -> (Self, Outcome) {
        let headers: Vec<(&str, &str)> = ingest.delivery.headers.iter().collect();
        let headers = serde_json::to_string(&headers).unwrap_or_else(|_| "[]".into());
        let row = DeliveryRow {
            endpoint: ingest.endpoint,
            provider: ingest.provider.as_str(),
            received_at: time_text(ingest.delivery.received_at),
            headers,
            body: ingest.delivery.body,
        };
        (row, outcome_rows(ingest.provider, ingest.outcome))
    }
}

/// An adapter's outputs as rows, or the reason the delivery is a dead letter.
///
/// Built by the calling task, not the writer thread: JSON bodies, shipment keys and time texts
/// cost nothing serial there, while the writer is the one thread every delivery waits for.
type Outcome = Result<Rows, String>;

#[derive(Default)]
struct Rows {
    events: Vec<EventRow>,
    /// Notices as JSON.
    notices: Vec<String>,
}

struct EventRow {
    key: String,
    occurred_at: String,
    body: String,
    event: TrackingEvent,
}

fn outcome_rows(provider: Provider, outcome: Result<Vec<Output>, Error>) -> Outcome {
    let mut rows = Rows::default();
    for output in outcome.map_err(|error| error.to_string())? {
        match output {
            Output::Event(event) => rows.events.push(EventRow {
                key: shipment_key(provider, &event.shipment),
                occurred_at: time_text(event.occurred_at),
                body: serde_json::to_string(&event).unwrap_or_default(),
                event,
            }),
            Output::Notice(notice) => rows
                .notices
                .push(serde_json::to_string(&notice).unwrap_or_default()),
        }
    }
    Ok(rows)
}

enum Done {
    Commit(Vec<Committed>),
    Replace(Committed),
    SaveCursor,
}

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// The embedded default store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
    /// Dropped with the last clone, which stops the checkpoint thread.
    _checkpointer: Arc<mpsc::Sender<()>>,
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

fn db(error: rusqlite::Error) -> StoreError {
    StoreError::Database(error.to_string())
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(db)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;
         PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16000;",
    )
    .map_err(db)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating and migrating when needed) the database at `path`.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the file cannot be opened or migrated.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let mut writer = open(path)?;
        migrate(&mut writer)?;
        // Checkpoints run on their own thread, not inside the writer's commits.
        writer
            .execute_batch("PRAGMA wal_autocheckpoint = 0;")
            .map_err(db)?;
        let reader = open(path)?;
        let checkpointer = open(path)?;
        let (stop_checkpoints, stop) = mpsc::channel::<()>();
        let copied = Arc::new(AtomicBool::new(false));
        let copied_by_thread = Arc::clone(&copied);
        std::thread::Builder::new()
            .name("shipfeed-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, stop, copied_by_thread))
            .map_err(|e| StoreError::Database(format!("start checkpoint thread: {e}")))?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("shipfeed-sqlite-writer".into())
            .spawn(move || write_loop(writer, rx, &copied))
            .map_err(|e| StoreError::Database(format!("start writer thread: {e}")))?;
        Ok(SqliteStore {
            writer: tx,
            reader: Arc::new(Mutex::new(reader)),
            _checkpointer: Arc::new(stop_checkpoints),
        })
    }

    async fn submit(&self, work: Work) -> Result<Done, StoreError> {
        let (reply, done) = oneshot::channel();
        self.writer
            .send(Job { work, reply })
            .map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().map_err(|_| StoreError::Closed)?;
            query(&conn).map_err(db)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version != 0 {
        return Err(StoreError::Database(format!(
            "database schema version {version} is newer than this shipfeed ({SCHEMA_VERSION})"
        )));
    }
    let tx = conn.transaction().map_err(db)?;
    tx.execute_batch(SCHEMA).map_err(db)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(db)?;
    tx.commit().map_err(db)
}

fn write_loop(mut conn: Connection, jobs: mpsc::Receiver<Job>, checkpoint_copied: &AtomicBool) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let (replies, results) = match run_group(&mut conn, group) {
            Ok(done) => done,
            Err((replies, error)) => {
                let results = replies
                    .iter()
                    .map(|_| Err(StoreError::Database(error.clone())))
                    .collect();
                (replies, results)
            }
        };
        for (reply, result) in replies.into_iter().zip(results) {
            // The requester may have gone away (client disconnect); the data is stored anyway.
            let _ = reply.send(result);
        }
        finish_checkpoint(&conn, checkpoint_copied);
    }
}

type Replies = Vec<oneshot::Sender<Result<Done, StoreError>>>;

/// Commits a group of jobs in one transaction. The common case, every job succeeding, runs
/// without savepoints (each costs sub-journal writes); when a job fails, the transaction is
/// rolled back and the group runs again with one savepoint per job, so the failing job does
/// not sink the others.
#[allow(clippy::type_complexity)]
fn run_group(
    conn: &mut Connection,
    group: Vec<Job>,
) -> Result<(Replies, Vec<Result<Done, StoreError>>), (Replies, String)> {
    let (works, replies): (Vec<Work>, Replies) =
        group.into_iter().map(|job| (job.work, job.reply)).unzip();
    if let Ok(done) = run_all(conn, &works) {
        return Ok((replies, done.into_iter().map(Ok).collect()));
    }
    let mut tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => return Err((replies, e.to_string())),
    };
    let mut results = Vec::with_capacity(works.len());
    for work in &works {
        let result = tx.savepoint().map_err(db).and_then(|sp| {
            let done = apply(&sp, work)?;
            sp.commit().map_err(db)?;
            Ok(done)
        });
        results.push(result);
    }
    match tx.commit() {
        Ok(()) => Ok((replies, results)),
        Err(e) => Err((replies, e.to_string())),
    }
}

/// Every job in one transaction, all or nothing (dropping the transaction rolls it back).
fn run_all(conn: &mut Connection, works: &[Work]) -> Result<Vec<Done>, StoreError> {
    let tx = conn.transaction().map_err(db)?;
    let done = works
        .iter()
        .map(|work| apply(&tx, work))
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit().map_err(db)?;
    Ok(done)
}

fn apply(tx: &Connection, work: &Work) -> Result<Done, StoreError> {
    match work {
        Work::Commit(batch) => {
            let mut done = Vec::with_capacity(batch.len());
            for (delivery, outcome) in batch {
                let seq = insert_delivery(tx, delivery).map_err(db)?;
                done.push(record_outcome(tx, seq, outcome).map_err(db)?);
            }
            Ok(Done::Commit(done))
        }
        Work::Replace(seq, outcome) => {
            let seq = *seq;
            let exists = tx
                .prepare_cached("SELECT 1 FROM deliveries WHERE seq = ?1")
                .and_then(|mut statement| statement.exists([seq]))
                .map_err(db)?;
            if !exists {
                return Err(StoreError::Database(format!(
                    "no stored delivery with sequence number {seq}"
                )));
            }
            Ok(Done::Replace(record_outcome(tx, seq, outcome).map_err(db)?))
        }
        Work::SaveCursor(name, position) => {
            tx.execute(
                "INSERT INTO cursors(name, position) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET position = excluded.position",
                params![name, position],
            )
            .map_err(db)?;
            Ok(Done::SaveCursor)
        }
    }
}

/// RFC 3339 with as many fractional digits as needed, so a stored delivery's `received_at`
/// reads back exactly.
fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn insert_delivery(tx: &Connection, row: &DeliveryRow) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO deliveries(endpoint, provider, received_at, headers, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        row.endpoint,
        row.provider,
        row.received_at,
        row.headers,
        row.body,
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Inserts the outputs of delivery `seq` (events deduplicated by id), marks or clears its dead
/// letter, and recomputes every shipment it touched.
fn record_outcome(tx: &Connection, seq: i64, outcome: &Outcome) -> rusqlite::Result<Committed> {
    let mut committed = Committed {
        delivery_seq: seq,
        ..Committed::default()
    };
    let rows = match outcome {
        Ok(rows) => rows,
        Err(reason) => {
            tx.prepare_cached("UPDATE deliveries SET dead_letter = 1, error = ?2 WHERE seq = ?1")?
                .execute(params![seq, reason])?;
            committed.dead_letter = Some(reason.clone());
            return Ok(committed);
        }
    };
    tx.prepare_cached(
        "UPDATE deliveries SET dead_letter = 0, error = NULL WHERE seq = ?1 AND dead_letter = 1",
    )?
    .execute(params![seq])?;
    // The events this delivery added, per shipment.
    let mut added: BTreeMap<&str, Vec<&TrackingEvent>> = BTreeMap::new();
    for row in &rows.events {
        let inserted = tx
            .prepare_cached(
                "INSERT INTO events(event_id, delivery_seq, shipment_key, occurred_at, status, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(event_id) DO NOTHING",
            )?
            .execute(params![
                row.event.event_id.as_str(),
                seq,
                row.key,
                row.occurred_at,
                row.event.status.map(|s| s.as_str()),
                row.body,
            ])?;
        if inserted == 1 {
            committed.new_events += 1;
            committed
                .new_event_statuses
                .push(row.event.status.map_or("none", |s| s.as_str()).to_owned());
            added.entry(&row.key).or_default().push(&row.event);
        } else {
            committed.duplicates += 1;
        }
    }
    for body in &rows.notices {
        committed.notices += 1;
        tx.prepare_cached("INSERT INTO notices(delivery_seq, body) VALUES (?1, ?2)")?
            .execute(params![seq, body])?;
    }
    for (key, events) in added {
        refresh_shipment(tx, key, &events)?;
    }
    Ok(committed)
}

fn load_events(conn: &Connection, key: &str) -> rusqlite::Result<Vec<TrackingEvent>> {
    let mut statement = conn.prepare_cached("SELECT body FROM events WHERE shipment_key = ?1")?;
    let rows = statement.query_map([key], |row| row.get::<_, String>(0))?;
    let mut events = Vec::new();
    for body in rows {
        if let Ok(event) = serde_json::from_str::<TrackingEvent>(&body?) {
            events.push(event);
        }
    }
    Ok(events)
}

/// The state is recomputed from the whole set of the shipment's events, so arrival order can
/// never regress it. `added` are the events just inserted under `key`: when the shipment has no
/// others (its first delivery), they are that whole set and nothing is read back.
fn refresh_shipment(tx: &Connection, key: &str, added: &[&TrackingEvent]) -> rusqlite::Result<()> {
    let stored: i64 = tx
        .prepare_cached("SELECT count(*) FROM events WHERE shipment_key = ?1")?
        .query_row([key], |row| row.get(0))?;
    let mut events = if usize::try_from(stored).is_ok_and(|stored| stored == added.len()) {
        added.iter().map(|&event| event.clone()).collect()
    } else {
        load_events(tx, key)?
    };
    let Some(state) = current_state(&events) else {
        return Ok(());
    };
    sort_timeline(&mut events);
    let Some(latest) = events.last() else {
        return Ok(());
    };
    tx.prepare_cached(
        "INSERT INTO shipments(shipment_key, carrier, tracking_number, shipment, state) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(shipment_key) DO UPDATE SET carrier = excluded.carrier, tracking_number = excluded.tracking_number,
             shipment = excluded.shipment, state = excluded.state",
    )?
    .execute(params![
        key,
        latest.shipment.carrier,
        latest.shipment.tracking_number,
        serde_json::to_string(&latest.shipment).unwrap_or_default(),
        serde_json::to_string(&state).unwrap_or_default(),
    ])?;
    Ok(())
}

fn parse_time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn commit(&self, batch: Vec<Ingest>) -> Result<Vec<Committed>, StoreError> {
        let rows = batch.into_iter().map(DeliveryRow::new).collect();
        match self.submit(Work::Commit(rows)).await? {
            Done::Commit(done) => Ok(done),
            _ => Err(StoreError::Closed),
        }
    }

    async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<FeedItem>, StoreError> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = statement.query_map(params![after, limit as i64], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut items = Vec::new();
            for row in rows {
                let (seq, body) = row?;
                if let Ok(event) = serde_json::from_str(&body) {
                    items.push(FeedItem { seq, event });
                }
            }
            Ok(items)
        })
        .await
    }

    async fn shipments(
        &self,
        carrier: Option<&str>,
        tracking_number: &str,
    ) -> Result<Vec<ShipmentView>, StoreError> {
        let carrier = carrier.map(str::to_owned);
        let tracking = tracking_number.to_owned();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT shipment_key, shipment, state FROM shipments
                 WHERE tracking_number = ?1 AND (?2 IS NULL OR carrier = ?2) ORDER BY shipment_key",
            )?;
            let rows: Vec<(String, String, String)> = statement
                .query_map(params![tracking, carrier], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut views = Vec::new();
            for (key, shipment, state) in rows {
                let (Ok(shipment), Ok(state)) = (
                    serde_json::from_str(&shipment),
                    serde_json::from_str(&state),
                ) else {
                    continue;
                };
                let mut timeline = load_events(conn, &key)?;
                sort_timeline(&mut timeline);
                views.push(ShipmentView {
                    key,
                    shipment,
                    state,
                    timeline,
                });
            }
            Ok(views)
        })
        .await
    }

    async fn dead_letters(&self, after: i64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT seq, endpoint, provider, received_at, COALESCE(error, '') FROM deliveries
                 WHERE dead_letter = 1 AND seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = statement.query_map(params![after, limit as i64], |r| {
                Ok(DeadLetter {
                    delivery_seq: r.get(0)?,
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

    async fn deliveries(
        &self,
        after: i64,
        limit: usize,
        dead_letters_only: bool,
    ) -> Result<Vec<StoredDelivery>, StoreError> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT seq, endpoint, provider, received_at, headers, body, dead_letter FROM deliveries
                 WHERE seq > ?1 AND (?3 = 0 OR dead_letter = 1) ORDER BY seq LIMIT ?2",
            )?;
            let rows = statement.query_map(params![after, limit as i64, dead_letters_only], |r| {
                let headers: Vec<(String, String)> = serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default();
                Ok(StoredDelivery {
                    seq: r.get(0)?,
                    endpoint: r.get(1)?,
                    provider: r.get(2)?,
                    delivery: RawDelivery {
                        body: r.get(5)?,
                        headers: headers.into_iter().collect::<Headers>(),
                        received_at: parse_time(&r.get::<_, String>(3)?),
                    },
                    dead_letter: r.get(6)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn replace_outcome(
        &self,
        seq: i64,
        provider: Provider,
        outcome: Result<Vec<Output>, Error>,
    ) -> Result<Committed, StoreError> {
        let outcome = outcome_rows(provider, outcome);
        match self.submit(Work::Replace(seq, outcome)).await? {
            Done::Replace(done) => Ok(done),
            _ => Err(StoreError::Closed),
        }
    }

    async fn cursor(&self, name: &str) -> Result<i64, StoreError> {
        let name = name.to_owned();
        self.read(move |conn| {
            conn.query_row(
                "SELECT position FROM cursors WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map(Option::unwrap_or_default)
        })
        .await
    }

    async fn save_cursor(&self, name: &str, position: i64) -> Result<(), StoreError> {
        self.submit(Work::SaveCursor(name.to_owned(), position))
            .await
            .map(|_| ())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
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
        let conn = open(&path).unwrap();
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
}
