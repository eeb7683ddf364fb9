//! Bearer tokens for the read API (`/v1/*`, and `/metrics` when `[api] protect_metrics`).
//!
//! Each `[[api_token]]` names a token read from an environment variable or a file, and its
//! scopes: `read` (the feed, shipments, deliveries, dead letters' metadata, drift, alerts) or
//! `admin` (everything `read` can, plus dead letters' raw bodies and whatever changes state).
//! Only the SHA-256 digest of each token is kept once the service is built; a presented token
//! is hashed and compared with every digest in constant time.
//!
//! With no `[[api_token]]` at all the API is open, which is only allowed on a loopback address
//! ([`ApiAuth::check_listen`]): the embedded default on 127.0.0.1 stays zero-configuration,
//! and `shipfeed serve` refuses to expose an open API to the network.
//!
//! The check is one middleware (`require`) layered over route groups by the router, so a
//! route is protected by the group it is added to, never by code of its own.
//!
//! **Console sessions.** The operator console signs in with the same tokens
//! ([`ApiAuth::sign_in`]) and then carries a session in an `HttpOnly`, `SameSite=Strict`
//! cookie ([`SESSION_COOKIE`]), never the token itself and never in a URL. The session is
//! stateless, so that any replica accepts it: the token's name, an expiry, and an HMAC of both
//! keyed by the token's digest (which only the service holds). Removing or changing the token
//! ends its sessions. A request authenticated by the cookie that changes state must also carry
//! the session's CSRF token in [`CSRF_HEADER`], an HMAC of the cookie that a page of another
//! site can neither read nor compute. Whatever authenticates it, a request that changes state
//! and says it comes from another site (`Origin`, `Sec-Fetch-Site`) is refused, also when the
//! API is open on loopback, where a browser's ambient access is the only credential.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;
use crate::ServiceError;

/// Tokens shorter than this are refused at startup: a bearer token is the API's only
/// protection, and short ones can be guessed.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The environment variable the embedded default (no configuration file) reads an `admin`
/// token from.
pub const EMBEDDED_TOKEN_ENV: &str = "SHIPFEED_API_TOKEN";

/// The console's session cookie (see the module's documentation).
pub const SESSION_COOKIE: &str = "shipfeed_session";

/// The header a console request that changes state carries its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How long a console session lasts: one working day, then the console asks for the token
/// again.
pub const SESSION_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(12);

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reading the feed, shipments, deliveries, dead letters (without their bodies), drift,
    /// alerts, the subscriptions and their parked messages (without their bodies) and, when
    /// protected, the metrics.
    Read,
    /// Everything `read` allows, plus dead letters' raw bodies and every request that
    /// changes state (pausing, resuming and redelivering a subscription).
    Admin,
}

impl Scope {
    /// The scope's name, as configured and as named in a 403.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

fn default_scopes() -> Vec<Scope> {
    // The least a token can do, when its table leaves `scopes` out.
    vec![Scope::Read]
}

/// One `[[api_token]]`: a named bearer token for the API and what it may do.
///
/// ```toml
/// [[api_token]]
/// name = "support-tools"
/// token_env = "SHIPFEED_TOKEN_SUPPORT"   # or token_file = "/run/secrets/shipfeed-support"
/// scopes = ["read"]                      # "admin" includes read; default ["read"]
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {
    /// Who holds the token: named in the banner and in debug logs, never the token itself.
    pub name: String,
    /// Environment variable holding the token.
    pub token_env: Option<String>,
    /// File holding the token (trailing newline ignored).
    pub token_file: Option<PathBuf>,
    /// What the token allows (default: `["read"]`).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<Scope>,
}

impl ApiTokenConfig {
    /// Where the token comes from, for the banner: `$VAR` or `file <path>`.
    pub fn source(&self) -> String {
        match (&self.token_file, &self.token_env) {
            (Some(file), _) => format!("file {}", file.display()),
            (None, Some(var)) => format!("${var}"),
            (None, None) => "nowhere".to_owned(),
        }
    }
}

/// `[api]`: how the HTTP API is protected beyond `/v1`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `/metrics` needs a `read` token too (default: false, so that a Prometheus without
    /// credentials keeps scraping). Ignored while no token is configured.
    #[serde(default)]
    pub protect_metrics: bool,
}

