//! Authentication: Shipup signs nothing; it sends HTTP Basic credentials or a bearer token that
//! the merchant configured, so verification is a constant-time comparison (core helpers).

use shipfeed_core::{auth, Credentials, Error, ErrorKind, Headers, Provider};

/// Checks the `Authorization` header against the configured credentials, failing closed.
///
/// # Errors
/// `MissingSecret` for [`Credentials::None`] or a blank password / token, `MissingSignature`
/// when the request has no matching `Authorization` header, `InvalidSignature` when it differs,
/// `Config` for credentials Shipup cannot send (HMAC, header token).
pub(crate) fn verify(headers: &Headers, credentials: &Credentials) -> Result<(), Error> {
    let result = match credentials {
        Credentials::Basic { username, password } if !password.expose().is_empty() => {
            auth::verify_basic(headers, username, password)
        }
        Credentials::Bearer(token) if !token.expose().trim().is_empty() => {
            auth::verify_bearer(headers, token)
        }
        // A blank password or token would accept anyone who sends a blank one: fail closed.
        Credentials::None | Credentials::Basic { .. } | Credentials::Bearer(_) => Err(Error::new(
            ErrorKind::MissingSecret,
            "no Shipup credentials configured (HTTP Basic user and password, or a bearer token)",
        )),
        _ => Err(Error::new(
            ErrorKind::Config,
            "Shipup authenticates with HTTP Basic or a bearer token; these credentials cannot apply",
        )),
    };
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
    use shipfeed_core::Secret;

    fn basic() -> Credentials {
        Credentials::Basic {
            username: "shipup".into(),
            password: Secret::new("s3cret"),
        }
    }

    fn with_auth(value: &str) -> Headers {
        [("Authorization", value)].into_iter().collect()
    }

    fn kind(headers: &Headers, credentials: &Credentials) -> ErrorKind {
        let err = verify(headers, credentials).unwrap_err();
        assert_eq!(err.provider(), Some(Provider::Shipup));
        err.kind()
    }

    #[test]
    fn basic_good_wrong_and_missing() {
        verify(
            &with_auth(&basic_authorization("shipup", "s3cret")),
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
        verify(&with_auth("Bearer eyJhbGciOi.static.token"), &creds).unwrap();
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
        assert_eq!(kind(&Headers::new(), &token), ErrorKind::Config);
    }
}
