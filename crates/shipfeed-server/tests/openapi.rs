//! The OpenAPI document over real HTTP, on a service in-process on a free port with a real
//! SQLite store: `GET /openapi.json` serves the committed `schema/openapi.json` without a
//! token, its operations are exactly the router's routes (each one served, with its method),
//! its security says what the token check enforces, and real answers match its schemas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{assert_matches, response_validator};

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Value};
use shipfeed::Provider;
use shipfeed_server::{Config, Service};
use shipfeed_store::Arrival;
use shipfeed_testkit::FIXTURE_SECRET;

const READ_TOKEN: &str = "read-token-for-the-openapi-tests-1";

struct Running {
    base: String,
    service: Arc<Service>,
    _dir: tempfile::TempDir,
    /// Dropped with the test: the projector stops.
    _stop: tokio::sync::watch::Sender<bool>,
}

/// A service with a Sendcloud endpoint (the fixtures' secret) and, with `token`, one `read`
/// API token (then `/v1` needs it).
async fn start(token: bool) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{FIXTURE_SECRET}\n")).unwrap();
    let tokens = if token {
        let file = dir.path().join("read");
        std::fs::write(&file, format!("{READ_TOKEN}\n")).unwrap();
        format!(
            "[[api_token]]\nname = \"support\"\ntoken_file = \"{}\"\nscopes = [\"read\"]\n",
            file.display()
        )
    } else {
        String::new()
    };
    let path = dir.path().join("shipfeed.toml");
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
            store = dir.path().join("shipfeed.db").display(),
            secret = secret.display(),
        ),
    )
    .unwrap();
    let config = Config::load(Some(&path)).unwrap();
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
        _dir: dir,
        _stop: stop,
    }
}

