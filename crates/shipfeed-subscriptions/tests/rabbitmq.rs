//! RabbitMQ subscriptions against the real broker, on both stores: a consumer bound with a
//! topic pattern gets every matching item once (after deduplicating on `message_id`), in feed
//! order per shipment; a connection closed by the broker, or cut in the middle of a batch,
//! loses nothing.
//!
//! RabbitMQ (`amqp://guest:guest@127.0.0.1:5672/%2f`, or `SHIPFEED_TEST_RABBITMQ_URL`) must be
//! running, and `rabbitmqctl` must reach it (the broker-side close): the tests fail, never
//! skip, without them. No test waits on a fixed sleep: each waits for the subscription's saved
//! cursor (saved only after the broker confirmed every message before it), then drains its
//! queues with `basic.get` until they are empty.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use lapin::options::{
    BasicGetOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use shipfeed_store::{FeedItem, Store};
use shipfeed_subscriptions::{RabbitmqTarget, Start, Subscription, Target};
use support::{
    add_parcel_events, clock, run_tag, wait_for_cursor, wait_until, Backend, Replica, TestDb,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

on_both_stores!(
    a_topic_bound_consumer_receives_every_matching_item_once_in_feed_order_per_shipment,
    a_connection_closed_by_the_broker_loses_nothing,
    a_connection_cut_in_the_middle_of_a_batch_loses_nothing_and_keeps_the_order,
    a_broker_that_is_down_holds_the_subscription_back_and_loses_nothing,
);

/// The test broker (`SHIPFEED_TEST_RABBITMQ_URL` overrides).
fn rabbitmq_url() -> String {
    std::env::var("SHIPFEED_TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// One message as a consumer got it.
#[derive(Debug, Clone)]
struct Got {
    message_id: String,
    routing_key: String,
    /// The body: a feed item's JSON.
    item: serde_json::Value,
}

impl Got {
    fn seq(&self) -> i64 {
        self.item["seq"].as_i64().expect("a seq")
    }

    fn is(&self, kind: &str) -> bool {
        self.item["type"] == kind
    }
}

/// The test's consumer side: its own exchange (so that tests do not see each other's
/// messages) and a queue per binding pattern.
struct Consumer {
    connection: lapin::Connection,
    channel: lapin::Channel,
    exchange: String,
    queues: Vec<String>,
}

impl Consumer {
    /// Declares a fresh durable topic exchange and one exclusive queue bound with each of
    /// `patterns`.
    async fn bind(patterns: &[&str]) -> Consumer {
        let url = rabbitmq_url();
        let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "RabbitMQ at {url} is needed by this test: {e}\n\
                     start it with: rabbitmq-server -detached"
                )
            });
        let channel = connection.create_channel().await.unwrap();
        let exchange = format!("shipfeed.test.{}", run_tag());
        channel
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut queues = Vec::new();
        for pattern in patterns {
            let queue = channel
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .unwrap();
            channel
                .queue_bind(
                    queue.name().clone(),
                    exchange.as_str().into(),
                    (*pattern).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            queues.push(queue.name().to_string());
        }
        Consumer {
            connection,
            channel,
            exchange,
            queues,
        }
    }

    /// Everything in queue `n` (of the patterns, in order), taken until it is empty. Once the
    /// subscription's cursor is past an item, the broker has confirmed its message, so it is
    /// in every queue it was routed to: nothing is still on its way.
    async fn drain(&self, n: usize) -> Vec<Got> {
        let mut got = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(
                self.queues[n].as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            let properties = &message.delivery.properties;
            assert_eq!(
                properties.delivery_mode(),
                &Some(2),
                "persistent: {properties:?}"
            );
            assert_eq!(
                properties.content_type().as_ref().map(|t| t.as_str()),
                Some("application/json")
            );
            let item: serde_json::Value = serde_json::from_slice(&message.delivery.data).unwrap();
            assert_eq!(
                properties.kind().as_ref().map(|t| t.to_string()),
                item["type"].as_str().map(str::to_owned),
                "the `type` property is the item's"
            );
            got.push(Got {
                message_id: properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.to_string())
                    .expect("a message_id"),
                routing_key: message.delivery.routing_key.to_string(),
                item,
            });
        }
        got
    }

    /// A subscription publishing to this consumer's exchange through `url`.
    fn subscription(&self, name: &str, url: &str) -> Subscription {
        let target = RabbitmqTarget::new(url, &self.exchange).unwrap();
        Subscription::new(name, Target::Rabbitmq(target), Start::Beginning).unwrap()
    }

    async fn close(self) {
        self.channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
            .unwrap();
        self.connection.close(200, "done".into()).await.unwrap();
    }
}

