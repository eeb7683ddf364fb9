//! The adapter contract: pure, synchronous, clock-free.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::{Error, Output, Provider};

/// Request or message headers, looked up case-insensitively, kept in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Appends a header (names keep their case; lookups ignore it).
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// The first value for `name`, ignoring ASCII case.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every `(name, value)` pair in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Parses `Name: value` lines (blank lines and lines without a colon are skipped).
    ///
    /// ```
    /// let h = shipfeed_core::Headers::parse_lines("Sendcloud-Signature: abc\n\nX: 1\n");
    /// assert_eq!(h.get("sendcloud-signature"), Some("abc"));
    /// ```
    pub fn parse_lines(text: &str) -> Self {
        text.lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Headers(
            iter.into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

/// One delivery exactly as it arrived: the bytes, the headers, and when it arrived.
///
/// `received_at` is injected by the transport so that adapters never read the clock and the
/// same delivery always normalizes to the same output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDelivery {
    /// The exact request body (or queue message body). Signatures are computed over these bytes.
    pub body: Vec<u8>,
    /// HTTP headers, or queue message attributes.
    pub headers: Headers,
    /// When the transport received the delivery.
    pub received_at: DateTime<Utc>,
}

impl RawDelivery {
    /// A delivery with no headers.
    pub fn new(body: impl Into<Vec<u8>>, received_at: DateTime<Utc>) -> Self {
        RawDelivery {
            body: body.into(),
            headers: Headers::new(),
            received_at,
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }
}

/// A secret value whose `Debug` output is redacted, so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; use only to compute or compare.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

/// How an endpoint authenticates its deliveries.
///
/// One value holds one secret; an endpoint that rotates its secret holds several and checks a
/// delivery with [`auth::verify_any`](crate::auth::verify_any).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// No credentials configured. Adapters that need some fail closed with
    /// [`ErrorKind::MissingSecret`](crate::ErrorKind::MissingSecret).
    None,
    /// A shared secret for a body HMAC (Sendcloud, HappyColis).
    Hmac(Secret),
    /// HTTP Basic credentials (Shipup).
    Basic {
        /// Expected user name.
        username: String,
        /// Expected password.
        password: Secret,
    },
    /// A fixed bearer token: `Authorization: Bearer <token>` must be exactly this string
    /// (Shipup's static token). A signed JWT is [`Credentials::Jwt`].
    Bearer(Secret),
    /// A token in a custom header (HappyColis subscription headers such as `X-Secret-Token`).
    HeaderToken {
        /// Header name, matched case-insensitively.
        header: String,
        /// Expected value.
        token: Secret,
    },
    /// A signed JWT (Shipup's OAuth 2.0 JWT bearer flow), checked against a key set with an
    /// algorithm allow-list, audience, issuer and validity times.
    Jwt(crate::auth::jwt::JwtVerifier),
}

impl Credentials {
    /// The kind of these credentials; `None` for [`Credentials::None`].
    pub fn kind(&self) -> Option<CredentialKind> {
        match self {
            Credentials::None => None,
            Credentials::Hmac(_) => Some(CredentialKind::Hmac),
            Credentials::Basic { .. } => Some(CredentialKind::Basic),
            Credentials::Bearer(_) => Some(CredentialKind::FixedBearer),
            Credentials::HeaderToken { .. } => Some(CredentialKind::HeaderToken),
            Credentials::Jwt(_) => Some(CredentialKind::Jwt),
        }
    }
}

/// The kinds of [`Credentials`], for an adapter to say which it can check
/// ([`Adapter::credential_kinds`]) so that a wrong kind is refused when the service starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialKind {
    /// [`Credentials::Hmac`].
    Hmac,
    /// [`Credentials::Basic`].
    Basic,
    /// [`Credentials::Bearer`]: a fixed token.
    FixedBearer,
    /// [`Credentials::HeaderToken`].
    HeaderToken,
    /// [`Credentials::Jwt`].
    Jwt,
}

impl CredentialKind {
    /// Every kind.
    pub const ALL: [CredentialKind; 5] = [
        CredentialKind::Hmac,
        CredentialKind::Basic,
        CredentialKind::FixedBearer,
        CredentialKind::HeaderToken,
        CredentialKind::Jwt,
    ];

