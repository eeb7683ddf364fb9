//! SQS sources (Seven Senders) in the same pipeline as the webhooks: a [`StoreInbox`] commits
//! each received batch through the service's [`Ingestor`], and only then does the source
//! delete the messages.

use std::sync::Arc;

use async_trait::async_trait;
use shipfeed::registry;
use shipfeed::{Error, ErrorKind, Provider};
use shipfeed_sqs::{Inbox, SourcedDelivery, SqsSource};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Ingestor, Service, ServiceError};

/// The [`Inbox`] of an SQS source in the service: commits queue messages into the store (raw
/// message, deduplicated events, shipment state and dead letters in one durable transaction
/// per batch). `Ok` only after the commit, so the source deletes nothing that is not stored.
#[derive(Debug)]
pub struct StoreInbox {
    ingestor: Ingestor,
    name: String,
    provider: Provider,
}

impl StoreInbox {
    /// Commits through `ingestor`, recording deliveries under the source `name`.
    pub fn new(ingestor: Ingestor, name: impl Into<String>, provider: Provider) -> Self {
        StoreInbox {
            ingestor,
            name: name.into(),
            provider,
        }
    }
}

#[async_trait]
impl Inbox for StoreInbox {
    async fn accept(&self, batch: Vec<SourcedDelivery>) -> Result<(), Error> {
        let ingests = batch
            .into_iter()
            .map(|item| {
                self.ingestor
                    .ingest(&self.name, self.provider, item.delivery, item.outcome)
            })
            .collect();
        // Temporary either way: the batch stays on the queue and comes back.
        self.ingestor.commit(ingests).await?;
        Ok(())
    }
}

impl Service {
    /// Connects every configured SQS source and pulls it into the store until `shutdown`
    /// turns true; each task ends after finishing the batches it has in flight.
    ///
    /// # Errors
    /// [`ServiceError::SqsSource`] for a source that cannot be set up (invalid configuration,
    /// queue name not found, queue unreachable).
    pub async fn start_sqs_sources(
        self: &Arc<Self>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Vec<JoinHandle<()>>, ServiceError> {
        let mut tasks = Vec::new();
        for (name, configured) in &self.sources {
            let provider = configured.endpoint.provider;
            let setup = |source| ServiceError::SqsSource {
                name: name.clone(),
                source,
            };
            let adapter = registry::adapter(provider, &configured.settings).map_err(setup)?;
            let source = SqsSource::connect(configured.config.sqs_config(), adapter)
                .await
                .map_err(setup)?;
            eprintln!(
                "  pulling {} messages from {} into the store (sqs_source `{name}`)",
                provider,
                source.queue_url()
            );
            let inbox = Arc::new(StoreInbox::new(
                self.ingestor.clone(),
                name.clone(),
                provider,
            ));
            let shutdown = shutdown.clone();
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                match source.run(inbox, shutdown).await {
                    Ok(stats) => tracing::info!(source = %name, ?stats, "sqs source stopped"),
                    Err(error) if error.kind() == ErrorKind::Config => {
                        tracing::error!(source = %name, %error, "sqs source misconfigured; stopped");
                    }
                    Err(error) => tracing::error!(source = %name, %error, "sqs source stopped"),
                }
            }));
        }
        Ok(tasks)
    }
}
