//! The operator console in a real browser: Debian's Chromium driven through its ChromeDriver
//! by a WebDriver client, against the real `shipfeed serve` on SQLite. A support agent with a
//! `read` token signs in, finds a parcel by a sloppily typed tracking number and by its order
//! number, and opens a dead letter without seeing its raw body; an on-call engineer with an
//! `admin` token sees the body, replays the dead letter and sees it recovered, pauses and
//! resumes a subscription, and finds all of it in the audit log.
//!
//! `cargo xtask ci` installs `chromium` and `chromium-driver`; without them this test fails
//! and says so. With `SHIPFEED_SCREENSHOTS=<dir>` it saves a screenshot of each main page
//! there (`cargo xtask screenshots` refreshes the README's).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use shipfeed::{Provider, RawDelivery};
use shipfeed_store::{Arrival, Normalized, PROJECTOR};
use shipfeed_testkit::webhook_receiver::{generate_secret, WebhookReceiver};
use support::{
    client, delivery_seq, free_port, post, sendcloud_status, tracking_number, Backend, Server,
    TestStore, API_TOKEN,
};

const READ_TOKEN: &str = "support-read-token-not-a-secret-01";
const PARCEL: u64 = 4_242_001;
/// The order number the fixture's parcels carry.
const ORDER: &str = "ORD-50007";

/// A ChromeDriver on a free port, stopped when dropped.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    async fn start() -> ChromeDriver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "chromedriver is needed by the console's browser test and did not start \
                     ({error}): `cargo xtask ci` installs it, or `apt-get install chromium \
                     chromium-driver`"
                )
            });
        let url = format!("http://127.0.0.1:{port}");
        let http = client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = http.get(format!("{url}/status")).send().await {
                if response.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver not ready in 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ChromeDriver { child, url }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &ChromeDriver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1360,900"],
        }),
    );
    // chromedriver listens on loopback, in plain HTTP.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session from chromedriver")
}

/// Waits (WebDriver's own polling, with its guard deadline) for what `css` selects.
async fn element(browser: &Client, css: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("`{css}` did not appear: {error}"))
}

/// Waits for an element `xpath` selects (e.g. one whose text has changed).
async fn element_x(browser: &Client, xpath: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::XPath(xpath))
        .await
        .unwrap_or_else(|error| panic!("`{xpath}` did not appear: {error}"))
}

async fn absent(browser: &Client, css: &str) -> bool {
    browser
        .find_all(Locator::Css(css))
        .await
        .unwrap()
        .is_empty()
}

