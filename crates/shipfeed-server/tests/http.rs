//! The service in-process on a free port, over real HTTP, on a real SQLite store in a
//! temporary directory, with its projector running: how errors become HTTP statuses, where a
//! delivery is in the pipeline, the wire shape of the feed and of a file subscription, replay
//! of deliveries whose endpoint is gone, and each service's own metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shipfeed::{Provider, RawDelivery};
use shipfeed_server::{Config, ReplayFilter, Service};
use shipfeed_store::Arrival;
use shipfeed_testkit::schema::Schema;
use shipfeed_testkit::FIXTURE_SECRET;

/// A running service and the directory holding its store, config and secret.
struct Running {
    base: String,
    service: Arc<Service>,
    dir: tempfile::TempDir,
    /// Dropped with the test: the projector stops.
    _stop: tokio::sync::watch::Sender<bool>,
}

/// Starts a service with two endpoints: `sendcloud` (the fixtures' secret) and `unset` (a
/// Sendcloud endpoint without a secret).
async fn start() -> Running {
    start_with(|_| String::new()).await
}

/// [`start`], with the TOML `extra` makes of the directory appended to the configuration.
async fn start_with(extra: impl FnOnce(&Path) -> String) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{FIXTURE_SECRET}\n")).unwrap();
    let config_path = dir.path().join("shipfeed.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"store = "{store}"
sink = "none"
[[endpoint]]
name = "sendcloud"
provider = "sendcloud"
secret_file = "{secret}"
[[endpoint]]
name = "unset"
provider = "sendcloud"
{extra}
"#,
            store = dir.path().join("shipfeed.db").display(),
            secret = secret.display(),
            extra = extra(dir.path()),
        ),
    )
    .unwrap();
    let config = Config::load(Some(&config_path)).unwrap();
    let store = shipfeed_store::open(&config.store).await.unwrap();
    let service = Service::new(&config, store).unwrap();
    serve(service, dir, config.body_limit_bytes).await
}

/// Serves `service` on a free port with its projector running.
async fn serve(service: Arc<Service>, dir: tempfile::TempDir, body_limit_bytes: usize) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = service.router(body_limit_bytes);
    tokio::spawn(async move { axum::serve(listener, router).await });
    let (stop, stopping) = tokio::sync::watch::channel(false);
    service.start_projector(&stopping);
    Running {
        base,
        service,
        dir,
        _stop: stop,
    }
}

/// The `delivery_seq` of an accepted delivery.
fn accepted(answer: &Value) -> i64 {
    assert_eq!(answer["status"], "accepted", "{answer}");
    answer["delivery_seq"].as_i64().unwrap()
}

/// A generated Sendcloud fixture: its body and the headers signed with the fixtures' secret.
fn sendcloud_fixture(name: &str) -> RawDelivery {
    let path = shipfeed_testkit::fixtures_dir().join(format!("sendcloud/generated/{name}"));
    shipfeed_testkit::load(&path).0
}

