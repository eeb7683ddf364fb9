//! Private serde wire types for Shipup `webhook_event` bodies.
//!
//! Every field is optional and unknown fields are ignored: Shipup documents its objects only
//! partially and adds fields over time. Strings are core `json::Text` (borrowed unless escaped;
//! numbers accepted, since Shipup ids are integers). Times accept unix seconds (the documented
//! form) or ISO 8601 text (the newer event resource).

use std::collections::BTreeMap;

use serde::de::{Deserializer, Error as _, IgnoredAny};
use serde::Deserialize;
use shipfeed_core::json::{Text, TimeValue};
use shipfeed_core::time::Instant;

/// The non-blank text of an optional field.
pub(crate) fn text<'t>(field: &'t Option<Text<'_>>) -> Option<&'t str> {
    field.as_ref().and_then(Text::non_blank)
}

/// An instant given as unix seconds (number or numeric string) or as ISO 8601 text, resolved
/// while decoding (core [`TimeValue`]) so that a bad value is reported with its JSON path.
/// Zone-less text is read as UTC and flagged as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct When(pub(crate) Instant);

impl<'de> Deserialize<'de> for When {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = TimeValue::deserialize(deserializer)?;
        value
            .resolve(chrono_tz::UTC)
            .map(When)
            .ok_or_else(|| match value {
                TimeValue::Text(text) => D::Error::custom(format!(
                    "`{text}` is neither unix seconds nor an ISO 8601 date-time"
                )),
                TimeValue::Unix(_) => D::Error::custom("unix time out of range"),
            })
    }
}

/// The `webhook_event` envelope. `retry_count` and `webhook_setting_id` are deliberately not
/// read: they are delivery bookkeeping and must never reach an event id.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope<'a> {
    #[serde(default, borrow)]
    pub(crate) id: Option<Text<'a>>,
    #[serde(default, borrow, rename = "type")]
    pub(crate) kind: Option<Text<'a>>,
    /// A boolean, or the string `"false"` in the endpoint probe; only its presence matters.
    #[serde(default)]
    pub(crate) livemode: Option<IgnoredAny>,
    #[serde(default)]
    pub(crate) created_at: Option<When>,
    #[serde(default, borrow)]
    pub(crate) data: Option<Data<'a>>,
}

/// Just enough of an envelope to acknowledge a non-tracking delivery whose `data` has a shape
/// we do not know.
#[derive(Debug, Deserialize)]
pub(crate) struct Head<'a> {
    #[serde(default, borrow)]
    pub(crate) id: Option<Text<'a>>,
    #[serde(default, borrow, rename = "type")]
    pub(crate) kind: Option<Text<'a>>,
}

/// `data`: the root object and why the webhook was sent.
#[derive(Debug, Deserialize)]
pub(crate) struct Data<'a> {
    #[serde(default, borrow)]
    pub(crate) object: Option<Object<'a>>,
    #[serde(default, borrow)]
    pub(crate) reason: Option<Reason<'a>>,
}

/// `data.reason`; for `tracker.events.new` it names the new event.
#[derive(Debug, Deserialize)]
pub(crate) struct Reason<'a> {
    #[serde(default, borrow)]
    pub(crate) event_id: Option<Text<'a>>,
}

/// The root object: a tracker (`tracker.*`), a notification or a feedback (both with a
/// `source`), or a fulfillment / order when it is a notification's source. One struct covers
/// them all because their fields do not collide.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Object<'a> {
    #[serde(default, borrow)]
    pub(crate) id: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) object: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) uuid: Option<Text<'a>>,
    #[serde(default)]
    pub(crate) created_at: Option<When>,

    // Tracker.
    #[serde(default, borrow)]
    pub(crate) carrier: Option<Carrier<'a>>,
    #[serde(default, borrow)]
    pub(crate) carrier_code: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) carrier_service: Option<Carrier<'a>>,
    #[serde(default, borrow)]
    pub(crate) carrier_tracking_url: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) tracking_number: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) delivery_status_code: Option<Text<'a>>,
    #[serde(default)]
    pub(crate) shipped_at: Option<When>,
    #[serde(default)]
    pub(crate) delivered_at: Option<When>,
    #[serde(default)]
    pub(crate) first_delivery_attempted_at: Option<When>,
    #[serde(default, borrow)]
    pub(crate) displayable_expected_delivery_date: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) displayable_expected_delivery_datetime: Option<TimeValue<'a>>,
    #[serde(default, borrow)]
    pub(crate) fulfillment: Option<Fulfillment<'a>>,
    #[serde(default, borrow)]
    pub(crate) events: Option<Vec<Event<'a>>>,

    // Fulfillment or order (a notification's source).
    #[serde(default, borrow)]
    pub(crate) fulfillment_number: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) order_number: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) merchant_id: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) order: Option<Order<'a>>,

    // Notification or feedback: the tracker, fulfillment or order it is about.
    #[serde(default, borrow)]
    pub(crate) source: Option<Box<Object<'a>>>,
}

/// `carrier` and `carrier_service`: `{code, name}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Carrier<'a> {
    #[serde(default, borrow)]
    pub(crate) code: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) name: Option<Text<'a>>,
}

/// `tracker.fulfillment`.
#[derive(Debug, Deserialize)]
pub(crate) struct Fulfillment<'a> {
    #[serde(default, borrow)]
    pub(crate) id: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) merchant_id: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) fulfillment_number: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) order: Option<Order<'a>>,
}

