//! `shipfeed serve`: the ingestion service on the embedded SQLite store (or a config file).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use shipfeed::Credentials;
use shipfeed_server::{Config, Service};
use shipfeed_store::SqliteStore;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// TOML configuration; without it, the embedded default (SQLite file `shipfeed.db` in the
    /// working directory, 127.0.0.1:8080, one endpoint per webhook provider).
    #[arg(long, short, env = "SHIPFEED_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines (on stderr) instead of text.
    #[arg(long)]
    json_logs: bool,
}

pub(crate) fn run(args: &Args) -> Result<ExitCode> {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    if args.json_logs {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    let config = Config::load(args.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Config) -> Result<()> {
    let store = SqliteStore::open(&config.database)
        .with_context(|| format!("open {}", config.database.display()))?;
    let service = Service::new(&config, Arc::new(store))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    // The banner goes to stderr: stdout carries the event stream.
    eprintln!(
        "shipfeed listening on http://{address} (store: {})",
        config.database.display()
    );
    for endpoint in &config.endpoints {
        let ready = match endpoint.credentials()? {
            Credentials::None => format!(
                "NOT SET: set {} or every delivery is rejected",
                endpoint.secret_source()
            ),
            _ => format!("secret from {}", endpoint.secret_source()),
        };
        eprintln!(
            "  POST {} deliveries to http://{address}/webhooks/{}  ({ready})",
            endpoint.provider, endpoint.name
        );
    }
    eprintln!("  feed: http://{address}/v1/events   shipments: http://{address}/v1/shipments/<tracking>   metrics: http://{address}/metrics");
    if config.stdout_sink {
        tokio::spawn(Arc::clone(&service).run_stdout_sink());
    }
    axum::serve(listener, service.router(config.body_limit_bytes))
        .with_graceful_shutdown(crate::shutdown::signal())
        .await
        .context("serve")?;
    eprintln!("shipfeed stopped");
    Ok(())
}
