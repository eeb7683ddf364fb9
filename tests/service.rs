//! End-to-end: the real `shipfeed serve` binary on a free port, driven over HTTP (and SQS for
//! Seven Senders), on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use serde_json::{json, Value};
use shipfeed::{ErrorKind, Provider, RawDelivery};
use shipfeed_store::{Arrival, Normalized, PROJECTOR};
use shipfeed_testkit::schema::Schema;
use support::moto::Moto;
use support::recorder::Recorder;
use support::{
    assert_feed_consistent, client, feed, feed_items, fixture_delivery, get, happycolis_signed,
    metric, post, post_projected, sendcloud_signed, sendcloud_status, tracking_number, Backend,
    Server, TestStore,
};

/// Runs one scenario on SQLite and on PostgreSQL, as two tests.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await;
            }
        }
    )*};
}

on_both_stores!(
    all_four_providers_reach_the_feed_and_the_shipment_api,
    the_same_delivery_ten_times_is_one_set_of_events,
    shuffled_deliveries_end_in_the_same_state_as_ordered_ones,
    resent_happycolis_histories_put_each_event_in_the_feed_once,
    failed_authentication_is_401_and_stores_nothing,
    a_malformed_authentic_body_is_a_dead_letter_that_replay_recovers_after_a_fix,
    an_oversize_body_is_413_and_stores_nothing,
    odd_input_never_gets_a_server_error,
    new_events_reach_the_json_lines_file_sink_once,
    new_events_reach_the_stdout_sink_as_feed_items,
    new_events_are_published_to_nats_jetstream_once,
    named_subscriptions_each_write_every_event_once,
    shipups_probe_is_answered_without_credentials_and_stores_nothing,
    one_parcel_is_one_timeline_whatever_the_provider_or_spelling,
    a_stalled_parcel_is_alerted_and_its_next_event_clears_the_alert,
    drift_counts_each_distinct_delivery_once,
    the_pull_feed_filters_and_a_revision_reaches_whoever_got_the_first,
    an_http_subscription_is_operated_from_the_command_line_without_a_restart,
);

/// A Seven Senders message body (the SQS feed's shape).
fn sevensenders_body() -> String {
    std::fs::read_to_string(support::fixture(
        "sevensenders/generated/status-delivered-upper.json",
    ))
    .unwrap()
}

