//! The error of the service's public API (configuration, startup, subscriptions).

use std::path::PathBuf;

/// A boxed error from a dependency whose own type is not part of this API (NATS, a parser).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the service could not be configured or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A file (the configuration, a secret) could not be read.
    #[error("read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not a valid shipfeed configuration.
    #[error("parse {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// An environment override or a setting has a value that does not parse.
    #[error("{setting}={value}")]
    Setting {
        /// The variable or key.
        setting: String,
        /// Its value.
        value: String,
        /// Why it does not parse.
        #[source]
        source: BoxError,
    },
    /// The configuration is inconsistent (a name used twice, a source without a queue).
    #[error("{0}")]
    Config(String),
    /// An endpoint or SQS source cannot be built (its provider is not in this build, say).
    #[error("endpoint `{name}`")]
    Endpoint {
        /// The endpoint or source name.
        name: String,
        /// The adapter's error.
        #[source]
        source: shipfeed::Error,
    },
    /// An SQS source cannot be connected (queue missing, credentials rejected, unreachable).
    #[error("sqs_source `{name}`")]
    SqsSource {
        /// The source name.
        name: String,
        /// The source's error (its kind says whether it is configuration or availability).
        #[source]
        source: shipfeed::Error,
    },
    /// The subscriptions are misconfigured, or a subscription's target cannot be reached or
    /// set up.
    #[error(transparent)]
    Subscription(#[from] shipfeed_subscriptions::Error),
}
