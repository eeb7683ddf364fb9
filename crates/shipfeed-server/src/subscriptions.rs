//! The service's subscriptions: the `[[subscription]]` tables and the legacy `sink` setting,
//! run by `shipfeed-subscriptions` over the service's store, woken by its ingest path and
//! counted in its registry.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use shipfeed_store::Store;
use shipfeed_subscriptions::{Metrics, Runner, Settings, Subscription};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::{Config, Service, ServiceError};

/// What the service keeps to start its subscriptions.
pub(crate) struct Subscriptions {
    planned: Vec<Subscription>,
    runner: Runner,
}

impl Subscriptions {
    /// The configured subscriptions, with their metrics registered into `registry`.
    pub(crate) fn new(
        config: &Config,
        store: Store,
        wake: Arc<Notify>,
        registry: &mut Registry,
    ) -> Result<Self, ServiceError> {
        let mut settings = Settings::default().with_lease_ttl(config.lease_ttl()?);
        if let Some(replica) = &config.replica_id {
            settings = settings.with_replica(replica.clone());
        }
        Ok(Subscriptions {
            planned: config.subscriptions()?,
            runner: Runner::new(store, wake, Metrics::register(registry), settings),
        })
    }
}

impl Subscriptions {
    /// This replica's id as a lease holder (the projector's lease too).
    pub(crate) fn replica(&self) -> &str {
        self.runner.settings().replica()
    }
}

impl Service {
    /// The subscriptions this service runs (the `[[subscription]]` tables, then the `sink`
    /// setting's), in configuration order.
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions.planned
    }

    /// This replica's id among the holders of leases (the projector's, the subscriptions').
    pub fn replica_id(&self) -> &str {
        self.subscriptions.replica()
    }

    /// Starts one task per subscription (after connecting, for NATS). Each delivers the feed
    /// from its own cursor while this replica holds its lease, and on `shutdown` turning
    /// `true` (or its sender being dropped) finishes its batch and releases the lease.
    ///
    /// # Errors
    /// [`ServiceError::Subscription`] when a target cannot be set up (NATS unreachable, its
    /// stream cannot be created); nothing is started then.
    pub async fn start_subscriptions(
        &self,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Vec<JoinHandle<()>>, ServiceError> {
        let runner = &self.subscriptions.runner;
        Ok(runner.start(&self.subscriptions.planned, shutdown).await?)
    }
}
