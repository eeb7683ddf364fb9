//! `shipfeed serve`: the ingestion service on the embedded SQLite store (or a config file).
//! `shipfeed replay`: re-normalize stored deliveries with this build's adapters, in place of the
//! running projector (it takes the projector's lease over while it runs); recorded in the
//! audit log as `cli:<user>`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use shipfeed_server::{Config, EndpointConfig, ReplayFilter, Service};

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

#[derive(clap::Args)]
pub(crate) struct ReplayArgs {
    /// The service's configuration (the same file `serve` uses; default: the embedded one).
    #[arg(long, short, env = "SHIPFEED_CONFIG")]
    config: Option<PathBuf>,
    /// Only deliveries that are currently dead letters.
    #[arg(long)]
    dead_letters: bool,
    /// Only this provider's deliveries.
    #[arg(long)]
    provider: Option<shipfeed::Provider>,
    /// Only deliveries received at or after this time (RFC 3339, e.g. 2024-06-01T00:00:00Z).
    #[arg(long)]
    since: Option<chrono::DateTime<chrono::Utc>>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

async fn open_service(config: &Config) -> Result<Arc<Service>> {
    let store = shipfeed_store::open(&config.store)
        .await
        .with_context(|| format!("open the store {}", config.store))?;
    Ok(Service::new(config, store)?)
}

pub(crate) fn replay(args: &ReplayArgs) -> Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    let filter = ReplayFilter {
        dead_letters_only: args.dead_letters,
        provider: args.provider,
        since: args.since,
        seqs: None,
    };
    runtime()?.block_on(async {
        let service = open_service(&config).await?;
        let bar = indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed} {msg}",
            )?,
        );
        let summary = service
            .replay(&filter, &crate::audit::actor(), |s| {
                bar.set_message(format!(
                    "{} replayed, {} new events, {} recovered, {} dead letters",
                    s.replayed, s.new_events, s.recovered, s.dead_letters
                ));
                bar.tick();
            })
            .await?;
        bar.finish_and_clear();
        eprintln!(
            "replayed {} deliveries: {} new events, {} revised, {} retracted, {} unchanged, {} dead letters recovered, {} still dead letters",
            summary.replayed,
            summary.new_events,
            summary.revised,
            summary.retracted,
            summary.duplicates,
            summary.recovered,
            summary.dead_letters
        );
        for (what, ids, count) in [
            ("revised", &summary.revised_events, summary.revised),
            ("retracted", &summary.retracted_events, summary.retracted),
        ] {
            if !ids.is_empty() {
                let more = count.saturating_sub(ids.len() as u64);
                let more = if more > 0 { format!(" and {more} more") } else { String::new() };
                eprintln!("  {what}: {}{more}", ids.join(", "));
            }
        }
        if summary.skipped > 0 {
            let endpoints: Vec<String> = summary
                .skipped_endpoints
                .iter()
                .map(|(name, count)| format!("`{name}` ({count})"))
                .collect();
            eprintln!(
                "skipped {} deliveries whose endpoint or sqs_source is no longer configured (or now serves another provider): {}",
                summary.skipped,
                endpoints.join(", ")
            );
        }
        println!("{}", serde_json::to_string(&summary)?);
        Ok(ExitCode::SUCCESS)
    })
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
    runtime()?.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Config) -> Result<()> {
    let service = open_service(&config).await?;
    // Before binding: an open API is never reachable from the network, not even briefly.
    service.check_listen(config.listen)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    // The banner goes to stderr: stdout carries the event stream.
    eprintln!(
        "shipfeed listening on http://{address} (store: {})",
        redact_password(&config.store)
    );
    for endpoint in &config.endpoints {
        let ready = readiness(endpoint)?;
        eprintln!(
            "  POST {} deliveries to http://{address}/webhooks/{}  ({ready})",
            endpoint.provider, endpoint.name
        );
    }
    eprintln!("  feed: http://{address}/v1/events   shipments: http://{address}/v1/shipments/<tracking>   metrics: http://{address}/metrics");
    eprintln!("  API: {}", api_access(service.api_auth()));
    if config.sqs_sources.is_empty() {
        eprintln!("  Seven Senders: set SHIPFEED_SEVENSENDERS_QUEUE_URL (and _API_KEY) or add an [[sqs_source]] to pull its queue");
    }
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let sources = service.start_sqs_sources(&stopping).await?;
    let projector = service.start_projector(&stopping);
    let key_refresh = service.start_key_refresh(&stopping);
    if !service.subscriptions().is_empty() {
        eprintln!(
            "  subscriptions (driven by the replica holding each one's lease; this is {}):",
            service.replica_id()
        );
    }
    for subscription in service.subscriptions() {
        let filter = subscription.filter();
        let only = if filter.is_empty() {
            String::new()
        } else {
            format!(", only {filter}")
        };
        eprintln!(
            "    `{}`: {} (cursor `{}`{only})",
            subscription.name(),
            subscription.target(),
            subscription.cursor()
        );
    }
    let subscriptions = service.start_subscriptions(&stopping).await?;
    axum::serve(listener, service.router(config.body_limit_bytes))
        .with_graceful_shutdown(crate::shutdown::signal())
        .await
        .context("serve")?;
    // HTTP has drained; let the queue pollers and the subscriptions finish their batches in
    // flight (the subscriptions then release their leases to the other replicas).
    let _ = stop.send(true);
    for task in sources.into_iter().chain(subscriptions).chain(key_refresh) {
        let _ = task.await;
    }
    // The projector finishes its batch and releases its lease, so another replica (or the
    // next start) need not wait for it to run out.
    let _ = projector.await;
    eprintln!("shipfeed stopped");
    Ok(())
}

