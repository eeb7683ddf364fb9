//! The providers shipfeed knows about.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Error, ErrorKind};

/// A shipping platform that sends shipment events.
///
/// The wire name (`sendcloud`, `sevensenders`, `happycolis`, `shipup`) is also the cargo feature
/// that enables the provider's adapter in the `shipfeed` facade.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Provider {
    /// Sendcloud integration webhooks (v2 and v3 shapes), signed with hex HMAC-SHA256.
    Sendcloud,
    /// Seven Senders shipment events, pulled from an SQS-compatible queue.
    #[serde(rename = "sevensenders")]
    SevenSenders,
    /// HappyColis webhooks, signed with base64 HMAC-SHA256.
    #[serde(rename = "happycolis")]
    HappyColis,
    /// Shipup webhooks, authenticated with HTTP Basic or a bearer token.
    Shipup,
}

impl Provider {
    /// Every provider, in a fixed order.
    pub const ALL: [Provider; 4] = [
        Provider::Sendcloud,
        Provider::SevenSenders,
        Provider::HappyColis,
        Provider::Shipup,
    ];

    /// The wire name, e.g. `"sevensenders"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::Sendcloud => "sendcloud",
            Provider::SevenSenders => "sevensenders",
            Provider::HappyColis => "happycolis",
            Provider::Shipup => "shipup",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = Error;

    /// Parses a wire name; also accepts `seven_senders`/`seven-senders` and any letter case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let folded: String = s
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .flat_map(char::to_lowercase)
            .collect();
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == folded)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "unknown provider `{s}` (expected one of: sendcloud, sevensenders, happycolis, shipup)"
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wire_names_and_common_spellings() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>().ok(), Some(p));
        }
        assert_eq!(
            "Seven-Senders".parse::<Provider>().ok(),
            Some(Provider::SevenSenders)
        );
        assert_eq!(
            "HAPPY_COLIS".parse::<Provider>().ok(),
            Some(Provider::HappyColis)
        );
        let err = "dhl".parse::<Provider>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("unknown provider `dhl`"));
    }

    #[test]
    fn serde_name_matches_as_str() {
        for p in Provider::ALL {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
    }
}
