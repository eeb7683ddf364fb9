//! The canonical tracking event.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Provider;

/// The 13 canonical shipment statuses. Closed: refinements go in the substatus.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// No usable information, or a code nobody has mapped yet.
    Unknown,
    /// Label created or announced; the carrier does not have the parcel yet.
    PreTransit,
    /// In the carrier network (first pickup scan included).
    InTransit,
    /// On the final delivery vehicle.
    OutForDelivery,
    /// Waiting at a pickup point or locker.
    AvailableForPickup,
    /// A delivery attempt failed; the carrier will try again.
    AttemptFailed,
    /// A non-terminal problem: delay, hold, customs, damage, address problem.
    Exception,
    /// Delivered, or collected by the recipient. Terminal.
    Delivered,
    /// On its way back to the sender.
    ReturnToSender,
    /// Back with the sender. Terminal.
    Returned,
    /// Undeliverable with no further attempts: lost, destroyed, refused for good. Terminal.
    Failure,
    /// Shipment or label cancelled. Terminal.
    Cancelled,
    /// Tracking stopped without a terminal event. Terminal.
    Expired,
}

impl Status {
    /// Every status, in declaration order.
    pub const ALL: [Status; 13] = [
        Status::Unknown,
        Status::PreTransit,
        Status::InTransit,
        Status::OutForDelivery,
        Status::AvailableForPickup,
        Status::AttemptFailed,
        Status::Exception,
        Status::Delivered,
        Status::ReturnToSender,
        Status::Returned,
        Status::Failure,
        Status::Cancelled,
        Status::Expired,
    ];

    /// Whether no further status is expected after this one.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Delivered
                | Status::Returned
                | Status::Failure
                | Status::Cancelled
                | Status::Expired
        )
    }

    /// The snake_case wire name, e.g. `"out_for_delivery"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::PreTransit => "pre_transit",
            Status::InTransit => "in_transit",
            Status::OutForDelivery => "out_for_delivery",
            Status::AvailableForPickup => "available_for_pickup",
            Status::AttemptFailed => "attempt_failed",
            Status::Exception => "exception",
            Status::Delivered => "delivered",
            Status::ReturnToSender => "return_to_sender",
            Status::Returned => "returned",
            Status::Failure => "failure",
            Status::Cancelled => "cancelled",
            Status::Expired => "expired",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The substatus every unmapped provider code gets.
pub const UNMAPPED: &str = "unknown.unmapped";

/// The result of a provider's status table: a status and an optional dotted substatus.
///
/// Mapping tables are `const` data, so the substatus is a `&'static str` such as
/// `"in_transit.picked_up"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The canonical status.
    pub status: Status,
    /// A refinement whose first segment is the status, e.g. `"exception.delayed"`.
    pub substatus: Option<&'static str>,
}

impl Mapping {
    /// A status with no refinement.
    pub const fn status(status: Status) -> Self {
        Mapping {
            status,
            substatus: None,
        }
    }

    /// A status refined by `substatus` (which must start with the status name).
    pub const fn sub(status: Status, substatus: &'static str) -> Self {
        Mapping {
            status,
            substatus: Some(substatus),
        }
    }

    /// What a code nobody has mapped yields: `unknown` / `unknown.unmapped`.
    pub const fn unmapped() -> Self {
        Mapping::sub(Status::Unknown, UNMAPPED)
    }
}

/// A deterministic event identifier.
///
/// Built from the provider's own event id when it has one, otherwise from a hash of fields that
/// never change between retries or replays (never from ingestion-time fields).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct EventId(pub String);

impl EventId {
    /// `"<provider>:<id>"` from an id the provider assigned to the event.
    ///
    /// ```
    /// use shipfeed_core::{EventId, Provider};
    /// assert_eq!(EventId::from_provider(Provider::Shipup, "31357").as_str(), "shipup:31357");
    /// ```
    pub fn from_provider(provider: Provider, id: &str) -> Self {
        EventId(format!("{provider}:{id}"))
    }

