//! SQS sources (Seven Senders) in the same pipeline as the webhooks: a [`StoreSink`] commits
//! each received batch into the store, and only then does the source delete the messages.

use std::sync::Arc;

use async_trait::async_trait;
use shipfeed::registry;
use shipfeed::{Error, ErrorKind, Provider};
use shipfeed_sqs::{Sink, SourcedDelivery, SqsSource};
use shipfeed_store::{Ingest, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Service;

/// A [`Sink`] that commits queue messages into a [`Store`]: raw message, deduplicated events,
/// shipment state and dead letters in one durable transaction per batch. `Ok` only after the
/// commit, so the source deletes nothing that is not stored.
pub struct StoreSink {
    store: Store,
    name: String,
    provider: Provider,
    service: Option<Arc<Service>>,
}

impl StoreSink {
    /// Commits into `store`, recording deliveries under the source `name`.
    pub fn new(store: Store, name: impl Into<String>, provider: Provider) -> Self {
        StoreSink {
            store,
            name: name.into(),
            provider,
            service: None,
        }
    }
}

#[async_trait]
impl Sink for StoreSink {
    async fn accept(&self, batch: Vec<SourcedDelivery>) -> Result<(), Error> {
        let ingests: Vec<Ingest> = batch
            .into_iter()
            .map(|item| Ingest {
                endpoint: self.name.clone(),
                provider: self.provider,
                delivery: item.delivery,
                outcome: item.outcome,
            })
            .collect();
        if let Some(service) = &self.service {
            for ingest in &ingests {
                service.observe_outputs(self.provider, &ingest.outcome);
            }
        }
        // A store failure is temporary: the batch stays on the queue and comes back.
        let committed = self.store.commit(ingests).await.map_err(Error::from)?;
        if let Some(service) = &self.service {
            for done in &committed {
                service.observe(&self.name, self.provider, done);
            }
        }
        Ok(())
    }
}

impl Service {
    /// Connects every configured SQS source and pulls it into the store until `shutdown`
    /// turns true; each task ends after finishing the batches it has in flight.
    ///
    /// # Errors
    /// A source that cannot be set up (invalid configuration, queue name not found).
    pub async fn start_sqs_sources(
        self: &Arc<Self>,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<Vec<JoinHandle<()>>> {
        let mut tasks = Vec::new();
        for (name, configured) in &self.sources {
            let provider = configured.endpoint.provider;
            let adapter = registry::adapter(provider, &configured.settings)?;
            let source = SqsSource::connect(configured.config.sqs_config(), adapter)
                .await
                .map_err(|e| anyhow::anyhow!("sqs_source `{name}`: {e}"))?;
            eprintln!(
                "  pulling {} messages from {} into the store (sqs_source `{name}`)",
                provider,
                source.queue_url()
            );
            let sink = Arc::new(StoreSink {
                service: Some(Arc::clone(self)),
                ..StoreSink::new(self.store.clone(), name.clone(), provider)
            });
            let shutdown = shutdown.clone();
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                match source.run(sink, shutdown).await {
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