/// The messages once each (the first copy of each `message_id`), in the order they came.
fn deduplicated(got: &[Got]) -> Vec<Got> {
    let mut seen = HashSet::new();
    got.iter()
        .filter(|got| seen.insert(got.message_id.clone()))
        .cloned()
        .collect()
}

/// The whole feed, in order.
async fn whole_feed(store: &Store) -> Vec<FeedItem> {
    let mut items = Vec::new();
    let mut after = 0;
    loop {
        let batch = store.events_after(after, 1000).await.unwrap();
        let Some(last) = batch.last() else {
            return items;
        };
        after = last.seq();
        items.extend(batch);
    }
}

/// Each shipment's `seq`s in the order given.
fn per_shipment<'a>(items: impl IntoIterator<Item = &'a FeedItem>) -> BTreeMap<String, Vec<i64>> {
    let mut shipments: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for item in items {
        let key = item.shipment_key().unwrap_or_default().to_owned();
        shipments.entry(key).or_default().push(item.seq());
    }
    shipments
}

/// Checks that what a queue got is, after deduplication, exactly the feed's items of type
/// `kind`, each once, with its message id and routing key, in feed order per shipment.
/// Returns how many copies came beyond one per item.
fn check(got: &[Got], feed: &[FeedItem], kind: &str) -> usize {
    let once = deduplicated(got);
    let expected: Vec<&FeedItem> = feed
        .iter()
        .filter(|item| serde_json::to_value(item).unwrap()["type"] == kind)
        .collect();
    let seqs: HashSet<i64> = once.iter().map(Got::seq).collect();
    assert_eq!(seqs.len(), once.len(), "one message id per item");
    assert_eq!(
        seqs,
        expected.iter().map(|item| item.seq()).collect(),
        "every `{kind}` item of the feed, none other"
    );
    let mut received = Vec::new();
    for got in &once {
        let item = expected
            .iter()
            .copied()
            .find(|e| e.seq() == got.seq())
            .unwrap();
        assert_eq!(
            got.item,
            serde_json::to_value(item).unwrap(),
            "as the feed has it"
        );
        received.push(item);
        let id = match item {
            FeedItem::Event(event) => {
                format!("{}:{}", event.event.event_id.as_str(), event.revision)
            }
            FeedItem::ShipmentState(state) => format!("shipment_state:{}", state.seq),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(got.message_id, id);
        assert_eq!(
            got.routing_key,
            shipfeed_subscriptions::rabbitmq_routing_key(item)
        );
    }
    assert_eq!(
        per_shipment(received),
        per_shipment(expected),
        "in feed order per shipment"
    );
    got.len() - once.len()
}

/// A consumer bound with topic patterns gets exactly the items they match, each once, in
/// feed order per shipment, with `message_id` = `event_id:revision` (the state's own id for
/// shipment states): the events on `shipfeed.event.sendcloud.*`, the shipment states on
/// `shipfeed.shipment_state.#`, nothing on a pattern no item matches.
async fn a_topic_bound_consumer_receives_every_matching_item_once_in_feed_order_per_shipment(
    backend: Backend,
) {
    let consumer = Consumer::bind(&[
        "shipfeed.event.sendcloud.*",
        "shipfeed.shipment_state.#",
        "shipfeed.*.shipup.#",
    ])
    .await;
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    add_parcel_events(&store, 4, 3).await;
    let subscriptions = [consumer.subscription("orders", &rabbitmq_url())];
    // Small batches: the feed goes out in several, each confirmed before the cursor moves.
    let replica = Replica::start_with(store.clone(), &subscriptions, |settings| {
        settings
            .with_replica("replica-1")
            .with_clock(clock())
            .with_batch_size(7)
    })
    .await;
    add_parcel_events(&store, 3, 4).await;
    replica.notify();
    let end = store.feed_end().await.unwrap();
    wait_for_cursor(&store, "subscription:orders", end).await;

    let feed = whole_feed(&store).await;
    let events = consumer.drain(0).await;
    assert_eq!(check(&events, &feed, "event"), 0, "no failure, no copy");
    assert!(events
        .iter()
        .all(|got| got.routing_key == "shipfeed.event.sendcloud.delivered"));
    let states = consumer.drain(1).await;
    assert_eq!(check(&states, &feed, "shipment_state"), 0);
    assert!(consumer.drain(2).await.is_empty(), "no shipup item");
    assert_eq!(
        replica.metric("shipfeed_subscription_delivered_total{subscription=\"orders\"}"),
        Some(i64::try_from(feed.len()).unwrap())
    );
    // The gauge is set just after the cursor is saved.
    wait_until("no lag", || async {
        match replica.metric("shipfeed_subscription_lag{subscription=\"orders\"}") {
            Some(0) => Ok(()),
            other => Err(format!("lag {other:?}")),
        }
    })
    .await;
    replica.stop().await;
    consumer.close().await;
}

/// The broker closes the subscription's connection (`rabbitmqctl close_connection`, as an
/// operator would): the next batch connects again and nothing is lost.
async fn a_connection_closed_by_the_broker_loses_nothing(backend: Backend) {
    let consumer = Consumer::bind(&["shipfeed.event.#"]).await;
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let name = format!("closed-{}", run_tag());
    let cursor = format!("subscription:{name}");
    add_parcel_events(&store, 3, 2).await;
    let subscriptions = [consumer.subscription(&name, &rabbitmq_url())];
    let replica = Replica::start(store.clone(), "replica-1", clock(), &subscriptions).await;
    wait_for_cursor(&store, &cursor, store.feed_end().await.unwrap()).await;

    let connection_name = format!("shipfeed subscription {name}");
    let before = broker_connections(&connection_name);
    assert_eq!(before.len(), 1, "{before:?}");
    close_from_the_broker(&before[0]);
    add_parcel_events(&store, 3, 3).await;
    replica.notify();
    wait_for_cursor(&store, &cursor, store.feed_end().await.unwrap()).await;
    let after = broker_connections(&connection_name);
    assert!(
        after.len() == 1 && after != before,
        "connected again: {before:?} then {after:?}"
    );

    let feed = whole_feed(&store).await;
    check(&consumer.drain(0).await, &feed, "event");
    replica.stop().await;
    consumer.close().await;
}

/// The subscription's connection is cut in the middle of a batch (a proxy between it and the
/// broker drops it after part of the batch went through): the batch is published again on a
/// new connection, the messages that made it the first time come twice under the same
/// `message_id`, and after deduplication every item is there once, in feed order per
/// shipment.
async fn a_connection_cut_in_the_middle_of_a_batch_loses_nothing_and_keeps_the_order(
    backend: Backend,
) {
    let consumer = Consumer::bind(&["shipfeed.#"]).await;
    let proxy = Proxy::start().await;
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let name = "cut";
    let cursor = format!("subscription:{name}");
    add_parcel_events(&store, 2, 2).await;
    let subscriptions = [consumer.subscription(name, &proxy.url())];
    let replica = Replica::start(store.clone(), "replica-1", clock(), &subscriptions).await;
    wait_for_cursor(&store, &cursor, store.feed_end().await.unwrap()).await;

    // The open connection goes down after 3000 more bytes towards the broker: two or three
    // messages into the next batch (each is over a kilobyte).
    proxy.cut_open_connections_after(3000);
    add_parcel_events(&store, 5, 4).await;
    replica.notify();
    wait_for_cursor(&store, &cursor, store.feed_end().await.unwrap()).await;

    let feed = whole_feed(&store).await;
    let got = consumer.drain(0).await;
    let events: Vec<Got> = got.iter().filter(|got| got.is("event")).cloned().collect();
    let states: Vec<Got> = got
        .iter()
        .filter(|got| got.is("shipment_state"))
        .cloned()
        .collect();
    let copies = check(&events, &feed, "event") + check(&states, &feed, "shipment_state");
    assert!(
        copies > 0,
        "the messages that went through before the cut came again after it"
    );
    assert!(
        replica
            .metric(&format!(
                "shipfeed_subscription_delivery_failures_total{{subscription=\"{name}\"}}"
            ))
            .unwrap()
            >= 1,
        "the cut batch failed once"
    );
    assert!(proxy.connections() >= 2, "it connected again");
    replica.stop().await;
    consumer.close().await;
}

/// The broker does not take connections for a while (as if it were down), first when the
/// subscription starts, then while it runs: the subscription starts all the same, fails and
/// retries, its cursor stays where it was, and once the broker is back every item goes out
/// once (after deduplication), in feed order per shipment.
async fn a_broker_that_is_down_holds_the_subscription_back_and_loses_nothing(backend: Backend) {
    let consumer = Consumer::bind(&["shipfeed.event.#"]).await;
    let proxy = Proxy::start().await;
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let name = "down";
    let cursor = format!("subscription:{name}");
    add_parcel_events(&store, 2, 2).await;
    let subscriptions = [consumer.subscription(name, &proxy.url())];

    // Down when the subscription starts: it starts all the same, and waits.
    proxy.refuse(true);
    let replica = Replica::start(store.clone(), "replica-1", clock(), &subscriptions).await;
    wait_for_failures(&replica, name, 2).await;
    assert_eq!(
        store.saved_cursor(&cursor).await.unwrap(),
        Some(0),
        "held back"
    );
    proxy.refuse(false);
    let delivered = store.feed_end().await.unwrap();
    wait_for_cursor(&store, &cursor, delivered).await;

    // Down while it runs: the open connection is cut at once, new ones are closed as they
    // come.
    proxy.refuse(true);
    proxy.cut_open_connections_after(0);
    add_parcel_events(&store, 3, 2).await;
    replica.notify();
    // Three more failed attempts: the first on the cut connection, two on reconnections.
    let before = failures(&replica, name);
    wait_for_failures(&replica, name, before + 3).await;
    assert_eq!(
        store.saved_cursor(&cursor).await.unwrap(),
        Some(delivered),
        "held back"
    );
    assert!(
        replica
            .metric(&format!(
                "shipfeed_subscription_lag{{subscription=\"{name}\"}}"
            ))
            .unwrap()
            > 0
    );

    proxy.refuse(false);
    wait_for_cursor(&store, &cursor, store.feed_end().await.unwrap()).await;
    let feed = whole_feed(&store).await;
    check(&consumer.drain(0).await, &feed, "event");
    replica.stop().await;
    consumer.close().await;
}

/// Subscription `name`'s failed deliveries so far.
fn failures(replica: &Replica, name: &str) -> i64 {
    replica
        .metric(&format!(
            "shipfeed_subscription_delivery_failures_total{{subscription=\"{name}\"}}"
        ))
        .unwrap_or_default()
}

/// Waits until subscription `name` has failed `count` deliveries in all.
async fn wait_for_failures(replica: &Replica, name: &str, count: i64) {
    wait_until(&format!("{count} failed deliveries"), || async {
        match failures(replica, name) {
            n if n >= count => Ok(()),
            n => Err(format!("{n} failed")),
        }
    })
    .await;
}

/// The pids of the broker's connections named `connection_name`, from `rabbitmqctl`.
fn broker_connections(connection_name: &str) -> Vec<String> {
    let listed = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "--no-table-headers",
            "--quiet",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "rabbitmqctl is needed by this test (to close a connection from the broker's \
                 side): {e}\ninstall it with: apt-get install rabbitmq-server"
            )
        });
    assert!(
        listed.status.success(),
        "rabbitmqctl list_connections: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    // One line per connection: its pid (`<rabbit@host.1.2.3>`, as close_connection takes it),
    // a tab, its client properties, the connection name among them.
    let listed = String::from_utf8_lossy(&listed.stdout);
    listed
        .lines()
        .filter(|line| line.contains(&format!("\"{connection_name}\"")))
        .filter_map(|line| line.split('\t').next())
        .map(str::to_owned)
        .collect()
}