/// Checks the `[[api_token]]` tables on their own (not the tokens: they are read when the
/// service is built).
///
/// # Errors
/// [`ServiceError::Config`] naming the table: a blank or repeated name, not exactly one of
/// `token_env` and `token_file`, a blank variable or path, no scope.
pub fn check_config(tokens: &[ApiTokenConfig]) -> Result<(), ServiceError> {
    let mut names: Vec<&str> = Vec::with_capacity(tokens.len());
    for token in tokens {
        let fail = |message: &str| {
            Err(ServiceError::Config(format!(
                "api_token `{}`: {message}",
                token.name
            )))
        };
        if token.name.trim().is_empty() {
            return Err(ServiceError::Config(
                "an api_token has a blank name".to_owned(),
            ));
        }
        match (&token.token_env, &token.token_file) {
            (Some(var), None) if var.trim().is_empty() => return fail("`token_env` is blank"),
            (None, Some(file)) if file.as_os_str().is_empty() => {
                return fail("`token_file` is blank")
            }
            (Some(_), None) | (None, Some(_)) => {}
            _ => return fail("set exactly one of token_env and token_file"),
        }
        if token.scopes.is_empty() {
            return fail("give it a scope: scopes = [\"read\"] or [\"admin\"]");
        }
        names.push(&token.name);
    }
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(ServiceError::Config(format!(
            "api_token `{}` is configured twice",
            pair[0]
        )));
    }
    Ok(())
}

/// One usable token: its name, the digest of its value and its scopes.
struct Token {
    name: String,
    digest: [u8; 32],
    admin: bool,
    read: bool,
}

impl Token {
    fn allows(&self, needed: Scope) -> bool {
        match needed {
            Scope::Read => self.read || self.admin,
            Scope::Admin => self.admin,
        }
    }

    /// What it allows, `admin` implying `read`.
    fn scopes(&self) -> Vec<Scope> {
        [(true, Scope::Read), (self.admin, Scope::Admin)]
            .into_iter()
            .filter_map(|(has, scope)| has.then_some(scope))
            .collect()
    }

    /// An HMAC of `parts` keyed by the token's digest: what only this service can compute
    /// for this token.
    fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.digest)
            .expect("HMAC-SHA256 takes a key of any length");
        for part in parts {
            // Length-prefixed, so that no two different lists of parts sign the same bytes.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// The session cookie's value for a session that ends at `expires` (Unix seconds).
    fn session_cookie(&self, expires: i64) -> String {
        let expires = expires.to_string();
        let mac = self.mac(&[b"session", self.name.as_bytes(), expires.as_bytes()]);
        format!(
            "{}.{expires}.{}",
            URL_SAFE_NO_PAD.encode(&self.name),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The CSRF token of the session whose cookie is `cookie`.
    fn csrf(&self, cookie: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(&[b"csrf", cookie.as_bytes()]))
    }
}

/// A signed-in console session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Session {
    /// The token's name.
    pub name: String,
    /// What it allows (`admin` implies `read`).
    pub scopes: Vec<Scope>,
    /// When it ends.
    pub expires: DateTime<Utc>,
    /// The CSRF token every request that changes state sends in [`CSRF_HEADER`].
    pub csrf: String,
    /// The value of the [`SESSION_COOKIE`] cookie (never serialized: the page cannot read
    /// it, the cookie is `HttpOnly`).
    #[serde(skip)]
    pub cookie: String,
}

