//! The baseline of `cargo xtask bench ingest`: the same HTTP stack and allocator as
//! `shipfeed serve` (axum on a multi-threaded tokio runtime, HTTP/1, mimalloc), one route that
//! reads the whole body and answers 200, and nothing else: no verification, no normalizing, no
//! store. With `--parse-json` it also parses each body into a `serde_json::Value` and drops it,
//! a reference for what the cheapest look at the payload costs under the same load.
//!
//! ```sh
//! cargo run --release -p shipfeed-server --example bare_endpoint -- 127.0.0.1:8099 [--parse-json]
//! ```
#![forbid(unsafe_code)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post, MethodRouter};
use axum::Router;

fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8099".to_owned())
        .parse()?;
    let route: MethodRouter = if std::env::args().any(|arg| arg == "--parse-json") {
        post(parse_json)
    } else {
        post(receive)
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
