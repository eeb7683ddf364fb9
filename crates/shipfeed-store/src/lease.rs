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
/// keeps the epoch, a first grant or a takeover of a lease that ran out gets a new one. With
/// `force`, the lease is taken over whoever holds it (an operator's `shipfeed replay`): the
/// holder's next write is fenced.
pub(crate) async fn acquire(
    driver: &mut impl WriteDriver,
    name: &str,
    holder: &str,
    (now, until): (DateTime<Utc>, DateTime<Utc>),
    force: bool,
) -> Result<Option<Lease>, StoreError> {
    let epoch = match driver.lease(name).await? {
        None => 1,
        Some(current) if force || current.expires_at <= now => current.epoch + 1,
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

/// Where a lease holder reads the time: the system clock in service, a hand-moved one under
/// test, so that renewals and expiry happen at instants the test chooses.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told: for tests of lease expiry and takeover.
///
/// ```
/// use chrono::{DateTime, TimeDelta};
/// use shipfeed_store::{Clock, ManualClock};
/// let clock = ManualClock::new(DateTime::UNIX_EPOCH);
/// clock.advance(TimeDelta::seconds(5));
/// assert_eq!(clock.now(), DateTime::UNIX_EPOCH + TimeDelta::seconds(5));
/// ```
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock standing at `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        ManualClock(std::sync::Mutex::new(now))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: chrono::TimeDelta) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Keeps one lease for one holder: the same acquire-and-renew logic for the projector and for
/// every subscription. A stage calls [`hold`](LeaseHolder::hold) before each unit of work and
/// writes under the lease it gets; when a write comes back [`StoreError::Fenced`], it calls
/// [`lost`](LeaseHolder::lost) and asks again.
///
/// The lease is renewed once a third of its time has passed, so two renewals can fail (a
/// store hiccup) before it runs out; a stage that waits for work must wake at least every
/// [`renew_every`](LeaseHolder::renew_every) to keep it.
///
/// ```
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// use std::sync::Arc;
/// use chrono::TimeDelta;
/// use shipfeed_store::{LeaseHolder, Store, SystemClock};
/// let dir = tempfile::tempdir()?;
/// let store = Store::sqlite(dir.path().join("shipfeed.db"))?;
/// let ttl = TimeDelta::seconds(15);
/// let mut a = LeaseHolder::new(store.clone(), "projector", "replica-a", ttl, Arc::new(SystemClock));
/// let mut b = LeaseHolder::new(store.clone(), "projector", "replica-b", ttl, Arc::new(SystemClock));
/// let lease = a.hold().await?.expect("free");
/// store.save_cursor_under(&lease, "projector", 1).await?;
/// assert!(b.hold().await?.is_none(), "a holds it");
/// a.release().await?;
/// assert!(b.hold().await?.is_some(), "released");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LeaseHolder {
    store: crate::Store,
    name: String,
    holder: String,
    ttl: chrono::TimeDelta,
    clock: std::sync::Arc<dyn Clock>,
    held: Option<Lease>,
}

impl std::fmt::Debug for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseHolder")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl LeaseHolder {
    /// A holder of lease `name` as `holder` (a replica's id), for `ttl` at a time.
    pub fn new(
        store: crate::Store,
        name: impl Into<String>,
        holder: impl Into<String>,
        ttl: chrono::TimeDelta,
        clock: std::sync::Arc<dyn Clock>,
    ) -> Self {
        LeaseHolder {
            store,
            name: name.into(),
            holder: holder.into(),
            ttl,
            clock,
            held: None,
        }
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How often a holder that waits for work must call [`hold`](LeaseHolder::hold).
    pub fn renew_every(&self) -> std::time::Duration {
        (self.ttl / 3).to_std().unwrap_or_default()
    }

    /// The lease, acquired or renewed when due; `None` while another holder has it.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written (the lease is then kept as it was: it
    /// may still be valid).
    pub async fn hold(&mut self) -> Result<Option<Lease>, StoreError> {
        let now = self.clock.now();
        if let Some(lease) = &self.held {
            if lease.expires_at - now > self.ttl * 2 / 3 {
                return Ok(Some(lease.clone()));
            }
        }
        let granted = self
            .store
            .acquire_lease(&self.name, &self.holder, now, self.ttl)
            .await?;
        if let (Some(old), Some(new)) = (&self.held, &granted) {
            if old.epoch != new.epoch {
                tracing::info!(lease = %self.name, epoch = new.epoch, "lease taken again after it ran out");
            }
        }
        self.held = granted;
        Ok(self.held.clone())
    }

    /// Takes the lease over whoever holds it, under a new epoch: the other holder's next write
    /// is refused and it stands by until this one releases or stops renewing.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn take_over(&mut self) -> Result<Lease, StoreError> {
        let lease = self
            .store
            .take_over_lease(&self.name, &self.holder, self.clock.now(), self.ttl)
            .await?;
        self.held = Some(lease.clone());
        Ok(lease)
    }

    /// Forgets the lease after a write was fenced: another holder took it over.
    pub fn lost(&mut self) {
        if let Some(lease) = self.held.take() {
            tracing::warn!(lease = %self.name, epoch = lease.epoch, "lease taken over by another holder; standing by");
        }
    }

    /// Gives the lease up (at shutdown), so the next holder need not wait for it to run out.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written (the lease then runs out by itself).
    pub async fn release(mut self) -> Result<(), StoreError> {
        match self.held.take() {
            Some(lease) => {
                self.store
                    .release_lease(&self.name, lease.epoch, self.clock.now())
                    .await
            }
            None => Ok(()),
        }
    }
}
