//! Service configuration: a TOML file, environment overrides, and an embedded default that
//! needs no file at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shipfeed::auth::jwt::{Algorithm, JwtPolicy};
use shipfeed::{CredentialKind, Credentials, Provider, Secret};
use shipfeed_sqs::{QueueRef, SqsConfig, SqsCredentials};
use shipfeed_subscriptions::{Subscription, SubscriptionConfig};

use crate::api_auth::{self, ApiConfig, ApiTokenConfig, Scope};
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
    /// Which events are one shipment (`[identity]`).
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Stalled-shipment alerts (`[alerts]`).
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Bearer tokens of the API (`[[api_token]]`): with any, `/v1/*` needs one. Without any,
    /// the API is open, which `serve` allows on a loopback address only.
    #[serde(default, rename = "api_token")]
    pub api_tokens: Vec<ApiTokenConfig>,
    /// How the API is protected beyond `/v1` (`[api]`).
    #[serde(default)]
    pub api: ApiConfig,
}

/// Stalled-shipment alerts: how often the rules are evaluated, and the rules.
///
/// ```toml
/// [alerts]
/// check_every = "60s"          # or "off": never evaluated
/// [alerts.stalled]             # status = longest quiet time; "off" turns a default off
/// in_transit = "72h"
/// [alerts.stalled.carrier.dhl] # per carrier, over the above
/// in_transit = "96h"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// How often the projector evaluates the rules (a duration such as `"60s"`, or `"off"`);
    /// default 60 seconds.
    #[serde(default)]
    pub check_every: Option<String>,
    /// The rules, over the defaults (`pre_transit` 48 h, `in_transit` 72 h,
    /// `available_for_pickup` 5 days, `exception` 24 h).
    #[serde(default)]
    pub stalled: StalledConfig,
}

/// `[alerts.stalled]`: per status, the longest a shipment may go without a new event.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StalledConfig {
    /// Per carrier (by slug), the statuses whose quiet time differs for it.
    #[serde(default)]
    pub carrier: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    /// Status name → duration (`"72h"`, `"5days"`) or `"off"`.
    #[serde(flatten)]
    pub statuses: std::collections::BTreeMap<String, String>,
}

impl AlertsConfig {
    /// The projector's alert settings; `None` when `check_every` is `"off"`.
    ///
    /// # Errors
    /// [`ServiceError::Setting`] for an unknown status, a terminal one (never stalled) or a
    /// duration that does not parse.
    pub fn options(&self) -> Result<Option<shipfeed_projector::AlertOptions>, ServiceError> {
        let check_every = match self.check_every.as_deref() {
            None => shipfeed_projector::AlertOptions::default().check_every,
            Some(text) => match quiet_time("alerts.check_every", text)? {
                Some(every) => every,
                None => return Ok(None),
            },
        };
        let mut rules = shipfeed_store::StalledRules::default();
        for (name, value) in &self.stalled.statuses {
            let setting = format!("alerts.stalled.{name}");
            let (status, quiet) = stalled_rule(&setting, name, value)?;
            rules
                .set(status, quiet)
                .map_err(|e| bad_setting(&setting, value, e.to_string()))?;
        }
        for (carrier, statuses) in &self.stalled.carrier {
            for (name, value) in statuses {
                let setting = format!("alerts.stalled.carrier.{carrier}.{name}");
                let (status, quiet) = stalled_rule(&setting, name, value)?;
                rules
                    .set_for_carrier(carrier, status, quiet)
                    .map_err(|e| bad_setting(&setting, value, e.to_string()))?;
            }
        }
        Ok(Some(shipfeed_projector::AlertOptions {
            rules,
            check_every,
        }))
    }
}

fn bad_setting(setting: &str, value: &str, why: String) -> ServiceError {
    ServiceError::Setting {
        setting: setting.to_owned(),
        value: value.to_owned(),
        source: why.into(),
    }
}

