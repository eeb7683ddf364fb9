//! The service's Prometheus metrics, with prometheus-client.
//!
//! Why prometheus-client rather than `metrics` + `metrics-exporter-prometheus`: the `metrics`
//! facade records into one process-global recorder, but every [`Service`](crate::Service) owns
//! its counters (tests and benchmarks build several services in one process, and each one's
//! `/metrics` must show its own). prometheus-client has no global state: a `Registry` per
//! service. It has no process collector of its own, so the `process_*` metrics come from
//! metrics-process's raw snapshot (read from `/proc` at each scrape), without the facade.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use shipfeed::Provider;
use shipfeed_store::{DriftReport, Store, SubscriptionStatus, PROJECTOR};

use crate::SubscriptionSummary;

/// Commit latency buckets, in seconds.
const COMMIT_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Projector batch size buckets, in deliveries.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How many of the inbox's most recent deliveries the first scrape reads (by `seq`, without
/// their bodies: a bounded read, once per process) to learn when each endpoint last
/// delivered, so that a restart does not hide an endpoint's silence.
const ARRIVALS_SCAN: usize = 10_000;

/// Every status of `shipfeed_subscription_status`: each subscription has one series per
/// status, 1 for its current one.
const SUBSCRIPTION_STATUSES: [SubscriptionStatus; 3] = [
    SubscriptionStatus::Active,
    SubscriptionStatus::Paused,
    SubscriptionStatus::Disabled,
];

/// The `Content-Type` of [`Metrics::render`]'s output.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    endpoint: String,
    provider: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    provider: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriftLabels {
    provider: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PositionLabels {
    endpoint: String,
    position: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    endpoint: String,
    authenticated: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    endpoint: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InputLabels {
    endpoint: String,
    provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriptionLabels {
    subscription: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriptionStatusLabels {
    subscription: String,
    status: &'static str,
}

/// Seconds since the Unix epoch, with the milliseconds.
fn unix_seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

/// Raises a timestamp gauge to `seconds` unless it already shows a later time: deliveries
/// answered concurrently, and the store's last arrivals read at the first scrape, never move
/// it back. (A non-negative `f64`'s bits order as its values do, so `fetch_max` on the bits is
/// a maximum of the times.)
fn raise_to(gauge: &Gauge<f64, AtomicU64>, seconds: f64) {
    if seconds.is_finite() && seconds >= 0.0 {
        gauge
            .inner()
            .fetch_max(seconds.to_bits(), Ordering::Relaxed);
    }
}

/// What the gauges read from the store at each scrape keep between scrapes.
struct FromStore {
    /// The configured endpoints and SQS sources (the inputs), with their providers.
    inputs: Vec<(String, Provider)>,
    /// When the service started: the last delivery of an input the inbox has none of.
    started: DateTime<Utc>,
    /// Whether the inputs' last deliveries were read from the store yet.
    arrivals_read: AtomicBool,
    /// The dead letter series set so far, so that one whose count fell to nothing is zeroed.
    dead_letters: Mutex<HashSet<InputLabels>>,
    /// The rules whose open alerts were counted so far, likewise.
    rules: Mutex<HashSet<String>>,
}

/// What a key set refresh came to, as the `outcome` label of `shipfeed_jwks_refreshes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// A new key set is in use.
    Loaded,
    /// The fetch or the document failed; the keys in use stay.
    Failed,
    /// A token named an unknown key, and the fetch it asks for waits for the minimum interval.
    RateLimited,
}

impl Refresh {
    fn as_str(self) -> &'static str {
        match self {
            Refresh::Loaded => "loaded",
            Refresh::Failed => "failed",
            Refresh::RateLimited => "rate_limited",
        }
    }
}

/// What a delivery came to, as the `outcome` label of `shipfeed_deliveries_total` (the
/// inbox: accepted or why not) and of `shipfeed_projected_deliveries_total` (stored or dead
/// letter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Accepted,
    Stored,
    DeadLetter,
    Unauthorized,
    Probe,
    Misconfigured,
    StoreUnavailable,
    Internal,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Stored => "stored",
            Outcome::DeadLetter => "dead_letter",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Probe => "probe",
            Outcome::Misconfigured => "misconfigured",
            Outcome::StoreUnavailable => "store_unavailable",
            Outcome::Internal => "internal_error",
        }
    }

    /// Whether the delivery was answered with an error (401, 500, 503): a provider that
    /// stops on errors (HappyColis) holds everything after it.
    fn is_refusal(self) -> bool {
        matches!(
            self,
            Outcome::Unauthorized
                | Outcome::Misconfigured
                | Outcome::StoreUnavailable
                | Outcome::Internal
        )
    }
}

