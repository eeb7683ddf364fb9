//! The projector: the middle stage of the shipfeed pipeline.
//!
//! ```text
//! inbox (raw deliveries, acknowledged) ──▶ projector ──▶ feed, shipment states ──▶ subscriptions
//! ```
//!
//! The inbox stores every authenticated delivery before it is acknowledged, and nothing
//! more. The projector reads it from a durable cursor, in batches, normalizes each delivery
//! with its endpoint's adapter, and hands the batch to [`Store::project`]: events
//! deduplicated by `event_id`, dead letters, recomputed shipment states, each delivery's
//! [`Projection`], and the cursor, **in one transaction**. A crash repeats at most one batch,
//! and repeating it is harmless (its events are already stored under their ids).
//!
//! Exactly one projector writes at a time, across replicas and processes: it works under the
//! lease [`PROJECTOR`], whose fencing epoch is checked inside every projector transaction. A
//! stalled holder whose lease was taken over has its batch refused; it then stands by, and
//! takes the lease again once the new holder lets it run out (or releases it). `shipfeed
//! replay` ([`Projector::replay`]) takes the lease over for as long as it runs, so the
//! projector of a running service pauses meanwhile instead of writing beside it.
//!
//! One delivery cannot stop the cursor: a payload its adapter rejects becomes a dead letter,
//! as does one whose endpoint is no longer configured, and an adapter that panics is retried
//! [`ProjectorOptions::attempts`] times and then dead-lettered with the panic's message. All of
//! them can be replayed after a fix.
#![forbid(unsafe_code)]

mod replay;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use shipfeed_core::drift::{self, Drift};
use shipfeed_core::identity::Identity;
use shipfeed_core::{Adapter, Error, ErrorKind, Output, Provider};
use shipfeed_store::{
    Alert, Clock, DeliveryDrift, InboxLag, Lease, LeaseHolder, Normalized, PreparedBatch,
    Projection, StalledRules, Store, StoreError, StoredDelivery, PROJECTOR, RAISE_LIMIT,
};
use tokio::sync::{watch, Notify};

pub use replay::{
    ReplayFilter, ReplayOutcome, ReplayReport, ReplaySummary, ReplayedDelivery, LISTED,
};

/// The adapters of the configured endpoints and SQS sources, by name: a stored delivery is
/// normalized by the adapter of the endpoint it arrived on, with that endpoint's settings.
#[derive(Default, Clone)]
pub struct Adapters(HashMap<String, Arc<dyn Adapter>>);

impl std::fmt::Debug for Adapters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Adapters {
    /// No adapters yet.
    pub fn new() -> Self {
        Adapters::default()
    }

    /// Normalizes what arrives on `endpoint` with `adapter`.
    pub fn insert(&mut self, endpoint: impl Into<String>, adapter: Arc<dyn Adapter>) {
        self.0.insert(endpoint.into(), adapter);
    }

    /// The adapter for deliveries of `provider` stored under `endpoint`: `None` when the
    /// endpoint is gone from the configuration or now serves another provider (its settings
    /// at arrival are unknown).
    fn get(&self, endpoint: &str, provider: Provider) -> Option<&dyn Adapter> {
        self.0
            .get(endpoint)
            .map(Arc::as_ref)
            .filter(|adapter| adapter.provider() == provider)
    }
}

/// What the projector reports as it goes (the service's metrics; a benchmark's counters).
/// Every method has an empty default, and `()` observes nothing.
pub trait ProjectionObserver: Send + Sync {
    /// What the adapter made of one stored delivery, before it is recorded.
    fn normalized(&self, provider: Provider, outcome: &Result<Vec<Output>, Error>) {
        let _ = (provider, outcome);
    }

    /// An evaluation of the stalled-shipment rules raised `raised` alerts.
    fn alerts_raised(&self, raised: usize) {
        let _ = raised;
    }

    /// A batch of `deliveries` is recorded; normalizing and recording took `seconds`.
    fn batch(&self, deliveries: usize, seconds: f64) {
        let _ = (deliveries, seconds);
    }

