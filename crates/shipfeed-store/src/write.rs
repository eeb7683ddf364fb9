//! The write path, once for every database: a queue of jobs, group commit with a savepoint
//! retry, the inbox's appends, and what a projected delivery's outcome does to the tables
//! (events deduplicated by id, notices, dead letters, the states of the shipments it touched),
//! fenced by the projector's lease.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use shipfeed_core::{
    current_state, sort_timeline, Error, Output, Provider, ShipmentState, TrackingEvent,
};
use tokio::sync::{mpsc, oneshot};

use crate::driver::{DeliveryRow, EventRow, FeedRow, ShipmentRow, WriteDriver};
use crate::{
    lease, shipment_key, Arrival, Lease, Projection, Retraction, ShipmentStateChange, StatusChange,
    StoreError,
};

/// How many queued jobs one transaction takes at most.
const MAX_GROUP: usize = 512;

/// How many jobs may wait for the writer before callers wait to enqueue (back-pressure).
pub(crate) const QUEUE: usize = 4096;

/// What a caller asks the writer to do.
pub(crate) enum Work {
    /// Raw deliveries into the inbox: the only work on the acknowledgement path.
    Append(Vec<DeliveryRow>),
    /// Projections of stored deliveries, written only while the lease (name, epoch) is
    /// still held, and with the cursor (name, position) moved in the same transaction.
    Project {
        lease: (String, i64),
        cursor: Option<(String, i64)>,
        items: Vec<(i64, Outcome)>,
        /// Projected before (replay): events they no longer yield are retracted.
        again: bool,
    },
    /// A cursor, saved only while the lease (name, epoch) is still held when given.
    SaveCursor(String, i64, Option<(String, i64)>),
    AcquireLease {
        name: String,
        holder: String,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        force: bool,
    },
    ReleaseLease {
        name: String,
        epoch: i64,
        now: DateTime<Utc>,
    },
}

impl Work {
    /// Acknowledgements wait on it: it goes to the inbox writer, never behind a projection.
    pub(crate) fn acknowledges(&self) -> bool {
        matches!(self, Work::Append(_))
    }
}

/// What the writer did.
pub(crate) enum Done {
    Append(Vec<i64>),
    Project(Vec<Projection>),
    SaveCursor,
    Lease(Option<Lease>),
    Released,
}

