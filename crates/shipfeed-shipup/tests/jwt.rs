//! Shipup's OAuth 2.0 JWT bearer flow through the adapter: keys generated here, tokens signed
//! with them, checked at an injected receive time (no clock is read, nothing sleeps). The key
//! source is a hand-driven stand-in for the service's background refresh, whose own tests (a
//! local JWKS server) are in shipfeed-server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use shipfeed_core::auth::jwt::{Algorithm, FixedKeys, JwtPolicy, JwtVerifier, KeySet, KeySource};
use shipfeed_core::{Adapter, Credentials, ErrorKind, Provider, RawDelivery};
use shipfeed_shipup::ShipupAdapter;
use shipfeed_testkit::jwt::{hs256, jwks, tampered, unsigned, TestKey};

const AUDIENCE: &str = "https://shipfeed.example/webhooks/shipup";
const ISSUER: &str = "https://accounts.google.com";
/// The receive time every token is checked at.
const NOW: i64 = 1_717_243_200;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).unwrap()
}

fn claims() -> Value {
    json!({"aud": AUDIENCE, "iss": ISSUER, "sub": "shipup", "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 300})
}

/// `claims()` with `changes` merged in (`null` removes a claim).
fn claims_with(changes: Value) -> Value {
    let mut claims = claims();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

fn key_set(keys: &[&TestKey]) -> KeySet {
    KeySet::from_json(jwks(keys).to_string().as_bytes()).unwrap()
}

/// A key source the test refreshes by hand, recording the unknown key ids it was told of.
#[derive(Debug, Default)]
struct HandRefreshed {
    keys: Mutex<Arc<KeySet>>,
    unknown: Mutex<Vec<String>>,
}

impl HandRefreshed {
    fn new(keys: KeySet) -> Arc<Self> {
        Arc::new(HandRefreshed {
            keys: Mutex::new(Arc::new(keys)),
            unknown: Mutex::default(),
        })
    }

    fn replace(&self, keys: KeySet) {
        *self.keys.lock().unwrap() = Arc::new(keys);
    }

    fn told(&self) -> Vec<String> {
        self.unknown.lock().unwrap().clone()
    }
}

impl KeySource for HandRefreshed {
    fn keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.lock().unwrap())
    }

    fn unknown_key(&self, kid: &str) {
        self.unknown.lock().unwrap().push(kid.to_owned());
    }
}

fn credentials(policy: JwtPolicy, keys: Arc<dyn KeySource>) -> Credentials {
    Credentials::Jwt(JwtVerifier::new(policy, keys).unwrap())
}

fn policy() -> JwtPolicy {
    JwtPolicy::new([AUDIENCE], [ISSUER])
}

fn bearer(token: &str) -> RawDelivery {
    RawDelivery::new(&b"{}"[..], now()).with_header("Authorization", format!("Bearer {token}"))
}

/// Why `token` is refused (the error's message), checking it is an authentication failure of
/// Shipup's.
fn refusal(credentials: &Credentials, delivery: &RawDelivery) -> String {
    let error = ShipupAdapter::new()
        .verify(delivery, credentials)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidSignature, "{error}");
    assert_eq!(error.provider(), Some(Provider::Shipup));
    error.message().to_owned()
}

fn accepts(credentials: &Credentials, delivery: &RawDelivery) {
    ShipupAdapter::new().verify(delivery, credentials).unwrap();
}

