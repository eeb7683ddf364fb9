//! The audit log and the replay of deliveries by seq over real HTTP, on services in-process on
//! free ports, each scenario on SQLite and on PostgreSQL (a schema of its own; it fails, never
//! skips, without a server): every operator's action through the API is recorded after it
//! ran, with the caller's token name (or `anonymous` when the API is open) and how it ended,
//! refusals too; `GET /v1/audit` pages newest first; `POST /v1/dead-letters/replay` recovers a
//! dead letter once its endpoint is configured (the fix) and says what became of each
//! delivery; the scopes and refusals of both routes. Every answer is validated against the
//! OpenAPI document. Nothing waits on a sleep but the projection of the deliveries appended.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use serde_json::{json, Value};
use shipfeed::{Provider, RawDelivery};
use shipfeed_server::{Config, Service};
use shipfeed_store::{Arrival, Store};
use shipfeed_testkit::FIXTURE_SECRET;
use support::assert_matches;

const READ_TOKEN: &str = "read-token-for-the-audit-tests-0001";
const ADMIN_TOKEN: &str = "admin-token-for-the-audit-tests-0002";

/// Runs each scenario on a fresh SQLite store and a fresh PostgreSQL schema, as two tests.
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario(super::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario(super::Backend::Postgres).await;
            }
        }
    )*};
}

on_both_stores!(
    admin_actions_through_the_api_are_audited_with_their_caller,
    the_replay_route_recovers_a_dead_letter_after_a_fix,
);

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database and a directory for the configuration's files; removed when dropped.
struct Db {
    dir: tempfile::TempDir,
    url: String,
    _schema: Option<shipfeed_testkit::postgres::Schema>,
}

impl Db {
    async fn new(backend: Backend) -> Db {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in [
            ("secret", FIXTURE_SECRET),
            ("read", READ_TOKEN),
            ("admin", ADMIN_TOKEN),
        ] {
            std::fs::write(dir.path().join(name), format!("{content}\n")).unwrap();
        }
        match backend {
            Backend::Sqlite => Db {
                url: dir.path().join("shipfeed.db").display().to_string(),
                dir,
                _schema: None,
            },
            Backend::Postgres => {
                let schema = shipfeed_testkit::postgres::Schema::create().await;
                Db {
                    url: schema.url.clone(),
                    dir,
                    _schema: Some(schema),
                }
            }
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The `[[endpoint]]` tables of Sendcloud endpoints named `names`.
    fn endpoints(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|name| {
                format!(
                    "[[endpoint]]\nname = \"{name}\"\nprovider = \"sendcloud\"\nsecret_file = \"{}\"\n",
                    self.file("secret")
                )
            })
            .collect()
    }

    /// The `read` token `support` and the `admin` token `operator`.
    fn tokens(&self) -> String {
        format!(
            "[[api_token]]\nname = \"support\"\ntoken_file = \"{}\"\nscopes = [\"read\"]\n\
             [[api_token]]\nname = \"operator\"\ntoken_file = \"{}\"\nscopes = [\"admin\"]\n",
            self.file("read"),
            self.file("admin")
        )
    }
}

/// A service serving HTTP on a free port, over `store`.
struct Running {
    base: String,
    service: Arc<Service>,
    document: Value,
    stop: tokio::sync::watch::Sender<bool>,
    projector: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// A service of the configuration `tables` (after `store` and `sink`) over `store`, with
    /// its projector running when asked.
    async fn start(db: &Db, store: &Store, tables: &str, projector: bool) -> Running {
        let path = db
            .dir
            .path()
            .join(format!("shipfeed-{}.toml", config_number()));
        std::fs::write(
            &path,
            format!("store = \"{}\"\nsink = \"none\"\n{tables}", db.url),
        )
        .unwrap();
        let config = Config::load(Some(&path)).unwrap();
        let service = Service::new(&config, store.clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = service.router(config.body_limit_bytes);
        tokio::spawn(async move { axum::serve(listener, router).await });
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let projector = projector.then(|| service.start_projector(&stopping));
        Running {
            base,
            service,
            document: serde_json::from_str(&shipfeed_server::openapi_document().unwrap()).unwrap(),
            stop,
            projector,
        }
    }

    /// Stops its projector and waits until it has (its lease released).
    async fn stop_projector(&mut self) {
        self.stop.send(true).unwrap();
        if let Some(projector) = self.projector.take() {
            projector.await.unwrap();
        }
    }

    /// `method` on `url` with `token` (and a JSON `body`): the status and the body, which
    /// must match the document's schema of `template`'s answer of that status.
    async fn call(
        &self,
        method: reqwest::Method,
        template: &str,
        url: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let verb = method.as_str().to_lowercase();
        let mut request = reqwest::Client::new().request(method, format!("{}{url}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_matches(&self.document, &verb, template, status, &text);
        (status, serde_json::from_str(&text).unwrap())
    }

    async fn post(&self, template: &str, url: &str, token: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::POST, template, url, token, None)
            .await
    }

    /// `POST /v1/dead-letters/replay` with `body`.
    async fn replay(&self, body: Value, token: Option<&str>) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/v1/dead-letters/replay",
            "/v1/dead-letters/replay",
            token,
            Some(body),
        )
        .await
    }