async fn post(base: &str, endpoint: &str, delivery: &RawDelivery) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/webhooks/{endpoint}"))
        .body(delivery.body.clone());
    for (name, value) in delivery.headers.iter() {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get_text(url: &str) -> (String, String) {
    let response = reqwest::get(url).await.unwrap();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (content_type, response.text().await.unwrap())
}

/// The value of a Prometheus series (labels included), 0 when absent.
async fn metric(base: &str, series: &str) -> u64 {
    let (_, text) = get_text(&format!("{base}/metrics")).await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_to_a_verify_error_follows_its_kind_and_only_authentic_deliveries_are_stored() {
    let running = start().await;
    let delivered = sendcloud_fixture("v2-status-00011-delivered.json");

    let (status, answer) = post(&running.base, "sendcloud", &delivered).await;
    assert_eq!(status, 200, "{answer}");
    let seq = accepted(&answer);
    let status = support::projected(&running.base, seq, None).await;
    assert_eq!(status["endpoint"], "sendcloud", "{status}");
    assert_eq!(status["projection"]["dead_letter"], Value::Null, "{status}");
    assert_eq!(
        status["projection"]["events"].as_array().unwrap().len(),
        1,
        "{status}"
    );
    let (_, missing) = get_text(&format!("{}/v1/deliveries/{}", running.base, seq + 1)).await;
    assert!(missing.contains("no delivery"), "{missing}");

    // A wrong signature: not authentic.
    let mut tampered = delivered.clone();
    tampered.body.push(b' ');
    let (status, answer) = post(&running.base, "sendcloud", &tampered).await;
    assert_eq!(status, 401, "{answer}");

    // No secret configured: rejected (fail closed), as unauthenticated.
    let (status, answer) = post(&running.base, "unset", &delivered).await;
    assert_eq!(status, 401, "{answer}");

    let stored = running
        .service
        .store()
        .deliveries(0, 10, false)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "only the authentic delivery is stored");
    for (endpoint, provider, outcome, count) in [
        ("sendcloud", "sendcloud", "accepted", 1),
        ("sendcloud", "sendcloud", "unauthorized", 1),
        ("unset", "sendcloud", "unauthorized", 1),
    ] {
        let series = format!(
            "shipfeed_deliveries_total{{endpoint=\"{endpoint}\",provider=\"{provider}\",outcome=\"{outcome}\"}}"
        );
        assert_eq!(metric(&running.base, &series).await, count, "{series}");
    }
}

/// Waits until `path` holds at least `count` lines (or panics after 30 s).
async fn lines_of(path: &Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} lines of {count} in {}",
            lines.len(),
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_items_and_subscription_lines_have_the_published_shape() {
    let running = start_with(|dir| {
        format!(
            "[[subscription]]\nname = \"audit\"\nkind = \"file\"\npath = \"{}\"\nstart = \"beginning\"\n",
            dir.join("events.jsonl").display()
        )
    })
    .await;
    let fixtures = [
        "v2-status-00011-delivered.json",
        "v2-status-00001-announced.json",
    ];
    let mut last = 0;
    for name in fixtures {
        let (status, answer) = post(&running.base, "sendcloud", &sendcloud_fixture(name)).await;
        assert_eq!(status, 200, "{name}: {answer}");
        last = accepted(&answer);
    }
    support::projected(&running.base, last, None).await;
    let (_, page) = get_text(&format!("{}/v1/events?after=0", running.base)).await;
    let page: Value = serde_json::from_str(&page).unwrap();
    let items = page["events"].as_array().unwrap();
    let (feed_item, output) = (Schema::feed_item(), Schema::output());
    let mut events = 0;
    for item in items {
        feed_item.assert_valid(item);
        assert!(item["seq"].is_i64(), "{item}");
        if item["type"] == "event" {
            output.assert_valid(item);
            assert!(
                item["event_id"].is_string() && item["revision"] == 1,
                "{item}"
            );
            events += 1;
        } else {
            assert_eq!(item["type"], "shipment_state", "{item}");
        }
    }
    assert_eq!(events, fixtures.len(), "{page}");

    // A file subscription writes the same items, one per line (stdout goes through the same
    // code), and says so on /metrics.
    let file = running.dir.path().join("events.jsonl");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let tasks = running
        .service
        .start_subscriptions(&shutdown)
        .await
        .unwrap();
    let lines = lines_of(&file, items.len()).await;
    let written: Vec<Value> = lines.iter().map(|l| feed_item.assert_line(l)).collect();
    assert_eq!(&written, items, "the subscription writes the feed's items");
    let held = r#"shipfeed_subscription_lease_held{subscription="audit"}"#;
    assert_eq!(metric(&running.base, held).await, 1);
    stop.send(true).unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(metric(&running.base, held).await, 0, "released at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_skips_and_reports_deliveries_whose_endpoint_is_gone() {
    let running = start().await;
    let (status, _) = post(
        &running.base,
        "sendcloud",
        &sendcloud_fixture("v2-status-00011-delivered.json"),
    )
    .await;
    assert_eq!(status, 200);
    // Stored by an earlier configuration: an endpoint since removed, and one whose name now
    // belongs to another provider. The projector makes them dead letters rather than guess
    // their settings (and so that they cannot stop its cursor); replay leaves them alone.
    let old = sendcloud_fixture("v2-status-00001-announced.json");
    let arrival = |endpoint: &str, provider| Arrival {
        endpoint: endpoint.into(),
        provider,
        delivery: old.clone(),
    };
    let seqs = running
        .service
        .store()
        .append(vec![
            arrival("sendcloud-eu-old", Provider::Sendcloud),
            arrival("unset", Provider::HappyColis),
        ])
        .await
        .unwrap();
    for seq in &seqs {
        let status = support::projected(&running.base, *seq, None).await;
        assert!(
            status["projection"]["dead_letter"]
                .as_str()
                .unwrap()
                .contains("is configured"),
            "{status}"
        );
    }

    let summary = running
        .service
        .replay(
            &ReplayFilter::default(),
            &shipfeed_server::Actor::cli(Some("test")),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(summary.replayed, 1, "{summary:?}");
    assert_eq!(summary.skipped, 2, "{summary:?}");
    assert_eq!(
        serde_json::to_value(&summary.skipped_endpoints).unwrap(),
        json!({"sendcloud-eu-old": 1, "unset": 1})
    );
    let dead = running.service.store().dead_letters(0, 10).await.unwrap();
    assert_eq!(
        dead.len(),
        2,
        "skipped deliveries stay as they were: {dead:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_has_its_own_metrics_with_process_metrics() {
    let (first, second) = (start().await, start().await);
    let (status, _) = post(
        &first.base,
        "sendcloud",
        &sendcloud_fixture("v2-status-00011-delivered.json"),
    )
    .await;
    assert_eq!(status, 200);
    let accepted = r#"shipfeed_deliveries_total{endpoint="sendcloud",provider="sendcloud",outcome="accepted"}"#;
    assert_eq!(metric(&first.base, accepted).await, 1);
    assert_eq!(metric(&second.base, accepted).await, 0);
    let (content_type, text) = get_text(&format!("{}/metrics", first.base)).await;
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    for name in [
        "shipfeed_inbox_append_seconds_bucket",
        "shipfeed_projector_lag_deliveries",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(name), "{name} in\n{text}");
    }
}

/// Waits until the series reaches `value` on `/metrics` (or panics after 30 s).
async fn metric_reaches(base: &str, series: &str, value: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(base, series).await < value {
        assert!(Instant::now() < deadline, "{series} never reached {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A delivery with this body and these headers.
fn delivery(body: &[u8], headers: &[(&str, &str)]) -> RawDelivery {
    headers
        .iter()
        .fold(RawDelivery::new(body, chrono::Utc::now()), |d, (n, v)| {
            d.with_header(*n, *v)
        })
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {pair}")
}

/// A generated Shipup fixture's body (its headers carry the fixtures' Basic credentials).
fn shipup_body() -> Vec<u8> {
    let path = shipfeed_testkit::fixtures_dir().join("shipup/generated/events-new-delivered.json");
    shipfeed_testkit::load(&path).0.body
}

/// How many deliveries the inbox holds.
async fn stored(running: &Running) -> usize {
    running
        .service
        .store()
        .deliveries(0, 100, false)
        .await
        .unwrap()
        .len()
}

/// Why `Service::new` refuses the configuration `endpoints` (a TOML fragment), in one line.
async fn refused_at_start(endpoints: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shipfeed.toml");
    let store = dir.path().join("shipfeed.db");
    std::fs::write(
        &path,
        format!(
            "store = \"{}\"\nsink = \"none\"\n{endpoints}",
            store.display()
        ),
    )
    .unwrap();
    let config = Config::load(Some(&path)).unwrap();
    let store = shipfeed_store::open(&config.store).await.unwrap();
    match Service::new(&config, store) {
        Ok(_) => panic!("started with {endpoints}"),
        Err(error) => shipfeed::error_chain(&error),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_a_provider_cannot_send_stop_the_start_with_a_clear_error() {
    for (endpoints, expected) in [
        (
            "[[endpoint]]\nname = \"shipup-hmac\"\nprovider = \"shipup\"\nsecret_env = \"PATH\"\n",
            "endpoint `shipup-hmac`: shipup: configuration error: shipup authenticates with HTTP Basic credentials, a fixed bearer token or a signed JWT; an HMAC secret cannot apply",
        ),
        // The kind counts, set or not: an unset secret would otherwise start and refuse all.
        (
            "[[endpoint]]\nname = \"s\"\nprovider = \"shipup\"\nsecret_env = \"SHIPFEED_TEST_SURELY_UNSET\"\ntoken_header = \"X-Token\"\n",
            "a token in a custom header cannot apply",
        ),
        (
            "[[endpoint]]\nname = \"h\"\nprovider = \"happycolis\"\nsecret_env = \"PATH\"\nbasic_user = \"u\"\n",
            "happycolis authenticates with an HMAC secret or a token in a custom header; HTTP Basic credentials cannot apply",
        ),
        (
            "[[endpoint]]\nname = \"sc\"\nprovider = \"sendcloud\"\n[endpoint.jwt]\naudience = \"a\"\nissuer = \"i\"\njwks_url = \"https://keys.example/jwks\"\n",
            "a signed JWT cannot apply",
        ),
        (
            "[[endpoint]]\nname = \"j\"\nprovider = \"shipup\"\n[endpoint.jwt]\naudience = \"a\"\nissuer = \"i\"\njwks_file = \"/nonexistent/jwks.json\"\n",
            "endpoint `j`: configuration error: read /nonexistent/jwks.json",
        ),
    ] {
        let error = refused_at_start(endpoints).await;
        assert!(error.contains(expected), "{endpoints}\n{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipups_probe_is_answered_without_credentials_and_stores_nothing() {
    let running = start_with(|dir| {
        format!(
            "[[endpoint]]\nname = \"shipup\"\nprovider = \"shipup\"\nbasic_user = \"shipup\"\nsecret_file = \"{}\"\n",
            dir.join("secret").display()
        )
    })
    .await;
    let probe = br#"{"livemode": "false"}"#;
    let (status, answer) = post(&running.base, "shipup", &delivery(probe, &[])).await;
    assert_eq!((status, &answer), (200, &json!({"status": "probe"})));
    // With the configured credentials it is the same answer.
    let authorization = basic("shipup", FIXTURE_SECRET);
    let with = delivery(probe, &[("Authorization", &authorization)]);
    assert_eq!(post(&running.base, "shipup", &with).await.0, 200);
    // Everything else without credentials is refused, the probe's look-alikes included.
    for body in [
        &br#"{"livemode": "false", "type": "tracker.new"}"#[..],
        br#"{"livemode": false}"#,
        br#"{"livemode": "true"}"#,
        &shipup_body(),
    ] {
        let (status, answer) = post(&running.base, "shipup", &delivery(body, &[])).await;
        assert_eq!(status, 401, "{answer}");
    }
    let wrong = basic("shipup", "wrong");
    let (status, _) = post(
        &running.base,
        "shipup",
        &delivery(&shipup_body(), &[("Authorization", &wrong)]),
    )
    .await;
    assert_eq!(status, 401);

    // Nothing reached the inbox.
    assert_eq!(stored(&running).await, 0);
    let (_, first) = get_text(&format!("{}/v1/deliveries/1", running.base)).await;
    assert!(first.contains("no delivery"), "{first}");
    for (series, count) in [
        (
            r#"shipfeed_probe_total{endpoint="shipup",authenticated="false"}"#,
            1,
        ),
        (
            r#"shipfeed_probe_total{endpoint="shipup",authenticated="true"}"#,
            1,
        ),
        (
            r#"shipfeed_deliveries_total{endpoint="shipup",provider="shipup",outcome="probe"}"#,
            2,
        ),
        (
            r#"shipfeed_deliveries_total{endpoint="shipup",provider="shipup",outcome="unauthorized"}"#,
            5,
        ),
    ] {
        assert_eq!(metric(&running.base, series).await, count, "{series}");
    }
    // An authentic delivery is stored as ever.
    let authentic = delivery(&shipup_body(), &[("Authorization", &authorization)]);
    let (status, answer) = post(&running.base, "shipup", &authentic).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(accepted(&answer), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_secrets_are_each_accepted_and_the_matching_position_is_counted() {
    let running = start_with(|dir| {
        std::fs::write(dir.join("new"), "new-secret\n").unwrap();
        std::fs::write(dir.join("old"), "old-secret\n").unwrap();
        let files = format!(
            "[{:?}, {:?}]",
            dir.join("new").display().to_string(),
            dir.join("old").display().to_string()
        );
        format!(
            "[[endpoint]]\nname = \"sendcloud-rotated\"\nprovider = \"sendcloud\"\nsecret_file = {files}\n\
             [[endpoint]]\nname = \"shipup-rotated\"\nprovider = \"shipup\"\nbasic_user = \"shipup\"\nsecret_file = {files}\n"
        )
    })
    .await;
    let body = sendcloud_fixture("v2-status-00011-delivered.json").body;
    let signed = |secret: &str| shipfeed::auth::sign_hex(&shipfeed::Secret::new(secret), &body);
    for (secret, expected) in [("new-secret", 200), ("old-secret", 200), ("other", 401)] {
        let signature = signed(secret);
        let hmac = delivery(&body, &[("Sendcloud-Signature", &signature)]);
        let (status, answer) = post(&running.base, "sendcloud-rotated", &hmac).await;
        assert_eq!(status, expected, "HMAC keyed with {secret}: {answer}");
        let authorization = basic("shipup", secret);
        let password = delivery(&shipup_body(), &[("Authorization", &authorization)]);
        let (status, answer) = post(&running.base, "shipup-rotated", &password).await;
        assert_eq!(status, expected, "password {secret}: {answer}");
    }
    assert_eq!(stored(&running).await, 4);
    for endpoint in ["sendcloud-rotated", "shipup-rotated"] {
        for position in [0, 1] {
            let series = format!(
                "shipfeed_auth_matched_total{{endpoint=\"{endpoint}\",position=\"{position}\"}}"
            );
            assert_eq!(metric(&running.base, &series).await, 1, "{series}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_endpoints_check_tokens_against_a_local_jwks_refreshed_in_the_background() {
    use shipfeed_testkit::jwt::{hs256, jwks, tampered, unsigned, JwksServer, TestKey};

    let (rsa, ec) = (TestKey::rsa("r1"), TestKey::ec("e1"));
    let server = JwksServer::start(jwks(&[&rsa, &ec])).await;
    let audience = "https://shipfeed.example/webhooks/shipup-jwt";
    let issuer = "https://accounts.google.com";
    let running = start_with(|_| {
        format!(
            "[[endpoint]]\nname = \"shipup-jwt\"\nprovider = \"shipup\"\n[endpoint.jwt]\n\
             audience = \"{audience}\"\nissuer = \"{issuer}\"\njwks_url = \"{url}\"\n\
             [[endpoint]]\nname = \"shipup-iap\"\nprovider = \"shipup\"\n[endpoint.jwt]\n\
             audience = \"{audience}\"\nissuer = \"{issuer}\"\njwks_url = \"{url}\"\n\
             header = \"x-goog-iap-jwt-assertion\"\nalgorithms = [\"ES256\"]\n",
            url = server.url
        )
    })
    .await;
    // The refresh schedule reads a clock the test moves; tokens are checked at the real time.
    let clock = Arc::new(shipfeed_store::ManualClock::new(chrono::Utc::now()));
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let _tasks = running.service.start_key_refresh_with(
        Arc::clone(&clock) as Arc<dyn shipfeed_store::Clock>,
        &stopping,
    );
    for endpoint in ["shipup-jwt", "shipup-iap"] {
        let loaded =
            format!("shipfeed_jwks_refreshes_total{{endpoint=\"{endpoint}\",outcome=\"loaded\"}}");
        metric_reaches(&running.base, &loaded, 1).await;
    }
    assert_eq!(server.hits(), 2, "one fetch per endpoint, none per request");

    let now = chrono::Utc::now().timestamp();
    let claims = |changes: Value| {
        let mut claims = json!({"aud": audience, "iss": issuer, "iat": now, "exp": now + 600});
        for (name, value) in changes.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    };
    let body = shipup_body();
    let bearer = |token: &str| delivery(&body, &[("Authorization", &format!("Bearer {token}"))]);

    let good = rsa.sign(&claims(json!({})));
    let (status, answer) = post(&running.base, "shipup-jwt", &bearer(&good)).await;
    assert_eq!(status, 200, "{answer}");
    let seq = accepted(&answer);
    let projection = support::projected(&running.base, seq, None).await;
    assert!(
        !projection["projection"]["events"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{projection}"
    );
    let refused = [
        rsa.sign(&claims(json!({"exp": now - 3600}))),
        rsa.sign(&claims(json!({"nbf": now + 3600}))),
        rsa.sign(&claims(json!({"aud": "https://elsewhere.example"}))),
        rsa.sign(&claims(json!({"iss": "https://evil.example"}))),
        tampered(&good),
        unsigned(&json!({"alg": "none", "kid": "r1"}), &claims(json!({}))),
        hs256(
            &json!({"alg": "HS256", "kid": "r1"}),
            &claims(json!({})),
            &rsa.public_bytes(),
        ),
    ];
    for token in &refused {
        let (status, answer) = post(&running.base, "shipup-jwt", &bearer(token)).await;
        assert_eq!(status, 401, "{answer}");
        assert!(!answer.to_string().contains(token.as_str()), "{answer}");
    }
    // Google IAP: its header, ES256 only.
    let iap = |token: &str| delivery(&body, &[("x-goog-iap-jwt-assertion", token)]);
    let (status, answer) = post(
        &running.base,
        "shipup-iap",
        &iap(&ec.sign(&claims(json!({})))),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post(&running.base, "shipup-iap", &iap(&good)).await;
    assert_eq!(status, 401, "RS256 is not allowed there: {answer}");

    // The provider rotates its keys: a token under a new kid is refused at once (no fetch on
    // the request path) and asks for a fetch, which waits for the minimum interval since
    // the last one (60 s of the test's clock).
    let rotated = TestKey::rsa("r2");
    server.serve(200, jwks(&[&rsa, &ec, &rotated]));
    let token = rotated.sign(&claims(json!({})));
    let (status, answer) = post(&running.base, "shipup-jwt", &bearer(&token)).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("unknown key id `r2`"),
        "{answer}"
    );
    let limited = r#"shipfeed_jwks_refreshes_total{endpoint="shipup-jwt",outcome="rate_limited"}"#;
    metric_reaches(&running.base, limited, 1).await;
    assert_eq!(server.hits(), 2);
    // A minute later the provider retries: that request is still refused, and the fetch it
    // asks for runs; the retry after it passes. The old key still works too.
    clock.advance(chrono::TimeDelta::seconds(61));
    assert_eq!(
        post(&running.base, "shipup-jwt", &bearer(&token)).await.0,
        401
    );
    let loaded = r#"shipfeed_jwks_refreshes_total{endpoint="shipup-jwt",outcome="loaded"}"#;
    metric_reaches(&running.base, loaded, 2).await;
    assert_eq!(
        metric(
            &running.base,
            r#"shipfeed_jwks_keys{endpoint="shipup-jwt"}"#
        )
        .await,
        3
    );
    let (status, answer) = post(&running.base, "shipup-jwt", &bearer(&token)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        post(&running.base, "shipup-jwt", &bearer(&good)).await.0,
        200
    );
    assert_eq!(stored(&running).await, 4);
    let matched = r#"shipfeed_auth_matched_total{endpoint="shipup-jwt",position="0"}"#;
    assert_eq!(metric(&running.base, matched).await, 3);
}
