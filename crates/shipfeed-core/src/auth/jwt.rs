//! Signed JWT bearer tokens (Shipup's "OAuth 2.0 JWT Bearer flow", Google-IAP compatible),
//! checked without I/O: the signature against a key set (JWKS) with an allow-list of
//! algorithms, then `aud`, `iss`, and `exp`/`nbf` against an injected time with a small
//! leeway.
//!
//! Where the keys come from is a [`KeySource`]: [`FixedKeys`] for a set known up front, or
//! the service's background refresh (which implements the trait where I/O is allowed). A
//! token naming a key id the set lacks tells the source ([`KeySource::unknown_key`]) and is
//! refused; the source may fetch the set again in the background, and the provider's retry
//! passes. Verification itself never fetches anything.
//!
//! # Which algorithms, and why `none` and HMAC cannot pass
//!
//! [`Algorithm`] has two values, RS256 and ES256, and no others: a token whose header names
//! anything else (`none`, `HS256`, `RS512`...) is refused before any key is looked at. The
//! key set only ever holds RSA and P-256 public keys ([`KeySet::from_json`] skips `oct` and
//! every other key type), and each key carries the one algorithm it verifies. jsonwebtoken,
//! which checks the signature, has no `none` algorithm at all, and refuses a key whose family
//! differs from the algorithm it is asked to verify (an RSA key cannot check an `HS256` MAC),
//! so the classic "HS256 keyed with the public key" token fails on three counts.
//!
//! ```
//! use std::sync::Arc;
//! use shipfeed_core::auth::jwt::{FixedKeys, JwtPolicy, JwtVerifier, KeySet};
//! use shipfeed_core::{ErrorKind, Headers};
//!
//! let keys = KeySet::from_json(br#"{"keys": []}"#)?;
//! let policy = JwtPolicy::new(["https://shipfeed.example/webhooks/shipup"], ["https://cloud.google.com/iap"])
//!     .with_header("x-goog-iap-jwt-assertion");
//! let verifier = JwtVerifier::new(policy, Arc::new(FixedKeys::new(keys)))?;
//! // An unsigned token: header `{"alg":"none"}`, claims `{}`, no signature.
//! let unsigned = "eyJhbGciOiJub25lIn0.e30.";
//! let headers: Headers = [("x-goog-iap-jwt-assertion", unsigned)].into_iter().collect();
//! let refused = verifier.verify(&headers, chrono::Utc::now()).unwrap_err();
//! assert_eq!(refused.kind(), ErrorKind::InvalidSignature);
//! assert!(refused.message().contains("algorithm `none` is not allowed"), "{refused}");
//! # Ok::<(), shipfeed_core::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::{Error, ErrorKind, Headers};

/// A signature algorithm a token may use. Only asymmetric ones, and deliberately no `none`
/// and no HMAC (`HS*`): see the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, an RSA key (`kty: "RSA"`).
    #[serde(rename = "RS256")]
    Rs256,
    /// ECDSA on P-256 with SHA-256, an EC key (`kty: "EC"`, `crv: "P-256"`).
    #[serde(rename = "ES256")]
    Es256,
}

impl Algorithm {
    /// Every algorithm shipfeed accepts, the default allow-list.
    pub const ALL: [Algorithm; 2] = [Algorithm::Rs256, Algorithm::Es256];

    /// The JOSE name, `"RS256"` or `"ES256"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }

    const fn library(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }

    /// The algorithm of a token header's `alg`; exact names only.
    fn of_header(alg: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == alg)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    /// `"RS256"` or `"ES256"`.
    fn from_str(s: &str) -> Result<Self, Error> {
        Algorithm::of_header(s).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "JWT algorithm `{}` is not supported (RS256 or ES256)",
                    printable(s)
                ),
            )
        })
    }
}

/// Where a request carries its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    /// `Authorization: Bearer <token>` (the default).
    AuthorizationBearer,
    /// The whole value of this header, e.g. `x-goog-iap-jwt-assertion` (Google IAP).
    Header(String),
}

