//! Authentication helpers every adapter shares: HMAC-SHA256 signatures (hex or base64) and
//! static credentials, all compared in constant time; signed JWTs ([`jwt`]); several
//! credentials of one endpoint during a rotation ([`verify_any`]); and the check that an
//! adapter can use a kind of credentials at all ([`check_kind`]).

pub mod jwt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    Adapter, CredentialKind, Credentials, Error, ErrorKind, Headers, Provider, RawDelivery, Secret,
};

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &Secret, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    mac
}

/// Lowercase hex HMAC-SHA256 of `body` (what Sendcloud puts in `Sendcloud-Signature`).
///
/// ```
/// use shipfeed_core::{auth, Secret};
/// // The test vector published in Sendcloud's webhook documentation.
/// assert_eq!(
///     auth::sign_hex(&Secret::new("secretkey"), br#"{"key": "value"}"#),
///     "1eed4b3d41f4653ac64fd56f1bf1cbfd349e4482cbc11dff7134bd93e5da4b0a"
/// );
/// ```
pub fn sign_hex(secret: &Secret, body: &[u8]) -> String {
    hex::encode(mac(secret, body).finalize().into_bytes())
}

/// Standard base64 HMAC-SHA256 of `body` (what HappyColis puts in its signature header).
pub fn sign_base64(secret: &Secret, body: &[u8]) -> String {
    BASE64.encode(mac(secret, body).finalize().into_bytes())
}

fn missing_header(header: &str) -> Error {
    Error::new(
        ErrorKind::MissingSignature,
        format!("header `{header}` is missing"),
    )
}

fn mismatch(header: &str) -> Error {
    Error::new(
        ErrorKind::InvalidSignature,
        format!("header `{header}` does not match the body and the configured secret"),
    )
}

/// Checks a hex HMAC-SHA256 signature of the raw `body` found in `header`.
///
/// Accepts either letter case and surrounding white space; an optional `sha256=` prefix is
/// tolerated because several proxies add it.
///
/// # Errors
/// [`ErrorKind::MissingSignature`] when the header is absent or empty,
/// [`ErrorKind::InvalidSignature`] when it is not hex or does not match.
pub fn verify_hex_hmac(
    headers: &Headers,
    header: &str,
    secret: &Secret,
    body: &[u8],
) -> Result<(), Error> {
    let value = present(headers, header)?;
    let value = value.strip_prefix("sha256=").unwrap_or(value);
    let expected = hex::decode(value).map_err(|_| {
        Error::new(
            ErrorKind::InvalidSignature,
            format!("header `{header}` is not a hex digest"),
        )
    })?;
    mac(secret, body)
        .verify_slice(&expected)
        .map_err(|_| mismatch(header))
}

/// Checks a base64 HMAC-SHA256 signature of the raw `body` found in `header`.
///
/// # Errors
/// [`ErrorKind::MissingSignature`] when the header is absent or empty,
/// [`ErrorKind::InvalidSignature`] when it is not base64 or does not match.
pub fn verify_base64_hmac(
    headers: &Headers,
    header: &str,
    secret: &Secret,
    body: &[u8],
) -> Result<(), Error> {
    let value = present(headers, header)?;
    let expected = BASE64.decode(value).map_err(|_| {
        Error::new(
            ErrorKind::InvalidSignature,
            format!("header `{header}` is not base64"),
        )
    })?;
    mac(secret, body)
        .verify_slice(&expected)
        .map_err(|_| mismatch(header))
}

/// Checks that `header` holds exactly `token`, in constant time (length included).
///
/// # Errors
/// [`ErrorKind::MissingSignature`] when absent, [`ErrorKind::InvalidSignature`] when different.
pub fn verify_header_token(headers: &Headers, header: &str, token: &Secret) -> Result<(), Error> {
    let value = present(headers, header)?;
    if constant_time_eq(value.as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(mismatch(header))
    }
}