#[test]
fn good_tokens_of_both_algorithms_pass_and_their_claims_are_checked() {
    let (rsa, ec) = (TestKey::rsa("r1"), TestKey::ec("e1"));
    let creds = credentials(policy(), Arc::new(FixedKeys::new(key_set(&[&rsa, &ec]))));
    accepts(&creds, &bearer(&rsa.sign(&claims())));
    accepts(&creds, &bearer(&ec.sign(&claims())));
    // An audience list that names ours among others.
    let several = claims_with(json!({"aud": ["https://elsewhere.example", AUDIENCE]}));
    accepts(&creds, &bearer(&ec.sign(&several)));

    for (changes, reason) in [
        (json!({"exp": NOW - 61}), "the token expired at"),
        (json!({"nbf": NOW + 61}), "not valid before"),
        (
            json!({"aud": "https://elsewhere.example"}),
            "audience (`aud`)",
        ),
        (json!({"aud": null}), "no valid `aud` claim"),
        (json!({"iss": "https://evil.example"}), "issuer (`iss`)"),
        (json!({"iss": null}), "no valid `iss` claim"),
        (json!({"exp": null}), "no valid `exp` claim"),
        (json!({"exp": "tomorrow"}), "malformed"),
    ] {
        let token = rsa.sign(&claims_with(changes.clone()));
        let why = refusal(&creds, &bearer(&token));
        assert!(why.contains(reason), "{changes}: {why}");
        assert!(!why.contains(&token), "the token never reaches a message");
    }
    // Within the leeway (60 s by default) on both ends.
    accepts(
        &creds,
        &bearer(&ec.sign(&claims_with(json!({"exp": NOW - 59})))),
    );
    accepts(
        &creds,
        &bearer(&ec.sign(&claims_with(json!({"nbf": NOW + 59})))),
    );
    let strict = credentials(
        policy().with_leeway(TimeDelta::zero()),
        Arc::new(FixedKeys::new(key_set(&[&ec]))),
    );
    let why = refusal(
        &strict,
        &bearer(&ec.sign(&claims_with(json!({"exp": NOW - 1})))),
    );
    assert!(why.contains("expired"), "{why}");
}

