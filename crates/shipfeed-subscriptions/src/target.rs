//! Handing a batch of feed items to a target: JSON lines on stdout or in a file, or NATS
//! JetStream messages. Each item is written exactly as `GET /v1/events` lists it,
//! `{"seq": N, "type": "event", ...}` (`schema/feed-item.schema.json`).

use std::io::Write as _;
use std::path::PathBuf;

use async_trait::async_trait;
use shipfeed_store::FeedItem;

use crate::error::BoxError;
use crate::{Error, Target};

/// JetStream stream the NATS subscriptions publish into (created when missing).
pub const NATS_STREAM: &str = "SHIPFEED";

/// Subject prefix of the NATS subscriptions: items go to `shipfeed.events.<provider>.<status>`
/// (`none` for an event without a status).
pub const NATS_SUBJECT_PREFIX: &str = "shipfeed.events";

/// One way of handing a batch downstream.
#[async_trait]
pub(crate) trait Deliver: Send + Sync {
    /// Delivers the batch, in order; `Ok` only when all of it is durably handed over (flushed,
    /// synced or acknowledged). On `Err` some of it may have been delivered: the caller
    /// delivers the whole batch again (at-least-once).
    async fn deliver(&self, items: &[FeedItem]) -> Result<(), BoxError>;
}

impl Target {
    /// Connects to the target (NATS: the server and its stream; the others open their file or
    /// stream at each batch).
    pub(crate) async fn connect(&self, name: &str) -> Result<Box<dyn Deliver>, Error> {
        Ok(match self {
            Target::Stdout => Box::new(JsonLines(None)),
            Target::File(path) => Box::new(JsonLines(Some(path.clone()))),
            Target::Nats(url) => Box::new(Nats::connect(name, url).await?),
            Target::Http(_) => {
                return Err(Error::Config(format!(
                    "subscription `{name}`: an HTTP target is driven by its pusher"
                )))
            }
        })
    }
}

/// One JSON line per feed item.
fn json_lines(items: &[FeedItem]) -> Result<Vec<u8>, serde_json::Error> {
    let mut lines = Vec::new();
    for item in items {
        serde_json::to_writer(&mut lines, item)?;
        lines.push(b'\n');
    }
    Ok(lines)
}

/// JSON lines on stdout (`None`) or appended to a file.
struct JsonLines(Option<PathBuf>);

#[async_trait]
impl Deliver for JsonLines {
    async fn deliver(&self, items: &[FeedItem]) -> Result<(), BoxError> {
        let lines = json_lines(items)?;
        let file = self.0.clone();
        // Writing and syncing block: off the async workers.
        tokio::task::spawn_blocking(move || write_lines(file, &lines)).await??;
        Ok(())
    }
}

/// Writes and flushes to stdout, or appends to `file` and syncs it (so that the cursor saved
/// afterwards never runs ahead of the file).
fn write_lines(file: Option<PathBuf>, lines: &[u8]) -> std::io::Result<()> {
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

/// NATS JetStream: one message per item, `Nats-Msg-Id` = `event_id`, so that JetStream drops a
/// copy delivered again within its duplicate window.
struct Nats(async_nats::jetstream::Context);

impl Nats {
    async fn connect(name: &str, url: &str) -> Result<Self, Error> {
        let failed = |context: String, source: BoxError| Error::Target {
            name: name.to_owned(),
            context,
            source,
        };
        let client = async_nats::connect(url).await.map_err(|e| {
            failed(
                format!("connect to NATS at {}", crate::config::redacted(url)),
                Box::new(e),
            )
        })?;
        let jetstream = async_nats::jetstream::new(client);
        jetstream
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: NATS_STREAM.to_owned(),
                subjects: vec![format!("{NATS_SUBJECT_PREFIX}.>")],
                ..Default::default()
            })
            .await
            .map_err(|e| {
                failed(
                    format!("create or find the JetStream stream {NATS_STREAM}"),
                    Box::new(e),
                )
            })?;
        Ok(Nats(jetstream))
    }
}

