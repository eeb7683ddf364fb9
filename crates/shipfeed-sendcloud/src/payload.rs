//! Sendcloud wire types (private). Every field is optional and unknown fields are ignored:
//! Sendcloud adds fields over time, and a missing field must surface as a clear error in the
//! adapter, not as a decoding failure here.

use std::borrow::Cow;

use serde::Deserialize;
use shipfeed_core::json::{Text, TimeValue};

/// Top level of every Sendcloud delivery: the legacy integration webhooks (`action`) and the
/// v3 Event Subscriptions (`event_type`).
#[derive(Deserialize)]
pub(crate) struct Envelope<'a> {
    #[serde(borrow)]
    pub(crate) action: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) timestamp: Option<TimeValue<'a>>,
    #[serde(borrow)]
    pub(crate) carrier_status_change_timestamp: Option<TimeValue<'a>>,
    #[serde(borrow)]
    pub(crate) parcel: Option<Parcel<'a>>,
    #[serde(borrow)]
    pub(crate) integration: Option<Integration<'a>>,
    #[serde(borrow)]
    pub(crate) data: Option<Data<'a>>,
    #[serde(borrow)]
    pub(crate) event_type: Option<Text<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct Parcel<'a> {
    #[serde(borrow)]
    pub(crate) id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) tracking_number: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) status: Option<ParcelStatus<'a>>,
    #[serde(borrow)]
    pub(crate) carrier: Option<Carrier<'a>>,
    #[serde(borrow)]
    pub(crate) order_number: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) shipment_uuid: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) external_order_id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) external_shipment_id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) colli_uuid: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) reference: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) tracking_url: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) shipment: Option<ShippingMethod<'a>>,
    pub(crate) is_return: Option<serde_json::Value>,
}

#[derive(Deserialize)]
pub(crate) struct ParcelStatus<'a> {
    /// Numeric in every published sample; read leniently.
    #[serde(borrow)]
    pub(crate) id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) code: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) message: Option<Text<'a>>,
}

/// `carrier` is an object `{code, name}` in parcel payloads; a bare code is tolerated.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Carrier<'a> {
    Code(#[serde(borrow)] Cow<'a, str>),
    Object {
        #[serde(borrow)]
        code: Option<Text<'a>>,
        #[serde(borrow)]
        name: Option<Text<'a>>,
    },
}

#[derive(Deserialize)]
pub(crate) struct ShippingMethod<'a> {
    #[serde(borrow)]
    pub(crate) name: Option<Text<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct Integration<'a> {
    #[serde(borrow)]
    pub(crate) id: Option<Text<'a>>,
}

/// `data` of `return_created` (the return) and of Event Subscriptions (`parcel` + `event`).
#[derive(Deserialize)]
pub(crate) struct Data<'a> {
    #[serde(borrow)]
    pub(crate) id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) order_number: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) parcel: Option<SubscriptionParcel<'a>>,
    #[serde(borrow)]
    pub(crate) event: Option<SubscriptionEvent<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct SubscriptionParcel<'a> {
    #[serde(borrow)]
    pub(crate) parcel_id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) tracking_number: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) carrier_code: Option<Text<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct SubscriptionEvent<'a> {
    #[serde(borrow)]
    pub(crate) timestamp: Option<TimeValue<'a>>,
    #[serde(borrow)]
    pub(crate) phase: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) exception: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) sub_status: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) description: Option<Text<'a>>,
    pub(crate) is_returned: Option<bool>,
    #[serde(borrow)]
    pub(crate) location_details: Option<LocationDetails<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct LocationDetails<'a> {
    #[serde(borrow)]
    pub(crate) city: Option<Text<'a>>,
    #[serde(borrow, alias = "zip", alias = "postcode")]
    pub(crate) postal_code: Option<Text<'a>>,
    #[serde(borrow, alias = "country")]
    pub(crate) country_code: Option<Text<'a>>,
}