/// The service's counters; cheap to clone (every clone counts into the same registry).
#[derive(Clone)]
pub(crate) struct Metrics {
    deliveries: Family<DeliveryLabels, Counter>,
    duplicates: Family<ProviderLabels, Counter>,
    events: Family<StatusLabels, Counter>,
    drift_observations: Family<DriftLabels, Gauge>,
    drift_keys: Family<DriftLabels, Gauge>,
    drift_dropped: Family<DriftLabels, Gauge>,
    append: Histogram,
    projected: Family<DeliveryLabels, Counter>,
    batch_size: Histogram,
    batch_seconds: Histogram,
    lag_deliveries: Gauge,
    lag_seconds: Gauge<f64, AtomicU64>,
    auth_matched: Family<PositionLabels, Counter>,
    probes: Family<ProbeLabels, Counter>,
    jwks_refreshes: Family<RefreshLabels, Counter>,
    jwks_keys: Family<EndpointLabels, Gauge>,
    alerts_raised: Counter,
    api_rejected: Family<ReasonLabels, Counter>,
    last_delivery: Family<InputLabels, Gauge<f64, AtomicU64>>,
    last_refusal: Family<InputLabels, Gauge<f64, AtomicU64>>,
    dead_letters: Family<InputLabels, Gauge>,
    alerts_open: Family<RuleLabels, Gauge>,
    subscription_status: Family<SubscriptionStatusLabels, Gauge>,
    subscription_failing: Family<SubscriptionLabels, Gauge<f64, AtomicU64>>,
    from_store: Arc<FromStore>,
}

impl Metrics {
    /// [`Metrics::with_inputs`] of a service without endpoints or sources (for tests).
    #[cfg(test)]
    pub(crate) fn new() -> (Metrics, Registry) {
        Metrics::with_inputs(&[], &[])
    }

