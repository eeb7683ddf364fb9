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
pub(crate) enum Carrier<'a> {
    Code(Cow<'a, str>),
    Object {
        code: Option<Text<'a>>,
        name: Option<Text<'a>>,
    },
}

/// Read in one pass (string or object), not as an untagged enum: serde buffers an untagged
/// enum's input and builds an error for each variant that does not match, which cost about a
/// tenth of normalizing a parcel delivery.
impl<'de: 'a, 'a> Deserialize<'de> for Carrier<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CarrierVisitor;
        impl<'de> serde::de::Visitor<'de> for CarrierVisitor {
            type Value = Carrier<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a carrier code or an object {code, name}")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Carrier::Code(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Carrier::Code(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Carrier::Code(Cow::Owned(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let (mut code, mut name) = (None, None);
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "code" if code.is_none() => code = Some(map.next_value()?),
                        "name" if name.is_none() => name = Some(map.next_value()?),
                        "code" | "name" => {
                            return Err(serde::de::Error::custom(format!(
                                "duplicate field `{key}`"
                            )))
                        }
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(Carrier::Object {
                    code: code.flatten(),
                    name: name.flatten(),
                })
            }
        }
        deserializer.deserialize_any(CarrierVisitor)
    }
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

/// Fields Sendcloud documents (and sends in its published samples) that the adapter does not
/// read: not contract drift. Paths as [`shipfeed_core::drift::Drift::documented`] reads them.
pub(crate) const DOCUMENTED: &[&str] = &[
    "data.brand_id",
    "data.delivery_choice",
    "data.event.end_of_tracking",
    "data.event.event_type",
    "data.event.extra_data",
    "data.event.is_carrier_responsible",
    "data.event.is_offered",
    "data.event.status_type",
    "data.items",
    "data.paid_return",
    "data.parcel.announced_at",
    "data.refund_type",
    "data.return_address_id",
    "data.return_reason_id",
    "integration.failing_since",
    "integration.last_fetch",
    "integration.last_updated_at",
    "integration.service_point_carriers",
    "integration.service_point_enabled",
    "integration.shop_name",
    "integration.shop_url",
    "integration.system",
    "integration.webhook_active",
    "integration.webhook_url",
    "parcel.address",
    "parcel.address_divided",
    "parcel.carrier.servicepoints_carrier_code",
    "parcel.city",
    "parcel.collo_count",
    "parcel.collo_nr",
    "parcel.company_name",
    "parcel.country",
    "parcel.customs_declaration",
    "parcel.data",
    "parcel.date_announced",
    "parcel.date_created",
    "parcel.date_updated",
    "parcel.email",
    "parcel.label",
    "parcel.name",
    "parcel.postal_code",
    "parcel.shipment.id",
    "parcel.source",
    "parcel.telephone",
    "parcel.to_service_point",
    "parcel.weight",
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<Carrier<'_>, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn carrier_is_a_code_or_an_object() {
        assert!(matches!(read(r#""postnl""#).unwrap(), Carrier::Code(c) if c == "postnl"));
        assert!(matches!(read(r#""post\u006el""#).unwrap(), Carrier::Code(c) if c == "postnl"));
        let Carrier::Object { code, name } = read(
            r#"{"code": "dhl_de", "name": "DHL", "servicepoints_carrier_code": "dhl", "x": [1]}"#,
        )
        .unwrap() else {
            panic!("not an object");
        };
        assert_eq!(code.unwrap().non_blank(), Some("dhl_de"));
        assert_eq!(name.unwrap().non_blank(), Some("DHL"));
        let Carrier::Object { code, name } = read(r#"{"code": null}"#).unwrap() else {
            panic!("not an object");
        };
        assert!(code.is_none() && name.is_none());
        assert!(read(r#"{"code": "a", "code": "b"}"#).is_err());
        assert!(read("42").is_err());
    }
}