impl TokenLocation {
    /// The location for a header name: `Authorization` means a bearer token in it, any other
    /// name the header's whole value.
    pub fn header(name: &str) -> Self {
        if name.trim().eq_ignore_ascii_case("authorization") {
            TokenLocation::AuthorizationBearer
        } else {
            TokenLocation::Header(name.trim().to_owned())
        }
    }
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JwtPolicy {
    /// Accepted `aud` values: a token must name at least one.
    pub audiences: Vec<String>,
    /// Accepted `iss` values: a token must have one of them.
    pub issuers: Vec<String>,
    /// Accepted algorithms (default: both of [`Algorithm::ALL`]).
    pub algorithms: Vec<Algorithm>,
    /// Tolerated clock difference for `exp` and `nbf`.
    pub leeway: TimeDelta,
    /// Where the token is.
    pub location: TokenLocation,
}

impl JwtPolicy {
    /// The default leeway, in seconds.
    pub const DEFAULT_LEEWAY_SECONDS: i64 = 60;
    /// The largest leeway [`check`](JwtPolicy::check) allows, in seconds: a "small" one.
    pub const MAX_LEEWAY_SECONDS: i64 = 300;

    /// A policy for these audiences and issuers, with RS256 and ES256, a leeway of
    /// [`DEFAULT_LEEWAY_SECONDS`](JwtPolicy::DEFAULT_LEEWAY_SECONDS) and the token in
    /// `Authorization: Bearer`.
    pub fn new<A, I>(audiences: A, issuers: I) -> Self
    where
        A: IntoIterator,
        A::Item: Into<String>,
        I: IntoIterator,
        I::Item: Into<String>,
    {
        JwtPolicy {
            audiences: audiences.into_iter().map(Into::into).collect(),
            issuers: issuers.into_iter().map(Into::into).collect(),
            algorithms: Algorithm::ALL.to_vec(),
            leeway: TimeDelta::seconds(Self::DEFAULT_LEEWAY_SECONDS),
            location: TokenLocation::AuthorizationBearer,
        }
    }

    /// The same policy with these algorithms allowed.
    #[must_use]
    pub fn with_algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// The same policy with this leeway.
    #[must_use]
    pub fn with_leeway(mut self, leeway: TimeDelta) -> Self {
        self.leeway = leeway;
        self
    }

    /// The same policy reading the token from `header` (see [`TokenLocation::header`]).
    #[must_use]
    pub fn with_header(mut self, header: &str) -> Self {
        self.location = TokenLocation::header(header);
        self
    }

    /// Checks that the policy can accept anything at all, and only what it should.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for no (or a blank) audience or issuer, no algorithm, a negative
    /// leeway or one over [`MAX_LEEWAY_SECONDS`](JwtPolicy::MAX_LEEWAY_SECONDS), or a blank
    /// header name.
    pub fn check(&self) -> Result<(), Error> {
        let config = |message: &str| Err(Error::new(ErrorKind::Config, message));
        if self.audiences.is_empty() || self.audiences.iter().any(|a| a.trim().is_empty()) {
            return config("a JWT policy needs at least one audience, and no blank one");
        }
        if self.issuers.is_empty() || self.issuers.iter().any(|i| i.trim().is_empty()) {
            return config("a JWT policy needs at least one issuer, and no blank one");
        }
        if self.algorithms.is_empty() {
            return config("a JWT policy needs at least one algorithm (RS256, ES256)");
        }
        if self.leeway < TimeDelta::zero()
            || self.leeway > TimeDelta::seconds(Self::MAX_LEEWAY_SECONDS)
        {
            return config("a JWT leeway is from 0 to 300 seconds");
        }
        if matches!(&self.location, TokenLocation::Header(name) if name.is_empty()) {
            return config("a JWT header name cannot be blank");
        }
        Ok(())
    }
}

/// One usable public key of a key set.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    decoding: DecodingKey,
}

/// The usable keys of a JSON Web Key Set (RFC 7517): RSA keys for RS256 and P-256 keys for
/// ES256, each with its `kid`. Every other key is skipped and counted.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
    skipped: usize,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("{}:{}", k.algorithm, k.kid.as_deref().unwrap_or("-")))
            .collect();
        f.debug_struct("KeySet")
            .field("keys", &keys)
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// One JWK as published, with only the members this verifier reads.
#[derive(Deserialize)]
struct Jwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Reads a JWKS document (`{"keys": [...]}`). Keys that cannot verify RS256 or ES256
    /// signatures (symmetric `oct` keys, other curves, other `alg`s, `use` other than `sig`,
    /// malformed members) are skipped, never an error: a provider's set may hold keys for
    /// other purposes.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the bytes are not a JSON object with a `keys` array.
    pub fn from_json(bytes: &[u8]) -> Result<KeySet, Error> {
        let jwks: Jwks = serde_json::from_slice(bytes).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("the key set is not a JWKS document (`{{\"keys\": [...]}}`): {e}"),
            )
        })?;
        let mut set = KeySet::default();
        for value in jwks.keys {
            match serde_json::from_value::<Jwk>(value).ok().and_then(usable) {
                Some(key) => set.keys.push(key),
                None => set.skipped += 1,
            }
        }
        Ok(set)
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys of the document were skipped as unusable.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The key ids of the usable keys (keys without one are left out).
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref())
    }
}

