//! PostgreSQL driver, for several `shipfeed serve` replicas on one database: schema and
//! migrations, SQL, and its durability specifics (the commit-order lock, the writer session's
//! settings).
//!
//! # Shape
//!
//! - **Two writer connections per store** (per replica), each driven by a writer task and
//!   re-opened when it was lost: the **inbox** writer appends deliveries, the **feed** writer
//!   does everything else (projections, cursors, leases), so an acknowledgement never waits
//!   behind a projection. Its session never has `synchronous_commit = off`, so a
//!   returned commit is in the server's WAL.
//! - **A pool of reader connections** (deadpool-postgres, at most 4) serves the feed and the
//!   lookups; a closed connection is replaced, so the store recovers by itself when the
//!   database restarts.
//! - **Migrations run on connect**, under a transaction-scoped advisory lock, so several
//!   processes starting at once migrate exactly once; the version is kept in the table
//!   `shipfeed_schema_version`.
//! - Tables are created in the connection's current schema: give a `search_path` in the URL
//!   (`?options=-csearch_path%3Dshipfeed`) to use another one. The schema must exist.
//!
//! # Why every write transaction takes one advisory lock
//!
//! The inbox and the feed are read from a cursor (`deliveries(after)` by the projector,
//! `events_after(after)` by subscriptions): a reader remembers the greatest `seq` it saw and
//! asks for the rows after it. The reasoning below is the same for both; each writer takes the
//! lock of its own table (the feed's is keyed on `events`, the table it ordered first). Sequence numbers are handed out when a row is *inserted*,
//! not when its transaction *commits*. Were two writers to run concurrently, transaction A
//! could take `seq` 10, transaction B `seq` 11, B commit first, a consumer read 11 and save
//! cursor 11, and then A commit: event 10 would never be delivered to that consumer.
//!
//! So every write transaction, before it inserts anything, takes
//! `pg_advisory_xact_lock(key)`, where `key` is derived from the OID of this store's
//! `deliveries` table (inbox writer) or `events` table (feed writer); stores sharing the
//! tables share the locks, deployments in other schemas do not. The
//! lock is held until the transaction ends, and PostgreSQL releases a transaction's locks only
//! after its commit is visible. Hence write transactions on the same tables run one at a time,
//! `seq` order equals commit order across every process, and what a reader's snapshot holds
//! is always a prefix of the feed in `seq` order (a rolled-back transaction leaves a hole in
//! the numbers that no later commit fills).
//!
//! More follows for free: `ON CONFLICT (event_id) DO NOTHING` never waits on a concurrent
//! insert of the same id, so replicas receiving the same deliveries in different orders
//! cannot deadlock; and each shipment's state is recomputed from the complete set of its
//! events, committed ones included, so replicas always agree on it.
//!
//! The price is that writers across replicas are serialized; group commit keeps that cheap (a
//! replica holds the lock for one transaction covering everything it has queued). The
//! sequences must keep PostgreSQL's default `CACHE 1`: with a per-session cache, sequence
//! values would no longer follow lock order. So that a frozen replica cannot hold the lock
//! for long, the writer sessions set `idle_in_transaction_session_timeout = 60s`; they also
//! turn `synchronous_commit` back on when the server has it off (a commit that returned must
//! survive a crash).
//!
//! # Text, not `jsonb`
//!
//! Events, states, shipment identities and headers are stored as JSON **text**, exactly as
//! serialized. A NUL character inside an authentic payload must not make a delivery
//! impossible to store: `jsonb` rejects the escape `\u0000`, whereas JSON text keeps it as
//! that escape. Plain text columns derived from payloads (keys, tracking numbers, event ids)
//! have NUL replaced by U+FFFD, as `text` cannot hold it.
//!
//! # No TLS
//!
//! This client is built without TLS: connect to PostgreSQL on 127.0.0.1, a Unix socket or a
//! private network. A URL asking for `sslmode=require` fails to connect rather than silently
//! falling back to plain text.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Client, Config, IsolationLevel, NoTls, Statement, Transaction};

use crate::driver::{
    order_number_key, AlertRow, AliasRow, AuditRow, CarrierScope, DeadLetterRow, DeliveryRow,
    DeliveryStatusRow, DriftRow, EventRow, FeedRow, ProjectionRow, PushControlRow, PushRow,
    ReadDriver, ShipmentLookup, ShipmentRow, ShipmentRows, StalledQuery, StalledRow, StoredEvent,
    StoredFeedRow, StoredRow, WriteDriver,
};
use crate::migrate::{self, Migration};
use crate::{Lease, StoreError};

/// How many reader connections one store opens at most.
const MAX_READERS: usize = 4;

/// Connect timeout used when the URL gives none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper 32 bits of shipfeed's advisory lock keys ("SHIP").
const LOCK_NAMESPACE: i64 = 0x5348_4950;

