//! shipfeed: one canonical, verified stream of shipment events from Sendcloud, Seven Senders,
//! HappyColis and Shipup.
//!
//! This facade re-exports [`shipfeed_core`] (the canonical model and the [`Adapter`] contract)
//! and, per cargo feature, one adapter crate per provider: `sendcloud`, `sevensenders`,
//! `happycolis`, `shipup`, or `all-providers`. No provider is on by default; enable the ones
//! you use. [`registry::adapter`] hands out an adapter by [`Provider`] and answers with a clear
//! [`ErrorKind::ProviderDisabled`] error for a provider this build leaves out.
//!
//! ```
//! use shipfeed::{registry, Provider, ErrorKind};
//!
//! match registry::adapter(Provider::Shipup, &registry::Settings::default()) {
//!     Ok(adapter) => assert_eq!(adapter.provider(), Provider::Shipup),
//!     Err(e) => assert_eq!(e.kind(), ErrorKind::ProviderDisabled),
//! }
//! ```
#![forbid(unsafe_code)]

pub use shipfeed_core::*;

#[cfg(feature = "happycolis")]
pub use shipfeed_happycolis as happycolis;
#[cfg(feature = "sendcloud")]
pub use shipfeed_sendcloud as sendcloud;
#[cfg(feature = "sevensenders")]
pub use shipfeed_sevensenders as sevensenders;
#[cfg(feature = "shipup")]
pub use shipfeed_shipup as shipup;

pub mod registry {
    //! The explicit provider registry: one line per provider, each behind its feature.

    use crate::{Adapter, Error, Provider};

    /// Settings some adapters need.
    #[derive(Debug, Clone)]
    #[non_exhaustive]
    pub struct Settings {
        /// Zone for timestamps the source gives without one (Seven Senders `status_time`).
        /// Default UTC; events parsed with it are flagged `time_zone_known: false`.
        pub source_time_zone: chrono_tz::Tz,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                source_time_zone: chrono_tz::UTC,
            }
        }
    }

    impl Settings {
        /// Settings with the given zone for zone-less source times.
        pub fn with_source_time_zone(zone: chrono_tz::Tz) -> Self {
            Settings {
                source_time_zone: zone,
            }
        }
    }

    /// The providers compiled into this build.
    pub fn enabled() -> Vec<Provider> {
        Provider::ALL
            .into_iter()
            .filter(|p| adapter(*p, &Settings::default()).is_ok())
            .collect()
    }

    /// The adapter for `provider`.
    ///
    /// # Errors
    /// [`ErrorKind::ProviderDisabled`](crate::ErrorKind::ProviderDisabled) when the provider's
    /// cargo feature is off in this build.
    #[allow(unused_variables)] // `settings` is unused when no provider needs it
    pub fn adapter(provider: Provider, settings: &Settings) -> Result<Box<dyn Adapter>, Error> {
        match provider {
            #[cfg(feature = "sendcloud")]
            Provider::Sendcloud => Ok(Box::new(shipfeed_sendcloud::SendcloudAdapter::new())),
            #[cfg(feature = "sevensenders")]
            Provider::SevenSenders => Ok(Box::new(
                shipfeed_sevensenders::SevenSendersAdapter::new(settings.source_time_zone),
            )),
            #[cfg(feature = "happycolis")]
            Provider::HappyColis => Ok(Box::new(shipfeed_happycolis::HappyColisAdapter::new())),
            #[cfg(feature = "shipup")]
            Provider::Shipup => Ok(Box::new(shipfeed_shipup::ShipupAdapter::new())),
            #[allow(unreachable_patterns)] // every provider enabled
            other => Err(Error::provider_disabled(other)),
        }
    }
}

#[cfg(all(test, feature = "all-providers"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use crate::auth::jwt::{FixedKeys, JwtPolicy, JwtVerifier, KeySet};
    use crate::{auth, registry, Credentials, ErrorKind, Provider, RawDelivery, Secret};

    /// What the service checks at startup (`credential_kinds`) and what `verify` answers agree
    /// for every provider: a listed kind is never a configuration error, an unlisted one always
    /// is.
    #[test]
    fn each_adapter_refuses_exactly_the_credential_kinds_it_does_not_list() {
        let keys = Arc::new(FixedKeys::new(KeySet::default()));
        let jwt = JwtVerifier::new(JwtPolicy::new(["aud"], ["iss"]), keys).unwrap();
        let samples = [
            Credentials::Hmac(Secret::new("k")),
            Credentials::Basic {
                username: "u".into(),
                password: Secret::new("p"),
            },
            Credentials::Bearer(Secret::new("t")),
            Credentials::HeaderToken {
                header: "X-Token".into(),
                token: Secret::new("t"),
            },
            Credentials::Jwt(jwt),
        ];
        let delivery = RawDelivery::new(&b"{}"[..], chrono::DateTime::UNIX_EPOCH);
        for provider in Provider::ALL {
            let adapter = registry::adapter(provider, &registry::Settings::default()).unwrap();
            for credentials in &samples {
                let Some(kind) = credentials.kind() else {
                    continue;
                };
                let listed = adapter.credential_kinds().contains(&kind);
                let checked =
                    auth::check_kind(provider, adapter.credential_kinds(), credentials.kind());
                assert_eq!(checked.is_ok(), listed, "{provider} {kind:?}");
                let config = adapter
                    .verify(&delivery, credentials)
                    .is_err_and(|e| e.kind() == ErrorKind::Config);
                assert_eq!(config, !listed, "{provider} {kind:?}");
            }
        }
    }
}
