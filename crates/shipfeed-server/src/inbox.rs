//! The inbox, the pipeline's first stage: an authenticated delivery is appended to the store
//! (raw: endpoint, provider, headers, body, arrival time), durably, and only then acknowledged
//! (a 200, or an SQS delete). Nothing else is on that path: the projector normalizes from the
//! inbox afterwards, woken by each append.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use shipfeed::{ErrorKind, Provider};
use shipfeed_store::{Arrival, Store, StoreError};
use tokio::sync::Notify;

/// What the inbox reports: the service times its appends; a benchmark counts deliveries.
/// The method has an empty default, and `()` observes nothing.
pub trait InboxObserver: Send + Sync {
    /// `deliveries` are durable in the inbox; appending them took `seconds`.
    fn appended(&self, deliveries: usize, seconds: f64) {
        let _ = (deliveries, seconds);
    }

    /// Deliveries of `endpoint` (a webhook endpoint or an SQS source, of `provider`) are
    /// durable in the inbox, the latest of them received at `received_at`; called once per
    /// endpoint of each append, after [`appended`](InboxObserver::appended).
    fn arrived(&self, endpoint: &str, provider: Provider, received_at: DateTime<Utc>) {
        let _ = (endpoint, provider, received_at);
    }
}

impl InboxObserver for () {}

/// Why an append gave no answer to acknowledge with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The store could not take the deliveries: none of them is stored, and trying again
    /// later may succeed.
    #[error("the store is unavailable")]
    Store(#[from] StoreError),
    /// The store broke its contract (a result count other than one per delivery): a bug.
    /// Whether the deliveries are stored is unknown; handing them again is harmless (their
    /// events deduplicate).
    #[error("the store returned {returned} sequence numbers for {sent} deliveries")]
    ResultCount {
        /// Deliveries handed to the store.
        sent: usize,
        /// Sequence numbers it returned.
        returned: usize,
    },
}

impl From<InboxError> for shipfeed::Error {
    /// Both are temporary for a queue: the messages stay and come back (for a broken store
    /// contract, redelivery is the safe side of "unknown").
    fn from(error: InboxError) -> Self {
        let message = error.to_string();
        match error {
            InboxError::Store(source) => {
                shipfeed::Error::new(ErrorKind::Unavailable, message).with_source(source)
            }
            InboxError::ResultCount { .. } => shipfeed::Error::new(ErrorKind::Unavailable, message),
        }
    }
}

/// The inbox of a store: appends, wakes the projector, reports; cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    store: Store,
    projector: Arc<Notify>,
    observer: Arc<dyn InboxObserver>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

impl Inbox {
    /// Appends into `store`, waking `projector` after each append, reporting to `observer`.
    pub fn new(store: Store, projector: Arc<Notify>, observer: Arc<dyn InboxObserver>) -> Self {
        Inbox {
            store,
            projector,
            observer,
        }
    }

    /// The store deliveries go into.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Appends the deliveries durably and returns their inbox `seq`s, in order: `Ok` only
    /// once all of them are on disk.
    ///
    /// # Errors
    /// [`InboxError::Store`] when nothing was stored; [`InboxError::ResultCount`] when the
    /// store did not answer one `seq` per delivery.
    pub async fn append(&self, arrivals: Vec<Arrival>) -> Result<Vec<i64>, InboxError> {
        let sent = arrivals.len();
        // Per endpoint, its latest arrival (a webhook's append holds one delivery, an SQS
        // batch a few of one source).
        let mut latest: Vec<(String, Provider, DateTime<Utc>)> = Vec::with_capacity(1);
        for arrival in &arrivals {
            let received_at = arrival.delivery.received_at;
            match latest
                .iter_mut()
                .find(|(name, ..)| *name == arrival.endpoint)
            {
                Some((_, _, at)) => *at = (*at).max(received_at),
                None => latest.push((arrival.endpoint.clone(), arrival.provider, received_at)),
            }
        }
        let started = Instant::now();
        let seqs = self.store.append(arrivals).await?;
        if seqs.len() != sent {
            return Err(InboxError::ResultCount {
                sent,
                returned: seqs.len(),
            });
        }
        self.observer
            .appended(sent, started.elapsed().as_secs_f64());
        for (endpoint, provider, received_at) in &latest {
            self.observer.arrived(endpoint, *provider, *received_at);
        }
        // One waiter (this replica's projector); a stored permit covers an append that
        // lands while it is busy.
        self.projector.notify_one();
        Ok(seqs)
    }
}
