//! The shipfeed ingestion service.
//!
//! `POST /webhooks/{endpoint}`: verify with the endpoint's adapter (401 and nothing stored when
//! not authentic), normalize, then commit raw delivery + deduplicated events + shipment state in
//! one durable transaction (group-committed with concurrent requests) and only then answer 2xx.
//! An authentic delivery that cannot be normalized is stored as a dead letter and still
//! answered 2xx (HappyColis blocks its queue on any non-2xx; Sendcloud retries for hours). Only
//! a store failure answers 503. SQS sources ([`Service::start_sqs_sources`]) feed the same
//! store and delete a message only after its commit.
//!
//! # Durability
//!
//! A 2xx answer (and an SQS delete) happens only after the transaction holding the raw
//! delivery, its events and the shipment state has committed:
//!
//! - **SQLite** (the embedded default): WAL journal with `synchronous=FULL`, so a commit that
//!   returned is in the WAL on disk and survives a process kill and a power cut. One writer
//!   thread takes every delivery queued while the previous transaction was syncing and commits
//!   them together (one fsync for many requests; when one of them fails, the group is rerun
//!   with a savepoint per delivery, so it cannot sink the others).
//! - **PostgreSQL** (several replicas): the same grouping per replica; the writer's session
//!   never runs with `synchronous_commit = off`, so a returned commit is in the server's WAL.
//!   Every write transaction takes one advisory lock, so feed cursors follow commit order
//!   across replicas and a consumer never skips an event.
//!
//! What is not acknowledged may or may not be stored: the provider retries it, and the
//! retried delivery's events deduplicate by `event_id`. The workspace's `tests/crash.rs` kills
//! the server with `kill -9` in the middle of a burst and checks every acknowledged delivery's
//! events are in the feed, none twice, on both stores.
#![forbid(unsafe_code)]

pub mod config;
mod metrics;
mod outbox;
mod replay;
mod sqs;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use shipfeed::registry::{self, Settings};
use shipfeed::{Adapter, Credentials, Headers, Output, Provider, RawDelivery};
use shipfeed_store::{Committed, Ingest, Store};
use tokio::sync::Notify;

pub use config::{Config, EndpointConfig, SqsSourceConfig};
use metrics::Metrics;
pub use outbox::{OutboxTarget, NATS_STREAM, NATS_SUBJECT_PREFIX};
pub use replay::{ReplayFilter, ReplaySummary};
pub use sqs::StoreSink;

/// One configured inbound endpoint or SQS source, ready to serve.
struct Endpoint {
    provider: Provider,
    adapter: Arc<dyn Adapter>,
    credentials: Credentials,
}

/// One configured SQS source: its adapter (for replay), the settings that adapter was built
/// with (the pollers build their own from them) and its queue configuration.
struct Source {
    endpoint: Endpoint,
    settings: Settings,
    config: SqsSourceConfig,
}

/// Shared state of the service.
pub struct Service {
    /// Webhook endpoints by name.
    endpoints: HashMap<String, Endpoint>,
    /// SQS sources by name (names are unique across endpoints and sources).
    sources: HashMap<String, Source>,
    store: Store,
    metrics: Metrics,
    new_events: Notify,
}

impl Service {
    /// Builds the service from its configuration and an opened store.
    ///
    /// # Errors
    /// An endpoint whose provider is not in this build, whose secret file cannot be read, or
    /// an SQS source with an unknown time zone.
    pub fn new(config: &Config, store: Store) -> anyhow::Result<Arc<Self>> {
        let mut endpoints = HashMap::new();
        for endpoint in &config.endpoints {
            endpoints.insert(
                endpoint.name.clone(),
                Endpoint {
                    provider: endpoint.provider,
                    adapter: registry::adapter(endpoint.provider, &Settings::default())?.into(),
                    credentials: endpoint.credentials()?,
                },
            );
        }
        let mut sources = HashMap::new();
        for source in &config.sqs_sources {
            let zone: chrono_tz::Tz = source.source_time_zone.parse().map_err(|e| {
                anyhow::anyhow!(
                    "sqs_source `{}`: source_time_zone `{}`: {e}",
                    source.name,
                    source.source_time_zone
                )
            })?;
            let settings = Settings::with_source_time_zone(zone);
            let endpoint = Endpoint {
                provider: source.provider,
                adapter: registry::adapter(source.provider, &settings)?.into(),
                credentials: Credentials::None,
            };
            sources.insert(
                source.name.clone(),
                Source {
                    endpoint,
                    settings,
                    config: source.clone(),
                },
            );
        }
        Ok(Arc::new(Service {
            endpoints,
            sources,
            store,
            metrics: Metrics::default(),
            new_events: Notify::new(),
        }))
    }

