//! The API's bearer tokens over real HTTP, on a service in-process on a free port with a real
//! SQLite store: which requests are refused (401 or 403, with a Bearer challenge and a JSON
//! error), which pass, what stays open (webhooks, health, and `/metrics` unless protected),
//! and the start refused on a non-loopback address without a token; the console's session
//! cookie and its CSRF token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use shipfeed::{Provider, RawDelivery};
use shipfeed_server::{Config, Service};
use shipfeed_store::Arrival;
use shipfeed_testkit::FIXTURE_SECRET;

const READ_TOKEN: &str = "read-token-for-the-tests-0001";
const ADMIN_TOKEN: &str = "admin-token-for-the-tests-0002";

struct Running {
    base: String,
    service: Arc<Service>,
    _dir: tempfile::TempDir,
    /// Dropped with the test: the projector stops.
    _stop: tokio::sync::watch::Sender<bool>,
}

/// The configuration with a Sendcloud endpoint (the fixtures' secret) and `tokens` (TOML
/// that may refer to files in the directory) appended.
fn config(dir: &Path, tokens: &str) -> Config {
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("{FIXTURE_SECRET}\n")).unwrap();
    let path = dir.join("shipfeed.toml");
    std::fs::write(
        &path,
        format!(
            r#"store = "{store}"
sink = "none"
[[endpoint]]
name = "sendcloud"
provider = "sendcloud"
secret_file = "{secret}"
{tokens}
"#,
            store = dir.join("shipfeed.db").display(),
            secret = secret.display(),
        ),
    )
    .unwrap();
    Config::load(Some(&path)).unwrap()
}

/// Two tokens, both from files: `support` reads, `operator` administers.
fn two_tokens(dir: &Path, api: &str) -> String {
    for (name, token) in [("read", READ_TOKEN), ("admin", ADMIN_TOKEN)] {
        std::fs::write(dir.join(name), format!("{token}\n")).unwrap();
    }
    format!(
        r#"{api}
[[api_token]]
name = "support"
token_file = "{read}"
scopes = ["read"]
[[api_token]]
name = "operator"
token_file = "{admin}"
scopes = ["admin"]
"#,
        read = dir.join("read").display(),
        admin = dir.join("admin").display(),
    )
}

async fn start(tokens: impl FnOnce(&Path) -> String) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let extra = tokens(dir.path());
    let config = config(dir.path(), &extra);
    let store = shipfeed_store::open(&config.store).await.unwrap();
    let service = Service::new(&config, store).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    service
        .check_listen(listener.local_addr().unwrap())
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = service.router(config.body_limit_bytes);
    tokio::spawn(async move { axum::serve(listener, router).await });
    let (stop, stopping) = tokio::sync::watch::channel(false);
    service.start_projector(&stopping);
    Running {
        base,
        service,
        _dir: dir,
        _stop: stop,
    }
}

/// The status, the `WWW-Authenticate` header and the body of a request with `token` (or
/// none) as a bearer token.
async fn call(
    method: reqwest::Method,
    url: &str,
    authorization: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, challenge, response.text().await.unwrap())
}

async fn get_with(url: &str, token: Option<&str>) -> (u16, Option<String>, String) {
    let authorization = token.map(|t| format!("Bearer {t}"));
    call(reqwest::Method::GET, url, authorization.as_deref()).await
}

