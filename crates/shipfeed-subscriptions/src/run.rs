//! Driving subscriptions: one task per subscription, each delivering the feed from its own
//! cursor while this replica holds the subscription's lease.

use std::fmt;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use shipfeed_core::error_chain;
use shipfeed_store::{Clock, Lease, LeaseHolder, Store, StoreError, SystemClock};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::metrics::Series;
use crate::push::{Pusher, Round};
use crate::target::Deliver;
use crate::{Error, Metrics, Start, Subscription, Target};

/// How the runner works: who it is among the replicas, how long a lease lasts, which clock
/// lease times are read from, how much it reads at a time and how it backs off.
#[derive(Clone)]
pub struct Settings {
    replica: String,
    lease_ttl: TimeDelta,
    clock: Arc<dyn Clock>,
    batch_size: usize,
    retry_initial: Duration,
    retry_max: Duration,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("replica", &self.replica)
            .field("lease_ttl", &self.lease_ttl)
            .field("batch_size", &self.batch_size)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .finish_non_exhaustive()
    }
}

impl Default for Settings {
    /// This process as the replica ([`replica_id`]), 15 s leases on the system clock, batches
    /// of 500 items, retries after 250 ms doubling up to 30 s.
    fn default() -> Self {
        Settings {
            replica: replica_id(),
            lease_ttl: TimeDelta::seconds(15),
            clock: Arc::new(SystemClock),
            batch_size: 500,
            retry_initial: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
        }
    }
}

impl Settings {
    /// The replica's id, the holder name of its leases (unique per process).
    pub fn with_replica(mut self, replica: impl Into<String>) -> Self {
        self.replica = replica.into();
        self
    }

    /// How long a lease lasts unless renewed: after a replica stops renewing (it crashed, or
    /// is cut off), another takes its subscriptions over once this much time has passed. It
    /// is renewed once a third of it has passed.
    pub fn with_lease_ttl(mut self, ttl: TimeDelta) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// The clock lease times are read from (a [`ManualClock`](shipfeed_store::ManualClock)
    /// under test).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Feed items read and delivered per batch (at least 1).
    pub fn with_batch_size(mut self, items: usize) -> Self {
        self.batch_size = items.max(1);
        self
    }

    /// The wait after a failure (a delivery, a store read or write), doubled after each
    /// further failure up to `max`. A wait is never longer than the lease's renewal interval,
    /// so that a failing target does not cost the lease.
    pub fn with_retry(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial = initial;
        self.retry_max = max.max(initial);
        self
    }

    /// The replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// How long a lease lasts unless renewed.
    pub fn lease_ttl(&self) -> TimeDelta {
        self.lease_ttl
    }
}

/// An id for this process among the replicas: `<hostname>-<pid>-<random>`, unique even when
/// two processes share a host name and a pid (containers).
pub fn replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "replica".to_owned());
    let mut random = std::collections::hash_map::RandomState::new().build_hasher();
    random.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos())
            .unwrap_or_default(),
    );
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        random.finish() & 0xffff_ffff
    )
}

/// Runs subscriptions over a store: what every subscription task shares.
#[derive(Clone, Debug)]
pub struct Runner {
    store: Store,
    wake: Arc<Notify>,
    metrics: Metrics,
    settings: Settings,
}

impl Runner {
    /// A runner over `store`, woken through `wake` whenever new items are stored (notified
    /// with [`Notify::notify_waiters`]; without a wake-up it still looks at least once per
    /// renewal interval), counting into `metrics`.
    pub fn new(store: Store, wake: Arc<Notify>, metrics: Metrics, settings: Settings) -> Self {
        Runner {
            store,
            wake,
            metrics,
            settings,
        }
    }

