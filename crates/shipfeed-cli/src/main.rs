//! `shipfeed`: normalize, verify and (with the service) ingest shipment events.
#![forbid(unsafe_code)]

mod audit;
mod consume;
mod drift;
mod normalize;
mod serve;
mod shutdown;
mod subscription;
mod table;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Canonical shipment events from Sendcloud, Seven Senders, HappyColis and Shipup.
#[derive(Parser)]
#[command(name = "shipfeed", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Normalize raw deliveries (files or stdin) into canonical JSON lines on stdout.
    Normalize(normalize::Args),
    /// Check a delivery's signature or credentials: prints valid/invalid and why.
    Verify(verify::Args),
    /// Print the JSON Schema of one canonical output line (or of one feed item).
    Schema(SchemaArgs),
    /// Run the ingestion service (embedded SQLite by default) and print where to POST.
    Serve(serve::Args),
    /// Pull an SQS queue (Seven Senders) and print canonical JSON lines until Ctrl-C/SIGTERM.
    Consume(consume::Args),
    /// Re-normalize stored deliveries (after a mapping fix); idempotent by event id.
    Replay(serve::ReplayArgs),
    /// What the adapters met in stored deliveries and do not know (unknown codes, message
    /// types, fields, value types), per provider, with distinct delivery counts.
    Drift(drift::Args),
    /// The subscriptions: list them; list an HTTP push subscription's kept messages, pause it
    /// or resume (re-enable) it, without restarting the service.
    Subscription(subscription::Args),
    /// Put an HTTP push subscription's exhausted messages back on schedule, each under its
    /// webhook-id; the running service sends them at its next round.
    Redeliver(subscription::RedeliverArgs),
    /// The audit log: operators' replays, redeliveries, pauses and resumes (through the API
    /// and these commands), newest first, with who and how each ended.
    Audit(audit::Args),
}

#[derive(clap::Args)]
struct SchemaArgs {
    /// The schema of one item of the service's feed (`GET /v1/events`, the serve sinks)
    /// instead: a canonical output line with its `seq` beside the `type` tag.
    #[arg(long)]
    feed_item: bool,
}

/// Normalizing builds many small strings; mimalloc serves them faster than glibc's allocator
/// (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Normalize(args) => normalize::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Consume(args) => consume::run(&args),
        Command::Replay(args) => serve::replay(&args),
        Command::Drift(args) => drift::run(&args),
        Command::Subscription(args) => subscription::run(&args),
        Command::Redeliver(args) => subscription::redeliver(&args),
        Command::Audit(args) => audit::run(&args),
        Command::Schema(args) => {
            if args.feed_item {
                print!("{}", shipfeed::json_schema::<shipfeed_store::FeedItem>());
            } else {
                print!("{}", shipfeed::output_schema());
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::from(2)
    })
}