/// A duration (`"72h"`, `"5days"`, `"90m"`), or `None` for `"off"`.
fn quiet_time(setting: &str, text: &str) -> Result<Option<std::time::Duration>, ServiceError> {
    if text.trim() == "off" {
        return Ok(None);
    }
    humantime::parse_duration(text.trim())
        .map(Some)
        .map_err(|e| bad_setting(setting, text, e.to_string()))
}

/// One `status = "duration"` line of `[alerts.stalled]`.
fn stalled_rule(
    setting: &str,
    name: &str,
    value: &str,
) -> Result<(shipfeed::Status, Option<chrono::TimeDelta>), ServiceError> {
    let status = shipfeed::Status::ALL
        .into_iter()
        .find(|status| status.as_str() == name)
        .ok_or_else(|| bad_setting(setting, value, format!("`{name}` is not a status")))?;
    let quiet = quiet_time(setting, value)?
        .map(|quiet| {
            chrono::TimeDelta::from_std(quiet)
                .map_err(|e| bad_setting(setting, value, e.to_string()))
        })
        .transpose()?;
    Ok((status, quiet))
}

/// Which events are one shipment (ARCHITECTURE.md, "One timeline per parcel").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Carriers whose tracking numbers name the same parcels, per group, by carrier slug
    /// (`[["dhl", "dhl_ecommerce"]]`). By default none: the same number under two carriers is
    /// two parcels, since carriers recycle numbers.
    #[serde(default)]
    pub carrier_groups: Vec<Vec<String>>,
}

impl IdentityConfig {
    /// The identity rule these settings give.
    pub fn identity(&self) -> shipfeed::identity::Identity {
        shipfeed::identity::Identity::with_carrier_groups(self.carrier_groups.iter().map(|group| {
            group
                .iter()
                .filter_map(|carrier| shipfeed::carrier::normalize(carrier))
        }))
    }
}

/// The projector's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectorConfig {
    /// Deliveries normalized and recorded per transaction. A batch and the next one being
    /// prepared are in memory at once: 256 costs ~25 MiB more peak RSS than 64 under overload,
    /// and 64 drains 10-20 % slower (BENCHMARKS.md §2).
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
///
/// The secret (an HMAC key, a password or a token) comes from `secret_file` or, when that is
/// not set, `secret_env`. Either takes one name or a list: during a rotation list the new
/// secret and the old one; each is accepted, and `shipfeed_auth_matched_total{endpoint,
/// position}` counts which matched (position 0 is the first listed), so the old one can go
/// once its position stops counting. What the secret is follows from the other settings:
/// `basic_user`, `fixed_bearer` or `token_header`, else an HMAC key. A `[endpoint.jwt]` table
/// instead checks signed JWTs against a key set, and needs no secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// URL path segment.
    pub name: String,
    /// The provider that posts here.
    pub provider: Provider,
    /// Environment variable(s) holding the secret(s): `"A"` or `["A", "B"]`.
    #[serde(default, deserialize_with = "one_or_many")]
    pub secret_env: Vec<String>,
    /// File(s) holding the secret(s), trailing newline ignored: a path or a list. Takes
    /// precedence over `secret_env`.
    #[serde(default, deserialize_with = "one_or_many")]
    pub secret_file: Vec<PathBuf>,
    /// The secret is the password of this HTTP Basic user.
    pub basic_user: Option<String>,
    /// The secret is a fixed bearer token: `Authorization: Bearer <secret>`, compared as a
    /// string (for a signed JWT use `[endpoint.jwt]`). `bearer = true` is its older spelling.
    #[serde(default, alias = "bearer")]
    pub fixed_bearer: bool,
    /// The secret is the value of this header.
    pub token_header: Option<String>,
    /// Deliveries carry a signed JWT, checked against a key set (Shipup's OAuth 2.0 JWT bearer
    /// flow, Google-IAP compatible).
    pub jwt: Option<JwtConfig>,
}