#[test]
fn forged_and_tampered_tokens_are_refused() {
    let (rsa, ec) = (TestKey::rsa("r1"), TestKey::ec("e1"));
    let creds = credentials(policy(), Arc::new(FixedKeys::new(key_set(&[&rsa, &ec]))));

    let why = refusal(&creds, &bearer(&tampered(&rsa.sign(&claims()))));
    assert!(why.contains("signature does not verify"), "{why}");
    let why = refusal(&creds, &bearer(&tampered(&ec.sign(&claims()))));
    assert!(why.contains("signature does not verify"), "{why}");
    // Claims changed under a valid signature of other claims.
    let good = rsa.sign(&claims());
    let evil = rsa.sign(&claims_with(json!({"sub": "someone-else"})));
    let spliced = {
        let (good_parts, evil_parts): (Vec<&str>, Vec<&str>) =
            (good.split('.').collect(), evil.split('.').collect());
        format!("{}.{}.{}", good_parts[0], evil_parts[1], good_parts[2])
    };
    assert!(refusal(&creds, &bearer(&spliced)).contains("signature does not verify"));

    // `alg: none`, in any spelling, with or without a signature.
    for alg in ["none", "None", "NONE"] {
        let token = unsigned(&json!({"alg": alg, "kid": "r1"}), &claims());
        let why = refusal(&creds, &bearer(&token));
        assert!(
            why.contains(&format!("algorithm `{alg}` is not allowed")),
            "{why}"
        );
    }
    // HS256 keyed with the public key, as a confused verifier would check it; with and
    // without a kid, and for either key.
    for key in [&rsa, &ec] {
        for header in [
            json!({"alg": "HS256", "kid": key.kid()}),
            json!({"alg": "HS256"}),
        ] {
            let token = hs256(&header, &claims(), &key.public_bytes());
            let why = refusal(&creds, &bearer(&token));
            assert!(why.contains("algorithm `HS256` is not allowed"), "{why}");
        }
    }
    // A key set that offers a shared secret under a kid: the `oct` key is never loaded, so
    // an HS256 token keyed with it finds nothing (and the policy cannot allow HS256 anyway).
    let with_secret = KeySet::from_json(
        json!({"keys": [{"kty": "oct", "kid": "shared", "k": "c2VjcmV0"}, rsa.jwk()]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(with_secret.kids().collect::<Vec<_>>(), ["r1"]);
    let hs = credentials(policy(), Arc::new(FixedKeys::new(with_secret)));
    let why = refusal(
        &hs,
        &bearer(&hs256(
            &json!({"alg": "HS256", "kid": "shared"}),
            &claims(),
            b"secret",
        )),
    );
    assert!(why.contains("not allowed"), "{why}");
    assert_eq!(
        "HS256".parse::<Algorithm>().unwrap_err().kind(),
        ErrorKind::Config
    );

    // Algorithm confusion between the two allowed ones: an RS256 header on the EC key's kid.
    let confused = ec.sign_with_header(&json!({"alg": "RS256", "kid": "e1"}), &claims());
    let why = refusal(&creds, &bearer(&confused));
    assert!(why.contains("key `e1` is not an RS256 key"), "{why}");
    // An algorithm the policy leaves out.
    let rs_only = credentials(
        policy().with_algorithms([Algorithm::Rs256]),
        Arc::new(FixedKeys::new(key_set(&[&rsa, &ec]))),
    );
    let why = refusal(&rs_only, &bearer(&ec.sign(&claims())));
    assert!(
        why.contains("algorithm `ES256` is not allowed (allowed: RS256)"),
        "{why}"
    );
    // A key of the set signing as another kid's: refused by that kid's key.
    let impostor = TestKey::rsa("r1");
    assert!(refusal(&creds, &bearer(&impostor.sign(&claims()))).contains("does not verify"));
}

#[test]
fn an_unknown_kid_asks_for_a_refresh_and_passes_once_the_keys_have_it() {
    let (old, new) = (TestKey::ec("2024"), TestKey::ec("2025"));
    let source = HandRefreshed::new(key_set(&[&old]));
    let creds = credentials(policy(), Arc::clone(&source) as Arc<dyn KeySource>);
    let token = new.sign(&claims());

    let why = refusal(&creds, &bearer(&token));
    assert!(why.contains("unknown key id `2025`"), "{why}");
    assert_eq!(
        source.told(),
        ["2025"],
        "the source was told, and only told"
    );
    // The background refresh brings the rotated set: both keys during the overlap.
    source.replace(key_set(&[&old, &new]));
    accepts(&creds, &bearer(&token));
    accepts(&creds, &bearer(&old.sign(&claims())));
    // The old key retired: its tokens name a kid no longer there.
    source.replace(key_set(&[&new]));
    accepts(&creds, &bearer(&token));
    let why = refusal(&creds, &bearer(&old.sign(&claims())));
    assert!(why.contains("unknown key id `2024`"), "{why}");
    assert_eq!(source.told(), ["2025", "2024"]);
}

#[test]
fn tokens_without_a_kid_try_every_key_of_their_algorithm() {
    let (a, b) = (TestKey::rsa("a"), TestKey::rsa("b"));
    let creds = credentials(policy(), Arc::new(FixedKeys::new(key_set(&[&a, &b]))));
    let no_kid = b.sign_with_header(&json!({"alg": "RS256", "typ": "JWT"}), &claims());
    accepts(&creds, &bearer(&no_kid));
    let stranger = TestKey::rsa("c").sign_with_header(&json!({"alg": "RS256"}), &claims());
    assert!(refusal(&creds, &bearer(&stranger)).contains("does not verify"));
}

#[test]
fn the_token_header_is_configurable_for_google_iap() {
    let key = TestKey::ec("iap");
    let creds = credentials(
        policy().with_header("x-goog-iap-jwt-assertion"),
        Arc::new(FixedKeys::new(key_set(&[&key]))),
    );
    let token = key.sign(&claims());
    let iap = RawDelivery::new(&b"{}"[..], now()).with_header("X-Goog-IAP-JWT-Assertion", &token);
    accepts(&creds, &iap);
    // The same token in `Authorization` is not where this endpoint looks.
    let error = ShipupAdapter::new()
        .verify(&bearer(&token), &creds)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::MissingSignature, "{error}");
    assert!(
        error.message().contains("x-goog-iap-jwt-assertion"),
        "{error}"
    );
}

#[test]
fn a_token_without_bearer_is_missing_not_invalid() {
    let key = TestKey::ec("k");
    let creds = credentials(policy(), Arc::new(FixedKeys::new(key_set(&[&key]))));
    for headers in [vec![], vec![("Authorization", "Basic c2hpcHVwOnB3")]] {
        let mut delivery = RawDelivery::new(&b"{}"[..], now());
        for (name, value) in headers {
            delivery = delivery.with_header(name, value);
        }
        let error = ShipupAdapter::new().verify(&delivery, &creds).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::MissingSignature, "{error}");
    }
}
