//! PostgreSQL store, for several `shipfeed serve` replicas on one database. The design,
//! and why every write transaction takes one advisory lock, is documented on [`PostgresStore`].

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use shipfeed_core::{
    current_state, sort_timeline, Error, Headers, Output, Provider, RawDelivery, TrackingEvent,
};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_postgres::{Client, Config, IsolationLevel, NoTls, Statement, Transaction};

use crate::{
    shipment_key, Committed, DeadLetter, FeedItem, Ingest, ShipmentView, Store, StoreError,
    StoredDelivery,
};

/// How many queued jobs one write transaction takes at most.
const MAX_GROUP: usize = 512;

/// How many reader connections one store opens at most.
const MAX_READERS: usize = 4;

/// How many jobs may wait for the writer before callers wait to enqueue (back-pressure).
const QUEUE: usize = 4096;

/// Connect timeout used when the URL gives none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper 32 bits of shipfeed's advisory lock keys ("SHIP").
const LOCK_NAMESPACE: i64 = 0x5348_4950;

/// Advisory lock taken around migrations (database-wide: migrations are rare and short).
const MIGRATION_LOCK: i64 = LOCK_NAMESPACE << 32;

const SCHEMA_VERSION: i32 = 1;

const SCHEMA_V1: &str = "
CREATE TABLE deliveries (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint    text NOT NULL,
    provider    text NOT NULL,
    received_at timestamptz NOT NULL,
    headers     text NOT NULL,
    body        bytea NOT NULL,
    dead_letter boolean NOT NULL DEFAULT false,
    error       text
);
CREATE INDEX deliveries_dead_letters ON deliveries (seq) WHERE dead_letter;
CREATE TABLE events (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     text NOT NULL UNIQUE,
    delivery_seq bigint NOT NULL REFERENCES deliveries (seq),
    shipment_key text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    status       text,
    body         text NOT NULL
);
CREATE INDEX events_by_shipment ON events (shipment_key);
CREATE TABLE shipments (
    shipment_key    text PRIMARY KEY,
    carrier         text,
    tracking_number text,
    shipment        text NOT NULL,
    state           text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shipments_by_tracking ON shipments (tracking_number);
CREATE TABLE notices (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_seq bigint NOT NULL REFERENCES deliveries (seq),
    body         text NOT NULL
);
CREATE TABLE cursors (
    name     text PRIMARY KEY,
    position bigint NOT NULL
);
";

fn pg(error: tokio_postgres::Error) -> StoreError {
    let mut text = format!("postgres: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    StoreError::Database(text)
}

/// PostgreSQL `text` cannot hold NUL; payload-derived text must still be storable.
fn no_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(format!("serialize: {e}")))
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Every statement the store runs, prepared once per connection.
struct Statements {
    lock: Statement,
    insert_delivery: Statement,
    set_outcome: Statement,
    insert_event: Statement,
    insert_notice: Statement,
    shipment_events: Statement,
    upsert_shipment: Statement,
    save_cursor: Statement,
    events_after: Statement,
    shipments: Statement,
    dead_letters: Statement,
    deliveries: Statement,
    cursor: Statement,
    ping: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, StoreError> {
        let prepare = |sql: &'static str| async move { client.prepare(sql).await.map_err(pg) };
        Ok(Statements {
            lock: prepare("SELECT pg_advisory_xact_lock($1::bigint)").await?,
            insert_delivery: prepare(
                "INSERT INTO deliveries (endpoint, provider, received_at, headers, body, dead_letter, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
            )
            .await?,
            set_outcome: prepare(
                "UPDATE deliveries SET dead_letter = $2, error = $3 WHERE seq = $1",
            )
            .await?,
            insert_event: prepare(
                "INSERT INTO events (event_id, delivery_seq, shipment_key, occurred_at, status, body)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
            )
            .await?,
            insert_notice: prepare("INSERT INTO notices (delivery_seq, body) VALUES ($1, $2)")
                .await?,
            shipment_events: prepare("SELECT body FROM events WHERE shipment_key = $1").await?,
            upsert_shipment: prepare(
                "INSERT INTO shipments (shipment_key, carrier, tracking_number, shipment, state)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (shipment_key) DO UPDATE SET carrier = excluded.carrier,
                     tracking_number = excluded.tracking_number, shipment = excluded.shipment,
                     state = excluded.state, updated_at = now()",
            )
            .await?,
            save_cursor: prepare(
                "INSERT INTO cursors (name, position) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            )
            .await?,
            events_after: prepare(
                "SELECT seq, body FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .await?,
            shipments: prepare(
                "SELECT shipment_key, shipment, state FROM shipments
                 WHERE tracking_number = $1 AND ($2::text IS NULL OR carrier = $2)
                 ORDER BY shipment_key",
            )
            .await?,
            dead_letters: prepare(
                "SELECT seq, endpoint, provider, received_at, COALESCE(error, '') FROM deliveries
                 WHERE dead_letter AND seq > $1 ORDER BY seq LIMIT $2",
            )
            .await?,
            deliveries: prepare(
                "SELECT seq, endpoint, provider, received_at, headers, body, dead_letter FROM deliveries
                 WHERE seq > $1 AND (NOT $3 OR dead_letter) ORDER BY seq LIMIT $2",
            )
            .await?,
            cursor: prepare("SELECT position FROM cursors WHERE name = $1").await?,
            ping: prepare("SELECT 1").await?,
        })
    }
}

/// One open connection and its prepared statements.
struct Conn {
    client: Client,
    statements: Statements,
}

/// Opens a connection (no TLS), drives it on a background task, prepares the statements.
async fn connect(config: &Config) -> Result<Conn, StoreError> {
    let client = open_client(config).await?;
    let statements = Statements::prepare(&client).await?;
    Ok(Conn { client, statements })
}

async fn open_client(config: &Config) -> Result<Client, StoreError> {
    let (client, connection) = config.connect(NoTls).await.map_err(pg)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "postgres connection closed");
        }
    });
    Ok(client)
}

