//! The outbox: new events leave the store for downstream consumers, from a cursor saved in the
//! store after each delivered batch. At-least-once: a crash between delivering and saving the
//! cursor delivers that batch again, so consumers deduplicate on `event_id` (NATS JetStream
//! does it for them within its duplicate window, via `Nats-Msg-Id`).
//!
//! Every line and message is a feed item exactly as `GET /v1/events` lists it:
//! `{"seq": N, "type": "event", ...}` (`schema/feed-item.schema.json`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shipfeed_store::FeedItem;

use crate::error::BoxError;
use crate::{Service, ServiceError};

/// Events read from the store per batch.
const BATCH: usize = 500;

/// JetStream stream the NATS outbox publishes into (created when missing).
pub const NATS_STREAM: &str = "SHIPFEED";

/// Subject prefix of the NATS outbox: events go to `shipfeed.events.<provider>.<status>`.
pub const NATS_SUBJECT_PREFIX: &str = "shipfeed.events";

/// Where new events go, from the config's `sink`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxTarget {
    /// Nowhere (consumers read `GET /v1/events`).
    None,
    /// JSON lines on stdout.
    Stdout,
    /// JSON lines appended to a file, synced before the cursor moves.
    File(PathBuf),
    /// A NATS JetStream stream, one message per event.
    Nats(String),
}

impl OutboxTarget {
    /// `"none"`, `"stdout"`, a `nats://` URL, or a file path.
    pub fn parse(sink: &str) -> Self {
        match sink {
            "none" => OutboxTarget::None,
            "stdout" => OutboxTarget::Stdout,
            url if url.starts_with("nats://") => OutboxTarget::Nats(url.to_owned()),
            path => OutboxTarget::File(PathBuf::from(path)),
        }
    }
}

/// One way of handing a batch of new events downstream.
#[async_trait]
trait Outbox: Send + Sync {
    /// Delivers the batch; `Ok` only when all of it is delivered.
    async fn deliver(&self, items: &[FeedItem]) -> Result<(), BoxError>;
}

/// One JSON line per feed item.
fn json_lines(items: &[FeedItem]) -> Vec<u8> {
    let mut lines = Vec::new();
    for item in items {
        if serde_json::to_writer(&mut lines, item).is_ok() {
            lines.push(b'\n');
        }
    }
    lines
}

struct JsonLines(Option<PathBuf>);

#[async_trait]
impl Outbox for JsonLines {
    async fn deliver(&self, items: &[FeedItem]) -> Result<(), BoxError> {
        write_lines(self.0.as_deref(), &json_lines(items))?;
        Ok(())
    }
}

/// Writes and flushes to stdout, or appends to `file` and syncs it (so the cursor saved
/// afterwards never runs ahead of the file).
fn write_lines(file: Option<&Path>, lines: &[u8]) -> std::io::Result<()> {
    match file {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(lines)?;
            out.flush()
        }
        Some(path) => {
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            out.write_all(lines)?;
            out.sync_data()
        }
    }
}

struct Nats(async_nats::jetstream::Context);

impl Nats {
    async fn connect(url: &str) -> Result<Self, ServiceError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|source| ServiceError::Outbox {
                context: format!("connect to NATS at {url}"),
                source: Box::new(source),
            })?;
        let jetstream = async_nats::jetstream::new(client);
        jetstream
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: NATS_STREAM.to_owned(),
                subjects: vec![format!("{NATS_SUBJECT_PREFIX}.>")],
                ..Default::default()
            })
            .await
            .map_err(|source| ServiceError::Outbox {
                context: format!("create or find the JetStream stream {NATS_STREAM}"),
                source: Box::new(source),
            })?;
        Ok(Nats(jetstream))
    }
}