/// Checks an `Authorization: Basic ...` header against a user name and password.
///
/// # Errors
/// [`ErrorKind::MissingSignature`] when there is no Basic authorization,
/// [`ErrorKind::InvalidSignature`] when it is malformed or the credentials differ.
pub fn verify_basic(headers: &Headers, username: &str, password: &Secret) -> Result<(), Error> {
    let encoded = authorization(headers, "Basic")?;
    let decoded = BASE64
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidSignature,
                "`Authorization: Basic` is not base64 of `user:password`",
            )
        })?;
    let (user, pass) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
    // Evaluate both comparisons so timing does not reveal which one failed.
    let user_ok = constant_time_eq(user.as_bytes(), username.as_bytes());
    let pass_ok = constant_time_eq(pass.as_bytes(), password.expose().as_bytes());
    if user_ok & pass_ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidSignature,
            "`Authorization: Basic` credentials do not match",
        ))
    }
}

/// Checks an `Authorization: Bearer ...` header against a static token.
///
/// # Errors
/// [`ErrorKind::MissingSignature`] when there is no bearer token,
/// [`ErrorKind::InvalidSignature`] when it differs.
pub fn verify_bearer(headers: &Headers, token: &Secret) -> Result<(), Error> {
    let presented = authorization(headers, "Bearer")?;
    if constant_time_eq(presented.as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidSignature,
            "`Authorization: Bearer` token does not match",
        ))
    }
}

/// How a provider signs bodies with HMAC-SHA256: the header and the digest encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySignature {
    /// Lowercase hex digest in the named header (Sendcloud).
    Hex(&'static str),
    /// Base64 digest in the named header (HappyColis).
    Base64(&'static str),
}

/// Checks `delivery` against any kind of [`Credentials`]: an HMAC secret through the provider's
/// `signature` scheme, or Basic, a fixed bearer token, a custom header token or a JWT. The one
/// dispatch every adapter's `verify` needs (after [`check_kind`]).
///
/// # Errors
/// [`ErrorKind::MissingSecret`] for [`Credentials::None`] (fail closed),
/// [`ErrorKind::Config`] for an HMAC secret given to a provider that signs nothing, and the
/// missing/invalid errors of the individual checks.
///
/// ```
/// use shipfeed_core::{auth, Credentials, RawDelivery, Secret, ErrorKind};
/// let body = br#"{"key": "value"}"#.to_vec();
/// let signed = RawDelivery::new(body.clone(), Default::default())
///     .with_header("Sendcloud-Signature", auth::sign_hex(&Secret::new("k"), &body));
/// let scheme = Some(auth::BodySignature::Hex("Sendcloud-Signature"));
/// auth::verify_credentials(&signed, &Credentials::Hmac(Secret::new("k")), scheme).unwrap();
/// let err = auth::verify_credentials(&signed, &Credentials::None, scheme).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::MissingSecret);
/// ```
pub fn verify_credentials(
    delivery: &RawDelivery,
    credentials: &Credentials,
    signature: Option<BodySignature>,
) -> Result<(), Error> {
    let headers = &delivery.headers;
    let blank = match credentials {
        Credentials::Hmac(secret) | Credentials::Bearer(secret) => secret.expose().is_empty(),
        Credentials::Basic { password, .. } => password.expose().is_empty(),
        Credentials::HeaderToken { token, .. } => token.expose().is_empty(),
        Credentials::None | Credentials::Jwt(_) => false,
    };
    if blank {
        // An empty secret would accept an empty password or a key anyone can compute with.
        return Err(Error::new(
            ErrorKind::MissingSecret,
            "the configured secret is empty",
        ));
    }
    match (credentials, signature) {
        (Credentials::Hmac(secret), Some(BodySignature::Hex(header))) => {
            verify_hex_hmac(headers, header, secret, &delivery.body)
        }
        (Credentials::Hmac(secret), Some(BodySignature::Base64(header))) => {
            verify_base64_hmac(headers, header, secret, &delivery.body)
        }
        (Credentials::Hmac(_), None) => Err(Error::new(
            ErrorKind::Config,
            "this provider does not sign bodies; configure Basic, Bearer or a header token",
        )),
        (Credentials::Basic { username, password }, _) => verify_basic(headers, username, password),
        (Credentials::Bearer(token), _) => verify_bearer(headers, token),
        (Credentials::HeaderToken { header, token }, _) => {
            verify_header_token(headers, header, token)
        }
        // The injected receive time is "now": adapters never read the clock.
        (Credentials::Jwt(verifier), _) => verifier.verify(headers, delivery.received_at),
        (Credentials::None, _) => Err(Error::new(
            ErrorKind::MissingSecret,
            "no credentials configured for this endpoint; refusing to accept unauthenticated deliveries",
        )),
    }
}

/// Refuses credentials of a `kind` that `provider` cannot check (`accepted`, from
/// [`Adapter::credential_kinds`]); no kind ([`Credentials::None`], see
/// [`Credentials::kind`]) passes (the adapter fails closed when a delivery comes). The service
/// calls it for every endpoint when it starts, and adapters at the start of `verify`.
///
/// # Errors
/// [`ErrorKind::Config`], tagged with `provider`, naming the kinds it accepts.
///
/// ```
/// use shipfeed_core::{auth, CredentialKind, Credentials, ErrorKind, Provider, Secret};
/// let kinds = [CredentialKind::Basic, CredentialKind::FixedBearer];
/// let token = Credentials::Bearer(Secret::new("t"));
/// auth::check_kind(Provider::Shipup, &kinds, token.kind()).unwrap();
/// let err = auth::check_kind(Provider::Shipup, &kinds, Some(CredentialKind::Hmac)).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Config);
/// assert!(err.to_string().contains("HTTP Basic credentials or a fixed bearer token"), "{err}");
/// ```
pub fn check_kind(
    provider: Provider,
    accepted: &[CredentialKind],
    kind: Option<CredentialKind>,
) -> Result<(), Error> {
    let Some(kind) = kind else {
        return Ok(());
    };
    if accepted.contains(&kind) {
        return Ok(());
    }
    let names: Vec<&str> = accepted.iter().map(|k| k.describe()).collect();
    let accepted = match names.split_last() {
        None => "nothing".to_owned(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    };
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "{provider} authenticates with {accepted}; {} cannot apply",
            kind.describe()
        ),
    )
    .with_provider(provider))
}