/// Advisory lock taken around migrations (database-wide: migrations are rare and short).
const MIGRATION_LOCK: i64 = LOCK_NAMESPACE << 32;

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: "
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
",
    },
    Migration {
        version: 2,
        sql: "
CREATE TABLE leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    epoch      bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
",
    },
    // The inbox (see the SQLite driver's migration 4).
    Migration {
        version: 3,
        sql: "
ALTER TABLE deliveries ADD COLUMN projection text;
UPDATE deliveries SET projection = json_build_object(
    'delivery_seq', seq,
    'events', COALESCE((SELECT json_agg(event_id ORDER BY seq) FROM events
                        WHERE delivery_seq = deliveries.seq), '[]'::json),
    'duplicates', '[]'::json,
    'notices', (SELECT count(*) FROM notices WHERE delivery_seq = deliveries.seq),
    'dead_letter', CASE WHEN dead_letter THEN COALESCE(error, '') END)::text;
INSERT INTO cursors (name, position) SELECT 'projector', COALESCE(max(seq), 0) FROM deliveries
    ON CONFLICT (name) DO NOTHING;
",
    },
    // The feed table, revisions and retractions (see the SQLite driver's migration 5). The
    // feed keeps the events' `seq`s; its identity continues after them.
    Migration {
        version: 4,
        sql: "
CREATE TABLE feed (
    seq          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    kind         text NOT NULL,
    event_id     text,
    revision     bigint,
    shipment_key text NOT NULL,
    body         text NOT NULL
);
INSERT INTO feed (seq, kind, event_id, revision, shipment_key, body)
    SELECT seq, 'event', event_id, 1, shipment_key, body FROM events ORDER BY seq;
SELECT setval(pg_get_serial_sequence('feed', 'seq'), COALESCE((SELECT max(seq) FROM feed), 0) + 1, false);
ALTER TABLE events ADD COLUMN revision bigint NOT NULL DEFAULT 1,
    ADD COLUMN content_hash text NOT NULL DEFAULT '',
    ADD COLUMN retracted boolean NOT NULL DEFAULT false;
CREATE INDEX events_by_delivery ON events (delivery_seq);
CREATE TABLE event_revisions (
    event_id     text NOT NULL,
    revision     bigint NOT NULL,
    delivery_seq bigint NOT NULL REFERENCES deliveries (seq),
    body         text NOT NULL,
    PRIMARY KEY (event_id, revision)
);
",
    },
    // One timeline per parcel (see the SQLite driver's migration 7).
    Migration {
        version: 5,
        sql: "
CREATE TABLE aliases (
    provider             text NOT NULL,
    provider_shipment_id text NOT NULL,
    shipment_key         text NOT NULL,
    carrier              text,
    tracking_number      text NOT NULL,
    delivery_seq         bigint NOT NULL,
    PRIMARY KEY (provider, provider_shipment_id)
);
UPDATE events SET shipment_key = CASE
    WHEN strpos(shipment_key, ':tracking:') > 0 THEN substr(shipment_key, 1, strpos(shipment_key, ':tracking:') + 9)
        || upper(replace(replace(substr(shipment_key, strpos(shipment_key, ':tracking:') + 10), ' ', ''), '-', ''))
    WHEN strpos(shipment_key, ':id:') > 0 OR shipment_key LIKE '%:unidentified' THEN shipment_key
    ELSE substr(shipment_key, 1, strpos(shipment_key, ':'))
        || upper(replace(replace(substr(shipment_key, strpos(shipment_key, ':') + 1), ' ', ''), '-', ''))
END;
UPDATE feed SET shipment_key = CASE
    WHEN strpos(shipment_key, ':tracking:') > 0 THEN substr(shipment_key, 1, strpos(shipment_key, ':tracking:') + 9)
        || upper(replace(replace(substr(shipment_key, strpos(shipment_key, ':tracking:') + 10), ' ', ''), '-', ''))
    WHEN strpos(shipment_key, ':id:') > 0 OR shipment_key LIKE '%:unidentified' THEN shipment_key
    ELSE substr(shipment_key, 1, strpos(shipment_key, ':'))
        || upper(replace(replace(substr(shipment_key, strpos(shipment_key, ':') + 1), ' ', ''), '-', ''))
END;
DELETE FROM shipments;
INSERT INTO cursors (name, position) VALUES ('rebuild:shipments', 0)
    ON CONFLICT (name) DO NOTHING;
",
    },
    // Stalled-shipment alerts (see the SQLite driver's migration 8).
    Migration {
        version: 6,
        sql: "
ALTER TABLE shipments ADD COLUMN status text, ADD COLUMN last_event_id text,
    ADD COLUMN last_occurred_at timestamptz;
UPDATE shipments SET status = state::jsonb ->> 'status',
    last_event_id = state::jsonb ->> 'last_event_id',
    last_occurred_at = (state::jsonb ->> 'last_occurred_at')::timestamptz;
CREATE INDEX shipments_stalled ON shipments (status, last_occurred_at);
CREATE TABLE alerts (
    alert_id      text PRIMARY KEY,
    shipment_key  text NOT NULL,
    rule          text NOT NULL,
    last_event_id text NOT NULL,
    open          boolean NOT NULL DEFAULT true,
    body          text NOT NULL,
    cleared       text
);
CREATE INDEX alerts_by_shipment ON alerts (shipment_key, last_event_id);
CREATE INDEX alerts_open ON alerts (shipment_key) WHERE open;
",
    },
    // Contract drift (see the SQLite driver's migration 9).
    Migration {
        version: 7,
        sql: "
CREATE TABLE drift (
    provider    text NOT NULL,
    kind        text NOT NULL,
    key         text NOT NULL,
    deliveries  bigint NOT NULL,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    sample_seq  bigint NOT NULL,
    PRIMARY KEY (provider, kind, key)
);
CREATE TABLE drift_deliveries (
    provider     text NOT NULL,
    fingerprint  text NOT NULL,
    delivery_seq bigint NOT NULL,
    PRIMARY KEY (provider, fingerprint)
);
",
    },
    // HTTP push subscriptions (see the SQLite driver's migration 10).
    Migration {
        version: 8,
        sql: "
CREATE TABLE push_messages (
    subscription    text NOT NULL,
    seq             bigint NOT NULL,
    webhook_id      text NOT NULL,
    ordering_keys   text NOT NULL,
    state           text NOT NULL,
    attempts        bigint NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    first_failed_at timestamptz NOT NULL,
    last_status     bigint,
    last_error      text,
    body            text NOT NULL,
    PRIMARY KEY (subscription, seq)
);
CREATE TABLE push_subscriptions (
    name          text PRIMARY KEY,
    status        text NOT NULL,
    reason        text,
    changed_at    timestamptz,
    failing_since timestamptz,
    version       bigint NOT NULL
);
",
    },
    // Shipments by the merchant's order number (see the SQLite driver's migration 11). A
    // stored shipment whose text jsonb cannot hold (an escaped NUL) keeps no order number.
    Migration {
        version: 9,
        sql: "
ALTER TABLE shipments ADD COLUMN order_number text;
UPDATE shipments SET order_number = NULLIF(lower(btrim(shipment::jsonb ->> 'order_number')), '')
    WHERE strpos(shipment, '\\u0000') = 0;
CREATE INDEX shipments_by_order ON shipments (order_number);
",
    },
    // The audit log (see the SQLite driver's migration 12). The feed writer appends to it,
    // under its commit-order lock, so ids follow commit order across replicas.
    Migration {
        version: 10,
        sql: "
CREATE TABLE audit_log (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL,
    actor   text NOT NULL,
    action  text NOT NULL,
    target  text NOT NULL,
    outcome text NOT NULL,
    detail  text NOT NULL
);
",
    },
];

fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |error| StoreError::database(context, error)
}

/// PostgreSQL `text` cannot hold NUL; payload-derived text must still be storable.
fn no_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Which of a store's two writers a connection is: each orders its own table's commits.
#[derive(Debug, Clone, Copy)]
enum WriterRole {
    /// Appends to `deliveries`.
    Inbox,
    /// Everything else: events, shipments, cursors, leases.
    Feed,
}

impl WriterRole {
    /// The table whose `seq` order this writer's lock keeps equal to commit order.
    fn ordered_table(self) -> &'static str {
        match self {
            WriterRole::Inbox => "deliveries",
            WriterRole::Feed => "events",
        }
    }
}

/// Connects the inbox writer, the feed writer and the reader pool to `url`, after creating or
/// checking the schema.
pub(crate) async fn connect(url: &str) -> Result<(PgWriter, PgWriter, PgReader), StoreError> {
    let mut config: Config = url
        .parse()
        .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("shipfeed");
    }
    migrate(&mut open_client(&config).await?).await?;
    let mut inbox = PgWriter {
        config: config.clone(),
        role: WriterRole::Inbox,
        conn: None,
    };
    let mut feed = PgWriter {
        role: WriterRole::Feed,
        ..inbox.clone_unconnected()
    };
    // Connect the writers now, so that a broken setup fails here rather than on first use.
    inbox.conn().await?;
    feed.conn().await?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(MAX_READERS)
        .build()
        .map_err(|e| StoreError::internal(format!("build the reader pool: {e}")))?;
    let reader = PgReader(pool);
    reader.ping().await?;
    Ok((inbox, feed, reader))
}

async fn open_client(config: &Config) -> Result<Client, StoreError> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(pg("connect to PostgreSQL"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "postgres connection closed");
        }
    });
    Ok(client)
}