/// How an endpoint checks signed JWTs (`[endpoint.jwt]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Accepted audiences (`aud`), one or a list: what the sender was told to put there (the
    /// "Audience" of Shipup's settings).
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Accepted issuers (`iss`), one or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub issuer: Vec<String>,
    /// Where the key set (JWKS) is published: `https://`, or `http://` on a loopback address
    /// only. Fetched in the background, never while a request waits.
    pub jwks_url: Option<String>,
    /// A file holding the key set (instead of `jwks_url`): read at startup, and again on the
    /// same schedule.
    pub jwks_file: Option<PathBuf>,
    /// Accepted algorithms: `"RS256"`, `"ES256"` (default both; nothing else exists).
    #[serde(default = "default_jwt_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// The header that carries the token: `Authorization` (a bearer token, the default) or
    /// another whose whole value is the token (Google IAP: `x-goog-iap-jwt-assertion`).
    #[serde(default = "default_jwt_header")]
    pub header: String,
    /// Tolerated clock difference for `exp` and `nbf`, 0 to 300 seconds.
    #[serde(default = "default_jwt_leeway")]
    pub leeway_seconds: u64,
    /// Seconds between two fetches of the key set.
    #[serde(default = "default_jwks_refresh")]
    pub refresh_seconds: u64,
    /// The least seconds between two fetches: a token naming an unknown key id asks for a
    /// fetch at once, but not sooner than this after the last one (and a failed fetch is
    /// retried from this delay, doubling up to `refresh_seconds`).
    #[serde(default = "default_jwks_min_refresh")]
    pub min_refresh_seconds: u64,
}

/// Where a JWT endpoint's key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    /// A JWKS URL.
    Url(reqwest::Url),
    /// A JWKS file.
    File(PathBuf),
}

impl std::fmt::Display for KeyLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyLocation::Url(url) => write!(f, "{url}"),
            KeyLocation::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// A value or a list of them, in the TOML.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(value) => vec![value],
        OneOrMany::Many(values) => values,
    })
}