/// The API's tokens, as digests, and whether they are enforced.
pub struct ApiAuth {
    /// Whether any `[[api_token]]` is configured: then every protected request needs one of
    /// `tokens`, even when none of them is set (fail closed).
    enforced: bool,
    tokens: Vec<Token>,
    /// Configured tokens whose variable is unset or whose value is empty, by name.
    unset: Vec<String>,
    protect_metrics: bool,
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the digests are not secret, but nothing here needs them.
        let names: Vec<&str> = self.tokens.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("ApiAuth")
            .field("enforced", &self.enforced)
            .field("tokens", &names)
            .field("unset", &self.unset)
            .field("protect_metrics", &self.protect_metrics)
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl ApiAuth {
    /// Reads the configured tokens and keeps their digests. A token whose variable is unset
    /// (or whose value is empty) is left out and listed by [`ApiAuth::unset`]; the others
    /// still need a token.
    ///
    /// # Errors
    /// [`ServiceError::Read`] for a `token_file` that cannot be read; [`ServiceError::Config`]
    /// for a token shorter than [`MIN_TOKEN_CHARS`], one with white space inside, or one
    /// value configured under two names (which scopes would it have?). The messages name the
    /// token, never its value.
    pub fn new(tokens: &[ApiTokenConfig], api: &ApiConfig) -> Result<ApiAuth, ServiceError> {
        check_config(tokens)?;
        let mut usable: Vec<Token> = Vec::with_capacity(tokens.len());
        let mut unset = Vec::new();
        for config in tokens {
            let value = match (&config.token_file, &config.token_env) {
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
            let Some(value) = value.filter(|v| !v.is_empty()) else {
                unset.push(config.name.clone());
                continue;
            };
            let fail = |message: String| {
                Err(ServiceError::Config(format!(
                    "api_token `{}` ({}): {message}",
                    config.name,
                    config.source()
                )))
            };
            if value.chars().any(char::is_whitespace) {
                return fail(
                    "the token contains white space, which a bearer token cannot carry".to_owned(),
                );
            }
            let chars = value.chars().count();
            if chars < MIN_TOKEN_CHARS {
                return fail(format!(
                    "the token has {chars} characters; use at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)"
                ));
            }
            let digest = digest(&value);
            if let Some(other) = usable.iter().find(|t| t.digest == digest) {
                return fail(format!(
                    "the same token as api_token `{}`; give each holder its own",
                    other.name
                ));
            }
            usable.push(Token {
                name: config.name.clone(),
                digest,
                admin: config.scopes.contains(&Scope::Admin),
                read: config.scopes.contains(&Scope::Read),
            });
        }
        Ok(ApiAuth {
            enforced: !tokens.is_empty(),
            tokens: usable,
            unset,
            protect_metrics: api.protect_metrics,
        })
    }

    /// Whether requests need a token (any `[[api_token]]` is configured).
    pub fn enforced(&self) -> bool {
        self.enforced
    }

    /// Whether `/metrics` needs a `read` token.
    pub fn protects_metrics(&self) -> bool {
        self.enforced && self.protect_metrics
    }

    /// The names of the configured tokens that are set, with their scopes (for the banner).
    pub fn tokens(&self) -> Vec<(String, Vec<Scope>)> {
        self.tokens
            .iter()
            .map(|t| {
                let scopes = [(t.read, Scope::Read), (t.admin, Scope::Admin)]
                    .into_iter()
                    .filter_map(|(has, scope)| has.then_some(scope))
                    .collect();
                (t.name.clone(), scopes)
            })
            .collect()
    }

    /// The names of the configured tokens whose variable is unset or empty.
    pub fn unset(&self) -> &[String] {
        &self.unset
    }

    /// Refuses to serve an open API to the network: listening on anything but a loopback
    /// address needs at least one token that is set.
    ///
    /// # Errors
    /// [`ServiceError::Config`] saying what to do.
    pub fn check_listen(&self, listen: SocketAddr) -> Result<(), ServiceError> {
        if !self.tokens.is_empty() || listen.ip().to_canonical().is_loopback() {
            return Ok(());
        }
        let configured = if self.unset.is_empty() {
            String::new()
        } else {
            format!(
                " (api_token {} configured, but not set)",
                self.unset
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        Err(ServiceError::Config(format!(
            "refusing to listen on {listen} without an API token{configured}: anyone who reaches \
             this address could read /v1. Add an [[api_token]] (name, token_env or token_file, \
             scopes = [\"read\"] or [\"admin\"]) to the configuration, or set \
             {EMBEDDED_TOKEN_ENV} when running without one, or listen on 127.0.0.1"
        )))
    }

    /// Whether `headers` carry a token allowed `needed`: `Ok(Some(name))` for a token's
    /// name, `Ok(None)` when no token is enforced.
    ///
    /// # Errors
    /// The [`Rejection`] to answer with.
    pub fn authorize(&self, headers: &HeaderMap, needed: Scope) -> Result<Option<&str>, Rejection> {
        if !self.enforced {
            return Ok(None);
        }
        let presented = digest(bearer(headers)?);
        let token = self
            .token_by_digest(&presented)
            .ok_or(Rejection::UnknownToken)?;
        if token.allows(needed) {
            Ok(Some(&token.name))
        } else {
            Err(Rejection::InsufficientScope(needed))
        }
    }
}

impl ApiAuth {
    fn token_by_digest(&self, presented: &[u8; 32]) -> Option<&Token> {
        // Every digest is compared (no early exit), each in constant time: neither the
        // time to answer nor which token matched depends on the presented bytes.
        let mut matched = None;
        for token in &self.tokens {
            if shipfeed::auth::constant_time_eq(presented, &token.digest) && matched.is_none() {
                matched = Some(token);
            }
        }
        matched
    }

    /// Signs in to the console with `token`: a session for its holder, ending
    /// [`SESSION_LIFETIME`] after `now`.
    ///
    /// # Errors
    /// [`Rejection::UnknownToken`] for a token that is not configured (or any token, while
    /// none is enforced: there is nothing to sign in to).
    pub fn sign_in(&self, token: &str, now: DateTime<Utc>) -> Result<Session, Rejection> {
        let token = self
            .token_by_digest(&digest(token.trim()))
            .filter(|_| self.enforced)
            .ok_or(Rejection::UnknownToken)?;
        let expires = (now + SESSION_LIFETIME).timestamp();
        let cookie = token.session_cookie(expires);
        Ok(Session {
            name: token.name.clone(),
            scopes: token.scopes(),
            expires: DateTime::from_timestamp(expires, 0).unwrap_or(now),
            csrf: token.csrf(&cookie),
            cookie,
        })
    }

    /// The session the request's [`SESSION_COOKIE`] carries, checked at `now`: `Ok(None)`
    /// without the cookie.
    ///
    /// # Errors
    /// [`Rejection::BadSession`] for a cookie this service did not sign for a token it has
    /// now, or one whose session has ended.
    pub fn session(
        &self,
        headers: &HeaderMap,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, Rejection> {
        let Some(cookie) = session_cookie(headers) else {
            return Ok(None);
        };
        let token = self
            .session_token(cookie, now)
            .ok_or(Rejection::BadSession)?;
        Ok(Some(Session {
            name: token.name.clone(),
            scopes: token.scopes(),
            expires: session_expiry(cookie).unwrap_or(now),
            csrf: token.csrf(cookie),
            cookie: cookie.to_owned(),
        }))
    }

    /// The token whose session `cookie` is, when it is valid at `now`.
    fn session_token(&self, cookie: &str, now: DateTime<Utc>) -> Option<&Token> {
        let mut parts = cookie.split('.');
        let name = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        let expires: i64 = parts.next()?.parse().ok()?;
        let _mac = parts.next()?;
        if parts.next().is_some() || expires <= now.timestamp() {
            return None;
        }
        let token = self
            .tokens
            .iter()
            .find(|token| token.name.as_bytes() == name)?;
        // The whole value is compared with the one this service would sign, in constant
        // time.
        let expected = token.session_cookie(expires);
        shipfeed::auth::constant_time_eq(expected.as_bytes(), cookie.as_bytes()).then_some(token)
    }

    /// Whether a request with `headers` and `method` may do what needs `needed` at `now`:
    /// a bearer token, or else a console session (with its CSRF token when the request
    /// changes state). `Ok(Some(name))` for the token's name, `Ok(None)` when no token is
    /// enforced.
    ///
    /// # Errors
    /// The [`Rejection`] to answer with.
    pub fn check(
        &self,
        headers: &HeaderMap,
        method: &Method,
        needed: Scope,
        now: DateTime<Utc>,
    ) -> Result<Option<&str>, Rejection> {
        let changes_state = !matches!(*method, Method::GET | Method::HEAD);
        if changes_state && from_another_site(headers) {
            return Err(Rejection::CrossSite);
        }
        if !self.enforced || headers.contains_key(header::AUTHORIZATION) {
            return self.authorize(headers, needed);
        }
        let Some(cookie) = session_cookie(headers) else {
            return Err(Rejection::Missing);
        };
        let token = self
            .session_token(cookie, now)
            .ok_or(Rejection::BadSession)?;
        if changes_state {
            let presented = headers
                .get(CSRF_HEADER)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            let expected = token.csrf(cookie);
            if !shipfeed::auth::constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
                return Err(Rejection::Csrf);
            }
        }
        if token.allows(needed) {
            Ok(Some(&token.name))
        } else {
            Err(Rejection::InsufficientScope(needed))
        }
    }
}

/// The `Set-Cookie` value that keeps `session` in the browser. `Secure` unless the page was
/// asked for by a loopback name (`http://127.0.0.1:8080/`): anywhere else the console is
/// served over HTTPS (a proxy in front), and the cookie must never travel without it.
pub fn session_set_cookie(session: &Session, host: Option<&str>) -> String {
    let max_age = (session.expires - Utc::now()).num_seconds().max(0);
    format!(
        "{SESSION_COOKIE}={}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        session.cookie,
        secure_attribute(host)
    )
}

/// The `Set-Cookie` value that ends the session in the browser.
pub fn session_clear_cookie(host: Option<&str>) -> String {
    format!(
        "{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        secure_attribute(host)
    )
}

fn secure_attribute(host: Option<&str>) -> &'static str {
    let name = host.map(|host| {
        // `[::1]:8080`, `127.0.0.1:8080`, `localhost`
        match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => host,
        }
    });
    let loopback = match name {
        Some("localhost") => true,
        Some(name) => name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback()),
        None => false,
    };
    if loopback {
        ""
    } else {
        "; Secure"
    }
}

/// The value of the request's [`SESSION_COOKIE`], if it carries one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

fn session_expiry(cookie: &str) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(cookie.split('.').nth(1)?.parse().ok()?, 0)
}

