//! The one public error type of shipfeed.

use std::fmt;

use crate::Provider;

/// What went wrong, coarsely: enough for a transport to pick its answer (the service maps it
/// in one place per transport: `shipfeed_server::http_status`, and the SQS source's
/// disposition).
///
/// | kind | HTTP answer | SQS disposition |
/// |---|---|---|
/// | [`MissingSignature`](ErrorKind::MissingSignature), [`InvalidSignature`](ErrorKind::InvalidSignature), [`MissingSecret`](ErrorKind::MissingSecret) | 401, nothing stored | not applicable |
/// | [`Payload`](ErrorKind::Payload) | 2xx + dead letter | dead letter, then delete |
/// | [`Config`](ErrorKind::Config), [`ProviderDisabled`](ErrorKind::ProviderDisabled) | startup failure, or 500 and nothing stored for an endpoint that cannot check deliveries | leave on the queue (the source stops when the queue itself is misconfigured) |
/// | [`Unavailable`](ErrorKind::Unavailable) | 503 | leave for redelivery |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request carries no signature or credentials where the endpoint requires them.
    MissingSignature,
    /// The signature or credentials do not match: the request is not authentic.
    InvalidSignature,
    /// The endpoint has no secret configured; shipfeed fails closed instead of accepting.
    MissingSecret,
    /// The delivery is authentic (or needs no authentication) but cannot be understood.
    Payload,
    /// Invalid configuration or arguments.
    Config,
    /// The provider's adapter was switched off at build time.
    ProviderDisabled,
    /// A dependency (store, queue, network) is unavailable; trying again later may succeed.
    Unavailable,
}

impl ErrorKind {
    /// Whether the error means "this request is not authentic" (or cannot be checked).
    pub const fn is_authentication(self) -> bool {
        matches!(
            self,
            ErrorKind::MissingSignature | ErrorKind::InvalidSignature | ErrorKind::MissingSecret
        )
    }

    /// Whether retrying the same input can succeed without a code or config change.
    pub const fn class(self) -> ErrorClass {
        match self {
            ErrorKind::Unavailable => ErrorClass::Temporary,
            _ => ErrorClass::Permanent,
        }
    }

    const fn describe(self) -> &'static str {
        match self {
            ErrorKind::MissingSignature => "missing signature",
            ErrorKind::InvalidSignature => "invalid signature",
            ErrorKind::MissingSecret => "no secret configured",
            ErrorKind::Payload => "payload not understood",
            ErrorKind::Config => "configuration error",
            ErrorKind::ProviderDisabled => "provider disabled",
            ErrorKind::Unavailable => "temporarily unavailable",
        }
    }
}

/// Whether an error is worth retrying as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The same input fails the same way until code or configuration changes.
    Permanent,
    /// A later attempt may succeed (store down, network blip).
    Temporary,
}

/// The error returned by every fallible shipfeed function.
///
/// Carries a [`kind`](Error::kind), the provider it concerns, a human message, and for payload
/// errors the JSON path where parsing failed.
///
/// ```
/// use shipfeed_core::{Error, ErrorKind, ErrorClass, Provider};
///
/// let err = Error::new(ErrorKind::Payload, "missing field `parcel`")
///     .with_provider(Provider::Sendcloud)
///     .with_path("parcel");
/// assert_eq!(err.class(), ErrorClass::Permanent);
/// assert_eq!(err.to_string(), "sendcloud: payload not understood at `parcel`: missing field `parcel`");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Error {
    kind: ErrorKind,
    provider: Option<Provider>,
    message: String,
    path: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            provider: None,
            message: message.into(),
            path: None,
            source: None,
        }
    }

    /// Shorthand for a [`ErrorKind::Payload`] error.
    pub fn payload(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Payload, message)
    }

    /// The error for a provider that this build does not include.
    pub fn provider_disabled(provider: Provider) -> Self {
        Error::new(
            ErrorKind::ProviderDisabled,
            format!(
                "provider `{provider}` is not enabled in this build (cargo feature `{provider}`)"
            ),
        )
        .with_provider(provider)
    }

    /// Tags the error with the provider it concerns.
    #[must_use]
    pub fn with_provider(mut self, provider: Provider) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Records where in the payload the problem is (a JSON path such as `parcel.status.id`).
    #[must_use]
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.path = (!path.is_empty() && path != ".").then_some(path);
        self
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The coarse kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Permanent or temporary.
    pub fn class(&self) -> ErrorClass {
        self.kind.class()
    }

    /// The provider the error concerns, when known.
    pub fn provider(&self) -> Option<Provider> {
        self.provider
    }

    /// The JSON path of a payload error, when known.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The message without kind, provider or path.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(provider) = self.provider {
            write!(f, "{provider}: ")?;
        }
        f.write_str(self.kind.describe())?;
        if let Some(path) = &self.path {
            write!(f, " at `{path}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// `error` and its sources, joined by `: `: one line for a log, whatever the depth of the
/// chain.
///
/// ```
/// use shipfeed_core::{error_chain, Error, ErrorKind};
///
/// let io = std::io::Error::other("connection reset");
/// let error = Error::new(ErrorKind::Unavailable, "store write failed").with_source(io);
/// assert_eq!(
///     error_chain(&error),
///     "temporarily unavailable: store write failed: connection reset"
/// );
/// ```
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_kinds_are_permanent_and_flagged() {
        for kind in [
            ErrorKind::MissingSignature,
            ErrorKind::InvalidSignature,
            ErrorKind::MissingSecret,
        ] {
            assert!(kind.is_authentication());
            assert_eq!(kind.class(), ErrorClass::Permanent);
        }
        assert!(!ErrorKind::Payload.is_authentication());
        assert_eq!(ErrorKind::Unavailable.class(), ErrorClass::Temporary);
    }

    #[test]
    fn disabled_provider_message_names_the_feature() {
        let err = Error::provider_disabled(Provider::Shipup);
        assert_eq!(err.kind(), ErrorKind::ProviderDisabled);
        assert_eq!(
            err.to_string(),
            "shipup: provider disabled: provider `shipup` is not enabled in this build (cargo feature `shipup`)"
        );
    }
}
