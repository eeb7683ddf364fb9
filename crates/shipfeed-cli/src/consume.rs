//! `shipfeed consume`: pull a provider's SQS queue (Seven Senders) and print canonical JSON
//! lines on stdout until Ctrl-C or SIGTERM. Messages are deleted only after their lines are
//! written and flushed; dead letters go to stderr as JSON lines.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use shipfeed::registry::{self, Settings};
use shipfeed::Provider;
use shipfeed_server::SqsSourceConfig;
use shipfeed_sqs::{DeadLetterPolicy, JsonLinesInbox, SqsConfig, SqsSource};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Provider whose messages the queue carries.
    #[arg(long, default_value = "sevensenders")]
    provider: String,
    /// Queue URL (Seven Senders: `https://analytics-api.7senders.com/queue.xml`).
    #[arg(
        long,
        env = "SHIPFEED_SQS_QUEUE_URL",
        required_unless_present = "queue_name"
    )]
    queue_url: Option<String>,
    /// Queue name, resolved with GetQueueUrl (instead of --queue-url).
    #[arg(long, conflicts_with = "queue_url")]
    queue_name: Option<String>,
    /// Endpoint instead of the region's AWS endpoint (Seven Senders' proxy, a test server).
    #[arg(long, env = "SHIPFEED_SQS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// Seven Senders API key, sent as the access key id with an empty secret. Without it:
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (which may be empty) / AWS_SESSION_TOKEN.
    #[arg(long, env = "SHIPFEED_SEVENSENDERS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Region; default AWS_REGION, AWS_DEFAULT_REGION, then eu-central-1.
    #[arg(long)]
    region: Option<String>,
    /// Concurrent pollers.
    #[arg(long, default_value_t = 1)]
    pollers: usize,
    /// Seconds a received message stays hidden from other consumers (default: the queue's).
    #[arg(long)]
    visibility_timeout: Option<u64>,
    /// Long-polling wait in seconds (0..=20).
    #[arg(long, default_value_t = 20)]
    wait_time: u8,
    /// Leave messages the adapter cannot understand on the queue (for its redrive policy)
    /// instead of printing them as dead letters and deleting them.
    #[arg(long)]
    leave_dead_letters: bool,
    /// Zone of zone-less provider times (Seven Senders `status_time`).
    #[arg(long, default_value = "UTC")]
    source_time_zone: String,
}

pub(crate) fn run(args: &Args) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let provider: Provider = args.provider.parse()?;
    let zone: chrono_tz::Tz = args
        .source_time_zone
        .parse()
        .map_err(|e| anyhow::anyhow!("--source-time-zone `{}`: {e}", args.source_time_zone))?;
    let adapter = registry::adapter(provider, &Settings::with_source_time_zone(zone))?;
    let config = config(args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async move {
        let source = SqsSource::connect(config, adapter).await?;
        eprintln!("shipfeed consuming {} ({provider}); Ctrl-C to stop", source.queue_url());
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            crate::shutdown::signal().await;
            eprintln!("shipfeed: stopping after the batches in flight");
            let _ = stop.send(true);
        });
        let stats = source.run(Arc::new(JsonLinesInbox::stdio()), shutdown).await?;
        eprintln!(
            "shipfeed stopped: {} received, {} accepted, {} dead letters, {} deleted, {} duplicates",
            stats.received, stats.accepted, stats.dead_lettered, stats.deleted, stats.duplicates
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn config(args: &Args) -> SqsConfig {
    let source = SqsSourceConfig {
        name: "consume".to_owned(),
        provider: Provider::SevenSenders,
        queue_url: args.queue_url.clone(),
        queue_name: args.queue_name.clone(),
        endpoint_url: args.endpoint_url.clone(),
        region: args.region.clone(),
        api_key_env: None,
        pollers: args.pollers,
        wait_time_seconds: args.wait_time,
        visibility_timeout_seconds: args.visibility_timeout,
        source_time_zone: args.source_time_zone.clone(),
    };
    let config = source.sqs_config_with_key(args.api_key.clone());
    if args.leave_dead_letters {
        config.with_dead_letters(DeadLetterPolicy::LeaveForRedrive)
    } else {
        config
    }
}