/// Closes the broker's connection `pid` with `rabbitmqctl`, as an operator would.
fn close_from_the_broker(pid: &str) {
    let closed = std::process::Command::new("rabbitmqctl")
        .args(["close_connection", pid, "closed by the shipfeed test"])
        .output()
        .unwrap();
    assert!(
        closed.status.success(),
        "rabbitmqctl close_connection: {}",
        String::from_utf8_lossy(&closed.stderr)
    );
}

/// A TCP proxy in front of the broker that can cut the connections open at a given moment
/// after a given number of further bytes towards the broker.
struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    /// New connections are closed at once (the broker is "down").
    refusing: AtomicBool,
    /// Connections accepted so far; each is numbered in that order.
    accepted: AtomicU64,
    /// Connections numbered below this one are cut once `budget` runs out.
    doomed_below: AtomicU64,
    /// Bytes the doomed connections may still forward towards the broker, between them.
    budget: AtomicI64,
}

impl Proxy {
    async fn start() -> Proxy {
        let broker: lapin::uri::AMQPUri = rabbitmq_url().parse().unwrap();
        let upstream = format!("{}:{}", broker.authority.host, broker.authority.port);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            refusing: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            doomed_below: AtomicU64::new(0),
            budget: AtomicI64::new(i64::MAX),
        });
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if shared.refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let number = shared.accepted.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let Ok(broker) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    pump(client, broker, number, &state).await;
                });
            }
        });
        Proxy { addr, state, task }
    }

    /// The broker's URL through the proxy.
    fn url(&self) -> String {
        let broker: lapin::uri::AMQPUri = rabbitmq_url().parse().unwrap();
        let vhost = if broker.vhost == "/" {
            "%2f".to_owned()
        } else {
            broker.vhost
        };
        format!(
            "amqp://{}:{}@{}/{vhost}",
            broker.authority.userinfo.username, broker.authority.userinfo.password, self.addr
        )
    }

    /// The connections open now are cut once they have forwarded `bytes` more bytes towards
    /// the broker (mid-frame, as a network would); later ones are left alone.
    fn cut_open_connections_after(&self, bytes: i64) {
        self.state.budget.store(bytes, Ordering::SeqCst);
        self.state
            .doomed_below
            .store(self.state.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Whether new connections are closed at once.
    fn refuse(&self, refusing: bool) {
        self.state.refusing.store(refusing, Ordering::SeqCst);
    }

    fn connections(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways until either side closes, or until a doomed connection's budget towards
/// the broker runs out (it then forwards what is left of the budget and drops both sides).
async fn pump(
    mut client: tokio::net::TcpStream,
    mut broker: tokio::net::TcpStream,
    number: u64,
    state: &ProxyState,
) {
    let (mut client_read, mut client_write) = client.split();
    let (mut broker_read, mut broker_write) = broker.split();
    let towards_broker = async {
        let mut buffer = vec![0_u8; 16 * 1024];
        loop {
            let read = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            let mut forward = read;
            let mut cut = false;
            if number < state.doomed_below.load(Ordering::SeqCst) {
                let before = state.budget.fetch_sub(read as i64, Ordering::SeqCst);
                if before < read as i64 {
                    forward = usize::try_from(before.max(0)).unwrap();
                    cut = true;
                }
            }
            if broker_write.write_all(&buffer[..forward]).await.is_err() || cut {
                return;
            }
        }
    };
    let towards_client = tokio::io::copy(&mut broker_read, &mut client_write);
    tokio::select! {
        () = towards_broker => {}
        _ = towards_client => {}
    }
}

/// A broker that answers but refuses (here: the credentials) stops the start, with its reason;
/// only one that cannot be reached lets its subscription start and wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_refuses_the_credentials_stops_the_start() {
    let broker: lapin::uri::AMQPUri = rabbitmq_url().parse().unwrap();
    let url = format!(
        "amqp://{}:not-the-password@{}:{}/%2f",
        broker.authority.userinfo.username, broker.authority.host, broker.authority.port
    );
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.open().await;
    let target = RabbitmqTarget::new(&url, "shipfeed").unwrap();
    let subscription = Subscription::new("refused", Target::Rabbitmq(target), Start::End).unwrap();
    let runner = shipfeed_subscriptions::Runner::new(
        store,
        Arc::new(tokio::sync::Notify::new()),
        shipfeed_subscriptions::Metrics::default(),
        shipfeed_subscriptions::Settings::default(),
    );
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let error = runner.start(&[subscription], &shutdown).await.unwrap_err();
    let shown = shipfeed_core::error_chain(&error);
    assert!(shown.contains("subscription `refused`"), "{shown}");
    assert!(!shown.contains("not-the-password"), "{shown}");
}
