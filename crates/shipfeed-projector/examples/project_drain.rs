//! How fast the projector drains a backlog (`cargo xtask bench project` runs this): the inbox of
//! a fresh store is filled with signed corpus deliveries (Sendcloud, HappyColis, Shipup, each
//! with its own ids, then optionally the same deliveries again, which are all duplicates), and
//! the projector then projects them to the end as the service's does (`Projector::run`: the
//! next batch read and normalized while the one before is recorded).
//!
//! The baseline, measured in the same run over the same deliveries: the adapters alone
//! normalizing every stored delivery, one after the other on one thread (what the projector
//! must do before it records anything). The projector's rate is reported as a ratio to it.
//!
//! ```sh
//! cargo run --release -p shipfeed-projector --example project_drain -- \
//!     --store sqlite --deliveries 30000 --repeat 2
//! ```
//!
//! Prints one `RESULT store=<..> phase=<normalize|project> deliveries=<n> events=<n> seconds=<s>`
//! line per measurement (read by xtask), then a summary.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use shipfeed::registry::{self, Settings};
use shipfeed::Output;
use shipfeed_projector::{Adapters, Projector, ProjectorOptions};
use shipfeed_store::{Arrival, Store, SystemClock, PROJECTOR};
use shipfeed_testkit::corpus;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The ingest bench's seed is another: these deliveries share no id with its.
const SEED: u64 = 0x0d7a_1a5e;

struct Args {
    store: String,
    deliveries: u64,
    repeat: u64,
    batch: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        store: "sqlite".to_owned(),
        deliveries: 30_000,
        repeat: 1,
        batch: ProjectorOptions::default().batch,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--store" => args.store = value,
            "--deliveries" => args.deliveries = value.parse()?,
            "--repeat" => args.repeat = value.parse()?,
            "--batch" => args.batch = value.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let (store, _schema) = match args.store.as_str() {
        "sqlite" => (Store::sqlite(dir.path().join("shipfeed.db"))?, None),
        "postgres" => {
            let schema = shipfeed_testkit::postgres::Schema::create().await;
            (Store::postgres(&schema.url).await?, Some(schema))
        }
        other => bail!("unknown store {other} (sqlite | postgres)"),
    };

    let mut adapters = Adapters::new();
    for provider in corpus::WEBHOOK_PROVIDERS {
        let adapter = registry::adapter(provider, &Settings::default())?;
        adapters.insert(provider.as_str(), Arc::from(adapter));
    }
    let deliveries = corpus::mixed(&corpus::WEBHOOK_PROVIDERS, SEED, 0..args.deliveries);
    for _ in 0..args.repeat {
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
    }
    let total = args.deliveries * args.repeat;

    // The baseline: the adapters alone over the same stored deliveries.
    let stored = store.deliveries(0, usize::MAX, false).await?;
    let mut by_provider = std::collections::HashMap::new();
    for provider in corpus::WEBHOOK_PROVIDERS {
        by_provider.insert(provider, registry::adapter(provider, &Settings::default())?);
    }
    let started = Instant::now();
    let mut events = 0usize;
    for delivery in &stored {
        let adapter = by_provider
            .get(&delivery.provider)
            .context("a corpus provider")?;
        let outputs = adapter.parse(&delivery.delivery)?;
        events += outputs
            .iter()
            .filter(|output| matches!(output, Output::Event(_)))
            .count();
    }
    let normalize = started.elapsed().as_secs_f64();
    drop(stored);
    println!(
        "RESULT store={} phase=normalize deliveries={total} events={events} seconds={normalize:.3}",
        args.store
    );

    let projector = Projector::new(
        store.clone(),
        adapters,
        Arc::new(()),
        ProjectorOptions {
            batch: args.batch,
            // The projector alone: no alert evaluations beside the batches.
            alerts: None,
            ..ProjectorOptions::default()
        },
        Arc::new(SystemClock),
    );
    // The service's way: `run`, pipelined, its CPU work on its own thread.
    let last = i64::try_from(total)?; // a fresh inbox numbers its deliveries from 1
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let running = tokio::spawn(projector.run(Arc::new(tokio::sync::Notify::new()), shutdown));
    while store.cursor(PROJECTOR).await? < last {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let project = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    running.await?;
    let projected = last;
    let feed_end = store.feed_end().await?;
    println!(
        "RESULT store={} phase=project deliveries={projected} events={events} seconds={project:.3}",
        args.store
    );
    println!(
        "{}: {projected} deliveries ({events} events, {feed_end} feed items) projected in {project:.2} s: \
         {:.0} deliveries/s, {:.0} events/s; normalize alone {:.0} deliveries/s; ratio {:.3}x",
        args.store,
        projected as f64 / project,
        events as f64 / project,
        total as f64 / normalize,
        normalize / project,
    );
    Ok(())
}