async fn post_delivery(base: &str, endpoint: &str, delivery: &RawDelivery) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/webhooks/{endpoint}"))
        .body(delivery.body.clone());
    for (name, value) in delivery.headers.iter() {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

/// A delivered Sendcloud parcel (`MR5798718423`) and a dead letter; returns every read route
/// (each answering 200 when allowed) and the admin route (the dead letter's body).
async fn data(running: &Running, token: Option<&str>) -> (Vec<String>, String) {
    let base = &running.base;
    let fixture =
        shipfeed_testkit::fixtures_dir().join("sendcloud/generated/v2-status-00011-delivered.json");
    let delivery = shipfeed_testkit::load(&fixture).0;
    let answer = post_delivery(base, "sendcloud", &delivery).await;
    let seq = answer["delivery_seq"].as_i64().unwrap();
    let status = support::projected(base, seq, token).await;
    let event_id = status["projection"]["events"][0]
        .as_str()
        .unwrap()
        .to_owned();
    // Stored under an endpoint no longer configured: the projector makes it a dead letter.
    let dead = running
        .service
        .store()
        .append(vec![Arrival {
            endpoint: "gone".into(),
            provider: Provider::Sendcloud,
            delivery: delivery.clone(),
        }])
        .await
        .unwrap()[0];
    support::projected(base, dead, token).await;
    let read = [
        "/v1/events?after=0&limit=10".to_owned(),
        "/v1/shipments/MR5798718423".to_owned(),
        "/v1/shipments/mondial_relay/MR5798718423".to_owned(),
        "/v1/dead-letters".to_owned(),
        "/v1/alerts".to_owned(),
        format!("/v1/deliveries/{seq}"),
        format!("/v1/events/{event_id}/revisions"),
        "/v1/drift".to_owned(),
        "/v1/search?q=mr%205798718423".to_owned(),
        "/v1/search?q=ord-50007".to_owned(),
        "/v1/status".to_owned(),
    ]
    .into_iter()
    .map(|path| format!("{base}{path}"))
    .collect();
    (read, format!("{base}/v1/dead-letters/{dead}/body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_and_admin_tokens_open_their_routes_and_nothing_else() {
    let running = start(|dir| two_tokens(dir, "")).await;
    let base = running.base.clone();
    // The webhook needs no API token (only its provider's signature).
    let (read_routes, admin_route) = data(&running, Some(ADMIN_TOKEN)).await;

    for url in read_routes.iter().chain([&admin_route]) {
        // No token, a wrong one, one of another scheme, or two: 401 with a Bearer challenge
        // and the API's JSON error.
        let refusals = [
            (None, None),
            (Some(format!("Bearer {READ_TOKEN}x")), Some("invalid_token")),
            (
                Some("Bearer not-a-configured-token".to_owned()),
                Some("invalid_token"),
            ),
            (Some(format!("Basic {READ_TOKEN}")), Some("invalid_request")),
            (Some(READ_TOKEN.to_owned()), Some("invalid_request")),
        ];
        for (authorization, error) in refusals {
            let (status, challenge, body) =
                call(reqwest::Method::GET, url, authorization.as_deref()).await;
            assert_eq!(status, 401, "{url} with {authorization:?}: {body}");
            let challenge = challenge.unwrap();
            assert!(challenge.starts_with("Bearer "), "{challenge}");
            if let Some(error) = error {
                assert!(challenge.contains(error), "{challenge}");
            }
            let body: Value = serde_json::from_str(&body).unwrap();
            assert!(body["error"].is_string(), "{body}");
            // The answer never echoes what was presented.
            assert!(!body.to_string().contains(READ_TOKEN), "{body}");
        }
        // The admin token opens everything.
        let (status, _, body) = get_with(url, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 200, "{url}: {body}");
    }
    for url in &read_routes {
        let (status, challenge, body) = get_with(url, Some(READ_TOKEN)).await;
        assert_eq!(status, 200, "{url}: {body}");
        assert_eq!(challenge, None);
    }
    // The dead letter's raw body needs `admin`: 403 for a read token, naming the scope.
    let (status, challenge, body) = get_with(&admin_route, Some(READ_TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert!(challenge.unwrap().contains("scope=\"admin\""));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "this token lacks the `admin` scope"
    );
    let (_, _, raw) = get_with(&admin_route, Some(ADMIN_TOKEN)).await;
    let fixture =
        shipfeed_testkit::fixtures_dir().join("sendcloud/generated/v2-status-00011-delivered.json");
    assert_eq!(raw.as_bytes(), shipfeed_testkit::load(&fixture).0.body);
    // A delivery that is not a dead letter has no body here.
    let (status, _, _) =
        get_with(&format!("{base}/v1/dead-letters/1/body"), Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 404);

    // Whatever is not a safe method needs `admin`, whichever group its route is in.
    let (status, _, body) = call(
        reqwest::Method::POST,
        &format!("{base}/v1/events"),
        Some(&format!("Bearer {READ_TOKEN}")),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // Unknown paths under /v1 answer 404 only to a token holder.
    let (status, _, _) = get_with(&format!("{base}/v1/nothing/here"), None).await;
    assert_eq!(status, 401);
    let (status, _, _) = get_with(&format!("{base}/v1/nothing/here"), Some(READ_TOKEN)).await;
    assert_eq!(status, 404);

    // Health, readiness and (unprotected by default) metrics need no token.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _, body) = get_with(&format!("{base}{path}"), None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, _, metrics) = get_with(&format!("{base}/metrics"), None).await;
    for (reason, least) in [
        ("missing", 9),
        ("malformed", 18),
        ("unknown_token", 18),
        ("insufficient_scope", 2),
    ] {
        let series = format!("shipfeed_api_rejected_total{{reason=\"{reason}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix(&series)?.trim().parse().ok())
            .unwrap_or(0);
        assert!(count >= least, "{reason}: {count}\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_read_token_only_when_protected() {
    let running = start(|dir| two_tokens(dir, "[api]\nprotect_metrics = true")).await;
    let url = format!("{}/metrics", running.base);
    let (status, challenge, _) = get_with(&url, None).await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().starts_with("Bearer"));
    let (status, _, _) = get_with(&url, Some("wrong-token-of-some-length")).await;
    assert_eq!(status, 401);
    for token in [READ_TOKEN, ADMIN_TOKEN] {
        let (status, _, body) = get_with(&url, Some(token)).await;
        assert_eq!(status, 200);
        assert!(body.contains("shipfeed_api_rejected_total"), "{body}");
    }
    // Health stays open.
    let (status, _, _) = get_with(&format!("{}/healthz", running.base), None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_the_api_is_open_on_loopback_and_refused_elsewhere() {
    let running = start(|_| "[api]\nprotect_metrics = true".to_owned()).await;
    assert!(!running.service.api_auth().enforced());
    for path in ["/v1/events", "/v1/dead-letters", "/v1/drift", "/metrics"] {
        let (status, challenge, body) = get_with(&format!("{}{path}", running.base), None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(challenge, None);
    }
    for loopback in ["127.0.0.1:8080", "[::1]:8080"] {
        running
            .service
            .check_listen(loopback.parse().unwrap())
            .unwrap();
    }
    for exposed in ["0.0.0.0:8080", "[::]:8080", "192.0.2.7:8080"] {
        let error = running
            .service
            .check_listen(exposed.parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("without an API token") && error.contains("[[api_token]]"),
            "{error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_any_address_may_be_listened_on() {
    let running = start(|dir| two_tokens(dir, "")).await;
    for address in ["0.0.0.0:8080", "[::]:8080", "127.0.0.1:8080"] {
        running
            .service
            .check_listen(address.parse().unwrap())
            .unwrap();
    }
    let names: Vec<String> = running
        .service
        .api_auth()
        .tokens()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, ["support", "operator"]);
}

/// Signs in to the console with `token`: the status, the `Set-Cookie` header and the answer.
async fn sign_in(base: &str, token: &str) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/console/session"))
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let cookie = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, cookie, response.json().await.unwrap_or(Value::Null))
}

/// A request carrying the console's session cookie (`name=value`) and the given extra headers.
async fn with_session(
    method: reqwest::Method,
    url: &str,
    cookie: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .header("Cookie", cookie);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_session_is_an_http_only_cookie_and_every_change_needs_its_csrf_token() {
    let running = start(|dir| two_tokens(dir, "")).await;
    let base = &running.base;
    let (_, admin_route) = data(&running, Some(ADMIN_TOKEN)).await;

    let (status, _, _) = sign_in(base, "not-a-token-of-this-service").await;
    assert_eq!(status, 401);
    let (status, set_cookie, session) = sign_in(base, READ_TOKEN).await;
    assert_eq!(status, 200, "{session}");
    let set_cookie = set_cookie.expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    // Loopback: no `Secure`, or the browser would drop it over plain HTTP.
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    assert!(!set_cookie.contains(READ_TOKEN), "never the token itself");
    assert_eq!(session["name"], "support");
    assert_eq!(session["scopes"], serde_json::json!(["read"]));
    let read_cookie = set_cookie.split(';').next().unwrap().to_owned();

    // The cookie reads what `read` reads, and not the raw body.
    let (status, body) = with_session(
        reqwest::Method::GET,
        &format!("{base}/v1/dead-letters"),
        &read_cookie,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = with_session(reqwest::Method::GET, &admin_route, &read_cookie, &[]).await;
    assert_eq!(status, 403, "a read session sees no raw body");
    let (status, me) = with_session(
        reqwest::Method::GET,
        &format!("{base}/console/session"),
        &read_cookie,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{me}");
    let read_csrf = serde_json::from_str::<Value>(&me).unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_owned();
    let pause = format!("{base}/v1/subscriptions/none/pause");
    let (status, _) = with_session(
        reqwest::Method::POST,
        &pause,
        &read_cookie,
        &[("X-CSRF-Token", &read_csrf)],
    )
    .await;
    assert_eq!(status, 403, "a read session changes nothing");

    // An admin session: every change needs the session's CSRF token, and a page of another
    // site is refused whatever it carries.
    let (_, set_cookie, session) = sign_in(base, ADMIN_TOKEN).await;
    let admin_cookie = set_cookie.unwrap().split(';').next().unwrap().to_owned();
    let csrf = session["csrf"].as_str().unwrap().to_owned();
    let (status, body) = with_session(reqwest::Method::POST, &pause, &admin_cookie, &[]).await;
    assert_eq!(status, 403, "no CSRF token: {body}");
    assert!(body.contains("x-csrf-token"), "{body}");
    let (status, _) = with_session(
        reqwest::Method::POST,
        &pause,
        &admin_cookie,
        &[("X-CSRF-Token", &read_csrf)],
    )
    .await;
    assert_eq!(status, 403, "another session's CSRF token");
    let (status, body) = with_session(
        reqwest::Method::POST,
        &pause,
        &admin_cookie,
        &[("X-CSRF-Token", &csrf), ("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, 403, "from another site: {body}");
    let (status, body) = with_session(
        reqwest::Method::POST,
        &pause,
        &admin_cookie,
        &[("X-CSRF-Token", &csrf), ("Sec-Fetch-Site", "same-origin")],
    )
    .await;
    assert_eq!(status, 404, "past the checks, to the handler: {body}");
    assert!(body.contains("no subscription `none`"), "{body}");
    let (status, body) = with_session(reqwest::Method::GET, &admin_route, &admin_cookie, &[]).await;
    assert_eq!(status, 200, "an admin session reads the raw body: {body}");

    // A forged or altered cookie is refused; signing out clears it.
    // The same session, its signature's last character changed.
    let last = admin_cookie.chars().last().unwrap();
    let forged = format!(
        "{}{}",
        &admin_cookie[..admin_cookie.len() - 1],
        if last == 'A' { 'B' } else { 'A' }
    );
    for cookie in [
        forged.as_str(),
        "shipfeed_session=b3BlcmF0b3I.99999999999.AAAA",
    ] {
        let (status, _) = with_session(
            reqwest::Method::GET,
            &format!("{base}/v1/drift"),
            cookie,
            &[],
        )
        .await;
        assert_eq!(status, 401, "{cookie}");
    }
    let response = reqwest::Client::new()
        .delete(format!("{base}/console/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let cleared = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    // The page itself: served with a policy that runs this origin's script only.
    let response = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(response.text().await.unwrap().contains("/console/app.js"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_api_refuses_changes_from_another_site() {
    let running = start(|_| String::new()).await;
    let pause = format!("{}/v1/subscriptions/none/pause", running.base);
    let (status, _, body) = call(reqwest::Method::POST, &pause, None).await;
    assert_eq!(status, 404, "curl on loopback changes state: {body}");
    for (name, value) in [
        ("Origin", "http://attacker.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let response = reqwest::Client::new()
            .post(&pause)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 403, "{name}: {value}");
    }
    let (status, _, session) = get_with(&format!("{}/console/session", running.base), None).await;
    assert_eq!(status, 200, "open: everyone is signed in: {session}");
    assert!(session.contains("\"open\":true"), "{session}");
}