/// How an endpoint authenticates, for the banner: where its secrets come from (by position,
/// during a rotation) and which are not set, or where a JWT endpoint's keys come from. Never
/// a secret.
fn readiness(endpoint: &EndpointConfig) -> Result<String> {
    if let Some(jwt) = &endpoint.jwt {
        let keys = jwt
            .location()
            .map(|location| location.to_string())
            .unwrap_or_default();
        return Ok(format!(
            "JWT, keys from {keys}, refreshed in the background"
        ));
    }
    let sources = endpoint.secret_sources();
    let secrets = endpoint.secrets()?;
    if secrets.iter().all(Option::is_none) {
        let wanted = if sources.is_empty() {
            "secret_env or secret_file".to_owned()
        } else {
            sources.join(" or ")
        };
        return Ok(format!(
            "NOT SET: set {wanted} or every delivery is rejected"
        ));
    }
    if let [source] = sources.as_slice() {
        return Ok(format!("secret from {source}"));
    }
    let listed: Vec<String> = sources
        .iter()
        .zip(&secrets)
        .enumerate()
        .map(|(position, (source, secret))| match secret {
            Some(_) => format!("{position}: {source}"),
            None => format!("{position}: {source} NOT SET"),
        })
        .collect();
    Ok(format!("secrets in rotation, {}", listed.join(", ")))
}

/// Who may read the API, for the banner: the tokens' names and scopes, never a token.
fn api_access(auth: &shipfeed_server::ApiAuth) -> String {
    if !auth.enforced() {
        return "open, no token needed (loopback only; add an [[api_token]] to require one)"
            .to_owned();
    }
    let mut tokens: Vec<String> = auth
        .tokens()
        .into_iter()
        .map(|(name, scopes)| {
            let scopes: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
            format!("`{name}` ({})", scopes.join(", "))
        })
        .collect();
    tokens.extend(auth.unset().iter().map(|name| format!("`{name}` NOT SET")));
    let metrics = if auth.protects_metrics() {
        ", /metrics too"
    } else {
        ""
    };
    format!("bearer tokens {}{metrics}", tokens.join(", "))
}

/// The store location for the banner, without a password.
fn redact_password(store: &str) -> String {
    match (store.find("://"), store.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &store[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &store[..scheme + 3], &store[at..]),
                None => store.to_owned(),
            }
        }
        _ => store.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            super::redact_password("postgres://app:hunter2@db:5432/shipfeed"),
            "postgres://app:***@db:5432/shipfeed"
        );
        assert_eq!(
            super::redact_password("postgres://app@db/x"),
            "postgres://app@db/x"
        );
        assert_eq!(super::redact_password("shipfeed.db"), "shipfeed.db");
    }
}
