//! SQS sources (Seven Senders) in the same pipeline as the webhooks: a [`StoreInbox`] appends
//! each received batch to the service's [`Inbox`], and only then does the source delete the
//! messages.

use std::sync::Arc;

use async_trait::async_trait;
use shipfeed::registry;
use shipfeed::{Error, ErrorKind, Provider};
use shipfeed_sqs::{SourcedDelivery, SqsSource};
use shipfeed_store::Arrival;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Inbox, Service, ServiceError};

/// The [`shipfeed_sqs::Inbox`] of an SQS source in the service: appends the raw messages to
/// the store's inbox in one durable transaction per batch. `Ok` only after the append, so the
/// source deletes nothing that is not stored. The source's own normalization only decides
/// what stays on the queue; what is stored is normalized again by the projector, with the
/// same settings, like every other delivery.
#[derive(Debug)]
pub struct StoreInbox {
    inbox: Inbox,
    name: String,
    provider: Provider,
}

impl StoreInbox {
    /// Appends to `inbox`, recording deliveries under the source `name`.
    pub fn new(inbox: Inbox, name: impl Into<String>, provider: Provider) -> Self {
        StoreInbox {
            inbox,
            name: name.into(),
            provider,
        }
    }
}

#[async_trait]
impl shipfeed_sqs::Inbox for StoreInbox {
    async fn accept(&self, batch: Vec<SourcedDelivery>) -> Result<(), Error> {
        let arrivals = batch
            .into_iter()
            .map(|item| Arrival {
                endpoint: self.name.clone(),
                provider: self.provider,
                delivery: item.delivery,
            })
            .collect();
        // Temporary either way: the batch stays on the queue and comes back.
        self.inbox.append(arrivals).await?;
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
            let inbox = Arc::new(StoreInbox::new(self.inbox.clone(), name.clone(), provider));
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
