//! Private, detailed errors of the Seven Senders adapter, converted into the core [`Error`].

use shipfeed_core::{Error, ErrorKind, Provider};

/// Why a message body cannot be normalized.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PayloadError {
    /// The body is JSON but not an object (an array, a string, a number).
    #[error("the message body is not a JSON object")]
    NotAnObject,
    /// Neither `id` nor `tracking_code` says which shipment the message is about.
    #[error("the message names no shipment: neither `id` nor `tracking_code` is set")]
    NoShipment,
    /// A time field holds text that is not a date and time.
    #[error("`{value}` is not a date and time (expected dd.MM.yyyy HH:mm:ss or ISO 8601)")]
    BadTime {
        /// JSON path of the field.
        path: String,
        /// The text found there.
        value: String,
    },
    /// A non-blank status without a `status_time`.
    #[error("status `{status}` comes without a `status_time`")]
    StatusWithoutTime {
        /// The status text.
        status: String,
    },
    /// An event or ticket without a time, in a message without `status_time`.
    #[error("the entry has no creation time and the message has no `status_time` to fall back on")]
    EntryWithoutTime {
        /// JSON path of the entry.
        path: String,
    },
    /// Nothing to emit: no status time and no events or tickets.
    #[error("the message carries no `status_time` and no events or tickets")]
    Empty,
}

impl PayloadError {
    fn path(&self) -> &str {
        match self {
            PayloadError::NotAnObject | PayloadError::Empty => "",
            PayloadError::NoShipment => "id",
            PayloadError::StatusWithoutTime { .. } => "status_time",
            PayloadError::BadTime { path, .. } | PayloadError::EntryWithoutTime { path } => path,
        }
    }
}

impl From<PayloadError> for Error {
    fn from(error: PayloadError) -> Self {
        let path = error.path().to_owned();
        Error::new(ErrorKind::Payload, error.to_string())
            .with_provider(Provider::SevenSenders)
            .with_path(path)
    }
}