/// The key a JWK describes, when it is one this verifier may use.
fn usable(jwk: Jwk) -> Option<Key> {
    if jwk.usage.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let (algorithm, decoding) = match jwk.kty.as_deref()? {
        "RSA" => {
            let (n, e) = (jwk.n?, jwk.e?);
            (
                Algorithm::Rs256,
                DecodingKey::from_rsa_components(&n, &e).ok()?,
            )
        }
        "EC" if jwk.crv.as_deref() == Some("P-256") => {
            let (x, y) = (jwk.x?, jwk.y?);
            // Each coordinate is exactly 32 bytes on P-256.
            for coordinate in [&x, &y] {
                if URL_SAFE_NO_PAD.decode(coordinate).ok()?.len() != 32 {
                    return None;
                }
            }
            (
                Algorithm::Es256,
                DecodingKey::from_ec_components(&x, &y).ok()?,
            )
        }
        // `oct` (a shared secret: never for a public key set), OKP, other curves.
        _ => return None,
    };
    if jwk
        .alg
        .as_deref()
        .is_some_and(|alg| alg != algorithm.as_str())
    {
        return None;
    }
    Some(Key {
        kid: jwk.kid,
        algorithm,
        decoding,
    })
}

/// Where a verifier gets its keys. Implementations answer from what they hold: never a
/// fetch, never a wait.
pub trait KeySource: Send + Sync + fmt::Debug {
    /// The keys to verify with now.
    fn keys(&self) -> Arc<KeySet>;

    /// A token named key id `kid`, which [`keys`](KeySource::keys) lacks: a hint that the
    /// provider rotated its keys. Returns at once; a source that can fetch its set again does
    /// so in the background, rate-limited. Default: nothing.
    fn unknown_key(&self, kid: &str) {
        let _ = kid;
    }
}

/// A key set that never changes.
#[derive(Debug, Clone)]
pub struct FixedKeys(Arc<KeySet>);

impl FixedKeys {
    /// These keys, for good.
    pub fn new(keys: KeySet) -> Self {
        FixedKeys(Arc::new(keys))
    }
}

impl KeySource for FixedKeys {
    fn keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.0)
    }
}

/// Checks the JWTs of one endpoint: a [`JwtPolicy`] and a [`KeySource`].
///
/// Two verifiers are equal when their policies are and they share one key source.
#[derive(Clone)]
pub struct JwtVerifier {
    policy: Arc<JwtPolicy>,
    keys: Arc<dyn KeySource>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("policy", &self.policy)
            .field("keys", &self.keys)
            .finish()
    }
}

impl PartialEq for JwtVerifier {
    fn eq(&self, other: &Self) -> bool {
        self.policy == other.policy && Arc::ptr_eq(&self.keys, &other.keys)
    }
}

impl Eq for JwtVerifier {}

/// The longest token looked at; real ones are around a kilobyte.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The protected header members this verifier reads.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// The time claims, read after the signature held.
#[derive(Deserialize)]
struct TimeClaims {
    exp: Option<f64>,
    nbf: Option<f64>,
}

fn refused(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidSignature, message)
}

/// Attacker-chosen text (an `alg`, a `kid`) made safe for a log line: visible ASCII, at most
/// 64 characters.
fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

fn instant(seconds: f64) -> Option<DateTime<Utc>> {
    if !seconds.is_finite() {
        return None;
    }
    let whole = seconds.floor();
    // Out-of-range values saturate in the cast and then fail `from_timestamp`.
    let nanos = ((seconds - whole) * 1e9) as u32;
    DateTime::from_timestamp(whole as i64, nanos.min(999_999_999))
}

impl JwtVerifier {
    /// A verifier of `policy` with keys from `keys`.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the policy does not [`check`](JwtPolicy::check).
    pub fn new(policy: JwtPolicy, keys: Arc<dyn KeySource>) -> Result<Self, Error> {
        policy.check()?;
        Ok(JwtVerifier {
            policy: Arc::new(policy),
            keys,
        })
    }

    /// The policy tokens must satisfy.
    pub fn policy(&self) -> &JwtPolicy {
        &self.policy
    }

