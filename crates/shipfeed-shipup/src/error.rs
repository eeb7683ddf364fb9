//! Payload problems found after decoding, converted into the core error with their JSON path.

use shipfeed_core::{Error, Provider};

/// What can be wrong with a body that decoded as JSON.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShipupError {
    /// No `type`, and not the endpoint probe either.
    #[error(
        "missing field `type` (only the endpoint probe `{{\"livemode\": \"false\"}}` may omit it)"
    )]
    NoType,
    /// A `tracker.*` delivery without its tracker.
    #[error("a `{kind}` delivery carries its tracker in `data.object`, and this one has none")]
    NoTracker {
        /// The webhook type.
        kind: String,
    },
    /// An event with no time at all.
    #[error("event has neither `happened_at` nor `created_at`, so it cannot be placed in time")]
    UntimedEvent {
        /// Index in `data.object.events`.
        index: usize,
    },
}

impl ShipupError {
    fn path(&self) -> String {
        match self {
            ShipupError::NoType => "type".to_owned(),
            ShipupError::NoTracker { .. } => "data.object".to_owned(),
            ShipupError::UntimedEvent { index } => {
                format!("data.object.events[{index}].happened_at")
            }
        }
    }
}

impl From<ShipupError> for Error {
    fn from(error: ShipupError) -> Self {
        Error::payload(error.to_string())
            .with_path(error.path())
            .with_provider(Provider::Shipup)
    }
}
