//! The adapter never panics, whatever the bytes: arbitrary input, and documented bodies with
//! arbitrary values in every field.

use proptest::prelude::*;
use shipfeed_core::{Adapter, Credentials, RawDelivery};
use shipfeed_sevensenders::SevenSendersAdapter;

fn delivery(body: Vec<u8>) -> RawDelivery {
    RawDelivery::new(body, chrono::DateTime::<chrono::Utc>::default())
}

/// A JSON value of any shape, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(
            |f| serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)
        ),
        "\\PC{0,24}".prop_map(serde_json::Value::from),
        "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,4} [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}"
            .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: &[&str] = &[
    "id",
    "order_id",
    "tracking_code",
    "carrier",
    "carrier_country",
    "status",
    "status_time",
    "tickets",
    "events",
];

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = SevenSendersAdapter::default().construct(&delivery(body), &Credentials::None);
    }

    #[test]
    fn arbitrary_field_values_never_panic(
        values in prop::collection::vec(json_value(), FIELDS.len()),
        keep in prop::collection::vec(any::<bool>(), FIELDS.len()),
    ) {
        let object: serde_json::Map<String, serde_json::Value> = FIELDS
            .iter()
            .zip(values)
            .zip(keep)
            .filter(|(_, keep)| *keep)
            .map(|((name, value), _)| ((*name).to_owned(), value))
            .collect();
        let body = serde_json::to_vec(&object).unwrap_or_default();
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap_or(chrono_tz::UTC);
        let _ = SevenSendersAdapter::new(berlin).construct(&delivery(body), &Credentials::None);
    }
}