    /// The key source.
    pub fn keys(&self) -> &Arc<dyn KeySource> {
        &self.keys
    }

    /// Checks the token in `headers` at time `now` (a delivery's `received_at`). Never
    /// panics; the error's message says why, never what the token holds.
    ///
    /// # Errors
    /// [`ErrorKind::MissingSignature`] when the request has no token where the policy looks;
    /// [`ErrorKind::InvalidSignature`] when it is malformed, uses an algorithm not allowed,
    /// names an unknown key (the source is told), does not verify, or fails `aud`, `iss`,
    /// `exp` or `nbf`.
    pub fn verify(&self, headers: &Headers, now: DateTime<Utc>) -> Result<(), Error> {
        let token = match &self.policy.location {
            TokenLocation::AuthorizationBearer => super::authorization(headers, "Bearer")?,
            TokenLocation::Header(name) => super::present(headers, name)?,
        };
        if token.len() > MAX_TOKEN_BYTES {
            return Err(refused("the token is longer than 16 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(encoded_header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(refused(
                "the token is not a signed JWT (three parts separated by dots)",
            ));
        };
        let header: JoseHeader = URL_SAFE_NO_PAD
            .decode(encoded_header)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| refused("the token's header is not base64url JSON with an `alg`"))?;
        if header.crit.is_some() {
            return Err(refused(
                "the token has critical header parameters (`crit`), which this verifier does not understand",
            ));
        }
        let algorithm = Algorithm::of_header(&header.alg)
            .filter(|a| self.policy.algorithms.contains(a))
            .ok_or_else(|| {
                let allowed: Vec<&str> =
                    self.policy.algorithms.iter().map(|a| a.as_str()).collect();
                refused(format!(
                    "algorithm `{}` is not allowed (allowed: {})",
                    printable(&header.alg),
                    allowed.join(", ")
                ))
            })?;

