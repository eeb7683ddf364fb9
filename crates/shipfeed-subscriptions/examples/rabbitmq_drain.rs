//! How fast a RabbitMQ subscription drains a backlog (`cargo xtask bench rabbitmq` runs this),
//! against a plain `lapin` publish-with-confirms loop publishing the same bodies to the same
//! broker, in the same run.
//!
//! 1. **Backlog**: corpus deliveries (Sendcloud, HappyColis, Shipup) are appended to a fresh
//!    SQLite store and projected (`Projector::run`): a feed of events and shipment states.
//! 2. **Drain**, in interleaved rounds: the baseline (every feed item's JSON published with
//!    `lapin` on one confirming channel, with the subscription's routing keys and properties,
//!    `--batch` messages at a time: publish them all, then await their confirms; no store),
//!    then the RabbitMQ subscription (a new one per round, from the beginning: feed pages
//!    read from the store, items serialized, published, confirmed, the cursor saved per
//!    batch), each timed until the broker has confirmed every item. Both publish persistent
//!    messages to the same durable topic exchange, routed to one durable queue (so every
//!    confirm waits for the disk), which is checked to hold every item and purged between
//!    phases.
//!
//! ```sh
//! cargo run --release -p shipfeed-subscriptions --example rabbitmq_drain -- \
//!     --deliveries 8000 --rounds 5
//! ```
//!
//! Prints `RESULT phase=<baseline|rabbitmq> round=<n> items=<n> seconds=<s>` per drain (read
//! by xtask). The broker is `amqp://guest:guest@127.0.0.1:5672/%2f` unless
//! `SHIPFEED_BENCH_RABBITMQ_URL` says otherwise.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use prometheus_client::registry::Registry;
use shipfeed::registry::{self, Settings as AdapterSettings};
use shipfeed_projector::{Adapters, ProjectionObserver, Projector, ProjectorOptions};
use shipfeed_store::{Arrival, FeedItem, Projection, Store, SystemClock, PROJECTOR};
use shipfeed_subscriptions::{
    rabbitmq_routing_key, Metrics, Runner, Settings, Subscription, SubscriptionConfig,
};
use shipfeed_testkit::corpus;
use tokio::sync::Notify;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEED: u64 = 0x7ab6_17d0;
const EXCHANGE: &str = "shipfeed-bench";
const QUEUE: &str = "shipfeed-bench";

struct Args {
    deliveries: u64,
    rounds: usize,
    batch: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        deliveries: 8_000,
        rounds: 5,
        batch: 500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--deliveries" => args.deliveries = value.parse()?,
            "--rounds" => args.rounds = value.parse()?,
            "--batch" => args.batch = value.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    Ok(args)
}

/// The projector wakes no one here.
struct Quiet;

impl ProjectionObserver for Quiet {
    fn projected(&self, _endpoint: &str, _provider: shipfeed::Provider, _projection: &Projection) {}
}

fn projector(store: &Store) -> Result<Projector> {
    let mut adapters = Adapters::new();
    for provider in corpus::WEBHOOK_PROVIDERS {
        let adapter = registry::adapter(provider, &AdapterSettings::default())?;
        adapters.insert(provider.as_str(), Arc::from(adapter));
    }
    Ok(Projector::new(
        store.clone(),
        adapters,
        Arc::new(Quiet),
        ProjectorOptions {
            alerts: None,
            ..ProjectorOptions::default()
        },
        Arc::new(SystemClock),
    ))
}

/// One message of the baseline: what the subscription would publish for a feed item.
struct Message {
    routing_key: String,
    message_id: String,
    kind: String,
    body: Vec<u8>,
}

/// The baseline: `batch` publishes, then their confirms, until every body is confirmed.
async fn baseline(channel: &lapin::Channel, messages: &[Message], batch: usize) -> Result<()> {
    for chunk in messages.chunks(batch.max(1)) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for message in chunk {
            let properties = lapin::BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_message_id(message.message_id.as_str().into())
                .with_type(message.kind.as_str().into())
                .with_app_id("shipfeed".into());
            confirms.push(
                channel
                    .basic_publish(
                        EXCHANGE.into(),
                        message.routing_key.as_str().into(),
                        BasicPublishOptions::default(),
                        &message.body,
                        properties,
                    )
                    .await?,
            );
        }
        for confirm in confirms {
            if !confirm.await?.is_ack() {
                bail!("the broker refused a baseline message");
            }
        }
    }
    Ok(())
}

