//! Stalled-shipment alerts, once for every database: the rules, the deterministic alert id,
//! raising (under the projector's lease, from an injected clock) and clearing (in the
//! projection that records the shipment's next event).
//!
//! **The clock.** A shipment is stalled when the clock of the replica holding the projector's
//! lease, at evaluation, is at least the rule's quiet time past the `occurred_at` of the
//! shipment's last event (`ShipmentState::last_occurred_at`). Nothing else counts: not when
//! the event was received, nor the provider's record time.
//!
//! **The id.** An alert is named by its rule, its shipment and the shipment's last event
//! ([`alert_id`]), nothing that depends on who evaluates or when: every replica, before and
//! after a restart, derives the same id, and the store keeps each id once, so raising an
//! alert again is a no-op.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use shipfeed_core::{EventId, ShipmentRef, ShipmentState, Status};

use crate::driver::{AlertRow, CarrierScope, FeedRow, StalledQuery, WriteDriver};
use crate::project::to_json;
use crate::StoreError;

/// How many alerts one evaluation raises at most, so that a first evaluation over a large
/// backlog does not hold the writer long; the next evaluation goes on from there.
pub const RAISE_LIMIT: usize = 500;

/// Per status, the longest a shipment may stay without a new event before it is stalled;
/// `None`: never (the rule is off).
type QuietTimes = BTreeMap<Status, Option<TimeDelta>>;

/// The stalled-shipment rules: for each non-terminal status, how long a shipment in it may go
/// without a new event, with optional per-carrier overrides.
///
/// The defaults: `pre_transit` 48 hours, `in_transit` 72 hours, `available_for_pickup` 5 days,
/// `exception` 24 hours; every other status has no rule until one is set.
///
/// ```
/// use chrono::TimeDelta;
/// use shipfeed_core::Status;
/// use shipfeed_store::StalledRules;
/// let mut rules = StalledRules::default();
/// rules.set_for_carrier("DHL", Status::InTransit, Some(TimeDelta::hours(96)))?;
/// assert_eq!(rules.max_quiet(Some("dhl"), Status::InTransit), Some(TimeDelta::hours(96)));
/// assert_eq!(rules.max_quiet(Some("postnl"), Status::InTransit), Some(TimeDelta::hours(72)));
/// assert_eq!(rules.max_quiet(None, Status::Delivered), None, "terminal: never stalled");
/// # Ok::<(), shipfeed_store::StoreError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalledRules {
    default: QuietTimes,
    /// By carrier slug.
    carriers: BTreeMap<String, QuietTimes>,
}

impl Default for StalledRules {
    fn default() -> Self {
        let default = [
            (Status::PreTransit, TimeDelta::hours(48)),
            (Status::InTransit, TimeDelta::hours(72)),
            (Status::AvailableForPickup, TimeDelta::days(5)),
            (Status::Exception, TimeDelta::hours(24)),
        ]
        .into_iter()
        .map(|(status, quiet)| (status, Some(quiet)))
        .collect();
        StalledRules {
            default,
            carriers: BTreeMap::new(),
        }
    }
}

impl StalledRules {
    /// No rule at all: nothing is ever stalled.
    pub fn none() -> Self {
        StalledRules {
            default: QuietTimes::new(),
            carriers: BTreeMap::new(),
        }
    }

    /// Sets the quiet time of `status` for every carrier without an override of its own
    /// (`None`: the rule is off).
    ///
    /// # Errors
    /// [`StoreError::Config`] for a terminal status (a terminal shipment is never stalled)
    /// or a quiet time that is not positive.
    pub fn set(&mut self, status: Status, max_quiet: Option<TimeDelta>) -> Result<(), StoreError> {
        check(status, max_quiet)?;
        self.default.insert(status, max_quiet);
        Ok(())
    }

    /// Sets the quiet time of `status` for one carrier (by slug, or any spelling
    /// [`shipfeed_core::carrier::normalize`] folds into it); `None` turns the rule off for it.
    ///
    /// # Errors
    /// As [`set`](StalledRules::set), and for an empty carrier name.
    pub fn set_for_carrier(
        &mut self,
        carrier: &str,
        status: Status,
        max_quiet: Option<TimeDelta>,
    ) -> Result<(), StoreError> {
        check(status, max_quiet)?;
        let slug = shipfeed_core::carrier::normalize(carrier)
            .ok_or_else(|| StoreError::Config("a stalled rule names an empty carrier".into()))?;
        self.carriers
            .entry(slug)
            .or_default()
            .insert(status, max_quiet);
        Ok(())
    }

