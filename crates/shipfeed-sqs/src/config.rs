//! Where the queue is, how to authenticate, and how to poll it.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_sqs::config::{Credentials as AwsCredentials, Region};
use shipfeed_core::{Credentials, Error, ErrorKind, Secret};

/// The region Seven Senders documents for its queue, used when nothing else names one.
pub const DEFAULT_REGION: &str = "eu-central-1";

/// SQS caps long polling at 20 seconds.
pub const MAX_WAIT_TIME_SECONDS: u8 = 20;

/// SQS returns at most 10 messages per receive.
pub const MAX_BATCH: u8 = 10;

/// Which queue to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueRef {
    /// A full queue URL (Seven Senders: `https://analytics-api.7senders.com/queue.xml`).
    Url(String),
    /// A queue name, resolved to its URL with `GetQueueUrl` when connecting.
    Name(String),
}

/// How the source authenticates to the queue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SqsCredentials {
    /// A Seven Senders API key: sent as the access key id, with an **empty** secret, as the
    /// official samples do.
    ApiKey(Secret),
    /// Explicit AWS credentials. The secret may be empty.
    Static {
        /// Access key id.
        access_key_id: String,
        /// Secret access key (may be empty).
        secret_access_key: Secret,
        /// Session token, for temporary credentials.
        session_token: Option<Secret>,
    },
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (which may be empty or unset, unlike in
    /// the AWS SDK's own environment provider) and `AWS_SESSION_TOKEN`. The default.
    #[default]
    Environment,
    /// The AWS SDK's full default chain (environment, profile, web identity, ECS, instance
    /// metadata). For queues on AWS itself; it may contact the instance-metadata endpoint.
    DefaultChain,
}

/// What to do with a message the adapter cannot understand ([`ErrorKind::Payload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeadLetterPolicy {
    /// Hand it to the inbox as a dead letter, then delete it once the inbox accepted it.
    #[default]
    InboxThenDelete,
    /// Leave it on the queue, so that the queue's redrive policy moves it to a dead-letter
    /// queue after `maxReceiveCount` receives.
    LeaveForRedrive,
}

/// Everything [`SqsSource::connect`](crate::SqsSource::connect) needs.
///
/// ```
/// use shipfeed_sqs::{QueueRef, SqsConfig, SqsCredentials};
/// use std::time::Duration;
///
/// let config = SqsConfig::new(QueueRef::Url("https://analytics-api.7senders.com/queue.xml".into()))
///     .with_credentials(SqsCredentials::ApiKey("my-7s-api-key".into()))
///     .with_pollers(2)
///     .with_visibility_timeout(Duration::from_secs(60));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqsConfig {
    /// The queue.
    pub queue: QueueRef,
    /// An endpoint instead of the region's AWS endpoint (Seven Senders' proxy, a test server).
    pub endpoint_url: Option<String>,
    /// The region; `None` reads `AWS_REGION`, then `AWS_DEFAULT_REGION`, then [`DEFAULT_REGION`].
    pub region: Option<String>,
    /// Queue credentials.
    pub credentials: SqsCredentials,
    /// Long-polling wait, 0..=20 seconds (default 20).
    pub wait_time_seconds: u8,
    /// Messages per receive, 1..=10 (default 10).
    pub batch_size: u8,
    /// Concurrent pollers (default 1).
    pub pollers: usize,
    /// How long a received message stays invisible to other consumers; `None` keeps the
    /// queue's own setting. A message whose batch the inbox did not accept comes back after it.
    pub visibility_timeout: Option<Duration>,
    /// What to do with messages the adapter cannot understand.
    pub dead_letters: DeadLetterPolicy,
    /// Credentials passed to [`Adapter::construct`](shipfeed_core::Adapter::construct);
    /// `Credentials::None` for Seven Senders, whose messages carry no signature.
    pub adapter_credentials: Credentials,
}

impl SqsConfig {
    /// Defaults: environment credentials, region from the environment or `eu-central-1`,
    /// 20-second long polling, batches of 10, one poller, the queue's visibility timeout, dead
    /// letters to the inbox.
    pub fn new(queue: QueueRef) -> Self {
        SqsConfig {
            queue,
            endpoint_url: None,
            region: None,
            credentials: SqsCredentials::Environment,
            wait_time_seconds: MAX_WAIT_TIME_SECONDS,
            batch_size: MAX_BATCH,
            pollers: 1,
            visibility_timeout: None,
            dead_letters: DeadLetterPolicy::InboxThenDelete,
            adapter_credentials: Credentials::None,
        }
    }