/// Creates or upgrades the schema, once, whatever the number of processes starting at once.
async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(pg("start the migration"))?;
    match migrate_in(&tx).await {
        Ok(()) => tx.commit().await.map_err(pg("commit the migration")),
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
        .map_err(pg("set the migration lock timeout"))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1::bigint)",
        &[&MIGRATION_LOCK],
    )
    .await
    .map_err(pg("take the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS shipfeed_schema_version (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(pg("create the schema version table"))?;
    let version: Option<i32> = tx
        .query_one("SELECT max(version) FROM shipfeed_schema_version", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(pg("read the schema version"))?;
    for migration in migrate::pending(version.unwrap_or(0).into(), MIGRATIONS)? {
        tx.batch_execute(migration.sql)
            .await
            .map_err(pg("migrate the schema"))?;
        let version = i32::try_from(migration.version)
            .map_err(|_| StoreError::internal("schema version out of range"))?;
        tx.execute(
            "INSERT INTO shipfeed_schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(pg("record the schema version"))?;
        tracing::info!(version, "migrated the shipfeed schema");
    }
    Ok(())
}

/// The statements the writer runs, prepared once per connection. Those of the projection take
/// arrays (`unnest`, `= ANY`): one round trip per table and batch, not per row.
struct Statements {
    lock: Statement,
    insert_deliveries: Statement,
    set_projections: Statement,
    stored_events: Statement,
    owned_events: Statement,
    insert_events: Statement,
    keep_revision: Statement,
    revise_event: Statement,
    retract_event: Statement,
    append_feed: Statement,
    shipment_events: Statement,
    shipment_states: Statement,
    delete_shipment: Statement,
    insert_notices: Statement,
    upsert_shipments: Statement,
    aliases: Statement,
    upsert_aliases: Statement,
    shipment_keys: Statement,
    saved_cursor: Statement,
    save_cursor: Statement,
    lease: Statement,
    put_lease: Statement,
    stalled: Statement,
    insert_alerts: Statement,
    open_alerts: Statement,
    clear_alerts: Statement,
    drift_keys: Statement,
    drift_fingerprints: Statement,
    record_drift: Statement,
    record_drift_deliveries: Statement,
}

/// The columns of [`StoredEvent`], from `events`; `$2` is the hash prefix of this build.
const STORED_EVENT: &str = "SELECT event_id, revision, delivery_seq, shipment_key, content_hash,
    CASE WHEN substr(content_hash, 1, length($2)) = $2 THEN NULL ELSE body END, retracted
    FROM events";

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, StoreError> {
        let prepare = |sql: String| async move {
            client
                .prepare(&sql)
                .await
                .map_err(pg("prepare a statement"))
        };
        Ok(Statements {
            lock: prepare("SELECT pg_advisory_xact_lock($1::bigint)".into()).await?,
            // Rows are inserted in the order of the arrays, so identities follow it.
            insert_deliveries: prepare(
                "INSERT INTO deliveries (endpoint, provider, received_at, headers, body)
                 SELECT e, p, r, h, b
                 FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::bytea[])
                     WITH ORDINALITY AS d(e, p, r, h, b, n)
                 ORDER BY n RETURNING seq"
                    .into(),
            )
            .await?,
            set_projections: prepare(
                "UPDATE deliveries AS d
                 SET dead_letter = p.dead, error = p.error, projection = p.projection
                 FROM unnest($1::bigint[], $2::boolean[], $3::text[], $4::text[])
                     AS p(seq, dead, error, projection)
                 WHERE d.seq = p.seq"
                    .into(),
            )
            .await?,
            stored_events: prepare(format!("{STORED_EVENT} WHERE event_id = ANY($1)")).await?,
            owned_events: prepare(format!(
                "{STORED_EVENT} WHERE delivery_seq = ANY($1) AND NOT retracted ORDER BY seq"
            ))
            .await?,
            insert_events: prepare(
                "INSERT INTO events (event_id, delivery_seq, shipment_key, occurred_at, status, body, content_hash)
                 SELECT i, d, k, o, s, b, h
                 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[],
                             $6::text[], $7::text[])
                     WITH ORDINALITY AS e(i, d, k, o, s, b, h, n)
                 ORDER BY n"
                    .into(),
            )
            .await?,
            keep_revision: prepare(
                "INSERT INTO event_revisions (event_id, revision, delivery_seq, body)
                 SELECT event_id, revision, delivery_seq, body FROM events WHERE event_id = $1
                 ON CONFLICT DO NOTHING"
                    .into(),
            )
            .await?,
            revise_event: prepare(
                "UPDATE events SET delivery_seq = $2, shipment_key = $3, occurred_at = $4,
                     status = $5, body = $6, content_hash = $7, revision = $8, retracted = false
                 WHERE event_id = $1"
                    .into(),
            )
            .await?,
            retract_event: prepare(
                "UPDATE events SET retracted = true WHERE event_id = $1".into(),
            )
            .await?,
            append_feed: prepare(
                "INSERT INTO feed (kind, event_id, revision, shipment_key, body)
                 SELECT k, e, r, s, b
                 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[])
                     WITH ORDINALITY AS f(k, e, r, s, b, n)
                 ORDER BY n"
                    .into(),
            )
            .await?,
            shipment_events: prepare(
                "SELECT shipment_key, body FROM events
                 WHERE shipment_key = ANY($1) AND NOT retracted"
                    .into(),
            )
            .await?,
            shipment_states: prepare(
                "SELECT shipment_key, state FROM shipments WHERE shipment_key = ANY($1)".into(),
            )
            .await?,
            delete_shipment: prepare("DELETE FROM shipments WHERE shipment_key = $1".into())
                .await?,
            insert_notices: prepare(
                "INSERT INTO notices (delivery_seq, body)
                 SELECT d, b FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS x(d, b, n)
                 ORDER BY n"
                    .into(),
            )
            .await?,
            upsert_shipments: prepare(
                "INSERT INTO shipments (shipment_key, carrier, tracking_number, shipment, state,
                                        status, last_event_id, last_occurred_at, order_number)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                      $6::text[], $7::text[], $8::timestamptz[], $9::text[])
                 ON CONFLICT (shipment_key) DO UPDATE SET carrier = excluded.carrier,
                     tracking_number = excluded.tracking_number, shipment = excluded.shipment,
                     order_number = excluded.order_number,
                     state = excluded.state, status = excluded.status,
                     last_event_id = excluded.last_event_id,
                     last_occurred_at = excluded.last_occurred_at, updated_at = now()"
                    .into(),
            )
            .await?,
            aliases: prepare(
                "SELECT a.provider, a.provider_shipment_id, a.shipment_key, a.carrier,
                        a.tracking_number, a.delivery_seq
                 FROM aliases a JOIN unnest($1::text[], $2::text[]) AS k(provider, id)
                     ON a.provider = k.provider AND a.provider_shipment_id = k.id"
                    .into(),
            )
            .await?,
            upsert_aliases: prepare(
                "INSERT INTO aliases (provider, provider_shipment_id, shipment_key, carrier,
                                      tracking_number, delivery_seq)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                      $6::bigint[])
                 ON CONFLICT (provider, provider_shipment_id) DO UPDATE
                 SET shipment_key = excluded.shipment_key, carrier = excluded.carrier,
                     tracking_number = excluded.tracking_number,
                     delivery_seq = excluded.delivery_seq"
                    .into(),
            )
            .await?,
            shipment_keys: prepare(
                "SELECT DISTINCT shipment_key FROM events WHERE NOT retracted".into(),
            )
            .await?,
            saved_cursor: prepare("SELECT position FROM cursors WHERE name = $1".into()).await?,
            save_cursor: prepare(
                "INSERT INTO cursors (name, position) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position"
                    .into(),
            )
            .await?,
            lease: prepare(
                "SELECT holder, epoch, expires_at FROM leases WHERE name = $1".into(),
            )
            .await?,
            put_lease: prepare(
                "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                     epoch = excluded.epoch, expires_at = excluded.expires_at"
                    .into(),
            )
            .await?,
            stalled: prepare(
                "SELECT s.shipment_key, s.shipment, s.state FROM shipments s
                 WHERE s.status = $1 AND s.last_occurred_at <= $2
                   AND (CASE WHEN $3::text IS NULL
                        THEN s.carrier IS NULL OR s.carrier <> ALL($4::text[])
                        ELSE s.carrier = $3 END)
                   AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.shipment_key = s.shipment_key
                                   AND a.last_event_id = s.last_event_id AND a.rule = $5)
                 ORDER BY s.last_occurred_at, s.shipment_key LIMIT $6"
                    .into(),
            )
            .await?,
            insert_alerts: prepare(
                "INSERT INTO alerts (alert_id, shipment_key, rule, last_event_id, body)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                 ON CONFLICT (alert_id) DO NOTHING RETURNING alert_id"
                    .into(),
            )
            .await?,
            open_alerts: prepare(
                "SELECT body FROM alerts WHERE shipment_key = ANY($1) AND open ORDER BY alert_id"
                    .into(),
            )
            .await?,
            clear_alerts: prepare(
                "UPDATE alerts AS a SET open = false, cleared = c.body
                 FROM unnest($1::text[], $2::text[]) AS c(id, body) WHERE a.alert_id = c.id"
                    .into(),
            )
            .await?,
            // Contract drift, at every batch that carries some.
            drift_keys: prepare(
                "SELECT provider, kind, key FROM drift WHERE provider = ANY($1::text[])".into(),
            )
            .await?,
            drift_fingerprints: prepare(
                "SELECT d.provider, d.fingerprint FROM drift_deliveries d
                 JOIN unnest($1::text[], $2::text[]) AS f(provider, fingerprint)
                   ON d.provider = f.provider AND d.fingerprint = f.fingerprint"
                    .into(),
            )
            .await?,
            record_drift: prepare(
                "INSERT INTO drift (provider, kind, key, deliveries, first_seen, last_seen,
                                    sample_seq)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[],
                                      $5::timestamptz[], $6::timestamptz[], $7::bigint[])
                 ON CONFLICT (provider, kind, key) DO UPDATE
                 SET deliveries = drift.deliveries + excluded.deliveries,
                     last_seen = excluded.last_seen"
                    .into(),
            )
            .await?,
            record_drift_deliveries: prepare(
                "INSERT INTO drift_deliveries (provider, fingerprint, delivery_seq)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
                 ON CONFLICT DO NOTHING"
                    .into(),
            )
            .await?,
        })
    }
}

