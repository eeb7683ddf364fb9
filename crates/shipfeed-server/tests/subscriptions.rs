//! The operator's routes of the subscriptions over real HTTP, on a service in-process on a free
//! port with a real SQLite store, its projector and its subscriptions running, and an HTTP
//! push subscription POSTing to a receiver of the test's that fails, then answers:
//! `GET /v1/subscriptions`, the parked messages (paged, by state), pause, resume and
//! redelivery, which take effect without a restart; the scopes they need; and their refusals
//! (unknown name, a subscription of another kind, a bad state or time). Every answer is
//! validated against the OpenAPI document.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use shipfeed_server::{Config, Service};
use shipfeed_testkit::FIXTURE_SECRET;
use support::assert_matches;

const READ_TOKEN: &str = "read-token-for-the-subscription-tests-1";
const ADMIN_TOKEN: &str = "admin-token-for-the-subscription-tests-2";
/// The Standard Webhooks specification's example secret.
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the receiver got: `(webhook-id, body)` of every request, in arrival order.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver answering every POST with the status it is set to.
struct Receiver {
    url: String,
    status: Arc<AtomicU16>,
    received: Received,
}

impl Receiver {
    async fn start(status: u16) -> Receiver {
        let state = (Arc::new(AtomicU16::new(status)), Received::default());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            status: state.0,
            received: state.1,
        }
    }

    fn received(&self) -> Vec<(String, Value)> {
        self.received.lock().unwrap().clone()
    }
}

async fn receive(
    State((status, received)): State<(Arc<AtomicU16>, Received)>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    received
        .lock()
        .unwrap()
        .push((id, serde_json::from_str(&body).unwrap()));
    StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
}

struct Running {
    base: String,
    _dir: tempfile::TempDir,
    /// Dropped with the test: the projector and the subscriptions stop.
    _stop: tokio::sync::watch::Sender<bool>,
}

/// A service with a Sendcloud endpoint, a `read` and an `admin` token, the push subscription
/// `hooks` to `receiver` (no retry: a failed attempt exhausts its message) and the file
/// subscription `audit`, both from the beginning of the feed. Its leases last a minute, so
/// that a subscription left alone looks again only every 20 s: what happens sooner was woken.
async fn start(receiver: &Receiver) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    for (name, content) in [
        ("secret", FIXTURE_SECRET),
        ("signing", SIGNING_SECRET),
        ("read", READ_TOKEN),
        ("admin", ADMIN_TOKEN),
    ] {
        std::fs::write(dir.path().join(name), format!("{content}\n")).unwrap();
    }
    let config = dir.path().join("shipfeed.toml");
    std::fs::write(
        &config,
        format!(
            r#"store = "{store}"
sink = "none"
lease_ttl_seconds = 60
[[endpoint]]
name = "sendcloud"
provider = "sendcloud"
secret_file = "{secret}"
[[subscription]]
name = "hooks"
kind = "http"
url = "{url}"
secret_file = "{signing}"
retry_schedule = []
start = "beginning"
[[subscription]]
name = "audit"
kind = "file"
path = "{audit}"
start = "beginning"
[[api_token]]
name = "support"
token_file = "{read}"
scopes = ["read"]
[[api_token]]
name = "operator"
token_file = "{admin}"
scopes = ["admin"]
"#,
            store = path("shipfeed.db"),
            secret = path("secret"),
            url = receiver.url,
            signing = path("signing"),
            audit = path("audit.jsonl"),
            read = path("read"),
            admin = path("admin"),
        ),
    )
    .unwrap();
    let config = Config::load(Some(&config)).unwrap();
    let store = shipfeed_store::open(&config.store).await.unwrap();
    let service = Service::new(&config, store).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = service.router(config.body_limit_bytes);
    tokio::spawn(async move { axum::serve(listener, router).await });
    let (stop, stopping) = tokio::sync::watch::channel(false);
    service.start_projector(&stopping);
    service.start_subscriptions(&stopping).await.unwrap();
    Running {
        base,
        _dir: dir,
        _stop: stop,
    }
}