    /// What projecting one delivery that arrived on `endpoint` recorded (new deliveries, not
    /// replay).
    fn projected(&self, endpoint: &str, provider: Provider, projection: &Projection) {
        let _ = (endpoint, provider, projection);
    }

    /// What replay recorded for one stored delivery (only its new events count as new).
    fn replayed(&self, provider: Provider, projection: &Projection) {
        let _ = (provider, projection);
    }

    /// How far the projector is behind the inbox, after a batch: deliveries not yet projected
    /// and how long the oldest of them has waited.
    fn lag(&self, deliveries: i64, seconds: f64) {
        let _ = (deliveries, seconds);
    }
}

impl ProjectionObserver for () {}

/// How the projector works.
#[derive(Debug, Clone)]
pub struct ProjectorOptions {
    /// Deliveries per batch (per transaction). Where the inbox and the projector share one
    /// writer (SQLite), this bounds how long a batch holds it.
    pub batch: usize,
    /// How long the lease lasts unless renewed: after a crash, another replica takes over
    /// within about this long (plus a third of it).
    pub lease_ttl: TimeDelta,
    /// This process's name in the lease (replicas must differ).
    pub holder: String,
    /// How many times an adapter that panics on a delivery is tried before the delivery
    /// becomes a dead letter.
    pub attempts: u32,
    /// Which events are one shipment (carriers configured as one).
    pub identity: Identity,
    /// Stalled-shipment alerts, evaluated under the projector's lease (`None`: never).
    pub alerts: Option<AlertOptions>,
}

/// Stalled-shipment alerts: the rules, and how often the projector evaluates them. Clearing
/// needs no schedule: the projection that records a shipment's next event clears its alert.
#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// Which shipments are stalled, measured on the projector's clock against the
    /// `occurred_at` of each shipment's last event.
    pub rules: StalledRules,
    /// How often the rules are evaluated (the first time this long after the projector
    /// starts): an alert is raised at most this late.
    pub check_every: Duration,
}

impl Default for AlertOptions {
    fn default() -> Self {
        AlertOptions {
            rules: StalledRules::default(),
            check_every: Duration::from_secs(60),
        }
    }
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        ProjectorOptions {
            batch: 256,
            lease_ttl: TimeDelta::seconds(15),
            holder: default_holder(),
            attempts: 3,
            identity: Identity::default(),
            alerts: Some(AlertOptions::default()),
        }
    }
}

/// `host:pid`, unique per process on a host (replicas on one host differ by pid).
pub fn default_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "shipfeed".to_owned());
    format!("{host}:{}", std::process::id())
}

