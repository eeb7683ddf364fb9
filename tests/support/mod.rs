//! End-to-end test support: the real `shipfeed` binary on a free port, on a fresh SQLite file or
//! a private PostgreSQL schema, and signed provider deliveries.
//!
//! PostgreSQL is the machine's (`postgres://postgres@127.0.0.1:5432/test`, override with
//! `SHIPFEED_TEST_POSTGRES_URL`); when it is unreachable the tests fail and say how to start it.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../crates/shipfeed-sqs/tests/support/moto.rs"]
pub mod moto;
#[path = "../../crates/shipfeed-sqs/tests/support/recorder.rs"]
pub mod recorder;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shipfeed::auth::{sign_base64, sign_hex};
use shipfeed::Secret;
use shipfeed_testkit::schema::Schema;
use shipfeed_testkit::FIXTURE_SECRET;

/// Where the server keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh store location, removed when dropped.
pub struct TestStore {
    /// What goes into the config's `store`.
    pub url: String,
    dir: PathBuf,
    schema: Option<String>,
}

fn postgres_base() -> String {
    std::env::var("SHIPFEED_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_micros() % 1_000_000
    )
}

/// Runs one SQL statement on the test database (its own runtime: usable from `Drop`).
fn postgres_execute(sql: &str) -> Result<(), String> {
    let sql = sql.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let (client, connection) =
                tokio_postgres::connect(&postgres_base(), tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            client.batch_execute(&sql).await.map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "panicked".to_owned())?
}

impl TestStore {
    pub fn new(backend: Backend) -> TestStore {
        let dir = std::env::temp_dir().join(unique("shipfeed-e2e"));
        std::fs::create_dir_all(&dir).unwrap();
        match backend {
            Backend::Sqlite => TestStore {
                url: dir.join("shipfeed.db").display().to_string(),
                dir,
                schema: None,
            },
            Backend::Postgres => {
                let schema = unique("shipfeed_e2e");
                if let Err(error) = postgres_execute(&format!("CREATE SCHEMA {schema}")) {
                    panic!(
                        "PostgreSQL at {} is needed by this test and did not answer: {error}\n\
                         start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
                        postgres_base()
                    );
                }
                let separator = if postgres_base().contains('?') {
                    '&'
                } else {
                    '?'
                };
                TestStore {
                    url: format!(
                        "{}{separator}options=-csearch_path%3D{schema}",
                        postgres_base()
                    ),
                    dir,
                    schema: Some(schema),
                }
            }
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(schema) = &self.schema {
            let _ = postgres_execute(&format!("DROP SCHEMA {schema} CASCADE"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// The `shipfeed` binary cargo built for these tests.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_shipfeed"))
}

/// A running `shipfeed serve`, killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    config: PathBuf,
    log: PathBuf,
    stdout: PathBuf,
}

/// The secrets the servers run with: the fixtures' secret for every provider.
pub const SECRETS: [(&str, &str); 3] = [
    ("SHIPFEED_SENDCLOUD_SECRET", FIXTURE_SECRET),
    ("SHIPFEED_HAPPYCOLIS_SECRET", FIXTURE_SECRET),
    ("SHIPFEED_SHIPUP_SECRET", FIXTURE_SECRET),
];

/// An API token every server under test has in its environment; a test that wants the API
/// protected configures it (`[[api_token]] token_env = "SHIPFEED_E2E_API_TOKEN"`).
pub const API_TOKEN: (&str, &str) = ("SHIPFEED_E2E_API_TOKEN", "e2e-api-token-not-a-secret-0001");

/// The projector lease of the servers under test: short, so that a restart after `kill -9`
/// takes over soon.
pub const LEASE_TTL_SECONDS: u64 = 2;

impl Server {
    /// Starts a server on `store` with the three webhook endpoints, and `extra` TOML appended
    /// to its config (SQS sources, a smaller body limit).
    pub async fn start(store: &TestStore, extra: &str) -> Server {
        let port = free_port();
        let config = store.dir.join(format!("shipfeed-{port}.toml"));
        // Events are read through the API; a test that wants the JSON-lines sink sets `sink`.
        let sink = if extra.contains("sink =") {
            ""
        } else {
            "sink = \"none\""
        };
        let text = format!(
            r#"listen = "127.0.0.1:{port}"
store = "{}"
# A killed server's leases run out after this long, and the next one takes over.
lease_ttl_seconds = {LEASE_TTL_SECONDS}
{sink}
{extra}
[[endpoint]]
name = "sendcloud"
provider = "sendcloud"
secret_env = "SHIPFEED_SENDCLOUD_SECRET"
[[endpoint]]
name = "happycolis"
provider = "happycolis"
secret_env = "SHIPFEED_HAPPYCOLIS_SECRET"
[[endpoint]]
name = "shipup"
provider = "shipup"
secret_env = "SHIPFEED_SHIPUP_SECRET"
basic_user = "shipup"
"#,
            store.url
        );
        std::fs::write(&config, text).unwrap();
        Server::spawn(config, port).await
    }

    async fn spawn(config: PathBuf, port: u16) -> Server {
        let run = NEXT.fetch_add(1, Ordering::Relaxed);
        let log = config.with_extension(format!("{run}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        // What the stdout sink writes, for the tests that read it.
        let stdout = config.with_extension(format!("{run}.stdout"));
        let stdout_file = std::fs::File::create(&stdout).unwrap();
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(&config)
            .envs(SECRETS)
            .env(API_TOKEN.0, API_TOKEN.1)
            .env("SHIPFEED_SEVENSENDERS_API_KEY", "7s-e2e-key")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout_file)
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            config,
            log,
            stdout,
        };
        server.wait_ready().await;
        server
    }

    /// The same configuration (and store) started again, e.g. after a crash.
    pub async fn restart(mut self) -> Server {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.base.rsplit(':').next().unwrap().parse().unwrap();
        let config = self.config.clone();
        Server::spawn(config, port).await
    }

    /// `kill -9`: no shutdown, no flush.
    pub fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = reqwest::Client::new();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "shipfeed serve exited early ({status}):\n{}",
                    self.log_text()
                );
            }
            if let Ok(response) = client.get(format!("{}/readyz", self.base)).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "shipfeed serve not ready within 60 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What the server wrote on stdout so far (the stdout sink's lines).
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// A file next to the store, for tests that need one (a sink target).
    pub fn scratch_file(store: &TestStore, name: &str) -> PathBuf {
        store.dir.join(name)
    }

    /// The config file path (for `shipfeed replay --config`).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Stops the server (SIGTERM-equivalent is not needed: the store is durable).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.stdout);
    }
}

/// A delivery ready to POST: endpoint name, headers, exact body bytes.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub endpoint: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn secret() -> Secret {
    Secret::new(FIXTURE_SECRET)
}

