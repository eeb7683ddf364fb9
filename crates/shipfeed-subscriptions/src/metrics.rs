//! The subscriptions' Prometheus metrics, registered into the registry of whoever runs them
//! (the service's own, so that each service's `/metrics` shows its subscriptions only).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    subscription: String,
}

/// The metric families of the subscriptions, labelled `subscription`; cheap to clone (clones
/// count into the same families):
///
/// | series | type | meaning |
/// |---|---|---|
/// | `shipfeed_subscription_lag` | gauge | feed items not yet delivered: the feed's end minus the cursor |
/// | `shipfeed_subscription_delivered_total` | counter | feed items delivered by this replica (a batch delivered again after a crash counts again) |
/// | `shipfeed_subscription_delivery_failures_total` | counter | batches whose delivery failed here (each is retried) |
/// | `shipfeed_subscription_lease_held` | gauge | 1 while this replica holds the subscription's lease and drives it, else 0 |
/// | `shipfeed_subscription_parked` | gauge | HTTP push: messages waiting for a retry or behind one of their shipment (as this replica last saw) |
/// | `shipfeed_subscription_exhausted_total` | counter | HTTP push: messages whose every attempt failed (kept, until redelivered) |
///
/// ```
/// use prometheus_client::registry::Registry;
/// let mut registry = Registry::default();
/// let metrics = shipfeed_subscriptions::Metrics::register(&mut registry);
/// # drop(metrics);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    lag: Family<Labels, Gauge>,
    delivered: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    held: Family<Labels, Gauge>,
    parked: Family<Labels, Gauge>,
    exhausted: Family<Labels, Counter>,
}

impl Metrics {
    /// The families, registered into `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics::default();
        // Counters are registered without `_total`: the encoder appends it.
        registry.register(
            "shipfeed_subscription_lag",
            "Feed items a subscription has not delivered yet (the feed's end minus its cursor)",
            metrics.lag.clone(),
        );
        registry.register(
            "shipfeed_subscription_delivered",
            "Feed items a subscription delivered from this replica",
            metrics.delivered.clone(),
        );
        registry.register(
            "shipfeed_subscription_delivery_failures",
            "Batches whose delivery failed on this replica (each is retried, never skipped)",
            metrics.failures.clone(),
        );
        registry.register(
            "shipfeed_subscription_lease_held",
            "1 while this replica holds the subscription's lease, else 0",
            metrics.held.clone(),
        );
        registry.register(
            "shipfeed_subscription_parked",
            "HTTP push messages waiting for a retry, or behind an earlier item of their shipment",
            metrics.parked.clone(),
        );
        registry.register(
            "shipfeed_subscription_exhausted",
            "HTTP push messages whose every attempt failed (kept until redelivered)",
            metrics.exhausted.clone(),
        );
        metrics
    }

    /// The series of subscription `name`, created at 0 so that they show before anything
    /// happens.
    pub(crate) fn of(&self, name: &str) -> Series {
        let labels = Labels {
            subscription: name.to_owned(),
        };
        Series {
            lag: self.lag.get_or_create(&labels).clone(),
            delivered: self.delivered.get_or_create(&labels).clone(),
            failures: self.failures.get_or_create(&labels).clone(),
            held: self.held.get_or_create(&labels).clone(),
            parked: self.parked.get_or_create(&labels).clone(),
            exhausted: self.exhausted.get_or_create(&labels).clone(),
        }
    }
}

/// One subscription's series.
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub(crate) lag: Gauge,
    pub(crate) delivered: Counter,
    pub(crate) failures: Counter,
    pub(crate) held: Gauge,
    pub(crate) parked: Gauge,
    pub(crate) exhausted: Counter,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_the_ones_dashboards_read() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let orders = metrics.of("orders");
        orders.lag.set(7);
        orders.delivered.inc_by(3);
        orders.failures.inc();
        orders.held.set(1);
        metrics.of("audit");
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"shipfeed_subscription_lag{subscription="orders"} 7"#,
            r#"shipfeed_subscription_delivered_total{subscription="orders"} 3"#,
            r#"shipfeed_subscription_delivery_failures_total{subscription="orders"} 1"#,
            r#"shipfeed_subscription_lease_held{subscription="orders"} 1"#,
            r#"shipfeed_subscription_lease_held{subscription="audit"} 0"#,
            r#"shipfeed_subscription_delivered_total{subscription="audit"} 0"#,
            "# TYPE shipfeed_subscription_lag gauge",
            "# TYPE shipfeed_subscription_delivered_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