    /// `"<provider>:h<32 hex>"`, a SHA-256 over the given parts, each length-prefixed so that
    /// `("ab", "c")` and `("a", "bc")` differ.
    ///
    /// ```
    /// use shipfeed_core::{EventId, Provider};
    /// let a = EventId::derived(Provider::Sendcloud, &["postnl", "3SABC", "2024-04-03T16:51:28Z", "11"]);
    /// let b = EventId::derived(Provider::Sendcloud, &["postnl", "3SABC", "2024-04-03T16:51:28Z", "11"]);
    /// assert_eq!(a, b);
    /// assert!(a.as_str().starts_with("sendcloud:h"));
    /// ```
    pub fn derived(provider: Provider, parts: &[&str]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(provider.as_str().as_bytes());
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        let digest = hasher.finalize();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let name = provider.as_str();
        let mut id = String::with_capacity(name.len() + 2 + 32);
        id.push_str(name);
        id.push_str(":h");
        for byte in &digest[..16] {
            id.push(char::from(HEX[usize::from(byte >> 4)]));
            id.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        EventId(id)
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who and what a shipment is, as far as the delivery says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShipmentRef {
    /// Normalized lowercase carrier slug (`dhl`, `postnl`, `colissimo`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    /// The carrier's tracking number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    /// The merchant's order number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_number: Option<String>,
    /// The provider's own id for the shipment or parcel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_shipment_id: Option<String>,
    /// Further references by name (`external_order_id`, `shipment_uuid`, `fulfillment_number`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub references: BTreeMap<String, String>,
    /// The public tracking page, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_url: Option<String>,
}

impl ShipmentRef {
    /// Adds a named reference when the value is present and not blank.
    pub fn add_reference(&mut self, name: &str, value: Option<impl Into<String>>) {
        if let Some(value) = value.map(Into::into).filter(|v| !v.trim().is_empty()) {
            self.references.insert(name.to_owned(), value);
        }
    }
}

/// Where an event happened, as far as the provider says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Location {
    /// City name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 country code, upper case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Free text (a facility or depot name) when that is all the provider gives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Location {
    /// `None` when every field is empty, so that events do not carry `"location": {}`.
    pub fn non_empty(self) -> Option<Self> {
        (self != Location::default()).then_some(self)
    }
}

/// An expected delivery date, with a time when the provider gives one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EstimatedDelivery {
    /// The expected day (in the provider's terms; usually the recipient's local day).
    pub date: NaiveDate,
    /// The expected instant, when the provider gives a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

/// The provider's own words for the event, kept whatever the mapping did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RawStatus {
    /// The provider's status code as text (`"11"`, `"DELIVERED"`, `"origin_scan"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The provider's status message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One canonical shipment-tracking event.
///
/// `status` is `None` only for events the provider marks as carrying no status change (a Seven
/// Senders message with a blank status, a ticket); such events are kept in the timeline but
/// never move the shipment's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrackingEvent {
    /// Deterministic id: equal for every retry, resend or replay of the same carrier event.
    pub event_id: EventId,
    /// The platform that reported the event.
    pub provider: Provider,
    /// Canonical status; `None` for an event without a status change.
    pub status: Option<Status>,
    /// Dotted refinement of the status, e.g. `exception.delayed`, `unknown.unmapped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<String>,
    /// The provider's code and message, verbatim.
    pub raw: RawStatus,
    /// When it happened, in UTC.
    pub occurred_at: DateTime<Utc>,
    /// Whether the source stated the time zone of `occurred_at`; `false` means a configured zone
    /// was assumed.
    pub time_zone_known: bool,
    /// When the provider recorded the event, where that differs from `occurred_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<DateTime<Utc>>,
    /// When shipfeed received the delivery (injected by the transport; not part of `event_id`).
    pub received_at: DateTime<Utc>,
    /// Shipment identity.
    pub shipment: ShipmentRef,
    /// Where it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Expected delivery as known at this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_delivery: Option<EstimatedDelivery>,
    /// Human-readable description, when the provider gives more than the status message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The provider's id for the delivery that carried this event (message id, webhook id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// `true` for the event the delivery was sent for; `false` for history resent as context
    /// (HappyColis and Shipup resend the whole history with every delivery).
    pub trigger: bool,
}

impl TrackingEvent {
    /// Whether the status came from a code nobody has mapped yet (count these).
    pub fn is_unmapped(&self) -> bool {
        self.substatus.as_deref() == Some(UNMAPPED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip_through_serde() {
        for status in Status::ALL {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), status);
        }
    }

    #[test]
    fn exactly_five_statuses_are_terminal() {
        let terminal: Vec<_> = Status::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                Status::Delivered,
                Status::Returned,
                Status::Failure,
                Status::Cancelled,
                Status::Expired
            ]
        );
    }

    #[test]
    fn derived_ids_separate_their_parts() {
        let ab_c = EventId::derived(Provider::Sendcloud, &["ab", "c"]);
        let a_bc = EventId::derived(Provider::Sendcloud, &["a", "bc"]);
        assert_ne!(ab_c, a_bc);
        assert_ne!(ab_c, EventId::derived(Provider::Shipup, &["ab", "c"]));
        assert_eq!(ab_c.as_str().len(), "sendcloud:h".len() + 32);
    }

    #[test]
    fn blank_references_are_not_added() {
        let mut shipment = ShipmentRef::default();
        shipment.add_reference("a", Some("  "));
        shipment.add_reference("b", None::<String>);
        shipment.add_reference("c", Some("X1"));
        assert_eq!(shipment.references.len(), 1);
        assert_eq!(shipment.references["c"], "X1");
    }
}