/// A signed Sendcloud `parcel_status_changed` for parcel `parcel` with status `(id, message)`
/// at `at_ms`, built from the delivered fixture's realistic shape.
pub fn sendcloud_status(parcel: u64, status: (u32, &str), at_ms: i64) -> Delivery {
    let mut body: Value = serde_json::from_slice(
        &std::fs::read(fixture(
            "sendcloud/generated/v2-status-00011-delivered.json",
        ))
        .unwrap(),
    )
    .unwrap();
    body["parcel"]["id"] = json!(parcel);
    body["parcel"]["tracking_number"] = json!(tracking_number(parcel));
    body["parcel"]["status"] = json!({"id": status.0, "message": status.1});
    body["carrier_status_change_timestamp"] = json!(at_ms);
    body["timestamp"] = json!(at_ms + 35);
    sendcloud_signed(serde_json::to_vec(&body).unwrap())
}

/// Any body, with a valid Sendcloud signature.
pub fn sendcloud_signed(body: Vec<u8>) -> Delivery {
    Delivery {
        endpoint: "sendcloud",
        headers: vec![("Sendcloud-Signature".into(), sign_hex(&secret(), &body))],
        body,
    }
}

/// Any body, with a valid HappyColis signature.
pub fn happycolis_signed(body: Vec<u8>) -> Delivery {
    Delivery {
        endpoint: "happycolis",
        headers: vec![(
            "x-happycolis-webhook-signature".into(),
            sign_base64(&secret(), &body),
        )],
        body,
    }
}