/// Creates or checks the schema, once, whatever the number of processes starting at once.
async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg)?;
    match migrate_in(&tx).await {
        Ok(()) => tx.commit().await.map_err(pg),
        Err(error) => {
            // Explicitly, rather than on drop: the lock must not outlive a failed start.
            let _ = tx.rollback().await;
            Err(error)
        }
    }
}

async fn migrate_in(tx: &Transaction<'_>) -> Result<(), StoreError> {
    // Fail a start that cannot get the lock in time rather than hang.
    tx.batch_execute("SET LOCAL lock_timeout = '60s'")
        .await
        .map_err(pg)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1::bigint)",
        &[&MIGRATION_LOCK],
    )
    .await
    .map_err(pg)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS shipfeed_schema_version (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(pg)?;
    let version: Option<i32> = tx
        .query_one("SELECT max(version) FROM shipfeed_schema_version", &[])
        .await
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    match version {
        None => {
            tx.batch_execute(SCHEMA_V1).await.map_err(pg)?;
            tx.execute(
                "INSERT INTO shipfeed_schema_version (version) VALUES ($1)",
                &[&SCHEMA_VERSION],
            )
            .await
            .map_err(pg)?;
            tracing::info!(version = SCHEMA_VERSION, "created the shipfeed schema");
            Ok(())
        }
        Some(SCHEMA_VERSION) => Ok(()),
        Some(version) => Err(StoreError::Database(format!(
            "database schema version {version} is not the one this shipfeed knows ({SCHEMA_VERSION})"
        ))),
    }
}

