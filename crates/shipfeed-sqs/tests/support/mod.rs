//! Shared helpers of the SQS integration tests: a private moto server (with a recording proxy
//! in front when a test needs to see deletes), a plain SDK client for setting queues up, Seven
//! Senders message bodies, and recording inboxes.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod moto;
pub mod recorder;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use shipfeed_core::{Error, ErrorKind, Output};
use shipfeed_sqs::{async_trait, Inbox, QueueRef, SourcedDelivery, SqsConfig, SqsCredentials};

pub use moto::Moto;
pub use recorder::{Event, Recorder};

/// The API key the tests pull with (moto accepts any key; the secret is empty as for 7S).
pub const API_KEY: &str = "7s-test-api-key";

/// A plain SDK client for test setup, with the same empty-secret credentials.
pub fn setup_client(moto: &Moto) -> Client {
    setup_client_at(&moto.endpoint)
}

/// [`setup_client`] for another endpoint (a [`Recorder`] in front of moto).
pub fn setup_client_at(endpoint: &str) -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-central-1"))
        .credentials_provider(Credentials::new(API_KEY, "", None, None, "tests"))
        .endpoint_url(endpoint)
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
    config_at(&moto.endpoint, queue)
}

/// [`config`] for another endpoint (a [`Recorder`] in front of moto).
pub fn config_at(endpoint: &str, queue: QueueRef) -> SqsConfig {
    SqsConfig::new(queue)
        .with_endpoint_url(endpoint)
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

/// An inbox that records what it accepts (and the ids of the batches it failed), can fail its
/// first calls with a temporary error, and can note each confirmation in a [`Recorder`]'s log,
/// so that a test can check no delete was asked for before it ([`assert_deleted_after_confirmed`]).
#[derive(Default)]
pub struct RecordingInbox {
    pub records: Mutex<Vec<Record>>,
    pub calls: AtomicUsize,
    pub fail_first: AtomicUsize,
    /// Message ids of the batches this inbox failed, in order.
    pub failed: Mutex<Vec<String>>,
    pub recorder: Option<Arc<Recorder>>,
}

impl RecordingInbox {
    pub fn checking(recorder: Arc<Recorder>) -> Self {
        RecordingInbox {
            recorder: Some(recorder),
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
        let fail = self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            self.failed
                .lock()
                .unwrap()
                .extend(batch.iter().map(|item| item.message_id.clone()));
            return Err(Error::new(ErrorKind::Unavailable, "store is down (test)"));
        }
        if let Some(recorder) = &self.recorder {
            // Noted before returning: the source may delete only after this point.
            for item in &batch {
                recorder.note(Event::Confirmed(item.message_id.clone()));
            }
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

/// Every delete in `events` was asked for after an inbox confirmed that message; returns the
/// ids moto confirmed deleted.
pub fn assert_deleted_after_confirmed(events: &[Event]) -> HashSet<String> {
    let mut confirmed = HashSet::new();
    let mut deleted = HashSet::new();
    for event in events {
        match event {
            Event::Confirmed(id) => {
                confirmed.insert(id.clone());
            }
            Event::DeleteRequested(id) => assert!(
                confirmed.contains(id),
                "message {id} deleted before the inbox confirmed it: {events:?}"
            ),
            Event::Deleted(id) => {
                deleted.insert(id.clone());
            }
            Event::Received(_) => {}
        }
    }
    deleted
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