    /// `GET /v1/audit{query}`, answered 200: its entries and `next`.
    async fn audit(&self, query: &str, token: Option<&str>) -> (Vec<Value>, Value) {
        let (status, page) = self
            .call(
                reqwest::Method::GET,
                "/v1/audit",
                &format!("/v1/audit{query}"),
                token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        (
            page["entries"].as_array().unwrap().clone(),
            page["next"].clone(),
        )
    }
}

/// A distinct number for each configuration file a test writes.
fn config_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The `(actor, action, target, outcome)` of entries.
fn summary(entries: &[Value]) -> Vec<(String, String, String, String)> {
    entries
        .iter()
        .map(|entry| {
            let text = |key: &str| entry[key].as_str().unwrap().to_owned();
            (
                text("actor"),
                text("action"),
                text("target"),
                text("outcome"),
            )
        })
        .collect()
}

async fn admin_actions_through_the_api_are_audited_with_their_caller(backend: Backend) {
    let db = Db::new(backend).await;
    let store = shipfeed_store::open(&db.url).await.unwrap();
    // Nothing is delivered in this scenario: the push subscription's receiver is never
    // called (its driver is not started), only its state changes.
    let tables = format!(
        "{}{}[[subscription]]\nname = \"hooks\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/hook\"\n\
         secret_file = \"{}\"\n[[subscription]]\nname = \"audit\"\nkind = \"file\"\npath = \"{}\"\n",
        db.endpoints(&["sendcloud"]),
        db.tokens(),
        db.file("signing"),
        db.file("audit.jsonl"),
    );
    std::fs::write(
        db.file("signing"),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
    )
    .unwrap();
    let api = Running::start(&db, &store, &tables, false).await;
    let (entries, next) = api.audit("", Some(READ_TOKEN)).await;
    assert!(entries.is_empty() && next.is_null(), "{entries:?}");

    // A read token changes nothing and nothing is recorded of it.
    for action in ["pause", "resume", "redeliver"] {
        let (status, body) = api
            .post(
                &format!("/v1/subscriptions/{{name}}/{action}"),
                &format!("/v1/subscriptions/hooks/{action}"),
                Some(READ_TOKEN),
            )
            .await;
        assert_eq!(status, 403, "{action}: {body}");
    }
    assert!(api.audit("", Some(READ_TOKEN)).await.0.is_empty());

    let (status, paused) = api
        .post(
            "/v1/subscriptions/{name}/pause",
            "/v1/subscriptions/hooks/pause",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!((status, &paused["status"]), (200, &json!("paused")));
    let redeliver = "/v1/subscriptions/{name}/redeliver";
    let (status, _) = api
        .post(
            redeliver,
            "/v1/subscriptions/hooks/redeliver?since=2024-06-01T00:00:00Z",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .post(
            "/v1/subscriptions/{name}/resume",
            "/v1/subscriptions/hooks/resume",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 200);
    // Refused after the token check: recorded, as errors.
    let (status, _) = api
        .post(
            "/v1/subscriptions/{name}/pause",
            "/v1/subscriptions/nosuch/pause",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .post(
            redeliver,
            "/v1/subscriptions/audit/redeliver",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 409);
    // Refused before it ran (a `since` that is no time): nothing to record.
    let (status, _) = api
        .post(
            redeliver,
            "/v1/subscriptions/hooks/redeliver?since=yesterday",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 400);

    let (entries, next) = api.audit("", Some(READ_TOKEN)).await;
    assert!(next.is_null(), "one page: {next}");
    let operator = |action: &str, target: &str, outcome: &str| {
        (
            "operator".to_owned(),
            action.to_owned(),
            target.to_owned(),
            outcome.to_owned(),
        )
    };
    assert_eq!(
        summary(&entries),
        [
            operator("redeliver", "audit", "error"),
            operator("pause", "nosuch", "error"),
            operator("resume", "hooks", "ok"),
            operator("redeliver", "hooks", "ok"),
            operator("pause", "hooks", "ok"),
        ],
        "newest first"
    );
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    assert!(
        entries[0]["detail"]["error"]
            .as_str()
            .unwrap()
            .contains("kind \"file\""),
        "{}",
        entries[0]
    );
    assert_eq!(
        entries[1]["detail"]["error"],
        "no subscription `nosuch` is configured"
    );
    assert_eq!(
        entries[2]["detail"]["result"],
        json!({"status": "active", "reason": null, "version": 3}),
        "pause, redelivery, resume: each a change the driver reads"
    );
    assert_eq!(
        entries[3]["detail"],
        json!({"parameters": {"since": "2024-06-01T00:00:00Z"}, "result": {"redelivered": 0}})
    );
    assert_eq!(entries[4]["detail"]["result"]["status"], "paused");

    // Paged: `next` is the `before` of the next page, `null` after the last.
    let (page, next) = api.audit("?limit=2", Some(READ_TOKEN)).await;
    assert_eq!((page.len(), next.as_i64()), (2, Some(ids[1])));
    let (page, next) = api
        .audit(&format!("?limit=2&before={}", ids[1]), Some(READ_TOKEN))
        .await;
    assert_eq!(
        page.iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        ids[2..4]
    );
    let (page, next) = api
        .audit(&format!("?limit=2&before={}", next), Some(READ_TOKEN))
        .await;
    assert_eq!((page.len(), next), (1, Value::Null));
    assert_eq!(page[0]["id"].as_i64(), Some(ids[4]));

    // The route's own refusals.
    let (status, body) = api
        .call(
            reqwest::Method::GET,
            "/v1/audit",
            "/v1/audit?before=newest",
            Some(READ_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = api
        .call(reqwest::Method::GET, "/v1/audit", "/v1/audit", None, None)
        .await;
    assert_eq!(status, 401);
}

/// A Sendcloud delivery of the fixtures, as stored (appended, not verified again).
fn sendcloud(relative: &str, endpoint: &str) -> Arrival {
    let delivery: RawDelivery =
        shipfeed_testkit::load(&shipfeed_testkit::fixtures_dir().join(relative)).0;
    Arrival {
        endpoint: endpoint.to_owned(),
        provider: Provider::Sendcloud,
        delivery,
    }
}

async fn the_replay_route_recovers_a_dead_letter_after_a_fix(backend: Backend) {
    let db = Db::new(backend).await;
    let store = shipfeed_store::open(&db.url).await.unwrap();
    // Before the fix: deliveries for the endpoint `sendcloud-eu` are stored (say, by a
    // replica configured with it) while this service lacks it; its projector makes them dead
    // letters rather than guess their settings.
    let mut before = Running::start(
        &db,
        &store,
        &format!("{}{}", db.endpoints(&["sendcloud"]), db.tokens()),
        true,
    )
    .await;
    let seqs = before
        .service
        .inbox()
        .append(vec![
            sendcloud(
                "sendcloud/generated/v2-status-00011-delivered.json",
                "sendcloud",
            ),
            sendcloud("sendcloud/invalid/missing-parcel.json", "sendcloud"),
            sendcloud(
                "sendcloud/generated/v2-status-00001-announced.json",
                "sendcloud-eu",
            ),
        ])
        .await
        .unwrap();
    let [good, broken, moved] = [seqs[0], seqs[1], seqs[2]];
    for seq in [good, broken, moved] {
        support::projected(&before.base, seq, Some(READ_TOKEN)).await;
    }
    let (_, dead) = before
        .call(
            reqwest::Method::GET,
            "/v1/dead-letters",
            "/v1/dead-letters",
            Some(READ_TOKEN),
            None,
        )
        .await;
    assert_eq!(dead["dead_letters"].as_array().unwrap().len(), 2, "{dead}");

    // Admin scope only; bodies other than 1 to 1000 seqs are refused, saying why.
    let (status, _) = before
        .replay(json!({"seqs": [moved]}), Some(READ_TOKEN))
        .await;
    assert_eq!(status, 403);
    let many: Vec<i64> = (1..=1001).collect();
    for (body, says) in [
        (json!({"seqs": []}), "1 to 1000"),
        (json!({ "seqs": many }), "it names 1001"),
        (json!({"seq": [moved]}), "seqs"),
        (json!({"seqs": ["one"]}), "seqs"),
        (json!([moved]), "seqs"),
    ] {
        let (status, answer) = before.replay(body.clone(), Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{body}: {answer}"
        );
    }
    let response = reqwest::Client::new()
        .post(format!("{}/v1/dead-letters/replay", before.base))
        .bearer_auth(ADMIN_TOKEN)
        .body(format!("{{\"seqs\": [{moved}]}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400, "no JSON content type");
    let text = response.text().await.unwrap();
    assert!(text.contains("Content-Type: application/json"), "{text}");

    // Without the fix, the moved endpoint's delivery is left as it is.
    let (status, unfixed) = before
        .replay(json!({"seqs": [moved]}), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(status, 200, "{unfixed}");
    assert_eq!(unfixed["deliveries"][0]["outcome"], "skipped", "{unfixed}");
    assert!(
        unfixed["deliveries"][0]["error"]
            .as_str()
            .unwrap()
            .contains("`sendcloud-eu`"),
        "{unfixed}"
    );
    assert_eq!(unfixed["summary"]["skipped"], 1);

    // The fix: a service configured with the endpoint, on the same store, its API open (on
    // loopback, no token). The first one's projector stops first, so that a delivery
    // appended now waits for a projector (nothing is left to chance).
    before.stop_projector().await;
    let waiting = store
        .append(vec![sendcloud(
            "sendcloud/generated/v2-status-00011-delivered.json",
            "sendcloud",
        )])
        .await
        .unwrap()[0];
    let fixed = Running::start(
        &db,
        &store,
        &db.endpoints(&["sendcloud", "sendcloud-eu"]),
        false,
    )
    .await;
    let (status, report) = fixed
        .replay(
            json!({"seqs": [moved, 999_999, broken, good, waiting, moved]}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let outcomes: Vec<(i64, &str, bool)> = report["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["seq"].as_i64().unwrap(),
                d["outcome"].as_str().unwrap(),
                d["error"].is_string(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (good, "projected", false),
            (broken, "dead_letter", true),
            (moved, "recovered", false),
            (waiting, "pending", false),
            (999_999, "not_found", false),
        ],
        "each seq once, in seq order: {report}"
    );
    assert!(
        report["deliveries"][1]["error"]
            .as_str()
            .unwrap()
            .contains("parcel"),
        "{report}"
    );
    assert_eq!(
        [
            &report["summary"]["replayed"],
            &report["summary"]["recovered"],
            &report["summary"]["dead_letters"],
            &report["summary"]["new_events"],
        ],
        [&json!(3), &json!(1), &json!(1), &json!(1)],
        "{report}"
    );
    let (_, dead) = fixed
        .call(
            reqwest::Method::GET,
            "/v1/dead-letters",
            "/v1/dead-letters",
            None,
            None,
        )
        .await;
    let dead: Vec<i64> = dead["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["delivery_seq"].as_i64().unwrap())
        .collect();
    assert_eq!(dead, [broken], "the broken payload alone is left");
    let (_, recovered) = fixed
        .call(
            reqwest::Method::GET,
            "/v1/deliveries/{seq}",
            &format!("/v1/deliveries/{moved}"),
            None,
            None,
        )
        .await;
    assert_eq!(recovered["projection"]["dead_letter"], Value::Null);
    assert_eq!(
        recovered["projection"]["events"].as_array().unwrap().len(),
        1
    );
    assert!(!store.delivery(waiting).await.unwrap().unwrap().projected);

    // Both replays are in the audit log (the refused requests are not: they never ran),
    // with who asked, the deliveries, and counts and seqs by outcome, no error text.
    let (entries, _) = fixed.audit("", None).await;
    let target = format!("deliveries {good}-{waiting}, 999999");
    assert_eq!(
        summary(&entries),
        [
            (
                "anonymous".to_owned(),
                "replay".to_owned(),
                target,
                "ok".to_owned()
            ),
            (
                "operator".to_owned(),
                "replay".to_owned(),
                format!("deliveries {moved}"),
                "ok".to_owned()
            ),
        ]
    );
    let detail = &entries[0]["detail"];
    assert_eq!(
        detail["parameters"]["seqs"],
        json!([good, broken, moved, waiting, 999_999])
    );
    assert_eq!(
        detail["result"]["outcomes"],
        json!({
            "recovered": [moved],
            "projected": [good],
            "dead_letter": [broken],
            "pending": [waiting],
            "not_found": [999_999],
        })
    );
    assert_eq!(detail["result"]["recovered"], 1);
    assert!(!detail.to_string().contains("parcel"), "{detail}");
    assert_eq!(
        entries[1]["detail"]["result"]["skipped_endpoints"],
        json!({"sendcloud-eu": 1})
    );
}
