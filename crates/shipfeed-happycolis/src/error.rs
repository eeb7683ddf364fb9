//! The adapter's own failures, converted into the core [`Error`] tagged with the provider.

use shipfeed_core::{Error, ErrorKind, Provider};

#[derive(Debug, thiserror::Error)]
pub(crate) enum HappyColisError {
    #[error("a header-token credential needs a header name")]
    NoTokenHeader,
    #[error("`{kind}` carries a shipment, but the body is missing or null")]
    MissingShipment { kind: String },
    #[error(
        "the event has no usable time: `date` is missing or not a date, and so is `eventDate`"
    )]
    NoEventTime { index: usize },
}

impl HappyColisError {
    fn kind(&self) -> ErrorKind {
        match self {
            HappyColisError::NoTokenHeader => ErrorKind::Config,
            HappyColisError::MissingShipment { .. } | HappyColisError::NoEventTime { .. } => {
                ErrorKind::Payload
            }
        }
    }

    fn path(&self) -> Option<String> {
        match self {
            HappyColisError::MissingShipment { .. } => Some("body".to_owned()),
            HappyColisError::NoEventTime { index } => Some(format!("body.events[{index}].date")),
            _ => None,
        }
    }
}

impl From<HappyColisError> for Error {
    fn from(error: HappyColisError) -> Self {
        let mut converted =
            Error::new(error.kind(), error.to_string()).with_provider(Provider::HappyColis);
        if let Some(path) = error.path() {
            converted = converted.with_path(path);
        }
        converted
    }
}

/// Tags an error from a core helper (JSON decoding, signature check) with the provider.
pub(crate) fn tagged(error: Error) -> Error {
    error.with_provider(Provider::HappyColis)
}