/// Whether the browser says the request comes from a page of another site: a
/// `Sec-Fetch-Site` other than `same-origin` or `none`, or an `Origin` whose host is not the
/// request's `Host`. Clients other than browsers send neither.
pub(crate) fn from_another_site(headers: &HeaderMap) -> bool {
    let value = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(site) = value("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return true;
        }
    }
    match (value("origin"), value("host")) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_none_or(|(_, authority)| !authority.eq_ignore_ascii_case(host)),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The token of the request's one `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Result<&str, Rejection> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(Rejection::Missing)?;
    if values.next().is_some() {
        return Err(Rejection::Malformed);
    }
    let value = value.to_str().map_err(|_| Rejection::Malformed)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(Rejection::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.chars().any(char::is_whitespace)
    {
        return Err(Rejection::Malformed);
    }
    Ok(token)
}

/// Why a request to the API was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No `Authorization` header: 401.
    Missing,
    /// An `Authorization` header that is not one `Bearer <token>`: 401.
    Malformed,
    /// A bearer token that is not configured: 401.
    UnknownToken,
    /// A known token without the scope the request needs: 403.
    InsufficientScope(Scope),
    /// A console session cookie this service did not sign, for a token it no longer has,
    /// or whose session has ended: 401.
    BadSession,
    /// A request authenticated by the session cookie that changes state without the
    /// session's CSRF token: 403.
    Csrf,
    /// A request that changes state sent by a page of another site: 403.
    CrossSite,
}

