//! Filters on the feed: which items a consumer (the pull feed's client, a subscription) wants.
//!
//! One [`Filter`] serves `GET /v1/events?provider=&status=&carrier=&type=`, the
//! `filter = { ... }` of every `[[subscription]]`, and any later consumer: it is plain data,
//! parsed and checked once ([`Filter::from_query`], or serde through [`FilterSpec`]), and
//! applied by [`Store::feed_page`](crate::Store::feed_page).
//!
//! [`Filter`] says what each item type matches.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use shipfeed_core::{Provider, Status, TrackingEvent};

use crate::alerts::Alert;
use crate::FeedItem;

/// The kinds of feed items a filter's `types` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ItemType {
    /// Event items, every revision (revision 1 is the event as first stored).
    Event,
    /// Event items with revision > 1 only: corrections.
    Revision,
    /// Retractions.
    Retraction,
    /// Shipment status changes.
    ShipmentState,
    /// Stalled-shipment alerts.
    Alert,
    /// Alerts cleared.
    AlertCleared,
    /// Contract drift first seen.
    Drift,
}

impl ItemType {
    /// Every type, in the order the documentation lists them.
    pub const ALL: [ItemType; 7] = [
        ItemType::Event,
        ItemType::Revision,
        ItemType::Retraction,
        ItemType::ShipmentState,
        ItemType::Alert,
        ItemType::AlertCleared,
        ItemType::Drift,
    ];

    /// The name used in queries and configuration (`shipment_state`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            ItemType::Event => "event",
            ItemType::Revision => "revision",
            ItemType::Retraction => "retraction",
            ItemType::ShipmentState => "shipment_state",
            ItemType::Alert => "alert",
            ItemType::AlertCleared => "alert_cleared",
            ItemType::Drift => "drift",
        }
    }
}

impl fmt::Display for ItemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ItemType {
    type Err = FilterError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        ItemType::ALL
            .into_iter()
            .find(|kind| kind.as_str() == value)
            .ok_or_else(|| FilterError::unknown(Dimension::Type, value))
    }
}

/// A dimension of a [`Filter`], for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dimension {
    /// `provider` / `providers`.
    Provider,
    /// `status` / `statuses`.
    Status,
    /// `carrier` / `carriers`.
    Carrier,
    /// `type` / `types`.
    Type,
}

impl Dimension {
    /// The singular name (the query parameter).
    pub const fn as_str(self) -> &'static str {
        match self {
            Dimension::Provider => "provider",
            Dimension::Status => "status",
            Dimension::Carrier => "carrier",
            Dimension::Type => "type",
        }
    }

    /// The values allowed; empty for carriers, which are open (any slug).
    pub fn allowed(self) -> Vec<&'static str> {
        match self {
            Dimension::Provider => Provider::ALL.iter().map(|p| p.as_str()).collect(),
            Dimension::Status => Status::ALL.iter().map(|s| s.as_str()).collect(),
            Dimension::Carrier => Vec::new(),
            Dimension::Type => ItemType::ALL.iter().map(|t| t.as_str()).collect(),
        }
    }
}

/// A value a filter cannot take: one outside a closed set (provider, status, type), or a
/// blank carrier. The message names the value and what is allowed, so that the pull feed can
/// answer it as a 400 and `shipfeed serve` can stop with it at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct FilterError {
    /// The dimension.
    pub dimension: Dimension,
    /// The value as given.
    pub value: String,
}

impl FilterError {
    fn unknown(dimension: Dimension, value: &str) -> Self {
        FilterError {
            dimension,
            value: value.to_owned(),
        }
    }

    /// The values allowed in the dimension (empty for carriers: any slug).
    pub fn allowed(&self) -> Vec<&'static str> {
        self.dimension.allowed()
    }

    fn message(&self) -> String {
        let name = self.dimension.as_str();
        match self.dimension {
            Dimension::Carrier => format!("empty {name} `{}`: give a carrier slug", self.value),
            _ => format!(
                "unknown {name} `{}`; allowed: {}",
                self.value,
                self.allowed().join(", ")
            ),
        }
    }
}

