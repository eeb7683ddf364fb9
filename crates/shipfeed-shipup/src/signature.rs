//! Authentication: Shipup signs no bodies. It sends the HTTP Basic credentials or the fixed
//! bearer token the merchant configured (compared in constant time), or a signed JWT (its
//! "OAuth 2.0 JWT Bearer flow", Google-IAP compatible), checked against a key set; all through
//! the core helpers.

use shipfeed_core::{auth, CredentialKind, Credentials, Error, ErrorKind, Provider, RawDelivery};

/// What Shipup can send: HTTP Basic, a fixed bearer token, or a JWT.
pub(crate) const CREDENTIAL_KINDS: &[CredentialKind] = &[
    CredentialKind::Basic,
    CredentialKind::FixedBearer,
    CredentialKind::Jwt,
];

/// Checks the delivery's `Authorization` header (or the JWT policy's header) against the
/// configured credentials, failing closed.
///
/// # Errors
/// `MissingSecret` for [`Credentials::None`] or a blank password / token, `MissingSignature`
/// when the request carries no credentials where they are expected, `InvalidSignature` when
/// they differ (or the JWT does not verify), `Config` for credentials Shipup cannot send (HMAC,
/// header token).
pub(crate) fn verify(delivery: &RawDelivery, credentials: &Credentials) -> Result<(), Error> {
    let result =
        auth::check_kind(Provider::Shipup, CREDENTIAL_KINDS, credentials.kind()).and_then(|()| {
            match credentials {
                // A blank password or token would accept anyone who sends a blank one.
                Credentials::None => Err(Error::new(
                    ErrorKind::MissingSecret,
                    "no Shipup credentials configured (HTTP Basic user and password, a fixed bearer token, or a JWT policy)",
                )),
                Credentials::Bearer(token) if token.expose().trim().is_empty() => Err(Error::new(
                    ErrorKind::MissingSecret,
                    "the configured bearer token is blank",
                )),
                // Basic (blank passwords fail closed there), Bearer, JWT.
                other => auth::verify_credentials(delivery, other, None),
            }
        });
    result.map_err(|e| e.with_provider(Provider::Shipup))
}

/// The `Authorization` value Shipup sends for Basic credentials (test-only signer).
#[cfg(test)]
pub(crate) fn basic_authorization(username: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipfeed_core::{Headers, Secret};

    fn basic() -> Credentials {
        Credentials::Basic {
            username: "shipup".into(),
            password: Secret::new("s3cret"),
        }
    }

    fn with_auth(value: &str) -> Headers {
        [("Authorization", value)].into_iter().collect()
    }

    fn delivery(headers: &Headers) -> RawDelivery {
        let mut delivery = RawDelivery::new(&b"{}"[..], chrono::DateTime::UNIX_EPOCH);
        delivery.headers = headers.clone();
        delivery
    }

    fn kind(headers: &Headers, credentials: &Credentials) -> ErrorKind {
        let err = verify(&delivery(headers), credentials).unwrap_err();
        assert_eq!(err.provider(), Some(Provider::Shipup));
        err.kind()
    }

    #[test]
    fn basic_good_wrong_and_missing() {
        verify(
            &delivery(&with_auth(&basic_authorization("shipup", "s3cret"))),
            &basic(),
        )
        .unwrap();
        let wrong_password = with_auth(&basic_authorization("shipup", "s3cret!"));
        assert_eq!(kind(&wrong_password, &basic()), ErrorKind::InvalidSignature);
        let wrong_user = with_auth(&basic_authorization("shipUp", "s3cret"));
        assert_eq!(kind(&wrong_user, &basic()), ErrorKind::InvalidSignature);
        assert_eq!(kind(&Headers::new(), &basic()), ErrorKind::MissingSignature);
        assert_eq!(
            kind(&with_auth("Bearer s3cret"), &basic()),
            ErrorKind::MissingSignature
        );
        assert_eq!(
            kind(&with_auth("Basic %%%"), &basic()),
            ErrorKind::InvalidSignature
        );
    }

    #[test]
    fn bearer_good_wrong_and_missing() {
        let creds = Credentials::Bearer(Secret::new("eyJhbGciOi.static.token"));
        verify(
            &delivery(&with_auth("Bearer eyJhbGciOi.static.token")),
            &creds,
        )
        .unwrap();
        assert_eq!(
            kind(&with_auth("Bearer eyJhbGciOi.other"), &creds),
            ErrorKind::InvalidSignature
        );
        assert_eq!(kind(&Headers::new(), &creds), ErrorKind::MissingSignature);
    }

    #[test]
    fn fails_closed_without_credentials() {
        let headers = with_auth(&basic_authorization("shipup", ""));
        assert_eq!(kind(&headers, &Credentials::None), ErrorKind::MissingSecret);
        let blank = Credentials::Basic {
            username: "shipup".into(),
            password: Secret::new(""),
        };
        assert_eq!(kind(&headers, &blank), ErrorKind::MissingSecret);
        let blank = Credentials::Bearer(Secret::new(" "));
        assert_eq!(
            kind(&with_auth("Bearer  "), &blank),
            ErrorKind::MissingSecret
        );
    }

    #[test]
    fn other_credential_kinds_are_a_config_error() {
        let hmac = Credentials::Hmac(Secret::new("k"));
        assert_eq!(kind(&with_auth("Basic eDp5"), &hmac), ErrorKind::Config);
        let token = Credentials::HeaderToken {
            header: "X-Token".into(),
            token: Secret::new("k"),
        };
        let err = verify(&delivery(&Headers::new()), &token).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string()
                .contains("HTTP Basic credentials, a fixed bearer token or a signed JWT"),
            "{err}"
        );
    }
}
