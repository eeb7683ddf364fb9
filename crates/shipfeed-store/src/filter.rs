//! Filters on the feed: which items a consumer (the pull feed's client, a subscription) wants.
//!
//! One [`Filter`] serves `GET /v1/events?provider=&status=&carrier=&type=`, the
//! `filter = { ... }` of every `[[subscription]]`, and any later consumer: it is plain data,
//! parsed and checked once ([`Filter::from_query`], or serde through [`FilterSpec`]), and
//! applied by [`Store::feed_page`](crate::Store::feed_page).
//!
//! # What an item matches
//!
//! A filter has four dimensions: `providers`, `statuses`, `carriers` and `types`. An empty
//! dimension admits everything; a set one admits an item only when the item has a value in
//! that dimension and the value is listed. An item passes when every dimension admits it.
//! What each item type brings to each dimension:
//!
//! | item | type | provider | status | carrier |
//! |---|---|---|---|---|
//! | event, revision 1 | `event` | the event's | the event's (none for an event without a status) | its shipment's |
//! | event, revision > 1 | `revision`, and `event` admits it too | the event's | the event's | its shipment's |
//! | `retraction` | `retraction` | as any stored revision of the event withdrawn (up to the one withdrawn) | same | same |
//! | `shipment_state` | `shipment_state` | the provider of the event that set the new status | the new status (none when no event is left) | the shipment's |
//! | `alert` | `alert` | the provider of the shipment's last event | the stalled status | the shipment's |
//! | `alert_cleared` | `alert_cleared` | as its alert | as its alert (the stalled status) | as its alert |
//! | `drift` | `drift` | the provider's | none | none |
//!
//! # Follow-ups reach whoever got the original
//!
//! A correction must reach every consumer that received what it corrects, even when the
//! correction itself no longer matches (a fix remapped `delivered` to `attempt_failed`: a
//! consumer of `delivered` must learn that its `delivered` was wrong). So:
//!
//! - an **event revision** R > 1 also passes when any earlier revision (1..R) of the event
//!   passes as an event item;
//! - a **retraction** of revision R also passes when any revision 1..=R passes as an event
//!   item;
//! - an **`alert_cleared`** also passes when its alert passes.
//!
//! Whether an earlier revision passed is decided by the filter now, against what the store
//! keeps (`event_revisions`), so no record of what was delivered is needed and the pull feed
//! gets the same rule per request. A consumer that changes its filter is judged by the new
//! one: corrections of events it received under the old filter only reach it if the new one
//! admits some revision of them.

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

/// Which feed items a consumer wants (see the [module documentation](self) for what each item
/// type matches). The default, empty filter admits everything.
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
            FeedItem::Event(item) if item.revision > 1 => {
                (!self.admits_event(item.revision, &item.event))
                    .then_some(Lookup::Revisions(item.event.event_id.as_str()))
            }
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
                        && context.earlier(item.revision).any(|(revision, event)| {
                            self.admits_event(revision, event)
                        }))
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
    /// The item's alert, `None` when the store does not have it.
    Alert(Option<Alert>),
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
