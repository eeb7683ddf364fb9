//! `Sendcloud-Signature`: lowercase hex HMAC-SHA256 of the exact raw body, keyed with the
//! integration's Secret Key or Webhook Signature Key.

use shipfeed_core::auth::{self, BodySignature};
use shipfeed_core::{CredentialKind, Credentials, Error, Provider, RawDelivery};

/// The header Sendcloud signs legacy integration webhooks in.
pub const SIGNATURE_HEADER: &str = "Sendcloud-Signature";

/// The integration webhooks' HMAC, or what an Event Subscriptions connection sends (Basic, a
/// fixed bearer token, or an API key in a header of its own).
pub(crate) const CREDENTIAL_KINDS: &[CredentialKind] = &[
    CredentialKind::Hmac,
    CredentialKind::Basic,
    CredentialKind::FixedBearer,
    CredentialKind::HeaderToken,
];

pub(crate) fn verify(delivery: &RawDelivery, credentials: &Credentials) -> Result<(), Error> {
    // Event Subscriptions connections authenticate with Basic, Bearer or a header token
    // instead of an HMAC; `verify_credentials` covers those too.
    auth::check_kind(Provider::Sendcloud, CREDENTIAL_KINDS, credentials.kind())?;
    auth::verify_credentials(
        delivery,
        credentials,
        Some(BodySignature::Hex(SIGNATURE_HEADER)),
    )
    .map_err(|e| e.with_provider(Provider::Sendcloud))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipfeed_core::{ErrorKind, Secret};

    const BODY: &[u8] = br#"{"key": "value"}"#;
    const PUBLISHED: &str = "1eed4b3d41f4653ac64fd56f1bf1cbfd349e4482cbc11dff7134bd93e5da4b0a";

    fn delivery(body: &[u8], signature: Option<&str>) -> RawDelivery {
        let delivery = RawDelivery::new(body, chrono::DateTime::default());
        match signature {
            Some(sig) => delivery.with_header(SIGNATURE_HEADER, sig),
            None => delivery,
        }
    }

    fn secret() -> Credentials {
        Credentials::Hmac(Secret::new("secretkey"))
    }

    #[test]
    fn published_vector_verifies() {
        verify(&delivery(BODY, Some(PUBLISHED)), &secret()).unwrap();
    }

    #[test]
    fn one_byte_change_is_rejected() {
        let err = verify(
            &delivery(br#"{"key": "valuf"}"#, Some(PUBLISHED)),
            &secret(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSignature);
        assert_eq!(err.provider(), Some(Provider::Sendcloud));
    }

    #[test]
    fn missing_header_wrong_signature_and_missing_secret_are_distinct() {
        let missing = verify(&delivery(BODY, None), &secret()).unwrap_err();
        let wrong = verify(&delivery(BODY, Some(&"0".repeat(64))), &secret()).unwrap_err();
        let no_secret = verify(&delivery(BODY, Some(PUBLISHED)), &Credentials::None).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::MissingSignature);
        assert!(missing.to_string().contains("Sendcloud-Signature"));
        assert_eq!(wrong.kind(), ErrorKind::InvalidSignature);
        assert_eq!(no_secret.kind(), ErrorKind::MissingSecret);
    }
}
