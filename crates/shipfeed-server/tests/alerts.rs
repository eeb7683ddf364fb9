//! `deploy/alerts.yml` against the real service's metrics, with Prometheus's own `promtool`.
//!
//! Each test starts the service in-process on a free port (real HTTP, a real SQLite store,
//! its projector and subscriptions running), drives it, and scrapes `/metrics` twice: before
//! and after what it drives. The two scrapes become the input series of a `promtool test rules`
//! file over a few synthetic hours (one step a minute: the first scrape at 0, the second from
//! 1m on), in one of two worlds:
//!
//! - **it goes on** (healthy traffic): every counter keeps growing by what it grew between
//!   the scrapes, each step; a timestamp that moved keeps up with the clock; gauges hold;
//! - **it stops there** (faults): nothing happens after the second scrape: counters hold,
//!   timestamps hold (so silences grow), and ages that were running (the projector's lag, a
//!   push subscription's failing time) grow with the clock.
//!
//! Then `promtool check rules` and `promtool test rules` run, asserting, at several times,
//! every alert of the file: exactly the expected ones fire, with their labels and their
//! annotations (rendered from the file), and none fires for healthy traffic; a service started
//! on a store that already holds deliveries shows each endpoint's silence as it was, not as
//! long as its own uptime. Thresholds are
//! read from the file, so tuning them keeps the test meaningful. `promtool` comes from Debian's
//! `prometheus` package (`cargo xtask ci` installs it); without it these tests fail, never skip.
//! Nothing here sleeps for a time it assumes: every wait is for a condition, with a deadline
//! that only guards against hanging.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shipfeed::RawDelivery;
use shipfeed_server::{Config, Service};
use shipfeed_testkit::FIXTURE_SECRET;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Synthetic seconds between two steps of the input series (and between rule evaluations).
const STEP: f64 = 60.0;

