//! The shipfeed service: the pipeline's stages behind one HTTP API.
//!
//! ```text
//! POST /webhooks/{endpoint} ─┐
//!                            ├─▶ inbox ──▶ projector ──▶ feed, shipments ──▶ subscriptions
//! SQS sources ───────────────┘   (acknowledged)   (normalized, corrected)      (delivered)
//! ```
//!
//! - **Inbox** ([`Inbox`]): `POST /webhooks/{endpoint}` verifies with the endpoint's adapter
//!   against each of its secrets (rotation: the position that matched is counted), 401 and
//!   nothing stored when not authentic; appends the raw delivery durably (group commit with
//!   concurrent requests) and only then answers 200 `{"status":"accepted","delivery_seq":N}`.
//!   A provider's endpoint probe (Shipup's `{"livemode": "false"}`) is answered 200
//!   `{"status":"probe"}` with or without credentials, and stored nowhere. SQS sources
//!   ([`Service::start_sqs_sources`]) append the same way and delete a message only after its
//!   append. Only a store failure answers 503. Credentials of a kind the provider cannot
//!   send stop the service at startup ([`Service::new`]); an endpoint that still cannot check
//!   deliveries answers 500, stores nothing and logs why. Every status follows from the
//!   error's kind in one place, [`http_status`].
//! - **API authentication** ([`api_auth`]): `/v1/*` (and `/metrics` with `[api]
//!   protect_metrics`) needs `Authorization: Bearer <token>` of an `[[api_token]]` with the
//!   route's scope (`read`; `admin` for dead letters' raw bodies and anything that changes
//!   state): 401 without a known token, 403 without the scope. With no token configured the
//!   API is open, and [`Service::check_listen`] allows that on a loopback address only.
//!   Webhooks, `/healthz` and `/readyz` need none.
//! - **JWT endpoints**: their key sets are fetched in the background
//!   ([`Service::start_key_refresh`]), never while a request waits.
//! - **Projector** ([`shipfeed_projector`], [`Service::start_projector`]): normalizes what the
//!   inbox holds, under a fenced lease (one projector across replicas and processes), into
//!   deduplicated events, dead letters and shipment states, and moves its cursor in the same
//!   transaction. An authentic delivery that cannot be normalized becomes a dead letter after
//!   it was acknowledged (HappyColis blocks its queue on any non-2xx; Sendcloud retries for
//!   hours). `GET /v1/deliveries/{seq}` says where a delivery is.
//! - **Subscriptions** ([`shipfeed_subscriptions`], [`Service::start_subscriptions`]): each
//!   `[[subscription]]` (and the legacy `sink`) delivers the feed from a cursor of its own, one
//!   replica at a time; `GET /v1/events` serves the same feed. `GET /v1/subscriptions` lists
//!   them with their cursors and states; an HTTP push subscription's parked messages are
//!   listed, and it is paused, resumed (re-enabled) and redelivered, under
//!   `/v1/subscriptions/{name}/` ([`control`], shared with the `shipfeed subscription`
//!   commands), without a restart.
//!
//! # Durability
//!
//! A 2xx answer (and an SQS delete) happens only after the transaction holding the raw
//! delivery has committed:
//!
//! - **SQLite** (the embedded default): WAL journal with `synchronous=FULL`, so a commit that
//!   returned is in the WAL on disk and survives a process kill and a power cut. One writer
//!   thread takes every delivery queued while the previous transaction was syncing and appends
//!   them together (one fsync for many requests), ahead of the projector's batch.
//! - **PostgreSQL** (several replicas): the same grouping per replica; the writer's sessions
//!   never run with `synchronous_commit = off`, so a returned commit is in the server's WAL.
//!   Inbox appends and projections each take their own advisory lock, so the projector's and
//!   the feed consumers' cursors follow commit order across replicas and never skip.
//!
//! What is not acknowledged may or may not be stored: the provider retries it, and the
//! retried delivery's events deduplicate by `event_id`. The workspace's `tests/crash.rs` kills
//! the server with `kill -9` in the middle of a burst and checks every acknowledged delivery's
//! events reach the feed, none twice, on both stores.
#![forbid(unsafe_code)]

pub mod api_auth;
pub mod audit;
pub mod config;
mod console;
pub mod control;
mod error;
mod feed_query;
mod inbox;
mod jwks;
mod metrics;
mod openapi;
mod sqs;
mod subscriptions;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;
use shipfeed::auth::{self, jwt::JwtVerifier, jwt::KeySet, jwt::KeySource};
use shipfeed::registry::{self, Settings};
use shipfeed::{Adapter, Credentials, ErrorKind, Headers, Provider, RawDelivery};
use shipfeed_projector::{Adapters, ProjectionObserver, Projector, ProjectorOptions};
use shipfeed_store::{Arrival, Clock, Projection, Store, SystemClock};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

pub use api_auth::{ApiAuth, ApiConfig, ApiTokenConfig, Scope};
pub use audit::Actor;
pub use config::{
    Config, EndpointConfig, JwtConfig, KeyLocation, ProjectorConfig, SqsSourceConfig,
};
pub use control::{ControlError, SubscriptionAdmin, SubscriptionKind, SubscriptionSummary};
pub use error::{BoxError, ServiceError};
pub use inbox::{Inbox, InboxError, InboxObserver};
use metrics::{Metrics, Outcome};
pub use openapi::BEARER_AUTH;
use openapi::{Access, Route, Verb};
pub use shipfeed_projector::{
    ReplayFilter, ReplayOutcome, ReplayReport, ReplaySummary, ReplayedDelivery,
};
pub use shipfeed_subscriptions::{NATS_STREAM, NATS_SUBJECT_PREFIX};
pub use sqs::StoreInbox;

/// One configured inbound endpoint or SQS source, ready to serve.
struct Endpoint {
    provider: Provider,
    adapter: Arc<dyn Adapter>,
    /// Its credentials, in configured order, without the secrets that are not set; empty
    /// when none is (the adapter decides, most fail closed).
    credentials: Vec<Credentials>,
    /// The configured position of each of `credentials`, for `shipfeed_auth_matched_total`.
    positions: Vec<usize>,
}

