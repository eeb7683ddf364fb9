//! End to end: the real `shipfeed consume` binary drains a queue on a private moto_server
//! into canonical JSON lines and leaves it empty.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../shipfeed-sqs/tests/support/moto.rs"]
mod moto;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use moto::Moto;

const LIMIT: Duration = Duration::from_secs(180);
const API_KEY: &str = "7s-cli-test-key";

fn client(moto: &Moto) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-central-1"))
            .credentials_provider(Credentials::new(API_KEY, "", None, None, "tests"))
            .endpoint_url(&moto.endpoint)
            .build(),
    )
}

async fn depth(client: &aws_sdk_sqs::Client, url: &str) -> u64 {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes");
    out.attributes()
        .map(|a| a.values().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(u64::MAX)
}

fn consume(moto: &Moto, queue: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_shipfeed"))
        .arg("consume")
        .args(["--provider", "sevensenders"])
        .args(queue)
        .args(["--endpoint-url", &moto.endpoint])
        .args(["--api-key", API_KEY])
        .args(["--region", "eu-central-1"])
        .args([
            "--pollers",
            "2",
            "--wait-time",
            "1",
            "--visibility-timeout",
            "60",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shipfeed")
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("shipfeed consume did not exit within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_drains_a_queue_into_json_lines() {
    let moto = Moto::start();
    let client = client(&moto);
    let url = client
        .create_queue()
        .queue_name(format!("cli-{}", std::process::id()))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("url");
    let statuses = [
        "\"Pickup\"",
        "\"\"",
        "\"Delivered\"",
        "null",
        "\"Something new\"",
    ];
    let mut bodies: Vec<String> = (0..40)
        .map(|n| {
            format!(
                r#"{{"id":"s{n}","order_id":"O{n}","tracking_code":"T{n}","carrier":"postat","carrier_country":"at","status":{},"status_time":"03.04.2024 20:22:30","tickets":[],"events":[]}}"#,
                statuses[n % statuses.len()]
            )
        })
        .collect();
    bodies.push("{broken".to_owned());
    for body in &bodies {
        client
            .send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .expect("send");
    }

    let mut child = consume(&moto, &["--queue-url", &url]);
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut lines = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while lines.len() < 40 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("only {} of 40 lines ({e}): {lines:?}", lines.len());
            }
        }
    }
    let deadline = Instant::now() + LIMIT;
    while depth(&client, &url).await != 0 {
        assert!(Instant::now() < deadline, "queue not drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Graceful stop on SIGTERM.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let status = wait_exit(&mut child);
    let stderr = stderr_reader.join().expect("stderr");
    assert!(status.success(), "exit {status}: {stderr}");
    lines.extend(rx.try_iter());

    let mut shipments = HashSet::new();
    let schema = shipfeed_testkit::schema::Schema::output();
    for line in &lines {
        let value = schema.assert_line(line);
        assert_eq!(value["type"], "event", "{line}");
        assert_eq!(value["provider"], "sevensenders");
        assert_eq!(value["shipment"]["carrier"], "austrian_post");
        assert!(
            value["delivery_id"].is_string(),
            "MessageId carried: {line}"
        );
        shipments.insert(
            value["shipment"]["provider_shipment_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(lines.len(), 40, "one event per message, none twice");
    assert_eq!(shipments.len(), 40);
    let statuses: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["status"].clone())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| s.is_null()).count(),
        16,
        "blank and null status"
    );
    assert_eq!(statuses.iter().filter(|s| **s == "unknown").count(), 8);
    assert!(
        stderr.contains(r#""dead_letter""#),
        "dead letter on stderr: {stderr}"
    );
    assert!(stderr.contains("shipfeed stopped"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_names_a_missing_queue() {
    let moto = Moto::start();
    let mut child = consume(&moto, &["--queue-name", "no-such-queue"]);
    let status = wait_exit(&mut child);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    assert!(!status.success());
    assert!(
        stderr.contains("`no-such-queue` does not exist"),
        "{stderr}"
    );
}