/// Metrics whose value is an age that grows with the clock while what it measures waits.
const AGES: [&str; 2] = [
    "shipfeed_projector_lag_seconds",
    "shipfeed_subscription_failing_seconds",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn alerts_file() -> PathBuf {
    workspace().join("deploy/alerts.yml")
}

// ------------------------------------------------------------------------------------------
// deploy/alerts.yml
// ------------------------------------------------------------------------------------------

/// The rules file, parsed.
struct Rules {
    groups: Vec<Value>,
}

impl Rules {
    fn load() -> Rules {
        let path = alerts_file();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let document: Value = serde_norway::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
        Rules {
            groups: document["groups"].as_array().expect("groups").clone(),
        }
    }

    fn rules(&self) -> impl Iterator<Item = &Value> {
        self.groups
            .iter()
            .flat_map(|group| group["rules"].as_array().expect("rules").iter())
    }

    /// The alerting rules, by name.
    fn alerts(&self) -> BTreeMap<String, &Value> {
        self.rules()
            .filter_map(|rule| Some((rule["alert"].as_str()?.to_owned(), rule)))
            .collect()
    }

    /// The number a threshold record holds (`vector(N)`), the one with `label` when given.
    fn threshold(&self, record: &str, label: Option<(&str, &str)>) -> f64 {
        let rule = self
            .rules()
            .find(|rule| {
                rule["record"] == record
                    && label.is_none_or(|(name, value)| rule["labels"][name] == value)
            })
            .unwrap_or_else(|| panic!("deploy/alerts.yml has no record {record} {label:?}"));
        let expr = rule["expr"].as_str().unwrap().trim();
        expr.strip_prefix("vector(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|number| number.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!("threshold {record}: `{expr}` is not vector(<number>): keep thresholds plain numbers")
            })
    }

    /// What promtool must see of alert `name` firing with the labels of its expression:
    /// the rule's labels added, its annotations rendered.
    fn expected(&self, name: &str, labels: &BTreeMap<String, String>) -> Value {
        let alerts = self.alerts();
        let rule = alerts.get(name).unwrap_or_else(|| {
            panic!(
                "the test expects alert {name}, which deploy/alerts.yml does not have (it has {:?})",
                alerts.keys().collect::<Vec<_>>()
            )
        });
        let mut exp_labels = labels.clone();
        if let Some(fixed) = rule["labels"].as_object() {
            for (label, value) in fixed {
                exp_labels.insert(label.clone(), value.as_str().unwrap().to_owned());
            }
        }
        let annotations: BTreeMap<String, String> = rule["annotations"]
            .as_object()
            .map(|annotations| {
                annotations
                    .iter()
                    .map(|(key, template)| {
                        (key.clone(), render(template.as_str().unwrap(), labels))
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({"exp_labels": exp_labels, "exp_annotations": annotations})
    }
}

/// An annotation with its `{{ $labels.NAME }}` filled in; any other template is refused (its
/// value would depend on timing, and the test could not expect it).
fn render(template: &str, labels: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .unwrap_or_else(|| panic!("unclosed template in annotation {template:?}"))
            + start;
        let inner = rest[start + 2..end].trim();
        let name = inner.strip_prefix("$labels.").unwrap_or_else(|| {
            panic!("annotation {template:?} uses `{{{{ {inner} }}}}`: only {{{{ $labels.NAME }}}} is deterministic")
        });
        out.push_str(labels.get(name).map_or("", String::as_str));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

// ------------------------------------------------------------------------------------------
// Scrapes and the series promtool reads
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    /// A gauge in Unix seconds (`*_timestamp_seconds`).
    Timestamp,
    /// A gauge of seconds that grows with the clock while what it measures waits.
    Age,
}

/// One scrape of `/metrics`: each series (name and labels, as written) with its kind and
/// value, and when it was taken (Unix seconds).
struct Scrape {
    at: f64,
    samples: BTreeMap<String, (Kind, f64)>,
    text: String,
}

impl Scrape {
    async fn take(base: &str) -> Scrape {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let at = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        Scrape::parse(&text, at)
    }

    /// Reads the Prometheus text format: `# TYPE` lines name each family's type.
    fn parse(text: &str, at: f64) -> Scrape {
        let mut types: HashMap<&str, &str> = HashMap::new();
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let (family, kind) = declared.split_once(' ').unwrap();
                types.insert(family, kind);
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if !value.is_finite() {
                continue;
            }
            let name = series.split('{').next().unwrap();
            let family_type = [name, name.trim_end_matches("_bucket")]
                .into_iter()
                .chain(["_sum", "_count"].map(|suffix| name.trim_end_matches(suffix)))
                .find_map(|family| types.get(family).copied())
                .unwrap_or("gauge");
            let kind = match family_type {
                "counter" | "histogram" | "summary" => Kind::Counter,
                _ if name.ends_with("_timestamp_seconds") => Kind::Timestamp,
                _ if AGES.contains(&name) => Kind::Age,
                _ => Kind::Gauge,
            };
            samples.insert(series.to_owned(), (kind, value));
        }
        Scrape {
            at,
            samples,
            text: text.to_owned(),
        }
    }

    /// The value of a series (name and labels exactly as written).
    fn value(&self, series: &str) -> Option<f64> {
        self.samples.get(series).map(|(_, value)| *value)
    }
}

/// The two synthetic worlds a pair of scrapes is extended into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum World {
    /// What happened between the scrapes goes on, every step.
    GoesOn,
    /// Nothing happens after the second scrape.
    Stops,
}

/// promtool's expanding notation: `start`, then `steps` more values, each `by` more.
fn expanding(start: f64, by: f64, steps: usize) -> String {
    if by < 0.0 {
        format!("{start}-{}x{steps}", -by)
    } else {
        format!("{start}+{by}x{steps}")
    }
}

/// The input series of `first` (at 0) and `second` (at one step, then `steps` more) in
/// `world`. Timestamps are moved onto the synthetic clock (the second scrape at one step),
/// keeping their age at the scrape; they and ages start with the second scrape.
fn input_series(first: &Scrape, second: &Scrape, world: World, steps: usize) -> Vec<Value> {
    let mut names: Vec<&String> = first.samples.keys().chain(second.samples.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|series| {
            let before = first.samples.get(series).map(|(_, value)| *value);
            let after = second.samples.get(series).copied();
            let start = before.map_or("_".to_owned(), |value| value.to_string());
            let values = match after {
                None => format!("{start} _x{steps}"),
                Some((Kind::Counter, value)) => {
                    let grew = (value - before.unwrap_or(0.0)).max(0.0);
                    let by = if world == World::GoesOn { grew } else { 0.0 };
                    format!("{start} {}", expanding(value, by, steps))
                }
                Some((Kind::Gauge, value)) => format!("{start} {}", expanding(value, 0.0, steps)),
                Some((Kind::Timestamp, value)) => {
                    let on_clock = value - second.at + STEP;
                    let moved = before != Some(value);
                    let by = if world == World::GoesOn && moved {
                        STEP
                    } else {
                        0.0
                    };
                    format!("_ {}", expanding(on_clock, by, steps))
                }
                Some((Kind::Age, value)) => {
                    let by = if world == World::Stops && value > 0.0 {
                        STEP
                    } else {
                        0.0
                    };
                    format!("_ {}", expanding(value, by, steps))
                }
            };
            json!({"series": series, "values": values})
        })
        .collect()
}

/// The labels of an alert instance.
fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// At `minutes`, the alerts expected to fire: `(alert name, labels of its expression)`.
struct Expectation {
    minutes: u64,
    firing: Vec<(&'static str, BTreeMap<String, String>)>,
}

/// `promtool`, or a failure saying how to get it.
fn promtool() -> Command {
    let probe = Command::new("promtool").arg("--version").output();
    match probe {
        Ok(output) if output.status.success() => Command::new("promtool"),
        Ok(output) => panic!(
            "`promtool --version` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!(
            "promtool is needed to check deploy/alerts.yml and is not on PATH ({error}): \
             install Debian's `prometheus` package (`apt-get install prometheus`), or run \
             `cargo xtask ci`, which installs it"
        ),
    }
}

fn run(mut command: Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

/// Writes the promtool unit test of `series` (`name` names its file under the target
/// directory, kept for a look after a failure), asserting every alert of the rules file at
/// each expectation's time, and runs it.
fn promtool_test(rules: &Rules, name: &str, series: Vec<Value>, expectations: &[Expectation]) {
    let mut checked = promtool();
    checked.arg("check").arg("rules").arg(alerts_file());
    run(checked);

    let alerts = rules.alerts();
    for expectation in expectations {
        for (alert, _) in &expectation.firing {
            assert!(
                alerts.contains_key(*alert),
                "the test expects {alert}, which deploy/alerts.yml lacks"
            );
        }
    }
    let mut tests = Vec::new();
    for expectation in expectations {
        for alert in alerts.keys() {
            let expected: Vec<Value> = expectation
                .firing
                .iter()
                .filter(|(name, _)| name == alert)
                .map(|(name, labels)| rules.expected(name, labels))
                .collect();
            tests.push(json!({
                "eval_time": format!("{}m", expectation.minutes),
                "alertname": alert,
                "exp_alerts": expected,
            }));
        }
    }
    let document = json!({
        "rule_files": [alerts_file().canonicalize().unwrap()],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": tests,
        }],
    });
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.promtool.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&document).unwrap()).unwrap();
    let mut tested = promtool();
    tested.arg("test").arg("rules").arg(&path);
    let output = tested.output().unwrap();
    assert!(
        output.status.success(),
        "promtool test rules {} failed (exp: what the test expects, got: what the rules \
         fired on the scraped metrics):\n{}{}",
        path.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ------------------------------------------------------------------------------------------
// The service
// ------------------------------------------------------------------------------------------

/// A running service, its store and configuration in `dir`.
struct Running {
    base: String,
    _service: Arc<Service>,
    _dir: tempfile::TempDir,
    projector: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    _subscriptions: (watch::Sender<bool>, Vec<JoinHandle<()>>),
}

impl Running {
    /// Starts a service with three webhook endpoints, `sendcloud`, `happycolis` and `shipup`
    /// (the fixtures' credentials), stalled-shipment rules evaluated five times a second, and
    /// the `subscriptions` TOML (made of its directory).
    async fn start(subscriptions: impl FnOnce(&Path) -> String) -> Running {
        Running::start_after(subscriptions, Vec::new()).await
    }

    /// [`Running::start`] on a store that already holds `stored` (as after a restart).
    async fn start_after(
        subscriptions: impl FnOnce(&Path) -> String,
        stored: Vec<shipfeed_store::Arrival>,
    ) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, format!("{FIXTURE_SECRET}\n")).unwrap();
        let config_path = dir.path().join("shipfeed.toml");
        std::fs::write(
            &config_path,
            format!(
                r#"store = "{store}"
sink = "none"
[alerts]
check_every = "200ms"
[[endpoint]]
name = "sendcloud"
provider = "sendcloud"
secret_file = "{secret}"
[[endpoint]]
name = "happycolis"
provider = "happycolis"
secret_file = "{secret}"
[[endpoint]]
name = "shipup"
provider = "shipup"
basic_user = "shipup"
secret_file = "{secret}"
{subscriptions}
"#,
                store = dir.path().join("shipfeed.db").display(),
                secret = secret.display(),
                subscriptions = subscriptions(dir.path()),
            ),
        )
        .unwrap();
        let config = Config::load(Some(&config_path)).unwrap();
        let store = shipfeed_store::open(&config.store).await.unwrap();
        if !stored.is_empty() {
            store.append(stored).await.unwrap();
        }
        let service = Service::new(&config, store).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = service.router(config.body_limit_bytes);
        tokio::spawn(async move { axum::serve(listener, router).await });
        let (stop, stopping) = watch::channel(false);
        let projector = service.start_projector(&stopping);
        let (stop_subscriptions, stopping) = watch::channel(false);
        let tasks = service.start_subscriptions(&stopping).await.unwrap();
        Running {
            base,
            _service: service,
            _dir: dir,
            projector: Some((stop, projector)),
            _subscriptions: (stop_subscriptions, tasks),
        }
    }

    /// Stops this service's projector and waits until it has.
    async fn stop_projector(&mut self) {
        let (stop, task) = self.projector.take().expect("the projector runs");
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    /// Posts `delivery` to `/webhooks/{endpoint}`: the status and the answer.
    async fn post(&self, endpoint: &str, delivery: &RawDelivery) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}/webhooks/{endpoint}", self.base))
            .body(delivery.body.clone());
        for (name, value) in delivery.headers.iter() {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Posts an authentic delivery: its `delivery_seq`.
    async fn accepted(&self, endpoint: &str, delivery: &RawDelivery) -> i64 {
        let (status, answer) = self.post(endpoint, delivery).await;
        assert_eq!(status, 200, "{endpoint}: {answer}");
        answer["delivery_seq"].as_i64().unwrap()
    }

    /// Posts a delivery that must be refused as unauthenticated.
    async fn refused(&self, endpoint: &str, delivery: &RawDelivery) {
        let (status, answer) = self.post(endpoint, delivery).await;
        assert_eq!(status, 401, "{endpoint}: {answer}");
    }

    /// Waits until `GET path` answers JSON that `done` accepts; returns it.
    async fn wait_for(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = reqwest::get(format!("{}{path}", self.base))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: GET {path} is still {text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a scrape of `/metrics` shows what `done` looks for; returns that scrape.
    async fn wait_for_metrics(&self, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let scrape = Scrape::take(&self.base).await;
            if done(&scrape) {
                return scrape;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: /metrics never showed it:\n{}",
                scrape.text
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A generated fixture of `provider`, signed (or credentialed) for the fixtures' secret.
fn fixture(relative: &str) -> RawDelivery {
    shipfeed_testkit::load(&shipfeed_testkit::fixtures_dir().join(relative)).0
}

/// A Sendcloud delivery of `body`, signed with the fixtures' secret.
fn sendcloud_signed(body: Vec<u8>) -> RawDelivery {
    let signature = shipfeed::auth::sign_hex(&shipfeed::Secret::new(FIXTURE_SECRET), &body);
    RawDelivery::new(body, chrono::Utc::now())
        .with_header("Sendcloud-Signature", signature)
        .with_header("Content-Type", "application/json")
}

/// Sendcloud's "Announced" delivery for parcel number `n`: a shipment of its own in
/// `pre_transit` whose event is from 2024, so stalled at the first evaluation.
fn announced(n: u32) -> RawDelivery {
    let template = fixture("sendcloud/generated/v2-status-00001-announced.json").body;
    let body = String::from_utf8(template)
        .unwrap()
        .replace("3SYZXG5797000000", &format!("3SYZXG57{n:08}"))
        .replace("\"id\": 187000000", &format!("\"id\": {}", 188_000_000 + n));
    sendcloud_signed(body.into_bytes())
}

/// A series of the service's metrics, labels as the service writes them.
fn series(name: &str, pairs: &[(&str, &str)]) -> String {
    let labels: Vec<String> = pairs
        .iter()
        .map(|(label, value)| format!("{label}=\"{value}\""))
        .collect();
    format!("{name}{{{}}}", labels.join(","))
}

const ENDPOINTS: [&str; 3] = ["sendcloud", "happycolis", "shipup"];

/// The labels of one of [`ENDPOINTS`] (each is named after its provider).
fn endpoint(name: &str) -> [(&'static str, &str); 2] {
    [("endpoint", name), ("provider", name)]
}

/// The last time the tests evaluate: every endpoint's silence threshold passed, and the
/// alert's `for`, with room to spare; in whole minutes.
fn late_minutes(rules: &Rules) -> u64 {
    let longest = ENDPOINTS
        .iter()
        .map(|provider| {
            rules.threshold(
                "shipfeed:endpoint_silence_threshold_seconds",
                Some(("provider", provider)),
            )
        })
        .fold(0.0, f64::max);
    (longest / 60.0).ceil() as u64 + 30
}

// ------------------------------------------------------------------------------------------
// The tests
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_traffic_fires_no_alert() {
    let rules = Rules::load();
    let running = Running::start(|dir| {
        format!(
            "[[subscription]]\nname = \"audit\"\nkind = \"file\"\npath = \"{}\"\nstart = \"beginning\"\n",
            dir.join("audit.jsonl").display()
        )
    })
    .await;
    let first = Scrape::take(&running.base).await;

    // Deliveries of every endpoint, each ending in a terminal status (nothing stalls), and
    // one refused Sendcloud delivery among them: the internet's noise, not an outage.
    let mut last = 0;
    for name in [
        "v2-status-00011-delivered.json",
        "v2-status-00011-delivered.json",
        "v2-status-00011-delivered.json",
    ] {
        last = running
            .accepted(
                "sendcloud",
                &fixture(&format!("sendcloud/generated/{name}")),
            )
            .await;
    }
    let mut tampered = fixture("sendcloud/generated/v2-status-00011-delivered.json");
    tampered.body.push(b' ');
    running.refused("sendcloud", &tampered).await;
    running
        .accepted(
            "happycolis",
            &fixture("happycolis/generated/status-delivered.json"),
        )
        .await;
    let shipup = running
        .accepted(
            "shipup",
            &fixture("shipup/generated/events-new-delivered.json"),
        )
        .await;
    support::projected(&running.base, last.max(shipup), None).await;
    let delivered = series(
        "shipfeed_subscription_delivered_total",
        &[("subscription", "audit")],
    );
    let lag = series("shipfeed_subscription_lag", &[("subscription", "audit")]);
    let second = running
        .wait_for_metrics(
            "every delivery projected and delivered to `audit`",
            |scrape| {
                scrape.value("shipfeed_projector_lag_deliveries") == Some(0.0)
                    && scrape.value(&lag) == Some(0.0)
                    && scrape.value(&delivered).is_some_and(|n| n > 0.0)
            },
        )
        .await;
    assert_eq!(
        second.value(&series(
            "shipfeed_deliveries_total",
            &[
                ("endpoint", "sendcloud"),
                ("provider", "sendcloud"),
                ("outcome", "unauthorized")
            ]
        )),
        Some(1.0)
    );

    let late = late_minutes(&rules);
    let steps = usize::try_from(late).unwrap() + 5;
    let expectations: Vec<Expectation> = [10, 40, late]
        .into_iter()
        .map(|minutes| Expectation {
            minutes,
            firing: Vec::new(),
        })
        .collect();
    promtool_test(
        &rules,
        "healthy",
        input_series(&first, &second, World::GoesOn, steps),
        &expectations,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_fires_its_alert() {
    let rules = Rules::load();
    // A receiver that answers 410 (the push subscription disables itself), a port nothing
    // listens on (every attempt fails), and a "file" that is a directory (every batch fails).
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_url = format!("http://{}/hook", gone.local_addr().unwrap());
    let answer_410 = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async { axum::http::StatusCode::GONE }),
    );
    tokio::spawn(async move { axum::serve(gone, answer_410).await });
    let down_url = {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", closed.local_addr().unwrap())
    };
    let mut running = Running::start(|dir| {
        let signing = dir.join("signing");
        std::fs::write(&signing, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        let directory = dir.join("not-a-file");
        std::fs::create_dir(&directory).unwrap();
        format!(
            r#"[[subscription]]
name = "hook-gone"
kind = "http"
url = "{gone_url}"
secret_file = "{signing}"
start = "beginning"
[[subscription]]
name = "hook-down"
kind = "http"
url = "{down_url}"
secret_file = "{signing}"
start = "beginning"
[[subscription]]
name = "broken-file"
kind = "file"
path = "{directory}"
start = "beginning"
"#,
            signing = signing.display(),
            directory = directory.display(),
        )
    })
    .await;

    // Before the first scrape: traffic on every endpoint, more shipments stalled in one
    // status than the threshold, and the subscriptions failing as they will.
    let stalled = rules.threshold("shipfeed:stalled_shipments_threshold", None) as u32 + 1;
    let mut last = 0;
    for n in 0..stalled {
        last = running.accepted("sendcloud", &announced(n)).await;
    }
    running
        .accepted(
            "happycolis",
            &fixture("happycolis/generated/status-delivered.json"),
        )
        .await;
    running
        .accepted(
            "shipup",
            &fixture("shipup/generated/events-new-delivered.json"),
        )
        .await;
    support::projected(&running.base, last, None).await;
    running
        .wait_for(
            "/v1/alerts?limit=1000",
            "every announced shipment stalled",
            |page| {
                page["alerts"]
                    .as_array()
                    .is_some_and(|alerts| alerts.len() >= stalled as usize)
            },
        )
        .await;
    running
        .wait_for(
            "/v1/subscriptions",
            "hook-gone disabled by its 410, hook-down failing",
            |page| {
                let Some(subscriptions) = page["subscriptions"].as_array() else {
                    return false;
                };
                let named = |name: &str| subscriptions.iter().find(|s| s["name"] == name);
                named("hook-gone").is_some_and(|s| s["status"] == "disabled")
                    && named("hook-down").is_some_and(|s| s["failing_since"].is_string())
            },
        )
        .await;
    let file_failures = series(
        "shipfeed_subscription_delivery_failures_total",
        &[("subscription", "broken-file")],
    );
    let file_lag = series(
        "shipfeed_subscription_lag",
        &[("subscription", "broken-file")],
    );
    let first = running
        .wait_for_metrics("broken-file failing with items waiting", |scrape| {
            scrape.value(&file_failures).is_some_and(|n| n > 0.0)
                && scrape.value(&file_lag).is_some_and(|n| n > 0.0)
        })
        .await;

    // Between the scrapes: a burst of refused Sendcloud deliveries (a secret rotated on one
    // side), enough to pass both thresholds with the two accepted ones below.
    let least = rules.threshold("shipfeed:unauthorized_threshold_deliveries", None);
    let ratio = rules.threshold("shipfeed:unauthorized_threshold_ratio", None);
    assert!(
        ratio < 1.0,
        "shipfeed:unauthorized_threshold_ratio {ratio} can never be passed"
    );
    let mut refused = least.ceil().max(1.0);
    while refused / (refused + 2.0) <= ratio {
        refused += 1.0;
    }
    let mut tampered = fixture("sendcloud/generated/v2-status-00011-delivered.json");
    tampered.body.push(b' ');
    for _ in 0..refused as u32 {
        running.refused("sendcloud", &tampered).await;
    }
    // HappyColis: one error answer, after which its queue would hold everything.
    running
        .refused(
            "happycolis",
            &fixture("happycolis/generated/signature-wrong.json"),
        )
        .await;
    // An authentic delivery nobody can read: a dead letter.
    let unreadable = sendcloud_signed(
        br#"{"action": "parcel_status_changed", "parcel": 42, "timestamp": 1712163088943}"#
            .to_vec(),
    );
    let seq = running.accepted("sendcloud", &unreadable).await;
    let status = support::projected(&running.base, seq, None).await;
    assert!(status["projection"]["dead_letter"].is_string(), "{status}");
    // The projector stops; a delivery waits in the inbox.
    running.stop_projector().await;
    running
        .accepted(
            "sendcloud",
            &fixture("sendcloud/generated/v2-status-00011-delivered.json"),
        )
        .await;
    let second = Scrape::take(&running.base).await;

    // The second scrape shows each fault.
    for (series, check) in [
        (
            series(
                "shipfeed_deliveries_total",
                &[
                    ("endpoint", "sendcloud"),
                    ("provider", "sendcloud"),
                    ("outcome", "unauthorized"),
                ],
            ),
            refused,
        ),
        (series("shipfeed_dead_letters", &endpoint("sendcloud")), 1.0),
        ("shipfeed_projector_lag_deliveries".to_owned(), 1.0),
        (
            series("shipfeed_alerts_open", &[("rule", "stalled.pre_transit")]),
            f64::from(stalled),
        ),
        (
            series(
                "shipfeed_subscription_status",
                &[("subscription", "hook-gone"), ("status", "disabled")],
            ),
            1.0,
        ),
    ] {
        assert_eq!(
            second.value(&series),
            Some(check),
            "{series} in\n{}",
            second.text
        );
    }
    for positive in [
        "shipfeed_projector_lag_seconds".to_owned(),
        series(
            "shipfeed_subscription_failing_seconds",
            &[("subscription", "hook-down")],
        ),
        series(
            "shipfeed_endpoint_last_refusal_timestamp_seconds",
            &endpoint("happycolis"),
        ),
    ] {
        assert!(
            second.value(&positive).is_some_and(|value| value > 0.0),
            "{positive} in\n{}",
            second.text
        );
    }

    let late = late_minutes(&rules);
    let steps = usize::try_from(late).unwrap() + 5;
    let on = |pairs: &[(&str, &str)]| labels(pairs);
    let lasting = || {
        vec![
            (
                "ShipfeedHappyColisQueueBlocked",
                on(&endpoint("happycolis")),
            ),
            (
                "ShipfeedSubscriptionDisabled",
                on(&[("subscription", "hook-gone")]),
            ),
        ]
    };
    let growing = || {
        vec![
            (
                "ShipfeedSubscriptionFailing",
                on(&[("subscription", "hook-down")]),
            ),
            (
                "ShipfeedSubscriptionStuck",
                on(&[("subscription", "broken-file")]),
            ),
            (
                "ShipfeedStalledShipments",
                on(&[("rule", "stalled.pre_transit")]),
            ),
            ("ShipfeedProjectorLagging", on(&[])),
        ]
    };
    let expectations = [
        // The burst and the dead letter are recent; the slower conditions are not due yet.
        Expectation {
            minutes: 10,
            firing: [
                lasting(),
                vec![
                    ("ShipfeedWebhookUnauthorized", on(&endpoint("sendcloud"))),
                    ("ShipfeedDeadLettersRising", on(&endpoint("sendcloud"))),
                ],
            ]
            .concat(),
        },
        // The burst and the dead letter are past their windows; what lasts has lasted long
        // enough.
        Expectation {
            minutes: 40,
            firing: [lasting(), growing()].concat(),
        },
        // Hours later, nothing has arrived anywhere.
        Expectation {
            minutes: late,
            firing: [
                lasting(),
                growing(),
                ENDPOINTS
                    .iter()
                    .map(|name| ("ShipfeedEndpointSilent", on(&endpoint(name))))
                    .collect(),
            ]
            .concat(),
        },
    ];
    promtool_test(
        &rules,
        "faults",
        input_series(&first, &second, World::Stops, steps),
        &expectations,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_hide_a_silence() {
    let rules = Rules::load();
    // The store holds a Sendcloud delivery from long ago, and none of the other endpoints:
    // the service starting now has seen none of them itself.
    let mut old = fixture("sendcloud/generated/v2-status-00011-delivered.json");
    old.received_at = "2024-04-03T16:51:29.250Z".parse().unwrap();
    let arrival = shipfeed_store::Arrival {
        endpoint: "sendcloud".to_owned(),
        provider: shipfeed::Provider::Sendcloud,
        delivery: old,
    };
    let started = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let running = Running::start_after(|_| String::new(), vec![arrival]).await;
    let first = Scrape::take(&running.base).await;
    let last = |name: &str| {
        first
            .value(&series(
                "shipfeed_endpoint_last_delivery_timestamp_seconds",
                &endpoint(name),
            ))
            .unwrap_or_else(|| panic!("no last delivery of {name} in\n{}", first.text))
    };
    assert_eq!(last("sendcloud"), 1_712_163_089.25, "read from the store");
    for never in ["happycolis", "shipup"] {
        assert!(
            last(never) >= started && last(never) <= first.at,
            "{never}: silent since the start"
        );
    }
    let second = Scrape::take(&running.base).await;

    // The old endpoint is silent at once; the others only once their threshold has passed
    // since the start.
    let least = ["happycolis", "shipup"]
        .iter()
        .map(|provider| {
            rules.threshold(
                "shipfeed:endpoint_silence_threshold_seconds",
                Some(("provider", provider)),
            )
        })
        .fold(f64::INFINITY, f64::min);
    let before = (least / 60.0).floor() as u64 - 1;
    let late = late_minutes(&rules);
    let silent = |names: &[&str]| -> Vec<(&'static str, BTreeMap<String, String>)> {
        names
            .iter()
            .map(|name| ("ShipfeedEndpointSilent", labels(&endpoint(name))))
            .collect()
    };
    promtool_test(
        &rules,
        "restart",
        input_series(
            &first,
            &second,
            World::Stops,
            usize::try_from(late).unwrap() + 5,
        ),
        &[
            Expectation {
                minutes: 20,
                firing: silent(&["sendcloud"]),
            },
            Expectation {
                minutes: before,
                firing: silent(&["sendcloud"]),
            },
            Expectation {
                minutes: late,
                firing: silent(&ENDPOINTS),
            },
        ],
    );
}

/// GitHub's anchor of a Markdown heading: lower case, punctuation other than `-` and `_`
/// dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_has_its_runbook_section_and_every_anchor_exists() {
    let rules = Rules::load();
    let runbook = std::fs::read_to_string(workspace().join("docs/runbook.md")).unwrap();
    let headings: Vec<&str> = runbook
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|line| line.trim_start_matches('#').trim())
        .collect();
    let anchors: Vec<String> = headings.iter().map(|heading| anchor(heading)).collect();
    let alerts = rules.alerts();
    for (name, rule) in &alerts {
        assert!(
            headings.contains(&name.as_str()),
            "docs/runbook.md has no section `{name}`"
        );
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for annotation in ["summary", "description", "runbook_url"] {
            assert!(
                rule["annotations"][annotation].is_string(),
                "{name} has no {annotation}"
            );
        }
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        let (page, fragment) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} has no anchor"));
        assert!(page.ends_with("docs/runbook.md"), "{name}: {url}");
        assert!(
            anchors.iter().any(|a| a == fragment),
            "{name}: {url}: docs/runbook.md has no heading with anchor #{fragment}"
        );
        assert_eq!(
            fragment,
            anchor(name),
            "{name}: its runbook_url names another section"
        );
    }
    // Every alert section names an alert, and every link within the runbook lands.
    for heading in &headings {
        if heading.starts_with("Shipfeed") && !heading.contains(' ') {
            assert!(
                alerts.contains_key(*heading),
                "docs/runbook.md has a section {heading} for no alert of deploy/alerts.yml"
            );
        }
    }
    for (at, _) in runbook.match_indices("](#") {
        let fragment: String = runbook[at + 3..]
            .chars()
            .take_while(|c| *c != ')')
            .collect();
        assert!(
            anchors.contains(&fragment),
            "docs/runbook.md links #{fragment}, which no heading has"
        );
    }
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    assert!(
        readme.contains("docs/runbook.md"),
        "README links the runbook"
    );
}
