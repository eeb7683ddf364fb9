//! Shared helpers of the SQS integration tests: a private moto server, a plain SDK client for
//! setting queues up, Seven Senders message bodies, and recording inboxes.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod moto;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use shipfeed_core::{Error, ErrorKind, Output};
use shipfeed_sqs::{async_trait, Inbox, QueueRef, SourcedDelivery, SqsConfig, SqsCredentials};

pub use moto::Moto;

/// The API key the tests pull with (moto accepts any key; the secret is empty as for 7S).
pub const API_KEY: &str = "7s-test-api-key";

/// A plain SDK client for test setup, with the same empty-secret credentials.
pub fn setup_client(moto: &Moto) -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-central-1"))
        .credentials_provider(Credentials::new(API_KEY, "", None, None, "tests"))
        .endpoint_url(&moto.endpoint)
        .build();
    Client::from_conf(config)
}

/// A queue name unique in this process.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a queue with the given default visibility timeout; returns its URL.
pub async fn create_queue(client: &Client, name: &str, visibility_seconds: u32) -> String {
    client
        .create_queue()
        .queue_name(name)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_seconds.to_string(),
        )
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

/// A source configuration for a moto queue: API key + empty secret, short long-poll waits.
pub fn config(moto: &Moto, queue: QueueRef) -> SqsConfig {
    SqsConfig::new(queue)
        .with_endpoint_url(&moto.endpoint)
        .with_region("eu-central-1")
        .with_credentials(SqsCredentials::ApiKey(API_KEY.into()))
        .with_wait_time_seconds(1)
}

/// The Seven Senders adapter, reading times as UTC.
pub fn adapter() -> Box<dyn shipfeed_core::Adapter> {
    Box::new(shipfeed_sevensenders::SevenSendersAdapter::new(
        chrono_tz::UTC,
    ))
}

/// A Seven Senders message body for shipment `s<n>`; `status` goes in verbatim (JSON).
pub fn body(n: usize, status: &str) -> String {
    format!(
        r#"{{"id":"s{n}","order_id":"ORD-{n}","tracking_code":"3STEST{n:08}","carrier":"dhl","carrier_country":"de","status":{status},"status_time":"03.04.2024 20:22:30","tickets":[],"events":[]}}"#
    )
}

/// Sends bodies in batches of 10; entries SQS reports as failed are sent once more.
pub async fn send_all(client: &Client, queue_url: &str, bodies: &[String]) {
    for (chunk_index, chunk) in bodies.chunks(10).enumerate() {
        let mut entries: Vec<SendMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("m{chunk_index}-{i}"))
                    .message_body(body)
                    .build()
                    .expect("entry")
            })
            .collect();
        for attempt in 0..2 {
            let out = client
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries.clone()))
                .send()
                .await
                .expect("send batch");
            let failed: Vec<&str> = out.failed().iter().map(|f| f.id()).collect();
            entries.retain(|e| failed.contains(&e.id()));
            if entries.is_empty() {
                break;
            }
            assert!(attempt == 0, "send failed twice: {:?}", out.failed());
        }
    }
}

/// (visible, in flight) message counts.
pub async fn depth(client: &Client, queue_url: &str) -> (u64, u64) {
    let out = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes");
    let attrs = out.attributes().cloned().unwrap_or_default();
    let get = |name: QueueAttributeName| {
        attrs
            .get(&name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
    };
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Waits until `condition` holds, checking every 100 ms; panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a recording inbox keeps of one accepted item.
#[derive(Debug, Clone)]
pub struct Record {
    pub message_id: String,
    pub body: String,
    pub receive_count: Option<u32>,
    pub sent_timestamp: Option<String>,
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub outputs: Result<Vec<Output>, (ErrorKind, Option<String>)>,
}

/// An inbox that records what it accepts, can fail its first calls with a temporary error, and
/// checks on every call that the batch is still on the queue (not yet deleted).
#[derive(Default)]
pub struct RecordingInbox {
    pub records: Mutex<Vec<Record>>,
    pub calls: AtomicUsize,
    pub fail_first: AtomicUsize,
    pub queue: Option<(Client, String)>,
    pub violations: Mutex<Vec<String>>,
}

impl RecordingInbox {
    pub fn checking(client: Client, queue_url: String) -> Self {
        RecordingInbox {
            queue: Some((client, queue_url)),
            ..RecordingInbox::default()
        }
    }

    pub fn len(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    /// How many times each message id was accepted.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.records.lock().unwrap().iter() {
            *counts.entry(r.message_id.clone()).or_default() += 1;
        }
        counts
    }
}

#[async_trait]
impl Inbox for RecordingInbox {
    async fn accept(&self, batch: Vec<SourcedDelivery>) -> Result<(), Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some((client, url)) = &self.queue {
            // Not deleted before the inbox confirmed: the batch is still in flight on the queue.
            let (_, in_flight) = depth(client, url).await;
            if in_flight < batch.len() as u64 {
                self.violations.lock().unwrap().push(format!(
                    "batch of {} but only {in_flight} messages in flight",
                    batch.len()
                ));
            }
        }
        let fail = self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(Error::new(ErrorKind::Unavailable, "store is down (test)"));
        }
        let mut records = self.records.lock().unwrap();
        for item in batch {
            records.push(Record {
                receive_count: item
                    .delivery
                    .headers
                    .get("ApproximateReceiveCount")
                    .and_then(|c| c.parse().ok()),
                sent_timestamp: item
                    .delivery
                    .headers
                    .get("SentTimestamp")
                    .map(str::to_owned),
                received_at: item.delivery.received_at,
                body: String::from_utf8_lossy(&item.delivery.body).into_owned(),
                message_id: item.message_id,
                outputs: item
                    .outcome
                    .map_err(|e| (e.kind(), e.path().map(str::to_owned))),
            });
        }
        Ok(())
    }
}

/// An inbox that signals when a batch arrives and then never answers: a consumer that crashes
/// between receive and the inbox's confirmation.
pub struct HangingInbox {
    pub arrived: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl Inbox for HangingInbox {
    async fn accept(&self, _batch: Vec<SourcedDelivery>) -> Result<(), Error> {
        self.arrived.notify_one();
        std::future::pending::<()>().await;
        Ok(())
    }
}
