//! Handing a batch of feed items to a target: JSON lines on stdout or in a file, NATS
//! JetStream messages or RabbitMQ messages. Each item is written exactly as `GET /v1/events`
//! lists it,
//! `{"seq": N, "type": "event", ...}` (`schema/feed-item.schema.json`).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use shipfeed_store::FeedItem;

use crate::error::BoxError;
use crate::{Error, RabbitmqTarget, Target};

/// JetStream stream the NATS subscriptions publish into (created when missing).
pub const NATS_STREAM: &str = "SHIPFEED";

/// Subject prefix of the NATS subscriptions: items go to `shipfeed.events.<provider>.<status>`
/// (`none` for an event without a status).
pub const NATS_SUBJECT_PREFIX: &str = "shipfeed.events";

/// The exchange a RabbitMQ subscription publishes to unless its `exchange` says otherwise.
pub const RABBITMQ_EXCHANGE: &str = "shipfeed";

/// First word of a RabbitMQ subscription's routing keys:
/// `shipfeed.<type>.<provider>.<status>` (see [`rabbitmq_routing_key`]).
pub const RABBITMQ_ROUTING_PREFIX: &str = "shipfeed";

/// How long a batch's publisher confirms may take; then the connection is given up and the
/// batch is published again on a new one.
const RABBITMQ_CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);

/// How long connecting to RabbitMQ (TCP, handshake, exchange, confirm mode) may take; then the
/// broker counts as unreachable.
const RABBITMQ_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
            Target::Rabbitmq(rabbitmq) => Box::new(Rabbitmq::connect(name, rabbitmq).await?),
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

/// The feed item's `type`, as its JSON has it.
fn item_type(item: &FeedItem) -> &'static str {
    match item {
        FeedItem::Event(_) => "event",
        FeedItem::Retraction(_) => "retraction",
        FeedItem::ShipmentState(_) => "shipment_state",
        FeedItem::Alert(_) => "alert",
        FeedItem::AlertCleared(_) => "alert_cleared",
        FeedItem::Drift(_) => "drift",
    }
}

/// A feed item's RabbitMQ routing key, `shipfeed.<type>.<provider>.<status>`, always four
/// words so that consumers bind with topic patterns such as `shipfeed.event.*.delivered` or
/// `shipfeed.*.sendcloud.#`:
///
/// | type | provider | status |
/// |---|---|---|
/// | `event` | the event's | the event's |
/// | `retraction` | the withdrawn event's | `none` |
/// | `shipment_state` | the event that set the status | the shipment's status now |
/// | `alert` | the shipment's last event | the status the shipment is stuck in |
/// | `alert_cleared` | the event that cleared it | the shipment's status now |
/// | `drift` | the provider | the drift's kind (`status_code`, `field`, ...) |
///
/// A word that is not known is `none`. Every word comes from a closed list (types, providers,
/// statuses, drift kinds), never from a payload.
///
/// ```
/// # use shipfeed_store::{FeedItem, Retraction};
/// let retraction = FeedItem::Retraction(Retraction {
///     seq: 9,
///     event_id: "sendcloud:h0123".to_owned(),
///     revision: 2,
///     shipment_key: "postnl:3SABC".to_owned(),
///     delivery_seq: 4,
/// });
/// assert_eq!(
///     shipfeed_subscriptions::rabbitmq_routing_key(&retraction),
///     "shipfeed.retraction.sendcloud.none"
/// );
/// ```
pub fn rabbitmq_routing_key(item: &FeedItem) -> String {
    /// The provider of an event id (`<provider>:<id>`).
    fn provider_of(event_id: &str) -> &'static str {
        event_id
            .split_once(':')
            .and_then(|(provider, _)| provider.parse::<shipfeed_core::Provider>().ok())
            .map_or("none", |provider| provider.as_str())
    }
    let status = |status: Option<shipfeed_core::Status>| status.map_or("none", |s| s.as_str());
    let (provider, status) = match item {
        FeedItem::Event(item) => (item.event.provider.as_str(), status(item.event.status)),
        FeedItem::Retraction(item) => (provider_of(&item.event_id), "none"),
        FeedItem::ShipmentState(item) => match &item.state {
            Some(state) => (
                provider_of(state.status_event_id.as_str()),
                state.status.as_str(),
            ),
            None => ("none", "none"),
        },
        FeedItem::Alert(item) => (
            provider_of(item.alert.last_event_id.as_str()),
            item.alert.status.as_str(),
        ),
        FeedItem::AlertCleared(item) => (
            item.cleared_by
                .as_ref()
                .map_or("none", |id| provider_of(id.as_str())),
            status(item.status),
        ),
        FeedItem::Drift(item) => (item.provider.as_str(), item.kind.as_str()),
    };
    format!(
        "{RABBITMQ_ROUTING_PREFIX}.{}.{provider}.{status}",
        item_type(item)
    )
}

/// RabbitMQ: one persistent message per item on a topic exchange, on a channel in confirm
/// mode. A batch is published in feed order on that one channel (so the broker enqueues it in
/// that order), and is delivered once the broker has confirmed every message of it.
///
/// After any failure (the connection or channel closed, a nack, no confirms in time) the
/// connection is dropped; the next attempt, which the runner makes with backoff, connects
/// again and publishes the whole batch again under the same message ids.
struct Rabbitmq {
    name: String,
    target: RabbitmqTarget,
    /// The open connection, `None` after a failure.
    link: tokio::sync::Mutex<Option<RabbitmqLink>>,
}

