//! The service's Prometheus metrics, with prometheus-client.
//!
//! Why prometheus-client rather than `metrics` + `metrics-exporter-prometheus`: the `metrics`
//! facade records into one process-global recorder, but every [`Service`](crate::Service) owns
//! its counters (tests and benchmarks build several services in one process, and each one's
//! `/metrics` must show its own). prometheus-client has no global state: a `Registry` per
//! service. It has no process collector of its own, so the `process_*` metrics come from
//! metrics-process's raw snapshot (read from `/proc` at each scrape), without the facade.

use std::fmt;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;

use shipfeed::Provider;
use shipfeed_store::DriftReport;

/// Commit latency buckets, in seconds.
const COMMIT_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Projector batch size buckets, in deliveries.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

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
}

impl Metrics {
    /// The counters and the registry that renders them (and the process metrics).
    pub(crate) fn new() -> (Metrics, Registry) {
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
        };
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