enum Work {
    Commit(Vec<Ingest>),
    Replace(i64, Provider, Result<Vec<Output>, Error>),
    SaveCursor(String, i64),
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

/// The writer task's state: its connection (re-opened when closed) and the lock key.
struct Writer {
    config: Config,
    conn: Option<(Conn, i64)>,
}

impl Writer {
    /// The open connection and the write-lock key, connecting again when needed.
    async fn conn(&mut self) -> Result<&mut (Conn, i64), StoreError> {
        if self
            .conn
            .as_ref()
            .is_some_and(|(conn, _)| conn.client.is_closed())
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            let conn = connect(&self.config).await?;
            let key = write_lock_key(&conn.client).await?;
            prepare_writer_session(&conn.client).await?;
            self.conn = Some((conn, key));
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Database("no writer connection".into()))
    }

    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while jobs.recv_many(&mut group, MAX_GROUP).await > 0 {
            let (works, replies): (Vec<Work>, Vec<_>) =
                group.drain(..).map(|job| (job.work, job.reply)).unzip();
            let results = match self.conn().await {
                Ok((conn, key)) => run_group(conn, *key, works).await,
                Err(error) => Err(error),
            };
            let results = match results {
                Ok(results) => results,
                Err(error) => {
                    tracing::warn!(%error, jobs = replies.len(), "postgres write transaction failed");
                    let message = match error {
                        StoreError::Database(message) => message,
                        other => other.to_string(),
                    };
                    replies
                        .iter()
                        .map(|_| Err(StoreError::Database(message.clone())))
                        .collect()
                }
            };
            for (reply, result) in replies.into_iter().zip(results) {
                // The requester may have gone away (client disconnect); the data is stored anyway.
                let _ = reply.send(result);
            }
        }
    }
}

/// The advisory lock key of these shipfeed tables: see [`PostgresStore`] for why.
async fn write_lock_key(client: &Client) -> Result<i64, StoreError> {
    let oid: i64 = client
        .query_one("SELECT 'events'::regclass::oid::bigint", &[])
        .await
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    Ok(MIGRATION_LOCK | (oid & 0xFFFF_FFFF))
}

/// Session settings of the writer connection. A commit that returned must survive a crash,
/// so `synchronous_commit = off` is overridden. And a writer that stalls inside a transaction
/// (a frozen process, a network partition) must not hold the write lock of every replica for
/// long: the server ends such a session after a minute.
async fn prepare_writer_session(client: &Client) -> Result<(), StoreError> {
    client
        .batch_execute("SET idle_in_transaction_session_timeout = '60s'")
        .await
        .map_err(pg)?;
    let setting: String = client
        .query_one("SELECT current_setting('synchronous_commit')", &[])
        .await
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    if setting == "off" {
        client
            .batch_execute("SET synchronous_commit = on")
            .await
            .map_err(pg)?;
    }
    Ok(())
}

type JobResults = Vec<Result<Done, StoreError>>;

/// Runs a group of jobs in one transaction.
///
/// First without savepoints: hundreds of subtransactions in one transaction would overflow
/// PostgreSQL's per-backend subtransaction cache and slow down every snapshot taken meanwhile,
/// and each savepoint costs two round-trips. Jobs rarely fail (a replay of an unknown
/// delivery, say); when one does, the transaction is rolled back and the group runs again
/// with one savepoint per job, so that the failing job does not sink the others.
async fn run_group(conn: &mut Conn, key: i64, works: Vec<Work>) -> Result<JobResults, StoreError> {
    if let Some(results) = try_group(conn, key, &works, false).await? {
        return Ok(results);
    }
    try_group(conn, key, &works, true)
        .await?
        .ok_or_else(|| StoreError::Database("write group failed twice".into()))
}

/// One attempt at a group: `Ok(None)` when, without savepoints, a job failed (the transaction
/// is then rolled back and nothing is stored).
async fn try_group(
    conn: &mut Conn,
    key: i64,
    works: &[Work],
    savepoints: bool,
) -> Result<Option<JobResults>, StoreError> {
    let Conn { client, statements } = conn;
    let mut tx = client.transaction().await.map_err(pg)?;
    match run_jobs(&mut tx, statements, key, works, savepoints).await {
        Ok(Some(results)) => {
            tx.commit().await.map_err(pg)?;
            Ok(Some(results))
        }
        Ok(None) => {
            tx.rollback().await.map_err(pg)?;
            Ok(None)
        }
        Err(error) => {
            let _ = tx.rollback().await;
            Err(error)
        }
    }
}

