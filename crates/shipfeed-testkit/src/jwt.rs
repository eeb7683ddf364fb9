//! Keys generated in the test, their JWKS, and compact JWTs signed with them (RS256 with the
//! `rsa` crate, ES256 with `p256`: independently of the verifier under test, which uses
//! jsonwebtoken and ring). Also the forged tokens a verifier must refuse: unsigned
//! (`alg: none`) and HS256 keyed with a public key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Signer as _;
use rand::rngs::OsRng;
use rsa::pkcs8::EncodePublicKey as _;
use rsa::signature::SignatureEncoding as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::{json, Value};

/// A private key made for one test, with its key id.
pub struct TestKey {
    kid: String,
    secret: Secret,
}

enum Secret {
    Rsa(Box<rsa::RsaPrivateKey>),
    Ec(p256::ecdsa::SigningKey),
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn encode(value: &Value) -> String {
    b64(value.to_string().as_bytes())
}

impl TestKey {
    /// A new 2048-bit RSA key (RS256).
    ///
    /// # Panics
    /// When the system's random source fails.
    pub fn rsa(kid: &str) -> TestKey {
        #[allow(clippy::expect_used)]
        let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA key generation");
        TestKey {
            kid: kid.to_owned(),
            secret: Secret::Rsa(Box::new(key)),
        }
    }

    /// A new P-256 key (ES256).
    pub fn ec(kid: &str) -> TestKey {
        TestKey {
            kid: kid.to_owned(),
            secret: Secret::Ec(p256::ecdsa::SigningKey::random(&mut OsRng)),
        }
    }

    /// Its key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `"RS256"` or `"ES256"`.
    pub fn algorithm(&self) -> &'static str {
        match self.secret {
            Secret::Rsa(_) => "RS256",
            Secret::Ec(_) => "ES256",
        }
    }

    /// The public key as a JWK (with `kid`, `alg` and `use: "sig"`).
    pub fn jwk(&self) -> Value {
        match &self.secret {
            Secret::Rsa(key) => json!({
                "kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig",
                "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be()),
            }),
            Secret::Ec(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                let coordinate =
                    |c: Option<&p256::FieldBytes>| c.map(|c| b64(c)).unwrap_or_default();
                json!({
                    "kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256", "use": "sig",
                    "x": coordinate(point.x()), "y": coordinate(point.y()),
                })
            }
        }
    }

    /// The public key's bytes as a verifier might hold them (the PEM text of an RSA key, the
    /// SEC1 point of an EC key): what an HS256 forgery keys its MAC with.
    pub fn public_bytes(&self) -> Vec<u8> {
        match &self.secret {
            Secret::Rsa(key) => key
                .to_public_key()
                .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
                .map(String::into_bytes)
                .unwrap_or_default(),
            Secret::Ec(key) => key
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        }
    }

    /// A token with `claims`, signed by this key, its header `{"alg", "kid", "typ": "JWT"}`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": self.algorithm(), "kid": self.kid, "typ": "JWT"});
        self.sign_with_header(&header, claims)
    }

    /// A token with this exact header and `claims`, signed by this key with its algorithm
    /// (whatever the header says).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", encode(header), encode(claims));
        let signature = match &self.secret {
            Secret::Rsa(key) => {
                let signer = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new((**key).clone());
                signer.sign(input.as_bytes()).to_vec()
            }
            Secret::Ec(key) => {
                let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
                signature.to_bytes().to_vec()
            }
        };
        format!("{input}.{}", b64(&signature))
    }
}

/// A JWKS document holding these keys' public halves.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

/// An unsigned token: `header` (say `{"alg": "none"}`), `claims`, and an empty signature.
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.{}.", encode(header), encode(claims))
}

/// A token whose signature is HMAC-SHA256 keyed with `key` (the "HS256 with the public key"
/// forgery when `key` is [`TestKey::public_bytes`]).
pub fn hs256(header: &Value, claims: &Value, key: &[u8]) -> String {
    let input = format!("{}.{}", encode(header), encode(claims));
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

/// `token` with the first character of its signature changed (still base64url, so the
/// signature decodes and fails to verify).
pub fn tampered(token: &str) -> String {
    let Some(dot) = token.rfind('.') else {
        return token.to_owned();
    };
    let mut bytes = token.as_bytes().to_vec();
    if let Some(first) = bytes.get_mut(dot + 1) {
        *first = if *first == b'A' { b'B' } else { b'A' };
    }
    String::from_utf8(bytes).unwrap_or_default()
}

/// A JWKS endpoint on 127.0.0.1 (a real HTTP server on a free port) serving the document the
/// test gives it, and counting its requests.
#[cfg(feature = "jwks-server")]
pub struct JwksServer {
    /// `http://127.0.0.1:<port>/jwks.json`.
    pub url: String,
    served: std::sync::Arc<std::sync::Mutex<(u16, Value)>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[cfg(feature = "jwks-server")]
impl JwksServer {
    /// Starts serving `document` with status 200 (on the current tokio runtime).
    ///
    /// # Panics
    /// When no local port can be bound.
    #[allow(clippy::expect_used)]
    pub async fn start(document: Value) -> JwksServer {
        use std::sync::atomic::Ordering;
        use std::sync::{Arc, Mutex, PoisonError};

        let served = Arc::new(Mutex::new((200, document)));
        let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (slot, counter) = (Arc::clone(&served), Arc::clone(&hits));
        let router = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let (status, body) = slot.lock().unwrap_or_else(PoisonError::into_inner).clone();
                async move {
                    let status = axum::http::StatusCode::from_u16(status)
                        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                    (status, body.to_string())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let url = format!(
            "http://{}/jwks.json",
            listener.local_addr().expect("local address")
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
        JwksServer { url, served, hits }
    }

    /// Serves `document` with `status` from now on.
    pub fn serve(&self, status: u16, document: Value) {
        *self
            .served
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (status, document);
    }

    /// How many requests it answered.
    pub fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}
