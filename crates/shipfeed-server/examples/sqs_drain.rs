//! The SQS half of the benchmarks (`cargo xtask bench sqs` builds and runs this against a
//! private `moto_server`): drain the same Seven Senders messages (a) through shipfeed —
//! [`shipfeed_sqs::SqsSource`] normalizing each message and committing it into a durable
//! SQLite store before deleting it — and (b) through a raw aws-sdk-sqs receive/delete loop that
//! does nothing with the messages. Same queue server, same feeding, same concurrency. A third
//! drain, (c) `raw_attributes`, is the raw loop asking for the message attributes shipfeed asks
//! for (`SentTimestamp`, `ApproximateReceiveCount`, all message attributes): a reference that
//! tells the queue's cost of those attributes from shipfeed's own.
//!
//! Feeding: in waves of `--max-depth` messages (default 100; moto slows down as a queue
//! grows), each wave sent at once (10 concurrent batches of 10), then drained before the next
//! is sent. A run's figure is messages / drain time, the drain time being the sum over waves of
//! the time from the wave being entirely on the queue to its last message consumed (the wall
//! time including feeding is printed too). Both drains poll with `--wait-seconds` (default 0,
//! short polling): moto's long polling waits for a *full* batch or the whole wait, where SQS
//! returns as soon as a message is there, so long polls against moto would measure its wait.
//!
//! ```sh
//! cargo run --release -p shipfeed-server --example sqs_drain -- \
//!     --endpoint-url http://127.0.0.1:5000 --messages 3000 --rounds 2
//! ```
//!
//! Prints one `RESULT mode=<raw|raw_attributes|shipfeed> round=<n> messages=<n> seconds=<s>`
//! line per run (read by xtask), then a summary.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use shipfeed::registry::{self, Settings};
use shipfeed::Provider;
use shipfeed_server::{Inbox, InboxObserver, StoreInbox};
use shipfeed_sqs::{QueueRef, SqsConfig, SqsSource};
use shipfeed_store::Store;
use shipfeed_testkit::corpus;

const API_KEY: &str = "7s-bench-api-key";
const REGION: &str = "eu-central-1";

struct Args {
    endpoint_url: String,
    messages: u64,
    max_depth: u64,
    pollers: usize,
    wait_seconds: u8,
    rounds: usize,
    work_dir: std::path::PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        endpoint_url: String::new(),
        messages: 3000,
        max_depth: 100,
        pollers: 2,
        wait_seconds: 0,
        rounds: 2,
        work_dir: std::env::temp_dir().join(format!("shipfeed-sqs-drain-{}", std::process::id())),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoint-url" => args.endpoint_url = value()?,
            "--messages" => args.messages = value()?.parse()?,
            "--max-depth" => args.max_depth = value()?.parse()?,
            "--pollers" => args.pollers = value()?.parse()?,
            "--wait-seconds" => args.wait_seconds = value()?.parse()?,
            "--rounds" => args.rounds = value()?.parse()?,
            "--work-dir" => args.work_dir = value()?.into(),
            other => bail!("unknown argument {other}"),
        }
    }
    if args.endpoint_url.is_empty() {
        bail!("--endpoint-url is required (a moto_server, e.g. http://127.0.0.1:5000)");
    }
    if args.max_depth < 10 {
        bail!("--max-depth must be at least 10 (one send batch)");
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.work_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(&args));
    let _ = std::fs::remove_dir_all(&args.work_dir);
    result
}