/// A filter as written in configuration: lists of names, checked into a [`Filter`].
///
/// ```
/// let filter: shipfeed_store::Filter = serde_json::from_str(
///     r#"{"statuses": ["out_for_delivery", "delivered"], "carriers": ["DHL"]}"#,
/// )?;
/// assert!(!filter.is_empty());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Provider names (`sendcloud`, `sevensenders`, `happycolis`, `shipup`).
    #[serde(default)]
    pub providers: Vec<String>,
    /// Canonical statuses (`delivered`, ...).
    #[serde(default)]
    pub statuses: Vec<String>,
    /// Carrier slugs, compared through [`shipfeed_core::carrier::normalize`].
    #[serde(default)]
    pub carriers: Vec<String>,
    /// Item types ([`ItemType::as_str`]).
    #[serde(default)]
    pub types: Vec<String>,
}

/// Which feed items a consumer wants. The default, empty filter admits everything.
///
/// # What an item matches
///
/// A filter has four dimensions: `providers`, `statuses`, `carriers` and `types`. An empty
/// dimension admits everything; a set one admits an item only when the item has a value in
/// that dimension and the value is listed. An item passes when every dimension admits it.
/// What each item type brings to each dimension:
///
/// | item | type | provider | status | carrier |
/// |---|---|---|---|---|
/// | event, revision 1 | `event` | the event's | the event's (none for an event without a status) | its shipment's |
/// | event, revision > 1 | `revision`, and `event` admits it too | the event's | the event's | its shipment's |
/// | `retraction` | `retraction` | as any stored revision of the event withdrawn (up to the one withdrawn) | same | same |
/// | `shipment_state` | `shipment_state` | the provider of the event that set the new status | the new status (none when no event is left) | the shipment's |
/// | `alert` | `alert` | the provider of the shipment's last event | the stalled status | the shipment's |
/// | `alert_cleared` | `alert_cleared` | as its alert | as its alert (the stalled status) | as its alert |
/// | `drift` | `drift` | the provider's | none | none |
///
/// # Follow-ups reach whoever got the original
///
/// A correction must reach every consumer that received what it corrects, even when the
/// correction itself no longer matches (a fix remapped `delivered` to `attempt_failed`: a
/// consumer of `delivered` must learn that its `delivered` was wrong). So:
///
/// - an **event revision** R > 1 also passes when any earlier revision (1..R) of the event
///   passes as an event item;
/// - a **retraction** of revision R also passes when any revision 1..=R passes as an event
///   item;
/// - an **`alert_cleared`** also passes when its alert passes.
///
/// Whether an earlier revision passed is decided by the filter now, against what the store
/// keeps (`event_revisions`), so no record of what was delivered is needed and the pull feed
/// gets the same rule per request. A consumer that changes its filter is judged by the new
/// one: corrections of events it received under the old filter only reach it if the new one
/// admits some revision of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "FilterSpec")]
pub struct Filter {
    providers: BTreeSet<&'static str>,
    statuses: BTreeSet<&'static str>,
    carriers: BTreeSet<String>,
    types: BTreeSet<ItemType>,
}

impl TryFrom<FilterSpec> for Filter {
    type Error = FilterError;

    fn try_from(spec: FilterSpec) -> Result<Self, FilterError> {
        let mut filter = Filter::default();
        let dimensions = [
            (Dimension::Provider, &spec.providers),
            (Dimension::Status, &spec.statuses),
            (Dimension::Carrier, &spec.carriers),
            (Dimension::Type, &spec.types),
        ];
        for (dimension, values) in dimensions {
            for value in values {
                filter.add(dimension, value)?;
            }
        }
        Ok(filter)
    }
}