/// The status and body of a request with `token` as a bearer token.
async fn call(method: reqwest::Method, url: &str, token: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// A client of one running service, checking every answer against the OpenAPI document.
struct Api {
    base: String,
    document: Value,
}

impl Api {
    /// `method` on `url` (under the base) with `token`: its status, its body checked against
    /// the document's schema of `template`'s answer of that status.
    async fn call(
        &self,
        method: reqwest::Method,
        template: &str,
        url: &str,
        token: &str,
    ) -> (u16, Value) {
        let verb = method.as_str().to_lowercase();
        let (status, body) = call(method, &format!("{}{url}", self.base), token).await;
        assert_matches(&self.document, &verb, template, status, &body);
        (status, serde_json::from_str(&body).unwrap())
    }

    async fn get(&self, template: &str, url: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, template, url, READ_TOKEN)
            .await
    }

    async fn post(&self, template: &str, url: &str) -> (u16, Value) {
        self.call(reqwest::Method::POST, template, url, ADMIN_TOKEN)
            .await
    }

    /// `GET /v1/subscriptions/{name}/messages` with `query`, answered 200: the messages.
    async fn messages(&self, name: &str, query: &str) -> (Vec<Value>, i64) {
        let (status, page) = self
            .get(
                "/v1/subscriptions/{name}/messages",
                &format!("/v1/subscriptions/{name}/messages{query}"),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        (
            page["messages"].as_array().unwrap().clone(),
            page["next_cursor"].as_i64().unwrap(),
        )
    }

    /// The subscription `name` of `GET /v1/subscriptions`.
    async fn subscription(&self, name: &str) -> Value {
        let (status, list) = self.get("/v1/subscriptions", "/v1/subscriptions").await;
        assert_eq!(status, 200, "{list}");
        list["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|subscription| subscription["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {list}"))
            .clone()
    }
}

/// How long a wait may last, and what it waits for.
struct Deadline {
    at: Instant,
    seconds: u64,
    what: &'static str,
}

impl Deadline {
    fn new(seconds: u64, what: &'static str) -> Deadline {
        Deadline {
            at: Instant::now() + Duration::from_secs(seconds),
            seconds,
            what,
        }
    }

    /// Waits a little before looking again; fails the test once the deadline is past.
    async fn tick(&self) {
        assert!(
            Instant::now() < self.at,
            "not within {} s: {}",
            self.seconds,
            self.what
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn webhook_ids(messages: &[Value]) -> BTreeSet<String> {
    messages
        .iter()
        .map(|message| message["webhook_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Posts the fixtures' delivered Sendcloud parcel and waits for its projection; the feed then.
async fn one_parcel(base: &str) -> Vec<Value> {
    let fixture =
        shipfeed_testkit::fixtures_dir().join("sendcloud/generated/v2-status-00011-delivered.json");
    let delivery = shipfeed_testkit::load(&fixture).0;
    let mut request = reqwest::Client::new()
        .post(format!("{base}/webhooks/sendcloud"))
        .body(delivery.body.clone());
    for (name, value) in delivery.headers.iter() {
        request = request.header(name, value);
    }
    let answer: Value = request.send().await.unwrap().json().await.unwrap();
    let seq = answer["delivery_seq"].as_i64().unwrap();
    support::projected(base, seq, Some(READ_TOKEN)).await;
    let (status, feed) = call(
        reqwest::Method::GET,
        &format!("{base}/v1/events?limit=1000"),
        READ_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{feed}");
    serde_json::from_str::<Value>(&feed).unwrap()["events"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_messages_are_listed_and_redelivered_and_pause_and_resume_act_at_once() {
    let receiver = Receiver::start(500).await;
    let running = start(&receiver).await;
    let api = Api {
        base: running.base.clone(),
        document: serde_json::from_str(&shipfeed_server::openapi_document().unwrap()).unwrap(),
    };

    // The receiver fails: each item of the feed is attempted once and, without retries,
    // exhausted.
    let feed = one_parcel(&api.base).await;
    assert!(
        feed.len() >= 2,
        "an event and its shipment's state: {feed:?}"
    );
    let last_seq = feed.last().unwrap()["seq"].as_i64().unwrap();
    let deadline = Deadline::new(30, "every feed item exhausted");
    let exhausted = loop {
        let exhausted = api.messages("hooks", "?state=exhausted").await.0;
        if exhausted.len() == feed.len() {
            break exhausted;
        }
        deadline.tick().await;
    };
    let seqs: Vec<i64> = exhausted
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    let feed_seqs: Vec<i64> = feed
        .iter()
        .map(|item| item["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, feed_seqs, "by seq, every item once");
    for message in &exhausted {
        assert_eq!(message["state"], "exhausted", "{message}");
        assert_eq!(message["attempts"], 1, "{message}");
        assert_eq!(message["last_status"], 500, "{message}");
        assert!(message.get("body").is_none(), "no body served: {message}");
    }
    let first_ids = webhook_ids(&exhausted);
    let attempted: BTreeSet<String> = receiver.received().into_iter().map(|(id, _)| id).collect();
    assert_eq!(attempted, first_ids, "the receiver saw each once");
    assert!(api.messages("hooks", "?state=pending").await.0.is_empty());
    assert_eq!(api.messages("hooks", "").await.0.len(), feed.len());

    // Paged by seq: `next_cursor` is the last seq of the page, the `after` of the next.
    let (page, next) = api.messages("hooks", "?limit=1").await;
    assert_eq!((webhook_ids(&page).len(), next), (1, seqs[0]));
    let (page, next) = api
        .messages("hooks", &format!("?after={next}&limit=1"))
        .await;
    assert_eq!((page[0]["seq"].as_i64(), next), (Some(seqs[1]), seqs[1]));
    let (page, next) = api.messages("hooks", &format!("?after={last_seq}")).await;
    assert_eq!((page.len(), next), (0, last_seq), "past the end");

    // The list: the push subscription has read the whole feed and is failing; the file
    // subscription is of another kind, always active.
    let hooks = api.subscription("hooks").await;
    assert_eq!(
        (&hooks["kind"], &hooks["status"], hooks["cursor"].as_i64()),
        (&json!("http"), &json!("active"), Some(last_seq)),
        "{hooks}"
    );
    assert!(hooks["failing_since"].is_string(), "{hooks}");
    let audit = api.subscription("audit").await;
    assert_eq!(
        (&audit["kind"], &audit["status"], &audit["reason"]),
        (&json!("file"), &json!("active"), &Value::Null),
        "{audit}"
    );

    // A read token changes nothing.
    for action in ["pause", "resume", "redeliver"] {
        let (status, body) = api
            .call(
                reqwest::Method::POST,
                &format!("/v1/subscriptions/{{name}}/{action}"),
                &format!("/v1/subscriptions/hooks/{action}"),
                READ_TOKEN,
            )
            .await;
        assert_eq!(status, 403, "{action}: {body}");
    }
    assert_eq!(
        api.messages("hooks", "?state=exhausted").await.0.len(),
        feed.len()
    );
    assert_eq!(api.subscription("hooks").await["status"], "active");

    // Paused, then redelivered while paused: due again, and nothing is sent.
    let (status, paused) = api
        .post(
            "/v1/subscriptions/{name}/pause",
            "/v1/subscriptions/hooks/pause",
        )
        .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(
        (&paused["name"], &paused["status"], &paused["reason"]),
        (
            &json!("hooks"),
            &json!("paused"),
            &json!("paused by an operator")
        )
    );
    assert_eq!(api.subscription("hooks").await["status"], "paused");
    receiver.status.store(200, Ordering::SeqCst);
    let redeliver = "/v1/subscriptions/{name}/redeliver";
    let (status, none) = api
        .post(
            redeliver,
            "/v1/subscriptions/hooks/redeliver?since=2999-01-01T00:00:00Z",
        )
        .await;
    assert_eq!(
        (status, none),
        (200, json!({"redelivered": 0})),
        "none parked since then"
    );
    let (status, all) = api
        .post(
            redeliver,
            "/v1/subscriptions/hooks/redeliver?since=2000-01-01T00:00:00Z",
        )
        .await;
    assert_eq!((status, all), (200, json!({"redelivered": feed.len()})));
    let pending = api.messages("hooks", "?state=pending").await.0;
    assert_eq!(
        webhook_ids(&pending),
        first_ids,
        "the same webhook-ids, due again"
    );
    assert!(api.messages("hooks", "?state=exhausted").await.0.is_empty());
    // Paused, it sends nothing, though the redelivery woke it (checked here without waiting:
    // a sleep would make the test slower, never more certain to pass).
    assert_eq!(
        receiver.received().len(),
        feed.len(),
        "nothing sent while paused"
    );

    // Resumed: sent at once (woken: by itself it would look again only in 20 s), under the
    // same webhook-ids, and no longer kept.
    let (status, resumed) = api
        .post(
            "/v1/subscriptions/{name}/resume",
            "/v1/subscriptions/hooks/resume",
        )
        .await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(
        (
            &resumed["status"],
            &resumed["reason"],
            &resumed["failing_since"]
        ),
        (&json!("active"), &Value::Null, &Value::Null)
    );
    let deadline = Deadline::new(10, "the redelivered messages sent after the resume");
    while receiver.received().len() < 2 * feed.len() {
        deadline.tick().await;
    }
    let received = receiver.received();
    assert_eq!(received.len(), 2 * feed.len(), "each sent again once");
    let again: BTreeSet<String> = received[feed.len()..]
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(again, first_ids);
    let bodies: BTreeSet<String> = received[feed.len()..]
        .iter()
        .map(|(_, body)| body.to_string())
        .collect();
    let items: BTreeSet<String> = feed.iter().map(Value::to_string).collect();
    assert_eq!(bodies, items, "the feed items, as first sent");
    let deadline = Deadline::new(10, "no message kept once delivered");
    while !api.messages("hooks", "").await.0.is_empty() {
        deadline.tick().await;
    }
    let hooks = api.subscription("hooks").await;
    assert_eq!(
        (&hooks["status"], &hooks["failing_since"]),
        (&json!("active"), &Value::Null),
        "{hooks}"
    );
    // Nothing exhausted is left to redeliver.
    let (_, nothing) = api
        .post(redeliver, "/v1/subscriptions/hooks/redeliver")
        .await;
    assert_eq!(nothing, json!({"redelivered": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_other_kinds_and_bad_parameters_are_refused() {
    let receiver = Receiver::start(200).await;
    let running = start(&receiver).await;
    let api = Api {
        base: running.base.clone(),
        document: serde_json::from_str(&shipfeed_server::openapi_document().unwrap()).unwrap(),
    };
    let messages = "/v1/subscriptions/{name}/messages";
    for name in ["nosuch", "sink"] {
        let (status, body) = api
            .get(messages, &format!("/v1/subscriptions/{name}/messages"))
            .await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(
            body["error"],
            format!("no subscription `{name}` is configured")
        );
        for action in ["pause", "resume", "redeliver"] {
            let (status, body) = api
                .post(
                    &format!("/v1/subscriptions/{{name}}/{action}"),
                    &format!("/v1/subscriptions/{name}/{action}"),
                )
                .await;
            assert_eq!(status, 404, "{action} {name}: {body}");
        }
    }
    // A subscription of another kind has no state to change and parks nothing.
    let (status, body) = api.get(messages, "/v1/subscriptions/audit/messages").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("kind \"file\""),
        "{body}"
    );
    for action in ["pause", "resume", "redeliver"] {
        let (status, body) = api
            .post(
                &format!("/v1/subscriptions/{{name}}/{action}"),
                &format!("/v1/subscriptions/audit/{action}"),
            )
            .await;
        assert_eq!(status, 409, "{action}: {body}");
    }
    assert_eq!(api.subscription("audit").await["status"], "active");

    let (status, body) = api
        .get(messages, "/v1/subscriptions/hooks/messages?state=delivered")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("`pending` or `exhausted`"),
        "{body}"
    );
    // A parameter not of its type: a JSON error too.
    for query in ["after=first", "limit=-1"] {
        let (status, body) = api
            .get(
                messages,
                &format!("/v1/subscriptions/hooks/messages?{query}"),
            )
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let redeliver = "/v1/subscriptions/{name}/redeliver";
    for since in ["yesterday", "2024-06-01"] {
        let (status, body) = api
            .post(
                redeliver,
                &format!("/v1/subscriptions/hooks/redeliver?since={since}"),
            )
            .await;
        assert_eq!(status, 400, "{since}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("RFC 3339"),
            "{body}"
        );
    }
    // An offset's `+` left unencoded (a space once decoded) still reads as an offset.
    let (status, body) = api
        .post(
            redeliver,
            "/v1/subscriptions/hooks/redeliver?since=2024-06-01T02:00:00+02:00",
        )
        .await;
    assert_eq!((status, body), (200, json!({"redelivered": 0})));
    // Nothing is refused for a subscription that never failed: it is active, at cursor
    // null or a seq, and keeps nothing.
    let hooks = api.subscription("hooks").await;
    assert_eq!(
        (&hooks["kind"], &hooks["status"], &hooks["failing_since"]),
        (&json!("http"), &json!("active"), &Value::Null),
        "{hooks}"
    );
    assert!(api.messages("hooks", "?state=exhausted").await.0.is_empty());
}
