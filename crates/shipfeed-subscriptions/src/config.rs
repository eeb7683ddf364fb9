//! What a subscription is: its `[[subscription]]` table as written, and the checked
//! [`Subscription`] the runner drives.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use shipfeed_store::Filter;

use crate::Error;

/// Prefix of a named subscription's cursor and lease: `subscription:<name>`.
pub const PREFIX: &str = "subscription:";

/// The name the top-level `sink` setting runs under (its lease is `subscription:sink`, its
/// metrics are labelled `subscription="sink"`); a `[[subscription]]` cannot take it while
/// `sink` is in use.
pub const SINK_NAME: &str = "sink";

/// One `[[subscription]]` table of the service's TOML, as written. [`plan`] checks it and
/// turns it into a [`Subscription`].
///
/// ```
/// use shipfeed_subscriptions::{Kind, Start, SubscriptionConfig};
/// let config: SubscriptionConfig = toml::from_str(r#"
///     name = "orders"
///     kind = "nats"
///     url = "nats://127.0.0.1:4222"
///     start = "beginning"
/// "#)?;
/// assert_eq!((config.kind, config.start), (Kind::Nats, Start::Beginning));
/// # Ok::<(), toml::de::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Unique name (letters, digits, `-`, `_`, `.`): its cursor and lease are
    /// `subscription:<name>`, its metrics are labelled with it.
    pub name: String,
    /// Where the feed items go.
    pub kind: Kind,
    /// The NATS server (kind `nats`), e.g. `nats://127.0.0.1:4222`, the URL feed items
    /// are POSTed to (kind `http`), or the RabbitMQ broker (kind `rabbitmq`), e.g.
    /// `amqp://user:password@127.0.0.1:5672/%2f`.
    #[serde(default)]
    pub url: Option<String>,
    /// Kind `http`: the environment variable holding the signing secret (`whsec_...`; several,
    /// separated by spaces, while rotating: each request is signed with every one).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Kind `http`: a file holding the signing secret(s), as `secret_env`.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Kind `http`: how long one attempt may take (default `"15s"`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Kind `http`: how many shipments are delivered to at once (default 16); one shipment's
    /// items always go one after the other.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Kind `http`: the waits between a failed attempt and the next (default `["5s", "5m",
    /// "30m", "2h", "5h", "10h", "10h"]`: eight attempts over about 27 hours). After the
    /// last, the message is kept as exhausted, until redelivered.
    #[serde(default)]
    pub retry_schedule: Option<Vec<String>>,
    /// Kind `http`: how long every attempt may fail before the subscription is disabled
    /// (default `"5days"`).
    #[serde(default)]
    pub disable_after: Option<String>,
    /// Kind `http`: POST up to this many items at once, as `{"type": "batch", "items": [...]}`
    /// (for analytics); batches go one after the other, in feed order. Default: one item per
    /// POST.
    #[serde(default)]
    pub batch: Option<usize>,
    /// Kind `rabbitmq`: the exchange items are published to (default
    /// [`RABBITMQ_EXCHANGE`](crate::RABBITMQ_EXCHANGE)); declared as a durable topic exchange
    /// when missing.
    #[serde(default)]
    pub exchange: Option<String>,
    /// The file JSON lines are appended to (kind `file` only).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Where a new subscription starts (default: the feed's end when it first runs). Read only
    /// once: afterwards the subscription resumes from its saved cursor.
    #[serde(default)]
    pub start: Start,
    /// Which feed items it delivers (default: all): `filter = { statuses = [...], providers =
    /// [...], carriers = [...], types = [...] }`, checked when the configuration is read (an
    /// unknown status, provider or type is an error naming the allowed ones). Its cursor moves
    /// past the items left out. See [`Filter`] for what each item type matches, and for the
    /// revisions and retractions that reach it although they no longer match.
    #[serde(default)]
    pub filter: Filter,
}

/// The kind of a subscription's target, as written in its `kind` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// JSON lines on the process's stdout.
    Stdout,
    /// JSON lines appended to a file (`path`).
    File,
    /// NATS JetStream (`url`).
    Nats,
    /// Signed HTTP POSTs (`url`, `secret_env` or `secret_file`), Standard Webhooks.
    Http,
    /// RabbitMQ (`url`, `exchange`): persistent messages, publisher confirms.
    Rabbitmq,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Stdout => "stdout",
            Kind::File => "file",
            Kind::Nats => "nats",
            Kind::Http => "http",
            Kind::Rabbitmq => "rabbitmq",
        }
    }
}

