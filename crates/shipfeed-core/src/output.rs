//! What an adapter returns for one delivery.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Provider, ShipmentRef, TrackingEvent};

/// One canonical output: a tracking event, or a notice for a delivery that carries none.
///
/// Serialized with a `"type"` tag: `{"type": "event", ...}` or `{"type": "notice", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // events are the common case; boxing them costs more
pub enum Output {
    /// A shipment-tracking event.
    Event(TrackingEvent),
    /// An authentic delivery with no tracking event in it: acknowledged and counted.
    Notice(Notice),
}

impl Output {
    /// The tracking event, if this is one.
    pub fn as_event(&self) -> Option<&TrackingEvent> {
        match self {
            Output::Event(event) => Some(event),
            Output::Notice(_) => None,
        }
    }

    /// The notice, if this is one.
    pub fn as_notice(&self) -> Option<&Notice> {
        match self {
            Output::Notice(notice) => Some(notice),
            Output::Event(_) => None,
        }
    }
}

/// What kind of non-tracking delivery a [`Notice`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NoticeKind {
    /// A test or endpoint-registration ping (Sendcloud `test_webhook`, Shipup's livemode probe).
    Ping,
    /// The provider-side integration was connected, updated, deleted or got new credentials.
    Integration,
    /// A return was created.
    ReturnCreated,
    /// A shipment became known without a tracking event (Shipup `tracker.new`, HappyColis
    /// `shipment/created` with an empty history).
    ShipmentRegistered,
    /// An order or delivery-order lifecycle message.
    Order,
    /// The provider notified the recipient (Shipup `notification.new`).
    Notification,
    /// The recipient left feedback (Shipup `feedback.new`).
    Feedback,
    /// A documented message type with no tracking content and no closer kind.
    Other,
}

/// An authentic delivery that carries no tracking event.
///
/// Never an error: rejecting it would make the provider retry for hours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Notice {
    /// The platform that sent it.
    pub provider: Provider,
    /// Coarse kind.
    pub kind: NoticeKind,
    /// The provider's own name for the message type (`integration_updated`, `order/created`).
    pub raw_type: String,
    /// The provider's id for the delivery, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// The provider's id for the subject (integration, return, order), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<String>,
    /// When the provider says it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    /// When shipfeed received the delivery.
    pub received_at: DateTime<Utc>,
    /// The shipment it concerns, when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<ShipmentRef>,
}

impl Notice {
    /// A notice with only the required fields set.
    pub fn new(
        provider: Provider,
        kind: NoticeKind,
        raw_type: impl Into<String>,
        received_at: DateTime<Utc>,
    ) -> Self {
        Notice {
            provider,
            kind,
            raw_type: raw_type.into(),
            delivery_id: None,
            subject_id: None,
            occurred_at: None,
            received_at,
            shipment: None,
        }
    }
}