pub(crate) struct Job {
    pub(crate) work: Work,
    pub(crate) reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// An adapter's outputs as rows, or the reason the delivery is a dead letter.
///
/// Built by the calling task, not the writer: JSON bodies and shipment keys cost nothing serial
/// there, while the writer is the one task every delivery waits for.
pub(crate) type Outcome = Result<Rows, String>;

#[derive(Default)]
pub(crate) struct Rows {
    events: Vec<(EventRow, TrackingEvent)>,
    /// Notices as JSON.
    notices: Vec<String>,
}

/// The inbox row of an arrival.
pub(crate) fn delivery_row(arrival: Arrival) -> DeliveryRow {
    let headers: Vec<(&str, &str)> = arrival.delivery.headers.iter().collect();
    DeliveryRow {
        endpoint: arrival.endpoint,
        provider: arrival.provider,
        received_at: arrival.delivery.received_at,
        headers: to_json(&headers),
        body: arrival.delivery.body,
    }
}

/// The rows of an adapter's outputs, or the dead-letter reason.
pub(crate) fn outcome_rows(provider: Provider, outcome: Result<Vec<Output>, Error>) -> Outcome {
    let mut rows = Rows::default();
    for output in outcome.map_err(|error| error.to_string())? {
        match output {
            Output::Event(event) => rows.events.push((
                EventRow {
                    event_id: event.event_id.as_str().to_owned(),
                    shipment_key: shipment_key(provider, &event.shipment),
                    occurred_at: event.occurred_at,
                    status: event.status.map(|status| status.as_str()),
                    body: to_json(&event),
                    content_hash: content_hash(&event),
                },
                event,
            )),
            Output::Notice(notice) => rows.notices.push(to_json(&notice)),
        }
    }
    Ok(rows)
}

/// The model types serialize infallibly (plain structs, string keys).
fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The writer: takes every job queued while the previous transaction was committing and
/// commits them together (one flush to disk for many deliveries), until every sender is gone.
/// Each store runs two: the inbox writer, which only appends, and the feed writer, which does
/// the rest, so an acknowledgement never waits for a projection.
pub(crate) async fn write_loop(mut driver: impl WriteDriver, mut jobs: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while jobs.recv_many(&mut group, MAX_GROUP).await > 0 {
        commit_group(&mut driver, std::mem::take(&mut group)).await;
        driver.after_group().await;
    }
}

/// Runs `jobs` in one transaction and answers each.
async fn commit_group(driver: &mut impl WriteDriver, jobs: Vec<Job>) {
    let (works, replies): (Vec<Work>, Vec<_>) =
        jobs.into_iter().map(|job| (job.work, job.reply)).unzip();
    let results = match run_group(driver, &works).await {
        Ok(results) => results,
        Err(error) => {
            tracing::warn!(error = %shipfeed_core::error_chain(&error), jobs = works.len(), "write transaction failed");
            works.iter().map(|_| Err(error.clone())).collect()
        }
    };
    for (reply, result) in replies.into_iter().zip(results) {
        // The requester may have gone away (client disconnect); the data is stored anyway.
        let _ = reply.send(result);
    }
}

type JobResults = Vec<Result<Done, StoreError>>;

/// Runs a group of jobs in one transaction.
///
/// First without savepoints: each costs the database work (SQLite: sub-journal writes;
/// PostgreSQL: round trips, and hundreds of subtransactions would overflow its per-backend
/// cache and slow every snapshot). Jobs rarely fail (a replay of an unknown delivery, say);
/// when one does, the transaction is rolled back and the group runs again with one savepoint
/// per job, so that the failing job does not sink the others.
async fn run_group(
    driver: &mut impl WriteDriver,
    works: &[Work],
) -> Result<JobResults, StoreError> {
    if let Some(results) = attempt(driver, works, false).await? {
        return Ok(results);
    }
    attempt(driver, works, true)
        .await?
        .ok_or_else(|| StoreError::internal("a write group failed without savepoints and with"))
}

/// One attempt at a group: `Ok(None)` when, without savepoints, a job failed (the transaction
/// is then rolled back and nothing is stored).
async fn attempt(
    driver: &mut impl WriteDriver,
    works: &[Work],
    savepoints: bool,
) -> Result<Option<JobResults>, StoreError> {
    driver.begin().await?;
    match attempt_in_transaction(driver, works, savepoints).await {
        Ok(Some(results)) => match driver.execute("COMMIT").await {
            Ok(()) => Ok(Some(results)),
            Err(error) => {
                let _ = driver.execute("ROLLBACK").await;
                Err(error)
            }
        },
        Ok(None) => driver.execute("ROLLBACK").await.map(|()| None),
        Err(error) => {
            let _ = driver.execute("ROLLBACK").await;
            Err(error)
        }
    }
}

async fn attempt_in_transaction(
    driver: &mut impl WriteDriver,
    works: &[Work],
    savepoints: bool,
) -> Result<Option<JobResults>, StoreError> {
    let mut results = Vec::with_capacity(works.len());
    for work in works {
        if !savepoints {
            match apply(driver, work).await {
                Ok(done) => results.push(Ok(done)),
                Err(_) => return Ok(None),
            }
            continue;
        }
        driver.execute("SAVEPOINT shipfeed_job").await?;
        let result = apply(driver, work).await;
        driver
            .execute(if result.is_ok() {
                "RELEASE shipfeed_job"
            } else {
                "ROLLBACK TO shipfeed_job"
            })
            .await?;
        results.push(result);
    }
    Ok(Some(results))
}

async fn apply(driver: &mut impl WriteDriver, work: &Work) -> Result<Done, StoreError> {
    match work {
        Work::Append(rows) => {
            let mut seqs = Vec::with_capacity(rows.len());
            for row in rows {
                seqs.push(driver.insert_delivery(row).await?);
            }
            Ok(Done::Append(seqs))
        }
        Work::Project {
            lease: (lease, epoch),
            cursor,
            items,
            again,
        } => {
            lease::check(driver, lease, *epoch).await?;
            let mut done = Vec::with_capacity(items.len());
            for (seq, outcome) in items {
                let projection = record_outcome(driver, *seq, outcome, *again).await?;
                let reason = projection.dead_letter.as_deref();
                if !driver
                    .set_projection(*seq, reason, &to_json(&projection))
                    .await?
                {
                    return Err(StoreError::NotFound(format!(
                        "no stored delivery with sequence number {seq}"
                    )));
                }
                done.push(projection);
            }
            if let Some((name, position)) = cursor {
                driver.save_cursor(name, *position).await?;
            }
            Ok(Done::Project(done))
        }
        Work::SaveCursor(name, position, held) => {
            if let Some((lease, epoch)) = held {
                lease::check(driver, lease, *epoch).await?;
            }
            driver.save_cursor(name, *position).await?;
            Ok(Done::SaveCursor)
        }
        Work::AcquireLease {
            name,
            holder,
            now,
            until,
            force,
        } => Ok(Done::Lease(
            lease::acquire(driver, name, holder, (*now, *until), *force).await?,
        )),
        Work::ReleaseLease { name, epoch, now } => {
            lease::release(driver, name, *epoch, *now).await?;
            Ok(Done::Released)
        }
    }
}

/// Records the outputs of delivery `seq` and recomputes every shipment they change.
///
/// An event's content comes from the most recent delivery (by inbox `seq`) that carries it:
/// a new `event_id` is stored as revision 1; a stored one whose content (by hash: never the
/// per-delivery fields) differs, carried by this delivery or a later one than its owner, is
/// stored as the next revision; an older delivery never overrides a newer one. When a delivery
/// is projected again (`again`, replay), the events it owned and no longer yields (an id that
/// changed with a fix, or the delivery became a dead letter) are retracted. Each of these
/// enters the feed.
async fn record_outcome(
    driver: &mut impl WriteDriver,
    seq: i64,
    outcome: &Outcome,
    again: bool,
) -> Result<Projection, StoreError> {
    let mut projection = Projection {
        delivery_seq: seq,
        ..Projection::default()
    };
    let no_rows = Rows::default();
    let rows = match outcome {
        Ok(rows) => rows,
        Err(reason) => {
            projection.dead_letter = Some(reason.clone());
            &no_rows
        }
    };
    // New events per shipment (when a shipment has no other, its state needs no read), and
    // the shipments whose events were revised or retracted (their events are read back).
    let mut added: BTreeMap<&str, Vec<&TrackingEvent>> = BTreeMap::new();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    for (row, event) in &rows.events {
        if driver.insert_event(seq, row).await? {
            append_event(driver, row, 1).await?;
            projection.events.push(row.event_id.clone());
            projection
                .new_event_statuses
                .push(row.status.unwrap_or("none"));
            added.entry(&row.shipment_key).or_default().push(event);
            continue;
        }
        let Some(stored) = driver.event(&row.event_id).await? else {
            return Err(StoreError::internal("an event neither inserted nor stored"));
        };
        let same_content = || {
            let stored_hash = if stored.content_hash.is_empty() {
                crate::parse_stored::<TrackingEvent>(&stored.body, "event")
                    .map(|event| content_hash(&event))
                    .unwrap_or_default()
            } else {
                stored.content_hash.clone()
            };
            stored_hash == row.content_hash
        };
        if !stored.retracted && (seq < stored.delivery_seq || same_content()) {
            projection.duplicates.push(row.event_id.clone());
            continue;
        }
        let revision = stored.revision + 1;
        driver.revise_event(seq, row, revision).await?;
        append_event(driver, row, revision).await?;
        projection.revised.push(row.event_id.clone());
        changed.insert(stored.shipment_key);
        changed.insert(row.shipment_key.clone());
    }
    if again {
        let yielded: BTreeSet<&str> = rows
            .events
            .iter()
            .map(|(row, _)| row.event_id.as_str())
            .collect();
        for (event_id, key, revision) in driver.owned_events(seq).await? {
            if yielded.contains(event_id.as_str()) {
                continue;
            }
            driver.retract_event(&event_id).await?;
            let body = to_json(&Retraction {
                seq: 0,
                event_id: event_id.clone(),
                revision,
                shipment_key: key.clone(),
                delivery_seq: seq,
            });
            driver
                .append_feed(&FeedRow {
                    kind: "retraction",
                    event_id: Some(&event_id),
                    revision: Some(revision),
                    shipment_key: &key,
                    body: &body,
                })
                .await?;
            projection.retracted.push(event_id);
            changed.insert(key);
        }
    }
    for body in &rows.notices {
        driver.insert_notice(seq, body).await?;
        projection.notices += 1;
    }
    for (key, events) in added {
        if !changed.contains(key) {
            refresh_shipment(driver, key, Some(&events)).await?;
        }
    }
    for key in &changed {
        refresh_shipment(driver, key, None).await?;
    }
    Ok(projection)
}

async fn append_event(
    driver: &mut impl WriteDriver,
    row: &EventRow,
    revision: i64,
) -> Result<(), StoreError> {
    driver
        .append_feed(&FeedRow {
            kind: "event",
            event_id: Some(&row.event_id),
            revision: Some(revision),
            shipment_key: &row.shipment_key,
            body: &row.body,
        })
        .await
        .map(|_| ())
}

/// The hash of an event's canonical content: its JSON without what differs between
/// deliveries of the same event (when it was received, the delivery's id, whether it
/// triggered the delivery).
pub(crate) fn content_hash(event: &TrackingEvent) -> String {
    use sha2::Digest as _;
    let mut value = serde_json::to_value(event).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        for per_delivery in ["received_at", "delivery_id", "trigger"] {
            fields.remove(per_delivery);
        }
    }
    hex::encode(sha2::Sha256::digest(value.to_string().as_bytes()))
}