    /// The counters and the registry that renders them (and the process metrics), for a
    /// service with these webhook `endpoints` and SQS `sources` (name and provider): their
    /// series that alerts compare over time start at 0, so that the first 401 or dead letter
    /// after a start is an increase too.
    pub(crate) fn with_inputs(
        endpoints: &[(String, Provider)],
        sources: &[(String, Provider)],
    ) -> (Metrics, Registry) {
        let metrics = Metrics {
            deliveries: Family::default(),
            duplicates: Family::default(),
            events: Family::default(),
            drift_observations: Family::default(),
            drift_keys: Family::default(),
            drift_dropped: Family::default(),
            append: Histogram::new(COMMIT_BUCKETS),
            projected: Family::default(),
            batch_size: Histogram::new(BATCH_BUCKETS),
            batch_seconds: Histogram::new(COMMIT_BUCKETS),
            lag_deliveries: Gauge::default(),
            lag_seconds: Gauge::default(),
            auth_matched: Family::default(),
            probes: Family::default(),
            jwks_refreshes: Family::default(),
            jwks_keys: Family::default(),
            alerts_raised: Counter::default(),
            api_rejected: Family::default(),
            last_delivery: Family::default(),
            last_refusal: Family::default(),
            dead_letters: Family::default(),
            alerts_open: Family::default(),
            subscription_status: Family::default(),
            subscription_failing: Family::default(),
            from_store: Arc::new(FromStore {
                inputs: endpoints.iter().chain(sources).cloned().collect(),
                started: Utc::now(),
                arrivals_read: AtomicBool::new(false),
                dead_letters: Mutex::new(HashSet::new()),
                rules: Mutex::new(HashSet::new()),
            }),
        };
        for (endpoint, provider) in endpoints {
            for outcome in [Outcome::Accepted, Outcome::Unauthorized] {
                metrics.deliveries.get_or_create_owned(&DeliveryLabels {
                    endpoint: endpoint.clone(),
                    provider: provider.as_str(),
                    outcome: outcome.as_str(),
                });
            }
        }
        for (endpoint, provider) in endpoints.iter().chain(sources) {
            let labels = InputLabels {
                endpoint: endpoint.clone(),
                provider: provider.as_str(),
            };
            metrics.dead_letters.get_or_create_owned(&labels);
            lock(&metrics.from_store.dead_letters).insert(labels);
        }
        let mut registry = Registry::default();
        // Counters are registered without `_total`: the encoder appends it.
        registry.register(
            "shipfeed_deliveries",
            "Deliveries received, by endpoint, provider and outcome (accepted into the inbox, or why not)",
            metrics.deliveries.clone(),
        );
        registry.register(
            "shipfeed_projected_deliveries",
            "Deliveries projected, by endpoint, provider and outcome (stored or dead_letter)",
            metrics.projected.clone(),
        );
        registry.register(
            "shipfeed_projector_batch_size",
            "Deliveries per projector batch",
            metrics.batch_size.clone(),
        );
        registry.register(
            "shipfeed_projector_batch_seconds",
            "Time to normalize and record one projector batch",
            metrics.batch_seconds.clone(),
        );
        registry.register(
            "shipfeed_projector_lag_deliveries",
            "Deliveries in the inbox not yet projected (as this replica's projector last saw)",
            metrics.lag_deliveries.clone(),
        );
        registry.register(
            "shipfeed_projector_lag_seconds",
            "How long the oldest delivery not yet projected has waited",
            metrics.lag_seconds.clone(),
        );
        registry.register(
            "shipfeed_duplicate_events",
            "Events received again under a stored event_id",
            metrics.duplicates.clone(),
        );
        registry.register(
            "shipfeed_events",
            "Events stored for the first time, by provider and status",
            metrics.events.clone(),
        );
        registry.register(
            "shipfeed_drift_observations",
            "Contract drift from the store: distinct deliveries that showed something the adapters do not know, summed over its keys (codes, message types, field paths, unexpected types), by provider and kind",
            metrics.drift_observations.clone(),
        );
        registry.register(
            "shipfeed_drift_keys",
            "Contract drift from the store: distinct keys (codes, message types, field paths, unexpected types) kept, by provider and kind",
            metrics.drift_keys.clone(),
        );
        registry.register(
            "shipfeed_drift_dropped",
            "Contract drift from the store: observations of keys past the cap per provider and kind, counted and not kept",
            metrics.drift_dropped.clone(),
        );
        registry.register(
            "shipfeed_inbox_append_seconds",
            "Time from handing deliveries to the inbox to their durable append",
            metrics.append.clone(),
        );
        registry.register(
            "shipfeed_auth_matched",
            "Authentic deliveries by endpoint and the position of the configured secret that matched (0: the first listed); a rotated-out secret can go once its position stops counting",
            metrics.auth_matched.clone(),
        );
        registry.register(
            "shipfeed_probe",
            "Provider endpoint probes (Shipup's {\"livemode\": \"false\"}) answered 200 without storing anything, by endpoint and whether they carried valid credentials",
            metrics.probes.clone(),
        );
        registry.register(
            "shipfeed_jwks_refreshes",
            "Key set fetches of JWT endpoints, by outcome (loaded, failed, rate_limited)",
            metrics.jwks_refreshes.clone(),
        );
        registry.register(
            "shipfeed_jwks_keys",
            "Usable keys in a JWT endpoint's key set in use",
            metrics.jwks_keys.clone(),
        );
        registry.register(
            "shipfeed_alerts_raised",
            "Stalled-shipment alerts raised by this replica's projector",
            metrics.alerts_raised.clone(),
        );
        registry.register(
            "shipfeed_api_rejected",
            "Requests to the API refused for want of a valid bearer token, by reason (missing, malformed, unknown_token, insufficient_scope)",
            metrics.api_rejected.clone(),
        );
        registry.register(
            "shipfeed_endpoint_last_delivery_timestamp_seconds",
            "When the last delivery of a webhook endpoint or SQS source became durable in the inbox (Unix seconds, received time); at the first scrape after a start, read from the store's last 10000 deliveries (an input not among them: the oldest of them, or the start when the inbox has none of its deliveries), so that a restart does not hide a silence",
            metrics.last_delivery.clone(),
        );
        registry.register(
            "shipfeed_endpoint_last_refusal_timestamp_seconds",
            "When a webhook endpoint last answered a delivery with an error (401, 500 or 503; Unix seconds), since this process started; later than the last delivery means nothing was accepted since (HappyColis holds its queue after one)",
            metrics.last_refusal.clone(),
        );
        registry.register(
            "shipfeed_dead_letters",
            "Dead letters now in the store (authentic deliveries that could not be normalized, not replayed since), by endpoint and provider; read from the store at each scrape, the same on every replica",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "shipfeed_alerts_open",
            "Open stalled-shipment alerts (raised, not yet cleared by a next event), by rule (stalled.<status>): shipments stalled now; read from the store at each scrape, the same on every replica",
            metrics.alerts_open.clone(),
        );
        registry.register(
            "shipfeed_subscription_status",
            "1 for a subscription's current status (active, paused by an operator, disabled after failing too long or a 410), 0 for the others; read from the store at each scrape (only kind http can be other than active)",
            metrics.subscription_status.clone(),
        );
        registry.register(
            "shipfeed_subscription_failing_seconds",
            "How long every attempt of an HTTP push subscription has failed (0 while it delivers); read from the store at each scrape",
            metrics.subscription_failing.clone(),
        );
        registry.register_collector(Box::new(ProcessMetrics));
        (metrics, registry)
    }