/// Where a subscription starts when it has no saved cursor yet.
///
/// In TOML: `start = "end"` (the default), `start = "beginning"`, or a feed `seq` such as
/// `start = 1200` (the items after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// Only items stored after the subscription first runs.
    #[default]
    End,
    /// Every item of the feed.
    Beginning,
    /// The items after this `seq`.
    After(i64),
}

impl<'de> Deserialize<'de> for Start {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StartVisitor;

        impl Visitor<'_> for StartVisitor {
            type Value = Start;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""end", "beginning" or a feed seq number (0 or more)"#)
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Start, E> {
                match value {
                    "end" => Ok(Start::End),
                    "beginning" => Ok(Start::Beginning),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Start, E> {
                if value < 0 {
                    return Err(E::invalid_value(de::Unexpected::Signed(value), &self));
                }
                Ok(Start::After(value))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Start, E> {
                i64::try_from(value)
                    .map(Start::After)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(value), &self))
            }
        }

        deserializer.deserialize_any(StartVisitor)
    }
}

/// Where a subscription's feed items go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// JSON lines on stdout, flushed before the cursor moves.
    Stdout,
    /// JSON lines appended to a file, synced before the cursor moves.
    File(PathBuf),
    /// NATS JetStream at this URL: stream [`NATS_STREAM`](crate::NATS_STREAM), one message
    /// per item, acknowledged before the cursor moves.
    Nats(String),
    /// Signed HTTP POSTs, one per item, retried per item on a schedule, in order per shipment.
    Http(Box<HttpTarget>),
    /// RabbitMQ: one persistent message per item on a topic exchange, confirmed by the broker
    /// before the cursor moves.
    Rabbitmq(RabbitmqTarget),
}

/// Where a RabbitMQ subscription publishes.
#[derive(Clone, PartialEq, Eq)]
pub struct RabbitmqTarget {
    /// The broker, `amqp://user:password@host:port/vhost` (the default vhost `/` is `%2f`).
    pub url: String,
    /// The topic exchange (declared durable when missing).
    pub exchange: String,
}

impl fmt::Debug for RabbitmqTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitmqTarget")
            .field("url", &redacted(&self.url))
            .field("exchange", &self.exchange)
            .finish()
    }
}

impl RabbitmqTarget {
    /// A target for the broker at `url`, publishing to `exchange`.
    ///
    /// ```
    /// use shipfeed_subscriptions::RabbitmqTarget;
    /// let target = RabbitmqTarget::new("amqp://app:s3cret@127.0.0.1:5672/%2f", "shipfeed")?;
    /// assert_eq!(target.exchange, "shipfeed");
    /// assert!(RabbitmqTarget::new("amqps://h/%2f", "shipfeed").is_err(), "no TLS in this build");
    /// assert!(RabbitmqTarget::new("amqp://h/%2f", "").is_err(), "the default exchange routes no topics");
    /// # Ok::<(), shipfeed_subscriptions::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for a URL that is not an `amqp://` one (`amqps://` included: this
    /// build has no TLS for AMQP) or an exchange name RabbitMQ refuses (empty, longer than 255
    /// bytes, or with characters other than letters, digits, `-`, `_`, `.` and `:`).
    pub fn new(url: &str, exchange: &str) -> Result<Self, Error> {
        let parsed: lapin::uri::AMQPUri = url.parse().map_err(|e| {
            Error::Config(format!("`url` {} is not an AMQP URL: {e}", redacted(url)))
        })?;
        if parsed.scheme != lapin::uri::AMQPScheme::AMQP {
            return Err(Error::Config(format!(
                "`url` {}: amqps:// is not supported (no TLS for AMQP in this build); use \
                 amqp:// on 127.0.0.1 or a private network",
                redacted(url)
            )));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
        if exchange.is_empty() || exchange.len() > 255 || !exchange.chars().all(allowed) {
            return Err(Error::Config(format!(
                "`exchange` `{exchange}`: use 1 to 255 letters, digits, `-`, `_`, `.` and `:`"
            )));
        }
        Ok(RabbitmqTarget {
            url: url.to_owned(),
            exchange: exchange.to_owned(),
        })
    }
}

/// Where and how an HTTP push subscription POSTs.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// The subscriber's URL.
    pub url: reqwest::Url,
    /// The signing secrets (every request carries one signature per secret).
    pub secrets: Vec<crate::Secret>,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// How many shipments are delivered to at once.
    pub concurrency: usize,
    /// The waits between a failed attempt and the next; after the last, the message is
    /// exhausted.
    pub retry_schedule: Vec<Duration>,
    /// How long every attempt may fail before the subscription is disabled.
    pub disable_after: Duration,
    /// Items per POST, when batched.
    pub batch: Option<usize>,
}