/// Checks `delivery` against each of an endpoint's `credentials` in order (during a rotation:
/// the new secret and the old one) and answers the position of the first that matches, so
/// that an operator can see when an old secret is no longer used.
///
/// Each check is the adapter's own (constant time for every secret). A delivery that matches
/// none is checked against all of them, so its answer takes as long whichever secret it
/// almost matched; only a matching delivery stops early, which tells its sender nothing it
/// does not already know.
///
/// # Errors
/// The first credentials' error when none matches, or the first error that is not about
/// authentication (a configuration error) at once. An empty list is checked as
/// [`Credentials::None`] (the adapter decides: most fail closed).
///
/// ```
/// use shipfeed_core::{auth, Adapter, Credentials, RawDelivery, Secret};
/// # struct Basic;
/// # impl Adapter for Basic {
/// #     fn provider(&self) -> shipfeed_core::Provider { shipfeed_core::Provider::Shipup }
/// #     fn verify(&self, d: &RawDelivery, c: &Credentials) -> Result<(), shipfeed_core::Error> {
/// #         auth::verify_credentials(d, c, None)
/// #     }
/// #     fn parse(&self, _: &RawDelivery) -> Result<Vec<shipfeed_core::Output>, shipfeed_core::Error> {
/// #         Ok(Vec::new())
/// #     }
/// # }
/// let rotation = [
///     Credentials::Bearer(Secret::new("new-token")),
///     Credentials::Bearer(Secret::new("old-token")),
/// ];
/// let delivery = RawDelivery::new(&b"{}"[..], Default::default())
///     .with_header("Authorization", "Bearer old-token");
/// assert_eq!(auth::verify_any(&Basic, &delivery, &rotation).unwrap(), 1);
/// ```
pub fn verify_any(
    adapter: &dyn Adapter,
    delivery: &RawDelivery,
    credentials: &[Credentials],
) -> Result<usize, Error> {
    if credentials.is_empty() {
        return adapter.verify(delivery, &Credentials::None).map(|()| 0);
    }
    let mut refusal = None;
    for (position, candidate) in credentials.iter().enumerate() {
        match adapter.verify(delivery, candidate) {
            Ok(()) => return Ok(position),
            Err(error) if !error.kind().is_authentication() => return Err(error),
            Err(error) => {
                refusal.get_or_insert(error);
            }
        }
    }
    Err(refusal.unwrap_or_else(|| {
        Error::new(ErrorKind::MissingSecret, "no credentials configured")
            .with_provider(adapter.provider())
    }))
}

/// Compares two byte strings in time independent of their content and length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Hashing first hides the length as well as the content.
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.ct_eq(&b).into()
}