        let keys = self.keys.keys();
        let named: Vec<&Key> = match &header.kid {
            Some(kid) => {
                let named: Vec<&Key> = keys
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                    .collect();
                if named.is_empty() {
                    self.keys.unknown_key(kid);
                    return Err(refused(format!(
                        "unknown key id `{}` (the key set will be fetched again)",
                        printable(kid)
                    )));
                }
                named
            }
            None => keys.keys.iter().collect(),
        };
        let candidates: Vec<&Key> = named
            .into_iter()
            .filter(|k| k.algorithm == algorithm)
            .collect();
        if candidates.is_empty() {
            return Err(refused(match &header.kid {
                Some(kid) => format!("key `{}` is not an {algorithm} key", printable(kid)),
                None => format!("the key set has no {algorithm} key"),
            }));
        }
        let mut first_refusal: Option<Error> = None;
        for key in candidates {
            match self.check(token, key, algorithm, now) {
                Ok(()) => return Ok(()),
                Err(error) => {
                    first_refusal.get_or_insert(error);
                }
            }
        }
        Err(first_refusal.unwrap_or_else(|| refused("no key verifies the token")))
    }

    /// The signature under one key, then the claims.
    fn check(
        &self,
        token: &str,
        key: &Key,
        algorithm: Algorithm,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        // Only this key's algorithm: jsonwebtoken refuses a header `alg` outside this list and
        // a key of another family than the listed algorithms.
        let mut validation = Validation::new(algorithm.library());
        // The times are checked below against the injected `now`; jsonwebtoken would read the
        // system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_audience(&self.policy.audiences);
        validation.set_issuer(&self.policy.issuers);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        let claims = jsonwebtoken::decode::<TimeClaims>(token, &key.decoding, &validation)
            .map_err(|error| {
                refused(match error.kind() {
                    JwtErrorKind::InvalidSignature => format!(
                        "the signature does not verify with key `{}`",
                        printable(key.kid.as_deref().unwrap_or("-"))
                    ),
                    JwtErrorKind::InvalidAudience => {
                        "the token's audience (`aud`) is not a configured one".to_owned()
                    }
                    JwtErrorKind::InvalidIssuer => {
                        "the token's issuer (`iss`) is not a configured one".to_owned()
                    }
                    JwtErrorKind::MissingRequiredClaim(claim) => {
                        format!("the token has no valid `{}` claim", printable(claim))
                    }
                    JwtErrorKind::InvalidAlgorithm => {
                        "the token's algorithm does not fit the key".to_owned()
                    }
                    _ => "the token is malformed".to_owned(),
                })
            })?
            .claims;
        let leeway = self.policy.leeway;
        let expires = claims
            .exp
            .and_then(instant)
            .ok_or_else(|| refused("the token's `exp` is not a time"))?;
        if now > expires + leeway {
            return Err(refused(format!(
                "the token expired at {} (leeway {} s)",
                expires.to_rfc3339(),
                leeway.num_seconds()
            )));
        }
        if let Some(nbf) = claims.nbf {
            let not_before =
                instant(nbf).ok_or_else(|| refused("the token's `nbf` is not a time"))?;
            if now + leeway < not_before {
                return Err(refused(format!(
                    "the token is not valid before {} (leeway {} s)",
                    not_before.to_rfc3339(),
                    leeway.num_seconds()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(keys: KeySet) -> JwtVerifier {
        JwtVerifier::new(
            JwtPolicy::new(["aud"], ["iss"]),
            Arc::new(FixedKeys::new(keys)),
        )
        .unwrap()
    }

    fn bearer(token: &str) -> Headers {
        [("Authorization", format!("Bearer {token}"))]
            .into_iter()
            .collect()
    }

    fn encode(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn unusable_keys_are_skipped_and_bad_documents_refused() {
        let set = KeySet::from_json(
            br#"{"keys": [
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
                {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA", "kid": "p384"},
                {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "short"},
                {"kty": "RSA", "n": "AQAB", "e": "AQAB", "use": "enc", "kid": "enc"},
                {"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "RS512", "kid": "rs512"},
                {"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "RS256", "kid": "ok"},
                "not an object"
            ]}"#,
        )
        .unwrap();
        assert_eq!(set.kids().collect::<Vec<_>>(), ["ok"]);
        assert_eq!(set.skipped(), 6);
        for bad in [&b"[]"[..], b"{}", b"not json", b"{\"keys\": {}}"] {
            let err = KeySet::from_json(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
        }
    }

    #[test]
    fn policies_that_would_accept_anything_are_refused() {
        let good = JwtPolicy::new(["a"], ["i"]);
        good.check().unwrap();
        for bad in [
            JwtPolicy::new(Vec::<String>::new(), ["i"]),
            JwtPolicy::new([" "], ["i"]),
            JwtPolicy::new(["a"], Vec::<String>::new()),
            good.clone().with_algorithms([]),
            good.clone().with_leeway(TimeDelta::seconds(-1)),
            good.clone().with_leeway(TimeDelta::seconds(301)),
            good.clone().with_header(" "),
        ] {
            assert_eq!(
                bad.check().unwrap_err().kind(),
                ErrorKind::Config,
                "{bad:?}"
            );
        }
        assert_eq!(
            good.with_header("AUTHORIZATION").location,
            TokenLocation::AuthorizationBearer
        );
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        let v = verifier(KeySet::default());
        let missing = v.verify(&Headers::new(), Utc::now()).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::MissingSignature);
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        let none = format!("{}.{}.", encode(r#"{"alg":"none"}"#), encode("{}"));
        let hs = format!("{}.{}.c2ln", encode(r#"{"alg":"HS256"}"#), encode("{}"));
        let crit = format!(
            "{}.{}.c2ln",
            encode(r#"{"alg":"RS256","crit":["exp"]}"#),
            encode("{}")
        );
        let unknown = format!(
            "{}.{}.c2ln",
            encode(r#"{"alg":"RS256","kid":"k\n1"}"#),
            encode("{}")
        );
        for (token, reason) in [
            ("", "no `Authorization: Bearer`"),
            ("a.b", "three parts"),
            ("a.b.c.d.e", "three parts"),
            ("%%%.b.c", "base64url JSON"),
            (long.as_str(), "16 KiB"),
            (none.as_str(), "algorithm `none` is not allowed"),
            (hs.as_str(), "algorithm `HS256` is not allowed"),
            (crit.as_str(), "crit"),
            (unknown.as_str(), "unknown key id `k?1`"),
        ] {
            let err = v.verify(&bearer(token), Utc::now()).unwrap_err();
            assert!(err.kind().is_authentication(), "{err}");
            assert!(err.message().contains(reason), "{reason}: {err}");
        }
    }

    #[test]
    fn times_are_read_as_unix_seconds() {
        assert_eq!(instant(0.0), Some(DateTime::UNIX_EPOCH));
        assert_eq!(instant(1.5).map(|t| t.timestamp_subsec_millis()), Some(500));
        assert_eq!(instant(f64::MAX), None);
        assert_eq!(instant(f64::NAN), None);
    }
}