/// Payload-derived texts as a text array (NUL replaced: see [`no_nul`]).
fn text_array<'a>(values: impl Iterator<Item = &'a str>) -> Vec<Cow<'a, str>> {
    values.map(no_nul).collect()
}

/// Borrows each text of an array built by [`text_array`], as the client binds them.
fn as_strs<'a>(values: &'a [Cow<'_, str>]) -> Vec<&'a str> {
    values.iter().map(AsRef::as_ref).collect()
}

fn stored_events(
    rows: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
) -> Result<Vec<StoredEvent>, StoreError> {
    rows.and_then(|rows| {
        rows.iter()
            .map(|row| {
                Ok(StoredEvent {
                    event_id: row.try_get(0)?,
                    revision: row.try_get(1)?,
                    delivery_seq: row.try_get(2)?,
                    shipment_key: row.try_get(3)?,
                    content_hash: row.try_get(4)?,
                    body: row.try_get(5)?,
                    retracted: row.try_get(6)?,
                })
            })
            .collect()
    })
    .map_err(pg("read events"))
}

/// `(key, text)` from the first two columns of every row.
fn keyed_texts(
    rows: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
    what: &'static str,
) -> Result<Vec<(String, String)>, StoreError> {
    rows.and_then(|rows| {
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    })
    .map_err(pg(what))
}

/// The writer's connection: its client, its statements, and the key of the write lock.
struct WriterConn {
    client: Client,
    statements: Statements,
    lock_key: i64,
}

/// One of the store's writers: one connection, re-opened when it was lost.
pub(crate) struct PgWriter {
    config: Config,
    role: WriterRole,
    conn: Option<WriterConn>,
}

impl PgWriter {
    fn clone_unconnected(&self) -> Self {
        PgWriter {
            config: self.config.clone(),
            role: self.role,
            conn: None,
        }
    }

    /// The open connection, connecting again when needed.
    async fn conn(&mut self) -> Result<&mut WriterConn, StoreError> {
        if self
            .conn
            .as_ref()
            .is_some_and(|conn| conn.client.is_closed())
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            let client = open_client(&self.config).await?;
            prepare_writer_session(&client).await?;
            self.conn = Some(WriterConn {
                lock_key: write_lock_key(&client, self.role).await?,
                statements: Statements::prepare(&client).await?,
                client,
            });
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::internal("no writer connection"))
    }

    /// The connection of the transaction under way.
    fn open(&mut self) -> Result<(&Client, &Statements), StoreError> {
        self.conn
            .as_ref()
            .map(|conn| (&conn.client, &conn.statements))
            .ok_or_else(|| StoreError::internal("no writer connection"))
    }
}

