//! Test support shared by the adapter crates' snapshot tests and by `cargo xtask fixtures`.
//!
//! A fixture is a body file (`name.json`, the exact bytes of a delivery) with an optional
//! sidecar `name.json.headers` holding `Name: value` lines (the signature header among them).
#![forbid(unsafe_code)]

pub mod corpus;
#[cfg(feature = "jwt")]
pub mod jwt;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "schema")]
pub mod schema;
#[cfg(feature = "webhook-receiver")]
pub mod webhook_receiver;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shipfeed_core::{Adapter, Credentials, Error, Headers, RawDelivery};

/// The secret every generated fixture is signed with. Not a secret: it is in the repository.
pub const FIXTURE_SECRET: &str = "shipfeed-fixtures-not-a-secret";

/// The `received_at` injected into every fixture delivery, so snapshots are deterministic.
pub fn received_at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_717_243_200, 0).unwrap_or_default() // 2024-06-01T12:00:00Z
}

/// The sidecar header file of a body file.
pub fn headers_path(body: &Path) -> PathBuf {
    let mut name = body.as_os_str().to_owned();
    name.push(".headers");
    PathBuf::from(name)
}

/// The workspace's `fixtures/` directory.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Reads a fixture: the body, its sidecar headers when present, and the fixed `received_at`.
///
/// # Panics
/// When the body file cannot be read (a test setup error).
pub fn load(body: &Path) -> (RawDelivery, bool) {
    let bytes = std::fs::read(body).unwrap_or_else(|e| panic!("read {}: {e}", body.display()));
    let headers = std::fs::read_to_string(headers_path(body)).ok();
    let signed = headers.is_some();
    let delivery = RawDelivery {
        body: bytes,
        headers: headers
            .as_deref()
            .map(Headers::parse_lines)
            .unwrap_or_default(),
        received_at: received_at(),
    };
    (delivery, signed)
}

/// Every field path `adapter` notes as unknown ([`Adapter::parse_noting`]) in the valid
/// fixtures (`captured/` and `generated/`) of `provider_dir` (`"sendcloud"`), sorted: what a
/// provider's documented paths leave as contract drift.
///
/// # Panics
/// When a fixture directory cannot be read (a test setup error).
pub fn unknown_fields(adapter: &dyn Adapter, provider_dir: &str) -> Vec<String> {
    let mut paths = std::collections::BTreeSet::new();
    for kind in ["captured", "generated"] {
        let dir = fixtures_dir().join(provider_dir).join(kind);
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let (delivery, _) = load(&path);
            let (_, drift) = shipfeed_core::drift::observe(adapter, &delivery);
            paths.extend(
                drift
                    .observations()
                    .iter()
                    .filter(|o| o.kind == shipfeed_core::drift::DriftKind::UnknownField)
                    .map(|o| o.key.clone()),
            );
        }
    }
    paths.into_iter().collect()
}

/// The JSON form of an error in snapshots: kind, provider, path and message.
pub fn error_value(error: &Error) -> Value {
    json!({ "error": {
        "kind": format!("{:?}", error.kind()),
        "provider": error.provider().map(|p| p.as_str()),
        "path": error.path(),
        "message": error.message(),
    }})
}

/// What a fixture normalizes to: the canonical outputs as JSON, or the error.
///
/// A fixture with a sidecar header file goes through [`Adapter::construct`] with
/// `credentials` (so signatures are checked); one without goes through [`Adapter::parse`].
pub fn snapshot_value(adapter: &dyn Adapter, credentials: &Credentials, body: &Path) -> Value {
    let (delivery, signed) = load(body);
    let result = if signed {
        adapter.construct(&delivery, credentials)
    } else {
        adapter.parse(&delivery)
    };
    match result {
        Ok(outputs) => {
            serde_json::to_value(outputs).unwrap_or_else(|e| json!({ "serialize": e.to_string() }))
        }
        Err(error) => error_value(&error),
    }
}