    pub(crate) fn delivery(&self, endpoint: &str, provider: Provider, outcome: Outcome) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                endpoint: endpoint.to_owned(),
                provider: provider.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
        if outcome.is_refusal() {
            let labels = InputLabels {
                endpoint: endpoint.to_owned(),
                provider: provider.as_str(),
            };
            raise_to(
                &self.last_refusal.get_or_create(&labels),
                unix_seconds(Utc::now()),
            );
        }
    }

    /// A delivery of `endpoint` (a webhook endpoint or an SQS source) received at
    /// `received_at` is durable in the inbox.
    pub(crate) fn arrived(&self, endpoint: &str, provider: Provider, received_at: DateTime<Utc>) {
        let labels = InputLabels {
            endpoint: endpoint.to_owned(),
            provider: provider.as_str(),
        };
        raise_to(
            &self.last_delivery.get_or_create(&labels),
            unix_seconds(received_at),
        );
    }

    pub(crate) fn auth_matched(&self, endpoint: &str, position: usize) {
        self.auth_matched
            .get_or_create(&PositionLabels {
                endpoint: endpoint.to_owned(),
                position: position.to_string(),
            })
            .inc();
    }

    pub(crate) fn probe(&self, endpoint: &str, authenticated: bool) {
        self.probes
            .get_or_create(&ProbeLabels {
                endpoint: endpoint.to_owned(),
                authenticated: if authenticated { "true" } else { "false" },
            })
            .inc();
    }

    pub(crate) fn jwks_refresh(&self, endpoint: &str, outcome: Refresh) {
        self.jwks_refreshes
            .get_or_create(&RefreshLabels {
                endpoint: endpoint.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub(crate) fn jwks_keys(&self, endpoint: &str, keys: usize) {
        self.jwks_keys
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_owned(),
            })
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    /// Counts an API request refused for `reason` (a [`Rejection`](crate::api_auth::Rejection)'s).
    pub(crate) fn api_rejected(&self, reason: &'static str) {
        self.api_rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub(crate) fn duplicates(&self, provider: Provider, count: u64) {
        self.duplicates
            .get_or_create(&ProviderLabels {
                provider: provider.as_str(),
            })
            .inc_by(count);
    }

    pub(crate) fn new_event(&self, provider: Provider, status: &str) {
        self.events
            .get_or_create(&StatusLabels {
                provider: provider.as_str(),
                status: status.to_owned(),
            })
            .inc();
    }

    /// Sets the drift gauges from the store's report.
    pub(crate) fn drift(&self, report: &DriftReport) {
        let mut sums: HashMap<DriftLabels, (i64, i64)> = HashMap::new();
        for entry in &report.entries {
            let labels = DriftLabels {
                provider: entry.provider.as_str(),
                kind: entry.kind.as_str(),
            };
            let sum = sums.entry(labels).or_default();
            sum.0 = sum.0.saturating_add(entry.deliveries);
            sum.1 += 1;
        }
        for (labels, (observations, keys)) in sums {
            self.drift_observations
                .get_or_create(&labels)
                .set(observations);
            self.drift_keys.get_or_create(&labels).set(keys);
        }
        for dropped in &report.dropped {
            let labels = DriftLabels {
                provider: dropped.provider.as_str(),
                kind: dropped.kind.as_str(),
            };
            self.drift_dropped
                .get_or_create(&labels)
                .set(dropped.observations);
        }
    }

    pub(crate) fn append_seconds(&self, seconds: f64) {
        self.append.observe(seconds);
    }

    pub(crate) fn projected(&self, endpoint: &str, provider: Provider, outcome: Outcome) {
        self.projected
            .get_or_create(&DeliveryLabels {
                endpoint: endpoint.to_owned(),
                provider: provider.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub(crate) fn alerts_raised(&self, raised: usize) {
        self.alerts_raised.inc_by(raised as u64);
    }

    pub(crate) fn projector_batch(&self, deliveries: usize, seconds: f64) {
        self.batch_size.observe(deliveries as f64);
        self.batch_seconds.observe(seconds);
    }

    pub(crate) fn projector_lag(&self, deliveries: i64, seconds: f64) {
        self.lag_deliveries.set(deliveries);
        self.lag_seconds.set(seconds);
    }

    /// Sets each input's last delivery from what the store's most recent deliveries say,
    /// once per process (until a read succeeds): an input none of them came from delivered
    /// before the oldest of them (its silence is at least that long), or, when they are the
    /// whole inbox, never (its silence counts from the start). Deliveries counted since the
    /// start are later, and stay.
    async fn read_arrivals(&self, store: &Store) {
        let from_store = &self.from_store;
        if from_store.arrivals_read.load(Ordering::Acquire) {
            return;
        }
        let recent = match store.recent_arrivals(ARRIVALS_SCAN).await {
            Ok(recent) => recent,
            Err(error) => {
                tracing::warn!(%error, "cannot read the inbox's last deliveries for the metrics; trying again at the next scrape");
                return;
            }
        };
        let before_window = if recent.whole_inbox {
            None
        } else {
            recent.oldest
        };
        for (endpoint, provider) in &from_store.inputs {
            let at = recent
                .last
                .get(endpoint)
                .copied()
                .or(before_window)
                .unwrap_or(from_store.started);
            self.arrived(endpoint, *provider, at);
        }
        from_store.arrivals_read.store(true, Ordering::Release);
    }

    /// Sets the dead letter gauges from the store's counts; a series counted before and now
    /// without dead letters is 0 (removed, when its endpoint is no longer configured).
    fn dead_letters(&self, counts: Vec<shipfeed_store::DeadLetterCount>) {
        let mut seen = lock(&self.from_store.dead_letters);
        let now: HashSet<InputLabels> = counts
            .into_iter()
            .map(|count| {
                let labels = InputLabels {
                    endpoint: count.endpoint,
                    provider: count.provider.as_str(),
                };
                self.dead_letters.get_or_create(&labels).set(count.count);
                labels
            })
            .collect();
        seen.retain(|labels| {
            if now.contains(labels) {
                return true;
            }
            let configured = self.from_store.inputs.iter().any(|(endpoint, provider)| {
                *endpoint == labels.endpoint && provider.as_str() == labels.provider
            });
            if configured {
                self.dead_letters.get_or_create(labels).set(0);
            } else {
                self.dead_letters.remove(labels);
            }
            configured
        });
        seen.extend(now);
    }

    /// Sets the open alert gauges from the store's counts per rule (a rule counted before and
    /// without open alerts now is 0).
    fn alerts_open(&self, counts: std::collections::BTreeMap<String, i64>) {
        let mut seen = lock(&self.from_store.rules);
        for rule in seen.iter() {
            if !counts.contains_key(rule) {
                self.alerts_open
                    .get_or_create(&RuleLabels { rule: rule.clone() })
                    .set(0);
            }
        }
        for (rule, count) in counts {
            self.alerts_open
                .get_or_create(&RuleLabels { rule: rule.clone() })
                .set(count);
            seen.insert(rule);
        }
    }

    /// Sets each subscription's status and how long it has been failing, at `now`.
    fn subscriptions(&self, subscriptions: &[SubscriptionSummary], now: DateTime<Utc>) {
        for subscription in subscriptions {
            for status in SUBSCRIPTION_STATUSES {
                let labels = SubscriptionStatusLabels {
                    subscription: subscription.name.clone(),
                    status: status.as_str(),
                };
                self.subscription_status
                    .get_or_create(&labels)
                    .set(i64::from(subscription.status == status));
            }
            let failing = subscription
                .failing_since
                .map_or(0.0, |since| (now - since).as_seconds_f64().max(0.0));
            self.subscription_failing
                .get_or_create(&SubscriptionLabels {
                    subscription: subscription.name.clone(),
                })
                .set(failing);
        }
    }
}

impl crate::Service {
    /// Reads what `/metrics` shows from the store, just before it renders: contract drift,
    /// the projector's lag, dead letters, open alerts, the subscriptions' states and (once)
    /// the inputs' last deliveries. These live in the store, so every replica shows the
    /// same, a restart loses none of them, and the projector's lag grows even while no
    /// projector runs. A read that fails leaves its gauges as they were, and is logged.
    pub(crate) async fn refresh_metrics(&self) {
        let metrics = &self.observer.metrics;
        let store = self.store();
        metrics.read_arrivals(store).await;
        // Drift counts are written with the projections, so every replica shows the same;
        // read at each scrape, they are never counted twice.
        match store.drift(None).await {
            Ok(report) => metrics.drift(&report),
            Err(error) => tracing::warn!(%error, "cannot read drift for the metrics"),
        }
        match store.cursor(PROJECTOR).await {
            Ok(cursor) => match store.inbox_lag(cursor).await {
                Ok(lag) => {
                    let seconds = lag.oldest.map_or(0.0, |oldest| {
                        (Utc::now() - oldest).as_seconds_f64().max(0.0)
                    });
                    metrics.projector_lag(lag.deliveries, seconds);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read the projector's lag for the metrics")
                }
            },
            Err(error) => {
                tracing::warn!(%error, "cannot read the projector's cursor for the metrics")
            }
        }
        match store.dead_letter_counts().await {
            Ok(counts) => metrics.dead_letters(counts),
            Err(error) => tracing::warn!(%error, "cannot count dead letters for the metrics"),
        }
        match store.open_alert_counts().await {
            Ok(counts) => metrics.alerts_open(counts),
            Err(error) => tracing::warn!(%error, "cannot count open alerts for the metrics"),
        }
        match self.subscription_admin().list().await {
            Ok(subscriptions) => metrics.subscriptions(&subscriptions, Utc::now()),
            Err(error) => {
                tracing::warn!(%error, "cannot read the subscriptions' states for the metrics");
            }
        }
    }
}

/// The set behind `mutex`, also after a panic elsewhere (it holds labels only).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Renders `registry` in the Prometheus text format (version 0.0.4).
pub(crate) fn render(registry: &Registry) -> String {
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::prometheus_text::encode(&mut text, registry) {
        // Only a failing writer errs, and a String never fails.
        tracing::error!(%error, "could not encode the metrics");
    }
    text
}

/// The standard `process_*` metrics, read at each scrape.
#[derive(Debug)]
struct ProcessMetrics;

fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Option<f64>,
) -> Result<(), fmt::Error> {
    let Some(value) = value else { return Ok(()) };
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

impl Collector for ProcessMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let process = metrics_process::collector::collect();
        if let Some(seconds) = process.cpu_seconds_total {
            let counter = ConstCounter::new(seconds);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        let as_f64 = |v: Option<u64>| v.map(|v| v as f64);
        let gauges = [
            (
                "process_open_fds",
                "Number of open file descriptors",
                as_f64(process.open_fds),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                as_f64(process.max_fds),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                as_f64(process.virtual_memory_bytes),
            ),
            (
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes",
                as_f64(process.virtual_memory_max_bytes),
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                as_f64(process.resident_memory_bytes),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                as_f64(process.start_time_seconds),
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                as_f64(process.threads),
            ),
        ];
        for (name, help, value) in gauges {
            encode_gauge(&mut encoder, name, help, value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Two field paths (2 and 3 deliveries), one code, and 4 observations dropped.
    fn drift_report() -> DriftReport {
        use shipfeed::drift::DriftKind;
        use shipfeed_store::{DriftDropped, DriftEntry};
        let entry = |kind, key: &str, deliveries| DriftEntry {
            provider: Provider::HappyColis,
            kind,
            key: key.to_owned(),
            deliveries,
            first_seen: chrono::DateTime::default(),
            last_seen: chrono::DateTime::default(),
            sample_delivery_seq: 1,
        };
        DriftReport {
            entries: vec![
                entry(DriftKind::UnknownField, "body.a", 2),
                entry(DriftKind::UnknownField, "body.b", 3),
                entry(DriftKind::UnknownStatus, "X99", 1),
            ],
            dropped: vec![DriftDropped {
                provider: Provider::HappyColis,
                kind: DriftKind::UnknownField,
                observations: 4,
            }],
        }
    }

    /// The value of the series that starts with `series` (labels included).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn names_and_labels_are_the_ones_dashboards_and_tests_read() {
        let (metrics, registry) = Metrics::new();
        metrics.delivery("sendcloud-eu", Provider::Sendcloud, Outcome::Accepted);
        metrics.delivery("sendcloud-eu", Provider::Sendcloud, Outcome::Accepted);
        metrics.delivery("odd\"name", Provider::Shipup, Outcome::Unauthorized);
        metrics.projected("sendcloud-eu", Provider::Sendcloud, Outcome::DeadLetter);
        metrics.projector_batch(3, 0.02);
        metrics.projector_lag(7, 1.5);
        metrics.duplicates(Provider::Sendcloud, 3);
        metrics.new_event(Provider::Sendcloud, "delivered");
        metrics.drift(&drift_report());
        metrics.append_seconds(0.004);
        metrics.auth_matched("shipup", 1);
        metrics.probe("shipup", false);
        metrics.delivery("shipup", Provider::Shipup, Outcome::Probe);
        metrics.jwks_refresh("shipup-jwt", Refresh::RateLimited);
        metrics.jwks_keys("shipup-jwt", 2);
        metrics.api_rejected("insufficient_scope");
        let text = render(&registry);
        let series = [
            (
                r#"shipfeed_api_rejected_total{reason="insufficient_scope"}"#,
                1.0,
            ),
            (
                r#"shipfeed_deliveries_total{endpoint="sendcloud-eu",provider="sendcloud",outcome="accepted"}"#,
                2.0,
            ),
            (
                r#"shipfeed_projected_deliveries_total{endpoint="sendcloud-eu",provider="sendcloud",outcome="dead_letter"}"#,
                1.0,
            ),
            (r#"shipfeed_projector_batch_size_bucket{le="2"}"#, 0.0),
            (r#"shipfeed_projector_batch_size_bucket{le="4"}"#, 1.0),
            (
                r#"shipfeed_projector_batch_seconds_bucket{le="0.025"}"#,
                1.0,
            ),
            ("shipfeed_projector_lag_deliveries", 7.0),
            ("shipfeed_projector_lag_seconds", 1.5),
            (
                r#"shipfeed_deliveries_total{endpoint="odd\"name",provider="shipup",outcome="unauthorized"}"#,
                1.0,
            ),
            (
                r#"shipfeed_duplicate_events_total{provider="sendcloud"}"#,
                3.0,
            ),
            (
                r#"shipfeed_events_total{provider="sendcloud",status="delivered"}"#,
                1.0,
            ),
            (
                r#"shipfeed_drift_observations{provider="happycolis",kind="unknown_field"}"#,
                5.0,
            ),
            (
                r#"shipfeed_drift_keys{provider="happycolis",kind="unknown_field"}"#,
                2.0,
            ),
            (
                r#"shipfeed_drift_observations{provider="happycolis",kind="unknown_status"}"#,
                1.0,
            ),
            (
                r#"shipfeed_drift_dropped{provider="happycolis",kind="unknown_field"}"#,
                4.0,
            ),
            (r#"shipfeed_inbox_append_seconds_bucket{le="0.001"}"#, 0.0),
            (r#"shipfeed_inbox_append_seconds_bucket{le="0.005"}"#, 1.0),
            (r#"shipfeed_inbox_append_seconds_bucket{le="+Inf"}"#, 1.0),
            ("shipfeed_inbox_append_seconds_count", 1.0),
            (
                r#"shipfeed_auth_matched_total{endpoint="shipup",position="1"}"#,
                1.0,
            ),
            (
                r#"shipfeed_probe_total{endpoint="shipup",authenticated="false"}"#,
                1.0,
            ),
            (
                r#"shipfeed_deliveries_total{endpoint="shipup",provider="shipup",outcome="probe"}"#,
                1.0,
            ),
            (
                r#"shipfeed_jwks_refreshes_total{endpoint="shipup-jwt",outcome="rate_limited"}"#,
                1.0,
            ),
            (r#"shipfeed_jwks_keys{endpoint="shipup-jwt"}"#, 2.0),
        ];
        for (name, expected) in series {
            assert_eq!(value(&text, name), Some(expected), "{name} in\n{text}");
        }
        assert!(
            text.contains("# TYPE shipfeed_deliveries_total counter"),
            "{text}"
        );
        assert!(
            value(&text, "process_resident_memory_bytes").is_some_and(|bytes| bytes > 0.0),
            "{text}"
        );
        assert!(
            value(&text, "process_cpu_seconds_total").is_some(),
            "{text}"
        );
    }

    #[test]
    fn the_on_call_gauges_start_at_zero_keep_the_latest_time_and_follow_the_store() {
        use shipfeed_store::DeadLetterCount;
        let (metrics, registry) = Metrics::with_inputs(
            &[("sendcloud-eu".to_owned(), Provider::Sendcloud)],
            &[("sevensenders".to_owned(), Provider::SevenSenders)],
        );
        let text = render(&registry);
        for series in [
            r#"shipfeed_deliveries_total{endpoint="sendcloud-eu",provider="sendcloud",outcome="accepted"}"#,
            r#"shipfeed_deliveries_total{endpoint="sendcloud-eu",provider="sendcloud",outcome="unauthorized"}"#,
            r#"shipfeed_dead_letters{endpoint="sendcloud-eu",provider="sendcloud"}"#,
            r#"shipfeed_dead_letters{endpoint="sevensenders",provider="sevensenders"}"#,
        ] {
            assert_eq!(value(&text, series), Some(0.0), "{series} in\n{text}");
        }
        assert!(
            !text.contains(r#"shipfeed_deliveries_total{endpoint="sevensenders""#),
            "SQS sources are not counted in shipfeed_deliveries_total: {text}"
        );

        // The latest arrival wins, whatever the order they are reported in.
        let at = |text: &str| text.parse::<DateTime<Utc>>().unwrap();
        metrics.arrived(
            "sevensenders",
            Provider::SevenSenders,
            at("2024-06-01T10:00:00.250Z"),
        );
        metrics.arrived(
            "sevensenders",
            Provider::SevenSenders,
            at("2024-06-01T09:00:00Z"),
        );
        metrics.delivery("sendcloud-eu", Provider::Sendcloud, Outcome::Unauthorized);
        metrics.delivery("sendcloud-eu", Provider::Sendcloud, Outcome::Accepted);
        let text = render(&registry);
        assert_eq!(
            value(
                &text,
                r#"shipfeed_endpoint_last_delivery_timestamp_seconds{endpoint="sevensenders",provider="sevensenders"}"#
            ),
            Some(1_717_236_000.25)
        );
        let refused = value(
            &text,
            r#"shipfeed_endpoint_last_refusal_timestamp_seconds{endpoint="sendcloud-eu",provider="sendcloud"}"#,
        );
        assert!(refused.is_some_and(|seconds| seconds > 1.7e9), "{text}");
        assert!(
            !text.contains(
                r#"shipfeed_endpoint_last_refusal_timestamp_seconds{endpoint="sevensenders""#
            ),
            "{text}"
        );

        // Dead letters and open alerts follow the store: what is gone is 0 (or removed, for
        // an endpoint no longer configured).
        let count = |endpoint: &str, count| DeadLetterCount {
            endpoint: endpoint.to_owned(),
            provider: Provider::Sendcloud,
            count,
        };
        metrics.dead_letters(vec![count("sendcloud-eu", 3), count("removed", 2)]);
        metrics.alerts_open([("stalled.in_transit".to_owned(), 4)].into());
        let text = render(&registry);
        assert_eq!(
            value(
                &text,
                r#"shipfeed_dead_letters{endpoint="sendcloud-eu",provider="sendcloud"}"#
            ),
            Some(3.0)
        );
        assert_eq!(
            value(
                &text,
                r#"shipfeed_dead_letters{endpoint="removed",provider="sendcloud"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            value(&text, r#"shipfeed_alerts_open{rule="stalled.in_transit"}"#),
            Some(4.0)
        );
        metrics.dead_letters(Vec::new());
        metrics.alerts_open(std::collections::BTreeMap::new());
        let text = render(&registry);
        assert_eq!(
            value(
                &text,
                r#"shipfeed_dead_letters{endpoint="sendcloud-eu",provider="sendcloud"}"#
            ),
            Some(0.0)
        );
        assert!(!text.contains(r#"endpoint="removed""#), "{text}");
        assert_eq!(
            value(&text, r#"shipfeed_alerts_open{rule="stalled.in_transit"}"#),
            Some(0.0)
        );

        // A subscription's status is one of three series at 1; failing is counted in seconds.
        let summary = SubscriptionSummary {
            name: "hook".to_owned(),
            kind: crate::SubscriptionKind::Http,
            cursor: Some(7),
            status: SubscriptionStatus::Disabled,
            reason: Some("the receiver answered 410".to_owned()),
            changed_at: None,
            failing_since: Some(at("2024-06-01T09:00:00Z")),
            lag: Some(0),
        };
        metrics.subscriptions(&[summary], at("2024-06-01T10:00:00Z"));
        let text = render(&registry);
        for (status, expected) in [("active", 0.0), ("paused", 0.0), ("disabled", 1.0)] {
            let series =
                format!(r#"shipfeed_subscription_status{{subscription="hook",status="{status}"}}"#);
            assert_eq!(value(&text, &series), Some(expected), "{series}");
        }
        assert_eq!(
            value(
                &text,
                r#"shipfeed_subscription_failing_seconds{subscription="hook"}"#
            ),
            Some(3600.0)
        );
    }

    #[test]
    fn each_registry_counts_on_its_own() {
        let (first, first_registry) = Metrics::new();
        let (_second, second_registry) = Metrics::new();
        first.delivery("a", Provider::Sendcloud, Outcome::Stored);
        let series =
            r#"shipfeed_deliveries_total{endpoint="a",provider="sendcloud",outcome="stored"}"#;
        assert_eq!(value(&render(&first_registry), series), Some(1.0));
        assert_eq!(value(&render(&second_registry), series), None);
    }
}
