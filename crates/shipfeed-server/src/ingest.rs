//! The one hand-off from an authenticated, normalized delivery to the store, shared by the
//! webhook handler, the SQS sources ([`StoreInbox`](crate::StoreInbox)) and replay: build the
//! [`Ingest`], report what the adapter made of it, commit, check the store's answer, report
//! what the commit did.

use std::sync::Arc;
use std::time::Instant;

use shipfeed::{ErrorKind, Output, Provider, RawDelivery};
use shipfeed_store::{Committed, Ingest, Store, StoreError};

/// What the ingest path reports as it goes: the service counts it into its metrics and wakes
/// its outbox; a benchmark may count deliveries. Every method has an empty default, and `()`
/// observes nothing.
pub trait IngestObserver: Send + Sync {
    /// What the adapter made of one new delivery, before it is committed.
    fn normalized(&self, provider: Provider, outcome: &Result<Vec<Output>, shipfeed::Error>) {
        let _ = (provider, outcome);
    }

    /// A batch of new deliveries is durable; it took `seconds` in the store.
    fn commit_took(&self, seconds: f64) {
        let _ = seconds;
    }

    /// What the commit did with one new delivery that arrived on `endpoint`.
    fn committed(&self, endpoint: &str, provider: Provider, committed: &Committed) {
        let _ = (endpoint, provider, committed);
    }

    /// What replay did with one stored delivery (not a new delivery: only its new events
    /// count).
    fn replayed(&self, provider: Provider, committed: &Committed) {
        let _ = (provider, committed);
    }
}

impl IngestObserver for () {}

/// Why a commit gave no result to answer with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The store could not take the batch: none of it is stored, and trying again later may
    /// succeed.
    #[error("the store is unavailable")]
    Store(#[from] StoreError),
    /// The store broke its contract (a result count other than one per delivery): a bug.
    /// Whether the batch is stored is unknown; handing it again is harmless (events dedupe).
    #[error("the store returned {returned} results for {sent} deliveries")]
    ResultCount {
        /// Deliveries handed to the store.
        sent: usize,
        /// Results it returned.
        returned: usize,
    },
}

impl From<IngestError> for shipfeed::Error {
    /// Both are temporary for a queue: the messages stay and come back (for a broken store
    /// contract, redelivery is the safe side of "unknown").
    fn from(error: IngestError) -> Self {
        let message = error.to_string();
        match error {
            IngestError::Store(source) => {
                shipfeed::Error::new(ErrorKind::Unavailable, message).with_source(source)
            }
            IngestError::ResultCount { .. } => {
                shipfeed::Error::new(ErrorKind::Unavailable, message)
            }
        }
    }
}

/// The store and the observer of everything that enters it; cheap to clone.
#[derive(Clone)]
pub struct Ingestor {
    store: Store,
    observer: Arc<dyn IngestObserver>,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor").finish_non_exhaustive()
    }
}

impl Ingestor {
    /// Commits into `store`, reporting to `observer`.
    pub fn new(store: Store, observer: Arc<dyn IngestObserver>) -> Self {
        Ingestor { store, observer }
    }

    /// The store deliveries go into.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// One authenticated delivery that arrived on `endpoint` and what its adapter made of it,
    /// ready for [`commit`](Ingestor::commit); reports the outcome to the observer.
    pub fn ingest(
        &self,
        endpoint: &str,
        provider: Provider,
        delivery: RawDelivery,
        outcome: Result<Vec<Output>, shipfeed::Error>,
    ) -> Ingest {
        self.observer.normalized(provider, &outcome);
        Ingest {
            endpoint: endpoint.to_owned(),
            provider,
            delivery,
            outcome,
        }
    }

    /// Stores the batch in one durable transaction and returns what happened to each delivery,
    /// in order. `Ok` only when all of it is durable.
    ///
    /// # Errors
    /// [`IngestError::Store`] when nothing was stored; [`IngestError::ResultCount`] when the
    /// store did not answer one result per delivery.
    pub async fn commit(&self, batch: Vec<Ingest>) -> Result<Vec<Committed>, IngestError> {
        let arrivals: Vec<(String, Provider)> = batch
            .iter()
            .map(|ingest| (ingest.endpoint.clone(), ingest.provider))
            .collect();
        let started = Instant::now();
        let committed = self.store.commit(batch).await?;
        if committed.len() != arrivals.len() {
            return Err(IngestError::ResultCount {
                sent: arrivals.len(),
                returned: committed.len(),
            });
        }
        self.observer.commit_took(started.elapsed().as_secs_f64());
        for ((endpoint, provider), done) in arrivals.iter().zip(&committed) {
            self.observer.committed(endpoint, *provider, done);
        }
        Ok(committed)
    }

    /// [`commit`](Ingestor::commit) for a batch of one.
    ///
    /// # Errors
    /// As [`commit`](Ingestor::commit).
    pub async fn commit_one(&self, ingest: Ingest) -> Result<Committed, IngestError> {
        let mut committed = self.commit(vec![ingest]).await?;
        committed.pop().ok_or(IngestError::ResultCount {
            sent: 1,
            returned: 0,
        })
    }

    /// Records what this build's adapter now makes of stored delivery `seq` (replay): its
    /// events are inserted (deduplicated by id) and its dead-letter mark is set or cleared.
    ///
    /// # Errors
    /// [`IngestError::Store`] when nothing was stored.
    pub async fn replay(
        &self,
        seq: i64,
        provider: Provider,
        outcome: Result<Vec<Output>, shipfeed::Error>,
    ) -> Result<Committed, IngestError> {
        let committed = self.store.replace_outcome(seq, provider, outcome).await?;
        self.observer.replayed(provider, &committed);
        Ok(committed)
    }
}
