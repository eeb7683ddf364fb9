//! The write path, once for every database: a queue of jobs, group commit with a savepoint
//! retry, the inbox's appends, and what a projected delivery's outcome does to the tables
//! (events deduplicated by id, notices, dead letters, the states of the shipments it touched),
//! fenced by the projector's lease.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shipfeed_core::{current_state, sort_timeline, Error, Output, Provider, TrackingEvent};
use tokio::sync::{mpsc, oneshot};

use crate::driver::{DeliveryRow, EventRow, ShipmentRow, WriteDriver};
use crate::{lease, shipment_key, Arrival, Lease, Projection, StoreError};

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
    /// Acknowledgements wait on it: it commits ahead of the rest of its group.
    fn acknowledges(&self) -> bool {
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
///
/// Inbox appends commit first, in a transaction of their own, and are answered before the
/// rest of the group (a projector batch, cursors, leases) runs: where both stages share one
/// writer (SQLite), an acknowledgement waits for at most one flush, never for a projection.
pub(crate) async fn write_loop(mut driver: impl WriteDriver, mut jobs: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while jobs.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (acknowledging, rest): (Vec<Job>, Vec<Job>) =
            group.drain(..).partition(|job| job.work.acknowledges());
        for jobs in [acknowledging, rest] {
            if !jobs.is_empty() {
                commit_group(&mut driver, jobs).await;
            }
        }
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
        } => {
            lease::check(driver, lease, *epoch).await?;
            let mut done = Vec::with_capacity(items.len());
            for (seq, outcome) in items {
                let projection = record_outcome(driver, *seq, outcome).await?;
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

/// Inserts the outputs of delivery `seq` (events deduplicated by id) and recomputes every
/// shipment that got a new event.
async fn record_outcome(
    driver: &mut impl WriteDriver,
    seq: i64,
    outcome: &Outcome,
) -> Result<Projection, StoreError> {
    let mut projection = Projection {
        delivery_seq: seq,
        ..Projection::default()
    };
    let rows = match outcome {
        Ok(rows) => rows,
        Err(reason) => {
            projection.dead_letter = Some(reason.clone());
            return Ok(projection);
        }
    };
    // The events this delivery added, per shipment.
    let mut added: BTreeMap<&str, Vec<&TrackingEvent>> = BTreeMap::new();
    for (row, event) in &rows.events {
        if driver.insert_event(seq, row).await? {
            projection.events.push(row.event_id.clone());
            projection
                .new_event_statuses
                .push(row.status.unwrap_or("none"));
            added.entry(&row.shipment_key).or_default().push(event);
        } else {
            projection.duplicates.push(row.event_id.clone());
        }
    }
    for body in &rows.notices {
        driver.insert_notice(seq, body).await?;
        projection.notices += 1;
    }
    for (key, events) in added {
        refresh_shipment(driver, key, &events).await?;
    }
    Ok(projection)
}

/// The state is recomputed from the whole set of the shipment's events, so arrival order can
/// never regress it. `added` are the events just inserted under `key`: when the shipment has
/// no others (its first delivery), they are that whole set and nothing is read back.
async fn refresh_shipment(
    driver: &mut impl WriteDriver,
    key: &str,
    added: &[&TrackingEvent],
) -> Result<(), StoreError> {
    let mut events: Vec<TrackingEvent> = if driver.count_events(key).await? == added.len() {
        added.iter().map(|&event| event.clone()).collect()
    } else {
        driver
            .events_of(key)
            .await?
            .iter()
            .filter_map(|body| crate::parse_stored(body, "event"))
            .collect()
    };
    let Some(state) = current_state(&events) else {
        return Ok(());
    };
    sort_timeline(&mut events);
    let Some(latest) = events.last() else {
        return Ok(());
    };
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