    /// What the kind is, in words, for error messages (`"an HMAC secret"`).
    pub const fn describe(self) -> &'static str {
        match self {
            CredentialKind::Hmac => "an HMAC secret",
            CredentialKind::Basic => "HTTP Basic credentials",
            CredentialKind::FixedBearer => "a fixed bearer token",
            CredentialKind::HeaderToken => "a token in a custom header",
            CredentialKind::Jwt => "a signed JWT",
        }
    }
}

/// Turns one provider's deliveries into canonical [`Output`]s.
///
/// Implementations are pure and synchronous: no I/O, no clock, no global state. Every method
/// returns an error instead of panicking, on any input.
pub trait Adapter: Send + Sync {
    /// The provider this adapter speaks for.
    fn provider(&self) -> Provider;

    /// Checks that `delivery` is authentic under `credentials`, over the exact raw bytes and in
    /// constant time.
    ///
    /// # Errors
    /// [`MissingSignature`](crate::ErrorKind::MissingSignature) when the request carries none,
    /// [`InvalidSignature`](crate::ErrorKind::InvalidSignature) when it does not match, and
    /// [`MissingSecret`](crate::ErrorKind::MissingSecret) when the adapter needs credentials and
    /// `credentials` has none (fail closed).
    fn verify(&self, delivery: &RawDelivery, credentials: &Credentials) -> Result<(), Error>;

    /// The kinds of credentials [`verify`](Adapter::verify) can check. The service refuses to
    /// start with an endpoint configured with another kind, instead of rejecting every
    /// delivery; `verify` answers [`Config`](crate::ErrorKind::Config) for them. Check with
    /// [`auth::check_kind`](crate::auth::check_kind). Default: every kind.
    fn credential_kinds(&self) -> &'static [CredentialKind] {
        &CredentialKind::ALL
    }

    /// Whether `delivery` is the provider's endpoint probe: a request that carries no data,
    /// that the provider sends to check an endpoint (possibly without credentials) and needs
    /// answered with a 2xx. The service answers it without storing it, authenticated or not,
    /// so it must match only a body that carries nothing. Never panics. Default: `false` (the
    /// provider has no such probe).
    fn is_probe(&self, delivery: &RawDelivery) -> bool {
        let _ = delivery;
        false
    }

    /// Normalizes an (already authenticated) delivery into 0..n outputs.
    ///
    /// Deliveries without tracking content yield a [`Notice`](crate::Notice), never an error;
    /// unknown status codes yield `unknown` / `unknown.unmapped`, never an error.
    ///
    /// # Errors
    /// [`Payload`](crate::ErrorKind::Payload) when the bytes cannot be understood; the error names
    /// the JSON path where it can.
    fn parse(&self, delivery: &RawDelivery) -> Result<Vec<Output>, Error>;

    /// [`parse`](Adapter::parse), noting in `drift` what the delivery holds that the adapter
    /// does not know: JSON fields it skipped (decode with
    /// [`json::decode_noting`](crate::json::decode_noting)) and values of an unexpected type it
    /// tolerated. Unknown status codes and message types show in the outputs, and are noted
    /// from them by the caller ([`drift::observe`](crate::drift::observe)). Same outputs and
    /// errors as `parse`; never panics. Default: `parse`, noting nothing.
    ///
    /// # Errors
    /// As [`parse`](Adapter::parse).
    fn parse_noting(
        &self,
        delivery: &RawDelivery,
        drift: &mut crate::drift::Drift,
    ) -> Result<Vec<Output>, Error> {
        let _ = drift;
        self.parse(delivery)
    }

    /// [`verify`](Adapter::verify), then [`parse`](Adapter::parse).
    ///
    /// # Errors
    /// Either method's errors.
    fn construct(
        &self,
        delivery: &RawDelivery,
        credentials: &Credentials,
    ) -> Result<Vec<Output>, Error> {
        self.verify(delivery, credentials)?;
        self.parse(delivery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_ignores_case_and_keeps_first() {
        let headers: Headers = [("Content-Type", "a"), ("content-type", "b")]
            .into_iter()
            .collect();
        assert_eq!(headers.get("CONTENT-TYPE"), Some("a"));
        assert_eq!(headers.get("x"), None);
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let creds = Credentials::Basic {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
    }
}
