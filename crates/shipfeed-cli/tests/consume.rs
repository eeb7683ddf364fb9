//! End to end: the real `shipfeed consume` binary drains a queue on a private moto_server
//! into canonical JSON lines and deletes every message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../shipfeed-sqs/tests/support/moto.rs"]
mod moto;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
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
    let (stdout, stdout_reader) = line_reader(child.stdout.take().expect("stdout"));
    let (stderr, stderr_reader) = line_reader(child.stderr.take().expect("stderr"));

    // Every message handled: 40 events on stdout and the dead letter on stderr. The sink
    // writes them before the source deletes, and a stop lets the batch in flight finish.
    let deadline = Instant::now() + LIMIT;
    let mut lines = Vec::new();
    while lines.len() < 40 {
        lines.push(next_line(&stdout, deadline, &mut child, "40 event lines"));
    }
    let mut errors = Vec::new();
    while !errors
        .iter()
        .any(|l: &String| l.contains(r#""dead_letter""#))
    {
        errors.push(next_line(&stderr, deadline, &mut child, "the dead letter"));
    }

    // Graceful stop on SIGTERM.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let status = wait_exit(&mut child);
    // The readers end at EOF: everything the process wrote is collected.
    stdout_reader.join().expect("stdout reader");
    stderr_reader.join().expect("stderr reader");
    lines.extend(stdout.try_iter());
    errors.extend(stderr.try_iter());
    let stderr = errors.join("\n");
    assert!(status.success(), "exit {status}: {stderr}");

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
    // The source's own exact counts (the queue's are approximate): all 41 deleted.
    let stopped = errors
        .iter()
        .find_map(|l| l.strip_prefix("shipfeed stopped: "))
        .unwrap_or_else(|| panic!("no stop summary: {stderr}"));
    let count = |what: &str| -> u64 {
        stopped
            .split(", ")
            .find_map(|part| part.strip_suffix(what)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{what}` in `{stopped}`"))
    };
    let duplicates = count(" duplicates");
    assert_eq!(count(" received"), 41 + duplicates, "{stopped}");
    assert_eq!(count(" accepted"), 40, "{stopped}");
    assert_eq!(count(" dead letters"), 1, "{stopped}");
    // A copy received after its message was accepted is deleted too.
    assert!(
        (41..=41 + duplicates).contains(&count(" deleted")),
        "{stopped}"
    );
}

/// Reads `from` line by line on a thread of its own, until EOF.
fn line_reader(
    from: impl Read + Send + 'static,
) -> (mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (rx, reader)
}

/// The next line, or a panic (after killing `child`) at `deadline`.
fn next_line(
    lines: &mpsc::Receiver<String>,
    deadline: Instant,
    child: &mut Child,
    what: &str,
) -> String {
    let left = deadline.saturating_duration_since(Instant::now());
    lines.recv_timeout(left).unwrap_or_else(|e| {
        let _ = child.kill();
        panic!("waiting for {what}: {e}");
    })
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