/// The projector stage; cheap to clone.
#[derive(Clone)]
pub struct Projector {
    store: Store,
    adapters: Arc<Adapters>,
    observer: Arc<dyn ProjectionObserver>,
    options: ProjectorOptions,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("adapters", &self.adapters)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Projector {
    /// A projector of `store`'s inbox with these adapters, reporting to `observer`, reading
    /// lease times from `clock`.
    pub fn new(
        store: Store,
        adapters: Adapters,
        observer: Arc<dyn ProjectionObserver>,
        options: ProjectorOptions,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Projector {
            store,
            adapters: Arc::new(adapters),
            observer,
            options,
            clock,
        }
    }

    /// The store it projects.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A holder of the projector's lease under `holder`.
    fn lease_holder(&self, holder: String) -> LeaseHolder {
        LeaseHolder::new(
            self.store.clone(),
            PROJECTOR,
            holder,
            self.options.lease_ttl,
            Arc::clone(&self.clock),
        )
    }

    /// Projects the next batch of the inbox under `lease` and moves the cursor past it;
    /// returns how many deliveries it projected (0: the inbox is projected to its end).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// use std::sync::Arc;
    /// use chrono::{TimeDelta, Utc};
    /// use shipfeed_projector::{Adapters, Projector, ProjectorOptions};
    /// use shipfeed_store::{Store, SystemClock, PROJECTOR};
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::sqlite(dir.path().join("shipfeed.db"))?;
    /// let projector = Projector::new(
    ///     store.clone(), Adapters::new(), Arc::new(()), ProjectorOptions::default(), Arc::new(SystemClock),
    /// );
    /// let lease = store
    ///     .acquire_lease(PROJECTOR, "doc", Utc::now(), TimeDelta::seconds(15))
    ///     .await?
    ///     .expect("free");
    /// assert_eq!(projector.step(&lease).await?, 0, "nothing in the inbox");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when the lease was taken over (nothing was recorded); any other
    /// [`StoreError`] when the store cannot be read or written (the batch is tried again).
    pub async fn step(&self, lease: &Lease) -> Result<usize, StoreError> {
        let cursor = self.store.cursor(PROJECTOR).await?;
        match self.read(cursor, None).await? {
            Some(batch) => self.record(lease, batch).await,
            None => {
                self.report_lag(cursor).await;
                Ok(0)
            }
        }
    }

    /// Projects the inbox to its end while `holder` holds the lease, reading and normalizing
    /// each next batch (on `cpu`) while the one before is recorded: the store's writer and the
    /// adapters work at the same time. Returns `None` when the lease is held elsewhere,
    /// otherwise how many deliveries it projected.
    async fn drain(
        &self,
        holder: &mut LeaseHolder,
        cpu: &Background,
    ) -> Result<Option<usize>, StoreError> {
        let Some(mut lease) = holder.hold().await? else {
            return Ok(None);
        };
        let mut position = self.store.cursor(PROJECTOR).await?;
        let mut next = self.read(position, Some(cpu)).await?;
        if next.is_none() {
            self.report_lag(position).await;
        }
        let mut projected = 0;
        while let Some(batch) = next.take() {
            position = batch.last;
            let more = batch.arrivals.len() >= self.options.batch;
            let (recorded, read) = tokio::join!(self.record(&lease, batch), async {
                if more {
                    self.read(position, Some(cpu)).await
                } else {
                    Ok(None)
                }
            });
            projected += recorded?;
            next = read?;
            if next.is_some() {
                match holder.hold().await? {
                    Some(held) => lease = held,
                    None => break,
                }
            }
        }
        Ok(Some(projected))
    }

    /// The batch of deliveries after `after`, normalized and made into rows (on `cpu` when
    /// given); `None` when there is none.
    async fn read(
        &self,
        after: i64,
        cpu: Option<&Background>,
    ) -> Result<Option<Prepared>, StoreError> {
        let page = self
            .store
            .deliveries(after, self.options.batch, false)
            .await?;
        if page.is_empty() {
            return Ok(None);
        }
        match cpu {
            Some(cpu) => {
                let projector = self.clone();
                cpu.run(move || projector.prepare(page)).await
            }
            None => Ok(self.prepare(page)),
        }
    }

    /// Evaluates the stalled-shipment rules once under `lease`, at the projector clock's time:
    /// raises the alerts due (at most [`RAISE_LIMIT`]; see [`Store::raise_stalled`]) and
    /// returns them. Nothing when alerts are off.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when the lease was taken over (nothing was raised); any other
    /// [`StoreError`] when the store cannot be written.
    pub async fn raise_alerts(&self, lease: &Lease) -> Result<Vec<Alert>, StoreError> {
        let Some(alerts) = &self.options.alerts else {
            return Ok(Vec::new());
        };
        let raised = self
            .store
            .raise_stalled(lease, self.clock.now(), &alerts.rules)
            .await?;
        self.observer.alerts_raised(raised.len());
        if !raised.is_empty() {
            tracing::info!(raised = raised.len(), "stalled-shipment alerts raised");
        }
        Ok(raised)
    }

    /// Evaluates the rules while `holder` holds the lease, until an evaluation leaves nothing
    /// due (a backlog takes several, each in a transaction of its own, the lease renewed
    /// between them).
    async fn check_alerts(&self, holder: &mut LeaseHolder) {
        loop {
            let lease = match holder.hold().await {
                Ok(Some(lease)) => lease,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(error = %shipfeed_core::error_chain(&error), "cannot hold the projector lease to raise alerts");
                    return;
                }
            };
            match self.raise_alerts(&lease).await {
                Ok(raised) if raised.len() >= RAISE_LIMIT => {}
                Ok(_) => return,
                Err(StoreError::Fenced { .. }) => {
                    holder.lost();
                    return;
                }
                Err(error) => {
                    tracing::warn!(error = %shipfeed_core::error_chain(&error), "stalled-shipment rules not evaluated; next time");
                    return;
                }
            }
        }
    }