impl Rejection {
    /// The `reason` label of `shipfeed_api_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Malformed => "malformed",
            Rejection::UnknownToken => "unknown_token",
            Rejection::InsufficientScope(_) => "insufficient_scope",
            Rejection::BadSession => "bad_session",
            Rejection::Csrf => "csrf",
            Rejection::CrossSite => "cross_site",
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        // RFC 6750 §3: the challenge says which scheme, and why a token did not do.
        let (status, challenge, message) = match self {
            Rejection::Missing => (
                StatusCode::UNAUTHORIZED,
                "Bearer realm=\"shipfeed\"".to_owned(),
                "this API needs `Authorization: Bearer <token>`".to_owned(),
            ),
            Rejection::Malformed => (
                StatusCode::UNAUTHORIZED,
                "Bearer realm=\"shipfeed\", error=\"invalid_request\"".to_owned(),
                "the `Authorization` header is not one `Bearer <token>`".to_owned(),
            ),
            Rejection::UnknownToken => (
                StatusCode::UNAUTHORIZED,
                "Bearer realm=\"shipfeed\", error=\"invalid_token\"".to_owned(),
                "unknown token".to_owned(),
            ),
            Rejection::InsufficientScope(scope) => (
                StatusCode::FORBIDDEN,
                format!(
                    "Bearer realm=\"shipfeed\", error=\"insufficient_scope\", scope=\"{}\"",
                    scope.as_str()
                ),
                format!("this token lacks the `{}` scope", scope.as_str()),
            ),
            Rejection::BadSession => (
                StatusCode::UNAUTHORIZED,
                "Bearer realm=\"shipfeed\"".to_owned(),
                "the console session has ended or is not valid: sign in again".to_owned(),
            ),
            Rejection::Csrf => (
                StatusCode::FORBIDDEN,
                "Bearer realm=\"shipfeed\"".to_owned(),
                format!("a request that changes state needs the session's `{CSRF_HEADER}` header"),
            ),
            Rejection::CrossSite => (
                StatusCode::FORBIDDEN,
                "Bearer realm=\"shipfeed\"".to_owned(),
                "a request that changes state cannot come from another site".to_owned(),
            ),
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// Who made an authorized request: the token's name, `None` while the API is open. The
/// `require` layer puts it in the request's extensions, for the handlers that record who
/// did what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub Option<String>);

impl Caller {
    /// The name the audit log and the logs know the caller by: the token's name, or
    /// `anonymous` while no token is enforced.
    pub fn actor(&self) -> &str {
        self.0.as_deref().unwrap_or("anonymous")
    }
}

/// The state of one route group's [`require`] layer: the tokens and the group's scope.
#[derive(Clone)]
pub(crate) struct Guard {
    auth: Arc<ApiAuth>,
    scope: Scope,
    metrics: Metrics,
}

impl Guard {
    pub(crate) fn new(auth: Arc<ApiAuth>, scope: Scope, metrics: Metrics) -> Guard {
        Guard {
            auth,
            scope,
            metrics,
        }
    }
}

/// The middleware in front of every protected route: the group's scope for GET and HEAD,
/// `admin` for any other method, so that a route changing state can never be
/// reached with a `read` token whichever group it was added to.
async fn require(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    // Only GET and HEAD read; OPTIONS and TRACE too are "safe" by RFC 9110, but nothing here
    // needs them, and the rule stays the one documented.
    let needed = if matches!(*request.method(), Method::GET | Method::HEAD) {
        guard.scope
    } else {
        Scope::Admin
    };
    match guard
        .auth
        .check(request.headers(), request.method(), needed, Utc::now())
    {
        Ok(name) => {
            if let Some(name) = name {
                tracing::debug!(token = %name, method = %request.method(), path = %request.uri().path(), "API request authorized");
            }
            let caller = Caller(name.map(str::to_owned));
            let mut request = request;
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(rejection) => {
            guard.metrics.api_rejected(rejection.reason());
            // The reason and the route only: never the header's value.
            tracing::info!(
                reason = rejection.reason(),
                method = %request.method(),
                path = %request.uri().path(),
                "refused API request"
            );
            rejection.into_response()
        }
    }
}

/// `router`'s routes behind the token check of `guard` (the router's fallback stays open:
/// `/v1` routes its own unknown paths).
pub(crate) fn protect<S>(router: Router<S>, guard: Guard) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.route_layer(axum::middleware::from_fn_with_state(guard, require))
}

/// One route behind the token check of `guard`.
pub(crate) fn protect_route<S>(route: MethodRouter<S>, guard: Guard) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    route.route_layer(axum::middleware::from_fn_with_state(guard, require))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, var: &str, scopes: &[Scope]) -> ApiTokenConfig {
        ApiTokenConfig {
            name: name.to_owned(),
            token_env: Some(var.to_owned()),
            token_file: None,
            scopes: scopes.to_vec(),
        }
    }