    /// The endpoint or SQS source of this name.
    fn endpoint_or_source(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints
            .get(name)
            .or_else(|| self.sources.get(name).map(|source| &source.endpoint))
    }

    /// The store behind the service.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Counts what one committed delivery did, and wakes the feed sinks when it added events.
    fn observe(&self, endpoint: &str, provider_id: Provider, committed: &Committed) {
        let provider = provider_id.as_str();
        let outcome = if committed.dead_letter.is_some() {
            "dead_letter"
        } else {
            "stored"
        };
        self.metrics.add(
            "shipfeed_deliveries_total",
            &[
                ("endpoint", endpoint),
                ("provider", provider),
                ("outcome", outcome),
            ],
            1,
        );
        self.metrics.add(
            "shipfeed_duplicate_events_total",
            &[("provider", provider)],
            committed.duplicates as u64,
        );
        if let Some(reason) = &committed.dead_letter {
            tracing::warn!(%endpoint, delivery = committed.delivery_seq, %reason, "dead letter");
        }
        self.observe_new_events(provider_id, committed);
    }

    /// Counts a commit's new events by status and wakes the outbox when there are any.
    fn observe_new_events(&self, provider: Provider, committed: &Committed) {
        let provider = provider.as_str();
        for status in &committed.new_event_statuses {
            self.metrics.add(
                "shipfeed_events_total",
                &[("provider", provider), ("status", status)],
                1,
            );
        }
        if committed.new_events > 0 {
            self.new_events.notify_waiters();
        }
    }

    /// Counts the unmapped codes among an adapter's outputs (by provider and raw code).
    fn observe_outputs(&self, provider: Provider, outcome: &Result<Vec<Output>, shipfeed::Error>) {
        let Ok(outputs) = outcome else { return };
        for event in outputs
            .iter()
            .filter_map(Output::as_event)
            .filter(|e| e.is_unmapped())
        {
            let code = event
                .raw
                .code
                .as_deref()
                .or(event.raw.message.as_deref())
                .unwrap_or("");
            self.metrics.add(
                "shipfeed_unmapped_codes_total",
                &[("provider", provider.as_str()), ("code", code)],
                1,
            );
        }
    }

    /// The HTTP routes.
    pub fn router(self: &Arc<Self>, body_limit_bytes: usize) -> Router {
        Router::new()
            .route("/webhooks/{endpoint}", post(receive))
            .route("/v1/events", get(events))
            .route("/v1/shipments/{tracking}", get(shipments_by_tracking))
            .route(
                "/v1/shipments/{carrier}/{tracking}",
                get(shipments_by_carrier),
            )
            .route("/v1/dead-letters", get(dead_letters))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready))
            .route("/metrics", get(metrics))
            .layer(DefaultBodyLimit::max(body_limit_bytes))
            .layer(tower_http::trace::TraceLayer::new_for_http())
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_secs(8),
            ))
            .with_state(Arc::clone(self))
    }
}