async fn run_jobs(
    tx: &mut Transaction<'_>,
    statements: &Statements,
    key: i64,
    works: &[Work],
    savepoints: bool,
) -> Result<Option<JobResults>, StoreError> {
    tx.execute(&statements.lock, &[&key]).await.map_err(pg)?;
    let mut results = Vec::with_capacity(works.len());
    for work in works {
        if !savepoints {
            match apply(tx, statements, work).await {
                Ok(done) => results.push(Ok(done)),
                Err(_) => return Ok(None),
            }
            continue;
        }
        let savepoint = tx.savepoint("shipfeed_job").await.map_err(pg)?;
        match apply(&savepoint, statements, work).await {
            Ok(done) => {
                savepoint.commit().await.map_err(pg)?;
                results.push(Ok(done));
            }
            Err(error) => {
                savepoint.rollback().await.map_err(pg)?;
                results.push(Err(error));
            }
        }
    }
    Ok(Some(results))
}

async fn apply(tx: &Transaction<'_>, st: &Statements, work: &Work) -> Result<Done, StoreError> {
    match work {
        Work::Commit(batch) => {
            let mut done = Vec::with_capacity(batch.len());
            for ingest in batch {
                let seq = insert_delivery(tx, st, ingest).await?;
                done.push(record_outputs(tx, st, seq, ingest.provider, &ingest.outcome).await?);
            }
            Ok(Done::Commit(done))
        }
        &Work::Replace(seq, provider, ref outcome) => {
            let error = outcome
                .as_ref()
                .err()
                .map(|e| no_nul(&e.to_string()).into_owned());
            let updated = tx
                .execute(&st.set_outcome, &[&seq, &error.is_some(), &error])
                .await
                .map_err(pg)?;
            if updated == 0 {
                return Err(StoreError::Database(format!(
                    "no stored delivery with sequence number {seq}"
                )));
            }
            Ok(Done::Replace(
                record_outputs(tx, st, seq, provider, outcome).await?,
            ))
        }
        Work::SaveCursor(name, position) => {
            tx.execute(&st.save_cursor, &[&no_nul(name), position])
                .await
                .map_err(pg)?;
            Ok(Done::SaveCursor)
        }
    }
}

async fn insert_delivery(
    tx: &Transaction<'_>,
    st: &Statements,
    ingest: &Ingest,
) -> Result<i64, StoreError> {
    let headers: Vec<(&str, &str)> = ingest.delivery.headers.iter().collect();
    let headers = to_json(&headers)?;
    let error = ingest
        .outcome
        .as_ref()
        .err()
        .map(|e| no_nul(&e.to_string()).into_owned());
    tx.query_one(
        &st.insert_delivery,
        &[
            &no_nul(&ingest.endpoint),
            &ingest.provider.as_str(),
            &ingest.delivery.received_at,
            &headers,
            &ingest.delivery.body,
            &error.is_some(),
            &error,
        ],
    )
    .await
    .map_err(pg)?
    .try_get(0)
    .map_err(pg)
}

/// Inserts the outputs of delivery `seq` (events deduplicated by id) and recomputes every
/// shipment that got a new event. The dead-letter mark is already set by the caller.
async fn record_outputs(
    tx: &Transaction<'_>,
    st: &Statements,
    seq: i64,
    provider: Provider,
    outcome: &Result<Vec<Output>, Error>,
) -> Result<Committed, StoreError> {
    let mut committed = Committed {
        delivery_seq: seq,
        ..Committed::default()
    };
    let outputs = match outcome {
        Ok(outputs) => outputs,
        Err(error) => {
            committed.dead_letter = Some(error.to_string());
            return Ok(committed);
        }
    };
    let mut touched = BTreeSet::new();
    for output in outputs {
        match output {
            Output::Event(event) => {
                let key = no_nul(&shipment_key(provider, &event.shipment)).into_owned();
                let inserted = tx
                    .execute(
                        &st.insert_event,
                        &[
                            &no_nul(event.event_id.as_str()),
                            &seq,
                            &key,
                            &event.occurred_at,
                            &event.status.map(|s| s.as_str()),
                            &to_json(event)?,
                        ],
                    )
                    .await
                    .map_err(pg)?;
                if inserted == 1 {
                    committed.new_events += 1;
                    committed
                        .new_event_statuses
                        .push(event.status.map_or("none", |s| s.as_str()).to_owned());
                    touched.insert(key);
                } else {
                    committed.duplicates += 1;
                }
            }
            Output::Notice(notice) => {
                committed.notices += 1;
                tx.execute(&st.insert_notice, &[&seq, &to_json(notice)?])
                    .await
                    .map_err(pg)?;
            }
        }
    }
    for key in touched {
        refresh_shipment(tx, st, &key).await?;
    }
    Ok(committed)
}