impl fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTarget")
            .field("url", &redacted(self.url.as_str()))
            .field("secrets", &self.secrets.len())
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("retry_schedule", &self.retry_schedule)
            .field("disable_after", &self.disable_after)
            .field("batch", &self.batch)
            .finish()
    }
}

impl HttpTarget {
    /// A target for `url` signing with `secrets`, with the defaults: 15 s per attempt, 16
    /// shipments at once, Svix's schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h),
    /// disabled after failing for 5 days.
    pub fn new(url: reqwest::Url, secrets: Vec<crate::Secret>) -> Self {
        const MINUTE: u64 = 60;
        const HOUR: u64 = 60 * MINUTE;
        HttpTarget {
            url,
            secrets,
            timeout: Duration::from_secs(15),
            concurrency: 16,
            retry_schedule: [
                5,
                5 * MINUTE,
                30 * MINUTE,
                2 * HOUR,
                5 * HOUR,
                10 * HOUR,
                10 * HOUR,
            ]
            .map(Duration::from_secs)
            .to_vec(),
            disable_after: Duration::from_secs(5 * 24 * HOUR),
            batch: None,
        }
    }
}

impl Target {
    /// The target of the top-level `sink` setting: `"none"` (no target), `"stdout"`, a
    /// `nats://` URL, or else a file path.
    ///
    /// ```
    /// use shipfeed_subscriptions::Target;
    /// assert_eq!(Target::from_sink("none"), None);
    /// assert_eq!(Target::from_sink("stdout"), Some(Target::Stdout));
    /// assert_eq!(
    ///     Target::from_sink("nats://127.0.0.1:4222"),
    ///     Some(Target::Nats("nats://127.0.0.1:4222".into()))
    /// );
    /// assert_eq!(
    ///     Target::from_sink("/var/lib/shipfeed/events.jsonl"),
    ///     Some(Target::File("/var/lib/shipfeed/events.jsonl".into()))
    /// );
    /// ```
    pub fn from_sink(sink: &str) -> Option<Target> {
        match sink {
            "none" => None,
            "stdout" => Some(Target::Stdout),
            url if url.starts_with("nats://") => Some(Target::Nats(url.to_owned())),
            path => Some(Target::File(PathBuf::from(path))),
        }
    }

    /// What two targets must not share: one stdout, one file, one NATS server (whose single
    /// stream would drop the second copy of every message as a duplicate).
    /// (Two subscriptions may POST to one receiver, each with its own filter.)
    fn exclusive_key(&self) -> Option<String> {
        Some(match self {
            Target::Stdout => "stdout".to_owned(),
            Target::File(path) => format!("file {}", path.display()),
            Target::Nats(url) => format!("NATS server {url}"),
            Target::Http(_) => return None,
            // Its messages would reach every queue bound to the exchange twice.
            Target::Rabbitmq(rabbitmq) => format!(
                "RabbitMQ exchange {} at {}",
                rabbitmq.exchange,
                redacted(&rabbitmq.url)
            ),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Stdout => f.write_str("JSON lines on stdout"),
            Target::File(path) => write!(f, "JSON lines appended to {}", path.display()),
            Target::Nats(url) => write!(
                f,
                "NATS JetStream {}, stream {}, subjects {}.<provider>.<status>",
                redacted(url),
                crate::NATS_STREAM,
                crate::NATS_SUBJECT_PREFIX
            ),
            Target::Http(http) => {
                write!(f, "signed HTTP POSTs to {} (", redacted(http.url.as_str()))?;
                match http.batch {
                    Some(size) => write!(f, "batches of up to {size}, one at a time")?,
                    None => write!(f, "{} shipments at once", http.concurrency)?,
                }
                write!(f, ", {} attempts)", http.retry_schedule.len() + 1)
            }
            Target::Rabbitmq(rabbitmq) => write!(
                f,
                "RabbitMQ {}, topic exchange {}, routing keys {}.<type>.<provider>.<status>",
                redacted(&rabbitmq.url),
                rabbitmq.exchange,
                crate::RABBITMQ_ROUTING_PREFIX
            ),
        }
    }
}

/// `url` with the secret of its user info masked, for logs and banners: the password of
/// `user:password@`, or the whole of `token@` (NATS reads a lone user as a token).
pub(crate) fn redacted(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => {
            let shown = match url[scheme_end..scheme_end + at].split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_owned(),
            };
            format!("{}{shown}{}", &url[..scheme_end], &url[scheme_end + at..])
        }
        None => url.to_owned(),
    }
}