/// The advisory lock key of a writer of these shipfeed tables: see the module docs for why.
async fn write_lock_key(client: &Client, role: WriterRole) -> Result<i64, StoreError> {
    let oid: i64 = client
        .query_one(
            "SELECT $1::text::regclass::oid::bigint",
            &[&role.ordered_table()],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(pg("find the table a writer orders"))?;
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
        .map_err(pg("configure the writer session"))?;
    let setting: String = client
        .query_one("SELECT current_setting('synchronous_commit')", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(pg("read synchronous_commit"))?;
    if setting == "off" {
        client
            .batch_execute("SET synchronous_commit = on")
            .await
            .map_err(pg("turn synchronous_commit on"))?;
    }
    Ok(())
}

impl WriteDriver for PgWriter {
    async fn begin(&mut self) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.client
            .batch_execute("BEGIN")
            .await
            .map_err(pg("begin a write transaction"))?;
        conn.client
            .execute(&conn.statements.lock, &[&conn.lock_key])
            .await
            .map_err(pg("take the write lock"))?;
        Ok(())
    }

    async fn execute(&mut self, sql: &'static str) -> Result<(), StoreError> {
        let (client, _) = self.open()?;
        client.batch_execute(sql).await.map_err(pg(sql))
    }

    async fn insert_deliveries(&mut self, rows: &[DeliveryRow]) -> Result<Vec<i64>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (client, st) = self.open()?;
        let endpoints = text_array(rows.iter().map(|row| row.endpoint.as_str()));
        let providers: Vec<&str> = rows.iter().map(|row| row.provider.as_str()).collect();
        let received: Vec<DateTime<Utc>> = rows.iter().map(|row| row.received_at).collect();
        let headers: Vec<&str> = rows.iter().map(|row| row.headers.as_str()).collect();
        let bodies: Vec<&[u8]> = rows.iter().map(|row| row.body.as_slice()).collect();
        let mut seqs: Vec<i64> = client
            .query(
                &st.insert_deliveries,
                &[
                    &as_strs(&endpoints),
                    &providers,
                    &received,
                    &headers,
                    &bodies,
                ],
            )
            .await
            .and_then(|rows| rows.iter().map(|row| row.try_get(0)).collect())
            .map_err(pg("store deliveries"))?;
        // Identities were drawn in the arrays' order, under the inbox's commit-order lock, and
        // RETURNING promises no order: sorted, they are the rows' in order.
        seqs.sort_unstable();
        Ok(seqs)
    }

    async fn set_projections(&mut self, rows: &[ProjectionRow<'_>]) -> Result<usize, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let (client, st) = self.open()?;
        let seqs: Vec<i64> = rows.iter().map(|row| row.seq).collect();
        let dead: Vec<bool> = rows.iter().map(|row| row.dead_letter.is_some()).collect();
        let errors: Vec<Option<Cow<'_, str>>> =
            rows.iter().map(|row| row.dead_letter.map(no_nul)).collect();
        let errors: Vec<Option<&str>> = errors.iter().map(Option::as_deref).collect();
        let projections: Vec<&str> = rows.iter().map(|row| row.projection).collect();
        let updated = client
            .execute(&st.set_projections, &[&seqs, &dead, &errors, &projections])
            .await
            .map_err(pg("record projections"))?;
        Ok(usize::try_from(updated).unwrap_or_default())
    }

    async fn stored_events(
        &mut self,
        event_ids: &[&str],
        hash_prefix: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let (client, st) = self.open()?;
        let ids = text_array(event_ids.iter().copied());
        stored_events(
            client
                .query(&st.stored_events, &[&as_strs(&ids), &hash_prefix])
                .await,
        )
    }

    async fn owned_events(
        &mut self,
        delivery_seqs: &[i64],
        hash_prefix: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (client, st) = self.open()?;
        stored_events(
            client
                .query(&st.owned_events, &[&delivery_seqs, &hash_prefix])
                .await,
        )
    }

    async fn insert_events(&mut self, rows: &[(i64, &EventRow)]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (client, st) = self.open()?;
        let ids = text_array(rows.iter().map(|(_, row)| row.event_id.as_str()));
        let seqs: Vec<i64> = rows.iter().map(|(seq, _)| *seq).collect();
        let keys = text_array(rows.iter().map(|(_, row)| row.shipment_key.as_str()));
        let occurred: Vec<DateTime<Utc>> = rows.iter().map(|(_, row)| row.occurred_at).collect();
        let statuses: Vec<Option<&str>> = rows.iter().map(|(_, row)| row.status).collect();
        let bodies: Vec<&str> = rows.iter().map(|(_, row)| row.body.as_str()).collect();
        let hashes: Vec<&str> = rows
            .iter()
            .map(|(_, row)| row.content_hash.as_str())
            .collect();
        client
            .execute(
                &st.insert_events,
                &[
                    &as_strs(&ids),
                    &seqs,
                    &as_strs(&keys),
                    &occurred,
                    &statuses,
                    &bodies,
                    &hashes,
                ],
            )
            .await
            .map_err(pg("store events"))?;
        Ok(())
    }

    async fn revise_event(
        &mut self,
        seq: i64,
        row: &EventRow,
        revision: i64,
    ) -> Result<(), StoreError> {
        let (client, st) = self.open()?;
        let event_id = no_nul(&row.event_id);
        client
            .execute(&st.keep_revision, &[&event_id])
            .await
            .map_err(pg("keep a revision"))?;
        client
            .execute(
                &st.revise_event,
                &[
                    &event_id,
                    &seq,
                    &no_nul(&row.shipment_key),
                    &row.occurred_at,
                    &row.status,
                    &row.body,
                    &row.content_hash,
                    &revision,
                ],
            )
            .await
            .map_err(pg("store a revision"))?;
        Ok(())
    }

    async fn retract_event(&mut self, event_id: &str) -> Result<(), StoreError> {
        let (client, st) = self.open()?;
        client
            .execute(&st.retract_event, &[&no_nul(event_id)])
            .await
            .map_err(pg("retract an event"))?;
        Ok(())
    }

    async fn append_feed(&mut self, rows: &[FeedRow<'_>]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (client, st) = self.open()?;
        let kinds: Vec<&str> = rows.iter().map(|row| row.kind).collect();
        let ids: Vec<Option<Cow<'_, str>>> = rows
            .iter()
            .map(|row| row.event_id.as_deref().map(no_nul))
            .collect();
        let ids: Vec<Option<&str>> = ids.iter().map(Option::as_deref).collect();
        let revisions: Vec<Option<i64>> = rows.iter().map(|row| row.revision).collect();
        let keys = text_array(rows.iter().map(|row| row.shipment_key.as_ref()));
        let bodies: Vec<&str> = rows.iter().map(|row| row.body.as_ref()).collect();
        client
            .execute(
                &st.append_feed,
                &[&kinds, &ids, &revisions, &as_strs(&keys), &bodies],
            )
            .await
            .map_err(pg("append to the feed"))?;
        Ok(())
    }

    async fn shipment_events(
        &mut self,
        keys: &[&str],
    ) -> Result<Vec<(String, String)>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (client, st) = self.open()?;
        let keys = text_array(keys.iter().copied());
        keyed_texts(
            client.query(&st.shipment_events, &[&as_strs(&keys)]).await,
            "read shipments' events",
        )
    }

    async fn shipment_states(
        &mut self,
        keys: &[&str],
    ) -> Result<Vec<(String, String)>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (client, st) = self.open()?;
        let keys = text_array(keys.iter().copied());
        keyed_texts(
            client.query(&st.shipment_states, &[&as_strs(&keys)]).await,
            "read shipment states",
        )
    }

    async fn aliases(&mut self, ids: &[(&str, &str)]) -> Result<Vec<AliasRow>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (client, st) = self.open()?;
        let providers: Vec<&str> = ids.iter().map(|(provider, _)| *provider).collect();
        let shipment_ids = text_array(ids.iter().map(|(_, id)| *id));
        client
            .query(&st.aliases, &[&providers, &as_strs(&shipment_ids)])
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|row| {
                        Ok(AliasRow {
                            provider: row.try_get(0)?,
                            provider_shipment_id: row.try_get(1)?,
                            shipment_key: row.try_get(2)?,
                            carrier: row.try_get(3)?,
                            tracking_number: row.try_get(4)?,
                            delivery_seq: row.try_get(5)?,
                        })
                    })
                    .collect()
            })
            .map_err(pg("read aliases"))
    }

    async fn upsert_aliases(&mut self, rows: &[AliasRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (client, st) = self.open()?;
        let providers: Vec<&str> = rows.iter().map(|row| row.provider.as_str()).collect();
        let ids = text_array(rows.iter().map(|row| row.provider_shipment_id.as_str()));
        let keys = text_array(rows.iter().map(|row| row.shipment_key.as_str()));
        let carriers: Vec<Option<Cow<'_, str>>> = rows
            .iter()
            .map(|row| row.carrier.as_deref().map(no_nul))
            .collect();
        let carriers: Vec<Option<&str>> = carriers.iter().map(Option::as_deref).collect();
        let numbers = text_array(rows.iter().map(|row| row.tracking_number.as_str()));
        let seqs: Vec<i64> = rows.iter().map(|row| row.delivery_seq).collect();
        client
            .execute(
                &st.upsert_aliases,
                &[
                    &providers,
                    &as_strs(&ids),
                    &as_strs(&keys),
                    &carriers,
                    &as_strs(&numbers),
                    &seqs,
                ],
            )
            .await
            .map_err(pg("store aliases"))?;
        Ok(())
    }

    async fn shipment_keys(&mut self) -> Result<Vec<String>, StoreError> {
        let (client, st) = self.open()?;
        bodies(client.query(&st.shipment_keys, &[]).await)
    }

    // The drift statements are not prepared ahead: only batches that show drift run them.
    async fn drift_keys(
        &mut self,
        providers: &[&str],
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let (client, st) = self.open()?;
        client
            .query(&st.drift_keys, &[&providers])
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
                    .collect()
            })
            .map_err(pg("read drift"))
    }

    async fn drift_fingerprints(
        &mut self,
        fingerprints: &[(&str, &str)],
    ) -> Result<Vec<(String, String)>, StoreError> {
        if fingerprints.is_empty() {
            return Ok(Vec::new());
        }
        let (client, st) = self.open()?;
        let providers: Vec<&str> = fingerprints.iter().map(|(provider, _)| *provider).collect();
        let hashes: Vec<&str> = fingerprints.iter().map(|(_, hash)| *hash).collect();
        client
            .query(&st.drift_fingerprints, &[&providers, &hashes])
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                    .collect()
            })
            .map_err(pg("read drift fingerprints"))
    }

    async fn record_drift(
        &mut self,
        rows: &[DriftRow],
        fingerprints: &[(&str, &str, i64)],
    ) -> Result<(), StoreError> {
        let (client, st) = self.open()?;
        if !rows.is_empty() {
            let providers: Vec<&str> = rows.iter().map(|row| row.provider.as_str()).collect();
            let kinds: Vec<&str> = rows.iter().map(|row| row.kind.as_str()).collect();
            let keys = text_array(rows.iter().map(|row| row.key.as_str()));
            let deliveries: Vec<i64> = rows.iter().map(|row| row.deliveries).collect();
            let first: Vec<DateTime<Utc>> = rows.iter().map(|row| row.first_seen).collect();
            let last: Vec<DateTime<Utc>> = rows.iter().map(|row| row.last_seen).collect();
            let samples: Vec<i64> = rows.iter().map(|row| row.sample_seq).collect();
            client
                .execute(
                    &st.record_drift,
                    &[
                        &providers,
                        &kinds,
                        &as_strs(&keys),
                        &deliveries,
                        &first,
                        &last,
                        &samples,
                    ],
                )
                .await
                .map_err(pg("store drift"))?;
        }
        if !fingerprints.is_empty() {
            let providers: Vec<&str> = fingerprints
                .iter()
                .map(|(provider, _, _)| *provider)
                .collect();
            let hashes: Vec<&str> = fingerprints.iter().map(|(_, hash, _)| *hash).collect();
            let seqs: Vec<i64> = fingerprints.iter().map(|(_, _, seq)| *seq).collect();
            client
                .execute(&st.record_drift_deliveries, &[&providers, &hashes, &seqs])
                .await
                .map_err(pg("store drift fingerprints"))?;
        }
        Ok(())
    }

    async fn saved_cursor(&mut self, name: &str) -> Result<Option<i64>, StoreError> {
        let (client, st) = self.open()?;
        client
            .query_opt(&st.saved_cursor, &[&no_nul(name)])
            .await
            .and_then(|row| row.map(|row| row.try_get(0)).transpose())
            .map_err(pg("read a cursor"))
    }

    async fn delete_shipment(&mut self, key: &str) -> Result<(), StoreError> {
        let (client, st) = self.open()?;
        client
            .execute(&st.delete_shipment, &[&no_nul(key)])
            .await
            .map_err(pg("remove a shipment"))?;
        Ok(())
    }

    async fn insert_notices(&mut self, rows: &[(i64, &str)]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (client, st) = self.open()?;
        let seqs: Vec<i64> = rows.iter().map(|(seq, _)| *seq).collect();
        let bodies: Vec<&str> = rows.iter().map(|(_, body)| *body).collect();
        client
            .execute(&st.insert_notices, &[&seqs, &bodies])
            .await
            .map_err(pg("store notices"))?;
        Ok(())
    }

    async fn upsert_shipments(&mut self, rows: &[ShipmentRow<'_>]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (client, st) = self.open()?;
        let keys = text_array(rows.iter().map(|row| row.key));
        let carriers: Vec<Option<Cow<'_, str>>> = rows
            .iter()
            .map(|row| row.carrier.as_deref().map(no_nul))
            .collect();
        let carriers: Vec<Option<&str>> = carriers.iter().map(Option::as_deref).collect();
        let numbers: Vec<Option<Cow<'_, str>>> = rows
            .iter()
            .map(|row| row.tracking_number.as_deref().map(no_nul))
            .collect();
        let numbers: Vec<Option<&str>> = numbers.iter().map(Option::as_deref).collect();
        let orders: Vec<Option<Cow<'_, str>>> = rows
            .iter()
            .map(|row| row.order_number.as_deref().map(no_nul))
            .collect();
        let orders: Vec<Option<&str>> = orders.iter().map(Option::as_deref).collect();
        let shipments: Vec<&str> = rows.iter().map(|row| row.shipment.as_str()).collect();
        let states: Vec<&str> = rows.iter().map(|row| row.state.as_str()).collect();
        let statuses: Vec<&str> = rows.iter().map(|row| row.status).collect();
        let last_ids = text_array(rows.iter().map(|row| row.last_event_id.as_str()));
        let last_at: Vec<DateTime<Utc>> = rows.iter().map(|row| row.last_occurred_at).collect();
        client
            .execute(
                &st.upsert_shipments,
                &[
                    &as_strs(&keys),
                    &carriers,
                    &numbers,
                    &shipments,
                    &states,
                    &statuses,
                    &as_strs(&last_ids),
                    &last_at,
                    &orders,
                ],
            )
            .await
            .map_err(pg("store shipment states"))?;
        Ok(())
    }

    async fn stalled(&mut self, query: &StalledQuery<'_>) -> Result<Vec<StalledRow>, StoreError> {
        let (client, st) = self.open()?;
        let (only, except): (Option<Cow<'_, str>>, Vec<Cow<'_, str>>) = match &query.carriers {
            CarrierScope::Only(carrier) => (Some(no_nul(carrier)), Vec::new()),
            CarrierScope::Except(carriers) => (None, text_array(carriers.iter().copied())),
        };
        client
            .query(
                &st.stalled,
                &[
                    &query.status,
                    &query.before,
                    &only.as_deref(),
                    &as_strs(&except),
                    &query.rule,
                    &query.limit,
                ],
            )
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|row| {
                        Ok(StalledRow {
                            key: row.try_get(0)?,
                            shipment: row.try_get(1)?,
                            state: row.try_get(2)?,
                        })
                    })
                    .collect()
            })
            .map_err(pg("find stalled shipments"))
    }

    async fn insert_alerts(&mut self, rows: &[AlertRow<'_>]) -> Result<Vec<String>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (client, st) = self.open()?;
        let ids = text_array(rows.iter().map(|row| row.alert_id));
        let keys = text_array(rows.iter().map(|row| row.shipment_key));
        let rules = text_array(rows.iter().map(|row| row.rule));
        let last_ids = text_array(rows.iter().map(|row| row.last_event_id));
        let bodies: Vec<&str> = rows.iter().map(|row| row.body).collect();
        bodies_of(
            client
                .query(
                    &st.insert_alerts,
                    &[
                        &as_strs(&ids),
                        &as_strs(&keys),
                        &as_strs(&rules),
                        &as_strs(&last_ids),
                        &bodies,
                    ],
                )
                .await,
            "store alerts",
        )
    }

    async fn open_alerts(&mut self, keys: &[&str]) -> Result<Vec<String>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (client, st) = self.open()?;
        let keys = text_array(keys.iter().copied());
        bodies_of(
            client.query(&st.open_alerts, &[&as_strs(&keys)]).await,
            "read open alerts",
        )
    }

    async fn clear_alerts(&mut self, rows: &[(&str, &str)]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (client, st) = self.open()?;
        let ids = text_array(rows.iter().map(|(id, _)| *id));
        let bodies: Vec<&str> = rows.iter().map(|(_, body)| *body).collect();
        client
            .execute(&st.clear_alerts, &[&as_strs(&ids), &bodies])
            .await
            .map_err(pg("clear alerts"))?;
        Ok(())
    }

    async fn save_cursor(&mut self, name: &str, position: i64) -> Result<(), StoreError> {
        let (client, st) = self.open()?;
        client
            .execute(&st.save_cursor, &[&no_nul(name), &position])
            .await
            .map_err(pg("save a cursor"))?;
        Ok(())
    }

    async fn lease(&mut self, name: &str) -> Result<Option<Lease>, StoreError> {
        let (client, st) = self.open()?;
        let row = client
            .query_opt(&st.lease, &[&no_nul(name)])
            .await
            .map_err(pg("read a lease"))?;
        row.map(|row| {
            Ok(Lease {
                name: name.to_owned(),
                holder: row.try_get(0)?,
                epoch: row.try_get(1)?,
                expires_at: row.try_get(2)?,
            })
        })
        .transpose()
        .map_err(pg("read a lease"))
    }

    async fn put_lease(&mut self, lease: &Lease) -> Result<(), StoreError> {
        let (client, st) = self.open()?;
        client
            .execute(
                &st.put_lease,
                &[
                    &no_nul(&lease.name),
                    &no_nul(&lease.holder),
                    &lease.epoch,
                    &lease.expires_at,
                ],
            )
            .await
            .map_err(pg("store a lease"))?;
        Ok(())
    }

    async fn upsert_push(&mut self, rows: &[PushRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (client, _) = self.open()?;
        let upsert = client
            .prepare(
                "INSERT INTO push_messages(subscription, seq, webhook_id, ordering_keys, state,
                     attempts, next_attempt_at, first_failed_at, last_status, last_error, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (subscription, seq) DO UPDATE SET webhook_id = excluded.webhook_id,
                     ordering_keys = excluded.ordering_keys, state = excluded.state,
                     attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,
                     first_failed_at = excluded.first_failed_at,
                     last_status = excluded.last_status, last_error = excluded.last_error,
                     body = excluded.body",
            )
            .await
            .map_err(pg("prepare a statement"))?;
        for row in rows {
            client
                .execute(
                    &upsert,
                    &[
                        &no_nul(&row.subscription),
                        &row.seq,
                        &no_nul(&row.webhook_id),
                        &no_nul(&row.ordering_keys),
                        &row.state,
                        &row.attempts,
                        &row.next_attempt_at,
                        &row.first_failed_at,
                        &row.last_status,
                        &row.last_error.as_deref().map(no_nul),
                        &no_nul(&row.body),
                    ],
                )
                .await
                .map_err(pg("store a push message"))?;
        }
        Ok(())
    }

    async fn delete_push(&mut self, subscription: &str, seqs: &[i64]) -> Result<(), StoreError> {
        let (client, _) = self.open()?;
        client
            .execute(
                "DELETE FROM push_messages WHERE subscription = $1 AND seq = ANY($2)",
                &[&no_nul(subscription), &seqs],
            )
            .await
            .map_err(pg("remove push messages"))?;
        Ok(())
    }

    async fn redeliver_push(
        &mut self,
        subscription: &str,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let (client, _) = self.open()?;
        client
            .execute(
                "UPDATE push_messages SET state = 'pending', attempts = 0, next_attempt_at = $3
                 WHERE subscription = $1 AND state = 'exhausted' AND first_failed_at >= $2",
                &[&no_nul(subscription), &since, &now],
            )
            .await
            .map_err(pg("redeliver push messages"))
    }

    async fn push_control(&mut self, name: &str) -> Result<Option<PushControlRow>, StoreError> {
        let (client, _) = self.open()?;
        client
            .query_opt(&format!("{PUSH_CONTROL} WHERE name = $1"), &[&no_nul(name)])
            .await
            .and_then(|row| row.as_ref().map(push_control_row).transpose())
            .map_err(pg("read a push subscription's state"))
    }

    async fn put_push_control(&mut self, row: &PushControlRow) -> Result<(), StoreError> {
        let (client, _) = self.open()?;
        client
            .execute(
                "INSERT INTO push_subscriptions(name, status, reason, changed_at, failing_since,
                     version) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (name) DO UPDATE SET status = excluded.status,
                     reason = excluded.reason, changed_at = excluded.changed_at,
                     failing_since = excluded.failing_since, version = excluded.version",
                &[
                    &no_nul(&row.name),
                    &row.status,
                    &row.reason.as_deref().map(no_nul),
                    &row.changed_at,
                    &row.failing_since,
                    &row.version,
                ],
            )
            .await
            .map_err(pg("store a push subscription's state"))?;
        Ok(())
    }

    async fn insert_audit(&mut self, row: &AuditRow) -> Result<i64, StoreError> {
        let (client, _) = self.open()?;
        client
            .query_one(
                "INSERT INTO audit_log(at, actor, action, target, outcome, detail)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &row.at,
                    &no_nul(&row.actor),
                    &row.action,
                    &no_nul(&row.target),
                    &row.outcome,
                    &no_nul(&row.detail),
                ],
            )
            .await
            .and_then(|row| row.try_get(0))
            .map_err(pg("record an audit entry"))
    }
}

