//! Service configuration: a TOML file, environment overrides, and an embedded default that
//! needs no file at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use shipfeed::{Credentials, Provider, Secret};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// SQLite database file.
    #[serde(default = "default_database")]
    pub database: PathBuf,
    /// Largest accepted body, in bytes (larger → 413).
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Print new events as JSON lines on stdout (the outbox sink).
    #[serde(default = "default_true")]
    pub stdout_sink: bool,
    /// Inbound webhook endpoints, each served at `/webhooks/<name>`.
    #[serde(default, rename = "endpoint")]
    pub endpoints: Vec<EndpointConfig>,
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
fn default_database() -> PathBuf {
    PathBuf::from("shipfeed.db")
}
fn default_body_limit() -> usize {
    1024 * 1024
}
fn default_true() -> bool {
    true
}

impl Config {
    /// The embedded default: SQLite in the working directory, 127.0.0.1:8080, stdout sink, and
    /// one endpoint per webhook provider whose secret comes from `SHIPFEED_<PROVIDER>_SECRET`
    /// (Shipup: the Basic password of user `shipup`).
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
            database: default_database(),
            body_limit_bytes: default_body_limit(),
            stdout_sink: true,
            endpoints: vec![
                endpoint(Provider::Sendcloud, None),
                endpoint(Provider::HappyColis, None),
                endpoint(Provider::Shipup, Some("shipup")),
            ],
        }
    }

    /// Reads `path` (or the embedded default when `None`), then applies `SHIPFEED_LISTEN`,
    /// `SHIPFEED_DATABASE` and `SHIPFEED_BODY_LIMIT_BYTES`.
    ///
    /// # Errors
    /// Unreadable file, invalid TOML, duplicate endpoint names, bad overrides.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("read {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?
            }
            None => Config::embedded(),
        };
        if let Ok(listen) = std::env::var("SHIPFEED_LISTEN") {
            config.listen = listen
                .parse()
                .with_context(|| format!("SHIPFEED_LISTEN={listen}"))?;
        }
        if let Ok(database) = std::env::var("SHIPFEED_DATABASE") {
            config.database = PathBuf::from(database);
        }
        if let Ok(limit) = std::env::var("SHIPFEED_BODY_LIMIT_BYTES") {
            config.body_limit_bytes = limit
                .parse()
                .with_context(|| format!("SHIPFEED_BODY_LIMIT_BYTES={limit}"))?;
        }
        let mut names: Vec<&str> = config.endpoints.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("endpoint `{}` is configured twice", pair[0]);
        }
        Ok(config)
    }
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
    /// A configured secret file that cannot be read.
    pub fn credentials(&self) -> Result<Credentials> {
        let secret = match (&self.secret_file, &self.secret_env) {
            (Some(file), _) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("read secret file {}", file.display()))?
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
        assert!(config.stdout_sink);
        let dir = std::env::temp_dir().join(format!("shipfeed-config-{}", std::process::id()));
        std::fs::write(&dir, "[[endpoint]]\nname='a'\nprovider='shipup'\n[[endpoint]]\nname='a'\nprovider='sendcloud'\n").unwrap();
        let err = Config::load(Some(&dir)).unwrap_err();
        assert!(err.to_string().contains("configured twice"));
        let _ = std::fs::remove_file(dir);
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