/// NATS for the outbox tests (`SHIPFEED_TEST_NATS_URL` overrides).
pub fn nats_url() -> String {
    std::env::var("SHIPFEED_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A parcel-id range no other test run uses (for shared services such as NATS).
pub fn unique_parcel_base() -> u64 {
    let micros = chrono::Utc::now().timestamp_micros().unsigned_abs();
    (micros % 1_000_000_000) * 1000 + NEXT.fetch_add(1, Ordering::Relaxed) as u64 * 10
}

/// The tracking number of test parcel `parcel`.
pub fn tracking_number(parcel: u64) -> String {
    format!("SF{parcel:010}")
}

/// Path of a fixture file under `fixtures/`.
pub fn fixture(relative: &str) -> PathBuf {
    shipfeed_testkit::fixtures_dir().join(relative)
}

/// A generated fixture exactly as stored: body and sidecar headers.
pub fn fixture_delivery(endpoint: &'static str, relative: &str) -> Delivery {
    let (raw, _) = shipfeed_testkit::load(&fixture(relative));
    Delivery {
        endpoint,
        headers: raw
            .headers
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        body: raw.body,
    }
}

/// An HTTP client for the tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs a delivery; returns the status and the JSON answer (`Null` when not JSON).
pub async fn post(
    client: &reqwest::Client,
    base: &str,
    delivery: &Delivery,
) -> reqwest::Result<(u16, Value)> {
    let mut request = client
        .post(format!("{base}/webhooks/{}", delivery.endpoint))
        .header("Content-Type", "application/json")
        .body(delivery.body.clone());
    for (name, value) in &delivery.headers {
        request = request.header(name, value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// The inbox `seq` an accepted delivery was answered with.
pub fn delivery_seq(answer: &Value) -> i64 {
    assert_eq!(answer["status"], "accepted", "{answer}");
    answer["delivery_seq"].as_i64().unwrap()
}

/// Waits until the projector has projected delivery `seq` (and so every delivery before it),
/// and returns what `GET /v1/deliveries/{seq}` says of it.
pub async fn projected(client: &reqwest::Client, base: &str, seq: i64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, answer) = get(client, &format!("{base}/v1/deliveries/{seq}")).await;
        if status == 200 && answer["projected"] == json!(true) {
            return answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivery {seq} not projected: {status} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// POSTs a delivery and, once it is accepted, waits for its projection: the status and, for
/// an accepted delivery, what `GET /v1/deliveries/{seq}` says of it (else the error answer).
pub async fn post_projected(
    client: &reqwest::Client,
    base: &str,
    delivery: &Delivery,
) -> (u16, Value) {
    let (status, answer) = post(client, base, delivery).await.unwrap();
    if status != 200 {
        return (status, answer);
    }
    (status, projected(client, base, delivery_seq(&answer)).await)
}

/// GETs JSON.
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The events of the whole feed, paged through with its cursor: `(seq, item)` in order. Every
/// item is checked against `schema/feed-item.schema.json`, every event item also against
/// `schema/output.schema.json` (it is the tagged event with its `seq` and `revision`).
pub async fn feed(client: &reqwest::Client, base: &str) -> Vec<(i64, Value)> {
    let output = Schema::output();
    feed_items(client, base)
        .await
        .into_iter()
        .filter(|item| item["type"] == "event")
        .map(|item| {
            output.assert_valid(&item);
            (item["seq"].as_i64().unwrap(), item)
        })
        .collect()
}

/// Every item of the whole feed (events, shipment states, retractions), in order, each
/// checked against `schema/feed-item.schema.json`.
pub async fn feed_items(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let schema = Schema::feed_item();
    let mut items = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = get(
            client,
            &format!("{base}/v1/events?after={after}&limit=1000"),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let page_items = page["events"].as_array().unwrap().clone();
        if page_items.is_empty() {
            assert_eq!(page["next_cursor"], json!(after));
            return items;
        }
        for item in page_items {
            schema.assert_valid(&item);
            items.push(item);
        }
        after = page["next_cursor"].as_i64().unwrap();
    }
}

/// Event ids of a feed, asserting the feed's cursors strictly increase and no id repeats.
pub fn assert_feed_consistent(feed: &[(i64, Value)]) -> Vec<String> {
    assert!(
        feed.windows(2).all(|w| w[0].0 < w[1].0),
        "feed cursors must strictly increase"
    );
    let ids: Vec<String> = feed
        .iter()
        .map(|(_, e)| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "an event appears twice in the feed"
    );
    ids
}

/// The server's `/metrics` page.
pub async fn metrics_text(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The counter value of a Prometheus metric line (labels included in `series`), 0 when absent.
pub async fn metric(client: &reqwest::Client, base: &str, series: &str) -> u64 {
    metrics_text(client, base)
        .await
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}