fn committed() -> String {
    let path = shipfeed_testkit::schema::schema_dir().join("openapi.json");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The status and body of a request.
async fn call(method: reqwest::Method, url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The `(method, path)` of every operation in `document`.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

/// `path` with every `{parameter}` replaced by a value of its type.
fn sample(path: &str) -> String {
    path.replace("{endpoint}", "sendcloud")
        .replace("{seq}", "1")
        .replace("{carrier}", "dhl")
        .replace("{tracking}", "NOSUCHPARCEL")
        .replace("{event_id}", "no-such-event")
        .replace("{name}", "no-such-subscription")
}

#[test]
fn the_committed_document_is_the_generated_one_and_openapi_3_1() {
    let generated = shipfeed_server::openapi_document().unwrap();
    assert_eq!(
        committed(),
        generated,
        "schema/openapi.json is stale: run `cargo xtask fixtures` and commit"
    );
    let document: Value = serde_json::from_str(&generated).unwrap();
    let version = document["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "openapi = {version}");
    assert_eq!(
        document["components"]["securitySchemes"]["bearerAuth"],
        json!({"type": "http", "scheme": "bearer", "description": document["components"]["securitySchemes"]["bearerAuth"]["description"]})
    );
    // Every reference resolves within the document.
    let text = generated.as_str();
    for reference in text.split("\"$ref\": \"").skip(1) {
        let target = &reference[..reference.find('"').unwrap()];
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("remote $ref {target}"));
        assert!(
            document.pointer(pointer).is_some(),
            "dangling $ref {target}"
        );
    }
}

#[test]
fn the_document_lists_exactly_the_routes() {
    let document: Value =
        serde_json::from_str(&shipfeed_server::openapi_document().unwrap()).unwrap();
    let routes: BTreeSet<(String, String)> = shipfeed_server::api_routes()
        .into_iter()
        .map(|(method, path)| (method.to_owned(), path.to_owned()))
        .collect();
    assert_eq!(operations(&document), routes);
    assert_eq!(
        routes.len(),
        shipfeed_server::api_routes().len(),
        "a route listed twice"
    );
    for expected in [
        ("POST", "/webhooks/{endpoint}"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/v1/events"),
        ("GET", "/v1/dead-letters/{seq}/body"),
        ("GET", "/v1/subscriptions"),
        ("GET", "/v1/subscriptions/{name}/messages"),
        ("POST", "/v1/subscriptions/{name}/pause"),
        ("POST", "/v1/subscriptions/{name}/resume"),
        ("POST", "/v1/subscriptions/{name}/redeliver"),
        ("POST", "/v1/dead-letters/replay"),
        ("GET", "/v1/audit"),
    ] {
        assert!(
            routes.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} missing"
        );
    }
    // Security as the token check enforces it: /v1 needs a bearer token of a scope (admin
    // for the dead letters' bodies and whatever changes state, and said so), answering 401
    // and 403; the rest none, but /metrics when protected.
    for (method, path) in &routes {
        let operation = &document["paths"][path][method.to_lowercase()];
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.contains_key("200"), "{method} {path}: no 200");
        if path.starts_with("/v1/") {
            let scope = if path.ends_with("/body") || method != "GET" {
                "admin"
            } else {
                "read"
            };
            assert_eq!(
                operation["security"],
                json!([{"bearerAuth": [scope]}]),
                "{method} {path}"
            );
            assert!(
                responses.contains_key("401") && responses.contains_key("403"),
                "{path}"
            );
            let description = operation["description"].as_str().unwrap();
            let said = if scope == "admin" {
                "**Admin scope**"
            } else {
                "Needs a `read` token"
            };
            assert!(description.contains(said), "{path}: {description}");
        } else if path == "/metrics" {
            assert_eq!(operation["security"], json!([{}, {"bearerAuth": ["read"]}]));
        } else {
            assert!(operation.get("security").is_none(), "{method} {path}");
        }
    }
    let webhook = &document["paths"]["/webhooks/{endpoint}"]["post"]["responses"];
    for status in ["200", "401", "404", "413", "500", "503"] {
        assert!(webhook.get(status).is_some(), "webhook: no {status}");
    }
    let events = &document["paths"]["/v1/events"]["get"]["parameters"];
    let names: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["after", "limit", "provider", "status", "carrier", "type"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_the_document_is_served_with_its_method() {
    let running = start(false).await;
    for (method, path) in shipfeed_server::api_routes() {
        let url = format!("{}{}", running.base, sample(path));
        let verb = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (status, body) = call(verb, &url, None).await;
        // Not the router's 404 for paths it does not have (empty outside /v1, "no such
        // route" inside), nor its 405 for a method the path does not take.
        assert!(
            !(status == 404 && (body.is_empty() || body.contains("no such route")))
                && status != 405,
            "{method} {path}: {status} {body}"
        );
        let other = if method == "GET" {
            reqwest::Method::POST
        } else {
            reqwest::Method::GET
        };
        let (status, body) = call(other.clone(), &url, None).await;
        assert_eq!(status, 405, "{other} {path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_served_without_a_token_and_real_answers_match_it() {
    let running = start(true).await;
    let base = &running.base;
    let (status, served) = call(reqwest::Method::GET, &format!("{base}/openapi.json"), None).await;
    assert_eq!(status, 200, "{served}");
    assert_eq!(
        served,
        committed(),
        "the served document is the committed one"
    );
    let document: Value = serde_json::from_str(&served).unwrap();
    let token = Some(READ_TOKEN);
    // The validation is not vacuous: answers of another shape fail.
    let events = response_validator(&document, "get", "/v1/events", 200);
    assert!(events.is_valid(&json!({"events": [], "next_cursor": 0})));
    for wrong in [
        json!({"events": [{"seq": 1, "type": "nonsense"}], "next_cursor": 1}),
        json!({"events": [], "next_cursor": "0"}),
        json!({"next_cursor": 0}),
    ] {
        assert!(!events.is_valid(&wrong), "{wrong}");
    }

    // A real signed delivery, and its answer.
    let fixture =
        shipfeed_testkit::fixtures_dir().join("sendcloud/generated/v2-status-00011-delivered.json");
    let delivery = shipfeed_testkit::load(&fixture).0;
    let mut request = reqwest::Client::new()
        .post(format!("{base}/webhooks/sendcloud"))
        .body(delivery.body.clone());
    for (name, value) in delivery.headers.iter() {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let answer = response.text().await.unwrap();
    assert_matches(&document, "post", "/webhooks/{endpoint}", 200, &answer);
    let seq = serde_json::from_str::<Value>(&answer).unwrap()["delivery_seq"]
        .as_i64()
        .unwrap();
    // Not authentic: 401, of the error schema.
    let (status, body) = call(
        reqwest::Method::POST,
        &format!("{base}/webhooks/sendcloud"),
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert_matches(&document, "post", "/webhooks/{endpoint}", 401, &body);

    // Wait for the projection (and make a dead letter: an endpoint no longer configured).
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
    let (_, projected) = call(
        reqwest::Method::GET,
        &format!("{base}/v1/deliveries/{seq}"),
        token,
    )
    .await;
    let projected: Value = serde_json::from_str(&projected).unwrap();
    let event_id = projected["projection"]["events"][0]
        .as_str()
        .unwrap()
        .to_owned();

    for (template, url) in [
        ("/v1/events", "/v1/events?after=0&limit=10".to_owned()),
        ("/v1/deliveries/{seq}", format!("/v1/deliveries/{seq}")),
        ("/v1/deliveries/{seq}", format!("/v1/deliveries/{dead}")),
        (
            "/v1/shipments/{tracking}",
            "/v1/shipments/MR5798718423".to_owned(),
        ),
        (
            "/v1/shipments/{carrier}/{tracking}",
            "/v1/shipments/mondial_relay/MR5798718423".to_owned(),
        ),
        ("/v1/dead-letters", "/v1/dead-letters".to_owned()),
        ("/v1/alerts", "/v1/alerts".to_owned()),
        (
            "/v1/events/{event_id}/revisions",
            format!("/v1/events/{event_id}/revisions"),
        ),
        ("/v1/drift", "/v1/drift".to_owned()),
        ("/v1/drift", "/v1/drift?provider=sendcloud".to_owned()),
        ("/v1/search", "/v1/search?q=mr5798718423".to_owned()),
        ("/v1/search", "/v1/search?q=ORD-50007".to_owned()),
        ("/v1/status", "/v1/status".to_owned()),
    ] {
        let (status, body) = call(reqwest::Method::GET, &format!("{base}{url}"), token).await;
        assert_eq!(status, 200, "{url}: {body}");
        assert_matches(&document, "get", template, 200, &body);
    }
    // The feed holds the event and its shipment's state.
    let (_, feed) = call(reqwest::Method::GET, &format!("{base}/v1/events"), token).await;
    let feed: Value = serde_json::from_str(&feed).unwrap();
    assert!(feed["events"].as_array().unwrap().len() >= 2, "{feed}");

    // Errors: of the error schema, under the statuses the document gives.
    for (template, url, expected) in [
        (
            "/v1/shipments/{tracking}",
            "/v1/shipments/NOSUCHPARCEL",
            404,
        ),
        ("/v1/deliveries/{seq}", "/v1/deliveries/999999", 404),
        ("/v1/drift", "/v1/drift?provider=nosuch", 400),
        ("/v1/search", "/v1/search?q=NOSUCHPARCEL", 404),
        ("/v1/search", "/v1/search?q=%20", 400),
    ] {
        let (status, body) = call(reqwest::Method::GET, &format!("{base}{url}"), token).await;
        assert_eq!(status, expected, "{url}: {body}");
        assert_matches(&document, "get", template, expected, &body);
    }
    let (status, body) = call(reqwest::Method::GET, &format!("{base}/v1/events"), None).await;
    assert_eq!(status, 401);
    assert_matches(&document, "get", "/v1/events", 401, &body);
}
