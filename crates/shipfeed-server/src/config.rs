//! Service configuration: a TOML file, environment overrides, and an embedded default that
//! needs no file at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shipfeed::{Credentials, Provider, Secret};
use shipfeed_sqs::{QueueRef, SqsConfig, SqsCredentials};
use shipfeed_subscriptions::{Subscription, SubscriptionConfig};

use crate::ServiceError;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The store: a SQLite file path (optionally `sqlite://path`), or a `postgres://` URL for
    /// several replicas sharing one database.
    #[serde(default = "default_store")]
    pub store: String,
    /// Largest accepted body, in bytes (larger → 413).
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// The single subscription of earlier versions, kept as it was: `"stdout"`, `"none"`, a
    /// `nats://` URL (NATS JetStream, stream `SHIPFEED`, `Nats-Msg-Id` = `event_id`), or a
    /// file path (JSON lines, appended). It runs as the subscription `sink`, resumes from the
    /// cursor it always saved (`stdout`, `file:<path>`, `nats:SHIPFEED`) and, without one,
    /// starts at the beginning of the feed. Unset: `"stdout"` when no `[[subscription]]` is
    /// configured (the old default), else nothing.
    #[serde(default)]
    pub sink: Option<String>,
    /// Named subscriptions of the feed, each with its own cursor and lease (at-least-once:
    /// consumers deduplicate on `event_id`).
    #[serde(default, rename = "subscription")]
    pub subscriptions: Vec<SubscriptionConfig>,
    /// This replica's id as the holder of leases (the projector's, the subscriptions'; default:
    /// host name, process id and a random part, new at each start). A stable id lets a restarted replica take its
    /// own leases back at once instead of waiting for them to run out; two running replicas
    /// must never share one.
    #[serde(default)]
    pub replica_id: Option<String>,
    /// Seconds a lease (the projector's, each subscription's) lasts unless renewed: how long
    /// the work of a replica that stopped without releasing its leases (a crash) waits before
    /// another replica takes it over (plus up to a third of it).
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_seconds: u64,
    /// Inbound webhook endpoints, each served at `/webhooks/<name>`.
    #[serde(default, rename = "endpoint")]
    pub endpoints: Vec<EndpointConfig>,
    /// SQS queues to pull (Seven Senders), into the same store.
    #[serde(default, rename = "sqs_source")]
    pub sqs_sources: Vec<SqsSourceConfig>,
    /// How the projector works (`[projector]`).
    #[serde(default)]
    pub projector: ProjectorConfig,
}

/// The projector's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectorConfig {
    /// Deliveries normalized and recorded per transaction. On SQLite the projector shares the
    /// one writer with the inbox: a smaller batch holds it for less time.
    #[serde(default = "default_projector_batch")]
    pub batch: usize,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            batch: default_projector_batch(),
        }
    }
}

fn default_projector_batch() -> usize {
    256
}

/// One SQS queue pulled into the store. Messages are deleted only after their commit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsSourceConfig {
    /// Name under which its deliveries are stored (like an endpoint name).
    pub name: String,
    /// The provider whose messages the queue carries.
    #[serde(default = "default_sqs_provider")]
    pub provider: Provider,
    /// Queue URL (Seven Senders: `https://analytics-api.7senders.com/queue.xml`).
    pub queue_url: Option<String>,
    /// Queue name, resolved with GetQueueUrl (instead of `queue_url`).
    pub queue_name: Option<String>,
    /// Endpoint instead of the region's AWS endpoint (Seven Senders' proxy, a test server).
    pub endpoint_url: Option<String>,
    /// Region; default `AWS_REGION`, `AWS_DEFAULT_REGION`, then eu-central-1.
    pub region: Option<String>,
    /// Environment variable holding the Seven Senders API key (sent as the access key id).
    /// Without it the AWS environment credentials are used.
    pub api_key_env: Option<String>,
    /// Concurrent pollers.
    #[serde(default = "default_pollers")]
    pub pollers: usize,
    /// Long-polling wait in seconds (0..=20).
    #[serde(default = "default_wait_time")]
    pub wait_time_seconds: u8,
    /// Seconds a received message stays hidden from other consumers (default: the queue's).
    pub visibility_timeout_seconds: Option<u64>,
    /// IANA zone of zone-less provider times (Seven Senders `status_time`).
    #[serde(default = "default_zone")]
    pub source_time_zone: String,
}

