//! The write path, once for every database: a queue of jobs, group commit with a savepoint
//! retry, the inbox's appends, and projections (their rules are in `project`), fenced by the
//! projector's lease.

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::driver::{DeliveryRow, WriteDriver};
use crate::project::{self, Outcome};
use crate::{
    alerts, audit, lease, push, Alert, Arrival, AuditRecord, ControlAction, Lease, Projection,
    PushCommit, StalledRules, StoreError, SubscriptionControl,
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
    /// Every shipment's state recomputed, when a migration asked for it (queued at start).
    RebuildShipments,
    /// Stalled-shipment alerts raised as due at `now`, only while the lease (name, epoch) is
    /// still held.
    RaiseAlerts {
        lease: (String, i64),
        now: DateTime<Utc>,
        rules: StalledRules,
    },
    /// A round of an HTTP push subscription, only while the lease (name, epoch) is held.
    CommitPush {
        lease: (String, i64),
        subscription: String,
        cursor: String,
        round: PushCommit,
        now: DateTime<Utc>,
    },
    /// An operator's change to an HTTP push subscription.
    ControlPush {
        subscription: String,
        action: ControlAction,
        now: DateTime<Utc>,
    },
    /// An operator's redelivery of exhausted push messages.
    Redeliver {
        subscription: String,
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    },
    /// An operator's action appended to the audit log.
    RecordAudit(AuditRecord),
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
    Alerts(Vec<Alert>),
    Control(SubscriptionControl),
    Redelivered(u64),
    Audited(i64),
}

pub(crate) struct Job {
    pub(crate) work: Work,
    pub(crate) reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// The inbox row of an arrival.
pub(crate) fn delivery_row(arrival: Arrival) -> DeliveryRow {
    let headers: Vec<(&str, &str)> = arrival.delivery.headers.iter().collect();
    DeliveryRow {
        endpoint: arrival.endpoint,
        provider: arrival.provider,
        received_at: arrival.delivery.received_at,
        headers: project::to_json(&headers),
        body: arrival.delivery.body,
    }
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
        Work::Append(rows) => Ok(Done::Append(driver.insert_deliveries(rows).await?)),
        Work::Project {
            lease: (lease, epoch),
            cursor,
            items,
            again,
        } => {
            lease::check(driver, lease, *epoch).await?;
            let done = project::project(driver, items, *again).await?;
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
        Work::RebuildShipments => {
            if driver
                .saved_cursor(project::REBUILD_SHIPMENTS)
                .await?
                .is_some()
            {
                project::rebuild_shipments(driver).await?;
            }
            Ok(Done::Released)
        }
        Work::RaiseAlerts {
            lease: (lease, epoch),
            now,
            rules,
        } => {
            lease::check(driver, lease, *epoch).await?;
            Ok(Done::Alerts(alerts::raise(driver, rules, *now).await?))
        }
        Work::CommitPush {
            lease: (lease, epoch),
            subscription,
            cursor,
            round,
            now,
        } => {
            lease::check(driver, lease, *epoch).await?;
            push::commit(driver, subscription, cursor, round, *now).await?;
            Ok(Done::SaveCursor)
        }
        Work::ControlPush {
            subscription,
            action,
            now,
        } => Ok(Done::Control(
            push::change(driver, subscription, action, *now).await?,
        )),
        Work::Redeliver {
            subscription,
            since,
            now,
        } => Ok(Done::Redelivered(
            push::redeliver(driver, subscription, *since, *now).await?,
        )),
        Work::RecordAudit(record) => Ok(Done::Audited(audit::record(driver, record).await?)),
    }
}