/// The columns of [`PushControlRow`], from `push_subscriptions`.
const PUSH_CONTROL: &str =
    "SELECT name, status, reason, changed_at, failing_since, version FROM push_subscriptions";

/// The columns of [`PushRow`], from `push_messages`.
const PUSH_MESSAGE: &str = "SELECT subscription, seq, webhook_id, ordering_keys, state, attempts,
    next_attempt_at, first_failed_at, last_status, last_error, body FROM push_messages";

fn push_control_row(row: &tokio_postgres::Row) -> Result<PushControlRow, tokio_postgres::Error> {
    Ok(PushControlRow {
        name: row.try_get(0)?,
        status: row.try_get(1)?,
        reason: row.try_get(2)?,
        changed_at: row.try_get(3)?,
        failing_since: row.try_get(4)?,
        version: row.try_get(5)?,
    })
}

fn push_row(row: &tokio_postgres::Row) -> Result<PushRow, tokio_postgres::Error> {
    Ok(PushRow {
        subscription: row.try_get(0)?,
        seq: row.try_get(1)?,
        webhook_id: row.try_get(2)?,
        ordering_keys: row.try_get(3)?,
        state: row.try_get(4)?,
        attempts: row.try_get(5)?,
        next_attempt_at: row.try_get(6)?,
        first_failed_at: row.try_get(7)?,
        last_status: row.try_get(8)?,
        last_error: row.try_get(9)?,
        body: row.try_get(10)?,
    })
}

