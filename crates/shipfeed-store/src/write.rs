//! The write path, once for every database: a queue of jobs, group commit with a savepoint
//! retry, and what a delivery's outcome does to the tables (raw delivery, events deduplicated
//! by id, notices, dead letters, the states of the shipments it touched).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shipfeed_core::{current_state, sort_timeline, Error, Output, Provider, TrackingEvent};
use tokio::sync::{mpsc, oneshot};

use crate::driver::{DeliveryRow, EventRow, ShipmentRow, WriteDriver};
use crate::{lease, shipment_key, Committed, Ingest, Lease, StoreError};

/// How many queued jobs one transaction takes at most.
const MAX_GROUP: usize = 512;

/// How many jobs may wait for the writer before callers wait to enqueue (back-pressure).
pub(crate) const QUEUE: usize = 4096;

/// What a caller asks the writer to do.
pub(crate) enum Work {
    Commit(Vec<(DeliveryRow, Outcome)>),
    Replace(i64, Outcome),
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

/// What the writer did.
pub(crate) enum Done {
    Commit(Vec<Committed>),
    Replace(Committed),
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

/// The rows of one ingest: its raw delivery and its outcome.
pub(crate) fn ingest_rows(ingest: Ingest) -> (DeliveryRow, Outcome) {
    let headers: Vec<(&str, &str)> = ingest.delivery.headers.iter().collect();
    let row = DeliveryRow {
        endpoint: ingest.endpoint,
        provider: ingest.provider,
        received_at: ingest.delivery.received_at,
        headers: to_json(&headers),
        body: ingest.delivery.body,
    };
    (row, outcome_rows(ingest.provider, ingest.outcome))
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
pub(crate) async fn write_loop(mut driver: impl WriteDriver, mut jobs: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while jobs.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (works, replies): (Vec<Work>, Vec<_>) =
            group.drain(..).map(|job| (job.work, job.reply)).unzip();
        let results = match run_group(&mut driver, &works).await {
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
        driver.after_group().await;
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
        Work::Commit(batch) => {
            let mut done = Vec::with_capacity(batch.len());
            for (delivery, outcome) in batch {
                let seq = driver
                    .insert_delivery(delivery, outcome.as_ref().err().map(String::as_str))
                    .await?;
                done.push(record_outcome(driver, seq, outcome).await?);
            }
            Ok(Done::Commit(done))
        }
        &Work::Replace(seq, ref outcome) => {
            let reason = outcome.as_ref().err().map(String::as_str);
            if !driver.set_dead_letter(seq, reason).await? {
                return Err(StoreError::NotFound(format!(
                    "no stored delivery with sequence number {seq}"
                )));
            }
            Ok(Done::Replace(record_outcome(driver, seq, outcome).await?))
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
/// shipment that got a new event. The delivery's dead-letter mark is already set.
async fn record_outcome(
    driver: &mut impl WriteDriver,
    seq: i64,
    outcome: &Outcome,
) -> Result<Committed, StoreError> {
    let mut committed = Committed {
        delivery_seq: seq,
        ..Committed::default()
    };
    let rows = match outcome {
        Ok(rows) => rows,
        Err(reason) => {
            committed.dead_letter = Some(reason.clone());
            return Ok(committed);
        }
    };
    // The events this delivery added, per shipment.
    let mut added: BTreeMap<&str, Vec<&TrackingEvent>> = BTreeMap::new();
    for (row, event) in &rows.events {
        if driver.insert_event(seq, row).await? {
            committed.new_events += 1;
            committed
                .new_event_statuses
                .push(row.status.unwrap_or("none").to_owned());
            added.entry(&row.shipment_key).or_default().push(event);
        } else {
            committed.duplicates += 1;
        }
    }
    for body in &rows.notices {
        driver.insert_notice(seq, body).await?;
        committed.notices += 1;
    }
    for (key, events) in added {
        refresh_shipment(driver, key, &events).await?;
    }
    Ok(committed)
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