fn default_jwt_algorithms() -> Vec<Algorithm> {
    Algorithm::ALL.to_vec()
}
fn default_jwt_header() -> String {
    "Authorization".to_owned()
}
fn default_jwt_leeway() -> u64 {
    JwtPolicy::DEFAULT_LEEWAY_SECONDS.unsigned_abs()
}
fn default_jwks_refresh() -> u64 {
    3600
}
fn default_jwks_min_refresh() -> u64 {
    60
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
    /// endpoint from `SHIPFEED_SEVENSENDERS_ENDPOINT_URL`), and an `admin` API token when
    /// `SHIPFEED_API_TOKEN` is set (without it the API is open, on loopback only).
    pub fn embedded() -> Self {
        let endpoint = |provider: Provider, basic_user: Option<&str>| EndpointConfig {
            name: provider.as_str().to_owned(),
            provider,
            secret_env: vec![format!(
                "SHIPFEED_{}_SECRET",
                provider.as_str().to_uppercase()
            )],
            secret_file: Vec::new(),
            basic_user: basic_user.map(str::to_owned),
            fixed_bearer: false,
            token_header: None,
            jwt: None,
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
            identity: IdentityConfig::default(),
            alerts: AlertsConfig::default(),
            // Only when set, as the SQS source above: a table whose variable is unset would
            // close the API of the zero-configuration default.
            api_tokens: std::env::var(api_auth::EMBEDDED_TOKEN_ENV)
                .ok()
                .filter(|token| !token.is_empty())
                .map(|_| ApiTokenConfig {
                    name: "default".to_owned(),
                    token_env: Some(api_auth::EMBEDDED_TOKEN_ENV.to_owned()),
                    token_file: None,
                    scopes: vec![Scope::Admin],
                })
                .into_iter()
                .collect(),
            api: ApiConfig::default(),
        }
    }

    /// Reads `path` (or the embedded default when `None`), then applies `SHIPFEED_LISTEN`,
    /// `SHIPFEED_STORE` and `SHIPFEED_BODY_LIMIT_BYTES`.
    ///
    /// # Errors
    /// [`ServiceError::Read`] or [`ServiceError::Parse`] for an unreadable file or invalid
    /// TOML, [`ServiceError::Setting`] for a bad override, [`ServiceError::Config`] for
    /// duplicate endpoint names, an endpoint whose settings contradict each other (see
    /// [`EndpointConfig::check`]), an SQS source without exactly one queue, a lease of no
    /// time or an `[[api_token]]` table that does not check ([`api_auth::check_config`]),
    /// [`ServiceError::Subscription`] for invalid subscriptions.
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
        for endpoint in &config.endpoints {
            endpoint.check()?;
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
        api_auth::check_config(&config.api_tokens)?;
        config.alerts.options()?;
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
    /// Checks the settings that contradict each other or would accept what they should not.
    ///
    /// # Errors
    /// [`ServiceError::Config`] naming the endpoint: `jwt` with a secret or another kind of
    /// credentials, a JWT table that does not check (see [`JwtConfig::policy`] and
    /// [`JwtConfig::location`]), a blank `token_header`, a blank or repeated secret name.
    pub fn check(&self) -> Result<(), ServiceError> {
        let fail = |message: String| {
            Err(ServiceError::Config(format!(
                "endpoint `{}`: {message}",
                self.name
            )))
        };
        if let Some(jwt) = &self.jwt {
            if !self.secret_env.is_empty()
                || !self.secret_file.is_empty()
                || self.basic_user.is_some()
                || self.fixed_bearer
                || self.token_header.is_some()
            {
                return fail(
                    "`jwt` needs no secret; leave out secret_env, secret_file, basic_user, fixed_bearer and token_header"
                        .to_owned(),
                );
            }
            if let Err(message) = jwt.policy().and(jwt.location()).and(jwt.refresh()) {
                return fail(message);
            }
        }
        if self
            .token_header
            .as_deref()
            .is_some_and(|h| h.trim().is_empty())
        {
            return fail("`token_header` is blank".to_owned());
        }
        let mut names: Vec<String> = self.secret_env.clone();
        names.extend(self.secret_file.iter().map(|f| f.display().to_string()));
        if names.iter().any(|n| n.trim().is_empty()) {
            return fail("a secret_env or secret_file entry is blank".to_owned());
        }
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return fail(format!("secret `{}` is listed twice", pair[0]));
        }
        Ok(())
    }

    /// Where each secret comes from, in position order, for the startup banner (never the
    /// secrets themselves): `$VAR` or `file <path>`.
    pub fn secret_sources(&self) -> Vec<String> {
        if self.secret_file.is_empty() {
            self.secret_env
                .iter()
                .map(|var| format!("${var}"))
                .collect()
        } else {
            self.secret_file
                .iter()
                .map(|file| format!("file {}", file.display()))
                .collect()
        }
    }

    /// The kind of credentials the settings describe, secret set or not; `None` for an
    /// endpoint with neither a secret nor a JWT table.
    pub fn credential_kind(&self) -> Option<CredentialKind> {
        if self.jwt.is_some() {
            Some(CredentialKind::Jwt)
        } else if self.basic_user.is_some() {
            Some(CredentialKind::Basic)
        } else if self.fixed_bearer {
            Some(CredentialKind::FixedBearer)
        } else if self.token_header.is_some() {
            Some(CredentialKind::HeaderToken)
        } else if !self.secret_env.is_empty() || !self.secret_file.is_empty() {
            Some(CredentialKind::Hmac)
        } else {
            None
        }
    }

    /// The secrets, in position order (`secret_file`'s when set, else `secret_env`'s); `None`
    /// where a variable is unset or a value empty.
    ///
    /// # Errors
    /// [`ServiceError::Read`] for a configured secret file that cannot be read.
    pub fn secrets(&self) -> Result<Vec<Option<Secret>>, ServiceError> {
        let values: Vec<Option<String>> = if self.secret_file.is_empty() {
            self.secret_env
                .iter()
                .map(|var| std::env::var(var).ok())
                .collect()
        } else {
            self.secret_file
                .iter()
                .map(|file| {
                    std::fs::read_to_string(file)
                        .map(|text| Some(text.trim_end_matches(['\r', '\n']).to_owned()))
                        .map_err(|source| ServiceError::Read {
                            path: file.clone(),
                            source,
                        })
                })
                .collect::<Result<_, _>>()?
        };
        Ok(values
            .into_iter()
            .map(|value| value.filter(|v| !v.is_empty()).map(Secret::new))
            .collect())
    }

    /// The endpoint's shared-secret credentials, one per secret that is set, each with its
    /// position; empty when none is set (the adapters then fail closed). A JWT endpoint has
    /// none here: the service builds its verifier with a key source.
    ///
    /// # Errors
    /// [`ServiceError::Read`] for a configured secret file that cannot be read.
    pub fn credentials(&self) -> Result<Vec<(usize, Credentials)>, ServiceError> {
        if self.jwt.is_some() {
            return Ok(Vec::new());
        }
        let credentials = self
            .secrets()?
            .into_iter()
            .enumerate()
            .filter_map(|(position, secret)| Some((position, self.credentials_with(secret?))))
            .collect();
        Ok(credentials)
    }

    fn credentials_with(&self, secret: Secret) -> Credentials {
        if let Some(username) = &self.basic_user {
            Credentials::Basic {
                username: username.clone(),
                password: secret,
            }
        } else if self.fixed_bearer {
            Credentials::Bearer(secret)
        } else if let Some(header) = &self.token_header {
            Credentials::HeaderToken {
                header: header.clone(),
                token: secret,
            }
        } else {
            Credentials::Hmac(secret)
        }
    }
}