/// The columns of [`StoredRow`], from `deliveries`.
const STORED_DELIVERY: &str = "SELECT seq, endpoint, provider, received_at, headers, body,
    CASE WHEN dead_letter THEN COALESCE(error, '') END FROM deliveries";

fn stored_rows(
    rows: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
) -> Result<Vec<StoredRow>, StoreError> {
    rows.and_then(|rows| {
        rows.iter()
            .map(|row| {
                Ok(StoredRow {
                    seq: row.try_get(0)?,
                    endpoint: row.try_get(1)?,
                    provider: row.try_get(2)?,
                    received_at: row.try_get(3)?,
                    headers: row.try_get(4)?,
                    body: row.try_get(5)?,
                    error: row.try_get(6)?,
                })
            })
            .collect()
    })
    .map_err(pg("read deliveries"))
}

/// The first column of every row, as text.
fn bodies(
    rows: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
) -> Result<Vec<String>, StoreError> {
    bodies_of(rows, "read texts")
}

/// [`bodies`], failing with what the store was doing.
fn bodies_of(
    rows: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
    what: &'static str,
) -> Result<Vec<String>, StoreError> {
    rows.and_then(|rows| rows.iter().map(|row| row.try_get(0)).collect())
        .map_err(pg(what))
}

/// The readers' side of the store: a pool of connections.
pub(crate) struct PgReader(Pool);

impl PgReader {
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.0.get().await.map_err(|error| match error {
            deadpool_postgres::PoolError::Backend(error) => {
                StoreError::database("connect a reader to PostgreSQL", error)
            }
            other => StoreError::database("take a reader from the pool", other),
        })
    }
}