/// An HTTP request's headers as a delivery's [`Headers`]. A value that is not visible ASCII
/// (which no provider's signature or id header is) is left out.
///
/// ```
/// let mut map = axum::http::HeaderMap::new();
/// map.insert("sendcloud-signature", "ab12".parse().unwrap());
/// let headers = shipfeed_server::to_headers(&map);
/// assert_eq!(headers.get("Sendcloud-Signature"), Some("ab12"));
/// ```
pub fn to_headers(headers: &HeaderMap) -> Headers {
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

async fn receive(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(endpoint) = service.endpoints.get(&name) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no endpoint `{name}`")})),
        )
            .into_response();
    };
    let delivery = RawDelivery {
        body: Vec::from(body),
        headers: to_headers(&headers),
        received_at: chrono::Utc::now(),
    };
    let provider = endpoint.provider.as_str();
    if let Err(error) = endpoint.adapter.verify(&delivery, &endpoint.credentials) {
        // Never log the body: it is unauthenticated input.
        tracing::warn!(endpoint = %name, %error, "rejected delivery");
        service.metrics.add(
            "shipfeed_deliveries_total",
            &[
                ("endpoint", &name),
                ("provider", provider),
                ("outcome", "unauthorized"),
            ],
            1,
        );
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": error.to_string()})),
        )
            .into_response();
    }
    let outcome = endpoint.adapter.parse(&delivery);
    service.observe_outputs(endpoint.provider, &outcome);
    let started = Instant::now();
    let ingest = Ingest {
        endpoint: name.clone(),
        provider: endpoint.provider,
        delivery,
        outcome,
    };
    let committed = match service.store.commit(vec![ingest]).await {
        Ok(mut committed) if committed.len() == 1 => committed.remove(0),
        Ok(_) | Err(_) => {
            service.metrics.add(
                "shipfeed_deliveries_total",
                &[
                    ("endpoint", &name),
                    ("provider", provider),
                    ("outcome", "store_unavailable"),
                ],
                1,
            );
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "store unavailable; retry later"})),
            )
                .into_response();
        }
    };
    service
        .metrics
        .observe_commit(started.elapsed().as_secs_f64());
    service.observe(&name, endpoint.provider, &committed);
    let outcome = if committed.dead_letter.is_some() {
        "dead_letter"
    } else {
        "stored"
    };
    (
        StatusCode::OK,
        Json(json!({"status": outcome, "delivery": committed})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

fn unavailable(error: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": error.to_string()})),
    )
        .into_response()
}

async fn events(State(service): State<Arc<Service>>, Query(page): Query<Page>) -> Response {
    match service
        .store
        .events_after(page.after, page.limit.clamp(1, 1000))
        .await
    {
        Ok(items) => {
            let next = items.last().map_or(page.after, |i| i.seq);
            Json(json!({"events": items, "next_cursor": next})).into_response()
        }
        Err(error) => unavailable(error),
    }
}

async fn shipments(service: &Service, carrier: Option<&str>, tracking: &str) -> Response {
    match service.store.shipments(carrier, tracking).await {
        Ok(views) if views.is_empty() => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such shipment"})),
        )
            .into_response(),
        Ok(views) => Json(json!({"shipments": views})).into_response(),
        Err(error) => unavailable(error),
    }
}

async fn shipments_by_tracking(
    State(service): State<Arc<Service>>,
    Path(tracking): Path<String>,
) -> Response {
    shipments(&service, None, &tracking).await
}

async fn shipments_by_carrier(
    State(service): State<Arc<Service>>,
    Path((carrier, tracking)): Path<(String, String)>,
) -> Response {
    shipments(&service, Some(&carrier), &tracking).await
}

async fn dead_letters(State(service): State<Arc<Service>>, Query(page): Query<Page>) -> Response {
    match service
        .store
        .dead_letters(page.after, page.limit.clamp(1, 1000))
        .await
    {
        Ok(items) => Json(json!({"dead_letters": items})).into_response(),
        Err(error) => unavailable(error),
    }
}

async fn ready(State(service): State<Arc<Service>>) -> Response {
    match service.store.ping().await {
        Ok(()) => "ready".into_response(),
        Err(error) => unavailable(error),
    }
}

async fn metrics(State(service): State<Arc<Service>>) -> String {
    service.metrics.render()
}