/// Checks that the bench queue holds `items` messages, then empties it.
async fn check_and_purge(channel: &lapin::Channel, items: usize, phase: &str) -> Result<()> {
    let queue = channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    if queue.message_count() as usize != items {
        bail!(
            "{phase}: the queue holds {} messages, not {items}",
            queue.message_count()
        );
    }
    channel
        .queue_purge(QUEUE.into(), QueuePurgeOptions::default())
        .await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let url = std::env::var("SHIPFEED_BENCH_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let dir = tempfile::tempdir()?;
    let store = Store::sqlite(dir.path().join("shipfeed.db"))?;

    // 1. The backlog.
    let deliveries = corpus::mixed(&corpus::WEBHOOK_PROVIDERS, SEED, 0..args.deliveries);
    for chunk in deliveries.chunks(256) {
        let arrivals = chunk
            .iter()
            .map(|delivery| Arrival {
                endpoint: delivery.provider.as_str().to_owned(),
                provider: delivery.provider,
                delivery: delivery.raw(),
            })
            .collect();
        store.append(arrivals).await?;
    }
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let projecting = tokio::spawn(projector(&store)?.run(Arc::new(Notify::new()), shutdown));
    let last = i64::try_from(args.deliveries)?;
    while store.cursor(PROJECTOR).await? < last {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    projecting.await?;
    let feed = store.events_after(0, usize::MAX).await?;
    let shipments: HashSet<&str> = feed.iter().filter_map(FeedItem::shipment_key).collect();
    let messages: Vec<Message> = feed
        .iter()
        .map(|item| {
            let body = serde_json::to_vec(item)?;
            let value: serde_json::Value = serde_json::from_slice(&body)?;
            let message_id = match item {
                FeedItem::Event(event) => {
                    format!("{}:{}", event.event.event_id.as_str(), event.revision)
                }
                other => format!("seq:{}", other.seq()),
            };
            Ok(Message {
                routing_key: rabbitmq_routing_key(item),
                message_id,
                kind: value["type"].as_str().unwrap_or_default().to_owned(),
                body,
            })
        })
        .collect::<Result<_>>()?;
    let items = messages.len();
    println!(
        "backlog: {items} feed items over {} shipments, {} bytes of JSON",
        shipments.len(),
        messages.iter().map(|m| m.body.len()).sum::<usize>()
    );

    // The exchange and one durable queue taking everything.
    let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .with_context(|| {
            format!("RabbitMQ at {url} (start it with `rabbitmq-server -detached`)")
        })?;
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            EXCHANGE.into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            QUEUE.into(),
            EXCHANGE.into(),
            "shipfeed.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_purge(QUEUE.into(), QueuePurgeOptions::default())
        .await?;
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;

    // 2. The drains, interleaved.
    for round in 0..args.rounds {
        let started = Instant::now();
        baseline(&publisher, &messages, args.batch).await?;
        let seconds = started.elapsed().as_secs_f64();
        check_and_purge(&channel, items, "baseline").await?;
        println!("RESULT phase=baseline round={round} items={items} seconds={seconds:.3}");

        let name = format!("drain-{round}");
        let table = format!(
            "name = '{name}'\nkind = 'rabbitmq'\nurl = '{url}'\nexchange = '{EXCHANGE}'\nstart = 'beginning'"
        );
        let config: SubscriptionConfig = toml::from_str(&table)?;
        let subscription: Subscription = config.check()?;
        let mut registry = Registry::default();
        let runner = Runner::new(
            store.clone(),
            Arc::new(Notify::new()),
            Metrics::register(&mut registry),
            Settings::default().with_batch_size(args.batch),
        );
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let tasks = runner.start(&[subscription], &shutdown).await?;
        let end = store.feed_end().await?;
        let cursor = format!("subscription:{name}");
        // The cursor moves past a batch once the broker confirmed all of it.
        while store.cursor(&cursor).await? < end {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let _ = stop.send(true);
        for task in tasks {
            task.await?;
        }
        check_and_purge(&channel, items, "rabbitmq").await?;
        println!("RESULT phase=rabbitmq round={round} items={items} seconds={seconds:.3}");
    }
    connection.close(200, "done".into()).await?;
    Ok(())
}