/// The state is recomputed from the whole set of the shipment's events, so arrival order can
/// never regress it. `added` are the events just inserted under `key`, when nothing else about
/// it changed: when the shipment has no others (its first delivery), they are that whole set,
/// and nothing is read back. When the status (or what set it) changes, a `shipment_state`
/// item enters the feed.
async fn refresh_shipment(
    driver: &mut impl WriteDriver,
    key: &str,
    added: Option<&[&TrackingEvent]>,
) -> Result<(), StoreError> {
    let first = match added {
        Some(added) => driver.count_events(key).await? == added.len(),
        None => false,
    };
    let (mut events, previous): (Vec<TrackingEvent>, Option<ShipmentState>) = match added {
        Some(added) if first => (added.iter().map(|&event| event.clone()).collect(), None),
        _ => (
            driver
                .events_of(key)
                .await?
                .iter()
                .filter_map(|body| crate::parse_stored(body, "event"))
                .collect(),
            driver
                .shipment_state(key)
                .await?
                .and_then(|state| crate::parse_stored(&state, "state")),
        ),
    };
    let state = current_state(&events);
    sort_timeline(&mut events);
    let latest = events.last();
    let moved = match (&previous, &state) {
        (None, None) => false,
        (Some(previous), Some(state)) => {
            (
                previous.status,
                &previous.substatus,
                &previous.status_event_id,
            ) != (state.status, &state.substatus, &state.status_event_id)
        }
        _ => true,
    };
    if moved {
        let body = to_json(&ShipmentStateChange {
            seq: 0,
            shipment_key: key.to_owned(),
            shipment: latest.map(|event| event.shipment.clone()),
            previous: previous.as_ref().map(|previous| StatusChange {
                status: previous.status,
                substatus: previous.substatus.clone(),
                status_event_id: previous.status_event_id.clone(),
            }),
            state: state.clone(),
        });
        driver
            .append_feed(&FeedRow {
                kind: "shipment_state",
                event_id: state.as_ref().map(|state| state.status_event_id.as_str()),
                revision: None,
                shipment_key: key,
                body: &body,
            })
            .await?;
    }
    match (state, latest) {
        (Some(state), Some(latest)) => {
            driver
                .upsert_shipment(&ShipmentRow {
                    key,
                    carrier: latest.shipment.carrier.as_deref(),
                    tracking_number: latest.shipment.tracking_number.as_deref(),
                    shipment: to_json(&latest.shipment),
                    state: to_json(&state),
                })
                .await
        }
        // Every event retracted (or none with a status): no state to show.
        _ if previous.is_some() || events.is_empty() => driver.delete_shipment(key).await,
        _ => Ok(()),
    }
}