impl Filter {
    /// A filter from query parameters: `provider`, `status`, `carrier` and `type`, each
    /// repeated or comma-separated (`status=delivered,attempt_failed&status=out_for_delivery`);
    /// other parameters are not the filter's and are left alone. Values are not folded: a
    /// status is written as the feed writes it (`out_for_delivery`); a carrier is any slug.
    ///
    /// ```
    /// use shipfeed_store::Filter;
    /// let filter = Filter::from_query([("status", "delivered,attempt_failed"), ("after", "10")])?;
    /// assert!(!filter.is_empty());
    /// let error = Filter::from_query([("status", "shipped")]).unwrap_err();
    /// assert!(error.to_string().starts_with("unknown status `shipped`; allowed: unknown, pre_transit"));
    /// # Ok::<(), shipfeed_store::FilterError>(())
    /// ```
    ///
    /// # Errors
    /// [`FilterError`] for the first value outside its closed set, or a blank carrier.
    pub fn from_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, FilterError> {
        let mut filter = Filter::default();
        for (key, values) in pairs {
            let dimension = match key {
                "provider" => Dimension::Provider,
                "status" => Dimension::Status,
                "carrier" => Dimension::Carrier,
                "type" => Dimension::Type,
                _ => continue,
            };
            for value in values.split(',') {
                filter.add(dimension, value.trim())?;
            }
        }
        Ok(filter)
    }

    fn add(&mut self, dimension: Dimension, value: &str) -> Result<(), FilterError> {
        let unknown = || FilterError::unknown(dimension, value);
        match dimension {
            Dimension::Provider => {
                // Provider names only, as the feed writes them: `Provider::from_str` also
                // folds spellings, which a closed set on the wire should not.
                let provider = Provider::ALL
                    .into_iter()
                    .find(|p| p.as_str() == value)
                    .ok_or_else(unknown)?;
                self.providers.insert(provider.as_str());
            }
            Dimension::Status => {
                let status = Status::ALL
                    .into_iter()
                    .find(|s| s.as_str() == value)
                    .ok_or_else(unknown)?;
                self.statuses.insert(status.as_str());
            }
            Dimension::Carrier => {
                let slug = shipfeed_core::carrier::normalize(value).ok_or_else(unknown)?;
                self.carriers.insert(slug);
            }
            Dimension::Type => {
                self.types.insert(value.parse()?);
            }
        }
        Ok(())
    }