    /// The CPU work of a batch: every delivery normalized, then made into the store's rows.
    fn prepare(&self, page: Vec<StoredDelivery>) -> Option<Prepared> {
        let last = page.last()?.seq;
        let started = Instant::now();
        let arrivals = page
            .iter()
            .map(|stored| (stored.endpoint.clone(), stored.provider))
            .collect();
        let normalized: Vec<Normalized> =
            page.iter().map(|stored| self.normalize(stored)).collect();
        Some(Prepared {
            arrivals,
            batch: PreparedBatch::new(normalized, &self.options.identity),
            last,
            started,
        })
    }

    /// Records a prepared batch under `lease`, moving the cursor past it.
    async fn record(&self, lease: &Lease, prepared: Prepared) -> Result<usize, StoreError> {
        let Prepared {
            arrivals,
            batch,
            last,
            started,
        } = prepared;
        let projections = self
            .store
            .project(lease, Some((PROJECTOR, last)), batch)
            .await?;
        self.observer
            .batch(projections.len(), started.elapsed().as_secs_f64());
        for ((endpoint, provider), projection) in arrivals.iter().zip(&projections) {
            self.observer.projected(endpoint, *provider, projection);
            if let Some(reason) = &projection.dead_letter {
                tracing::warn!(%endpoint, delivery = projection.delivery_seq, %reason, "dead letter");
            }
        }
        self.report_lag(last).await;
        Ok(projections.len())
    }

    /// What this build's adapter makes of a stored delivery, with the drift it noted. Never
    /// panics: a panicking adapter is tried [`ProjectorOptions::attempts`] times, then answered
    /// as an error (a dead letter whose reason says so).
    fn normalize(&self, stored: &StoredDelivery) -> Normalized {
        let (outcome, drift) = match self.normalize_noting(stored) {
            Ok((outcome, drift)) => (outcome, DeliveryDrift::new(drift, &stored.delivery)),
            Err(error) => (Err(error), None),
        };
        Normalized {
            delivery_seq: stored.seq,
            provider: stored.provider,
            outcome,
            drift,
        }
    }

