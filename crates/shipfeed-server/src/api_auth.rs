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

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};
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

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
        let presented = bearer(headers)?;
        let presented = digest(presented);
        // Every digest is compared (no early exit), each in constant time: neither the
        // time to answer nor which token matched depends on the presented bytes.
        let mut matched = None;
        for token in &self.tokens {
            if shipfeed::auth::constant_time_eq(&presented, &token.digest) && matched.is_none() {
                matched = Some(token);
            }
        }
        let token = matched.ok_or(Rejection::UnknownToken)?;
        if token.allows(needed) {
            Ok(Some(&token.name))
        } else {
            Err(Rejection::InsufficientScope(needed))
        }
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
}

impl Rejection {
    /// The `reason` label of `shipfeed_api_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Malformed => "malformed",
            Rejection::UnknownToken => "unknown_token",
            Rejection::InsufficientScope(_) => "insufficient_scope",
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
    match guard.auth.authorize(request.headers(), needed) {
        Ok(name) => {
            if let Some(name) = name {
                tracing::debug!(token = %name, method = %request.method(), path = %request.uri().path(), "API request authorized");
            }
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
}