async fn screenshot(browser: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("SHIPFEED_SCREENSHOTS") {
        let png = browser.screenshot().await.unwrap();
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

async fn sign_in(browser: &Client, base: &str, token: &str) {
    browser.goto(&format!("{base}/")).await.unwrap();
    element(browser, "#sign-in #token")
        .await
        .send_keys(token)
        .await
        .unwrap();
    element(browser, "#sign-in button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    element(browser, "#who-name").await;
}

async fn sign_out(browser: &Client) {
    element(browser, "#sign-out").await.click().await.unwrap();
    element(browser, "#sign-in #token").await;
}

/// An API request with the admin token (the test's own checks, beside the browser's).
async fn api(method: reqwest::Method, url: String) -> (u16, Value) {
    let response = client()
        .request(method, url)
        .bearer_auth(API_TOKEN.1)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn wait_projected(base: &str, seq: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, answer) =
            api(reqwest::Method::GET, format!("{base}/v1/deliveries/{seq}")).await;
        if status == 200 && answer["projected"] == json!(true) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "delivery {seq} not projected: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stores a valid Sendcloud delivery as the dead letter an older build made of it (the same
/// as `tests/service.rs` does), with the server stopped: the replay of this build recovers it.
async fn older_builds_dead_letter(store: &TestStore, parcel: u64) -> i64 {
    let good = sendcloud_status(parcel, (11, "Delivered"), 1_712_188_388_908);
    let stored = shipfeed_store::open(&store.url).await.unwrap();
    let seqs = stored
        .append(vec![Arrival {
            endpoint: "sendcloud".into(),
            provider: Provider::Sendcloud,
            delivery: RawDelivery {
                body: good.body.clone(),
                headers: good.headers.iter().cloned().collect(),
                received_at: chrono::Utc::now(),
            },
        }])
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let older_build = stored
        .take_over_lease(PROJECTOR, "older-build", now, chrono::TimeDelta::minutes(1))
        .await
        .unwrap();
    stored
        .project(
            &older_build,
            Some((PROJECTOR, seqs[0])),
            vec![Normalized {
                delivery_seq: seqs[0],
                provider: Provider::Sendcloud,
                outcome: Err(shipfeed::Error::new(
                    shipfeed::ErrorKind::Payload,
                    "unknown status 11 (an older build)",
                )
                .with_path("parcel.status.id")),
                drift: None,
            }],
        )
        .await
        .unwrap();
    stored
        .release_lease(PROJECTOR, older_build.epoch, now)
        .await
        .unwrap();
    seqs[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_and_on_call_use_the_console_in_a_real_browser() {
    let driver = ChromeDriver::start().await;
    let store = TestStore::new(Backend::Sqlite);
    let secret = generate_secret(15);
    let receiver = WebhookReceiver::start(&secret).await;
    let secret_file = Server::scratch_file(&store, "push.secret");
    std::fs::write(&secret_file, &secret).unwrap();
    let read_token_file = Server::scratch_file(&store, "read.token");
    std::fs::write(&read_token_file, READ_TOKEN).unwrap();
    let extra = format!(
        "[[api_token]]\nname = \"oncall\"\ntoken_env = \"{}\"\nscopes = [\"admin\"]\n\
         [[api_token]]\nname = \"support\"\ntoken_file = \"{}\"\nscopes = [\"read\"]\n\
         [[subscription]]\nname = \"orders\"\nkind = \"http\"\nurl = \"{}\"\n\
         secret_file = \"{}\"\nstart = \"beginning\"\n",
        API_TOKEN.0,
        read_token_file.display(),
        receiver.url(),
        secret_file.display()
    );
    let mut server = Server::start(&store, &extra).await;
    let http = client();
    let mut last = 0;
    for (status, at) in [
        ((1000, "Ready to send"), 1_712_100_000_000),
        ((3, "En route to sorting center"), 1_712_150_000_000),
        ((11, "Delivered"), 1_712_188_288_908),
    ] {
        let (code, answer) = post(&http, &server.base, &sendcloud_status(PARCEL, status, at))
            .await
            .unwrap();
        assert_eq!(code, 200, "{answer}");
        last = delivery_seq(&answer);
    }
    wait_projected(&server.base, last).await;
    server.stop();
    let dead_seq = older_builds_dead_letter(&store, PARCEL + 1).await;
    let server = server.restart().await;
    let base = server.base.clone();
    let (_, dead) = api(reqwest::Method::GET, format!("{base}/v1/dead-letters")).await;
    assert_eq!(dead["dead_letters"][0]["delivery_seq"], dead_seq, "{dead}");

    let browser = browser(&driver).await;

    // Support, with a read token.
    browser.goto(&format!("{base}/")).await.unwrap();
    screenshot(&browser, "sign-in").await;
    sign_in(&browser, &base, READ_TOKEN).await;
    let who = element(&browser, "#who-name").await.text().await.unwrap();
    assert!(who.contains("support") && who.contains("read"), "{who}");
    // The tracking number as an agent reads it off a label: lower case, spaced.
    let tracking = tracking_number(PARCEL);
    let typed = format!(
        " {} {} ",
        tracking[..5].to_lowercase(),
        tracking[5..].to_lowercase()
    );
    element(&browser, "#search #q")
        .await
        .send_keys(&typed)
        .await
        .unwrap();
    element(&browser, "#search button")
        .await
        .click()
        .await
        .unwrap();
    let card = element(&browser, "#results section.shipment").await;
    let text = card.text().await.unwrap();
    assert!(text.contains(&tracking), "{text}");
    assert!(text.contains("delivered"), "{text}");
    assert!(text.contains(ORDER), "the order number is shown: {text}");
    let rows = browser
        .find_all(Locator::Css("#results tr.event"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "the whole timeline: {text}");
    let first = rows[0].text().await.unwrap();
    assert!(
        first.contains("sendcloud") && first.contains("1000"),
        "{first}"
    );
    // Its history: the revisions of the event.
    rows[2]
        .find(Locator::Css("button.history"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let history = element(&browser, "#results tr.event .revisions li")
        .await
        .text()
        .await
        .unwrap();
    assert!(history.contains("rev 1"), "{history}");
    screenshot(&browser, "shipment").await;

    // By order number: the delivered parcel's shipment again (the dead letter's parcel has
    // no events yet).
    browser
        .goto(&format!("{base}/#/shipments?q={}", ORDER.to_lowercase()))
        .await
        .unwrap();
    let found = element(&browser, "#results section.shipment h2")
        .await
        .text()
        .await
        .unwrap();
    assert!(found.contains(&tracking), "{found}");

    // A dead letter: its error, not its body.
    browser
        .goto(&format!("{base}/#/dead-letters?seq={dead_seq}"))
        .await
        .unwrap();
    let error = element(&browser, "#dead-letter-error")
        .await
        .text()
        .await
        .unwrap();
    assert!(error.contains("unknown status 11"), "{error}");
    let path = element(&browser, "#dead-letter-path code")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(path, "parcel.status.id");
    element(&browser, "#no-body").await;
    assert!(absent(&browser, "#raw-body").await);
    assert!(!element(&browser, "#replay-selected")
        .await
        .is_displayed()
        .await
        .unwrap());
    let page = browser.source().await.unwrap();
    assert!(
        !page.contains("jurgen@example.com") && !page.contains("Hauptstra"),
        "a read token's page shows no raw body"
    );
    sign_out(&browser).await;

    // On call, with an admin token.
    sign_in(&browser, &base, API_TOKEN.1).await;
    browser
        .goto(&format!("{base}/#/dead-letters?seq={dead_seq}"))
        .await
        .unwrap();
    let raw = element(&browser, "#raw-body").await.text().await.unwrap();
    assert!(
        raw.contains("\"parcel\": {") && raw.contains("jurgen@example.com"),
        "pretty-printed raw body: {raw}"
    );
    screenshot(&browser, "dead-letter").await;
    element(&browser, "#replay-one")
        .await
        .click()
        .await
        .unwrap();
    let outcome = element(&browser, "#replay-outcomes li")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(outcome, format!("#{dead_seq}: recovered"));
    element_x(
        &browser,
        "//*[@id='delivery-state'][contains(., 'projected')]",
    )
    .await;
    assert!(
        absent(
            &browser,
            &format!("#dead-letters tr[data-seq='{dead_seq}']")
        )
        .await
    );
    let (_, dead) = api(reqwest::Method::GET, format!("{base}/v1/dead-letters")).await;
    assert_eq!(dead["dead_letters"], json!([]), "{dead}");

    // Pause and resume the push subscription.
    browser
        .goto(&format!("{base}/#/subscriptions"))
        .await
        .unwrap();
    element(
        &browser,
        "#subscriptions tr[data-name='orders'] button.pause",
    )
    .await
    .click()
    .await
    .unwrap();
    element_x(
        &browser,
        "//tr[@data-name='orders']/td[contains(@class,'status')][contains(., 'paused')]",
    )
    .await;
    let (_, listed) = api(reqwest::Method::GET, format!("{base}/v1/subscriptions")).await;
    assert_eq!(listed["subscriptions"][0]["status"], "paused", "{listed}");
    screenshot(&browser, "subscriptions").await;
    element(
        &browser,
        "#subscriptions tr[data-name='orders'] button.resume",
    )
    .await
    .click()
    .await
    .unwrap();
    element_x(
        &browser,
        "//tr[@data-name='orders']/td[contains(@class,'status')][contains(., 'active')]",
    )
    .await;

    // Health, and the audit log of what was done.
    browser.goto(&format!("{base}/#/health")).await.unwrap();
    element(&browser, "#projector-lag").await;
    screenshot(&browser, "health").await;
    browser.goto(&format!("{base}/#/audit")).await.unwrap();
    let audit = element(&browser, "#audit").await.text().await.unwrap();
    for action in ["replay", "pause", "resume"] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
    assert!(audit.contains("oncall"), "{audit}");
    screenshot(&browser, "audit").await;

    browser.close().await.unwrap();
}