/// The subject and the `Nats-Msg-Id` of a feed item. The id is the same for the same item
/// every time it is published (JetStream drops a repeat within its duplicate window) and
/// differs between revisions of an event (a correction is never dropped as a repeat).
fn nats_address(item: &FeedItem) -> (String, String) {
    match item {
        FeedItem::Event(item) => (
            format!(
                "{NATS_SUBJECT_PREFIX}.{}.{}",
                item.event.provider.as_str(),
                item.event.status.map_or("none", |s| s.as_str())
            ),
            format!("{}:{}", item.event.event_id.as_str(), item.revision),
        ),
        FeedItem::Retraction(item) => (
            format!("{NATS_SUBJECT_PREFIX}.retraction"),
            format!("retraction:{}:{}", item.event_id, item.revision),
        ),
        FeedItem::ShipmentState(item) => (
            format!(
                "{NATS_SUBJECT_PREFIX}.shipment_state.{}",
                item.state
                    .as_ref()
                    .map_or("none", |state| state.status.as_str())
            ),
            format!("shipment_state:{}", item.seq),
        ),
    }
}

#[async_trait]
impl Outbox for Nats {
    async fn deliver(&self, items: &[FeedItem]) -> Result<(), BoxError> {
        // Publish the whole batch, then wait for every acknowledgement: one round trip of
        // latency per batch, not per event.
        let mut acks = Vec::with_capacity(items.len());
        for item in items {
            let (subject, message_id) = nats_address(item);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id.as_str());
            let payload = serde_json::to_vec(item)?;
            acks.push(
                self.0
                    .publish_with_headers(subject, headers, payload.into())
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
        Ok(())
    }
}

impl Service {
    /// Starts the outbox task for `target` (after connecting, for NATS).
    ///
    /// # Errors
    /// [`ServiceError::Outbox`] when NATS is unreachable or its stream cannot be created.
    pub async fn start_outbox(self: &Arc<Self>, target: &OutboxTarget) -> Result<(), ServiceError> {
        let (outbox, cursor): (Arc<dyn Outbox>, String) = match target {
            OutboxTarget::None => return Ok(()),
            OutboxTarget::Stdout => (Arc::new(JsonLines(None)), "stdout".to_owned()),
            OutboxTarget::File(path) => (
                Arc::new(JsonLines(Some(path.clone()))),
                format!("file:{}", path.display()),
            ),
            OutboxTarget::Nats(url) => (
                Arc::new(Nats::connect(url).await?),
                format!("nats:{NATS_STREAM}"),
            ),
        };
        tokio::spawn(Arc::clone(self).run_outbox(outbox, cursor));
        Ok(())
    }

    async fn run_outbox(self: Arc<Self>, outbox: Arc<dyn Outbox>, cursor: String) {
        let store = self.store();
        let mut position = store.cursor(&cursor).await.unwrap_or(0);
        loop {
            let notified = self.observer.new_events.notified();
            match store.events_after(position, BATCH).await {
                Ok(items) if !items.is_empty() => {
                    if let Err(error) = outbox.deliver(&items).await {
                        tracing::error!(error = %shipfeed::error_chain(error.as_ref()), %cursor, "outbox cannot deliver; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    position = items.last().map_or(position, FeedItem::seq);
                    if let Err(error) = store.save_cursor(&cursor, position).await {
                        tracing::warn!(%error, %cursor, "could not save the outbox cursor");
                    }
                    continue;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, %cursor, "outbox cannot read the feed"),
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_settings_parse() {
        assert_eq!(OutboxTarget::parse("none"), OutboxTarget::None);
        assert_eq!(OutboxTarget::parse("stdout"), OutboxTarget::Stdout);
        assert_eq!(
            OutboxTarget::parse("nats://127.0.0.1:4222"),
            OutboxTarget::Nats("nats://127.0.0.1:4222".into())
        );
        assert_eq!(
            OutboxTarget::parse("/var/lib/shipfeed/events.jsonl"),
            OutboxTarget::File("/var/lib/shipfeed/events.jsonl".into())
        );
    }
}