/// A JWT endpoint's key set and its refresh timing.
struct KeyRefresh {
    keys: Arc<jwks::EndpointKeys>,
    schedule: jwks::Schedule,
}

/// One configured SQS source: its adapter (for replay), the settings that adapter was built
/// with (the pollers build their own from them) and its queue configuration.
struct Source {
    endpoint: Endpoint,
    settings: Settings,
    config: SqsSourceConfig,
}

/// What the service observes of its stages: its metrics, and the subscriptions' wake-up.
struct Observer {
    metrics: Metrics,
    new_events: Arc<Notify>,
}

impl Observer {
    /// Counts a projection's new events by status and wakes the subscriptions when there are
    /// any.
    fn new_events(&self, provider: Provider, projection: &Projection) {
        for status in &projection.new_event_statuses {
            self.metrics.new_event(provider, status);
        }
        if !projection.events.is_empty() {
            self.new_events.notify_waiters();
        }
    }
}

impl InboxObserver for Observer {
    fn appended(&self, _deliveries: usize, seconds: f64) {
        self.metrics.append_seconds(seconds);
    }

    fn arrived(&self, endpoint: &str, provider: Provider, received_at: DateTime<Utc>) {
        self.metrics.arrived(endpoint, provider, received_at);
    }
}

impl ProjectionObserver for Observer {
    fn batch(&self, deliveries: usize, seconds: f64) {
        self.metrics.projector_batch(deliveries, seconds);
    }

    fn projected(&self, endpoint: &str, provider: Provider, projection: &Projection) {
        let outcome = if projection.dead_letter.is_some() {
            Outcome::DeadLetter
        } else {
            Outcome::Stored
        };
        self.metrics.projected(endpoint, provider, outcome);
        self.metrics
            .duplicates(provider, projection.duplicates.len() as u64);
        self.new_events(provider, projection);
    }

    fn replayed(&self, provider: Provider, projection: &Projection) {
        self.new_events(provider, projection);
    }

    fn alerts_raised(&self, raised: usize) {
        self.metrics.alerts_raised(raised);
        if raised > 0 {
            self.new_events.notify_waiters();
        }
    }

    fn lag(&self, deliveries: i64, seconds: f64) {
        self.metrics.projector_lag(deliveries, seconds);
    }
}

/// Shared state of the service.
pub struct Service {
    /// Webhook endpoints by name.
    endpoints: HashMap<String, Endpoint>,
    /// SQS sources by name (names are unique across endpoints and sources).
    sources: HashMap<String, Source>,
    inbox: Inbox,
    /// Notified by every inbox append: this replica's projector waits on it.
    projector_wake: Arc<Notify>,
    projector: ProjectorOptions,
    observer: Arc<Observer>,
    /// The service's own metrics registry (see `metrics.rs` for why it is not global).
    registry: Registry,
    subscriptions: subscriptions::Subscriptions,
    /// The key sets of the JWT endpoints, refreshed by [`Service::start_key_refresh`].
    key_sets: Vec<KeyRefresh>,
    /// The client those refreshes fetch with (when there are any).
    key_client: Option<reqwest::Client>,
    /// The API's bearer tokens (digests only) and whether they are enforced.
    api_auth: Arc<ApiAuth>,
}