    /// How long a shipment of `carrier` in `status` may go without a new event; `None` when
    /// no rule applies (always for a terminal status).
    pub fn max_quiet(&self, carrier: Option<&str>, status: Status) -> Option<TimeDelta> {
        if status.is_terminal() {
            return None;
        }
        carrier
            .and_then(|carrier| self.carriers.get(carrier))
            .and_then(|times| times.get(&status))
            .or_else(|| self.default.get(&status))
            .copied()
            .flatten()
    }

    /// What to look for: per status with a rule, the default's carriers (all but those with
    /// an override for it) and each overriding carrier, with its quiet time.
    fn scopes(&self) -> Vec<(Status, CarrierScope<'_>, TimeDelta)> {
        let mut statuses: Vec<Status> = self
            .default
            .keys()
            .chain(self.carriers.values().flat_map(BTreeMap::keys))
            .copied()
            .filter(|status| !status.is_terminal())
            .collect();
        statuses.sort_unstable();
        statuses.dedup();
        let mut scopes = Vec::new();
        for status in statuses {
            let overriding: Vec<&str> = self
                .carriers
                .iter()
                .filter(|(_, times)| times.contains_key(&status))
                .map(|(carrier, _)| carrier.as_str())
                .collect();
            if let Some(Some(quiet)) = self.default.get(&status) {
                scopes.push((status, CarrierScope::Except(overriding.clone()), *quiet));
            }
            for carrier in overriding {
                if let Some(Some(quiet)) = self.carriers.get(carrier).and_then(|t| t.get(&status)) {
                    scopes.push((status, CarrierScope::Only(carrier), *quiet));
                }
            }
        }
        scopes
    }
}

fn check(status: Status, max_quiet: Option<TimeDelta>) -> Result<(), StoreError> {
    if status.is_terminal() {
        return Err(StoreError::Config(format!(
            "`{}` is terminal: a shipment in it is never stalled",
            status.as_str()
        )));
    }
    if max_quiet.is_some_and(|quiet| quiet <= TimeDelta::zero()) {
        return Err(StoreError::Config(format!(
            "the stalled rule of `{}` needs a quiet time above zero (or \"off\")",
            status.as_str()
        )));
    }
    Ok(())
}

/// The rule's name of a stalled shipment in `status`: `stalled.<status>`.
pub fn stalled_rule(status: Status) -> String {
    format!("stalled.{}", status.as_str())
}

/// The id of the alert `rule` raises for shipment `shipment_key` whose last event is
/// `last_event_id`: `alert:` and 32 hex digits of a SHA-256 of the three. The same inputs give
/// the same id on every replica and after every restart.
///
/// ```
/// let a = shipfeed_store::alert_id("stalled.in_transit", "postnl:3SABC", "sendcloud:1");
/// assert_eq!(a, shipfeed_store::alert_id("stalled.in_transit", "postnl:3SABC", "sendcloud:1"));
/// assert_ne!(a, shipfeed_store::alert_id("stalled.in_transit", "postnl:3SABC", "sendcloud:2"));
/// assert!(a.starts_with("alert:") && a.len() == 38);
/// ```
pub fn alert_id(rule: &str, shipment_key: &str, last_event_id: &str) -> String {
    use sha2::Digest as _;
    // A JSON array keeps the three apart whatever characters they hold.
    let input = to_json(&[rule, shipment_key, last_event_id]);
    let digest = sha2::Sha256::digest(input.as_bytes());
    format!("alert:{}", hex::encode(&digest[..16]))
}

/// A shipment that has gone quiet for longer than its rule allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Alert {
    /// Deterministic: [`alert_id`] of the rule, the shipment and its last event.
    pub alert_id: String,
    /// The rule that raised it: `stalled.<status>`.
    pub rule: String,
    /// The shipment's status when it was raised.
    pub status: Status,
    /// Since when the shipment has been quiet: its last event's `occurred_at`.
    pub since: DateTime<Utc>,
    /// The quiet time the rule allows, in seconds (the carrier's override when it has one).
    pub max_quiet_seconds: i64,
    /// The shipment's last event (a next one clears the alert).
    pub last_event_id: EventId,
    /// The shipment (see [`shipfeed_core::identity`]).
    pub shipment_key: String,
    /// Its identity, from its latest event.
    pub shipment: ShipmentRef,
    /// When it was raised, by the evaluating replica's clock.
    pub raised_at: DateTime<Utc>,
}

/// An alert in the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct AlertItem {
    /// The cursor.
    pub seq: i64,
    /// The alert.
    #[serde(flatten)]
    pub alert: Alert,
}