/// A checked subscription: its name, target, start, filter, and the names of its cursor and
/// lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    name: String,
    target: Target,
    start: Start,
    cursor: String,
    filter: Filter,
}

impl Subscription {
    /// The subscription `name` (cursor and lease `subscription:<name>`).
    ///
    /// # Errors
    /// [`Error::Config`] for an empty name or one with characters other than letters,
    /// digits, `-`, `_` and `.`.
    pub fn new(name: &str, target: Target, start: Start) -> Result<Self, Error> {
        check_name(name)?;
        Ok(Subscription {
            name: name.to_owned(),
            target,
            start,
            cursor: format!("{PREFIX}{name}"),
            filter: Filter::default(),
        })
    }

    /// The same subscription delivering only the items `filter` admits (its cursor still moves
    /// past the others).
    #[must_use]
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Which feed items it delivers (empty: all).
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// The subscription of the top-level `sink` setting (`None` for `"none"`), as the service
    /// ran it before named subscriptions: it resumes from the cursor it always saved
    /// (`stdout`, `file:<path>` or `nats:SHIPFEED`) and, with none saved, starts at the
    /// beginning of the feed. Its lease is `subscription:sink`.
    ///
    /// ```
    /// use shipfeed_subscriptions::Subscription;
    /// let sink = Subscription::from_sink("/var/lib/shipfeed/events.jsonl").unwrap();
    /// assert_eq!(sink.cursor(), "file:/var/lib/shipfeed/events.jsonl");
    /// assert_eq!(sink.lease(), "subscription:sink");
    /// ```
    pub fn from_sink(sink: &str) -> Option<Self> {
        let target = Target::from_sink(sink)?;
        let cursor = match &target {
            Target::Stdout => "stdout".to_owned(),
            Target::File(path) => format!("file:{}", path.display()),
            Target::Nats(_) => format!("nats:{}", crate::NATS_STREAM),
            // `sink` never names one.
            Target::Http(_) | Target::Rabbitmq(_) => return None,
        };
        Some(Subscription {
            name: SINK_NAME.to_owned(),
            target,
            start: Start::Beginning,
            cursor,
            filter: Filter::default(),
        })
    }

    /// The subscription's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its feed items go.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Where it starts when it has no saved cursor.
    pub fn start(&self) -> Start {
        self.start
    }

    /// The name its position is saved under in the store.
    pub fn cursor(&self) -> &str {
        &self.cursor
    }

    /// The name of the lease under which one replica at a time drives it:
    /// `subscription:<name>`.
    pub fn lease(&self) -> String {
        format!("{PREFIX}{}", self.name)
    }
}

