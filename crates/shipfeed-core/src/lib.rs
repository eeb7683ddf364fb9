//! The canonical shipment-tracking model of shipfeed and the contract every provider adapter
//! implements. No I/O, no async runtime, no clock: adapters are pure functions of the bytes
//! they are given.
//!
//! - [`TrackingEvent`], [`Status`] (13 values), [`Notice`], wrapped in [`Output`]: what
//!   adapters produce.
//! - [`Adapter`], [`RawDelivery`], [`Credentials`]: the contract.
//! - [`current_state`]: the ordering rule (latest `occurred_at` wins, arrival order never
//!   matters).
//! - [`auth`], [`time`], [`carrier`], [`json`]: helpers written once for every adapter.
//! - [`drift`]: what an adapter met in a delivery and does not know (contract drift).
//! - [`identity`]: which events are one shipment (keys, tracking numbers, carrier groups) and
//!   which are one physical scan.
//! - [`Error`]: the one public error, with a [`ErrorKind`] and a permanent/temporary class.
//!
//! ```
//! use shipfeed_core::{auth, Headers, Secret};
//!
//! let body = br#"{"key": "value"}"#;
//! let headers: Headers = [("Sendcloud-Signature", auth::sign_hex(&Secret::new("s3cret"), body))]
//!     .into_iter()
//!     .collect();
//! auth::verify_hex_hmac(&headers, "sendcloud-signature", &Secret::new("s3cret"), body).unwrap();
//! ```
#![forbid(unsafe_code)]

mod adapter;
pub mod auth;
pub mod carrier;
pub mod drift;
mod error;
mod event;
pub mod identity;
pub mod json;
mod output;
mod provider;
mod state;
pub mod time;

pub use adapter::{Adapter, CredentialKind, Credentials, Headers, RawDelivery, Secret};
pub use error::{error_chain, Error, ErrorClass, ErrorKind};
pub use event::{
    EstimatedDelivery, EventId, Location, Mapping, RawStatus, ShipmentRef, Status, TrackingEvent,
    UNMAPPED,
};
pub use output::{Notice, NoticeKind, Output};
pub use provider::Provider;
pub use state::{current_state, latest_event, sort_timeline, ShipmentState};

/// The JSON Schema of one canonical output line (an [`Output`]), pretty-printed.
///
/// The committed copy lives in `schema/output.schema.json`; `cargo xtask fixtures` keeps it fresh.
pub fn output_schema() -> String {
    json_schema::<Output>()
}

/// The JSON Schema of `T`, pretty-printed with a final newline: the form of the files in
/// `schema/` (the service's feed item is `json_schema::<shipfeed_store::FeedItem>()`).
pub fn json_schema<T: schemars::JsonSchema>() -> String {
    let schema = schemars::schema_for!(T);
    let mut text = serde_json::to_string_pretty(&schema)
        .unwrap_or_else(|e| unreachable!("a schema always serializes: {e}"));
    text.push('\n');
    text
}

/// Small constructors for examples and tests. Not part of the stable API.
#[doc(hidden)]
pub mod doc_support {
    use crate::{EventId, Provider, RawStatus, ShipmentRef, Status, TrackingEvent};

    /// A minimal event with the given id, RFC 3339 time and status.
    pub fn event(id: &str, occurred_at: &str, status: Status) -> TrackingEvent {
        let at = chrono::DateTime::parse_from_rfc3339(occurred_at)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_default();
        TrackingEvent {
            event_id: EventId(id.to_owned()),
            provider: Provider::Sendcloud,
            status: Some(status),
            substatus: None,
            raw: RawStatus::default(),
            occurred_at: at,
            time_zone_known: true,
            recorded_at: None,
            received_at: at,
            shipment: ShipmentRef::default(),
            location: None,
            estimated_delivery: None,
            message: None,
            delivery_id: None,
            trigger: true,
        }
    }
}
