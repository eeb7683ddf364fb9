//! The service in-process on a free port, over real HTTP, on a real SQLite store in a
//! temporary directory, with its projector running: how errors become HTTP statuses, where a
//! delivery is in the pipeline, the wire shape of the feed and of a file subscription, replay
//! of deliveries whose endpoint is gone, and each service's own metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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

/// Starts a service with three endpoints: `sendcloud` (the fixtures' secret), `unset` (a
/// Sendcloud endpoint without a secret) and `shipup-hmac` (a Shipup endpoint given an HMAC
/// secret, which Shipup cannot use: a configuration error).
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
[[endpoint]]
name = "shipup-hmac"
provider = "shipup"
secret_file = "{secret}"
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = service.router(config.body_limit_bytes);
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

/// Waits until delivery `seq` is projected; returns what `GET /v1/deliveries/{seq}` says.
async fn projected(base: &str, seq: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = get_text(&format!("{base}/v1/deliveries/{seq}")).await;
        let status: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status["projected"] == json!(true) {
            return status;
        }
        assert!(Instant::now() < deadline, "delivery {seq}: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
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
    let status = projected(&running.base, seq).await;
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

    // An endpoint configured with credentials its provider cannot use: ours to fix, 500.
    let (status, answer) = post(&running.base, "shipup-hmac", &delivered).await;
    assert_eq!(status, 500, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("misconfigured"),
        "{answer}"
    );

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
        ("shipup-hmac", "shipup", "misconfigured", 1),
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
    projected(&running.base, last).await;
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
        let status = projected(&running.base, *seq).await;
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
        .replay(&ReplayFilter::default(), |_| {})
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