    /// Whether the filter admits everything (no dimension set).
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
            && self.statuses.is_empty()
            && self.carriers.is_empty()
            && self.types.is_empty()
    }

    fn admits_type(&self, kind: ItemType) -> bool {
        self.types.is_empty()
            || self.types.contains(&kind)
            || (kind == ItemType::Revision && self.types.contains(&ItemType::Event))
    }

    fn admits(&self, facets: &Facets<'_>) -> bool {
        fn one<T: Ord>(set: &BTreeSet<T>, value: Option<T>) -> bool {
            set.is_empty() || value.is_some_and(|value| set.contains(&value))
        }
        self.admits_type(facets.kind)
            && one(&self.providers, facets.provider.map(Provider::as_str))
            && one(&self.statuses, facets.status.map(Status::as_str))
            && (self.carriers.is_empty()
                || facets
                    .carrier
                    .and_then(shipfeed_core::carrier::normalize)
                    .is_some_and(|slug| self.carriers.contains(&slug)))
    }

    fn admits_event(&self, revision: i64, event: &TrackingEvent) -> bool {
        self.admits(&Facets::event(revision, event))
    }

    /// What the store must look up before [`matches`](Filter::matches) can decide on `item`:
    /// `None` when the item decides alone (it passes by itself, or nothing could make it
    /// pass).
    pub fn lookup<'a>(&self, item: &'a FeedItem) -> Option<Lookup<'a>> {
        if self.is_empty() {
            return None;
        }
        match item {
            FeedItem::Event(item) if item.revision > 1 => (!self
                .admits_event(item.revision, &item.event))
            .then_some(Lookup::Revisions(item.event.event_id.as_str())),
            FeedItem::Retraction(retraction) => Some(Lookup::Revisions(&retraction.event_id)),
            FeedItem::AlertCleared(cleared) => Some(Lookup::Alert(&cleared.alert_id)),
            _ => None,
        }
    }

    /// Whether `item` passes, given what the store found for its [`lookup`](Filter::lookup)
    /// (pass [`Context::None`] when it asked for nothing).
    pub fn matches(&self, item: &FeedItem, context: &Context) -> bool {
        if self.is_empty() {
            return true;
        }
        match item {
            FeedItem::Event(item) => {
                self.admits_event(item.revision, &item.event)
                    || (item.revision > 1
                        && context
                            .earlier(item.revision)
                            .any(|(revision, event)| self.admits_event(revision, event)))
            }
            FeedItem::Retraction(retraction) => context
                .earlier(retraction.revision.saturating_add(1))
                .any(|(revision, event)| {
                    self.admits_event(revision, event)
                        || self.admits(&Facets {
                            kind: ItemType::Retraction,
                            ..Facets::event(revision, event)
                        })
                }),
            FeedItem::ShipmentState(change) => self.admits(&Facets {
                kind: ItemType::ShipmentState,
                provider: change
                    .state
                    .as_ref()
                    .and_then(|state| provider_of(state.status_event_id.as_str())),
                status: change.state.as_ref().map(|state| state.status),
                carrier: change
                    .shipment
                    .as_ref()
                    .and_then(|shipment| shipment.carrier.as_deref()),
            }),
            FeedItem::Alert(item) => self.admits(&Facets::alert(ItemType::Alert, &item.alert)),
            FeedItem::AlertCleared(_) => match context {
                Context::Alert(Some(alert)) => {
                    self.admits(&Facets::alert(ItemType::Alert, alert))
                        || self.admits(&Facets::alert(ItemType::AlertCleared, alert))
                }
                // An alert the store no longer has: judged on its type alone.
                _ => self.admits(&Facets::bare(ItemType::AlertCleared)),
            },
            FeedItem::Drift(drift) => self.admits(&Facets {
                provider: Some(drift.provider),
                ..Facets::bare(ItemType::Drift)
            }),
        }
    }
}

/// The filter as the query that makes it (`status=delivered,out_for_delivery&type=event`;
/// empty for the empty filter), for banners and logs.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let types: Vec<&str> = self.types.iter().map(|t| t.as_str()).collect();
        let carriers: Vec<&str> = self.carriers.iter().map(String::as_str).collect();
        let dimensions = [
            (
                Dimension::Provider,
                self.providers.iter().copied().collect::<Vec<_>>(),
            ),
            (Dimension::Status, self.statuses.iter().copied().collect()),
            (Dimension::Carrier, carriers),
            (Dimension::Type, types),
        ];
        let mut first = true;
        for (dimension, values) in dimensions {
            if values.is_empty() {
                continue;
            }
            if !first {
                f.write_str("&")?;
            }
            first = false;
            write!(f, "{}={}", dimension.as_str(), values.join(","))?;
        }
        Ok(())
    }
}

/// What [`Filter::lookup`] asks the store for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Every stored revision of this event.
    Revisions(&'a str),
    /// The alert with this id.
    Alert(&'a str),
}

/// What the store found for a [`Lookup`], for [`Filter::matches`].
#[derive(Debug, Clone, Default)]
pub enum Context {
    /// Nothing was asked for.
    #[default]
    None,
    /// The stored revisions of the item's event: `(revision, event)`, in any order.
    Revisions(Vec<(i64, TrackingEvent)>),
    /// The item's alert, `None` when the store does not have it (boxed: an alert is large,
    /// and most contexts are not one).
    Alert(Option<Box<Alert>>),
}

impl Context {
    /// The revisions before `revision`.
    fn earlier(&self, revision: i64) -> impl Iterator<Item = (i64, &TrackingEvent)> {
        let revisions = match self {
            Context::Revisions(revisions) => revisions.as_slice(),
            _ => &[],
        };
        revisions
            .iter()
            .filter(move |(r, _)| *r < revision)
            .map(|(r, event)| (*r, event))
    }
}

/// What one item brings to each dimension.
struct Facets<'a> {
    kind: ItemType,
    provider: Option<Provider>,
    status: Option<Status>,
    carrier: Option<&'a str>,
}