    /// Sets the endpoint URL.
    #[must_use]
    pub fn with_endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Sets the region.
    #[must_use]
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets the queue credentials.
    #[must_use]
    pub fn with_credentials(mut self, credentials: SqsCredentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Sets the long-polling wait (clamped to 20 seconds).
    #[must_use]
    pub fn with_wait_time_seconds(mut self, seconds: u8) -> Self {
        self.wait_time_seconds = seconds.min(MAX_WAIT_TIME_SECONDS);
        self
    }

    /// Sets the batch size (clamped to 1..=10).
    #[must_use]
    pub fn with_batch_size(mut self, size: u8) -> Self {
        self.batch_size = size.clamp(1, MAX_BATCH);
        self
    }

    /// Sets the number of concurrent pollers (at least 1).
    #[must_use]
    pub fn with_pollers(mut self, pollers: usize) -> Self {
        self.pollers = pollers.max(1);
        self
    }

    /// Sets the visibility timeout requested with every receive.
    #[must_use]
    pub fn with_visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = Some(timeout);
        self
    }

    /// Sets the dead-letter policy.
    #[must_use]
    pub fn with_dead_letters(mut self, policy: DeadLetterPolicy) -> Self {
        self.dead_letters = policy;
        self
    }

    /// Sets the credentials handed to the adapter.
    #[must_use]
    pub fn with_adapter_credentials(mut self, credentials: Credentials) -> Self {
        self.adapter_credentials = credentials;
        self
    }

    /// The region this configuration resolves to.
    pub fn region(&self) -> String {
        resolve_region(self.region.as_deref(), |name| std::env::var(name).ok())
    }

    /// Checks the values SQS would reject, so that a mistake fails at startup.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a blank queue, an endpoint that is not a URL, or a
    /// visibility timeout over 12 hours.
    pub fn validate(&self) -> Result<(), Error> {
        let (QueueRef::Url(queue) | QueueRef::Name(queue)) = &self.queue;
        if queue.trim().is_empty() {
            return Err(config_error("the queue URL or name is empty"));
        }
        if let QueueRef::Url(url) = &self.queue {
            check_url("queue URL", url)?;
        }
        if let Some(endpoint) = &self.endpoint_url {
            check_url("endpoint URL", endpoint)?;
        }
        if self
            .visibility_timeout
            .is_some_and(|t| t.as_secs() > 43_200)
        {
            return Err(config_error(
                "the visibility timeout can be at most 12 hours (43200 s)",
            ));
        }
        Ok(())
    }

    /// The `VisibilityTimeout` parameter, in whole seconds.
    pub(crate) fn visibility_timeout_seconds(&self) -> Option<i32> {
        self.visibility_timeout
            .map(|t| i32::try_from(t.as_secs()).unwrap_or(i32::MAX))
    }
}

fn config_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, message)
}

fn check_url(what: &str, url: &str) -> Result<(), Error> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(config_error(format!(
            "the {what} `{url}` is not an http(s) URL"
        )))
    }
}

/// Explicit region, else `AWS_REGION`, else `AWS_DEFAULT_REGION`, else [`DEFAULT_REGION`].
/// Never asks the instance-metadata service.
pub(crate) fn resolve_region(
    explicit: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> String {
    explicit
        .map(str::to_owned)
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| DEFAULT_REGION.to_owned())
}

/// Static credentials for the SDK, or `None` to use the SDK's default chain.
///
/// # Errors
/// [`ErrorKind::Config`] when [`SqsCredentials::Environment`] finds no access key id.
pub(crate) fn resolve_credentials(
    credentials: &SqsCredentials,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<AwsCredentials>, Error> {
    const PROVIDER: &str = "shipfeed-sqs";
    Ok(match credentials {
        SqsCredentials::ApiKey(key) => {
            if key.expose().trim().is_empty() {
                return Err(config_error("the API key is empty"));
            }
            Some(AwsCredentials::new(key.expose(), "", None, None, PROVIDER))
        }
        SqsCredentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } => Some(AwsCredentials::new(
            access_key_id,
            secret_access_key.expose(),
            session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            PROVIDER,
        )),
        SqsCredentials::Environment => {
            let key = env("AWS_ACCESS_KEY_ID")
                .filter(|k| !k.trim().is_empty())
                .ok_or_else(|| {
                    config_error(
                        "no queue credentials: give an API key (Seven Senders) or set \
                         AWS_ACCESS_KEY_ID (AWS_SECRET_ACCESS_KEY may be empty)",
                    )
                })?;
            let secret = env("AWS_SECRET_ACCESS_KEY").unwrap_or_default();
            let token = env("AWS_SESSION_TOKEN").filter(|t| !t.trim().is_empty());
            Some(AwsCredentials::new(key, secret, token, None, PROVIDER))
        }
        SqsCredentials::DefaultChain => None,
    })
}