/// One inbound endpoint: a provider and how its deliveries authenticate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// URL path segment.
    pub name: String,
    /// The provider that posts here.
    pub provider: Provider,
    /// Environment variable holding the secret (HMAC key, password or token).
    pub secret_env: Option<String>,
    /// File holding the secret (trailing newline ignored).
    pub secret_file: Option<PathBuf>,
    /// The secret is the password of this HTTP Basic user.
    pub basic_user: Option<String>,
    /// The secret is a static bearer token.
    #[serde(default)]
    pub bearer: bool,
    /// The secret is the value of this header.
    pub token_header: Option<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_store() -> String {
    "shipfeed.db".to_owned()
}
fn default_sqs_provider() -> Provider {
    Provider::SevenSenders
}
fn default_pollers() -> usize {
    1
}
fn default_wait_time() -> u8 {
    20
}
fn default_zone() -> String {
    "UTC".to_owned()
}
fn default_body_limit() -> usize {
    1024 * 1024
}
fn default_lease_ttl() -> u64 {
    15
}

impl Config {
    /// The embedded default: SQLite in the working directory, 127.0.0.1:8080, events on stdout,
    /// one endpoint per webhook provider whose secret comes from `SHIPFEED_<PROVIDER>_SECRET`
    /// (Shipup: the Basic password of user `shipup`), and the Seven Senders queue when
    /// `SHIPFEED_SEVENSENDERS_QUEUE_URL` is set (API key from `SHIPFEED_SEVENSENDERS_API_KEY`,
    /// endpoint from `SHIPFEED_SEVENSENDERS_ENDPOINT_URL`).
    pub fn embedded() -> Self {
        let endpoint = |provider: Provider, basic_user: Option<&str>| EndpointConfig {
            name: provider.as_str().to_owned(),
            provider,
            secret_env: Some(format!(
                "SHIPFEED_{}_SECRET",
                provider.as_str().to_uppercase()
            )),
            secret_file: None,
            basic_user: basic_user.map(str::to_owned),
            bearer: false,
            token_header: None,
        };
        Config {
            listen: default_listen(),
            store: default_store(),
            body_limit_bytes: default_body_limit(),
            sink: None,
            subscriptions: Vec::new(),
            replica_id: None,
            lease_ttl_seconds: default_lease_ttl(),
            endpoints: vec![
                endpoint(Provider::Sendcloud, None),
                endpoint(Provider::HappyColis, None),
                endpoint(Provider::Shipup, Some("shipup")),
            ],
            sqs_sources: std::env::var("SHIPFEED_SEVENSENDERS_QUEUE_URL")
                .ok()
                .filter(|url| !url.is_empty())
                .map(|url| SqsSourceConfig {
                    name: Provider::SevenSenders.as_str().to_owned(),
                    provider: Provider::SevenSenders,
                    queue_url: Some(url),
                    queue_name: None,
                    endpoint_url: std::env::var("SHIPFEED_SEVENSENDERS_ENDPOINT_URL").ok(),
                    region: None,
                    api_key_env: Some("SHIPFEED_SEVENSENDERS_API_KEY".to_owned()),
                    pollers: default_pollers(),
                    wait_time_seconds: default_wait_time(),
                    visibility_timeout_seconds: None,
                    source_time_zone: default_zone(),
                })
                .into_iter()
                .collect(),
            projector: ProjectorConfig::default(),
        }
    }