async fn shipment_events(
    client: &impl tokio_postgres::GenericClient,
    st: &Statements,
    key: &str,
) -> Result<Vec<TrackingEvent>, StoreError> {
    let rows = client
        .query(&st.shipment_events, &[&key])
        .await
        .map_err(pg)?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let body: &str = row.try_get(0).map_err(pg)?;
        match serde_json::from_str::<TrackingEvent>(body) {
            Ok(event) => events.push(event),
            Err(error) => tracing::warn!(%error, key, "skipping an unreadable stored event"),
        }
    }
    Ok(events)
}

/// The state is recomputed from the whole set of the shipment's events (the write lock makes
/// that set complete), so arrival order can never regress it.
async fn refresh_shipment(
    tx: &Transaction<'_>,
    st: &Statements,
    key: &str,
) -> Result<(), StoreError> {
    let mut events = shipment_events(tx, st, key).await?;
    let Some(state) = current_state(&events) else {
        return Ok(());
    };
    sort_timeline(&mut events);
    let Some(latest) = events.last() else {
        return Ok(());
    };
    tx.execute(
        &st.upsert_shipment,
        &[
            &key,
            &latest.shipment.carrier.as_deref().map(no_nul),
            &latest.shipment.tracking_number.as_deref().map(no_nul),
            &to_json(&latest.shipment)?,
            &to_json(&state)?,
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// A small pool of reader connections.
struct Readers {
    config: Config,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

/// A reader connection on loan; it goes back to the pool when dropped, unless it is closed.
struct Lease<'a> {
    readers: &'a Readers,
    conn: Option<Conn>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Readers {
    async fn get(&self) -> Result<Lease<'_>, StoreError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let idle = {
            let mut idle = self.idle.lock().map_err(|_| StoreError::Closed)?;
            idle.retain(|conn| !conn.client.is_closed());
            idle.pop()
        };
        let conn = match idle {
            Some(conn) => conn,
            None => connect(&self.config).await?,
        };
        Ok(Lease {
            readers: self,
            conn: Some(conn),
            _permit: permit,
        })
    }
}

impl Lease<'_> {
    fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        self.conn.as_mut().ok_or(StoreError::Closed)
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.client.is_closed() {
                if let Ok(mut idle) = self.readers.idle.lock() {
                    idle.push(conn);
                }
            }
        }
    }
}