/// A connection and its confirming channel.
struct RabbitmqLink {
    connection: lapin::Connection,
    channel: lapin::Channel,
}

impl RabbitmqLink {
    /// Connects, declares the exchange (durable topic; a no-op when it exists so) and puts a
    /// channel in confirm mode, within [`RABBITMQ_CONNECT_TIMEOUT`] (a timeout is an I/O
    /// error: the broker is unreachable).
    async fn open(name: &str, target: &RabbitmqTarget) -> Result<Self, lapin::Error> {
        tokio::time::timeout(RABBITMQ_CONNECT_TIMEOUT, Self::open_now(name, target))
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no connection within {}s",
                        RABBITMQ_CONNECT_TIMEOUT.as_secs()
                    ),
                )
                .into())
            })
    }

    async fn open_now(name: &str, target: &RabbitmqTarget) -> Result<Self, lapin::Error> {
        use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};

        let properties = lapin::ConnectionProperties::default()
            .with_connection_name(format!("shipfeed subscription {name}").into());
        let connection = lapin::Connection::connect(&target.url, properties).await?;
        let channel = connection.create_channel().await?;
        channel
            .exchange_declare(
                target.exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(RabbitmqLink {
            connection,
            channel,
        })
    }

    fn usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Closes the connection, if it is still open; best effort and bounded (it is given up).
    async fn close(self) {
        if self.connection.status().connected() {
            let closing = self.connection.close(200, "shipfeed reconnects".into());
            let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
        }
    }
}

impl Rabbitmq {
    /// Connects and declares the exchange. A broker that cannot be reached (a network or
    /// connection error) is not an error here: the subscription starts, held back, and
    /// connects at its first batch (retried with backoff). A broker that answers but refuses
    /// (credentials, permissions, an exchange of another type) is.
    async fn connect(name: &str, target: &RabbitmqTarget) -> Result<Self, Error> {
        let link = match RabbitmqLink::open(name, target).await {
            Ok(link) => Some(link),
            Err(error) if unreachable(&error) => {
                tracing::warn!(
                    subscription = %name,
                    broker = %crate::config::redacted(&target.url),
                    error = %shipfeed_core::error_chain(&error),
                    "RabbitMQ cannot be reached; the subscription waits for it"
                );
                None
            }
            Err(error) => {
                return Err(Error::Target {
                    name: name.to_owned(),
                    context: format!(
                        "connect to RabbitMQ at {} and declare the topic exchange {}",
                        crate::config::redacted(&target.url),
                        target.exchange
                    ),
                    source: Box::new(error),
                })
            }
        };
        Ok(Rabbitmq {
            name: name.to_owned(),
            target: target.clone(),
            link: tokio::sync::Mutex::new(link),
        })
    }

    /// Publishes the batch in order and waits for every confirm.
    async fn publish(&self, channel: &lapin::Channel, items: &[FeedItem]) -> Result<(), BoxError> {
        use lapin::options::BasicPublishOptions;

        let exchange: lapin::types::ShortString = self.target.exchange.as_str().into();
        let mut confirms = Vec::with_capacity(items.len());
        for item in items {
            let body = serde_json::to_vec(item)?;
            let properties = lapin::BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2) // persistent
                .with_message_id(message_id(item).into())
                .with_type(item_type(item).into())
                .with_app_id("shipfeed".into());
            let confirm = channel
                .basic_publish(
                    exchange.clone(),
                    rabbitmq_routing_key(item).into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await?;
            confirms.push(confirm);
        }
        let confirmed = async {
            for (item, confirm) in items.iter().zip(confirms) {
                match confirm.await? {
                    lapin::Confirmation::Ack(_) => {}
                    lapin::Confirmation::Nack(_) => {
                        return Err(format!(
                            "the broker refused (nacked) message {}",
                            message_id(item)
                        )
                        .into())
                    }
                    lapin::Confirmation::NotRequested => {
                        return Err("the channel is not in confirm mode".into())
                    }
                }
            }
            Ok::<(), BoxError>(())
        };
        tokio::time::timeout(RABBITMQ_CONFIRM_TIMEOUT, confirmed)
            .await
            .map_err(|_| {
                format!(
                    "no publisher confirms within {}s",
                    RABBITMQ_CONFIRM_TIMEOUT.as_secs()
                )
            })?
    }
}

/// Whether a connection attempt failed for want of a broker (the network, a connection that
/// closed or went quiet) rather than because the broker refused something.
fn unreachable(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        lapin::ErrorKind::IOError(_)
            | lapin::ErrorKind::InvalidConnectionState(_)
            | lapin::ErrorKind::MissingHeartbeatError
    )
}

#[async_trait]
impl Deliver for Rabbitmq {
    async fn deliver(&self, items: &[FeedItem]) -> Result<(), BoxError> {
        let mut link = self.link.lock().await;
        if !link.as_ref().is_some_and(RabbitmqLink::usable) {
            if let Some(old) = link.take() {
                old.close().await;
            }
            let opened = RabbitmqLink::open(&self.name, &self.target)
                .await
                .map_err(|e| {
                    format!(
                        "connect to RabbitMQ at {}: {}",
                        crate::config::redacted(&self.target.url),
                        shipfeed_core::error_chain(&e)
                    )
                })?;
            tracing::info!(subscription = %self.name, "connected to RabbitMQ");
            *link = Some(opened);
        }
        let Some(current) = link.as_ref() else {
            return Err("no RabbitMQ connection".into());
        };
        let published = self.publish(&current.channel, items).await;
        if published.is_err() {
            if let Some(old) = link.take() {
                old.close().await;
            }
        }
        published
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