    /// Reads `path` (or the embedded default when `None`), then applies `SHIPFEED_LISTEN`,
    /// `SHIPFEED_STORE` and `SHIPFEED_BODY_LIMIT_BYTES`.
    ///
    /// # Errors
    /// [`ServiceError::Read`] or [`ServiceError::Parse`] for an unreadable file or invalid
    /// TOML, [`ServiceError::Setting`] for a bad override, [`ServiceError::Config`] for
    /// duplicate endpoint names, an SQS source without exactly one queue or a lease of no
    /// time, [`ServiceError::Subscription`] for invalid subscriptions.
    pub fn load(path: Option<&Path>) -> Result<Self, ServiceError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ServiceError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ServiceError::Parse {
                    path: path.to_owned(),
                    source: Box::new(source),
                })?
            }
            None => Config::embedded(),
        };
        if let Ok(listen) = std::env::var("SHIPFEED_LISTEN") {
            config.listen = parse_setting("SHIPFEED_LISTEN", listen)?;
        }
        if let Ok(store) = std::env::var("SHIPFEED_STORE") {
            config.store = store;
        }
        if let Ok(limit) = std::env::var("SHIPFEED_BODY_LIMIT_BYTES") {
            config.body_limit_bytes = parse_setting("SHIPFEED_BODY_LIMIT_BYTES", limit)?;
        }
        let mut names: Vec<&str> = config
            .endpoints
            .iter()
            .map(|e| e.name.as_str())
            .chain(config.sqs_sources.iter().map(|s| s.name.as_str()))
            .collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ServiceError::Config(format!(
                "endpoint `{}` is configured twice",
                pair[0]
            )));
        }
        for source in &config.sqs_sources {
            if source.queue_url.is_some() == source.queue_name.is_some() {
                return Err(ServiceError::Config(format!(
                    "sqs_source `{}`: set exactly one of queue_url and queue_name",
                    source.name
                )));
            }
        }
        config.lease_ttl()?;
        config.subscriptions()?;
        Ok(config)
    }

    /// Every subscription to run, checked: the `[[subscription]]` tables, then the `sink`
    /// setting's (`"stdout"` when neither is configured).
    ///
    /// # Errors
    /// [`ServiceError::Subscription`] for a table that does not check, a name used twice, or
    /// two subscriptions writing to the same stdout, file or NATS server.
    pub fn subscriptions(&self) -> Result<Vec<Subscription>, ServiceError> {
        let sink = match (&self.sink, self.subscriptions.is_empty()) {
            (Some(sink), _) => Some(sink.as_str()),
            (None, true) => Some("stdout"),
            (None, false) => None,
        };
        Ok(shipfeed_subscriptions::plan(&self.subscriptions, sink)?)
    }

    /// How long a subscription lease lasts.
    ///
    /// # Errors
    /// [`ServiceError::Config`] when `lease_ttl_seconds` is not from 1 to 86400 (a day).
    pub fn lease_ttl(&self) -> Result<chrono::TimeDelta, ServiceError> {
        match i64::try_from(self.lease_ttl_seconds) {
            Ok(seconds @ 1..=86_400) => Ok(chrono::TimeDelta::seconds(seconds)),
            _ => Err(ServiceError::Config(format!(
                "lease_ttl_seconds = {}: give a number of seconds from 1 to 86400",
                self.lease_ttl_seconds
            ))),
        }
    }
}

/// `value` of `setting` parsed, or a [`ServiceError::Setting`] naming both.
fn parse_setting<T>(setting: &str, value: String) -> Result<T, ServiceError>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value.parse().map_err(|source| ServiceError::Setting {
        setting: setting.to_owned(),
        value,
        source: Box::new(source),
    })
}

impl EndpointConfig {
    /// Where the secret comes from, for the startup banner (never the secret itself).
    pub fn secret_source(&self) -> String {
        match (&self.secret_env, &self.secret_file) {
            (_, Some(file)) => format!("file {}", file.display()),
            (Some(var), None) => format!("${var}"),
            (None, None) => "nothing".to_owned(),
        }
    }