/// The subject and the `Nats-Msg-Id` of a feed item: events go to
/// `shipfeed.events.<provider>.<status>`, retractions to `shipfeed.events.retraction`, state
/// changes to `shipfeed.events.shipment_state.<status>`, alerts to
/// `shipfeed.events.alert.<status>` and their clearing to `shipfeed.events.alert_cleared`,
/// drift to `shipfeed.events.drift.<provider>.<kind>`. The id is the same every time the
/// same item is published (JetStream drops a repeat within its duplicate window) and differs
/// between revisions of an event (a correction is never dropped as a repeat).
fn nats_address(item: &FeedItem) -> (String, String) {
    let subject = match item {
        FeedItem::Event(item) => format!(
            "{NATS_SUBJECT_PREFIX}.{}.{}",
            item.event.provider.as_str(),
            item.event.status.map_or("none", |s| s.as_str())
        ),
        FeedItem::Retraction(_) => format!("{NATS_SUBJECT_PREFIX}.retraction"),
        FeedItem::ShipmentState(item) => format!(
            "{NATS_SUBJECT_PREFIX}.shipment_state.{}",
            item.state
                .as_ref()
                .map_or("none", |state| state.status.as_str())
        ),
        FeedItem::Alert(item) => {
            format!("{NATS_SUBJECT_PREFIX}.alert.{}", item.alert.status.as_str())
        }
        FeedItem::AlertCleared(_) => format!("{NATS_SUBJECT_PREFIX}.alert_cleared"),
        // The key comes from a payload: not in the subject.
        FeedItem::Drift(item) => format!(
            "{NATS_SUBJECT_PREFIX}.drift.{}.{}",
            item.provider.as_str(),
            item.kind.as_str()
        ),
    };
    (subject, message_id(item))
}

/// A feed item's message id: its `Nats-Msg-Id` and its `webhook-id`, the receiver's
/// idempotency key. The same every time the same item is sent, different between revisions of
/// an event (a correction is never dropped as a repeat): `<event_id>:<revision>` for events,
/// `retraction:<event_id>:<revision>`, `shipment_state:<seq>`, the alert's own deterministic
/// id (so a repeat of the same alert is dropped too), `cleared:<alert_id>`, `drift:<seq>`.
pub(crate) fn message_id(item: &FeedItem) -> String {
    match item {
        FeedItem::Event(item) => format!("{}:{}", item.event.event_id.as_str(), item.revision),
        FeedItem::Retraction(item) => format!("retraction:{}:{}", item.event_id, item.revision),
        FeedItem::ShipmentState(item) => format!("shipment_state:{}", item.seq),
        FeedItem::Alert(item) => item.alert.alert_id.clone(),
        FeedItem::AlertCleared(item) => format!("cleared:{}", item.alert_id),
        FeedItem::Drift(item) => format!("drift:{}", item.seq),
    }
}

#[async_trait]
impl Deliver for Nats {
    async fn deliver(&self, items: &[FeedItem]) -> Result<(), BoxError> {
        // Publish the whole batch, then wait for every acknowledgement: one round trip of
        // latency per batch, not per item.
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

#[cfg(test)]
mod tests {
    use super::*;
    use shipfeed_store::{Alert, AlertCleared, AlertItem};

    #[test]
    fn alerts_go_to_subjects_of_their_own_under_ids_that_repeat_for_the_same_alert() {
        let alert = Alert {
            alert_id: shipfeed_store::alert_id("stalled.in_transit", "postnl:3SABC", "e1"),
            rule: "stalled.in_transit".to_owned(),
            status: shipfeed_core::Status::InTransit,
            since: chrono::DateTime::UNIX_EPOCH,
            max_quiet_seconds: 3600,
            last_event_id: shipfeed_core::EventId("e1".to_owned()),
            shipment_key: "postnl:3SABC".to_owned(),
            shipment: shipfeed_core::ShipmentRef::default(),
            raised_at: chrono::DateTime::UNIX_EPOCH,
        };
        let raised = |seq| {
            FeedItem::Alert(AlertItem {
                seq,
                alert: alert.clone(),
            })
        };
        let (subject, id) = nats_address(&raised(7));
        assert_eq!(subject, "shipfeed.events.alert.in_transit");
        assert_eq!(id, alert.alert_id);
        assert_eq!(
            nats_address(&raised(9)).1,
            id,
            "the same alert, the same id"
        );
        let cleared = FeedItem::AlertCleared(AlertCleared {
            seq: 8,
            alert_id: alert.alert_id.clone(),
            rule: alert.rule.clone(),
            shipment_key: alert.shipment_key.clone(),
            cleared_by: None,
            status: None,
            delivery_seq: 3,
        });
        let (subject, cleared_id) = nats_address(&cleared);
        assert_eq!(subject, "shipfeed.events.alert_cleared");
        assert_ne!(cleared_id, id);
    }
}