async fn all_four_providers_reach_the_feed_and_the_shipment_api(backend: Backend) {
    let moto = Moto::start();
    // The server pulls through a recorder, which sees moto confirm the delete.
    let recorder = Recorder::start(&moto.endpoint);
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-central-1"))
            .credentials_provider(Credentials::new("7s-e2e-key", "", None, None, "e2e"))
            .endpoint_url(&moto.endpoint)
            .build(),
    );
    let queue = sqs
        .create_queue()
        .queue_name("sevensenders-e2e")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let message_id = sqs
        .send_message()
        .queue_url(&queue)
        .message_body(sevensenders_body())
        .send()
        .await
        .unwrap()
        .message_id
        .unwrap();

    let store = TestStore::new(backend);
    let server = Server::start(
        &store,
        &format!(
            r#"[[sqs_source]]
name = "sevensenders"
queue_url = "{queue}"
endpoint_url = "{}"
region = "eu-central-1"
api_key_env = "SHIPFEED_SEVENSENDERS_API_KEY"
wait_time_seconds = 1
"#,
            recorder.endpoint
        ),
    )
    .await;
    let http = client();
    for delivery in [
        fixture_delivery(
            "sendcloud",
            "sendcloud/generated/v2-status-00011-delivered.json",
        ),
        fixture_delivery("happycolis", "happycolis/generated/shipment-delivered.json"),
        fixture_delivery("shipup", "shipup/generated/events-new-delivered.json"),
    ] {
        let (status, answer) = post_projected(&http, &server.base, &delivery).await;
        assert_eq!(status, 200, "{}: {answer}", delivery.endpoint);
        assert_eq!(answer["projection"]["dead_letter"], Value::Null, "{answer}");
        assert!(
            !answer["projection"]["events"]
                .as_array()
                .unwrap()
                .is_empty(),
            "{answer}"
        );
    }

    // Seven Senders arrives through the queue; wait for it, then the queue must be empty.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let events = loop {
        let events = feed(&http, &server.base).await;
        let providers: BTreeSet<String> = events
            .iter()
            .map(|(_, e)| e["provider"].as_str().unwrap().to_owned())
            .collect();
        if providers.len() == 4 {
            break events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "providers in the feed: {providers:?}\n{}",
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_feed_consistent(&events);
    // The message is deleted after its commit (moto's queue counters are approximate; the
    // recorder saw moto's answer to the delete).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !recorder.deleted().contains(&message_id) {
        assert!(
            std::time::Instant::now() < deadline,
            "message {message_id} not deleted; the recorder saw {:?}\n{}",
            recorder.events(),
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The Sendcloud parcel by carrier + tracking number, and by tracking number alone.
    let (status, by_carrier) = get(
        &http,
        &format!("{}/v1/shipments/mondial_relay/MR5798718423", server.base),
    )
    .await;
    assert_eq!(status, 200, "{by_carrier}");
    let shipment = &by_carrier["shipments"][0];
    assert_eq!(shipment["state"]["status"], "delivered", "{shipment}");
    assert_eq!(shipment["timeline"].as_array().unwrap().len(), 1);
    let (status, by_tracking) =
        get(&http, &format!("{}/v1/shipments/MR5798718423", server.base)).await;
    assert_eq!(status, 200);
    assert_eq!(by_tracking, by_carrier);
    let (status, _) = get(
        &http,
        &format!("{}/v1/shipments/dhl/MR5798718423", server.base),
    )
    .await;
    assert_eq!(
        status, 404,
        "another carrier's parcel with that number does not exist"
    );

    let metrics = support::metrics_text(&http, &server.base).await;
    for provider in ["sendcloud", "happycolis", "shipup", "sevensenders"] {
        assert!(
            metrics.contains(&format!("provider=\"{provider}\",outcome=\"stored\"")),
            "{provider} deliveries counted:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("shipfeed_inbox_append_seconds_bucket"),
        "{metrics}"
    );
}

async fn the_same_delivery_ten_times_is_one_set_of_events(backend: Backend) {
    let store = TestStore::new(backend);
    let server = Server::start(&store, "").await;
    let http = client();
    let delivery = sendcloud_status(501, (11, "Delivered"), 1_712_188_288_908);
    for attempt in 0..10 {
        let (status, answer) = post_projected(&http, &server.base, &delivery).await;
        assert_eq!(status, 200, "{answer}");
        let expected_new = usize::from(attempt == 0);
        let projection = &answer["projection"];
        assert_eq!(
            projection["events"].as_array().unwrap().len(),
            expected_new,
            "{answer}"
        );
        assert_eq!(
            projection["duplicates"].as_array().unwrap().len(),
            1 - expected_new
        );
    }
    let events = feed(&http, &server.base).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        metric(
            &http,
            &server.base,
            "shipfeed_duplicate_events_total{provider=\"sendcloud\"}"
        )
        .await,
        9
    );
    assert_eq!(
        metric(
            &http,
            &server.base,
            "shipfeed_deliveries_total{endpoint=\"sendcloud\",provider=\"sendcloud\",outcome=\"accepted\"}"
        )
        .await,
        10,
        "every delivery is stored raw, even a duplicate"
    );
}

/// A Sendcloud parcel announced before its label, then labelled, then reported by Shipup under
/// a lower-case, spaced spelling of its number: one shipment with the whole timeline. The same
/// number under another carrier stays another shipment.
async fn one_parcel_is_one_timeline_whatever_the_provider_or_spelling(backend: Backend) {
    let store = TestStore::new(backend);
    let server = Server::start(&store, "").await;
    let http = client();
    let parcel = support::unique_parcel_base();
    let number = tracking_number(parcel);
    let sendcloud = |tracking: &str, carrier: &str, status: (u32, &str), at_ms: i64| {
        let mut delivery = sendcloud_status(parcel, status, at_ms);
        let mut body: Value = serde_json::from_slice(&delivery.body).unwrap();
        body["parcel"]["tracking_number"] = json!(tracking);
        body["parcel"]["carrier"]["code"] = json!(carrier);
        delivery = sendcloud_signed(serde_json::to_vec(&body).unwrap());
        delivery
    };
    let mut shipup = fixture_delivery("shipup", "shipup/generated/events-new-delivered.json");
    let mut body: Value = serde_json::from_slice(&shipup.body).unwrap();
    let spaced = format!("{} {}", &number[..4], &number[4..]).to_lowercase();
    body["data"]["object"]["tracking_number"] = json!(spaced);
    body["data"]["object"]["carrier"]["code"] = json!("postnl");
    body["data"]["object"]["carrier_code"] = json!("postnl");
    shipup.body = serde_json::to_vec(&body).unwrap();

    for delivery in [
        sendcloud("", "postnl", (1, "Announced"), 1_712_000_000_000),
        sendcloud(
            &number,
            "postnl",
            (3, "En route to sorting center"),
            1_712_100_000_000,
        ),
        shipup,
        // Carriers recycle numbers: the same one under DHL is another parcel.
        sendcloud(&number, "dhl", (11, "Delivered"), 1_712_300_000_000),
    ] {
        let (status, answer) = post_projected(&http, &server.base, &delivery).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["projection"]["dead_letter"], Value::Null, "{answer}");
    }

    let lookup = format!(
        "{}/v1/shipments/{}",
        server.base,
        spaced.replace(' ', "%20")
    );
    let (status, answer) = get(&http, &lookup).await;
    assert_eq!(status, 200, "{answer}");
    let shipments = answer["shipments"].as_array().unwrap();
    let found: Vec<(String, usize)> = shipments
        .iter()
        .map(|shipment| {
            (
                shipment["key"].as_str().unwrap().to_owned(),
                shipment["timeline"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (format!("dhl:{number}"), 1),
            // Sendcloud's announcement and label event, and Shipup's five events.
            (format!("postnl:{number}"), 7),
        ],
        "{answer}"
    );
    let providers: BTreeSet<&str> = shipments[1]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["provider"].as_str().unwrap())
        .collect();
    assert_eq!(providers, BTreeSet::from(["sendcloud", "shipup"]));
    assert!(
        shipments[1]["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .all(|event| event["shipment"]["tracking_number"].is_string()),
        "the announcement was moved under the parcel with its number: {answer}"
    );
    // Each version of an event once; the announcement twice: as stored, then moved.
    let versions: Vec<(String, i64)> = feed(&http, &server.base)
        .await
        .into_iter()
        .map(|(_, item)| {
            (
                item["event_id"].as_str().unwrap().to_owned(),
                item["revision"].as_i64().unwrap(),
            )
        })
        .collect();
    let unique: BTreeSet<&(String, i64)> = versions.iter().collect();
    assert_eq!(unique.len(), versions.len(), "{versions:?}");
    assert_eq!(versions.len(), 8 + 1, "{versions:?}");
    assert!(
        versions.iter().any(|(_, revision)| *revision == 2),
        "{versions:?}"
    );
}

/// Five steps of one parcel's life.
const LIFE: [(u32, &str); 5] = [
    (1, "Announced"),
    (3, "En route to sorting center"),
    (91, "Parcel en route"),
    (92, "Driver en route"),
    (11, "Delivered"),
];

async fn shuffled_deliveries_end_in_the_same_state_as_ordered_ones(backend: Backend) {
    let store = TestStore::new(backend);
    let server = Server::start(&store, "").await;
    let http = client();
    let start_ms = 1_712_000_000_000;
    let at = |step: usize| start_ms + step as i64 * 3_600_000;
    // Parcel 601 in order; parcel 602 in every rotation-and-reversal order we try.
    for (step, status) in LIFE.iter().enumerate() {
        let (code, _) = post_projected(
            &http,
            &server.base,
            &sendcloud_status(601, *status, at(step)),
        )
        .await;
        assert_eq!(code, 200);
    }
    let shuffled = [4, 0, 2, 1, 3];
    for step in shuffled {
        let (code, _) = post_projected(
            &http,
            &server.base,
            &sendcloud_status(602, LIFE[step], at(step)),
        )
        .await;
        assert_eq!(code, 200);
        // After the final event arrives first, nothing later may regress the state.
        let (_, view) = get(
            &http,
            &format!("{}/v1/shipments/{}", server.base, tracking_number(602)),
        )
        .await;
        assert_eq!(
            view["shipments"][0]["state"]["status"], "delivered",
            "{view}"
        );
    }
    let state_of = |view: &Value| {
        let shipment = &view["shipments"][0];
        let timeline: Vec<Value> = shipment["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| json!([e["status"], e["substatus"], e["occurred_at"]]))
            .collect();
        let mut state = shipment["state"].clone();
        // Event ids embed the parcel; everything else about the state must be equal.
        if let Some(state) = state.as_object_mut() {
            state.remove("last_event_id");
            state.remove("status_event_id");
        }
        (state, timeline)
    };
    let (_, ordered) = get(
        &http,
        &format!("{}/v1/shipments/{}", server.base, tracking_number(601)),
    )
    .await;
    let (_, shuffled) = get(
        &http,
        &format!("{}/v1/shipments/{}", server.base, tracking_number(602)),
    )
    .await;
    assert_eq!(state_of(&ordered), state_of(&shuffled));
    assert_eq!(state_of(&ordered).1.len(), LIFE.len());
}

async fn resent_happycolis_histories_put_each_event_in_the_feed_once(backend: Backend) {
    let store = TestStore::new(backend);
    let server = Server::start(&store, "").await;
    let http = client();
    let three = fixture_delivery("happycolis", "happycolis/generated/shipment-history-3.json");
    let four = fixture_delivery("happycolis", "happycolis/generated/shipment-history-4.json");
    let mut new_events = Vec::new();
    for delivery in [&three, &four, &three, &four, &four] {
        let (status, answer) = post_projected(&http, &server.base, delivery).await;
        assert_eq!(status, 200, "{answer}");
        new_events.push(answer["projection"]["events"].as_array().unwrap().len());
    }
    assert_eq!(new_events, [3, 1, 0, 0, 0]);
    let events = feed(&http, &server.base).await;
    assert_feed_consistent(&events);
    assert_eq!(events.len(), 4);
}

async fn failed_authentication_is_401_and_stores_nothing(backend: Backend) {
    let store = TestStore::new(backend);
    let server = Server::start(&store, "").await;
    let http = client();
    let mut shipup_wrong_password =
        fixture_delivery("shipup", "shipup/generated/events-new-delivered.json");
    shipup_wrong_password.headers = vec![(
        "Authorization".into(),
        "Basic c2hpcHVwOndyb25n".into(), // shipup:wrong
    )];
    let mut sendcloud_unsigned = sendcloud_status(701, (11, "Delivered"), 1_712_000_000_000);
    sendcloud_unsigned.headers.clear();
    let mut happycolis_tampered =
        fixture_delivery("happycolis", "happycolis/generated/shipment-delivered.json");
    happycolis_tampered.body.extend_from_slice(b" ");
    for delivery in [
        fixture_delivery("sendcloud", "sendcloud/generated/auth-tampered-body.json"),
        sendcloud_unsigned,
        happycolis_tampered,
        shipup_wrong_password,
    ] {
        let (status, answer) = post(&http, &server.base, &delivery).await.unwrap();
        assert_eq!(status, 401, "{}: {answer}", delivery.endpoint);
        assert!(answer["error"].as_str().is_some(), "{answer}");
    }
    let (status, _) = post(
        &http,
        &server.base,
        &support::Delivery {
            endpoint: "nowhere",
            headers: vec![],
            body: b"{}".to_vec(),
        },
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
    assert!(feed(&http, &server.base).await.is_empty());
    let (_, dead) = get(&http, &format!("{}/v1/dead-letters", server.base)).await;
    assert_eq!(dead["dead_letters"], json!([]));
    let stored = shipfeed_store::open(&store.url).await.unwrap();
    assert!(
        stored.deliveries(0, 10, false).await.unwrap().is_empty(),
        "an unauthenticated request is never stored"
    );
    assert_eq!(
        metric(
            &http,
            &server.base,
            "shipfeed_deliveries_total{endpoint=\"sendcloud\",provider=\"sendcloud\",outcome=\"unauthorized\"}"
        )
        .await,
        2
    );
}

async fn shipups_probe_is_answered_without_credentials_and_stores_nothing(backend: Backend) {
    let store = TestStore::new(backend);
    let server = Server::start(&store, "").await;
    let http = client();
    let unauthenticated = |body: &[u8]| support::Delivery {
        endpoint: "shipup",
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.to_vec(),
    };
    // Shipup posts this when an endpoint is saved, perhaps without the credentials.
    let (status, answer) = post(
        &http,
        &server.base,
        &unauthenticated(br#"{"livemode": "false"}"#),
    )
    .await
    .unwrap();
    assert_eq!((status, &answer), (200, &json!({"status": "probe"})));
    for body in [
        &br#"{"livemode": "true"}"#[..],
        br#"{"livemode": "false", "data": {"object": {}}}"#,
        &fixture_delivery("shipup", "shipup/generated/events-new-delivered.json").body,
    ] {
        let (status, answer) = post(&http, &server.base, &unauthenticated(body))
            .await
            .unwrap();
        assert_eq!(status, 401, "{answer}");
    }
    let stored = shipfeed_store::open(&store.url).await.unwrap();
    assert!(
        stored.deliveries(0, 10, false).await.unwrap().is_empty(),
        "the probe carries nothing and is stored nowhere"
    );
    let (status, _) = get(&http, &format!("{}/v1/deliveries/1", server.base)).await;
    assert_eq!(status, 404);
    assert_eq!(
        metric(
            &http,
            &server.base,
            "shipfeed_probe_total{endpoint=\"shipup\",authenticated=\"false\"}"
        )
        .await,
        1
    );
    assert!(
        server.log_text().contains("endpoint probe"),
        "{}",
        server.log_text()
    );
}

#[test]
fn a_credential_kind_the_provider_cannot_send_stops_serve_at_startup() {
    let dir = tempfile_dir();
    let config = dir.join("shipfeed.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nstore = \"{}\"\nsink = \"none\"\n\
             [[endpoint]]\nname = \"shipup\"\nprovider = \"shipup\"\nsecret_env = \"SHIPFEED_SHIPUP_SECRET\"\n",
            dir.join("shipfeed.db").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(support::binary())
        .args(["serve", "--config"])
        .arg(&config)
        .envs(support::SECRETS)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("`shipfeed serve` started with an HMAC secret on a Shipup endpoint");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("endpoint `shipup`") && stderr.contains("an HMAC secret cannot apply"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(shipfeed_testkit::FIXTURE_SECRET),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A fresh directory under the system's temporary one.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shipfeed-e2e-start-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `$USER` the commands run as: what the audit log names them (`cli:<user>`).
const CLI_USER: &str = "e2e-operator";

/// The `(actor, action, target, outcome)` of the entries of `shipfeed audit --json`'s body.
fn audit_entries(body: &Value) -> Vec<[String; 4]> {
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            ["actor", "action", "target", "outcome"]
                .map(|key| entry[key].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Runs `shipfeed <command> --config <the server's config> <args>`; its stdout.
fn shipfeed_command(server: &Server, command: &str, args: &[&str]) -> String {
    let output = Command::new(support::binary())
        .env("USER", CLI_USER)
        .arg(command)
        .arg("--config")
        .arg(server.config_path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{command} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `shipfeed <args> --config <the server's config>`: its exit code, stdout and stderr.
fn shipfeed_run(server: &Server, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(support::binary())
        .env("USER", CLI_USER)
        .args(args)
        .arg("--config")
        .arg(server.config_path())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Runs `shipfeed <args> --config <the server's config>`, which must succeed: its stdout.
fn shipfeed_ok(server: &Server, args: &[&str]) -> String {
    let (code, stdout, stderr) = shipfeed_run(server, args);
    assert_eq!(code, Some(0), "shipfeed {args:?}: {stderr}");
    stdout
}

/// Runs `shipfeed replay` and returns its JSON summary.
fn replay(server: &Server, args: &[&str]) -> Value {
    serde_json::from_str(&shipfeed_command(server, "replay", args)).unwrap()
}

async fn a_malformed_authentic_body_is_a_dead_letter_that_replay_recovers_after_a_fix(
    backend: Backend,
) {
    let store = TestStore::new(backend);
    let mut server = Server::start(&store, "").await;
    let http = client();
    let malformed = sendcloud_signed(
        br#"{"action": "parcel_status_changed", "timestamp": 1712188288943, "parcel": "not an object"}"#
            .to_vec(),
    );
    let (status, answer) = post_projected(&http, &server.base, &malformed).await;
    assert_eq!(
        status, 200,
        "an authentic delivery is acknowledged: {answer}"
    );
    assert!(
        answer["projection"]["dead_letter"]
            .as_str()
            .unwrap()
            .contains("parcel"),
        "{answer}"
    );
    let (_, dead) = get(&http, &format!("{}/v1/dead-letters", server.base)).await;
    let dead = dead["dead_letters"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["provider"], "sendcloud");
    assert!(
        dead[0]["error"].as_str().unwrap().contains("parcel"),
        "{dead:?}"
    );

    // What an older build could not read: a valid delivery stored as a dead letter, as it
    // would have been before a mapping fix. This build's replay must recover it.
    server.stop();
    let good = sendcloud_status(801, (11, "Delivered"), 1_712_188_288_908);
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
                    ErrorKind::Payload,
                    "unknown status (an older build)",
                )),
                drift: None,
            }],
        )
        .await
        .unwrap();
    stored
        .release_lease(PROJECTOR, older_build.epoch, now)
        .await
        .unwrap();
    drop(stored);

    let first = replay(&server, &["--dead-letters", "--provider", "sendcloud"]);
    assert_eq!(first["replayed"], 2, "{first}");
    assert_eq!(first["recovered"], 1, "{first}");
    assert_eq!(first["new_events"], 1, "{first}");
    assert_eq!(first["dead_letters"], 1, "the malformed one stays: {first}");
    assert_eq!(
        first["skipped"], 0,
        "every endpoint is still configured: {first}"
    );
    let again = replay(&server, &[]);
    assert_eq!(again["new_events"], 0, "replay is idempotent: {again}");
    assert_eq!(again["replayed"], 2, "{again}");
    let other_provider = replay(&server, &["--provider", "shipup"]);
    assert_eq!(other_provider["replayed"], 0, "{other_provider}");
    let future = replay(&server, &["--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(future["replayed"], 0, "{future}");
    // Each replay is in the audit log, newest first, as the command line's user, with its
    // filter and its counts.
    let audit: Value = serde_json::from_str(&shipfeed_ok(&server, &["audit", "--json"])).unwrap();
    let cli = format!("cli:{CLI_USER}");
    let replayed = |target: &str| [cli.clone(), "replay".into(), target.into(), "ok".into()];
    assert_eq!(
        audit_entries(&audit),
        [
            replayed("all deliveries received since 2999-01-01T00:00:00Z"),
            replayed("all deliveries of shipup"),
            replayed("all deliveries"),
            replayed("all dead letters of sendcloud"),
        ]
    );
    let first_entry = &audit["entries"][3]["detail"];
    assert_eq!(
        first_entry["parameters"],
        json!({"dead_letters_only": true, "provider": "sendcloud", "since": null, "seqs": null})
    );
    assert_eq!(
        (
            &first_entry["result"]["recovered"],
            &first_entry["result"]["dead_letters"]
        ),
        (&json!(1), &json!(1)),
        "{first_entry}"
    );

    let server = server.restart().await;
    let events = feed(&http, &server.base).await;
    assert_eq!(events.len(), 1);
    let event_id = events[0].1["event_id"].as_str().unwrap();
    let (status, history) = get(
        &http,
        &format!("{}/v1/events/{event_id}/revisions", server.base),
    )
    .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["revisions"][0]["revision"], 1, "{history}");
    assert_eq!(history["revisions"][0]["event"]["event_id"], event_id);
    let (status, _) = get(&http, &format!("{}/v1/events/nope/revisions", server.base)).await;
    assert_eq!(status, 404);
    assert_eq!(
        events[0].1["shipment"]["tracking_number"],
        tracking_number(801)
    );
    let (_, dead) = get(&http, &format!("{}/v1/dead-letters", server.base)).await;
    assert_eq!(dead["dead_letters"].as_array().unwrap().len(), 1);
}

async fn an_oversize_body_is_413_and_stores_nothing(backend: Backend) {
    let store = TestStore::new(backend);
    let server = Server::start(&store, "body_limit_bytes = 4096").await;
    let http = client();
    let mut body = br#"{"action": "parcel_status_changed", "padding": ""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', 5000));
    body.extend_from_slice(br#""}"#);
    let (status, _) = post(&http, &server.base, &sendcloud_signed(body))
        .await
        .unwrap();
    assert_eq!(status, 413);
    let small = sendcloud_status(901, (11, "Delivered"), 1_712_188_288_908);
    assert!(small.body.len() < 4096);
    let (status, _) = post(&http, &server.base, &small).await.unwrap();
    assert_eq!(status, 200, "a body under the limit is still taken");
    let stored = shipfeed_store::open(&store.url).await.unwrap();
    assert_eq!(stored.deliveries(0, 10, false).await.unwrap().len(), 1);
}

async fn odd_input_never_gets_a_server_error(backend: Backend) {
    let store = TestStore::new(backend);
    let server = Server::start(&store, "").await;
    let http = client();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies: Vec<Vec<u8>> = vec![
        vec![],
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\xff\xfe\x00garbage".to_vec(),
        deep.into_bytes(),
        br#"{"action": 42}"#.to_vec(),
        br#"{"header": {"type": "shipment/delivered"}, "body": null}"#.to_vec(),
        br#"{"created_at": "soon", "data": {"object": []}}"#.to_vec(),
    ];
    let mut answered = BTreeSet::new();
    for body in bodies {
        for delivery in [
            sendcloud_signed(body.clone()),
            happycolis_signed(body.clone()),
            support::Delivery {
                endpoint: "shipup",
                headers: vec![(
                    "Authorization".into(),
                    // shipup:<fixture secret>
                    format!(
                        "Basic {}",
                        base64_basic("shipup", shipfeed_testkit::FIXTURE_SECRET)
                    ),
                )],
                body: body.clone(),
            },
            support::Delivery {
                endpoint: "sendcloud",
                headers: vec![("Sendcloud-Signature".into(), "zz".into())],
                body: body.clone(),
            },
        ] {
            let (status, answer) = post(&http, &server.base, &delivery).await.unwrap();
            assert!(
                status == 200 || status == 401,
                "{} answered {status} {answer}",
                delivery.endpoint
            );
            answered.insert(status);
        }
    }
    assert_eq!(answered, BTreeSet::from([200, 401]));
    let (status, _) = get(&http, &format!("{}/readyz", server.base)).await;
    assert_eq!(status, 200, "still serving:\n{}", server.log_text());
    assert!(
        !server.log_text().contains("panicked"),
        "{}",
        server.log_text()
    );
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

async fn new_events_reach_the_json_lines_file_sink_once(backend: Backend) {
    let store = TestStore::new(backend);
    let sink = Server::scratch_file(&store, "events.jsonl");
    let server = Server::start(&store, &format!("sink = \"{}\"", sink.display())).await;
    let http = client();
    for parcel in 0..3 {
        let delivery = sendcloud_status(1100 + parcel, (11, "Delivered"), 1_712_188_288_908);
        post(&http, &server.base, &delivery).await.unwrap();
        // A retry: no second line.
        post_projected(&http, &server.base, &delivery).await;
    }
    let lines = |expected: usize| {
        let sink = sink.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let text = std::fs::read_to_string(&sink).unwrap_or_default();
                // Only whole lines: a write may be under way.
                let complete = text.rfind('\n').map_or("", |end| &text[..end]);
                let schema = Schema::feed_item();
                let lines: Vec<Value> = complete.lines().map(|l| schema.assert_line(l)).collect();
                if lines.len() >= expected {
                    return lines;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} of {expected} lines in the sink file: {lines:?}",
                    lines.len()
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    // Each new parcel: its event, then its shipment's first state.
    let items = feed_items(&http, &server.base).await;
    assert_eq!(items.len(), 6, "{items:?}");
    let written = lines(items.len()).await;
    assert_eq!(written, items, "the sink writes the feed, in order");

    // After a restart the saved cursor keeps the sink from writing the same events again. The
    // cursor is saved just after the lines are flushed: wait until the store has it at the
    // last event before the kill (a kill in between would, by design, write those lines
    // again: at-least-once).
    let last_seq = items.last().unwrap()["seq"].as_i64().unwrap();
    let cursor_name = format!("file:{}", sink.display());
    let stored = shipfeed_store::open(&store.url).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let saved = stored.cursor(&cursor_name).await.unwrap();
        if saved == last_seq {
            break;
        }
        assert!(
            saved < last_seq && std::time::Instant::now() < deadline,
            "outbox cursor {saved}, last event {last_seq}\n{}",
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(stored);
    let server = server.restart().await;
    let delivery = sendcloud_status(1199, (11, "Delivered"), 1_712_188_288_908);
    post_projected(&http, &server.base, &delivery).await;
    let written = lines(8).await;
    assert_eq!(written.len(), 8);
    assert_eq!(written[6]["type"], "event");
    assert_eq!(
        written[6]["shipment"]["tracking_number"],
        tracking_number(1199)
    );
}

/// Two `[[subscription]]` files next to the legacy `sink`: each gets every event once, in feed
/// order, from its own cursor; `/metrics` shows this replica driving both.
async fn named_subscriptions_each_write_every_event_once(backend: Backend) {
    let store = TestStore::new(backend);
    let files = [
        Server::scratch_file(&store, "orders.jsonl"),
        Server::scratch_file(&store, "audit.jsonl"),
    ];
    let server = Server::start(
        &store,
        &format!(
            r#"[[subscription]]
name = "orders"
kind = "file"
path = "{}"
start = "beginning"
[[subscription]]
name = "audit"
kind = "file"
path = "{}"
start = "beginning"
"#,
            files[0].display(),
            files[1].display()
        ),
    )
    .await;
    let http = client();
    for parcel in 0..3 {
        let delivery = sendcloud_status(1400 + parcel, (11, "Delivered"), 1_712_188_288_908);
        post(&http, &server.base, &delivery).await.unwrap();
        // A retry: no second line.
        post_projected(&http, &server.base, &delivery).await;
    }
    let feed_items = feed_items(&http, &server.base).await;
    assert_eq!(
        feed_items.len(),
        6,
        "three events and three shipment states"
    );
    let schema = Schema::feed_item();
    let stored = shipfeed_store::open(&store.url).await.unwrap();
    let last_seq = feed_items[5]["seq"].as_i64().unwrap();
    for (name, file) in ["orders", "audit"].iter().zip(&files) {
        // The file is synced before the cursor moves: once the cursor is at the last event,
        // the file holds everything it will.
        let cursor = format!("subscription:{name}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while stored.saved_cursor(&cursor).await.unwrap() != Some(last_seq) {
            assert!(
                std::time::Instant::now() < deadline,
                "{cursor} never reached {last_seq}\n{}",
                server.log_text()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let written: Vec<Value> = std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(|line| schema.assert_line(line))
            .collect();
        assert_eq!(written, feed_items, "{name}: the feed, once, in order");
        let held = format!("shipfeed_subscription_lease_held{{subscription=\"{name}\"}}");
        assert_eq!(metric(&http, &server.base, &held).await, 1, "{held}");
    }
    assert!(
        server.stdout_text().is_empty(),
        "the sink is none: nothing on stdout"
    );
}

/// `sink = "stdout"`: each new event once, as the feed item `GET /v1/events` lists, in order.
async fn new_events_reach_the_stdout_sink_as_feed_items(backend: Backend) {
    let store = TestStore::new(backend);
    let server = Server::start(&store, "sink = \"stdout\"").await;
    let http = client();
    for parcel in 0..2 {
        let delivery = sendcloud_status(1300 + parcel, (11, "Delivered"), 1_712_188_288_908);
        post(&http, &server.base, &delivery).await.unwrap();
        // A retry: no second line.
        post_projected(&http, &server.base, &delivery).await;
    }
    let feed_items = feed_items(&http, &server.base).await;
    let (feed_item, output) = (Schema::feed_item(), Schema::output());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let written: Vec<Value> = loop {
        let text = server.stdout_text();
        // Only whole lines: the sink may be mid-write.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        let lines: Vec<Value> = complete.lines().map(|l| feed_item.assert_line(l)).collect();
        if lines.len() >= feed_items.len() {
            break lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stdout: {text}\n{}",
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for line in written.iter().filter(|line| line["type"] == "event") {
        output.assert_valid(line);
    }
    assert_eq!(feed_items.len(), 4, "two events, two shipment states");
    assert_eq!(
        written, feed_items,
        "stdout carries the feed's items, in order"
    );
}

/// Events published to NATS JetStream: each event once, `Nats-Msg-Id` = `event_id:revision`,
/// subject by provider and status. Needs the machine's NATS with JetStream on 127.0.0.1:4222.
async fn new_events_are_published_to_nats_jetstream_once(backend: Backend) {
    use async_nats::jetstream::consumer::{pull, DeliverPolicy};
    use tokio_stream::StreamExt as _;

    let url = support::nats_url();
    let nats = async_nats::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "NATS with JetStream at {url} is needed by this test: {e}\n\
             start it with: nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server &"
        )
    });
    let jetstream = async_nats::jetstream::new(nats);
    let mut stream = jetstream
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: shipfeed_server::NATS_STREAM.to_owned(),
            subjects: vec![format!("{}.>", shipfeed_server::NATS_SUBJECT_PREFIX)],
            ..Default::default()
        })
        .await
        .unwrap();
    let before = stream.info().await.unwrap().state.last_sequence;

    let store = TestStore::new(backend);
    let server = Server::start(&store, &format!("sink = \"{url}\"")).await;
    let http = client();
    let base = support::unique_parcel_base();
    for parcel in base..base + 3 {
        let delivery = sendcloud_status(parcel, (11, "Delivered"), 1_712_188_288_908);
        post(&http, &server.base, &delivery).await.unwrap();
        post_projected(&http, &server.base, &delivery).await;
    }
    let ours: BTreeSet<String> = (base..base + 3).map(tracking_number).collect();
    let feed_ids: BTreeSet<String> = feed(&http, &server.base)
        .await
        .into_iter()
        .map(|(_, e)| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    // A marker after them: the outbox publishes in feed order, so once the marker is in the
    // stream, anything it published of ours (a copy included) is there before it.
    let marker = tracking_number(base + 3);
    let (status, _) = post(
        &http,
        &server.base,
        &sendcloud_status(base + 3, (11, "Delivered"), 1_712_188_288_908),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);

    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: before + 1,
            },
            filter_subject: format!("{}.sendcloud.>", shipfeed_server::NATS_SUBJECT_PREFIX),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut marker_seen = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !marker_seen {
        assert!(
            std::time::Instant::now() < deadline,
            "the marker event never reached NATS; ours seen: {seen:?}\n{}",
            server.log_text()
        );
        let mut batch = consumer
            .fetch()
            .max_messages(100)
            .expires(std::time::Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            // Acknowledged, so that a slow run never sees a redelivery as a second copy.
            message.ack().await.unwrap();
            let event: Value = serde_json::from_slice(&message.payload).unwrap();
            Schema::feed_item().assert_valid(&event);
            Schema::output().assert_valid(&event);
            let tracking = event["shipment"]["tracking_number"].as_str().unwrap_or("");
            if tracking == marker {
                marker_seen = true;
                break;
            }
            if ours.contains(tracking) {
                let msg_id = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|v| v.as_str().to_owned());
                let revision = event["revision"].as_i64().unwrap();
                assert_eq!(
                    msg_id,
                    Some(format!(
                        "{}:{revision}",
                        event["event_id"].as_str().unwrap()
                    )),
                    "Nats-Msg-Id is event_id:revision"
                );
                assert_eq!(
                    message.subject.as_str(),
                    format!(
                        "{}.sendcloud.delivered",
                        shipfeed_server::NATS_SUBJECT_PREFIX
                    )
                );
                seen.push(event["event_id"].as_str().unwrap().to_owned());
            }
        }
    }
    seen.sort();
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(
        seen.len(),
        unique.len(),
        "an event was published twice: {seen:?}"
    );
    assert_eq!(unique, feed_ids, "NATS carries exactly the feed's events");
}

/// The feed's alert items (`alert` and `alert_cleared`) for the shipment `key`, waiting (up to
/// a minute) until `ready` holds for them.
async fn alert_items(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    ready: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let all = feed_items(http, base).await;
        let kinds: Vec<(Value, Value)> = all
            .iter()
            .map(|item| (item["type"].clone(), item["shipment_key"].clone()))
            .collect();
        let items: Vec<Value> = all
            .into_iter()
            .filter(|item| {
                (item["type"] == "alert" || item["type"] == "alert_cleared")
                    && item["shipment_key"] == key
            })
            .collect();
        if ready(&items) {
            return items;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alert items of {key} not as expected in time: {items:?} (feed: {kinds:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn a_stalled_parcel_is_alerted_and_its_next_event_clears_the_alert(backend: Backend) {
    let store = TestStore::new(backend);
    // Evaluated often, so that the test waits a fraction of a second for the alert.
    let server = Server::start(&store, "[alerts]\ncheck_every = \"100ms\"\n").await;
    let http = client();
    let parcel = support::unique_parcel_base();
    let key = format!("postnl:{}", tracking_number(parcel));
    let now_ms = chrono::Utc::now().timestamp_millis();
    let day_ms = 86_400_000;
    let postnl = |status: (u32, &str), at_ms: i64| {
        let delivery = sendcloud_status(parcel, status, at_ms);
        let mut body: Value = serde_json::from_slice(&delivery.body).unwrap();
        body["parcel"]["carrier"]["code"] = json!("postnl");
        sendcloud_signed(serde_json::to_vec(&body).unwrap())
    };

    // In transit five days ago: past the 72 hours of the default rule, by the service's clock.
    let quiet = postnl((3, "En route to sorting center"), now_ms - 5 * day_ms);
    let (status, answer) = post_projected(&http, &server.base, &quiet).await;
    assert_eq!(status, 200, "{answer}");
    let stalled_event = answer["projection"]["events"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let items = alert_items(&http, &server.base, &key, |items| !items.is_empty()).await;
    let alert = &items[0];
    assert_eq!(alert["type"], "alert", "{alert}");
    assert_eq!(alert["rule"], "stalled.in_transit");
    assert_eq!(alert["status"], "in_transit");
    assert_eq!(alert["last_event_id"], stalled_event.as_str());
    assert_eq!(alert["max_quiet_seconds"], 72 * 3600);
    assert_eq!(
        alert["shipment"]["tracking_number"],
        tracking_number(parcel)
    );
    let id = alert["alert_id"].as_str().unwrap().to_owned();
    assert_eq!(
        id,
        shipfeed_store::alert_id("stalled.in_transit", &key, &stalled_event)
    );
    let (status, open) = get(&http, &format!("{}/v1/alerts", server.base)).await;
    assert_eq!(status, 200, "{open}");
    assert!(
        open["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["alert_id"] == id.as_str()),
        "{open}"
    );

    // Its next event, an hour old: the alert is cleared in the projection that records it.
    let next = postnl((5, "Sorted"), now_ms - day_ms / 24);
    let (status, answer) = post_projected(&http, &server.base, &next).await;
    assert_eq!(status, 200, "{answer}");
    let next_event = answer["projection"]["events"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let items = alert_items(&http, &server.base, &key, |items| items.len() >= 2).await;
    assert_eq!(items.len(), 2, "raised once, cleared once: {items:?}");
    assert_eq!(items[0]["alert_id"], id.as_str());
    assert_eq!(items[1]["type"], "alert_cleared");
    assert_eq!(items[1]["alert_id"], id.as_str());
    assert_eq!(items[1]["cleared_by"], next_event.as_str());
    let (_, open) = get(&http, &format!("{}/v1/alerts", server.base)).await;
    assert!(
        !open["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["alert_id"] == id.as_str()),
        "{open}"
    );
}

/// A signed Sendcloud status delivery with an unknown status code and a field no adapter
/// reads (`parcel.co2_grams`), at `at_ms`.
fn drifting_sendcloud(parcel: u64, at_ms: i64) -> support::Delivery {
    let plain = sendcloud_status(parcel, (77_777, "Beamed up"), at_ms);
    let mut body: Value = serde_json::from_slice(&plain.body).unwrap();
    body["parcel"]["co2_grams"] = json!(120);
    sendcloud_signed(serde_json::to_vec(&body).unwrap())
}

/// `(deliveries, sample_delivery_seq)` of each drift entry of `GET /v1/drift`, by kind and key.
async fn drift_counts(
    http: &reqwest::Client,
    base: &str,
) -> std::collections::BTreeMap<(String, String), (i64, i64)> {
    let (status, report) = get(http, &format!("{base}/v1/drift?provider=sendcloud")).await;
    assert_eq!(status, 200, "{report}");
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            assert_eq!(entry["provider"], "sendcloud", "{entry}");
            (
                (
                    entry["kind"].as_str().unwrap().to_owned(),
                    entry["key"].as_str().unwrap().to_owned(),
                ),
                (
                    entry["deliveries"].as_i64().unwrap(),
                    entry["sample_delivery_seq"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

/// A new field and an unknown code, delivered, retried with the same bytes, then sent in a
/// second distinct delivery: counted once per distinct delivery, on `GET /v1/drift`, in the
/// metrics, by `shipfeed drift`, and once in the feed; replay counts nothing again.
async fn drift_counts_each_distinct_delivery_once(backend: Backend) {
    let store = TestStore::new(backend);
    let server = Server::start(&store, "").await;
    let http = client();
    let first = drifting_sendcloud(601, 1_712_188_288_908);
    let (status, answer) = post_projected(&http, &server.base, &first).await;
    assert_eq!(status, 200, "{answer}");
    let first_seq = answer["delivery_seq"].as_i64().unwrap();
    // The provider's retry: the same bytes.
    let (status, answer) = post_projected(&http, &server.base, &first).await;
    assert_eq!(status, 200, "{answer}");
    let field = ("unknown_field".to_owned(), "parcel.co2_grams".to_owned());
    let code = ("unknown_status".to_owned(), "77777".to_owned());
    let counts = drift_counts(&http, &server.base).await;
    assert_eq!(counts.get(&field), Some(&(1, first_seq)), "{counts:?}");
    assert_eq!(counts.get(&code), Some(&(1, first_seq)), "{counts:?}");

    // A second, distinct delivery: the parcel's next scan, with the same field and code.
    let second = drifting_sendcloud(601, 1_712_199_000_000);
    let (status, answer) = post_projected(&http, &server.base, &second).await;
    assert_eq!(status, 200, "{answer}");
    let counts = drift_counts(&http, &server.base).await;
    assert_eq!(counts.get(&field), Some(&(2, first_seq)), "{counts:?}");
    assert_eq!(counts.get(&code), Some(&(2, first_seq)), "{counts:?}");
    assert_eq!(counts.len(), 2, "nothing else drifted: {counts:?}");

    // Another provider's report is empty; an unknown provider is a client error.
    let (status, report) = get(&http, &format!("{}/v1/drift?provider=shipup", server.base)).await;
    assert_eq!(
        (status, report["entries"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (status, _) = get(&http, &format!("{}/v1/drift?provider=nope", server.base)).await;
    assert_eq!(status, 400);
    assert_eq!(
        metric(
            &http,
            &server.base,
            "shipfeed_drift_observations{provider=\"sendcloud\",kind=\"unknown_field\"}"
        )
        .await,
        2
    );

    // One feed item per key, from the first delivery (schema-checked by `feed_items`).
    let items: Vec<Value> = feed_items(&http, &server.base)
        .await
        .into_iter()
        .filter(|item| item["type"] == "drift")
        .collect();
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(items
        .iter()
        .all(|item| item["delivery_seq"] == json!(first_seq)));

    // Replay projects all three again and counts nothing again.
    replay(&server, &[]);
    let after_replay = drift_counts(&http, &server.base).await;
    assert_eq!(after_replay, counts);

    // The CLI reads the same report from the store.
    let (_, served) = get(&http, &format!("{}/v1/drift", server.base)).await;
    let printed: Value =
        serde_json::from_str(&shipfeed_command(&server, "drift", &["--json"])).unwrap();
    assert_eq!(printed, served);
    let table = shipfeed_command(&server, "drift", &["--provider", "sendcloud"]);
    assert!(
        table.lines().any(|line| line.starts_with("sendcloud")
            && line.contains("parcel.co2_grams")
            && line.split_whitespace().nth(3) == Some("2")),
        "{table}"
    );
}

/// `GET /v1/events` with a query, checked against the feed item schema: `(items, next_cursor)`.
async fn filtered(http: &reqwest::Client, base: &str, query: &str) -> (Vec<Value>, i64) {
    let (status, page) = get(http, &format!("{base}/v1/events?{query}")).await;
    assert_eq!(status, 200, "{query}: {page}");
    let schema = Schema::feed_item();
    let items = page["events"].as_array().unwrap().clone();
    for item in &items {
        schema.assert_valid(item);
    }
    (items, page["next_cursor"].as_i64().unwrap())
}

/// `(type, status)` of feed items: an event's status, a shipment state's new status.
fn kinds(items: &[Value]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|item| {
            let status = match item["type"].as_str().unwrap() {
                "shipment_state" => item["state"]["status"].as_str(),
                _ => item["status"].as_str(),
            };
            (
                item["type"].as_str().unwrap().to_owned(),
                status.unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

async fn the_pull_feed_filters_and_a_revision_reaches_whoever_got_the_first(backend: Backend) {
    let store = TestStore::new(backend);
    let mut server = Server::start(&store, "").await;
    let http = client();
    // Four parcels, each an event and then its shipment's state in the feed.
    let statuses = [
        (901, (92, "Driver en route")),
        (902, (11, "Delivered")),
        (903, (8, "Delivery attempt failed")),
        (904, (12, "Awaiting customer pickup")),
    ];
    let mut delivered_seq = 0;
    for (n, (parcel, status)) in statuses.into_iter().enumerate() {
        let at = 1_712_188_288_908 + i64::try_from(n).unwrap() * 60_000;
        let (code, answer) =
            post_projected(&http, &server.base, &sendcloud_status(parcel, status, at)).await;
        assert_eq!(code, 200, "{answer}");
        if parcel == 902 {
            delivered_seq = answer["delivery_seq"].as_i64().unwrap();
        }
    }
    let all = feed_items(&http, &server.base).await;
    assert_eq!(all.len(), 8, "{all:?}");
    let end = all.last().unwrap()["seq"].as_i64().unwrap();
    let base = server.base.clone();

    // Status (comma-separated or repeated) and type.
    let notifications = [("event", "out_for_delivery"), ("event", "delivered")];
    for query in [
        "after=0&status=out_for_delivery,delivered&type=event",
        "status=out_for_delivery&status=delivered&type=event",
    ] {
        let (items, next) = filtered(&http, &base, query).await;
        assert_eq!(kinds(&items), pairs(&notifications), "{query}");
        assert_eq!(
            next, end,
            "{query}: the cursor moves past what was left out"
        );
    }
    let (items, _) = filtered(
        &http,
        &base,
        "type=shipment_state&status=available_for_pickup",
    )
    .await;
    assert_eq!(
        kinds(&items),
        pairs(&[("shipment_state", "available_for_pickup")])
    );
    // Provider and carrier (a slug, compared whatever its spelling).
    let carrier = all[0]["shipment"]["carrier"].as_str().unwrap().to_owned();
    let (items, next) =
        filtered(&http, &base, &format!("carrier={}", carrier.to_uppercase())).await;
    assert_eq!((items.len(), next), (8, end));
    let (items, _) = filtered(&http, &base, "provider=sendcloud&type=event").await;
    assert_eq!(items.len(), 4);
    for query in ["provider=shipup", "carrier=tiny_courier"] {
        let (items, next) = filtered(&http, &base, query).await;
        assert_eq!(
            (items.len(), next),
            (0, end),
            "{query}: an empty page, past everything"
        );
        let (items, next) = filtered(&http, &base, &format!("{query}&after={end}")).await;
        assert_eq!((items.len(), next), (0, end), "{query}: nothing more");
    }
    // Paging: a full page stops at its last item; the next skips what does not match.
    let (first, next) = filtered(&http, &base, "type=event&limit=1").await;
    assert_eq!(kinds(&first), pairs(&[("event", "out_for_delivery")]));
    assert_eq!(next, first[0]["seq"].as_i64().unwrap());
    let (second, _) = filtered(&http, &base, &format!("type=event&limit=1&after={next}")).await;
    assert_eq!(kinds(&second), pairs(&[("event", "delivered")]));

    // Closed sets: an unknown value is a 400 naming it and what is allowed.
    for (query, says, allowed) in [
        (
            "status=shipped",
            "unknown status `shipped`",
            "out_for_delivery",
        ),
        (
            "status=delivered&type=events",
            "unknown type `events`",
            "shipment_state",
        ),
        ("provider=ups", "unknown provider `ups`", "sevensenders"),
    ] {
        let (status, answer) = get(&http, &format!("{base}/v1/events?{query}")).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{answer}");
        assert!(
            answer["allowed"]
                .as_array()
                .unwrap()
                .contains(&json!(allowed)),
            "{answer}"
        );
    }

    // A mapping fix: 902 was not delivered, its attempt failed (revision 2), as a replay with
    // a corrected mapping would record it.
    server.stop();
    let stored = shipfeed_store::open(&store.url).await.unwrap();
    let event_id = all
        .iter()
        .find(|item| item["type"] == "event" && item["status"] == "delivered")
        .unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, _, mut fixed) = stored.revisions(&event_id).await.unwrap().remove(0);
    fixed.status = Some(shipfeed::Status::AttemptFailed);
    let now = chrono::Utc::now();
    let lease = stored
        .take_over_lease(PROJECTOR, "fix", now, chrono::TimeDelta::minutes(1))
        .await
        .unwrap();
    let revised = stored
        .reproject(
            &lease,
            vec![Normalized {
                delivery_seq: delivered_seq,
                provider: Provider::Sendcloud,
                outcome: Ok(vec![shipfeed::Output::Event(fixed)]),
                drift: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(
        revised[0].revised,
        std::slice::from_ref(&event_id),
        "{revised:?}"
    );
    stored
        .release_lease(PROJECTOR, lease.epoch, now)
        .await
        .unwrap();
    drop(stored);
    let server = server.restart().await;
    let base = server.base.clone();

    // A client of `delivered` got revision 1: it gets revision 2, though that no longer
    // matches; the new shipment state (attempt_failed) it does not.
    let (items, _) = filtered(&http, &base, &format!("after={end}&status=delivered")).await;
    assert_eq!(kinds(&items), pairs(&[("event", "attempt_failed")]));
    assert_eq!(
        (items[0]["event_id"].as_str(), items[0]["revision"].as_i64()),
        (Some(event_id.as_str()), Some(2))
    );
    // A client of `attempt_failed` gets both; one of `out_for_delivery` neither.
    let (items, _) = filtered(&http, &base, &format!("after={end}&status=attempt_failed")).await;
    assert_eq!(
        kinds(&items),
        pairs(&[
            ("event", "attempt_failed"),
            ("shipment_state", "attempt_failed")
        ])
    );
    let (items, next) = filtered(
        &http,
        &base,
        &format!("after={end}&status=out_for_delivery"),
    )
    .await;
    assert!(items.is_empty(), "{items:?}");
    assert!(next > end);
    // Corrections only.
    let (items, _) = filtered(&http, &base, "type=revision").await;
    assert_eq!(kinds(&items), pairs(&[("event", "attempt_failed")]));
}

/// `[[api_token]]` from the environment, through the real binary: the API needs it, the
/// webhooks and health checks do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_token_from_the_environment_protects_the_api_and_not_the_webhooks() {
    let store = TestStore::new(Backend::Sqlite);
    let server = Server::start(
        &store,
        &format!(
            "[[api_token]]\nname = \"e2e\"\ntoken_env = \"{}\"\nscopes = [\"read\"]",
            support::API_TOKEN.0
        ),
    )
    .await;
    let http = client();
    let delivery = fixture_delivery(
        "sendcloud",
        "sendcloud/generated/v2-status-00011-delivered.json",
    );
    let (status, answer) = post(&http, &server.base, &delivery).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let events = format!("{}/v1/events", server.base);
    let (status, body) = get(&http, &events).await;
    assert_eq!(status, 401, "{body}");
    let response = http
        .get(&events)
        .bearer_auth(support::API_TOKEN.1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // A read token cannot reach a dead letter's raw body.
    let response = http
        .get(format!("{}/v1/dead-letters/1/body", server.base))
        .bearer_auth(support::API_TOKEN.1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = get(&http, &format!("{}{path}", server.base)).await;
        assert_eq!(status, 200, "{path}");
    }
    let log = server.log_text();
    assert!(
        log.contains("`e2e` (read)") && !log.contains(support::API_TOKEN.1),
        "the banner names the token, never shows it:\n{log}"
    );
}

/// `shipfeed serve` without a configuration, from `dir`, with `env`; returns the child.
fn serve_embedded(dir: &std::path::Path, env: &[(&str, &str)]) -> std::process::Child {
    Command::new(support::binary())
        .arg("serve")
        .current_dir(dir)
        .env_remove("SHIPFEED_CONFIG")
        .env_remove("SHIPFEED_API_TOKEN")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Fail closed: no token, not on loopback, no start; the embedded default's token variable is
/// the fix the message names, and with it the same address serves a protected API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_non_loopback_address_without_an_api_token() {
    let store = TestStore::new(Backend::Sqlite);
    let db = Server::scratch_file(&store, "embedded.db");
    let dir = db.parent().unwrap().to_owned();
    let db = db.display().to_string();
    let mut refused = serve_embedded(
        &dir,
        &[("SHIPFEED_LISTEN", "0.0.0.0:0"), ("SHIPFEED_STORE", &db)],
    );
    // It stops by itself before binding; a server that started would never exit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = refused.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = refused.kill();
            panic!("serve started on 0.0.0.0 without an API token");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut refused.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("without an API token")
            && stderr.contains("[[api_token]]")
            && stderr.contains("SHIPFEED_API_TOKEN"),
        "{stderr}"
    );

    let port = support::free_port();
    let listen = format!("0.0.0.0:{port}");
    let token = "embedded-token-not-a-secret-0001";
    let mut served = serve_embedded(
        &dir,
        &[
            ("SHIPFEED_LISTEN", &listen),
            ("SHIPFEED_STORE", &db),
            ("SHIPFEED_API_TOKEN", token),
        ],
    );
    let http = client();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(served.try_wait().unwrap().is_none(), "serve exited");
        let ready = http.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not ready in 60 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, _) = get(&http, &format!("{base}/v1/events")).await;
    assert_eq!(status, 401);
    let response = http
        .get(format!("{base}/v1/dead-letters/1/body"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    // The embedded token is an admin token: past the check, there is no such dead letter.
    assert_eq!(response.status().as_u16(), 404);
    let _ = served.kill();
    let _ = served.wait();
}

/// A webhook receiver for the HTTP push subscriptions: answers every POST with the status it
/// is set to, and keeps the `webhook-id` of each.
struct Receiver {
    url: String,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    ids: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start(status: u16) -> Receiver {
        use std::sync::atomic::{AtomicU16, Ordering};
        use std::sync::{Arc, Mutex};
        type Shared = (Arc<AtomicU16>, Arc<Mutex<Vec<String>>>);
        async fn receive(
            axum::extract::State((status, ids)): axum::extract::State<Shared>,
            headers: axum::http::HeaderMap,
        ) -> axum::http::StatusCode {
            let id = headers
                .get("webhook-id")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            ids.lock().unwrap().push(id.to_owned());
            axum::http::StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
        }
        let shared: Shared = (Arc::new(AtomicU16::new(status)), Arc::default());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            status: shared.0,
            ids: shared.1,
        }
    }

    fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }
}

/// An HTTP push subscription whose receiver fails (no retries: each failed item is exhausted
/// at once), operated with `shipfeed subscription` and `shipfeed redeliver` on the store of the
/// running server: the kept messages and the list (the same as `GET /v1/subscriptions`), a
/// pause the server honours, a redelivery it sends once resumed, under the same webhook-ids,
/// all without a restart; names that are not push subscriptions are refused with exit code 2.
async fn an_http_subscription_is_operated_from_the_command_line_without_a_restart(
    backend: Backend,
) {
    let store = TestStore::new(backend);
    let receiver = Receiver::start(500).await;
    let signing = Server::scratch_file(&store, "signing");
    std::fs::write(&signing, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
    let server = Server::start(
        &store,
        &format!(
            r#"[[subscription]]
name = "hooks"
kind = "http"
url = "{}"
secret_file = "{}"
retry_schedule = []
start = "beginning"
[[subscription]]
name = "audit"
kind = "file"
path = "{}"
start = "beginning"
"#,
            receiver.url,
            signing.display(),
            Server::scratch_file(&store, "audit.jsonl").display()
        ),
    )
    .await;
    let http = client();
    let parcel = support::unique_parcel_base();
    let delivery = sendcloud_status(parcel, (11, "Delivered"), 1_712_188_288_908);
    post_projected(&http, &server.base, &delivery).await;
    let items = feed_items(&http, &server.base).await;
    assert!(
        items.len() >= 2,
        "an event and its shipment state: {items:?}"
    );
    let last_seq = items.last().unwrap()["seq"].as_i64().unwrap();

    // Every item attempted once and exhausted; the file subscription at the end of the feed.
    let stored = shipfeed_store::open(&store.url).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let exhausted = stored
            .push_messages("hooks", Some(shipfeed_store::PushState::Exhausted), 0, 100)
            .await
            .unwrap();
        let audit = stored.saved_cursor("subscription:audit").await.unwrap();
        if exhausted.len() == items.len() && audit == Some(last_seq) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} exhausted, audit at {audit:?}\n{}",
            exhausted.len(),
            items.len(),
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let messages: Vec<Value> = serde_json::from_str(&shipfeed_ok(
        &server,
        &[
            "subscription",
            "messages",
            "hooks",
            "--state",
            "exhausted",
            "--json",
        ],
    ))
    .unwrap();
    let seqs: Vec<i64> = messages
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    let item_seqs: Vec<i64> = items.iter().map(|i| i["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, item_seqs);
    let ids: BTreeSet<String> = messages
        .iter()
        .map(|m| m["webhook_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        receiver.ids().into_iter().collect(),
        "each attempted once"
    );
    assert_eq!(
        shipfeed_ok(
            &server,
            &["subscription", "messages", "hooks", "--state", "pending"]
        ),
        "no message kept\n"
    );
    let table = shipfeed_ok(&server, &["subscription", "messages", "hooks"]);
    assert_eq!(table.lines().count(), 1 + items.len(), "{table}");
    assert!(
        table
            .lines()
            .skip(1)
            .all(|line| line.contains(" exhausted ") && line.contains(" 500 ")),
        "{table}"
    );

    // The list is the API's.
    let listed: Value =
        serde_json::from_str(&shipfeed_ok(&server, &["subscription", "list", "--json"])).unwrap();
    let (status, served) = get(&http, &format!("{}/v1/subscriptions", server.base)).await;
    assert_eq!(status, 200, "{served}");
    assert_eq!(listed, served);
    assert_eq!(listed["subscriptions"][0]["cursor"], last_seq, "{listed}");
    assert!(
        listed["subscriptions"][0]["failing_since"].is_string(),
        "{listed}"
    );
    let table = shipfeed_ok(&server, &["subscription", "list"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0][..4],
        ["NAME", "KIND", "CURSOR", "STATUS"],
        "{table}"
    );
    assert_eq!(
        rows[1][..4],
        ["hooks", "http", &last_seq.to_string(), "active"],
        "{table}"
    );
    assert_eq!(
        rows[2][..4],
        ["audit", "file", &last_seq.to_string(), "active"],
        "{table}"
    );

    // Paused; redelivered while paused: due again, not sent.
    let paused: Value = serde_json::from_str(&shipfeed_ok(
        &server,
        &["subscription", "pause", "hooks", "--json"],
    ))
    .unwrap();
    assert_eq!(
        (&paused["status"], &paused["name"]),
        (&json!("paused"), &json!("hooks"))
    );
    receiver
        .status
        .store(200, std::sync::atomic::Ordering::SeqCst);
    let none: Value = serde_json::from_str(&shipfeed_ok(
        &server,
        &[
            "redeliver",
            "--subscription",
            "hooks",
            "--since",
            "2999-01-01T00:00:00Z",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(none, json!({"redelivered": 0}));
    let said = shipfeed_ok(&server, &["redeliver", "--subscription", "hooks"]);
    assert!(
        said.starts_with(&format!(
            "subscription `hooks`: {} exhausted message(s) due again",
            items.len()
        )),
        "{said}"
    );
    let pending = stored
        .push_messages("hooks", Some(shipfeed_store::PushState::Pending), 0, 100)
        .await
        .unwrap();
    assert_eq!(pending.len(), items.len());
    // Nothing sent while paused (checked without waiting: no test waits on a sleep).
    assert_eq!(
        receiver.ids().len(),
        items.len(),
        "nothing sent while paused"
    );
    let (_, served) = get(&http, &format!("{}/v1/subscriptions", server.base)).await;
    assert_eq!(served["subscriptions"][0]["status"], "paused", "{served}");

    // Resumed: the server sends them at its next round, under the same webhook-ids.
    let said = shipfeed_ok(&server, &["subscription", "resume", "hooks"]);
    assert!(
        said.starts_with("subscription `hooks` is active;"),
        "{said}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while receiver.ids().len() < 2 * items.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "not redelivered after the resume: {:?}\n{}",
            receiver.ids(),
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let again: BTreeSet<String> = receiver.ids()[items.len()..].iter().cloned().collect();
    assert_eq!(again, ids);

    // Not push subscriptions: exit code 2, saying why.
    for (args, says) in [
        (&["subscription", "pause", "audit"][..], "kind \"file\""),
        (&["subscription", "messages", "audit"][..], "kind \"file\""),
        (
            &["redeliver", "--subscription", "nosuch"][..],
            "no subscription `nosuch` is configured",
        ),
        (
            &["subscription", "resume", "sink"][..],
            "no subscription `sink` is configured",
        ),
        (
            &["subscription", "messages", "hooks", "--state", "gone"][..],
            "`pending` or `exhausted`",
        ),
        (
            &[
                "redeliver",
                "--subscription",
                "hooks",
                "--since",
                "yesterday",
            ][..],
            "--since",
        ),
    ] {
        let (code, stdout, stderr) = shipfeed_run(&server, args);
        assert_eq!(code, Some(2), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }

    // Every change is in the audit log as the command line's user (the refusals just above
    // come from the configuration, before the store is opened: nothing ran, nothing is
    // recorded), and the API serves the same log.
    let audit: Value =
        serde_json::from_str(&shipfeed_ok(&server, &["audit", "--json", "--limit", "10"])).unwrap();
    let cli = format!("cli:{CLI_USER}");
    let done = |action: &str| [cli.clone(), action.into(), "hooks".into(), "ok".into()];
    assert_eq!(
        audit_entries(&audit),
        [
            done("resume"),
            done("redeliver"),
            done("redeliver"),
            done("pause")
        ]
    );
    assert_eq!(
        audit["entries"][1]["detail"]["result"],
        json!({"redelivered": items.len()})
    );
    assert_eq!(
        audit["entries"][2]["detail"]["parameters"],
        json!({"since": "2999-01-01T00:00:00Z"})
    );
    let (status, served) = get(&http, &format!("{}/v1/audit?limit=10", server.base)).await;
    assert_eq!(status, 200, "{served}");
    assert_eq!(served, audit);
    let table = shipfeed_ok(&server, &["audit", "--limit", "2"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID  AT "), "{table}");
    let cells: Vec<&str> = lines[1].split_whitespace().take(6).collect();
    assert_eq!(
        cells[2..],
        [cli.as_str(), "resume", "hooks", "ok"],
        "{table}"
    );
}