#[async_trait::async_trait]
impl ReadDriver for PgReader {
    async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<StoredFeedRow>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT seq, kind, revision, body, shipment_key FROM feed WHERE seq > $1
                 ORDER BY seq LIMIT $2",
            )
            .await
            .map_err(pg("prepare a statement"))?;
        client
            .query(&select, &[&after, &limit])
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|row| {
                        Ok(StoredFeedRow {
                            seq: row.try_get(0)?,
                            kind: row.try_get(1)?,
                            revision: row.try_get(2)?,
                            body: row.try_get(3)?,
                            shipment_key: row.try_get(4)?,
                        })
                    })
                    .collect()
            })
            .map_err(pg("read the feed"))
    }

    async fn revisions(&self, event_id: &str) -> Result<Vec<(i64, i64, String)>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT revision, delivery_seq, body FROM event_revisions WHERE event_id = $1
                 UNION ALL SELECT revision, delivery_seq, body FROM events WHERE event_id = $1
                 ORDER BY 1",
            )
            .await
            .map_err(pg("prepare a statement"))?;
        client
            .query(&select, &[&no_nul(event_id)])
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
                    .collect()
            })
            .map_err(pg("read an event's revisions"))
    }

    async fn feed_end(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        client
            .query_one("SELECT COALESCE(max(seq), 0)::bigint FROM feed", &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(pg("read the feed's end"))
    }

    async fn shipments(&self, lookup: &ShipmentLookup) -> Result<Vec<ShipmentRows>, StoreError> {
        let mut client = self.client().await?;
        // One snapshot for the states and the timelines, so that they agree.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg("start a read transaction"))?;
        let rows = match lookup {
            ShipmentLookup::Tracking { carrier, number } => {
                let select = tx
                    .prepare_cached(
                        "SELECT shipment_key, shipment, state FROM shipments
                         WHERE tracking_number = $1 AND ($2::text IS NULL OR carrier = $2)
                         ORDER BY shipment_key",
                    )
                    .await
                    .map_err(pg("prepare a statement"))?;
                tx.query(&select, &[&no_nul(number), &carrier.as_deref().map(no_nul)])
                    .await
            }
            ShipmentLookup::Order(number) => {
                let select = tx
                    .prepare_cached(
                        "SELECT shipment_key, shipment, state FROM shipments
                         WHERE order_number = $1 ORDER BY shipment_key",
                    )
                    .await
                    .map_err(pg("prepare a statement"))?;
                tx.query(&select, &[&no_nul(&order_number_key(number))])
                    .await
            }
        }
        .map_err(pg("read shipments"))?;
        let events = tx
            .prepare_cached("SELECT body, retracted FROM events WHERE shipment_key = $1")
            .await
            .map_err(pg("prepare a statement"))?;
        let mut shipments = Vec::with_capacity(rows.len());
        for row in rows {
            let key: String = row.try_get(0).map_err(pg("read shipments"))?;
            let events = tx
                .query(&events, &[&key])
                .await
                .and_then(|rows| {
                    rows.iter()
                        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                })
                .map_err(pg("read shipments"))?;
            shipments.push(ShipmentRows {
                shipment: row.try_get(1).map_err(pg("read shipments"))?,
                state: row.try_get(2).map_err(pg("read shipments"))?,
                key,
                events,
            });
        }
        tx.commit().await.map_err(pg("end a read transaction"))?;
        Ok(shipments)
    }

    async fn dead_letters(&self, after: i64, limit: i64) -> Result<Vec<DeadLetterRow>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT seq, endpoint, provider, received_at, COALESCE(error, '') FROM deliveries
                 WHERE dead_letter AND seq > $1 ORDER BY seq LIMIT $2",
            )
            .await
            .map_err(pg("prepare a statement"))?;
        let rows = client
            .query(&select, &[&after, &limit])
            .await
            .map_err(pg("read dead letters"))?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetterRow {
                    seq: row.try_get(0)?,
                    endpoint: row.try_get(1)?,
                    provider: row.try_get(2)?,
                    received_at: row.try_get::<_, DateTime<Utc>>(3)?,
                    error: row.try_get(4)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(pg("read dead letters"))
    }

    async fn dead_letter_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT endpoint, provider, count(*) FROM deliveries WHERE dead_letter
                 GROUP BY endpoint, provider",
                &[],
            )
            .await
            .map_err(pg("count dead letters"))?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(pg("count dead letters"))
    }

    async fn deliveries(
        &self,
        after: i64,
        limit: i64,
        dead_letters_only: bool,
    ) -> Result<Vec<StoredRow>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(&format!(
                "{STORED_DELIVERY} WHERE seq > $1 AND (NOT $3 OR dead_letter) ORDER BY seq LIMIT $2"
            ))
            .await
            .map_err(pg("prepare a statement"))?;
        stored_rows(
            client
                .query(&select, &[&after, &limit, &dead_letters_only])
                .await,
        )
    }

    async fn deliveries_at(&self, seqs: Vec<i64>) -> Result<Vec<StoredRow>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(&format!(
                "{STORED_DELIVERY} WHERE seq = ANY($1) ORDER BY seq"
            ))
            .await
            .map_err(pg("prepare a statement"))?;
        stored_rows(client.query(&select, &[&seqs]).await)
    }

    async fn delivery(&self, seq: i64) -> Result<Option<DeliveryStatusRow>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT endpoint, provider, received_at, projection FROM deliveries WHERE seq = $1",
            )
            .await
            .map_err(pg("prepare a statement"))?;
        let row = client
            .query_opt(&select, &[&seq])
            .await
            .map_err(pg("read a delivery"))?;
        row.map(|row| {
            Ok(DeliveryStatusRow {
                endpoint: row.try_get(0)?,
                provider: row.try_get(1)?,
                received_at: row.try_get(2)?,
                projection: row.try_get(3)?,
            })
        })
        .transpose()
        .map_err(pg("read a delivery"))
    }

    async fn inbox_after(&self, after: i64) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT (SELECT COALESCE(max(seq), 0)::bigint FROM deliveries),
                        (SELECT received_at FROM deliveries WHERE seq > $1 ORDER BY seq LIMIT 1)",
                &[&after],
            )
            .await
            .map_err(pg("read the inbox's end"))?;
        Ok((
            row.try_get(0).map_err(pg("read the inbox's end"))?,
            row.try_get(1).map_err(pg("read the inbox's end"))?,
        ))
    }

    async fn recent_arrivals(
        &self,
        limit: i64,
    ) -> Result<Vec<(i64, String, DateTime<Utc>)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT seq, endpoint, received_at FROM deliveries ORDER BY seq DESC LIMIT $1",
                &[&limit],
            )
            .await
            .map_err(pg("read the inbox's recent arrivals"))?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(pg("read the inbox's recent arrivals"))
    }

    async fn drift(&self, provider: Option<String>) -> Result<Vec<DriftRow>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                "SELECT provider, kind, key, deliveries, first_seen, last_seen, sample_seq
                 FROM drift WHERE $1::text IS NULL OR provider = $1",
                &[&provider],
            )
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|row| {
                        Ok(DriftRow {
                            provider: row.try_get(0)?,
                            kind: row.try_get(1)?,
                            key: row.try_get(2)?,
                            deliveries: row.try_get(3)?,
                            first_seen: row.try_get(4)?,
                            last_seen: row.try_get(5)?,
                            sample_seq: row.try_get(6)?,
                        })
                    })
                    .collect()
            })
            .map_err(pg("read drift"))
    }

    async fn push_messages(
        &self,
        subscription: &str,
        state: Option<&'static str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<PushRow>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(&format!(
                "{PUSH_MESSAGE} WHERE subscription = $1 AND ($2::text IS NULL OR state = $2)
                 AND seq > $3 ORDER BY seq LIMIT $4"
            ))
            .await
            .map_err(pg("prepare a statement"))?;
        client
            .query(&select, &[&no_nul(subscription), &state, &after, &limit])
            .await
            .and_then(|rows| rows.iter().map(push_row).collect())
            .map_err(pg("read push messages"))
    }

    async fn push_controls(&self, name: Option<&str>) -> Result<Vec<PushControlRow>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(&format!(
                "{PUSH_CONTROL} WHERE $1::text IS NULL OR name = $1 ORDER BY name"
            ))
            .await
            .map_err(pg("prepare a statement"))?;
        client
            .query(&select, &[&name.map(no_nul)])
            .await
            .and_then(|rows| rows.iter().map(push_control_row).collect())
            .map_err(pg("read push subscriptions' state"))
    }

    async fn cursor(&self, name: &str) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT position FROM cursors WHERE name = $1")
            .await
            .map_err(pg("prepare a statement"))?;
        client
            .query_opt(&select, &[&no_nul(name)])
            .await
            .and_then(|row| row.map(|row| row.try_get(0)).transpose())
            .map_err(pg("read a cursor"))
    }

    async fn open_alerts(&self, after: &str, limit: i64) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT body FROM alerts WHERE open AND alert_id > $1 ORDER BY alert_id LIMIT $2",
            )
            .await
            .map_err(pg("prepare a statement"))?;
        bodies_of(
            client.query(&select, &[&no_nul(after), &limit]).await,
            "read open alerts",
        )
    }

    async fn open_alert_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT rule, count(*) FROM alerts WHERE open GROUP BY rule",
                &[],
            )
            .await
            .map_err(pg("count open alerts"))?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(pg("count open alerts"))
    }

    async fn alert(&self, alert_id: &str) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT body FROM alerts WHERE alert_id = $1")
            .await
            .map_err(pg("prepare a statement"))?;
        let row = client
            .query_opt(&select, &[&no_nul(alert_id)])
            .await
            .map_err(pg("read an alert"))?;
        row.map(|row| row.try_get(0))
            .transpose()
            .map_err(pg("read an alert"))
    }

    async fn audit(&self, before: Option<i64>, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT id, at, actor, action, target, outcome, detail FROM audit_log
                 WHERE $1::bigint IS NULL OR id < $1 ORDER BY id DESC LIMIT $2",
            )
            .await
            .map_err(pg("prepare a statement"))?;
        client
            .query(&select, &[&before, &limit])
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|row| {
                        Ok(AuditRow {
                            id: row.try_get(0)?,
                            at: row.try_get(1)?,
                            actor: row.try_get(2)?,
                            action: row.try_get(3)?,
                            target: row.try_get(4)?,
                            outcome: row.try_get(5)?,
                            detail: row.try_get(6)?,
                        })
                    })
                    .collect()
            })
            .map_err(pg("read the audit log"))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .query_one("SELECT 1", &[])
            .await
            .map(|_| ())
            .map_err(pg("ping"))
    }
}