impl JwtConfig {
    /// The verification policy.
    ///
    /// # Errors
    /// A message when the policy would not check (no audience or issuer, no algorithm, a
    /// leeway over 300 seconds, a blank header).
    pub fn policy(&self) -> Result<JwtPolicy, String> {
        let leeway = i64::try_from(self.leeway_seconds)
            .map_err(|_| "leeway_seconds is too large".to_owned())?;
        let policy = JwtPolicy::new(self.audience.clone(), self.issuer.clone())
            .with_algorithms(self.algorithms.iter().copied())
            .with_leeway(chrono::TimeDelta::seconds(leeway))
            .with_header(&self.header);
        policy.check().map_err(|e| e.message().to_owned())?;
        Ok(policy)
    }

    /// Where the key set is.
    ///
    /// # Errors
    /// A message unless exactly one of `jwks_url` and `jwks_file` is set, and the URL is
    /// `https://` or `http://` on a loopback address (keys fetched in the clear from elsewhere
    /// could be anyone's).
    pub fn location(&self) -> Result<KeyLocation, String> {
        match (&self.jwks_url, &self.jwks_file) {
            (Some(url), None) => {
                let url = reqwest::Url::parse(url)
                    .map_err(|e| format!("jwks_url `{url}` is not a URL: {e}"))?;
                let host = url.host_str().unwrap_or_default();
                let loopback = host.eq_ignore_ascii_case("localhost")
                    || host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                match url.scheme() {
                    "https" => Ok(KeyLocation::Url(url)),
                    "http" if loopback => Ok(KeyLocation::Url(url)),
                    _ => Err(format!(
                        "jwks_url `{url}` must be https:// (http:// only on a loopback address)"
                    )),
                }
            }
            (None, Some(file)) => Ok(KeyLocation::File(file.clone())),
            _ => Err("`jwt` needs exactly one of jwks_url and jwks_file".to_owned()),
        }
    }

