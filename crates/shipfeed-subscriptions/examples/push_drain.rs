//! How fast an HTTP push subscription drains a backlog (`cargo xtask bench push` runs this),
//! against a plain `reqwest` loop POSTing the same bodies to the same local receiver at the same
//! concurrency, in the same run; then the latency from an ingest's acknowledgement to the
//! receiver's receipt of its events.
//!
//! 1. **Backlog**: signed corpus deliveries (Sendcloud, HappyColis, Shipup) are appended to a
//!    fresh SQLite store and projected (`Projector::run`): a feed of events and shipment
//!    states over thousands of shipments.
//! 2. **Drain**, in interleaved rounds: the baseline (every feed item's JSON POSTed with
//!    `reqwest`, `--concurrency` at a time, unsigned, no store), then the push subscription
//!    (a new one per round, from the beginning: signing, ordering per shipment, the cursor
//!    saved per batch), each timed until the receiver has answered every item.
//! 3. **Latency**: the projector and a push subscription running, one new delivery appended
//!    every `1/--rate` s (its `append` returning is when the service answers 2xx); for each
//!    event, the time from that moment to the receiver's receipt.
//!
//! ```sh
//! cargo run --release -p shipfeed-subscriptions --example push_drain -- \
//!     --deliveries 20000 --concurrency 16 --rounds 3
//! ```
//!
//! Prints `RESULT phase=<baseline|push> items=<n> seconds=<s>` per drain and
//! `RESULT phase=latency samples=<n> p50_ms=<x> p99_ms=<y> max_ms=<z>` (read by xtask).
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use futures_util::StreamExt as _;
use prometheus_client::registry::Registry;
use shipfeed::registry::{self, Settings as AdapterSettings};
use shipfeed_projector::{Adapters, ProjectionObserver, Projector, ProjectorOptions};
use shipfeed_store::{Arrival, FeedItem, Projection, Store, SystemClock, PROJECTOR};
use shipfeed_subscriptions::{Metrics, Runner, Settings, Subscription, SubscriptionConfig};
use shipfeed_testkit::corpus;
use tokio::sync::Notify;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Corpus seeds: the backlog's and the latency phase's deliveries share no id.
const BACKLOG_SEED: u64 = 0x9051_d7a1;
const LATENCY_SEED: u64 = 0x9051_1a7e;