/// Builds the SQS client: explicit behavior version, explicit region, the resolved credentials,
/// the endpoint override, and timeouts that fit long polling.
pub(crate) async fn client(config: &SqsConfig) -> Result<aws_sdk_sqs::Client, Error> {
    config.validate()?;
    let credentials = resolve_credentials(&config.credentials, |name| std::env::var(name).ok())?;
    let attempt = Duration::from_secs(u64::from(config.wait_time_seconds) + 15);
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(config.region()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(attempt)
                .build(),
        );
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    if let Some(endpoint) = &config.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    Ok(aws_sdk_sqs::Client::new(&loader.load().await))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use aws_sdk_sqs::config::ProvideCredentials;

    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn region_prefers_explicit_then_env_then_eu_central_1() {
        assert_eq!(
            resolve_region(Some("us-east-1"), env(&[("AWS_REGION", "x")])),
            "us-east-1"
        );
        assert_eq!(
            resolve_region(
                None,
                env(&[
                    ("AWS_DEFAULT_REGION", "eu-west-1"),
                    ("AWS_REGION", "eu-west-3")
                ])
            ),
            "eu-west-3"
        );
        assert_eq!(
            resolve_region(None, env(&[("AWS_DEFAULT_REGION", "eu-west-1")])),
            "eu-west-1"
        );
        assert_eq!(resolve_region(None, env(&[])), DEFAULT_REGION);
    }

    #[tokio::test]
    async fn an_api_key_becomes_a_credential_with_an_empty_secret() {
        let creds = resolve_credentials(&SqsCredentials::ApiKey("7s-key".into()), env(&[]))
            .unwrap()
            .unwrap();
        // The SDK's credential provider accepts the empty secret as it is.
        let provided = creds.provide_credentials().await.unwrap();
        assert_eq!(provided.access_key_id(), "7s-key");
        assert_eq!(provided.secret_access_key(), "");
    }

    #[test]
    fn environment_credentials_allow_an_empty_or_missing_secret() {
        let creds = resolve_credentials(
            &SqsCredentials::Environment,
            env(&[
                ("AWS_ACCESS_KEY_ID", "7s-key"),
                ("AWS_SECRET_ACCESS_KEY", ""),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(creds.secret_access_key(), "");
        let creds = resolve_credentials(
            &SqsCredentials::Environment,
            env(&[("AWS_ACCESS_KEY_ID", "k")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(creds.secret_access_key(), "");
        let err = resolve_credentials(&SqsCredentials::Environment, env(&[])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
        assert!(resolve_credentials(&SqsCredentials::ApiKey(" ".into()), env(&[])).is_err());
        assert!(resolve_credentials(&SqsCredentials::DefaultChain, env(&[]))
            .unwrap()
            .is_none());
    }

    #[test]
    fn validation_catches_blank_queues_and_bad_urls() {
        assert!(SqsConfig::new(QueueRef::Name("q".into()))
            .validate()
            .is_ok());
        assert!(SqsConfig::new(QueueRef::Name(" ".into()))
            .validate()
            .is_err());
        assert!(SqsConfig::new(QueueRef::Url("queue.xml".into()))
            .validate()
            .is_err());
        let c = SqsConfig::new(QueueRef::Name("q".into())).with_endpoint_url("localhost:5000");
        assert!(c.validate().is_err());
        let c = SqsConfig::new(QueueRef::Name("q".into()))
            .with_visibility_timeout(Duration::from_secs(50_000));
        assert!(c.validate().is_err());
        let c = SqsConfig::new(QueueRef::Name("q".into()))
            .with_wait_time_seconds(99)
            .with_batch_size(0)
            .with_pollers(0);
        assert_eq!((c.wait_time_seconds, c.batch_size, c.pollers), (20, 1, 1));
    }
}