async fn run(args: &Args) -> Result<()> {
    let client = client(&args.endpoint_url);
    let bodies: Arc<Vec<String>> = Arc::new(
        corpus::generate(Provider::SevenSenders, 0x5eed_5175, 0..args.messages)
            .into_iter()
            .map(|d| String::from_utf8_lossy(&d.body).into_owned())
            .collect(),
    );
    let bytes: usize = bodies.iter().map(String::len).sum();
    eprintln!(
        "sqs_drain: {} Seven Senders messages ({} B avg), depth ≤ {}, {} pollers, wait {} s, {} round(s)",
        args.messages,
        bytes / bodies.len().max(1),
        args.max_depth,
        args.pollers,
        args.wait_seconds,
        args.rounds
    );
    let mut raw_rates = Vec::new();
    let mut attribute_rates = Vec::new();
    let mut shipfeed_rates = Vec::new();
    for round in 1..=args.rounds {
        // Alternate the order so that a server that drifts does not favour one side.
        let modes = if round % 2 == 1 {
            ["raw", "raw_attributes", "shipfeed"]
        } else {
            ["shipfeed", "raw_attributes", "raw"]
        };
        for mode in modes {
            let queue = format!("bench-{mode}-{round}-{}", std::process::id());
            let url = create_queue(&client, &queue).await?;
            let consumed = Arc::new(AtomicU64::new(0));
            let started = Instant::now();
            let feeder = tokio::spawn(feed(
                client.clone(),
                url.clone(),
                Arc::clone(&bodies),
                Arc::clone(&consumed),
                args.max_depth,
            ));
            let detail = match mode {
                "raw" => raw_drain(&client, &url, args, &consumed, false).await?,
                "raw_attributes" => raw_drain(&client, &url, args, &consumed, true).await?,
                _ => shipfeed_drain(args, &url, &consumed, round).await?,
            };
            let wall = started.elapsed().as_secs_f64();
            let seconds = feeder.await.context("feeder task")??.as_secs_f64();
            // Every message was consumed (stored, or deleted by the raw loop, each id once);
            // what may remain in flight is a receive abandoned at shutdown, whose messages moto
            // had already handed out again (it sometimes gives one message to two polls).
            let (visible, in_flight) = depth(&client, &url).await?;
            if visible != 0 {
                bail!("{mode}: {visible} messages still visible after the drain");
            }
            let detail = format!("{detail} left_in_flight={in_flight}");
            let rate = args.messages as f64 / seconds;
            println!(
                "RESULT mode={mode} round={round} messages={} seconds={seconds:.3} msgs_per_s={rate:.1} wall_seconds={wall:.3} wall_msgs_per_s={:.1} {detail}",
                args.messages,
                args.messages as f64 / wall
            );
            match mode {
                "raw" => raw_rates.push(rate),
                "raw_attributes" => attribute_rates.push(rate),
                _ => shipfeed_rates.push(rate),
            }
            let _ = client.delete_queue().queue_url(&url).send().await;
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "SUMMARY raw_msgs_per_s={:.1} raw_attributes_msgs_per_s={:.1} shipfeed_msgs_per_s={:.1} ratio={:.3} attributes_ratio={:.3}",
        mean(&raw_rates),
        mean(&attribute_rates),
        mean(&shipfeed_rates),
        mean(&shipfeed_rates) / mean(&raw_rates),
        mean(&shipfeed_rates) / mean(&attribute_rates)
    );
    Ok(())
}

fn client(endpoint_url: &str) -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(API_KEY, "", None, None, "bench"))
        .endpoint_url(endpoint_url)
        .build();
    Client::from_conf(config)
}

async fn create_queue(client: &Client, name: &str) -> Result<String> {
    client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, "60")
        .send()
        .await
        .context("CreateQueue")?
        .queue_url
        .context("CreateQueue returned no URL")
}

/// (visible, in flight) message counts.
async fn depth(client: &Client, url: &str) -> Result<(u64, u64)> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .context("GetQueueAttributes")?;
    let attrs = out.attributes().cloned().unwrap_or_default();
    let get = |name| {
        attrs
            .get(&name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
    };
    Ok((
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    ))
}

/// Feeds in waves of `max_depth` messages: every batch of 10 of a wave sent at once, then a
/// wait until the consumer has taken the whole wave. Returns the time the consumer spent
/// draining: from each wave being entirely on the queue until its last message was consumed.
async fn feed(
    client: Client,
    url: String,
    bodies: Arc<Vec<String>>,
    consumed: Arc<AtomicU64>,
    max_depth: u64,
) -> Result<Duration> {
    let mut drained = Duration::ZERO;
    let mut sent = 0_u64;
    let wave_size = usize::try_from(max_depth).unwrap_or(usize::MAX);
    for (wave_index, wave) in bodies.chunks(wave_size).enumerate() {
        let mut sends = tokio::task::JoinSet::new();
        for (chunk_index, chunk) in wave.chunks(10).enumerate() {
            let (client, url) = (client.clone(), url.clone());
            let entries: Vec<SendMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(format!("m{wave_index}-{chunk_index}-{i}"))
                        .message_body(body)
                        .build()
                        .context("batch entry")
                })
                .collect::<Result<_>>()?;
            sends.spawn(send_batch(client, url, entries));
        }
        while let Some(joined) = sends.join_next().await {
            joined.context("send task")??;
        }
        sent += wave.len() as u64;
        let fed = Instant::now();
        while consumed.load(Ordering::Acquire) < sent {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drained += fed.elapsed();
    }
    Ok(drained)
}

/// One SendMessageBatch, with the entries SQS reports as failed sent again (twice at most).
async fn send_batch(
    client: Client,
    url: String,
    mut entries: Vec<SendMessageBatchRequestEntry>,
) -> Result<()> {
    for attempt in 0..3 {
        let out = client
            .send_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries.clone()))
            .send()
            .await
            .context("SendMessageBatch")?;
        let failed: Vec<&str> = out.failed().iter().map(|f| f.id()).collect();
        entries.retain(|e| failed.contains(&e.id()));
        if entries.is_empty() {
            return Ok(());
        }
        if attempt == 2 {
            bail!("send failed three times: {:?}", out.failed());
        }
    }
    Ok(())
}