impl Service {
    /// Builds the service from its configuration and an opened store.
    ///
    /// # Errors
    /// [`ServiceError::Endpoint`] for an endpoint whose provider is not in this build, or
    /// whose credentials are of a kind its provider cannot send (a configuration error, so
    /// that `serve` stops at once instead of refusing every delivery), or whose key set file
    /// cannot be read; [`ServiceError::Read`] for a secret file that cannot be read,
    /// [`ServiceError::Config`] for endpoint settings that contradict each other,
    /// [`ServiceError::Setting`] for an SQS source with an unknown time zone,
    /// [`ServiceError::Subscription`] for invalid subscriptions; for the API's tokens, see
    /// [`ApiAuth::new`].
    pub fn new(config: &Config, store: Store) -> Result<Arc<Self>, ServiceError> {
        let api_auth = Arc::new(ApiAuth::new(&config.api_tokens, &config.api)?);
        let mut endpoints = HashMap::new();
        let mut key_sets = Vec::new();
        for endpoint in &config.endpoints {
            let failed = |source: shipfeed::Error| ServiceError::Endpoint {
                name: endpoint.name.clone(),
                source,
            };
            let adapter: Arc<dyn Adapter> =
                registry::adapter(endpoint.provider, &Settings::default())
                    .map_err(failed)?
                    .into();
            auth::check_kind(
                endpoint.provider,
                adapter.credential_kinds(),
                endpoint.credential_kind(),
            )
            .map_err(failed)?;
            endpoint.check()?;
            let (positions, credentials) = match &endpoint.jwt {
                Some(jwt) => {
                    let (keys, schedule) = key_set(&endpoint.name, jwt).map_err(failed)?;
                    let policy = jwt.policy().map_err(|message| {
                        failed(shipfeed::Error::new(ErrorKind::Config, message))
                    })?;
                    let verifier =
                        JwtVerifier::new(policy, Arc::clone(&keys) as Arc<dyn KeySource>)
                            .map_err(failed)?;
                    key_sets.push(KeyRefresh { keys, schedule });
                    (vec![0], vec![Credentials::Jwt(verifier)])
                }
                None => endpoint.credentials()?.into_iter().unzip(),
            };
            endpoints.insert(
                endpoint.name.clone(),
                Endpoint {
                    provider: endpoint.provider,
                    adapter,
                    credentials,
                    positions,
                },
            );
        }
        let key_client = (!key_sets.is_empty())
            .then(jwks::client)
            .transpose()
            .map_err(|e| ServiceError::Config(format!("the JWKS HTTP client: {e}")))?;
        let mut sources = HashMap::new();
        for source in &config.sqs_sources {
            let zone: chrono_tz::Tz =
                source
                    .source_time_zone
                    .parse()
                    .map_err(|e: chrono_tz::ParseError| ServiceError::Setting {
                        setting: format!("sqs_source `{}`: source_time_zone", source.name),
                        value: source.source_time_zone.clone(),
                        source: e.to_string().into(),
                    })?;
            let settings = Settings::with_source_time_zone(zone);
            let adapter = registry::adapter(source.provider, &settings).map_err(|error| {
                ServiceError::Endpoint {
                    name: source.name.clone(),
                    source: error,
                }
            })?;
            let endpoint = Endpoint {
                provider: source.provider,
                adapter: adapter.into(),
                credentials: Vec::new(),
                positions: Vec::new(),
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
        let (metrics, mut registry) = Metrics::with_inputs(
            &endpoints
                .iter()
                .map(|(name, endpoint)| (name.clone(), endpoint.provider))
                .collect::<Vec<_>>(),
            &sources
                .iter()
                .map(|(name, source)| (name.clone(), source.endpoint.provider))
                .collect::<Vec<_>>(),
        );
        let observer = Arc::new(Observer {
            metrics,
            new_events: Arc::new(Notify::new()),
        });
        let projector_wake = Arc::new(Notify::new());
        let subscriptions = subscriptions::Subscriptions::new(
            config,
            store.clone(),
            Arc::clone(&observer.new_events),
            &mut registry,
        )?;
        Ok(Arc::new(Service {
            endpoints,
            sources,
            inbox: Inbox::new(
                store,
                Arc::clone(&projector_wake),
                Arc::clone(&observer) as Arc<dyn InboxObserver>,
            ),
            projector_wake,
            projector: ProjectorOptions {
                batch: config.projector.batch.max(1),
                lease_ttl: config.lease_ttl()?,
                holder: subscriptions.replica().to_owned(),
                identity: config.identity.identity(),
                alerts: config.alerts.options()?,
                ..ProjectorOptions::default()
            },
            observer,
            registry,
            subscriptions,
            key_sets,
            key_client,
            api_auth,
        }))
    }

    /// Starts one task per JWT endpoint that keeps its key set fresh in the background
    /// (fetched at start, every `refresh_seconds`, and soon after a token names an unknown
    /// key id, never twice within `min_refresh_seconds`), until `shutdown` turns true.
    /// Deliveries are checked against the keys held meanwhile; until a URL's first fetch
    /// there are none, and JWTs are refused (the provider retries).
    pub fn start_key_refresh(&self, shutdown: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        self.start_key_refresh_with(Arc::new(SystemClock), shutdown)
    }

    /// [`start_key_refresh`](Service::start_key_refresh) with the schedule read from
    /// `clock`.
    pub fn start_key_refresh_with(
        &self,
        clock: Arc<dyn Clock>,
        shutdown: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let Some(client) = self.key_client.clone() else {
            return Vec::new();
        };
        self.key_sets
            .iter()
            .map(|set| {
                tokio::spawn(Arc::clone(&set.keys).refresh(
                    set.schedule.clone(),
                    client.clone(),
                    Arc::clone(&clock),
                    self.observer.metrics.clone(),
                    shutdown.clone(),
                ))
            })
            .collect()
    }

    /// The projector of this service's store, with its endpoints' and sources' adapters.
    pub fn projector(&self) -> Projector {
        let mut adapters = Adapters::new();
        for (name, endpoint) in &self.endpoints {
            adapters.insert(name.clone(), Arc::clone(&endpoint.adapter));
        }
        for (name, source) in &self.sources {
            adapters.insert(name.clone(), Arc::clone(&source.endpoint.adapter));
        }
        Projector::new(
            self.store().clone(),
            adapters,
            Arc::clone(&self.observer) as Arc<dyn ProjectionObserver>,
            self.projector.clone(),
            Arc::new(SystemClock),
        )
    }

    /// Starts this replica's projector: it projects while it holds the projector lease, and
    /// stands by while another replica (or a replay) does, until `shutdown` turns true.
    pub fn start_projector(&self, shutdown: &watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(
            self.projector()
                .run(Arc::clone(&self.projector_wake), shutdown.clone()),
        )
    }

    /// Projects the stored deliveries that match `filter` again with this build's adapters,
    /// in place of the running projector (see [`Projector::replay`]), for `actor`; recorded
    /// in the audit log with its counts, or its error.
    ///
    /// # Errors
    /// [`shipfeed_store::StoreError`] when the store cannot be read or written; what was
    /// replayed before stays replayed, and running again is safe.
    pub async fn replay(
        &self,
        filter: &ReplayFilter,
        actor: &Actor,
        progress: impl FnMut(&ReplaySummary),
    ) -> Result<ReplaySummary, shipfeed_store::StoreError> {
        let result = self.projector().replay(filter, progress).await;
        let target = filter.to_string();
        let recorded = audit::Action {
            action: shipfeed_store::AuditAction::Replay,
            target: &target,
            parameters: serde_json::to_value(filter).unwrap_or_default(),
            at: Utc::now(),
        };
        audit::record(self.store(), actor, recorded, &result, audit::replay_counts).await;
        result
    }

    /// Projects exactly the deliveries `seqs` again with this build's adapters, as
    /// [`replay`](Service::replay) does, for `actor`, saying of each what became of it (see
    /// [`Projector::replay_deliveries`]); recorded in the audit log with its counts and the
    /// `seq`s by outcome, or its error.
    ///
    /// # Errors
    /// As [`replay`](Service::replay).
    pub async fn replay_deliveries(
        &self,
        seqs: &std::collections::BTreeSet<i64>,
        actor: &Actor,
    ) -> Result<ReplayReport, shipfeed_store::StoreError> {
        let result = self.projector().replay_deliveries(seqs).await;
        let target = ReplayFilter {
            seqs: Some(seqs.clone()),
            ..ReplayFilter::default()
        }
        .to_string();
        let recorded = audit::Action {
            action: shipfeed_store::AuditAction::Replay,
            target: &target,
            parameters: json!({ "seqs": seqs }),
            at: Utc::now(),
        };
        audit::record(self.store(), actor, recorded, &result, audit::replay_report).await;
        result
    }

    /// The store behind the service.
    pub fn store(&self) -> &Store {
        self.inbox.store()
    }

    /// The service's inbox: appends wake its projector and are timed in its metrics.
    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// What an operator does with this service's subscriptions (list them, their parked
    /// messages, pause, resume, redeliver), over its store.
    pub fn subscription_admin(&self) -> SubscriptionAdmin<'_> {
        SubscriptionAdmin::new(self.store(), self.subscriptions())
    }

    /// Wakes this replica's subscriptions, so that one whose state an operator changed reads
    /// it now rather than at its next look.
    fn wake_subscriptions(&self) {
        self.observer.new_events.notify_waiters();
    }

    /// The API's tokens and whether they are enforced.
    pub fn api_auth(&self) -> &ApiAuth {
        &self.api_auth
    }

    /// Refuses to serve the API open (no API token set) on anything but a loopback address;
    /// `shipfeed serve` calls it before it binds `listen`.
    ///
    /// # Errors
    /// [`ServiceError::Config`] saying how to fix it (see [`ApiAuth::check_listen`]).
    pub fn check_listen(&self, listen: std::net::SocketAddr) -> Result<(), ServiceError> {
        self.api_auth.check_listen(listen)
    }

    /// The token check of a route group that needs `scope`.
    fn guard(&self, scope: Scope) -> api_auth::Guard {
        api_auth::Guard::new(
            Arc::clone(&self.api_auth),
            scope,
            self.observer.metrics.clone(),
        )
    }

    /// The HTTP routes: those of the route table (`routes`), each behind the token check
    /// its access needs. `/v1/*` is in two groups, each behind the token check with its
    /// scope; a route joins the group whose scope it needs.
    pub fn router(self: &Arc<Self>, body_limit_bytes: usize) -> Router {
        let mut open = Router::new();
        let mut read = Router::new();
        let mut admin = Router::new();
        for route in routes() {
            match route.access {
                Access::Open | Access::Provider => open = open.route(route.path, route.handler),
                Access::Metrics if self.api_auth.protects_metrics() => {
                    let handler = api_auth::protect_route(route.handler, self.guard(Scope::Read));
                    open = open.route(route.path, handler);
                }
                Access::Metrics => open = open.route(route.path, route.handler),
                Access::Token(Scope::Read) => read = read.route(route.path, route.handler),
                Access::Token(Scope::Admin) => admin = admin.route(route.path, route.handler),
            }
        }
        // A path under /v1 that names nothing is a 404 after the token check, so that
        // probing without a token learns nothing (not a route: the document leaves it out).
        let read = read.route("/v1/{*rest}", any(no_route));
        // The console is a page and its session, not part of the API: the route table (and
        // so the OpenAPI document) leaves it out.
        open.merge(console::router())
            .merge(api_auth::protect(read, self.guard(Scope::Read)))
            .merge(api_auth::protect(admin, self.guard(Scope::Admin)))
            .layer(DefaultBodyLimit::max(body_limit_bytes))
            .layer(tower_http::trace::TraceLayer::new_for_http())
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_secs(8),
            ))
            .with_state(Arc::clone(self))
    }
}