/// `fulfillment.order`.
#[derive(Debug, Deserialize)]
pub(crate) struct Order<'a> {
    #[serde(default, borrow)]
    pub(crate) id: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) order_number: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) merchant_id: Option<Text<'a>>,
}

/// One tracker event, old shape (`standard_event{slug}`, unix times, `created_at`) or newer
/// API-resource shape (`standard_event_slug`, ISO `happened_at`, `messages`).
#[derive(Debug, Deserialize)]
pub(crate) struct Event<'a> {
    #[serde(default, borrow)]
    pub(crate) id: Option<Text<'a>>,
    #[serde(default, alias = "occurred_at")]
    pub(crate) happened_at: Option<When>,
    #[serde(default, borrow)]
    pub(crate) event_type_code: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) standard_event_slug: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) standard_event: Option<StandardEvent<'a>>,
    #[serde(default, borrow)]
    pub(crate) message: Option<Text<'a>>,
    /// Messages by language code.
    #[serde(default, borrow)]
    pub(crate) messages: Option<BTreeMap<String, Option<Text<'a>>>>,
    #[serde(default, borrow)]
    pub(crate) address: Option<Address<'a>>,
    #[serde(default)]
    pub(crate) created_at: Option<When>,
    #[serde(default)]
    pub(crate) updated_at: Option<When>,
}

/// `event.standard_event`: `{name, slug}`.
#[derive(Debug, Deserialize)]
pub(crate) struct StandardEvent<'a> {
    #[serde(default, borrow)]
    pub(crate) slug: Option<Text<'a>>,
}

/// An address; only the parts that locate an event are read (no names, no streets).
#[derive(Debug, Deserialize)]
pub(crate) struct Address<'a> {
    #[serde(default, borrow)]
    pub(crate) city: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) zip: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) country_code: Option<Text<'a>>,
}

/// Fields Shipup documents (and sends in its published samples) that the adapter does not
/// read: not contract drift. Paths as [`shipfeed_core::drift::Drift::documented`] reads them.
pub(crate) const DOCUMENTED: &[&str] = &[
    "data.object.category",
    "data.object.custom_variables",
    "data.object.displayable_expected_delivery_kind",
    "data.object.events[].address",
    "data.object.events[].object",
    "data.object.events[].raw",
    "data.object.events[].standard_event.name",
    "data.object.free_text",
    "data.object.fulfillment.custom_variables",
    "data.object.fulfillment.object",
    "data.object.fulfillment.order.custom_variables",
    "data.object.fulfillment.order.email",
    "data.object.fulfillment.order.object",
    "data.object.fulfillment.order.ordered_at",
    "data.object.fulfillment.order.phone",
    "data.object.fulfillment.order.uuid",
    "data.object.fulfillment.shipping_address",
    "data.object.language_code",
    "data.object.name",
    "data.object.pickup_point",
    "data.object.properties",
    "data.object.satisfied",
    "data.object.scenario",
    "data.object.score",
    "data.object.slug",
    "data.object.source.custom_variables",
    "data.object.source.displayable_expected_delivery_kind",
    "data.object.source.fulfillment.custom_variables",
    "data.object.source.fulfillment.object",
    "data.object.source.fulfillment.order.custom_variables",
    "data.object.source.fulfillment.order.email",
    "data.object.source.fulfillment.order.object",
    "data.object.source.fulfillment.order.ordered_at",
    "data.object.source.fulfillment.order.phone",
    "data.object.source.fulfillment.order.uuid",
    "data.object.source.fulfillment.shipping_address",
    "data.object.sub_scenario",
    "data.object.support_notified",
    "data.object.updated_at",
    "data.reason.kind",
    "livemode",
    "object",
    "retry_count",
    "webhook_setting_id",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_text_whether_numbers_or_strings() {
        let env: Envelope<'_> =
            shipfeed_core::json::decode(br#"{"id": 3124444, "type": "tracker.new"}"#).unwrap();
        assert_eq!(text(&env.id), Some("3124444"));
        assert_eq!(text(&env.kind), Some("tracker.new"));
    }

    #[test]
    fn when_accepts_numbers_numeric_strings_and_iso_text() {
        let at = |json: &str| {
            serde_json::from_str::<When>(json)
                .map(|w| (w.0.at.to_rfc3339(), w.0.zone_known))
                .map_err(|e| e.to_string())
        };
        let expected = Ok(("2018-06-28T19:16:55+00:00".to_owned(), true));
        assert_eq!(at("1530213415"), expected);
        assert_eq!(at("1530213415.0"), expected);
        assert_eq!(at(r#""1530213415""#), expected);
        assert_eq!(at(r#""2018-06-28T21:16:55+02:00""#), expected);
        assert_eq!(
            at(r#""2018-06-28T19:16:55""#),
            Ok(("2018-06-28T19:16:55+00:00".to_owned(), false))
        );
        assert!(at(r#""yesterday""#)
            .unwrap_err()
            .contains("neither unix seconds"));
        assert!(at("true").is_err());
        assert!(at("1e300").is_err());
    }

    #[test]
    fn bad_times_are_reported_with_their_path() {
        let body = br#"{"type": "tracker.events.new", "data": {"object": {"events": [
            {"id": 1, "happened_at": 1530213415}, {"id": 2, "happened_at": "soon"}]}}}"#;
        let err = shipfeed_core::json::decode::<Envelope<'_>>(body).unwrap_err();
        assert_eq!(err.path(), Some("data.object.events[1].happened_at"));
    }
}