/// An alert that no longer holds: the shipment's next event arrived (or its events were
/// withdrawn).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AlertCleared {
    /// The cursor.
    #[serde(default)]
    pub seq: i64,
    /// The alert cleared (as raised).
    pub alert_id: String,
    /// Its rule.
    pub rule: String,
    /// The shipment.
    pub shipment_key: String,
    /// The event that cleared it: the shipment's last event now (none when no event is left).
    pub cleared_by: Option<EventId>,
    /// The shipment's status now (none when no event is left).
    pub status: Option<Status>,
    /// The delivery whose projection cleared it.
    pub delivery_seq: i64,
}

/// Raises the alerts due at `now` under `rules`, at most [`RAISE_LIMIT`], and appends an
/// `alert` item for each one stored for the first time. The caller has checked the lease.
pub(crate) async fn raise(
    driver: &mut impl WriteDriver,
    rules: &StalledRules,
    now: DateTime<Utc>,
) -> Result<Vec<Alert>, StoreError> {
    let mut alerts: Vec<Alert> = Vec::new();
    for (status, carriers, quiet) in rules.scopes() {
        let remaining = RAISE_LIMIT.saturating_sub(alerts.len());
        if remaining == 0 {
            break;
        }
        let Some(before) = now.checked_sub_signed(quiet) else {
            continue;
        };
        let rule = stalled_rule(status);
        let query = StalledQuery {
            status: status.as_str(),
            carriers,
            before,
            rule: &rule,
            limit: i64::try_from(remaining).unwrap_or(i64::MAX),
        };
        for row in driver.stalled(&query).await? {
            let (Some(state), Some(shipment)) = (
                crate::parse_stored::<ShipmentState>(&row.state, "state"),
                crate::parse_stored::<ShipmentRef>(&row.shipment, "shipment"),
            ) else {
                continue;
            };
            // The columns only narrow the search: the state decides (and whole seconds on
            // SQLite must not raise early).
            if state.terminal || state.status != status || state.last_occurred_at > before {
                continue;
            }
            alerts.push(Alert {
                alert_id: alert_id(&rule, &row.key, state.last_event_id.as_str()),
                rule: rule.clone(),
                status,
                since: state.last_occurred_at,
                max_quiet_seconds: quiet.num_seconds(),
                last_event_id: state.last_event_id,
                shipment_key: row.key,
                shipment,
                raised_at: now,
            });
        }
    }
    let bodies: Vec<String> = alerts.iter().map(to_json).collect();
    let rows: Vec<AlertRow<'_>> = alerts
        .iter()
        .zip(&bodies)
        .map(|(alert, body)| AlertRow {
            alert_id: &alert.alert_id,
            shipment_key: &alert.shipment_key,
            rule: &alert.rule,
            last_event_id: alert.last_event_id.as_str(),
            body,
        })
        .collect();
    let inserted: std::collections::HashSet<String> =
        driver.insert_alerts(&rows).await?.into_iter().collect();
    let feed: Vec<FeedRow<'_>> = rows
        .iter()
        .filter(|row| inserted.contains(row.alert_id))
        .map(|row| FeedRow {
            kind: "alert",
            event_id: Some(row.last_event_id.into()),
            revision: None,
            shipment_key: row.shipment_key.into(),
            body: row.body.into(),
        })
        .collect();
    driver.append_feed(&feed).await?;
    Ok(alerts
        .into_iter()
        .filter(|alert| inserted.contains(&alert.alert_id))
        .collect())
}

/// The open alerts of a batch's shipments, by shipment key, as the projection clears them.
pub(crate) type OpenAlerts = std::collections::HashMap<String, Vec<Alert>>;

/// The open alerts of these shipments.
pub(crate) async fn open_of(
    driver: &mut impl WriteDriver,
    keys: &[&str],
) -> Result<OpenAlerts, StoreError> {
    let mut open = OpenAlerts::new();
    for body in driver.open_alerts(keys).await? {
        if let Some(alert) = crate::parse_stored::<Alert>(&body, "alert") {
            open.entry(alert.shipment_key.clone())
                .or_default()
                .push(alert);
        }
    }
    Ok(open)
}

/// Whether an alert still holds for a shipment now in `state`: only while its last event and
/// status are those it was raised on.
pub(crate) fn still_holds(alert: &Alert, state: Option<&ShipmentState>) -> bool {
    state.is_some_and(|state| {
        state.last_event_id == alert.last_event_id && state.status == alert.status
    })
}