    /// The refresh timing: `(refresh_seconds, min_refresh_seconds)` as durations.
    ///
    /// # Errors
    /// A message unless `1 <= min_refresh_seconds <= refresh_seconds <= 604800` (a week).
    pub fn refresh(&self) -> Result<(chrono::TimeDelta, chrono::TimeDelta), String> {
        let (every, least) = (self.refresh_seconds, self.min_refresh_seconds);
        if least == 0 || least > every || every > 604_800 {
            return Err(format!(
                "refresh_seconds = {every}, min_refresh_seconds = {least}: give 1 <= min_refresh_seconds <= refresh_seconds <= 604800"
            ));
        }
        let seconds = |s: u64| chrono::TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX));
        Ok((seconds(every), seconds(least)))
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
            filter = { statuses = ["delivered"], types = ["event"] }
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
        // A filter is checked when the file is read: an unknown status stops the start.
        std::fs::write(
            &path,
            "[[subscription]]\nname = 'a'\nkind = 'stdout'\nfilter = { statuses = ['shipped'] }\n",
        )
        .unwrap();
        // As `shipfeed serve` reports it: the error and its causes.
        let error = shipfeed::error_chain(&Config::load(Some(&path)).unwrap_err());
        assert!(
            error.contains("unknown status `shipped`; allowed: unknown, pre_transit"),
            "{error}"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn unset_secret_means_no_credentials() {
        let endpoint = &Config::embedded().endpoints[0];
        assert_eq!(endpoint.secret_env, ["SHIPFEED_SENDCLOUD_SECRET"]);
        let missing = EndpointConfig {
            secret_env: vec!["SHIPFEED_TEST_SURELY_UNSET".into()],
            ..endpoint.clone()
        };
        assert_eq!(missing.credentials().unwrap(), []);
        assert_eq!(missing.credential_kind(), Some(CredentialKind::Hmac));
    }

    fn endpoint(toml_text: &str) -> Result<EndpointConfig, ServiceError> {
        let config: Config = toml::from_str(&format!(
            "[[endpoint]]\nname = \"e\"\nprovider = \"shipup\"\n{toml_text}"
        ))
        .map_err(|e| ServiceError::Config(e.to_string()))?;
        let endpoint = config.endpoints[0].clone();
        endpoint.check()?;
        Ok(endpoint)
    }

    #[test]
    fn secrets_take_one_name_or_a_list_and_keep_their_positions() {
        let dir = tempfile::tempdir().unwrap();
        let (new, old, empty) = (
            dir.path().join("new"),
            dir.path().join("old"),
            dir.path().join("empty"),
        );
        std::fs::write(&new, "new-password\n").unwrap();
        std::fs::write(&old, "old-password").unwrap();
        std::fs::write(&empty, "\n").unwrap();
        let listed = endpoint(&format!(
            "basic_user = \"shipup\"\nsecret_file = [{:?}, {:?}, {:?}]",
            empty.display().to_string(),
            new.display().to_string(),
            old.display().to_string()
        ))
        .unwrap();
        let basic = |password: &str| Credentials::Basic {
            username: "shipup".into(),
            password: Secret::new(password),
        };
        assert_eq!(
            listed.credentials().unwrap(),
            [(1, basic("new-password")), (2, basic("old-password"))],
            "an empty secret is left out, the others keep their positions"
        );
        assert_eq!(listed.secret_sources().len(), 3);
        // The single form, as before; and an unset variable among set ones.
        let single = endpoint("secret_env = \"PATH\"\nbearer = true").unwrap();
        assert_eq!(single.credential_kind(), Some(CredentialKind::FixedBearer));
        assert_eq!(single.credentials().unwrap().len(), 1);
        let rotated = endpoint(
            "secret_env = [\"SHIPFEED_TEST_SURELY_UNSET\", \"PATH\"]\nfixed_bearer = true",
        )
        .unwrap();
        let positions: Vec<usize> = rotated
            .credentials()
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(positions, [1]);
        assert_eq!(
            rotated.secret_sources(),
            ["$SHIPFEED_TEST_SURELY_UNSET", "$PATH"]
        );
        // A file that cannot be read is an error, not an unset secret.
        let unreadable = endpoint("secret_file = [\"/nonexistent/shipfeed-secret\"]").unwrap();
        assert!(matches!(
            unreadable.credentials(),
            Err(ServiceError::Read { .. })
        ));
        for (bad, why) in [
            ("secret_env = [\"A\", \"A\"]", "listed twice"),
            ("secret_env = [\"\"]", "blank"),
            (
                "secret_env = \"A\"\ntoken_header = \" \"",
                "`token_header` is blank",
            ),
        ] {
            let error = endpoint(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    /// Every TOML example of the README loads (and checks) as it is written.
    #[test]
    fn the_readme_examples_load() {
        let readme = include_str!("../../../README.md");
        let blocks: Vec<&str> = readme
            .split("```toml\n")
            .skip(1)
            .filter_map(|rest| rest.split("```").next())
            .filter(|block| block.contains("[[endpoint]]"))
            .collect();
        assert!(blocks.len() >= 2, "{blocks:?}");
        let dir = tempfile::tempdir().unwrap();
        for block in blocks {
            let path = dir.path().join("readme.toml");
            std::fs::write(&path, block).unwrap();
            let config = Config::load(Some(&path))
                .unwrap_or_else(|e| panic!("{}\n{block}", shipfeed::error_chain(&e)));
            assert!(!config.endpoints.is_empty());
            // An example reachable from the network shows how its API is protected.
            if !config.listen.ip().is_loopback() {
                assert!(!config.api_tokens.is_empty(), "{block}");
            }
        }
    }

    /// Every TOML example of the consumer guide loads (and checks) as it is written.
    #[test]
    fn the_consumer_guide_examples_load() {
        let guide = include_str!("../../../docs/consumers.md");
        let blocks: Vec<&str> = guide
            .split("```toml\n")
            .skip(1)
            .filter_map(|rest| rest.split("```").next())
            .collect();
        assert!(!blocks.is_empty(), "the guide shows no configuration");
        // The push example's secret, as its operator would export it (a variable only this
        // test reads).
        std::env::set_var(
            "SHIPFEED_NOTIFICATIONS_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        );
        let dir = tempfile::tempdir().unwrap();
        for block in blocks {
            let path = dir.path().join("guide.toml");
            std::fs::write(&path, block).unwrap();
            let config = Config::load(Some(&path))
                .unwrap_or_else(|e| panic!("{}\n{block}", shipfeed::error_chain(&e)));
            assert!(!config.subscriptions.is_empty(), "{block}");
        }
    }

    #[test]
    fn jwt_tables_are_checked_when_loaded() {
        let jwt = |extra: &str| {
            endpoint(&format!(
                "[endpoint.jwt]\naudience = \"https://shipfeed.example/webhooks/shipup\"\n\
                 issuer = [\"https://accounts.google.com\"]\n{extra}"
            ))
        };
        let good = jwt("jwks_url = \"https://www.googleapis.com/oauth2/v3/certs\"").unwrap();
        assert_eq!(good.credential_kind(), Some(CredentialKind::Jwt));
        assert_eq!(good.credentials().unwrap(), []);
        let table = good.jwt.as_ref().unwrap();
        let policy = table.policy().unwrap();
        assert_eq!(policy.algorithms, Algorithm::ALL);
        assert_eq!(policy.leeway, chrono::TimeDelta::seconds(60));
        assert_eq!(
            table.refresh().unwrap(),
            (
                chrono::TimeDelta::seconds(3600),
                chrono::TimeDelta::seconds(60)
            )
        );
        let iap = jwt(
            "jwks_file = \"/etc/shipfeed/iap.json\"\nheader = \"x-goog-iap-jwt-assertion\"\nalgorithms = [\"ES256\"]",
        )
        .unwrap();
        let table = iap.jwt.as_ref().unwrap();
        assert_eq!(
            table.location().unwrap(),
            KeyLocation::File("/etc/shipfeed/iap.json".into())
        );
        assert_eq!(table.policy().unwrap().algorithms, [Algorithm::Es256]);
        for loopback in [
            "http://127.0.0.1:9000/jwks",
            "http://localhost/jwks",
            "http://[::1]/jwks",
        ] {
            jwt(&format!("jwks_url = \"{loopback}\"")).unwrap();
        }
        for (bad, why) in [
            ("", "exactly one of jwks_url and jwks_file"),
            (
                "jwks_url = \"https://a.example/k\"\njwks_file = \"/k.json\"",
                "exactly one of jwks_url and jwks_file",
            ),
            (
                "jwks_url = \"http://keys.example/jwks\"",
                "must be https://",
            ),
            ("jwks_url = \"ftp://127.0.0.1/jwks\"", "must be https://"),
            ("jwks_url = \"not a url\"", "is not a URL"),
            (
                "jwks_file = \"/k.json\"\nalgorithms = [\"HS256\"]",
                "unknown variant `HS256`",
            ),
            (
                "jwks_file = \"/k.json\"\nalgorithms = [\"none\"]",
                "unknown variant `none`",
            ),
            (
                "jwks_file = \"/k.json\"\nalgorithms = []",
                "at least one algorithm",
            ),
            (
                "jwks_file = \"/k.json\"\nleeway_seconds = 3600",
                "0 to 300 seconds",
            ),
            (
                "jwks_file = \"/k.json\"\nmin_refresh_seconds = 0",
                "min_refresh_seconds",
            ),
            (
                "jwks_file = \"/k.json\"\nrefresh_seconds = 10",
                "min_refresh_seconds",
            ),
        ] {
            let error = jwt(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
        let error = endpoint(
            "secret_env = \"X\"\n[endpoint.jwt]\naudience = \"a\"\nissuer = \"i\"\njwks_file = \"/k.json\"",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("`jwt` needs no secret"), "{error}");
        let error = endpoint("[endpoint.jwt]\naudience = []\nissuer = \"i\"\njwks_file = \"/k\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("at least one audience"), "{error}");
    }

    #[test]
    fn alerts_take_durations_per_status_and_carrier_over_the_defaults() {
        use chrono::TimeDelta;
        use shipfeed::Status;
        let config: Config = toml::from_str(
            r#"
[alerts]
check_every = "30s"
[alerts.stalled]
in_transit = "96h"
exception = "off"
out_for_delivery = "2days"
[alerts.stalled.carrier.DHL]
in_transit = "5d"
pre_transit = "off"
"#,
        )
        .unwrap();
        let options = config.alerts.options().unwrap().unwrap();
        assert_eq!(options.check_every, std::time::Duration::from_secs(30));
        let rules = &options.rules;
        assert_eq!(
            rules.max_quiet(Some("postnl"), Status::InTransit),
            Some(TimeDelta::hours(96))
        );
        assert_eq!(
            rules.max_quiet(Some("dhl"), Status::InTransit),
            Some(TimeDelta::days(5))
        );
        assert_eq!(rules.max_quiet(Some("dhl"), Status::PreTransit), None);
        assert_eq!(
            rules.max_quiet(None, Status::PreTransit),
            Some(TimeDelta::hours(48)),
            "kept default"
        );
        assert_eq!(rules.max_quiet(None, Status::Exception), None);
        assert_eq!(
            rules.max_quiet(None, Status::OutForDelivery),
            Some(TimeDelta::days(2))
        );

        let default = Config::embedded().alerts.options().unwrap().unwrap();
        assert_eq!(default.check_every, std::time::Duration::from_secs(60));
        let off: Config = toml::from_str("[alerts]\ncheck_every = \"off\"").unwrap();
        assert!(off.alerts.options().unwrap().is_none());
    }

    #[test]
    fn alert_rules_that_cannot_hold_are_refused() {
        for (text, why) in [
            ("[alerts.stalled]\ndelivered = \"1h\"", "terminal"),
            (
                "[alerts.stalled]\nin_transit = \"soon\"",
                "alerts.stalled.in_transit",
            ),
            ("[alerts.stalled]\nstuck = \"1h\"", "not a status"),
            ("[alerts.stalled]\nin_transit = \"0s\"", "above zero"),
            ("[alerts]\ncheck_every = \"often\"", "alerts.check_every"),
        ] {
            let config: Config = toml::from_str(text).unwrap();
            let error = config.alerts.options().unwrap_err();
            let message = format!("{error} {}", shipfeed::error_chain(&error));
            assert!(message.contains(why), "{text}: {message}");
        }
    }
}