    /// The runner's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Connects every subscription's target, then starts one task per subscription. Each
    /// task runs until `shutdown` turns `true` (or its sender is dropped): it finishes the
    /// batch in hand, then releases its lease so that another replica takes over at once.
    ///
    /// A task never fails: a target that is down, a store that does not answer, a lease held
    /// elsewhere are logged, counted and retried.
    ///
    /// # Errors
    /// [`Error::Target`] when a target cannot be set up (NATS unreachable, its stream cannot be
    /// created, a RabbitMQ broker that refuses the credentials or the exchange); nothing is
    /// started then. A RabbitMQ broker that cannot be reached is not an error: its
    /// subscription starts, held back until the broker is there.
    pub async fn start(
        &self,
        subscriptions: &[Subscription],
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Vec<JoinHandle<()>>, Error> {
        let mut drivers = Vec::with_capacity(subscriptions.len());
        for subscription in subscriptions {
            let series = self.metrics.of(subscription.name());
            let sender = match subscription.target() {
                Target::Http(http) => Sender::Push(Box::new(
                    Pusher::new(
                        subscription.name(),
                        subscription.cursor(),
                        http,
                        self.store.clone(),
                        Arc::clone(&self.settings.clock),
                        self.settings.batch_size,
                        subscription.filter().clone(),
                        series.clone(),
                    )
                    .map_err(|e| Error::Target {
                        name: subscription.name().to_owned(),
                        context: "set up its HTTP client".to_owned(),
                        source: Box::new(e),
                    })?,
                )),
                target => Sender::Batch(target.connect(subscription.name()).await?),
            };
            drivers.push(Driver {
                lease: LeaseHolder::new(
                    self.store.clone(),
                    subscription.lease(),
                    self.settings.replica.clone(),
                    self.settings.lease_ttl,
                    Arc::clone(&self.settings.clock),
                ),
                series,
                subscription: subscription.clone(),
                sender,
                store: self.store.clone(),
                wake: Arc::clone(&self.wake),
                batch_size: self.settings.batch_size,
                retry: (self.settings.retry_initial, self.settings.retry_max),
                lag_at: None,
            });
        }
        Ok(drivers
            .into_iter()
            .map(|driver| tokio::spawn(driver.run(shutdown.clone())))
            .collect())
    }
}

/// Where the holder of a lease is in the feed.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// The lease epoch it was read under: a new epoch means someone may have moved it since.
    epoch: i64,
    /// The last item delivered.
    position: i64,
    /// The last position saved in the store (behind `position` after a failed save).
    saved: i64,
}

/// What a step came to, and so what to do next.
enum Step {
    /// A batch went out: read the next one at once.
    More,
    /// Nothing new: wait for new items (or the lease's renewal).
    Idle,
    /// Nothing to do before this long: wait for it, for new items or the lease's renewal.
    Wait(Duration),
    /// Another replica holds the lease: look again later (or when new items are stored).
    StandBy,
    /// Something failed: back off, then retry the same batch.
    Failed,
}

/// How a subscription hands items over.
enum Sender {
    /// A batch at a time (stdout, file, NATS).
    Batch(Box<dyn Deliver>),
    /// Signed HTTP POSTs, retried per item.
    Push(Box<Pusher>),
}

/// One subscription's task.
struct Driver {
    subscription: Subscription,
    sender: Sender,
    store: Store,
    lease: LeaseHolder,
    series: Series,
    wake: Arc<Notify>,
    batch_size: usize,
    retry: (Duration, Duration),
    /// When the lag was last read (HTTP push).
    lag_at: Option<std::time::Instant>,
}

/// How often a busy HTTP push subscription reads its lag.
const LAG_EVERY: Duration = Duration::from_secs(1);