impl<'a> Facets<'a> {
    fn bare(kind: ItemType) -> Self {
        Facets {
            kind,
            provider: None,
            status: None,
            carrier: None,
        }
    }

    fn event(revision: i64, event: &'a TrackingEvent) -> Self {
        Facets {
            kind: if revision > 1 {
                ItemType::Revision
            } else {
                ItemType::Event
            },
            provider: Some(event.provider),
            status: event.status,
            carrier: event.shipment.carrier.as_deref(),
        }
    }

    fn alert(kind: ItemType, alert: &'a Alert) -> Self {
        Facets {
            kind,
            provider: provider_of(alert.last_event_id.as_str()),
            status: Some(alert.status),
            carrier: alert.shipment.carrier.as_deref(),
        }
    }
}

/// The provider an event id names: every id is `<provider>:...`.
fn provider_of(event_id: &str) -> Option<Provider> {
    let (name, _) = event_id.split_once(':')?;
    Provider::ALL.into_iter().find(|p| p.as_str() == name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{DateTime, Utc};
    use shipfeed_core::{EventId, RawStatus, ShipmentRef, ShipmentState};

    use super::*;
    use crate::alerts::{AlertCleared, AlertItem};
    use crate::{DriftItem, EventItem, Retraction, ShipmentStateChange};

    fn filter(query: &str) -> Filter {
        let pairs: Vec<(&str, &str)> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap())
            .collect();
        Filter::from_query(pairs).unwrap()
    }

    fn event(provider: Provider, status: Option<Status>, carrier: Option<&str>) -> TrackingEvent {
        TrackingEvent {
            event_id: EventId::from_provider(provider, "e1"),
            provider,
            status,
            substatus: None,
            raw: RawStatus::default(),
            occurred_at: DateTime::<Utc>::UNIX_EPOCH,
            time_zone_known: true,
            recorded_at: None,
            received_at: DateTime::<Utc>::UNIX_EPOCH,
            shipment: ShipmentRef {
                carrier: carrier.map(str::to_owned),
                tracking_number: Some("3SABC".to_owned()),
                ..ShipmentRef::default()
            },
            location: None,
            estimated_delivery: None,
            message: None,
            delivery_id: None,
            trigger: true,
        }
    }

    fn delivered() -> TrackingEvent {
        event(Provider::Sendcloud, Some(Status::Delivered), Some("postnl"))
    }

    fn event_item(revision: i64, event: TrackingEvent) -> FeedItem {
        FeedItem::Event(EventItem {
            seq: 1,
            revision,
            shipment_key: "postnl:3SABC".to_owned(),
            event,
        })
    }

    fn state(status: Status, by: &EventId) -> ShipmentState {
        ShipmentState {
            status,
            substatus: None,
            terminal: false,
            status_event_id: by.clone(),
            status_occurred_at: DateTime::<Utc>::UNIX_EPOCH,
            last_event_id: by.clone(),
            last_occurred_at: DateTime::<Utc>::UNIX_EPOCH,
            estimated_delivery: None,
            event_count: 1,
        }
    }

    fn alert(status: Status, carrier: &str) -> Alert {
        Alert {
            alert_id: "alert:1".to_owned(),
            rule: format!("stalled.{}", status.as_str()),
            status,
            since: DateTime::<Utc>::UNIX_EPOCH,
            max_quiet_seconds: 3600,
            last_event_id: EventId::from_provider(Provider::Shipup, "9"),
            shipment_key: format!("{carrier}:3SABC"),
            shipment: ShipmentRef {
                carrier: Some(carrier.to_owned()),
                ..ShipmentRef::default()
            },
            raised_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    /// Whether `filter` admits `item` with `context`, checking that `lookup` asks for what
    /// the context answers (or for nothing).
    fn passes(filter: &Filter, item: &FeedItem, context: &Context) -> bool {
        if let (None, Context::Revisions(_) | Context::Alert(_)) = (filter.lookup(item), context) {
            // Nothing asked: the item decides alone.
            return filter.matches(item, &Context::None);
        }
        filter.matches(item, context)
    }

    #[test]
    fn an_empty_filter_admits_everything_and_looks_nothing_up() {
        let all = Filter::default();
        assert!(all.is_empty());
        let retraction = FeedItem::Retraction(Retraction {
            seq: 1,
            event_id: "sendcloud:e1".into(),
            revision: 1,
            shipment_key: "postnl:3SABC".into(),
            delivery_seq: 1,
        });
        assert_eq!(all.lookup(&retraction), None);
        assert!(all.matches(&retraction, &Context::None));
        assert!(all.matches(&event_item(1, delivered()), &Context::None));
    }

    #[test]
    fn events_match_on_provider_status_carrier_and_type() {
        let item = event_item(1, delivered());
        for (query, expected) in [
            ("provider=sendcloud", true),
            ("provider=shipup,happycolis", false),
            ("status=delivered", true),
            ("status=out_for_delivery,attempt_failed", false),
            ("carrier=postnl", true),
            ("carrier=PostNL", true), // compared as slugs
            ("carrier=dhl", false),
            ("type=event", true),
            ("type=revision", false),
            ("type=shipment_state,alert", false),
            (
                "provider=sendcloud&status=delivered&carrier=postnl&type=event",
                true,
            ),
            ("provider=sendcloud&status=in_transit", false),
        ] {
            assert_eq!(
                filter(query).matches(&item, &Context::None),
                expected,
                "{query}"
            );
            assert_eq!(filter(query).lookup(&item), None, "revision 1: {query}");
        }
        // No status, no carrier: a filter on either excludes it.
        let bare = event_item(1, event(Provider::Sendcloud, None, None));
        assert!(!filter("status=delivered").matches(&bare, &Context::None));
        assert!(!filter("carrier=postnl").matches(&bare, &Context::None));
        assert!(filter("provider=sendcloud").matches(&bare, &Context::None));
    }

    #[test]
    fn a_revision_reaches_whoever_an_earlier_revision_reached() {
        // Revision 1 said delivered; the fix (revision 2) says attempt_failed.
        let mut fixed = delivered();
        fixed.status = Some(Status::AttemptFailed);
        let item = event_item(2, fixed.clone());
        let history = Context::Revisions(vec![(1, delivered()), (2, fixed.clone())]);

        let delivered_only = filter("status=delivered");
        assert_eq!(
            delivered_only.lookup(&item),
            Some(Lookup::Revisions("sendcloud:e1"))
        );
        assert!(delivered_only.matches(&item, &history), "it got revision 1");
        assert!(
            !delivered_only.matches(&item, &Context::Revisions(vec![(2, fixed.clone())])),
            "only the revision itself is stored: nothing was received before"
        );
        // A revision matching by itself needs no history.
        let failed = filter("status=attempt_failed");
        assert_eq!(failed.lookup(&item), None);
        assert!(failed.matches(&item, &Context::None));
        // Never a later revision: revision 2 is not passed because of revision 3.
        let mut third = delivered();
        third.status = Some(Status::Delivered);
        let later_only = Context::Revisions(vec![(2, fixed.clone()), (3, third)]);
        assert!(!delivered_only.matches(&item, &later_only));
        // Type: `event` takes every revision, `revision` only corrections.
        assert!(passes(&filter("type=event"), &item, &history));
        assert!(passes(&filter("type=revision"), &item, &history));
        assert!(!filter("type=revision").matches(&event_item(1, delivered()), &Context::None));
        // A client of corrections only received revision 2; revision 3 follows it.
        let third_item = event_item(3, delivered());
        let all_three = Context::Revisions(vec![(1, delivered()), (2, fixed), (3, delivered())]);
        assert!(passes(&filter("type=revision"), &third_item, &all_three));
        // Nobody with another interest: the carrier never matched.
        assert!(!passes(&filter("carrier=dhl"), &item, &history));
    }

    #[test]
    fn a_retraction_matches_through_the_revisions_of_its_event() {
        let retraction = FeedItem::Retraction(Retraction {
            seq: 9,
            event_id: "sendcloud:e1".into(),
            revision: 2,
            shipment_key: "postnl:3SABC".into(),
            delivery_seq: 1,
        });
        let mut fixed = delivered();
        fixed.status = Some(Status::Exception);
        let history = Context::Revisions(vec![(1, delivered()), (2, fixed)]);
        for (query, expected) in [
            ("status=delivered", true),   // received revision 1
            ("status=exception", true),   // received revision 2
            ("status=in_transit", false), // never received it
            ("type=retraction", true),    // wants retractions
            ("type=retraction&carrier=postnl", true),
            ("type=retraction&carrier=dhl", false), // of other carriers' events only
            ("type=shipment_state", false),         // received no event
            ("type=revision", true),                // received revision 2
            ("type=retraction&status=in_transit", false),
        ] {
            let filter = filter(query);
            assert_eq!(
                filter.lookup(&retraction),
                Some(Lookup::Revisions("sendcloud:e1"))
            );
            assert_eq!(filter.matches(&retraction, &history), expected, "{query}");
        }
        // Revisions after the one withdrawn do not count (none exist; be strict anyway).
        let later = Context::Revisions(vec![(3, delivered())]);
        assert!(!filter("status=delivered").matches(&retraction, &later));
    }

    #[test]
    fn a_shipment_state_matches_on_its_new_status_carrier_and_the_provider_that_set_it() {
        let by = EventId::from_provider(Provider::HappyColis, "7");
        let change = |state: Option<ShipmentState>| {
            FeedItem::ShipmentState(ShipmentStateChange {
                seq: 3,
                shipment_key: "colissimo:6A1".into(),
                shipment: Some(ShipmentRef {
                    carrier: Some("colissimo".into()),
                    ..ShipmentRef::default()
                }),
                previous: None,
                state,
            })
        };
        let item = change(Some(state(Status::OutForDelivery, &by)));
        for (query, expected) in [
            ("status=out_for_delivery", true),
            ("status=delivered", false),
            ("carrier=colissimo", true),
            ("carrier=dhl", false),
            ("provider=happycolis", true),
            ("provider=sendcloud", false),
            ("type=shipment_state", true),
            ("type=event", false),
        ] {
            let filter = filter(query);
            assert_eq!(filter.lookup(&item), None);
            assert_eq!(filter.matches(&item, &Context::None), expected, "{query}");
        }
        // No event left: no status, no provider.
        let emptied = change(None);
        assert!(!filter("status=delivered").matches(&emptied, &Context::None));
        assert!(!filter("provider=happycolis").matches(&emptied, &Context::None));
        assert!(filter("carrier=colissimo").matches(&emptied, &Context::None));
    }

    #[test]
    fn alerts_and_their_clearing_match_alike() {
        let raised = alert(Status::InTransit, "dhl");
        let item = FeedItem::Alert(AlertItem {
            seq: 4,
            alert: raised.clone(),
        });
        let cleared = FeedItem::AlertCleared(AlertCleared {
            seq: 5,
            alert_id: raised.alert_id.clone(),
            rule: raised.rule.clone(),
            shipment_key: raised.shipment_key.clone(),
            cleared_by: Some(EventId::from_provider(Provider::Sendcloud, "8")),
            status: Some(Status::Delivered),
            delivery_seq: 2,
        });
        let found = Context::Alert(Some(Box::new(raised)));
        for (query, alert_passes, cleared_passes) in [
            ("status=in_transit", true, true),
            ("status=delivered", false, false), // judged as its alert, not the new status
            ("carrier=dhl", true, true),
            ("carrier=postnl", false, false),
            ("provider=shipup", true, true),
            ("provider=sendcloud", false, false),
            ("type=alert", true, true), // the clearing of an alert received
            ("type=alert_cleared", false, true), // clearings only
            ("type=alert_cleared&carrier=postnl", false, false),
            ("type=event", false, false),
        ] {
            let filter = filter(query);
            assert_eq!(filter.lookup(&item), None);
            assert_eq!(
                filter.matches(&item, &Context::None),
                alert_passes,
                "{query}"
            );
            assert_eq!(filter.lookup(&cleared), Some(Lookup::Alert("alert:1")));
            assert_eq!(filter.matches(&cleared, &found), cleared_passes, "{query}");
        }
        // An alert the store does not have: the type alone decides.
        let missing = Context::Alert(None);
        assert!(filter("type=alert_cleared").matches(&cleared, &missing));
        assert!(!filter("status=in_transit").matches(&cleared, &missing));
    }

    #[test]
    fn drift_has_only_a_provider() {
        let item = FeedItem::Drift(DriftItem {
            seq: 6,
            provider: Provider::SevenSenders,
            kind: shipfeed_core::drift::DriftKind::ALL[0],
            key: "parcel.co2".into(),
            delivery_seq: 3,
            first_seen: DateTime::<Utc>::UNIX_EPOCH,
        });
        for (query, expected) in [
            ("provider=sevensenders", true),
            ("provider=shipup", false),
            ("type=drift", true),
            ("type=alert", false),
            ("status=unknown", false),
            ("carrier=dhl", false),
        ] {
            assert_eq!(
                filter(query).matches(&item, &Context::None),
                expected,
                "{query}"
            );
        }
    }

    #[test]
    fn unknown_values_of_closed_sets_are_refused_with_what_is_allowed() {
        for (query, message) in [
            (
                "status=shipped",
                "unknown status `shipped`; allowed: unknown, pre_transit, in_transit, \
                 out_for_delivery, available_for_pickup, attempt_failed, exception, delivered, \
                 return_to_sender, returned, failure, cancelled, expired",
            ),
            (
                "provider=dhl",
                "unknown provider `dhl`; allowed: sendcloud, sevensenders, happycolis, shipup",
            ),
            (
                "type=events",
                "unknown type `events`; allowed: event, revision, retraction, shipment_state, \
                 alert, alert_cleared, drift",
            ),
            ("status=delivered,", "unknown status ``"),
            ("carrier=%20", "empty carrier"),
            ("provider=Sendcloud", "unknown provider `Sendcloud`"),
        ] {
            let (key, value) = query.split_once('=').unwrap();
            let value = value.replace("%20", " ");
            let error = Filter::from_query([(key, value.as_str())]).unwrap_err();
            assert!(error.to_string().starts_with(message), "{query}: {error}");
        }
        // Not the filter's: left alone.
        assert!(Filter::from_query([("after", "x"), ("limit", "y")])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_filter_shows_as_the_query_that_makes_it() {
        let shown = filter("type=event&carrier=DHL&status=delivered,attempt_failed").to_string();
        assert_eq!(
            shown,
            "status=attempt_failed,delivered&carrier=dhl&type=event"
        );
        assert_eq!(
            filter(&shown),
            filter("status=delivered,attempt_failed&carrier=dhl&type=event")
        );
        assert_eq!(Filter::default().to_string(), "");
    }

    #[test]
    fn a_spec_is_checked_like_a_query() {
        let spec = FilterSpec {
            statuses: vec!["delivered".into()],
            carriers: vec!["DHL".into()],
            types: vec!["event".into()],
            ..FilterSpec::default()
        };
        let from_spec = Filter::try_from(spec).unwrap();
        assert_eq!(from_spec, filter("status=delivered&carrier=dhl&type=event"));
        let error: Result<Filter, _> = serde_json::from_str(r#"{"statuses": ["gone"]}"#);
        assert!(error
            .unwrap_err()
            .to_string()
            .contains("unknown status `gone`"));
        let error: Result<Filter, _> = serde_json::from_str(r#"{"status": ["delivered"]}"#);
        assert!(error
            .unwrap_err()
            .to_string()
            .contains("unknown field `status`"));
    }
}
