//! Leases with a fencing epoch: at most one holder of a named role (the projector, a
//! subscription) at a time, across processes and replicas.
//!
//! A holder takes a lease for a while and renews it before it runs out; once it has run out,
//! anyone may take it over, and a takeover increments the lease's **epoch**. A holder writes
//! with the epoch it was granted and the store refuses a write whose epoch is no longer the
//! lease's ([`StoreError::Fenced`]), so a holder that stalled past its lease (a pause, a
//! partition) cannot commit after its successor started.
//!
//! Times are the caller's (an injected clock), so that expiry is deterministic under test;
//! replicas are expected to keep their clocks within a small fraction of the lease's length.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::driver::WriteDriver;
use crate::StoreError;

/// A lease as granted: who holds it, under which epoch, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The role it is for (`projector`, `subscription:orders`, ...).
    pub name: String,
    /// Who holds it (a replica's id).
    pub holder: String,
    /// Incremented by every takeover; writes carry it (fencing).
    pub epoch: i64,
    /// When it runs out unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// Grants `holder` the lease `name` until `until`, if nobody else holds it at `now`: a renewal
/// keeps the epoch, a first grant or a takeover of a lease that ran out gets a new one.
pub(crate) async fn acquire(
    driver: &mut impl WriteDriver,
    name: &str,
    holder: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Option<Lease>, StoreError> {
    let epoch = match driver.lease(name).await? {
        None => 1,
        Some(current) if current.expires_at <= now => current.epoch + 1,
        Some(current) if current.holder == holder => current.epoch,
        Some(_) => return Ok(None),
    };
    let lease = Lease {
        name: name.to_owned(),
        holder: holder.to_owned(),
        epoch,
        expires_at: until,
    };
    driver.put_lease(&lease).await?;
    Ok(Some(lease))
}

/// Gives up lease `name` held under `epoch`, so that another holder need not wait for it to
/// run out; a lease taken over since is left alone.
pub(crate) async fn release(
    driver: &mut impl WriteDriver,
    name: &str,
    epoch: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    match driver.lease(name).await? {
        Some(current) if current.epoch == epoch => {
            driver
                .put_lease(&Lease {
                    expires_at: now,
                    ..current
                })
                .await
        }
        _ => Ok(()),
    }
}

/// Fails unless lease `name` is still under `epoch`: checked inside the transaction of every
/// write made on a lease's behalf.
pub(crate) async fn check(
    driver: &mut impl WriteDriver,
    name: &str,
    epoch: i64,
) -> Result<(), StoreError> {
    match driver.lease(name).await? {
        Some(current) if current.epoch == epoch => Ok(()),
        current => Err(StoreError::Fenced {
            lease: name.to_owned(),
            epoch,
            current: current.map(|lease| lease.epoch),
        }),
    }
}