/// Every route of the HTTP API, once: [`Service::router`] serves these (and the catch-all
/// 404 under `/v1`), and [`openapi_document`] describes these, so that neither can miss one.
#[rustfmt::skip]
fn routes() -> Vec<Route<Arc<Service>>> {
    use openapi::describe;
    use Access::{Metrics, Open, Provider, Token};
    use Scope::{Admin, Read};
    use Verb::{Get, Post};
    vec![
        Route::new(Post, "/webhooks/{endpoint}", Provider, receive, describe::webhook),
        Route::new(Get, "/healthz", Open, healthz, describe::healthz),
        Route::new(Get, "/readyz", Open, ready, describe::readyz),
        Route::new(Get, "/metrics", Metrics, metrics, describe::metrics),
        Route::new(Get, "/openapi.json", Open, openapi_json, describe::openapi),
        Route::new(Get, "/v1/events", Token(Read), events, describe::events),
        Route::new(Get, "/v1/events/{event_id}/revisions", Token(Read), revisions, describe::revisions),
        Route::new(Get, "/v1/search", Token(Read), search, describe::search),
        Route::new(Get, "/v1/status", Token(Read), status, describe::status),
        Route::new(Get, "/v1/shipments/{tracking}", Token(Read), shipments_by_tracking, describe::shipments_by_tracking),
        Route::new(Get, "/v1/shipments/{carrier}/{tracking}", Token(Read), shipments_by_carrier, describe::shipments_by_carrier),
        Route::new(Get, "/v1/deliveries/{seq}", Token(Read), delivery, describe::delivery),
        Route::new(Get, "/v1/dead-letters", Token(Read), dead_letters, describe::dead_letters),
        Route::new(Get, "/v1/dead-letters/{seq}/body", Token(Admin), dead_letter_body, describe::dead_letter_body),
        Route::new(Post, "/v1/dead-letters/replay", Token(Admin), replay_deliveries, describe::replay_dead_letters),
        Route::new(Get, "/v1/alerts", Token(Read), alerts, describe::alerts),
        Route::new(Get, "/v1/drift", Token(Read), drift, describe::drift),
        Route::new(Get, "/v1/subscriptions", Token(Read), list_subscriptions, describe::subscriptions),
        Route::new(Get, "/v1/subscriptions/{name}/messages", Token(Read), subscription_messages, describe::subscription_messages),
        Route::new(Post, "/v1/subscriptions/{name}/pause", Token(Admin), pause_subscription, describe::pause_subscription),
        Route::new(Post, "/v1/subscriptions/{name}/resume", Token(Admin), resume_subscription, describe::resume_subscription),
        Route::new(Post, "/v1/subscriptions/{name}/redeliver", Token(Admin), redeliver, describe::redeliver),
        Route::new(Get, "/v1/audit", Token(Read), audit_log, describe::audit),
    ]
}