impl Driver {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        // A holder waiting for work must look at least this often to keep its lease.
        let renew = self.lease.renew_every().max(Duration::from_millis(10));
        let (initial, max) = self.retry;
        let mut retry = initial;
        let mut cursor = None;
        while !*shutdown.borrow() {
            // Registered before looking, so that items stored meanwhile wake the wait below.
            let wake = Arc::clone(&self.wake);
            let new_items = wake.notified();
            let (pause, on_new_items) = match self.step(&mut cursor).await {
                Step::More => {
                    retry = initial;
                    continue;
                }
                Step::Idle | Step::StandBy => {
                    retry = initial;
                    (renew, true)
                }
                Step::Wait(pause) => {
                    retry = initial;
                    (pause.min(renew), true)
                }
                Step::Failed => {
                    let pause = retry.min(renew);
                    retry = retry.saturating_mul(2).min(max);
                    (pause, false)
                }
            };
            tokio::select! {
                // A dropped sender stops the task too.
                _ = shutdown.wait_for(|stop| *stop) => break,
                () = new_items, if on_new_items => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
        self.series.held.set(0);
        let name = self.subscription.name().to_owned();
        match self.lease.release().await {
            Ok(()) => tracing::info!(subscription = %name, "subscription stopped; lease released"),
            Err(error) => tracing::warn!(
                subscription = %name,
                error = %error_chain(&error),
                "subscription stopped; its lease could not be released and runs out by itself"
            ),
        }
    }

    /// Holds the lease, then delivers one batch after the cursor and saves the cursor under
    /// the lease.
    async fn step(&mut self, cursor: &mut Option<Cursor>) -> Step {
        let lease = match self.lease.hold().await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                if cursor.take().is_some() {
                    tracing::info!(subscription = %self.subscription.name(), "another replica holds the subscription's lease now; standing by");
                }
                self.series.held.set(0);
                self.observe_lag(None).await;
                return Step::StandBy;
            }
            Err(error) => {
                tracing::warn!(subscription = %self.subscription.name(), error = %error_chain(&error), "cannot take or renew the subscription's lease; retrying");
                return Step::Failed;
            }
        };
        self.series.held.set(1);
        if cursor.is_none_or(|current| current.epoch != lease.epoch) {
            match self.open(&lease).await {
                Ok(opened) => *cursor = Some(opened),
                Err(error) => return self.write_failed(&error, cursor),
            }
        }
        let Some(current) = cursor.as_mut() else {
            return Step::Failed;
        };
        let name = self.subscription.cursor();
        if current.saved < current.position {
            // Delivered earlier, but the save failed: save it before going on.
            if let Err(error) = self
                .store
                .save_cursor_under(&lease, name, current.position)
                .await
            {
                return self.write_failed(&error, cursor);
            }
            current.saved = current.position;
        }
        let target = match &mut self.sender {
            Sender::Push(pusher) => {
                let round = pusher.round(&lease, current.position).await;
                return match round {
                    Ok((moved, round)) => {
                        if let Some(position) = moved {
                            current.position = position;
                            current.saved = position;
                        }
                        // Busy, the lag is read at most once a second (a read of the feed's
                        // end per round costs the push a tenth of its rate).
                        let position = current.position;
                        let idle = matches!(round, Round::Wait(_));
                        if idle || self.lag_at.is_none_or(|at| at.elapsed() >= LAG_EVERY) {
                            self.lag_at = Some(std::time::Instant::now());
                            self.observe_lag(Some(position)).await;
                        }
                        match round {
                            Round::More => Step::More,
                            Round::Wait(pause) => Step::Wait(pause),
                        }
                    }
                    Err(error) => {
                        pusher.forget();
                        self.write_failed(&error, cursor)
                    }
                };
            }
            Sender::Batch(target) => target,
        };
        // Read through the subscription's filter: the page may hold fewer items than it read
        // (none, even), and its `next_cursor` is past everything read, so the cursor never
        // stops on items the filter leaves out.
        let page = match self
            .store
            .feed_page(
                current.position,
                self.batch_size,
                self.subscription.filter(),
            )
            .await
        {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(subscription = %self.subscription.name(), error = %error_chain(&error), "cannot read the feed; retrying");
                return Step::Failed;
            }
        };
        let last = page.next_cursor;
        if last <= current.position {
            let position = current.position;
            self.observe_lag(Some(position)).await;
            return Step::Idle;
        }
        let items = page.items;
        if !items.is_empty() {
            if let Err(error) = target.deliver(&items).await {
                let position = current.position;
                self.observe_lag(Some(position)).await;
                self.series.failures.inc();
                tracing::error!(
                    subscription = %self.subscription.name(),
                    after = position,
                    error = %error_chain(error.as_ref()),
                    "cannot deliver a batch; retrying it"
                );
                return Step::Failed;
            }
        }
        self.series.delivered.inc_by(items.len() as u64);
        current.position = last;
        match self.store.save_cursor_under(&lease, name, last).await {
            Ok(()) => current.saved = last,
            Err(error) => return self.write_failed(&error, cursor),
        }
        self.observe_lag(Some(last)).await;
        Step::More
    }

    /// The cursor as the store has it, for a lease just granted; a new subscription's start
    /// resolved and saved first.
    async fn open(&self, lease: &Lease) -> Result<Cursor, StoreError> {
        let name = self.subscription.cursor();
        let position = match self.store.saved_cursor(name).await? {
            Some(position) => position,
            None => {
                let position = match self.subscription.start() {
                    Start::End => self.store.feed_end().await?,
                    Start::Beginning => 0,
                    Start::After(seq) => seq,
                };
                self.store.save_cursor_under(lease, name, position).await?;
                tracing::info!(subscription = %self.subscription.name(), position, "new subscription: starts after this feed seq");
                position
            }
        };
        tracing::info!(subscription = %self.subscription.name(), epoch = lease.epoch, position, "this replica drives the subscription");
        Ok(Cursor {
            epoch: lease.epoch,
            position,
            saved: position,
        })
    }

    /// After a failed store write under the lease: a fenced one means another replica took
    /// the subscription over (stand by); anything else is retried.
    fn write_failed(&mut self, error: &StoreError, cursor: &mut Option<Cursor>) -> Step {
        if matches!(error, StoreError::Fenced { .. }) {
            self.lease.lost();
            *cursor = None;
            self.series.held.set(0);
            return Step::StandBy;
        }
        tracing::warn!(subscription = %self.subscription.name(), error = %error_chain(error), "cannot read or write the subscription's state in the store; retrying");
        Step::Failed
    }

    /// Sets the lag gauge: the feed's end minus `position` (the saved cursor when `None`).
    /// Best effort: a read that fails leaves the gauge as it was.
    async fn observe_lag(&self, position: Option<i64>) {
        let position = match position {
            Some(position) => Some(position),
            None => self
                .store
                .saved_cursor(self.subscription.cursor())
                .await
                .ok()
                .flatten(),
        };
        if let (Some(position), Ok(end)) = (position, self.store.feed_end().await) {
            self.series.lag.set((end - position).max(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ids_differ_between_calls() {
        let (a, b) = (replica_id(), replica_id());
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())), "{a}");
    }
}
