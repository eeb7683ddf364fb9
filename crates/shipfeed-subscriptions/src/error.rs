//! The crate's error: a subscription that is misconfigured or whose target cannot be set up.

/// A boxed error from a dependency whose own type is not part of this API (NATS, I/O).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why subscriptions could not be planned or started. Failures while running (a target that
/// is down, a store hiccup, a lost lease) are not errors of the API: the runner logs and
/// counts them and retries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid (what and where is in the message).
    #[error("{0}")]
    Config(String),
    /// A subscription's target cannot be reached or set up (NATS unreachable, its stream
    /// cannot be created, a RabbitMQ broker refusing the credentials or the exchange).
    #[error("subscription `{name}`: {context}")]
    Target {
        /// The subscription.
        name: String,
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
}