    /// The adapter's outcome and drift; `Err` when there is no adapter or it kept panicking.
    #[allow(clippy::type_complexity)] // one private call site
    fn normalize_noting(
        &self,
        stored: &StoredDelivery,
    ) -> Result<(Result<Vec<Output>, Error>, Drift), Error> {
        let Some(adapter) = self.adapters.get(&stored.endpoint, stored.provider) else {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "no endpoint or sqs_source `{}` for {} is configured; replay it once there is",
                    stored.endpoint, stored.provider
                ),
            ));
        };
        let mut panic_message = String::new();
        for attempt in 1..=self.options.attempts.max(1) {
            match catch_unwind(AssertUnwindSafe(|| {
                drift::observe(adapter, &stored.delivery)
            })) {
                Ok((outcome, drift)) => {
                    self.observer.normalized(stored.provider, &outcome);
                    return Ok((outcome, drift));
                }
                Err(panic) => {
                    panic_message = panic
                        .downcast_ref::<&str>()
                        .map(|text| (*text).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(delivery = stored.seq, provider = %stored.provider, attempt, "the adapter panicked");
                }
            }
        }
        Err(Error::new(
            ErrorKind::Config,
            format!(
                "the {} adapter panicked {} times on this delivery: {panic_message}",
                stored.provider,
                self.options.attempts.max(1)
            ),
        ))
    }

    async fn report_lag(&self, cursor: i64) {
        match self.store.inbox_lag(cursor).await {
            Ok(InboxLag { deliveries, oldest }) => {
                let seconds = oldest.map_or(0.0, |oldest| {
                    (self.clock.now() - oldest).as_seconds_f64().max(0.0)
                });
                self.observer.lag(deliveries, seconds);
            }
            Err(error) => tracing::warn!(%error, "cannot read the projector's lag"),
        }
    }

    /// Runs until `shutdown` turns true: holds the lease (or stands by while another replica
    /// does), projects the inbox to its end, and waits for `wake` (notified after each inbox
    /// append). Releases the lease when it stops.
    ///
    /// Its CPU work (the adapters, the rows) runs on a thread of its own with a lower
    /// priority ([`shipfeed_store::deprioritize_current_thread`]), as the store's projection
    /// writer does: under more load than the machine can take, acknowledgements keep the CPU
    /// and the projector falls behind (its lag is reported), rather than the reverse.
    pub async fn run(self, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        let cpu = match Background::start() {
            Ok(cpu) => cpu,
            Err(error) => {
                tracing::error!(%error, "cannot start the projector's thread; the projector does not run");
                return;
            }
        };
        let mut lease = self.lease_holder(self.options.holder.clone());
        let mut backoff = RETRY_FIRST;
        let check_every = self
            .options
            .alerts
            .as_ref()
            .map(|alerts| alerts.check_every.max(MIN_CHECK_EVERY));
        let mut next_check = check_every.map(|every| tokio::time::Instant::now() + every);
        while !*shutdown.borrow() {
            let holding = match self.drain(&mut lease, &cpu).await {
                Ok(held) => {
                    backoff = RETRY_FIRST;
                    held.is_some()
                }
                Err(StoreError::Fenced { .. }) => {
                    lease.lost();
                    false
                }
                Err(error) => {
                    tracing::warn!(error = %shipfeed_core::error_chain(&error), "projector failed; retrying");
                    let _ = tokio::time::timeout(backoff, shutdown.changed()).await;
                    backoff = (backoff * 2).min(RETRY_LAST);
                    continue;
                }
            };
            if let (true, Some(due), Some(every)) = (holding, next_check, check_every) {
                if tokio::time::Instant::now() >= due {
                    self.check_alerts(&mut lease).await;
                    next_check = Some(tokio::time::Instant::now() + every);
                }
            }
            let renew = lease.renew_every();
            if holding {
                let wait = next_check.map_or(renew, |due| {
                    renew.min(due.saturating_duration_since(tokio::time::Instant::now()))
                });
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            } else {
                // Standing by: only the clock matters (waking on every append would write a
                // lease request per delivery).
                let _ = tokio::time::timeout(renew, shutdown.changed()).await;
            }
        }
        if let Err(error) = lease.release().await {
            tracing::warn!(%error, "could not release the projector lease; it runs out by itself");
        }
    }
}

/// A batch read from the inbox and prepared for [`Store::project`].
struct Prepared {
    /// The endpoint and provider of each delivery, for the observer.
    arrivals: Vec<(String, Provider)>,
    batch: PreparedBatch,
    /// The last delivery's `seq`: where the cursor moves.
    last: i64,
    started: Instant,
}

/// The projector's thread for CPU work, at a lower priority; it ends when this is dropped.
struct Background {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl Background {
    fn start() -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name("shipfeed-projector".into())
            .spawn(move || {
                shipfeed_store::deprioritize_current_thread();
                while let Ok(job) = queue.recv() {
                    job();
                }
            })?;
        Ok(Background { jobs })
    }

    /// Runs `work` on the thread and waits for its result.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(work());
            }))
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)
    }
}

/// First wait after a failed batch (the store is down): doubles up to [`RETRY_LAST`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_LAST: Duration = Duration::from_secs(5);

/// The shortest interval between two evaluations of the stalled rules: each reads indexes and
/// writes a transaction.
const MIN_CHECK_EVERY: Duration = Duration::from_millis(100);
