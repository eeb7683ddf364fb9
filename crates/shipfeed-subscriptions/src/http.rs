//! One signed HTTP POST of a feed item to a subscriber, the Standard Webhooks way: headers
//! `webhook-id` (the same on every attempt), `webhook-timestamp` (this attempt's Unix seconds)
//! and `webhook-signature` (`v1,` + base64 of HMAC-SHA256 over `id.timestamp.body`, one per
//! secret, space-separated, so that a subscriber rotating keys verifies with either).

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// A signing secret, written `whsec_` + base64 of its key bytes (Standard Webhooks).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// Reads a `whsec_...` secret.
    ///
    /// ```
    /// use shipfeed_subscriptions::Secret;
    /// assert!(Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
    /// assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
    /// ```
    ///
    /// # Errors
    /// What is wrong with it (never the secret itself).
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .trim()
            .strip_prefix("whsec_")
            .ok_or_else(|| "a signing secret starts with `whsec_`".to_owned())?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "a signing secret is `whsec_` followed by base64".to_owned())?;
        if key.len() < 16 {
            return Err(format!(
                "a signing secret needs at least 16 key bytes (this one has {})",
                key.len()
            ));
        }
        Ok(Secret(key))
    }

    /// Reads the secrets of a setting: one or more `whsec_` secrets separated by whitespace.
    ///
    /// # Errors
    /// What is wrong with them (never a secret itself).
    pub fn parse_all(text: &str) -> Result<Vec<Self>, String> {
        let secrets = text
            .split_whitespace()
            .map(Secret::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if secrets.is_empty() {
            return Err("no signing secret given".to_owned());
        }
        Ok(secrets)
    }
}

/// The `webhook-signature` header value of one attempt: `v1,<base64>` per secret.
///
/// ```
/// use shipfeed_subscriptions::{signature, Secret};
/// let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// let header = signature(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
/// assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
/// # Ok::<(), String>(())
/// ```
pub fn signature(secrets: &[Secret], webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    let signed_prefix = format!("{webhook_id}.{timestamp}.");
    let mut header = String::new();
    for secret in secrets {
        // HMAC takes a key of any length: this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&secret.0) else {
            continue;
        };
        mac.update(signed_prefix.as_bytes());
        mac.update(body);
        if !header.is_empty() {
            header.push(' ');
        }
        header.push_str("v1,");
        header.push_str(
            &base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()),
        );
    }
    header
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// A 2xx answer.
    Delivered,
    /// Anything else: retried on the schedule.
    Failed {
        /// The answer's status, when there was an answer.
        status: Option<u16>,
        /// What went wrong, for the operator (a status, or the transport's error).
        error: String,
        /// The receiver asked to slow down (429, 502, 503, 504), for this long when it said.
        throttle: Option<Option<Duration>>,
        /// The receiver answered 410 Gone: stop sending to it.
        gone: bool,
    },
}

/// A subscriber's endpoint: the client, its URL and secrets.
#[derive(Clone)]
pub(crate) struct Endpoint {
    client: reqwest::Client,
    url: reqwest::Url,
    secrets: Vec<Secret>,
}

impl Endpoint {
    pub(crate) fn new(
        url: reqwest::Url,
        secrets: Vec<Secret>,
        timeout: Duration,
        concurrency: usize,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // Standard Webhooks: a redirect is not followed (it would resend the body to
            // wherever the answer points).
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(concurrency)
            .user_agent(concat!("shipfeed/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Endpoint {
            client,
            url,
            secrets,
        })
    }

    /// POSTs `body` under `webhook_id`, signed afresh with `timestamp` (Unix seconds).
    pub(crate) async fn post(
        &self,
        webhook_id: &str,
        timestamp: i64,
        body: bytes::Bytes,
    ) -> Attempt {
        let signature = signature(&self.secrets, webhook_id, timestamp, &body);
        let sent = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Failed {
                    status: None,
                    // Without the URL: it may carry a token.
                    error: transport_error(&error),
                    throttle: None,
                    gone: false,
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Delivered;
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let code = status.as_u16();
        Attempt::Failed {
            status: Some(code),
            error: format!("answered {status}"),
            throttle: matches!(code, 429 | 502 | 503 | 504).then_some(retry_after),
            gone: code == 410,
        }
    }
}

/// A transport error without its URL.
fn transport_error(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_redirect() {
        "redirected (not followed)"
    } else {
        "request failed"
    };
    let cause = std::error::Error::source(error)
        .map(|source| format!(": {}", shipfeed_core::error_chain(source)))
        .unwrap_or_default();
    format!("{what}{cause}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_secrets_sign_once_each_and_bad_ones_are_refused_without_showing_them() {
        let a = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_or_else(|e| panic!("{e}"));
        let b = Secret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .unwrap_or_else(|e| panic!("{e}"));
        let both = signature(&[a.clone(), b.clone()], "id", 1, b"{}");
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], signature(&[a], "id", 1, b"{}"));
        assert_eq!(parts[1], signature(&[b], "id", 1, b"{}"));
        assert_eq!(
            Secret::parse_all("  ").unwrap_err(),
            "no signing secret given"
        );
        let short = Secret::parse("whsec_c2hvcnQ=").unwrap_err();
        assert!(short.contains("at least 16 key bytes"), "{short}");
        assert!(!format!(
            "{:?}",
            Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        )
        .contains("MfKQ"));
    }
}