fn present<'h>(headers: &'h Headers, header: &str) -> Result<&'h str, Error> {
    headers
        .get(header)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing_header(header))
}

fn authorization<'h>(headers: &'h Headers, scheme: &str) -> Result<&'h str, Error> {
    let value = headers.get("Authorization").map(str::trim).unwrap_or("");
    let (given, rest) = value.split_once(' ').unwrap_or((value, ""));
    if given.eq_ignore_ascii_case(scheme) && !rest.trim().is_empty() {
        Ok(rest.trim())
    } else {
        Err(Error::new(
            ErrorKind::MissingSignature,
            format!("no `Authorization: {scheme}` header"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_BODY: &[u8] = br#"{"key": "value"}"#;
    const VECTOR_SIG: &str = "1eed4b3d41f4653ac64fd56f1bf1cbfd349e4482cbc11dff7134bd93e5da4b0a";

    fn with(name: &str, value: &str) -> Headers {
        [(name, value)].into_iter().collect()
    }

    #[test]
    fn hex_hmac_accepts_the_published_vector_in_any_case() {
        let secret = Secret::new("secretkey");
        for sig in [VECTOR_SIG.to_owned(), VECTOR_SIG.to_uppercase()] {
            verify_hex_hmac(&with("Sig", &sig), "sig", &secret, VECTOR_BODY).unwrap();
        }
    }

    #[test]
    fn hex_hmac_rejects_whitespace_changes_and_bad_hex() {
        let secret = Secret::new("secretkey");
        let err = verify_hex_hmac(
            &with("Sig", VECTOR_SIG),
            "Sig",
            &secret,
            br#"{"key":"value"}"#,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSignature);
        let err = verify_hex_hmac(&with("Sig", "zz"), "Sig", &secret, VECTOR_BODY).unwrap_err();
        assert!(err.message().contains("not a hex digest"));
        let err = verify_hex_hmac(&Headers::new(), "Sig", &secret, VECTOR_BODY).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingSignature);
    }

    #[test]
    fn base64_hmac_round_trips_and_rejects_other_bodies() {
        let secret = Secret::new("client-secret");
        let sig = sign_base64(&secret, b"body");
        verify_base64_hmac(&with("X-Sig", &sig), "x-sig", &secret, b"body").unwrap();
        let err = verify_base64_hmac(&with("X-Sig", &sig), "x-sig", &secret, b"bodY").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSignature);
        let err = verify_base64_hmac(&with("X-Sig", "%%%"), "x-sig", &secret, b"body").unwrap_err();
        assert!(err.message().contains("not base64"));
    }

    #[test]
    fn basic_and_bearer() {
        let good = with("Authorization", "Basic dXNlcjpwYXNz"); // user:pass
        verify_basic(&good, "user", &Secret::new("pass")).unwrap();
        let err = verify_basic(&good, "user", &Secret::new("other")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSignature);
        let err = verify_basic(&Headers::new(), "user", &Secret::new("pass")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingSignature);

        let bearer = with("authorization", "bearer tok-1");
        verify_bearer(&bearer, &Secret::new("tok-1")).unwrap();
        assert_eq!(
            verify_bearer(&bearer, &Secret::new("tok-2"))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidSignature
        );
        assert_eq!(
            verify_bearer(&good, &Secret::new("tok-1"))
                .unwrap_err()
                .kind(),
            ErrorKind::MissingSignature
        );
    }

    #[test]
    fn blank_secrets_fail_closed() {
        let delivery = RawDelivery::new(&b"{}"[..], Default::default())
            .with_header("Authorization", "Basic dXNlcjo="); // "user:" with an empty password
        let blank = Credentials::Basic {
            username: "user".into(),
            password: Secret::new(""),
        };
        let err = verify_credentials(&delivery, &blank, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingSecret);
        let err = verify_credentials(
            &delivery,
            &Credentials::Hmac(Secret::new("")),
            Some(BodySignature::Hex("X")),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingSecret);
    }

    #[test]
    fn header_token() {
        let headers = with("X-Secret-Token", "abc");
        verify_header_token(&headers, "x-secret-token", &Secret::new("abc")).unwrap();
        assert_eq!(
            verify_header_token(&headers, "x-secret-token", &Secret::new("abcd"))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidSignature
        );
    }
}