/// The OpenAPI 3.1 document of the HTTP API (`GET /openapi.json`; committed as
/// `schema/openapi.json`, which `cargo xtask fixtures` keeps fresh), pretty-printed with a
/// final newline. Its paths are the router's routes; its component schemas are generated
/// from the types the API serves.
///
/// ```
/// let document: serde_json::Value =
///     serde_json::from_str(&shipfeed_server::openapi_document().unwrap()).unwrap();
/// assert!(document["openapi"].as_str().unwrap().starts_with("3.1."));
/// assert!(document["paths"]["/v1/events"]["get"].is_object());
/// ```
///
/// # Errors
/// When the document cannot be serialized (it always can).
pub fn openapi_document() -> Result<String, serde_json::Error> {
    openapi::document(&routes())
}

/// The `(method, path)` of every route of the HTTP API, as the router serves them and the
/// OpenAPI document lists them (`GET`, `/v1/events`), in the route table's order.
pub fn api_routes() -> Vec<(&'static str, &'static str)> {
    routes()
        .iter()
        .map(|route| (route.verb.as_str(), route.path))
        .collect()
}

async fn openapi_json() -> Response {
    static DOCUMENT: OnceLock<Result<String, String>> = OnceLock::new();
    match DOCUMENT.get_or_init(|| openapi_document().map_err(|e| e.to_string())) {
        Ok(document) => (
            [(header::CONTENT_TYPE, "application/json")],
            document.clone(),
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot generate the OpenAPI document");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot generate the OpenAPI document",
            )
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

/// A JWT endpoint's key set (a file is read now: a bad one stops the start) and its refresh
/// schedule.
fn key_set(
    endpoint: &str,
    jwt: &JwtConfig,
) -> Result<(Arc<jwks::EndpointKeys>, jwks::Schedule), shipfeed::Error> {
    let config = |message: String| shipfeed::Error::new(ErrorKind::Config, message);
    let location = jwt.location().map_err(config)?;
    let (every, least) = jwt.refresh().map_err(config)?;
    let (keys, loaded_at) = match &location {
        KeyLocation::File(path) => (
            jwks::read_file(path).map_err(config)?,
            Some(SystemClock.now()),
        ),
        KeyLocation::Url(_) => (KeySet::default(), None),
    };
    Ok((
        jwks::EndpointKeys::new(endpoint, location, keys),
        jwks::Schedule::new(every, least, loaded_at),
    ))
}

/// The HTTP status that answers an error of `kind`: the one place the service maps errors to
/// statuses. Authentication failures (including an endpoint without a secret: fail closed)
/// are 401; a misconfigured endpoint or a provider left out of the build is 500, so the
/// provider retries after the fix instead of treating the delivery as refused; a dependency
/// that is down is 503.
///
/// ```
/// use axum::http::StatusCode;
/// use shipfeed::ErrorKind;
/// use shipfeed_server::http_status;
///
/// assert_eq!(http_status(ErrorKind::InvalidSignature), StatusCode::UNAUTHORIZED);
/// assert_eq!(http_status(ErrorKind::MissingSecret), StatusCode::UNAUTHORIZED);
/// assert_eq!(http_status(ErrorKind::Config), StatusCode::INTERNAL_SERVER_ERROR);
/// assert_eq!(http_status(ErrorKind::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
/// ```
pub fn http_status(kind: ErrorKind) -> StatusCode {
    match kind {
        kind if kind.is_authentication() => StatusCode::UNAUTHORIZED,
        ErrorKind::Payload => StatusCode::BAD_REQUEST,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        // Config, ProviderDisabled and kinds added later: ours to fix, not the sender's.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
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

fn error_response(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": message.to_string()}))).into_response()
}

/// The answer to a delivery that did not verify: 401 for an authentication failure, 500 for
/// an endpoint that cannot check deliveries. Never logs the body, nor any credential.
fn refuse(name: &str, endpoint: &Endpoint, metrics: &Metrics, error: &shipfeed::Error) -> Response {
    let status = http_status(error.kind());
    // Never log the body: it is unauthenticated input. The error says why, never the
    // credentials the request carried.
    if error.kind().is_authentication() {
        tracing::warn!(endpoint = %name, %error, "rejected delivery");
        metrics.delivery(name, endpoint.provider, Outcome::Unauthorized);
        return error_response(status, error);
    }
    // Verify answers an authentication kind or, for credentials the provider cannot use
    // (refused at startup, so this is a last resort), a configuration error.
    tracing::error!(
        endpoint = %name,
        %error,
        "the endpoint cannot check deliveries; fix its configuration (nothing stored)"
    );
    metrics.delivery(name, endpoint.provider, Outcome::Misconfigured);
    // The detail is for the operator's log, not for whoever sent the request.
    error_response(status, "the endpoint is misconfigured; nothing was stored")
}

async fn receive(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(endpoint) = service.endpoints.get(&name) else {
        return error_response(StatusCode::NOT_FOUND, format!("no endpoint `{name}`"));
    };
    let delivery = RawDelivery {
        body: Vec::from(body),
        headers: to_headers(&headers),
        received_at: chrono::Utc::now(),
    };
    let metrics = &service.observer.metrics;
    let verified = auth::verify_any(endpoint.adapter.as_ref(), &delivery, &endpoint.credentials);
    if endpoint.adapter.is_probe(&delivery) {
        // It carries no data, so it is answered whether or not it carries credentials (the
        // provider may not send them with it), and stored nowhere.
        let authenticated = verified.is_ok();
        metrics.probe(&name, authenticated);
        metrics.delivery(&name, endpoint.provider, Outcome::Probe);
        tracing::info!(
            endpoint = %name,
            authenticated,
            "answered the provider's endpoint probe (no data: nothing stored)"
        );
        return (StatusCode::OK, Json(json!({"status": "probe"}))).into_response();
    }
    let matched = match verified {
        Ok(index) => endpoint.positions.get(index).copied(),
        Err(error) => return refuse(&name, endpoint, metrics, &error),
    };
    if let Some(position) = matched {
        metrics.auth_matched(&name, position);
    }
    let arrival = Arrival {
        endpoint: name.clone(),
        provider: endpoint.provider,
        delivery,
    };
    match service.inbox.append(vec![arrival]).await {
        Ok(seqs) => {
            metrics.delivery(&name, endpoint.provider, Outcome::Accepted);
            let delivery_seq = seqs.first().copied().unwrap_or_default();
            (
                StatusCode::OK,
                Json(json!({"status": "accepted", "delivery_seq": delivery_seq})),
            )
                .into_response()
        }
        Err(InboxError::Store(store_error)) => {
            tracing::warn!(endpoint = %name, error = %shipfeed::error_chain(&store_error), "store unavailable");
            metrics.delivery(&name, endpoint.provider, Outcome::StoreUnavailable);
            let kind = shipfeed::Error::from(store_error).kind();
            error_response(http_status(kind), "store unavailable; retry later")
        }
        Err(error) => {
            tracing::error!(endpoint = %name, %error, "the store broke its contract");
            metrics.delivery(&name, endpoint.provider, Outcome::Internal);
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; retry later",
            )
        }
    }
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
    error_response(StatusCode::SERVICE_UNAVAILABLE, error)
}

/// `GET /v1/events`: a page of the feed through the query's filter; `next_cursor` is past
/// every item read, admitted or not (see `Store::feed_page`).
async fn events(
    State(service): State<Arc<Service>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let query = match feed_query::FeedQuery::parse(&pairs) {
        Ok(query) => query,
        Err(refused) => return refused.into_response(),
    };
    match service
        .store()
        .feed_page(query.after, query.limit, &query.filter)
        .await
    {
        Ok(page) => {
            Json(json!({"events": page.items, "next_cursor": page.next_cursor})).into_response()
        }
        Err(error) => unavailable(error),
    }
}

#[derive(Deserialize)]
struct AlertPage {
    /// The last `alert_id` of the previous page.
    #[serde(default)]
    after: String,
    #[serde(default = "default_limit")]
    limit: usize,
}

/// The open alerts (raised, not yet cleared), by id: `{"alerts": [...], "next": id}`, where
/// `next` is the `after` of the next page (`null` after the last one).
async fn alerts(State(service): State<Arc<Service>>, Query(page): Query<AlertPage>) -> Response {
    let limit = page.limit.clamp(1, 1000);
    match service.store().open_alerts(&page.after, limit).await {
        Ok(alerts) => {
            let next = (alerts.len() == limit)
                .then(|| alerts.last().map(|alert| alert.alert_id.clone()))
                .flatten();
            Json(json!({"alerts": alerts, "next": next})).into_response()
        }
        Err(error) => unavailable(error),
    }
}

async fn shipments(service: &Service, carrier: Option<&str>, tracking: &str) -> Response {
    match service.store().shipments(carrier, tracking).await {
        Ok(views) if views.is_empty() => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such shipment"})),
        )
            .into_response(),
        Ok(views) => Json(json!({"shipments": views})).into_response(),
        Err(error) => unavailable(error),
    }
}

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// `GET /v1/search?q=`: the shipments whose tracking number (any carrier, any case, spaces
/// ignored) or merchant's order number (any case) is `q`: what a support agent types.
async fn search(State(service): State<Arc<Service>>, Query(query): Query<SearchQuery>) -> Response {
    let q = query.q.trim();
    if q.is_empty() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "give `q`: a tracking number or an order number",
        );
    }
    let store = service.store();
    let found = match store.shipments(None, q).await {
        Ok(by_tracking) => match store.shipments_by_order(q).await {
            Ok(by_order) => {
                let mut views = by_tracking;
                for view in by_order {
                    if !views.iter().any(|seen| seen.key == view.key) {
                        views.push(view);
                    }
                }
                views
            }
            Err(error) => return unavailable(error),
        },
        Err(error) => return unavailable(error),
    };
    if found.is_empty() {
        return error_response(StatusCode::NOT_FOUND, "no such shipment");
    }
    Json(json!({"shipments": found})).into_response()
}