impl SubscriptionConfig {
    /// The checked subscription: the key its kind needs is there, no other target key is.
    ///
    /// # Errors
    /// [`Error::Config`] saying what is missing, superfluous or malformed.
    pub fn check(&self) -> Result<Subscription, Error> {
        let name = &self.name;
        check_name(name)?;
        let problem = |text: String| Error::Config(format!("subscription `{name}`: {text}"));
        let kind = self.kind.as_str();
        let extra = |key: &str, belongs: &str| {
            problem(format!(
                "`{key}` is only for kind \"{belongs}\" (this one is kind \"{kind}\")"
            ))
        };
        let target = match self.kind {
            Kind::Stdout => Target::Stdout,
            Kind::File => match &self.path {
                Some(path) if !path.as_os_str().is_empty() => Target::File(path.clone()),
                _ => return Err(problem("kind \"file\" needs `path`".to_owned())),
            },
            Kind::Nats => match &self.url {
                Some(url) if !url.is_empty() => Target::Nats(url.clone()),
                _ => return Err(problem("kind \"nats\" needs `url`".to_owned())),
            },
            Kind::Http => Target::Http(Box::new(self.http_target().map_err(problem)?)),
            Kind::Rabbitmq => match &self.url {
                Some(url) if !url.is_empty() => Target::Rabbitmq(
                    RabbitmqTarget::new(
                        url,
                        self.exchange.as_deref().unwrap_or(crate::RABBITMQ_EXCHANGE),
                    )
                    .map_err(|e| problem(e.to_string()))?,
                ),
                _ => return Err(problem("kind \"rabbitmq\" needs `url`".to_owned())),
            },
        };
        if self.url.is_some() && !matches!(self.kind, Kind::Nats | Kind::Http | Kind::Rabbitmq) {
            return Err(extra("url", "nats"));
        }
        if self.exchange.is_some() && self.kind != Kind::Rabbitmq {
            return Err(extra("exchange", "rabbitmq"));
        }
        if self.kind != Kind::Http {
            for (key, given) in [
                ("secret_env", self.secret_env.is_some()),
                ("secret_file", self.secret_file.is_some()),
                ("timeout", self.timeout.is_some()),
                ("concurrency", self.concurrency.is_some()),
                ("retry_schedule", self.retry_schedule.is_some()),
                ("disable_after", self.disable_after.is_some()),
                ("batch", self.batch.is_some()),
            ] {
                if given {
                    return Err(extra(key, "http"));
                }
            }
        }
        if self.path.is_some() && self.kind != Kind::File {
            return Err(extra("path", "file"));
        }
        Ok(Subscription::new(name, target, self.start)?.with_filter(self.filter.clone()))
    }
}

impl SubscriptionConfig {
    /// The HTTP target of a kind `http` table, its secrets read from where it says.
    fn http_target(&self) -> Result<HttpTarget, String> {
        let url = match &self.url {
            Some(url) if !url.is_empty() => url,
            _ => return Err("kind \"http\" needs `url`".to_owned()),
        };
        let url = reqwest::Url::parse(url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| format!("`url` {} is not an http:// or https:// URL", redacted(url)))?;
        let secrets = match (&self.secret_env, &self.secret_file) {
            (Some(variable), None) => std::env::var(variable)
                .map_err(|_| {
                    format!("`secret_env`: the environment variable {variable} is not set")
                })
                .and_then(|text| {
                    crate::Secret::parse_all(&text)
                        .map_err(|e| format!("`secret_env` {variable}: {e}"))
                })?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("`secret_file` {}: {e}", path.display()))
                .and_then(|text| {
                    crate::Secret::parse_all(&text)
                        .map_err(|e| format!("`secret_file` {}: {e}", path.display()))
                })?,
            _ => return Err(
                "kind \"http\" needs its signing secret in one of `secret_env` or `secret_file`"
                    .to_owned(),
            ),
        };
        let mut target = HttpTarget::new(url, secrets);
        let duration = |key: &str, text: &str| {
            humantime::parse_duration(text.trim())
                .map_err(|e| format!("`{key}` {text:?}: {e}"))
                .and_then(|d| {
                    if d.is_zero() {
                        Err(format!("`{key}` must be longer than 0"))
                    } else {
                        Ok(d)
                    }
                })
        };
        if let Some(text) = &self.timeout {
            target.timeout = duration("timeout", text)?;
        }
        if let Some(concurrency) = self.concurrency {
            if concurrency == 0 {
                return Err("`concurrency` must be at least 1".to_owned());
            }
            target.concurrency = concurrency;
        }
        if let Some(schedule) = &self.retry_schedule {
            target.retry_schedule = schedule
                .iter()
                .map(|text| duration("retry_schedule", text))
                .collect::<Result<_, _>>()?;
        }
        if let Some(text) = &self.disable_after {
            target.disable_after = duration("disable_after", text)?;
        }
        if let Some(size) = self.batch {
            if size == 0 {
                return Err("`batch` must be at least 1".to_owned());
            }
            target.batch = Some(size);
        }
        Ok(target)
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || !name.chars().all(allowed) {
        return Err(Error::Config(format!(
            "subscription name `{name}`: use letters, digits, `-`, `_` and `.` (at least one)"
        )));
    }
    Ok(())
}