/// The signing secret of the bench's subscriptions (not a secret).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Args {
    deliveries: u64,
    concurrency: usize,
    rounds: usize,
    rate: f64,
    latency_seconds: f64,
    batch: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        deliveries: 20_000,
        concurrency: 16,
        rounds: 3,
        rate: 50.0,
        latency_seconds: 10.0,
        batch: 500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--deliveries" => args.deliveries = value.parse()?,
            "--concurrency" => args.concurrency = value.parse()?,
            "--rounds" => args.rounds = value.parse()?,
            "--rate" => args.rate = value.parse()?,
            "--latency-seconds" => args.latency_seconds = value.parse()?,
            "--batch" => args.batch = value.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    Ok(args)
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat` (0 elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 Hz.
    (ticks(11) + ticks(12)) / 100.0
}

/// The local receiver: answers 200 to every POST, counts them, and notes when each
/// `webhook-id` first arrived.
#[derive(Default)]
struct Receiver {
    count: AtomicU64,
    /// Set for the latency phase only: the drains' receiver does the same work for both.
    timing: std::sync::atomic::AtomicBool,
    first_seen: Mutex<HashMap<String, Instant>>,
}

async fn receive(
    axum::extract::State(receiver): axum::extract::State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let at = Instant::now();
    let timing = receiver.timing.load(Ordering::Relaxed);
    if let Some(id) = headers
        .get("webhook-id")
        .filter(|_| timing)
        .and_then(|v| v.to_str().ok())
    {
        if let Ok(mut seen) = receiver.first_seen.lock() {
            seen.entry(id.to_owned()).or_insert(at);
        }
    }
    drop(body);
    receiver.count.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

async fn start_receiver() -> Result<(Arc<Receiver>, SocketAddr)> {
    let receiver = Arc::new(Receiver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(Arc::clone(&receiver));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((receiver, address))
}

/// Wakes the subscriptions after each projection with new events (the service's observer does).
struct Wake(Arc<Notify>);

impl ProjectionObserver for Wake {
    fn projected(&self, _endpoint: &str, _provider: shipfeed::Provider, projection: &Projection) {
        if !projection.events.is_empty() {
            self.0.notify_waiters();
        }
    }
}

fn projector(store: &Store, wake: Arc<Notify>) -> Result<Projector> {
    let mut adapters = Adapters::new();
    for provider in corpus::WEBHOOK_PROVIDERS {
        let adapter = registry::adapter(provider, &AdapterSettings::default())?;
        adapters.insert(provider.as_str(), Arc::from(adapter));
    }
    Ok(Projector::new(
        store.clone(),
        adapters,
        Arc::new(Wake(wake)),
        ProjectorOptions {
            alerts: None,
            ..ProjectorOptions::default()
        },
        Arc::new(SystemClock),
    ))
}

fn arrival(delivery: &corpus::Delivery) -> Arrival {
    Arrival {
        endpoint: delivery.provider.as_str().to_owned(),
        provider: delivery.provider,
        delivery: delivery.raw(),
    }
}

fn subscription(
    dir: &std::path::Path,
    name: &str,
    url: &str,
    concurrency: usize,
    start: &str,
) -> Result<Subscription> {
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, SECRET)?;
    let table = format!(
        "name = '{name}'\nkind = 'http'\nurl = '{url}'\nsecret_file = '{}'\nstart = '{start}'\nconcurrency = {concurrency}",
        secret_file.display()
    );
    let config: SubscriptionConfig = toml::from_str(&table)?;
    Ok(config.check()?)
}

fn runner(store: &Store, wake: Arc<Notify>, batch: usize) -> Runner {
    let mut registry = Registry::default();
    let settings = Settings::default().with_batch_size(batch);
    Runner::new(
        store.clone(),
        wake,
        Metrics::register(&mut registry),
        settings,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let store = Store::sqlite(dir.path().join("shipfeed.db"))?;
    let (receiver, address) = start_receiver().await?;
    let url = format!("http://{address}/hook");

    // 1. The backlog.
    let deliveries = corpus::mixed(&corpus::WEBHOOK_PROVIDERS, BACKLOG_SEED, 0..args.deliveries);
    for chunk in deliveries.chunks(256) {
        store.append(chunk.iter().map(arrival).collect()).await?;
    }
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let projecting = tokio::spawn(
        projector(&store, Arc::new(Notify::new()))?.run(Arc::new(Notify::new()), shutdown),
    );
    let last = i64::try_from(args.deliveries)?;
    while store.cursor(PROJECTOR).await? < last {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    projecting.await?;
    let feed = store.events_after(0, usize::MAX).await?;
    let shipments: HashSet<&str> = feed.iter().filter_map(FeedItem::shipment_key).collect();
    let bodies: Vec<Vec<u8>> = feed
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()?;
    let items = bodies.len() as u64;
    println!(
        "backlog: {items} feed items over {} shipments (concurrency {}: {:.0}x as many shipments)",
        shipments.len(),
        args.concurrency,
        shipments.len() as f64 / args.concurrency as f64
    );

    // What reading the feed back costs the push (for BENCHMARKS.md's account of the ratio):
    // pages of 500 read and each item serialized again.
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let mut after = 0;
    let mut bytes = 0;
    loop {
        let page = store.events_after(after, 500).await?;
        let Some(last) = page.last() else { break };
        after = last.seq();
        for item in &page {
            bytes += serde_json::to_vec(item)?.len();
        }
    }
    println!(
        "RESULT phase=read items={items} seconds={:.3} cpu_seconds={:.2} bytes={bytes}",
        started.elapsed().as_secs_f64(),
        cpu_seconds() - cpu
    );

    // 2. The drains, interleaved.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    for round in 0..args.rounds {
        // (Set PUSH_DRAIN_ONLY_PUSH for a profile of the push alone.)
        if std::env::var_os("PUSH_DRAIN_ONLY_PUSH").is_none() {
            let before = receiver.count.load(Ordering::Relaxed);
            let (started, cpu) = (Instant::now(), cpu_seconds());
            let failures = futures_util::stream::iter(bodies.iter().map(|body| {
                let request = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone());
                async move {
                    request
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                }
            }))
            .buffer_unordered(args.concurrency)
            .filter(|ok| std::future::ready(!ok))
            .count()
            .await;
            let seconds = started.elapsed().as_secs_f64();
            if failures > 0 || receiver.count.load(Ordering::Relaxed) - before != items {
                bail!("the baseline lost requests ({failures} failed)");
            }
            let cpu = cpu_seconds() - cpu;
            println!("RESULT phase=baseline round={round} items={items} seconds={seconds:.3} cpu_seconds={cpu:.2}");
        }

        let name = format!("drain-{round}");
        let pushing = subscription(dir.path(), &name, &url, args.concurrency, "beginning")?;
        let before = receiver.count.load(Ordering::Relaxed);
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let (started, cpu) = (Instant::now(), cpu_seconds());
        let tasks = runner(&store, Arc::new(Notify::new()), args.batch)
            .start(&[pushing], &shutdown)
            .await?;
        let end = store.feed_end().await?;
        let cursor = format!("subscription:{name}");
        while store.cursor(&cursor).await? < end
            || receiver.count.load(Ordering::Relaxed) - before < items
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        let _ = stop.send(true);
        for task in tasks {
            task.await?;
        }
        let sent = receiver.count.load(Ordering::Relaxed) - before;
        if !store.push_messages(&name, None, 0, 1).await?.is_empty() {
            bail!("the push left messages parked");
        }
        println!("RESULT phase=push round={round} items={sent} seconds={seconds:.3} cpu_seconds={cpu:.2}");
    }

    // 3. Latency: ingest acknowledged -> received.
    receiver.timing.store(true, Ordering::Relaxed);
    let wake = Arc::new(Notify::new());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let inbox = Arc::new(Notify::new());
    let projecting = tokio::spawn(
        projector(&store, Arc::clone(&wake))?.run(Arc::clone(&inbox), shutdown.clone()),
    );
    let tasks = runner(&store, Arc::clone(&wake), args.batch)
        .start(
            &[subscription(
                dir.path(),
                "latency",
                &url,
                args.concurrency,
                "end",
            )?],
            &shutdown,
        )
        .await?;
    let count = (args.rate * args.latency_seconds) as u64;
    let probes = corpus::mixed(&corpus::WEBHOOK_PROVIDERS, LATENCY_SEED, 0..count);
    let mut acknowledged: HashMap<i64, Instant> = HashMap::new();
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let started = tokio::time::Instant::now();
    for (n, probe) in probes.iter().enumerate() {
        tokio::time::sleep_until(started + period.mul_f64(n as f64)).await;
        let seqs = store.append(vec![arrival(probe)]).await?;
        let at = Instant::now();
        inbox.notify_waiters();
        for seq in seqs {
            acknowledged.insert(seq, at);
        }
    }
    let last_seq = acknowledged.keys().copied().max().unwrap_or_default();
    while store.cursor(PROJECTOR).await? < last_seq {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let end = store.feed_end().await?;
    while store.cursor("subscription:latency").await? < end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(true);
    projecting.await?;
    for task in tasks {
        task.await?;
    }
    let seen = receiver
        .first_seen
        .lock()
        .map_err(|_| anyhow::anyhow!("receiver state poisoned"))?
        .clone();
    let mut latencies = Vec::new();
    for item in store.events_after(items as i64, usize::MAX).await? {
        let FeedItem::Event(event) = &item else {
            continue;
        };
        let id = format!("{}:{}", event.event.event_id.as_str(), event.revision);
        let first = store.revisions(event.event.event_id.as_str()).await?;
        let Some((_, delivery_seq, _)) = first.first() else {
            continue;
        };
        if let (Some(sent), Some(got)) = (acknowledged.get(delivery_seq), seen.get(&id)) {
            latencies.push(got.saturating_duration_since(*sent).as_secs_f64() * 1e3);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "RESULT phase=latency samples={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        latencies.len(),
        quantile(0.5),
        quantile(0.99),
        quantile(1.0)
    );
    Ok(())
}