/// `GET /v1/status`: how far the projector is behind the inbox, read from the store (the
/// same answer from every replica).
async fn status(State(service): State<Arc<Service>>) -> Response {
    let store = service.store();
    let lag = match store.cursor(shipfeed_store::PROJECTOR).await {
        Ok(cursor) => store.inbox_lag(cursor).await.map(|lag| (cursor, lag)),
        Err(error) => Err(error),
    };
    match lag {
        Ok((cursor, lag)) => Json(json!({
            "projector": {
                "cursor": cursor,
                "lag_deliveries": lag.deliveries,
                "oldest_unprojected_at": lag.oldest,
                "lag_seconds": lag.oldest.map_or(0.0, |oldest| {
                    (Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0
                }),
            }
        }))
        .into_response(),
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
        .store()
        .dead_letters(page.after, page.limit.clamp(1, 1000))
        .await
    {
        Ok(items) => Json(json!({"dead_letters": items})).into_response(),
        Err(error) => unavailable(error),
    }
}

/// Where one delivery is in the pipeline: stored, projected or not yet, and what its
/// projection produced (event ids, duplicates, notices, dead letter and reason).
async fn delivery(State(service): State<Arc<Service>>, Path(seq): Path<i64>) -> Response {
    match service.store().delivery(seq).await {
        Ok(Some(status)) => Json(status).into_response(),
        Ok(None) => error_response(
            StatusCode::NOT_FOUND,
            format!("no delivery with sequence number {seq}"),
        ),
        Err(error) => unavailable(error),
    }
}

/// Every stored version of an event, oldest first, with the delivery each came from: what a
/// correction changed, kept for the operator.
async fn revisions(State(service): State<Arc<Service>>, Path(event_id): Path<String>) -> Response {
    match service.store().revisions(&event_id).await {
        Ok(revisions) if revisions.is_empty() => {
            error_response(StatusCode::NOT_FOUND, format!("no event `{event_id}`"))
        }
        Ok(revisions) => {
            let revisions: Vec<_> = revisions
                .into_iter()
                .map(|(revision, delivery_seq, event)| {
                    json!({"revision": revision, "delivery_seq": delivery_seq, "event": event})
                })
                .collect();
            Json(json!({"event_id": event_id, "revisions": revisions})).into_response()
        }
        Err(error) => unavailable(error),
    }
}

#[derive(Deserialize)]
struct DriftQuery {
    provider: Option<String>,
}

/// What the adapters met and do not know, per provider, kind and key (only one provider's
/// with `?provider=`), and what the cap dropped.
async fn drift(State(service): State<Arc<Service>>, Query(query): Query<DriftQuery>) -> Response {
    let provider = match query.provider.as_deref().map(str::parse::<Provider>) {
        None => None,
        Some(Ok(provider)) => Some(provider),
        Some(Err(error)) => return error_response(StatusCode::BAD_REQUEST, error),
    };
    match service.store().drift(provider).await {
        Ok(report) => Json(report).into_response(),
        Err(error) => unavailable(error),
    }
}

/// The raw body of a dead letter, exactly as it arrived (`admin` scope: it is the provider's
/// payload, with whatever personal data it carries). Its headers are not served: they hold
/// the provider's credentials.
async fn dead_letter_body(State(service): State<Arc<Service>>, Path(seq): Path<i64>) -> Response {
    let found = service
        .store()
        .deliveries(seq.saturating_sub(1), 1, true)
        .await;
    match found {
        Ok(deliveries) => match deliveries.into_iter().find(|stored| stored.seq == seq) {
            Some(stored) => (
                [
                    (header::CONTENT_TYPE, "application/octet-stream"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                stored.delivery.body,
            )
                .into_response(),
            None => error_response(
                StatusCode::NOT_FOUND,
                format!("no dead letter with sequence number {seq}"),
            ),
        },
        Err(error) => unavailable(error),
    }
}

/// Every configured subscription with its cursor and state.
async fn list_subscriptions(State(service): State<Arc<Service>>) -> Response {
    match service.subscription_admin().list().await {
        Ok(subscriptions) => Json(json!({"subscriptions": subscriptions})).into_response(),
        Err(error) => unavailable(error),
    }
}

/// The answer to a request about a subscription that cannot be done: 404 for a name not
/// configured, 409 for a subscription that is not of kind `http`, 503 when the store fails.
fn refused(error: ControlError) -> Response {
    match error {
        ControlError::Unknown(_) => error_response(StatusCode::NOT_FOUND, error),
        ControlError::NotPush { .. } => error_response(StatusCode::CONFLICT, error),
        ControlError::Store(error) => unavailable(error),
    }
}

#[derive(Deserialize)]
struct MessagesQuery {
    /// `pending` or `exhausted` (both when absent).
    state: Option<String>,
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: usize,
}

/// A page of the messages an HTTP push subscription has parked, by `seq`, without their
/// bodies: `{"messages": [...], "next_cursor": seq}`.
async fn subscription_messages(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
    query: Result<Query<MessagesQuery>, QueryRejection>,
) -> Response {
    // Every refusal of this route is JSON, a parameter not of its type too.
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return error_response(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let state = match query.state.as_deref().map(control::parse_state).transpose() {
        Ok(state) => state,
        Err(error) => return error_response(StatusCode::BAD_REQUEST, error),
    };
    let limit = query.limit.clamp(1, 1000);
    match service
        .subscription_admin()
        .messages(&name, state, query.after, limit)
        .await
    {
        Ok(messages) => {
            let next_cursor = messages.last().map_or(query.after, |message| message.seq);
            Json(json!({"messages": messages, "next_cursor": next_cursor})).into_response()
        }
        Err(error) => refused(error),
    }
}

/// The answer to an operator's change: the subscription's state after it, once this
/// replica's subscriptions are woken to read it.
fn changed(
    service: &Service,
    result: Result<shipfeed_store::SubscriptionControl, ControlError>,
) -> Response {
    match result {
        Ok(state) => {
            service.wake_subscriptions();
            tracing::info!(
                subscription = %state.name,
                status = state.status.as_str(),
                "subscription changed by an operator"
            );
            Json(state).into_response()
        }
        Err(error) => refused(error),
    }
}

/// Pauses an HTTP push subscription.
async fn pause_subscription(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<api_auth::Caller>,
    Path(name): Path<String>,
) -> Response {
    let actor = Actor::from(&caller);
    let result = service
        .subscription_admin()
        .pause(&name, Utc::now(), &actor)
        .await;
    changed(&service, result)
}

/// Resumes (re-enables) an HTTP push subscription.
async fn resume_subscription(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<api_auth::Caller>,
    Path(name): Path<String>,
) -> Response {
    let actor = Actor::from(&caller);
    let result = service
        .subscription_admin()
        .resume(&name, Utc::now(), &actor)
        .await;
    changed(&service, result)
}

#[derive(Deserialize)]
struct RedeliverQuery {
    /// RFC 3339: only the messages first parked at or after it.
    since: Option<String>,
}

/// An RFC 3339 time of a query string. A `+` of its offset that was not percent-encoded
/// arrives as a space, and is read as the `+` it was.
fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let parse = |text: &str| DateTime::parse_from_rfc3339(text).map(|at| at.with_timezone(&Utc));
    parse(text)
        .or_else(|error| match text.rfind(' ') {
            Some(space) => parse(&format!("{}+{}", &text[..space], &text[space + 1..])),
            None => Err(error),
        })
        .map_err(|error| {
            format!(
                "`since` {text:?} is not an RFC 3339 time such as 2024-06-01T00:00:00Z ({error})"
            )
        })
}

/// Puts an HTTP push subscription's exhausted messages back on schedule:
/// `{"redelivered": N}`.
async fn redeliver(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<api_auth::Caller>,
    Path(name): Path<String>,
    query: Result<Query<RedeliverQuery>, QueryRejection>,
) -> Response {
    let actor = Actor::from(&caller);
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return error_response(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let since = match query.since.as_deref().map(parse_time).transpose() {
        Ok(since) => since,
        Err(error) => return error_response(StatusCode::BAD_REQUEST, error),
    };
    match service
        .subscription_admin()
        .redeliver(&name, since, Utc::now(), &actor)
        .await
    {
        Ok(count) => {
            service.wake_subscriptions();
            tracing::info!(subscription = %name, redelivered = count, ?since, "exhausted messages put back on schedule by an operator");
            Json(json!({"redelivered": count})).into_response()
        }
        Err(error) => refused(error),
    }
}

/// The most deliveries one `POST /v1/dead-letters/replay` names.
const MAX_REPLAY_SEQS: usize = 1000;

/// The body of `POST /v1/dead-letters/replay`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayRequest {
    /// The inbox `seq`s of the deliveries to replay (their `delivery_seq`): 1 to 1000 of
    /// them, each replayed once, whatever the order or repetitions.
    #[schemars(length(min = 1, max = 1000))]
    seqs: Vec<i64>,
}

/// Projects the deliveries named again with this build's adapters (after a fix), in place of
/// the running projector: `{"summary": ..., "deliveries": [{"seq", "outcome", "error"}]}`.
async fn replay_deliveries(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<api_auth::Caller>,
    body: Result<Json<ReplayRequest>, JsonRejection>,
) -> Response {
    let actor = Actor::from(&caller);
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be JSON {{\"seqs\": [delivery_seq, ...]}} with \
                     `Content-Type: application/json`: {}",
                    rejection.body_text()
                ),
            )
        }
    };
    if request.seqs.is_empty() || request.seqs.len() > MAX_REPLAY_SEQS {
        return error_response(
            StatusCode::BAD_REQUEST,
            format!(
                "`seqs` must name 1 to {MAX_REPLAY_SEQS} deliveries (it names {})",
                request.seqs.len()
            ),
        );
    }
    let seqs = request.seqs.into_iter().collect();
    match service.replay_deliveries(&seqs, &actor).await {
        Ok(report) => {
            tracing::info!(
                actor = %actor,
                deliveries = seqs.len(),
                recovered = report.summary.recovered,
                dead_letters = report.summary.dead_letters,
                "deliveries replayed by an operator"
            );
            Json(report).into_response()
        }
        Err(error @ shipfeed_store::StoreError::Fenced { .. }) => error_response(
            StatusCode::CONFLICT,
            format!(
                "another replay took the projector's lease over meanwhile ({error}); what was \
                 replayed stays replayed: send the request again"
            ),
        ),
        Err(error) => unavailable(error),
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    /// Only entries with a smaller id (the previous page's `next`).
    before: Option<i64>,
    #[serde(default = "default_limit")]
    limit: usize,
}

/// The audit log, newest first: `{"entries": [...], "next": id}`, where `next` is the
/// `before` of the next page (`null` after the last one).
async fn audit_log(
    State(service): State<Arc<Service>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return error_response(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let limit = query.limit.clamp(1, 1000);
    match service.store().audit(query.before, limit).await {
        Ok(entries) => {
            let next = (entries.len() == limit)
                .then(|| entries.last().map(|entry| entry.id))
                .flatten();
            Json(json!({"entries": entries, "next": next})).into_response()
        }
        Err(error) => unavailable(error),
    }
}

async fn no_route() -> Response {
    error_response(StatusCode::NOT_FOUND, "no such route")
}

async fn ready(State(service): State<Arc<Service>>) -> Response {
    match service.store().ping().await {
        Ok(()) => "ready".into_response(),
        Err(error) => unavailable(error),
    }
}

async fn metrics(State(service): State<Arc<Service>>) -> Response {
    // What lives in the store (drift, lag, dead letters, alerts, subscriptions' states) is
    // read at each scrape: every replica shows the same, and a restart loses none of it.
    service.refresh_metrics().await;
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&service.registry),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_string_time_is_rfc_3339_with_its_plus_restored() {
        let at = |text: &str| parse_time(text).map(|at| at.to_rfc3339());
        assert_eq!(
            at("2024-06-01T00:00:00Z").as_deref(),
            Ok("2024-06-01T00:00:00+00:00")
        );
        // `+02:00` unencoded in a query string decodes to ` 02:00`.
        for text in ["2024-06-01T02:00:00+02:00", "2024-06-01T02:00:00 02:00"] {
            assert_eq!(
                at(text).as_deref(),
                Ok("2024-06-01T00:00:00+00:00"),
                "{text}"
            );
        }
        for wrong in ["", "yesterday", "2024-06-01", "2024-06-01T00:00:00"] {
            let error = parse_time(wrong).unwrap_err();
            assert!(error.contains("RFC 3339"), "{wrong:?}: {error}");
        }
    }

    #[test]
    fn each_error_kind_has_its_http_status() {
        for (kind, status) in [
            (ErrorKind::MissingSignature, StatusCode::UNAUTHORIZED),
            (ErrorKind::InvalidSignature, StatusCode::UNAUTHORIZED),
            // Fail closed: no secret means no delivery is authentic.
            (ErrorKind::MissingSecret, StatusCode::UNAUTHORIZED),
            (ErrorKind::Payload, StatusCode::BAD_REQUEST),
            (ErrorKind::Config, StatusCode::INTERNAL_SERVER_ERROR),
            (
                ErrorKind::ProviderDisabled,
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (ErrorKind::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
        ] {
            assert_eq!(http_status(kind), status, "{kind:?}");
        }
        // What a store failure becomes on its way to the answer.
        let store_down = shipfeed::Error::from(shipfeed_store::StoreError::Closed);
        assert_eq!(
            http_status(store_down.kind()),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