    /// The endpoint's credentials; [`Credentials::None`] when its secret is not set, which the
    /// adapters reject (fail closed).
    ///
    /// # Errors
    /// [`ServiceError::Read`] for a configured secret file that cannot be read.
    pub fn credentials(&self) -> Result<Credentials, ServiceError> {
        let secret = match (&self.secret_file, &self.secret_env) {
            (Some(file), _) => Some(
                std::fs::read_to_string(file)
                    .map_err(|source| ServiceError::Read {
                        path: file.clone(),
                        source,
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            (None, Some(var)) => std::env::var(var).ok(),
            (None, None) => None,
        };
        let Some(secret) = secret.filter(|s| !s.is_empty()).map(Secret::new) else {
            return Ok(Credentials::None);
        };
        Ok(if let Some(username) = &self.basic_user {
            Credentials::Basic {
                username: username.clone(),
                password: secret,
            }
        } else if self.bearer {
            Credentials::Bearer(secret)
        } else if let Some(header) = &self.token_header {
            Credentials::HeaderToken {
                header: header.clone(),
                token: secret,
            }
        } else {
            Credentials::Hmac(secret)
        })
    }
}

impl SqsSourceConfig {
    /// The source's SQS configuration (the API key read from its environment variable).
    pub fn sqs_config(&self) -> SqsConfig {
        let api_key = self
            .api_key_env
            .as_deref()
            .and_then(|var| std::env::var(var).ok());
        self.sqs_config_with_key(api_key)
    }

    /// The source's SQS configuration with this API key (none or empty: the AWS environment
    /// credentials).
    pub fn sqs_config_with_key(&self, api_key: Option<String>) -> SqsConfig {
        let queue = match (&self.queue_url, &self.queue_name) {
            (Some(url), _) => QueueRef::Url(url.clone()),
            (None, name) => QueueRef::Name(name.clone().unwrap_or_default()),
        };
        let api_key = api_key.filter(|key| !key.is_empty());
        let mut config = SqsConfig::new(queue)
            .with_pollers(self.pollers)
            .with_wait_time_seconds(self.wait_time_seconds)
            .with_credentials(match api_key {
                Some(key) => SqsCredentials::ApiKey(key.as_str().into()),
                None => SqsCredentials::Environment,
            });
        if let Some(url) = &self.endpoint_url {
            config = config.with_endpoint_url(url);
        }
        if let Some(region) = &self.region {
            config = config.with_region(region);
        }
        if let Some(seconds) = self.visibility_timeout_seconds {
            config = config.with_visibility_timeout(Duration::from_secs(seconds));
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_endpoints_parse_and_duplicates_are_refused() {
        let config: Config = toml::from_str(
            r#"
            listen = "127.0.0.1:9000"
            [[endpoint]]
            name = "sendcloud-eu"
            provider = "sendcloud"
            secret_env = "SC_EU"
            [[endpoint]]
            name = "shipup"
            provider = "shipup"
            secret_env = "SHIPUP_TOKEN"
            bearer = true
            "#,
        )
        .unwrap();
        assert_eq!(config.endpoints.len(), 2);
        assert_eq!(config.endpoints[1].provider, Provider::Shipup);
        assert_eq!(config.sink, None);
        let names: Vec<String> = config
            .subscriptions()
            .unwrap()
            .iter()
            .map(|s| format!("{} {}", s.name(), s.cursor()))
            .collect();
        assert_eq!(
            names,
            ["sink stdout"],
            "no subscription configured: stdout, as before"
        );
        let dir = std::env::temp_dir().join(format!("shipfeed-config-{}", std::process::id()));
        std::fs::write(&dir, "[[endpoint]]\nname='a'\nprovider='shipup'\n[[endpoint]]\nname='a'\nprovider='sendcloud'\n").unwrap();
        let err = Config::load(Some(&dir)).unwrap_err();
        assert!(err.to_string().contains("configured twice"));
        let _ = std::fs::remove_file(dir);
    }

    #[test]
    fn subscription_tables_and_the_sink_setting_make_the_subscriptions() {
        let config: Config = toml::from_str(
            r#"
            lease_ttl_seconds = 30
            replica_id = "eu-1"
            [[subscription]]
            name = "orders"
            kind = "nats"
            url = "nats://127.0.0.1:4222"
            start = "beginning"
            [[subscription]]
            name = "audit"
            kind = "file"
            path = "/var/lib/shipfeed/audit.jsonl"
            "#,
        )
        .unwrap();
        assert_eq!(config.lease_ttl().unwrap(), chrono::TimeDelta::seconds(30));
        let planned = config.subscriptions().unwrap();
        let names: Vec<&str> = planned.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["orders", "audit"], "subscriptions only: no stdout");
        let with_sink = Config {
            sink: Some("/var/lib/shipfeed/events.jsonl".into()),
            ..config.clone()
        };
        let planned = with_sink.subscriptions().unwrap();
        assert_eq!(planned[2].cursor(), "file:/var/lib/shipfeed/events.jsonl");

        let twice = Config {
            sink: Some("/var/lib/shipfeed/audit.jsonl".into()),
            ..config.clone()
        };
        let error = twice.subscriptions().unwrap_err().to_string();
        assert!(
            error.contains("`audit` and `sink` both write to file"),
            "{error}"
        );
        let no_time = Config {
            lease_ttl_seconds: 0,
            ..config
        };
        let error = no_time.lease_ttl().unwrap_err().to_string();
        assert!(error.contains("lease_ttl_seconds = 0"), "{error}");

        let path = std::env::temp_dir().join(format!("shipfeed-subs-{}", std::process::id()));
        std::fs::write(&path, "[[subscription]]\nname = 'a'\nkind = 'file'\n").unwrap();
        let error = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(
            error.contains("subscription `a`: kind \"file\" needs `path`"),
            "{error}"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn unset_secret_means_no_credentials() {
        let endpoint = &Config::embedded().endpoints[0];
        assert_eq!(
            endpoint.secret_env.as_deref(),
            Some("SHIPFEED_SENDCLOUD_SECRET")
        );
        let missing = EndpointConfig {
            secret_env: Some("SHIPFEED_TEST_SURELY_UNSET".into()),
            ..endpoint.clone()
        };
        assert_eq!(missing.credentials().unwrap(), Credentials::None);
    }
}
