//! Authentication of HappyColis deliveries.

use shipfeed_core::{auth, CredentialKind, Credentials, Error, Provider, RawDelivery};

use crate::error::{tagged, HappyColisError};

/// The header carrying Base64(HMAC-SHA256(raw body, client secret)).
pub(crate) const SIGNATURE_HEADER: &str = "x-happycolis-webhook-signature";

const SCHEME: auth::BodySignature = auth::BodySignature::Base64(SIGNATURE_HEADER);

/// What HappyColis can send: its signature (keyed with the client secret), or a custom
/// subscription header.
pub(crate) const CREDENTIAL_KINDS: &[CredentialKind] =
    &[CredentialKind::Hmac, CredentialKind::HeaderToken];

/// Checks a delivery against the configured credentials, failing closed.
///
/// - `Hmac(secret)`: the signature header over the exact body bytes.
/// - `HeaderToken { header, token }`: a custom subscription header (e.g. `X-Secret-Token`),
///   for endpoints that rely on it instead of the signature.
/// - `None`, or an empty secret or token: `MissingSecret` (an HMAC keyed with nothing proves
///   nothing). Basic, a bearer token or a JWT: `Config`, since HappyColis sends none of them.
pub(crate) fn verify(delivery: &RawDelivery, credentials: &Credentials) -> Result<(), Error> {
    auth::check_kind(Provider::HappyColis, CREDENTIAL_KINDS, credentials.kind())?;
    match credentials {
        Credentials::HeaderToken { header, .. } if header.trim().is_empty() => {
            Err(HappyColisError::NoTokenHeader.into())
        }
        // HMAC, a header token, or none; core fails closed on none and on blank secrets.
        _ => auth::verify_credentials(delivery, credentials, Some(SCHEME)).map_err(tagged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipfeed_core::{ErrorKind, Provider, Secret};

    const BODY: &[u8] = br#"{"header":{"type":"shipment/created"},"body":{}}"#;

    fn delivery() -> RawDelivery {
        RawDelivery::new(BODY, chrono::DateTime::UNIX_EPOCH)
    }

    fn hmac(secret: &str) -> Credentials {
        Credentials::Hmac(Secret::new(secret))
    }

    fn kind_of(result: Result<(), Error>) -> ErrorKind {
        let err = result.unwrap_err();
        assert_eq!(err.provider(), Some(Provider::HappyColis), "{err}");
        err.kind()
    }

    #[test]
    fn a_good_signature_passes() {
        let signed = delivery().with_header(
            "X-HappyColis-Webhook-Signature",
            auth::sign_base64(&Secret::new("client-secret"), BODY),
        );
        verify(&signed, &hmac("client-secret")).unwrap();
    }

    #[test]
    fn a_wrong_signature_is_invalid() {
        let signed = delivery().with_header(
            SIGNATURE_HEADER,
            auth::sign_base64(&Secret::new("other"), BODY),
        );
        let kind = kind_of(verify(&signed, &hmac("client-secret")));
        assert_eq!(kind, ErrorKind::InvalidSignature);
        assert!(kind.is_authentication());
        let garbage = delivery().with_header(SIGNATURE_HEADER, "not base64!");
        assert_eq!(
            kind_of(verify(&garbage, &hmac("client-secret"))),
            ErrorKind::InvalidSignature
        );
    }

    #[test]
    fn a_changed_body_is_invalid() {
        let secret = Secret::new("client-secret");
        let mut signed = delivery().with_header(SIGNATURE_HEADER, auth::sign_base64(&secret, BODY));
        signed.body.push(b' ');
        assert_eq!(
            kind_of(verify(&signed, &hmac("client-secret"))),
            ErrorKind::InvalidSignature
        );
    }

    #[test]
    fn a_missing_header_is_missing_signature() {
        assert_eq!(
            kind_of(verify(&delivery(), &hmac("client-secret"))),
            ErrorKind::MissingSignature
        );
        let empty = delivery().with_header(SIGNATURE_HEADER, "  ");
        assert_eq!(
            kind_of(verify(&empty, &hmac("client-secret"))),
            ErrorKind::MissingSignature
        );
    }

    #[test]
    fn no_secret_fails_closed() {
        let signed =
            delivery().with_header(SIGNATURE_HEADER, auth::sign_base64(&Secret::new(""), BODY));
        assert_eq!(
            kind_of(verify(&signed, &Credentials::None)),
            ErrorKind::MissingSecret
        );
        assert_eq!(
            kind_of(verify(&signed, &hmac(""))),
            ErrorKind::MissingSecret
        );
    }

    #[test]
    fn a_subscription_header_token_is_an_alternative() {
        let creds = Credentials::HeaderToken {
            header: "X-Secret-Token".to_owned(),
            token: Secret::new("tok-123"),
        };
        verify(&delivery().with_header("x-secret-token", "tok-123"), &creds).unwrap();
        let wrong = delivery().with_header("X-Secret-Token", "tok-124");
        assert_eq!(kind_of(verify(&wrong, &creds)), ErrorKind::InvalidSignature);
        assert_eq!(
            kind_of(verify(&delivery(), &creds)),
            ErrorKind::MissingSignature
        );
        let empty = Credentials::HeaderToken {
            header: "X-Secret-Token".to_owned(),
            token: Secret::new(""),
        };
        assert_eq!(
            kind_of(verify(&delivery(), &empty)),
            ErrorKind::MissingSecret
        );
        let nameless = Credentials::HeaderToken {
            header: " ".to_owned(),
            token: Secret::new("tok-123"),
        };
        assert_eq!(kind_of(verify(&delivery(), &nameless)), ErrorKind::Config);
    }

    #[test]
    fn other_credential_kinds_are_configuration_errors() {
        let basic = Credentials::Basic {
            username: "u".to_owned(),
            password: Secret::new("p"),
        };
        assert_eq!(kind_of(verify(&delivery(), &basic)), ErrorKind::Config);
        let bearer = Credentials::Bearer(Secret::new("t"));
        assert_eq!(kind_of(verify(&delivery(), &bearer)), ErrorKind::Config);
    }
}