    fn headers(authorization: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in authorization {
            map.append(header::AUTHORIZATION, value.parse().unwrap());
        }
        map
    }

    fn file_token(
        dir: &std::path::Path,
        name: &str,
        value: &str,
        scopes: &[Scope],
    ) -> ApiTokenConfig {
        let path = dir.join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        ApiTokenConfig {
            name: name.to_owned(),
            token_env: None,
            token_file: Some(path),
            scopes: scopes.to_vec(),
        }
    }

    #[test]
    fn bearer_headers_are_parsed_strictly() {
        assert_eq!(bearer(&headers(&[])), Err(Rejection::Missing));
        for bad in [
            "Bearer",
            "Bearer ",
            "Basic dXNlcjpwYXNz",
            "Token abc",
            "Bearer two words",
            "bearertoken",
        ] {
            assert_eq!(bearer(&headers(&[bad])), Err(Rejection::Malformed), "{bad}");
        }
        assert_eq!(
            bearer(&headers(&["Bearer a", "Bearer b"])),
            Err(Rejection::Malformed)
        );
        assert_eq!(bearer(&headers(&["Bearer abc"])), Ok("abc"));
        // The scheme is case-insensitive (RFC 7235), the token is not.
        assert_eq!(bearer(&headers(&["bEaReR  AbC "])), Ok("AbC"));
    }

    #[test]
    fn tokens_are_checked_by_digest_and_scope() {
        let dir = tempfile::tempdir().unwrap();
        let auth = ApiAuth::new(
            &[
                file_token(
                    dir.path(),
                    "reader",
                    "read-token-0123456789",
                    &[Scope::Read],
                ),
                file_token(
                    dir.path(),
                    "operator",
                    "admin-token-0123456789",
                    &[Scope::Admin],
                ),
            ],
            &ApiConfig::default(),
        )
        .unwrap();
        assert!(auth.enforced());
        // Only digests are kept: the value is nowhere in the debug output either.
        assert!(!format!("{auth:?}").contains("read-token"));
        let read = headers(&["Bearer read-token-0123456789"]);
        let admin = headers(&["Bearer admin-token-0123456789"]);
        assert_eq!(auth.authorize(&read, Scope::Read), Ok(Some("reader")));
        assert_eq!(
            auth.authorize(&read, Scope::Admin),
            Err(Rejection::InsufficientScope(Scope::Admin))
        );
        // Admin implies read.
        assert_eq!(auth.authorize(&admin, Scope::Read), Ok(Some("operator")));
        assert_eq!(auth.authorize(&admin, Scope::Admin), Ok(Some("operator")));
        for wrong in [
            "Bearer read-token-012345678",
            "Bearer read-token-01234567890",
            "Bearer READ-TOKEN-0123456789",
        ] {
            assert_eq!(
                auth.authorize(&headers(&[wrong]), Scope::Read),
                Err(Rejection::UnknownToken),
                "{wrong}"
            );
        }
    }

