//! The baseline of `cargo xtask bench ingest`: the same HTTP stack and allocator as
//! `shipfeed serve` (axum on a multi-threaded tokio runtime, HTTP/1, mimalloc), one route that
//! reads the whole body and answers 200, and nothing else: no verification, no normalizing, no
//! store. Two references for what looking at the payload costs under the same load:
//!
//! - `--parse-json`: also parses each body into a `serde_json::Value` and drops it;
//! - `--verify-normalize`: also checks the credentials and normalizes the body with the
//!   provider's adapter (named by the path, fixture credentials), as `shipfeed serve` does
//!   before its store: `shipfeed serve` minus the durable write.
//!
//! ```sh
//! cargo run --release -p shipfeed-server --example bare_endpoint -- 127.0.0.1:8099 [--parse-json | --verify-normalize]
//! ```
#![forbid(unsafe_code)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use shipfeed::registry::{self, Settings};
use shipfeed::{Adapter, Credentials, Output, Provider, RawDelivery};
use shipfeed_testkit::corpus;

fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8099".to_owned())
        .parse()?;
    let mode = std::env::args().nth(2).unwrap_or_default();
    let route: MethodRouter = match mode.as_str() {
        "--parse-json" => post(parse_json),
        "--verify-normalize" => post(verify_normalize).with_state(Arc::new(adapters()?)),
        _ => post(receive),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = Router::new()
            .route("/webhooks/{endpoint}", route)
            .route("/healthz", get(|| async { "ok" }))
            .layer(DefaultBodyLimit::max(1024 * 1024));
        let listener = tokio::net::TcpListener::bind(listen).await?;
        eprintln!(
            "bare endpoint listening on http://{}",
            listener.local_addr()?
        );
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

/// Reads the body (axum buffers it into `Bytes`) and answers 200 with a body of the same order
/// of size as the service's answer.
async fn receive(body: Bytes) -> (StatusCode, String) {
    (
        StatusCode::OK,
        format!("{{\"status\":\"received\",\"bytes\":{}}}", body.len()),
    )
}

/// [`receive`], after parsing the body into a `serde_json::Value`.
async fn parse_json(body: Bytes) -> (StatusCode, String) {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(value) => {
            drop(std::hint::black_box(value));
            receive(body).await
        }
        Err(_) => (StatusCode::BAD_REQUEST, String::new()),
    }
}

/// Each provider's adapter and the fixture credentials its corpus is signed with, by name.
type Adapters = HashMap<String, (Box<dyn Adapter>, Credentials)>;

fn adapters() -> anyhow::Result<Adapters> {
    Provider::ALL
        .into_iter()
        .map(|provider| {
            let adapter = registry::adapter(provider, &Settings::default())?;
            Ok((
                provider.as_str().to_owned(),
                (adapter, corpus::credentials(provider)),
            ))
        })
        .collect()
}

/// [`receive`], after verifying and normalizing the delivery as `shipfeed serve` does.
async fn verify_normalize(
    State(adapters): State<Arc<Adapters>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let Some((adapter, credentials)) = adapters.get(&name) else {
        return (StatusCode::NOT_FOUND, String::new());
    };
    let delivery = RawDelivery {
        body: Vec::from(body),
        headers: shipfeed_server::to_headers(&headers),
        received_at: chrono::Utc::now(),
    };
    match adapter.construct(&delivery, credentials) {
        Ok(outputs) => {
            let events = outputs.iter().filter_map(Output::as_event).count();
            (
                StatusCode::OK,
                format!("{{\"status\":\"received\",\"events\":{events}}}"),
            )
        }
        Err(_) => (StatusCode::UNAUTHORIZED, String::new()),
    }
}