/// The PostgreSQL store: several processes (replicas) may share one database. Cheap to clone;
/// all clones share one writer task and one reader pool.
///
/// # Shape
///
/// - **One writer task per store** owns one connection and group-commits whatever `commit`,
///   `replace_outcome` and `save_cursor` calls are queued (up to 512) in **one
///   transaction**. Should one call fail, the group runs again with one savepoint per call,
///   so that the failing call does not sink the others.
///   A durable commit (WAL flush) then covers many deliveries instead of one round-trip and
///   fsync per request.
/// - **A small pool of reader connections** (at most 4) serves the feed and the
///   lookups; a closed connection is dropped and replaced on the next use, so the store recovers
///   by itself when the database restarts.
/// - **Migrations run on connect**, under a transaction-scoped advisory lock, so several
///   processes starting at once migrate exactly once; the version is kept in the table
///   `shipfeed_schema_version`.
/// - Tables are created in the connection's current schema: give a `search_path` in the URL
///   (`?options=-csearch_path%3Dshipfeed`) to use another one. The schema must exist.
///
/// # Why every write transaction takes one advisory lock
///
/// The feed is read with `events_after(cursor)`: a consumer remembers the greatest `seq` it saw
/// and asks for the events after it. Sequence numbers are handed out when a row is *inserted*,
/// not when its transaction *commits*. Were two writers to run concurrently, transaction A
/// could take `seq` 10, transaction B `seq` 11, B commit first, a consumer read 11 and save
/// cursor 11, and then A commit: event 10 would never be delivered to that consumer.
///
/// So every write transaction, before it inserts anything, takes
/// `pg_advisory_xact_lock(key)`, where `key` is derived from the OID of this store's `events`
/// table (stores sharing the tables share the lock; deployments in other schemas do not). The
/// lock is held until the transaction ends, and PostgreSQL releases a transaction's locks only
/// after its commit is visible. Hence write transactions on the same tables run one at a time,
/// `seq` order equals commit order across every process, and what a reader's snapshot holds
/// is always a prefix of the feed in `seq` order (a rolled-back transaction leaves a hole in
/// the numbers that no later commit fills).
///
/// More follows for free: `ON CONFLICT (event_id) DO NOTHING` never waits on a concurrent
/// insert of the same id, so replicas receiving the same deliveries in different orders
/// cannot deadlock; and each shipment's state is recomputed from the complete set of its
/// events, committed ones included, so replicas always agree on it.
///
/// The price is that writers across replicas are serialized; group commit keeps that cheap (a
/// replica holds the lock for one transaction covering everything it has queued). The
/// sequences must keep PostgreSQL's default `CACHE 1`: with a per-session cache, sequence
/// values would no longer follow lock order. So that a frozen replica cannot hold the lock
/// for long, the writer sessions set `idle_in_transaction_session_timeout = 60s`; they also
/// turn `synchronous_commit` back on when the server has it off (a commit that returned must
/// survive a crash).
///
/// # Text, not `jsonb`
///
/// Events, states, shipment identities and headers are stored as JSON **text**, exactly as
/// serialized. A NUL character inside an authentic payload must not make a delivery
/// impossible to store: `jsonb` rejects the escape `\u0000`, whereas JSON text keeps it as
/// that escape. Plain text columns derived from payloads (keys, tracking numbers, event ids)
/// have NUL replaced by U+FFFD, as `text` cannot hold it.
///
/// # No TLS
///
/// This client is built without TLS: connect to PostgreSQL on 127.0.0.1, a Unix socket or a
/// private network. A URL asking for `sslmode=require` fails to connect rather than silently
/// falling back to plain text.
#[derive(Clone)]
pub struct PostgresStore {
    writer: mpsc::Sender<Job>,
    readers: Arc<Readers>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`, TLS not supported),
    /// creates or checks the schema, and starts the writer task.
    ///
    /// A `search_path` given in the URL (`?options=-csearch_path%3Dshipfeed`) is honoured: the
    /// tables live in the first schema of the path, which must exist. Must be called within a
    /// Tokio runtime, which then runs the writer and the connections.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the URL is invalid, the database cannot be reached, or the
    /// schema cannot be created or is of an unknown version.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError::Database(format!("invalid PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("shipfeed");
        }
        {
            let mut client = open_client(&config).await?;
            migrate(&mut client).await?;
        }
        let mut writer = Writer {
            config: config.clone(),
            conn: None,
        };
        // Connect the writer now, so that a broken setup fails here rather than on first use.
        writer.conn().await?;
        let readers = Readers {
            config,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(MAX_READERS),
        };
        drop(readers.get().await?);
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer.run(rx));
        Ok(PostgresStore {
            writer: tx,
            readers: Arc::new(readers),
        })
    }

    async fn submit(&self, work: Work) -> Result<Done, StoreError> {
        let (reply, done) = oneshot::channel();
        self.writer
            .send(Job { work, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Option<T> {
    match serde_json::from_str(text) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(%error, what, "skipping an unreadable stored value");
            None
        }
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn commit(&self, batch: Vec<Ingest>) -> Result<Vec<Committed>, StoreError> {
        match self.submit(Work::Commit(batch)).await? {
            Done::Commit(done) => Ok(done),
            _ => Err(StoreError::Closed),
        }
    }

    async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<FeedItem>, StoreError> {
        let mut lease = self.readers.get().await?;
        let conn = lease.conn()?;
        let rows = conn
            .client
            .query(&conn.statements.events_after, &[&after, &sql_limit(limit)])
            .await
            .map_err(pg)?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.try_get(0).map_err(pg)?;
            let body: &str = row.try_get(1).map_err(pg)?;
            if let Some(event) = parse_json(body, "event") {
                items.push(FeedItem { seq, event });
            }
        }
        Ok(items)
    }

    async fn shipments(
        &self,
        carrier: Option<&str>,
        tracking_number: &str,
    ) -> Result<Vec<ShipmentView>, StoreError> {
        let mut lease = self.readers.get().await?;
        let Conn { client, statements } = lease.conn()?;
        // One snapshot for the states and the timelines, so that they agree.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let carrier = carrier.map(no_nul);
        let rows = tx
            .query(&statements.shipments, &[&no_nul(tracking_number), &carrier])
            .await
            .map_err(pg)?;
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            let key: String = row.try_get(0).map_err(pg)?;
            let (Some(shipment), Some(state)) = (
                parse_json(row.try_get(1).map_err(pg)?, "shipment"),
                parse_json(row.try_get(2).map_err(pg)?, "state"),
            ) else {
                continue;
            };
            let mut timeline = shipment_events(&tx, statements, &key).await?;
            sort_timeline(&mut timeline);
            views.push(ShipmentView {
                key,
                shipment,
                state,
                timeline,
            });
        }
        tx.commit().await.map_err(pg)?;
        Ok(views)
    }

    async fn dead_letters(&self, after: i64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let mut lease = self.readers.get().await?;
        let conn = lease.conn()?;
        let rows = conn
            .client
            .query(&conn.statements.dead_letters, &[&after, &sql_limit(limit)])
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    delivery_seq: row.try_get(0)?,
                    endpoint: row.try_get(1)?,
                    provider: row.try_get(2)?,
                    received_at: row.try_get(3)?,
                    error: row.try_get(4)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(pg)
    }

    async fn deliveries(
        &self,
        after: i64,
        limit: usize,
        dead_letters_only: bool,
    ) -> Result<Vec<StoredDelivery>, StoreError> {
        let mut lease = self.readers.get().await?;
        let conn = lease.conn()?;
        let rows = conn
            .client
            .query(
                &conn.statements.deliveries,
                &[&after, &sql_limit(limit), &dead_letters_only],
            )
            .await
            .map_err(pg)?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in rows {
            let headers: Vec<(String, String)> =
                parse_json(row.try_get(4).map_err(pg)?, "headers").unwrap_or_default();
            let received_at: DateTime<Utc> = row.try_get(3).map_err(pg)?;
            deliveries.push(StoredDelivery {
                seq: row.try_get(0).map_err(pg)?,
                endpoint: row.try_get(1).map_err(pg)?,
                provider: row.try_get(2).map_err(pg)?,
                delivery: RawDelivery {
                    body: row.try_get(5).map_err(pg)?,
                    headers: headers.into_iter().collect::<Headers>(),
                    received_at,
                },
                dead_letter: row.try_get(6).map_err(pg)?,
            });
        }
        Ok(deliveries)
    }

    async fn replace_outcome(
        &self,
        seq: i64,
        provider: Provider,
        outcome: Result<Vec<Output>, Error>,
    ) -> Result<Committed, StoreError> {
        match self.submit(Work::Replace(seq, provider, outcome)).await? {
            Done::Replace(done) => Ok(done),
            _ => Err(StoreError::Closed),
        }
    }

    async fn cursor(&self, name: &str) -> Result<i64, StoreError> {
        let mut lease = self.readers.get().await?;
        let conn = lease.conn()?;
        let row = conn
            .client
            .query_opt(&conn.statements.cursor, &[&no_nul(name)])
            .await
            .map_err(pg)?;
        match row {
            Some(row) => row.try_get(0).map_err(pg),
            None => Ok(0),
        }
    }

    async fn save_cursor(&self, name: &str, position: i64) -> Result<(), StoreError> {
        match self
            .submit(Work::SaveCursor(name.to_owned(), position))
            .await?
        {
            Done::SaveCursor => Ok(()),
            _ => Err(StoreError::Closed),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut lease = self.readers.get().await?;
        let conn = lease.conn()?;
        conn.client
            .query_one(&conn.statements.ping, &[])
            .await
            .map_err(pg)
            .map(|_| ())
    }
}