    #[test]
    fn without_tables_the_api_is_open_but_only_on_loopback() {
        let open = ApiAuth::new(
            &[],
            &ApiConfig {
                protect_metrics: true,
            },
        )
        .unwrap();
        assert!(!open.enforced());
        assert!(!open.protects_metrics());
        assert_eq!(open.authorize(&headers(&[]), Scope::Admin), Ok(None));
        for loopback in [
            "127.0.0.1:8080",
            "[::1]:8080",
            "127.0.0.2:0",
            "[::ffff:127.0.0.1]:80",
        ] {
            open.check_listen(loopback.parse().unwrap())
                .unwrap_or_else(|e| panic!("{loopback}: {e}"));
        }
        for exposed in ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:8080"] {
            let error = open
                .check_listen(exposed.parse().unwrap())
                .unwrap_err()
                .to_string();
            assert!(error.contains("[[api_token]]"), "{error}");
            assert!(error.contains(EMBEDDED_TOKEN_ENV), "{error}");
        }
    }

    #[test]
    fn a_configured_token_that_is_unset_closes_the_api() {
        let var = "SHIPFEED_TEST_API_AUTH_NEVER_SET";
        let auth =
            ApiAuth::new(&[table("ci", var, &[Scope::Admin])], &ApiConfig::default()).unwrap();
        assert!(auth.enforced());
        assert_eq!(auth.unset(), ["ci".to_owned()]);
        assert_eq!(
            auth.authorize(&headers(&["Bearer anything-at-all-000"]), Scope::Read),
            Err(Rejection::UnknownToken)
        );
        let error = auth
            .check_listen("0.0.0.0:80".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(error.contains("`ci`"), "{error}");
    }

    #[test]
    fn bad_tables_and_weak_tokens_are_refused_without_showing_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let both = ApiTokenConfig {
            token_file: Some(dir.path().join("x")),
            ..table("both", "X", &[Scope::Read])
        };
        let neither = ApiTokenConfig {
            token_env: None,
            ..table("neither", "X", &[Scope::Read])
        };
        for (tables, why) in [
            (vec![both], "exactly one of token_env and token_file"),
            (vec![neither], "exactly one of token_env and token_file"),
            (vec![table("none", "X", &[])], "give it a scope"),
            (vec![table(" ", "X", &[Scope::Read])], "blank name"),
            (
                vec![
                    table("twice", "A", &[Scope::Read]),
                    table("twice", "B", &[Scope::Read]),
                ],
                "configured twice",
            ),
        ] {
            let error = check_config(&tables).unwrap_err().to_string();
            assert!(error.contains(why), "{why}: {error}");
        }
        for (value, why) in [
            ("short-token", "at least 16"),
            ("has a space inside it", "white space"),
        ] {
            let error = ApiAuth::new(
                &[file_token(dir.path(), "weak", value, &[Scope::Read])],
                &ApiConfig::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(error.contains(why) && error.contains("`weak`"), "{error}");
            assert!(!error.contains(value), "{error}");
        }
        let shared = "the-same-token-for-two";
        let error = ApiAuth::new(
            &[
                file_token(dir.path(), "one", shared, &[Scope::Read]),
                file_token(dir.path(), "two", shared, &[Scope::Admin]),
            ],
            &ApiConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("`one`") && !error.contains(shared),
            "{error}"
        );
        let missing = ApiTokenConfig {
            token_env: None,
            token_file: Some(dir.path().join("absent")),
            ..table("gone", "X", &[Scope::Read])
        };
        assert!(matches!(
            ApiAuth::new(&[missing], &ApiConfig::default()),
            Err(ServiceError::Read { .. })
        ));
    }

    #[test]
    fn rejections_answer_401_or_403_with_a_bearer_challenge() {
        for (rejection, status, error) in [
            (Rejection::Missing, 401, None),
            (Rejection::Malformed, 401, Some("invalid_request")),
            (Rejection::UnknownToken, 401, Some("invalid_token")),
            (
                Rejection::InsufficientScope(Scope::Admin),
                403,
                Some("insufficient_scope"),
            ),
        ] {
            let response = rejection.into_response();
            assert_eq!(response.status().as_u16(), status);
            let challenge = response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap();
            assert!(challenge.starts_with("Bearer "), "{challenge}");
            if let Some(error) = error {
                assert!(challenge.contains(error), "{challenge}");
            }
        }
    }

    #[test]
    fn console_sessions_are_signed_end_and_need_their_csrf_token_to_change_state() {
        let dir = tempfile::tempdir().unwrap();
        let auth = ApiAuth::new(
            &[
                file_token(
                    dir.path(),
                    "reader",
                    "read-token-0123456789",
                    &[Scope::Read],
                ),
                file_token(
                    dir.path(),
                    "operator",
                    "admin-token-0123456789",
                    &[Scope::Admin],
                ),
            ],
            &ApiConfig::default(),
        )
        .unwrap();
        let now = DateTime::parse_from_rfc3339("2026-12-03T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            auth.sign_in("nope-nope-nope-nope", now),
            Err(Rejection::UnknownToken)
        );
        let session = auth.sign_in("admin-token-0123456789", now).unwrap();
        assert_eq!(session.name, "operator");
        assert_eq!(session.scopes, [Scope::Read, Scope::Admin]);
        assert_eq!(session.expires, now + SESSION_LIFETIME);
        assert!(!session.cookie.contains("admin-token"));
        let with = |cookie: &str, csrf: Option<&str>| {
            let mut map = HeaderMap::new();
            map.insert(
                header::COOKIE,
                format!("theme=dark; {SESSION_COOKIE}={cookie}")
                    .parse()
                    .unwrap(),
            );
            if let Some(csrf) = csrf {
                map.insert(CSRF_HEADER, csrf.parse().unwrap());
            }
            map
        };
        let plain = with(&session.cookie, None);
        let csrf = with(&session.cookie, Some(&session.csrf));
        assert_eq!(
            auth.check(&plain, &Method::GET, Scope::Admin, now),
            Ok(Some("operator"))
        );
        assert_eq!(
            auth.check(&plain, &Method::POST, Scope::Admin, now),
            Err(Rejection::Csrf)
        );
        assert_eq!(
            auth.check(&csrf, &Method::POST, Scope::Admin, now),
            Ok(Some("operator"))
        );
        assert_eq!(
            auth.session(&plain, now).unwrap().unwrap().csrf,
            session.csrf
        );
        // It ends.
        let later = now + SESSION_LIFETIME;
        assert_eq!(
            auth.check(&csrf, &Method::GET, Scope::Read, later),
            Err(Rejection::BadSession)
        );
        // Altered, it is nobody's.
        let (name, rest) = session.cookie.split_once('.').unwrap();
        let reader = URL_SAFE_NO_PAD.encode("reader");
        for forged in [
            format!("{reader}.{rest}"),
            session.cookie.replace(
                &session.expires.timestamp().to_string(),
                &(session.expires.timestamp() + 3600).to_string(),
            ),
            format!("{name}.{rest}x"),
            "a.b".to_owned(),
        ] {
            assert_eq!(
                auth.check(&with(&forged, None), &Method::GET, Scope::Read, now),
                Err(Rejection::BadSession),
                "{forged}"
            );
        }
        // A read session reads and changes nothing; a bearer token needs no CSRF token.
        let read = auth.sign_in("read-token-0123456789", now).unwrap();
        assert_eq!(read.scopes, [Scope::Read]);
        assert_eq!(
            auth.check(
                &with(&read.cookie, Some(&read.csrf)),
                &Method::POST,
                Scope::Admin,
                now
            ),
            Err(Rejection::InsufficientScope(Scope::Admin))
        );
        assert_eq!(
            auth.check(
                &headers(&["Bearer admin-token-0123456789"]),
                &Method::POST,
                Scope::Admin,
                now
            ),
            Ok(Some("operator"))
        );
    }

    #[test]
    fn changes_from_another_site_are_refused_and_cookies_are_secure_off_loopback() {
        let open = ApiAuth::new(&[], &ApiConfig::default()).unwrap();
        let now = Utc::now();
        let request = |pairs: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(
                    axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            map
        };
        for same in [
            request(&[]),
            request(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080"),
            ]),
            request(&[("sec-fetch-site", "same-origin")]),
            request(&[("sec-fetch-site", "none")]),
        ] {
            assert_eq!(
                open.check(&same, &Method::POST, Scope::Admin, now),
                Ok(None),
                "{same:?}"
            );
        }
        for other in [
            request(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://evil.example"),
            ]),
            request(&[("host", "127.0.0.1:8080"), ("origin", "null")]),
            request(&[("sec-fetch-site", "cross-site")]),
            request(&[("sec-fetch-site", "same-site")]),
        ] {
            assert_eq!(
                open.check(&other, &Method::POST, Scope::Admin, now),
                Err(Rejection::CrossSite),
                "{other:?}"
            );
            // Reading is not a change: the same-origin policy keeps the answer from the page.
            assert_eq!(open.check(&other, &Method::GET, Scope::Read, now), Ok(None));
        }
        for (host, secure) in [
            (Some("127.0.0.1:8080"), false),
            (Some("localhost:8080"), false),
            (Some("[::1]:8080"), false),
            (Some("[::1]"), false),
            (Some("shipfeed.internal.example"), true),
            (Some("10.0.0.7:8080"), true),
            (None, true),
        ] {
            assert_eq!(secure_attribute(host) == "; Secure", secure, "{host:?}");
        }
    }
}