/// `pollers` loops of receive (up to 10, `--wait-seconds`) → delete batch, nothing else.
/// The raw receive/delete loop; with `attributes`, receiving what `SqsSource` asks for.
async fn raw_drain(
    client: &Client,
    url: &str,
    args: &Args,
    consumed: &Arc<AtomicU64>,
    attributes: bool,
) -> Result<String> {
    // moto can hand a message to two short polls at once; count each message id once.
    let deleted_ids = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.pollers {
        let deleted_ids = Arc::clone(&deleted_ids);
        let (client, url, consumed, total, wait) = (
            client.clone(),
            url.to_owned(),
            Arc::clone(consumed),
            args.messages,
            args.wait_seconds,
        );
        tasks.spawn(async move {
            while consumed.load(Ordering::Acquire) < total {
                let mut receive = client
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(i32::from(wait));
                if attributes {
                    receive = receive
                        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                        .message_system_attribute_names(
                            MessageSystemAttributeName::ApproximateReceiveCount,
                        )
                        .message_attribute_names("All");
                }
                let out = receive.send().await.context("ReceiveMessage")?;
                let messages = out.messages();
                let entries: Vec<DeleteMessageBatchRequestEntry> = messages
                    .iter()
                    .enumerate()
                    .filter_map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .set_receipt_handle(m.receipt_handle().map(str::to_owned))
                            .build()
                            .ok()
                    })
                    .collect();
                if entries.is_empty() {
                    continue;
                }
                let out = client
                    .delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .context("DeleteMessageBatch")?;
                let fresh = {
                    let mut ids = deleted_ids.lock().unwrap_or_else(|p| p.into_inner());
                    out.successful()
                        .iter()
                        .filter_map(|ok| ok.id().parse::<usize>().ok())
                        .filter_map(|i| messages.get(i)?.message_id())
                        .filter(|id| ids.insert((*id).to_owned()))
                        .count()
                };
                consumed.fetch_add(fresh as u64, Ordering::AcqRel);
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("raw poller")??;
    }
    Ok(format!("deleted={}", consumed.load(Ordering::Acquire)))
}

/// Counts the deliveries the service's SQS inbox has appended (raw messages, one durable
/// transaction each batch; the projector normalizes them afterwards).
struct CountAppended(Arc<AtomicU64>);

impl InboxObserver for CountAppended {
    fn appended(&self, deliveries: usize, _seconds: f64) {
        self.0.fetch_add(deliveries as u64, Ordering::AcqRel);
    }
}

/// `SqsSource` (same pollers, batch size and wait) into the service's [`StoreInbox`] on a fresh
/// SQLite file.
async fn shipfeed_drain(
    args: &Args,
    url: &str,
    consumed: &Arc<AtomicU64>,
    round: usize,
) -> Result<String> {
    let db = args.work_dir.join(format!("round-{round}.db"));
    let store = Store::sqlite(&db).context("open SQLite store")?;
    let config = SqsConfig::new(QueueRef::Url(url.to_owned()))
        .with_endpoint_url(&args.endpoint_url)
        .with_region(REGION)
        .with_credentials(shipfeed_sqs::SqsCredentials::ApiKey(API_KEY.into()))
        .with_wait_time_seconds(args.wait_seconds)
        .with_pollers(args.pollers);
    let adapter = registry::adapter(Provider::SevenSenders, &Settings::default())?;
    let source = SqsSource::connect(config, adapter).await?;
    let appender = Inbox::new(
        store.clone(),
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(CountAppended(Arc::clone(consumed))),
    );
    let inbox = Arc::new(StoreInbox::new(
        appender,
        "sevensenders",
        Provider::SevenSenders,
    ));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let total = args.messages;
    let watcher_consumed = Arc::clone(consumed);
    let watcher = tokio::spawn(async move {
        while watcher_consumed.load(Ordering::Acquire) < total {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _ = stop.send(true);
    });
    let stats = source.run(inbox, shutdown).await?;
    watcher.await.context("watcher task")?;
    let stored = store
        .deliveries(0, usize::try_from(total).unwrap_or(usize::MAX) + 10, false)
        .await?;
    // `deleted` also counts copies moto handed out twice (deleted with their own receipt).
    if stored.len() as u64 != total || stats.deleted < total {
        bail!(
            "shipfeed: {} stored, {} deleted, {total} sent ({stats:?})",
            stored.len(),
            stats.deleted
        );
    }
    Ok(format!(
        "stored={} deleted={} duplicates={}",
        stored.len(),
        stats.deleted,
        stats.duplicates
    ))
}