/// Every subscription to run: the `[[subscription]]` tables checked, plus the one of the
/// top-level `sink` setting when given (and not `"none"`).
///
/// ```
/// use shipfeed_subscriptions::{plan, SubscriptionConfig};
/// let tables: Vec<SubscriptionConfig> = vec![toml::from_str(
///     "name = 'audit'\nkind = 'file'\npath = '/var/lib/shipfeed/audit.jsonl'",
/// )?];
/// let all = plan(&tables, Some("nats://127.0.0.1:4222"))?;
/// let names: Vec<&str> = all.iter().map(|s| s.name()).collect();
/// assert_eq!(names, ["audit", "sink"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::Config`] for a table that does not check, a name used twice (`sink` counts as
/// used while the `sink` setting is), or two subscriptions writing to the same stdout, file or
/// NATS server.
pub fn plan(tables: &[SubscriptionConfig], sink: Option<&str>) -> Result<Vec<Subscription>, Error> {
    let mut all = tables
        .iter()
        .map(SubscriptionConfig::check)
        .collect::<Result<Vec<_>, _>>()?;
    all.extend(sink.and_then(Subscription::from_sink));
    let mut names = BTreeMap::new();
    let mut targets = BTreeMap::new();
    for subscription in &all {
        let name = subscription.name();
        if names.insert(name, ()).is_some() {
            return Err(Error::Config(if name == SINK_NAME {
                format!(
                    "subscription `{SINK_NAME}`: the name is taken by the top-level `sink` setting"
                )
            } else {
                format!("subscription `{name}` is configured twice")
            }));
        }
        let Some(key) = subscription.target().exclusive_key() else {
            continue;
        };
        if let Some(first) = targets.insert(key.clone(), name) {
            return Err(Error::Config(format!(
                "subscriptions `{first}` and `{name}` both write to {key}; give each its own"
            )));
        }
    }
    Ok(all)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn table(text: &str) -> Result<SubscriptionConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn checked(text: &str) -> Result<Subscription, String> {
        table(text)?.check().map_err(|e| e.to_string())
    }

    #[test]
    fn each_kind_takes_its_own_key() {
        let file = checked("name = 'a'\nkind = 'file'\npath = '/tmp/a.jsonl'").unwrap();
        assert_eq!(file.target(), &Target::File("/tmp/a.jsonl".into()));
        assert_eq!(
            (file.cursor(), file.lease()),
            ("subscription:a", "subscription:a".into())
        );
        assert_eq!(file.start(), Start::End, "the default start");
        let nats = checked("name = 'b'\nkind = 'nats'\nurl = 'nats://x:4222'").unwrap();
        assert_eq!(nats.target(), &Target::Nats("nats://x:4222".into()));
        assert_eq!(
            checked("name = 'c'\nkind = 'stdout'").unwrap().target(),
            &Target::Stdout
        );

        for (text, says) in [
            ("name = 'a'\nkind = 'file'", "kind \"file\" needs `path`"),
            (
                "name = 'a'\nkind = 'file'\npath = ''",
                "kind \"file\" needs `path`",
            ),
            ("name = 'a'\nkind = 'nats'", "kind \"nats\" needs `url`"),
            (
                "name = 'a'\nkind = 'stdout'\nurl = 'nats://x'",
                "`url` is only for kind \"nats\" (this one is kind \"stdout\")",
            ),
            (
                "name = 'a'\nkind = 'nats'\nurl = 'nats://x'\npath = '/tmp/a'",
                "`path` is only for kind \"file\"",
            ),
            ("name = 'a b'\nkind = 'stdout'", "subscription name `a b`"),
            ("name = ''\nkind = 'stdout'", "subscription name ``"),
        ] {
            let error = checked(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn unknown_keys_kinds_and_starts_are_refused_when_parsing() {
        for (text, says) in [
            (
                "name = 'a'\nkind = 'stdout'\nsubject = 'x'",
                "unknown field `subject`",
            ),
            ("name = 'a'\nkind = 'kafka'", "unknown variant `kafka`"),
            (
                "name = 'a'\nkind = 'stdout'\nstart = 'now'",
                r#""end", "beginning" or a feed seq"#,
            ),
            (
                "name = 'a'\nkind = 'stdout'\nstart = -1",
                r#""end", "beginning" or a feed seq"#,
            ),
            ("kind = 'stdout'", "missing field `name`"),
        ] {
            let error = table(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn a_filter_is_read_and_checked_with_the_table() {
        let plain = checked("name = 'a'\nkind = 'stdout'").unwrap();
        assert!(plain.filter().is_empty(), "no filter: every item");
        for text in [
            "filter = { statuses = ['delivered', 'out_for_delivery'], carriers = ['DHL'] }",
            "[filter]\nstatuses = ['delivered', 'out_for_delivery']\ncarriers = ['dhl']",
        ] {
            let subscription = checked(&format!(
                "name = 'a'\nkind = 'file'\npath = '/tmp/a'\n{text}"
            ))
            .unwrap();
            let expected = shipfeed_store::Filter::from_query([
                ("status", "out_for_delivery,delivered"),
                ("carrier", "dhl"),
            ])
            .unwrap();
            assert_eq!(subscription.filter(), &expected, "{text}");
        }
        for (text, says) in [
            (
                "filter = { statuses = ['shipped'] }",
                "unknown status `shipped`; allowed: unknown, pre_transit",
            ),
            (
                "filter = { providers = ['dhl'] }",
                "unknown provider `dhl`; allowed: sendcloud, sevensenders, happycolis, shipup",
            ),
            (
                "filter = { types = ['events'] }",
                "unknown type `events`; allowed: event, revision, retraction",
            ),
            (
                "filter = { status = ['delivered'] }",
                "unknown field `status`",
            ),
        ] {
            let error = table(&format!("name = 'a'\nkind = 'stdout'\n{text}")).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn a_rabbitmq_table_takes_url_and_exchange_and_its_password_is_never_shown() {
        let plain = checked("name = 'r'\nkind = 'rabbitmq'\nurl = 'amqp://app:hunter2@h:5672/%2f'")
            .unwrap();
        let Target::Rabbitmq(target) = plain.target() else {
            panic!("{:?}", plain.target());
        };
        assert_eq!(
            target.exchange,
            crate::RABBITMQ_EXCHANGE,
            "the default exchange"
        );
        for shown in [format!("{target:?}"), plain.target().to_string()] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("app:***@h:5672"), "{shown}");
        }
        let named = checked(
            "name = 'r'\nkind = 'rabbitmq'\nurl = 'amqp://h/%2f'\nexchange = 'tracking.v1'",
        )
        .unwrap();
        assert!(matches!(named.target(), Target::Rabbitmq(t) if t.exchange == "tracking.v1"));
        for (text, says) in [
            (
                "name = 'r'\nkind = 'rabbitmq'",
                "kind \"rabbitmq\" needs `url`",
            ),
            (
                "name = 'r'\nkind = 'rabbitmq'\nurl = 'amqps://h/%2f'",
                "amqps:// is not supported",
            ),
            (
                "name = 'r'\nkind = 'rabbitmq'\nurl = 'http://h/'",
                "is not an AMQP URL",
            ),
            (
                "name = 'r'\nkind = 'rabbitmq'\nurl = 'amqp://h/%2f'\nexchange = 'a b'",
                "`exchange` `a b`",
            ),
            (
                "name = 'r'\nkind = 'nats'\nurl = 'nats://h'\nexchange = 'x'",
                "`exchange` is only for kind \"rabbitmq\"",
            ),
            (
                "name = 'r'\nkind = 'rabbitmq'\nurl = 'amqp://h/%2f'\ntimeout = '5s'",
                "`timeout` is only for kind \"http\"",
            ),
        ] {
            let error = checked(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
        let tables: Vec<SubscriptionConfig> = [
            "name = 'a'\nkind = 'rabbitmq'\nurl = 'amqp://h/%2f'",
            "name = 'b'\nkind = 'rabbitmq'\nurl = 'amqp://h/%2f'",
        ]
        .iter()
        .map(|t| table(t).unwrap())
        .collect();
        let error = plan(&tables, None).unwrap_err().to_string();
        assert!(
            error.contains("both write to RabbitMQ exchange shipfeed at amqp://h/%2f"),
            "{error}"
        );
        assert_eq!(plan(&tables[..1], None).unwrap().len(), 1);
    }

    #[test]
    fn a_nats_password_is_never_shown() {
        assert_eq!(
            redacted("nats://app:hunter2@h:4222"),
            "nats://app:***@h:4222"
        );
        assert_eq!(redacted("nats://s3cret@h:4222"), "nats://***@h:4222");
        assert_eq!(redacted("nats://h:4222"), "nats://h:4222");
        let shown = Target::Nats("nats://app:hunter2@h:4222".into()).to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn starts_parse() {
        for (text, start) in [
            ("", Start::End),
            ("start = 'end'", Start::End),
            ("start = 'beginning'", Start::Beginning),
            ("start = 0", Start::After(0)),
            ("start = 1200", Start::After(1200)),
        ] {
            let config = table(&format!("name = 'a'\nkind = 'stdout'\n{text}")).unwrap();
            assert_eq!(config.start, start, "{text}");
        }
    }

    #[test]
    fn the_sink_setting_keeps_its_cursor_names_and_starts_at_the_beginning() {
        for (sink, cursor) in [
            ("stdout", "stdout"),
            (
                "/var/lib/shipfeed/events.jsonl",
                "file:/var/lib/shipfeed/events.jsonl",
            ),
            ("nats://127.0.0.1:4222", "nats:SHIPFEED"),
        ] {
            let subscription = Subscription::from_sink(sink).unwrap();
            assert_eq!(subscription.cursor(), cursor, "{sink}");
            assert_eq!(subscription.name(), SINK_NAME);
            assert_eq!(subscription.start(), Start::Beginning);
        }
        assert_eq!(Subscription::from_sink("none"), None);
    }

    #[test]
    fn a_plan_has_unique_names_and_unshared_targets() {
        let tables = |texts: &[&str]| -> Vec<SubscriptionConfig> {
            texts.iter().map(|t| table(t).unwrap()).collect()
        };
        let a = "name = 'a'\nkind = 'file'\npath = '/tmp/a'";
        let b = "name = 'b'\nkind = 'file'\npath = '/tmp/b'";
        let planned = plan(&tables(&[a, b]), Some("stdout")).unwrap();
        let names: Vec<&str> = planned.iter().map(Subscription::name).collect();
        assert_eq!(names, ["a", "b", "sink"]);
        assert_eq!(plan(&tables(&[a]), Some("none")).unwrap().len(), 1);
        assert!(plan(&[], None).unwrap().is_empty());

        for (texts, sink, says) in [
            (
                vec![a, "name = 'a'\nkind = 'stdout'"],
                None,
                "subscription `a` is configured twice",
            ),
            (
                vec!["name = 'sink'\nkind = 'stdout'"],
                Some("/tmp/events.jsonl"),
                "the name is taken by the top-level `sink` setting",
            ),
            (
                vec![a, "name = 'c'\nkind = 'file'\npath = '/tmp/a'"],
                None,
                "subscriptions `a` and `c` both write to file /tmp/a",
            ),
            (
                vec!["name = 'c'\nkind = 'stdout'"],
                Some("stdout"),
                "subscriptions `c` and `sink` both write to stdout",
            ),
            (
                vec!["name = 'n'\nkind = 'nats'\nurl = 'nats://h:4222'"],
                Some("nats://h:4222"),
                "both write to NATS server nats://h:4222",
            ),
        ] {
            let error = plan(&tables(&texts), sink).unwrap_err().to_string();
            assert!(error.contains(says), "{texts:?} {sink:?}: {error}");
        }
        // A name is still checked when the sink setting is not in use.
        assert_eq!(
            plan(&tables(&["name = 'sink'\nkind = 'stdout'"]), None)
                .unwrap()
                .len(),
            1
        );
    }
}
