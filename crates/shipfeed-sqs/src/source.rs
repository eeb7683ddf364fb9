//! The polling loop: receive, normalize, hand to the inbox, delete what the inbox accepted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::AddAssign;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use chrono::{DateTime, Utc};
use shipfeed_core::{Adapter, Error, ErrorKind, Headers, RawDelivery};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{self, DeadLetterPolicy, QueueRef, SqsConfig};
use crate::error::{self, Disposition, Step};
use crate::inbox::{Inbox, SourcedDelivery};

/// The header carrying the SQS `MessageId` in every [`RawDelivery`] this source builds.
pub const MESSAGE_ID_HEADER: &str = "MessageId";

/// Longest pause between attempts while the queue is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Counters of one [`SqsSource::run`] or [`SqsSource::poll_once`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceStats {
    /// Messages received.
    pub received: u64,
    /// Messages normalized and accepted by the inbox.
    pub accepted: u64,
    /// Messages the adapter could not understand, accepted by the inbox as dead letters.
    pub dead_lettered: u64,
    /// Messages left on the queue because of an adapter error that is not the message's
    /// fault, or by [`DeadLetterPolicy::LeaveForRedrive`].
    pub left_on_queue: u64,
    /// Messages left on the queue because the inbox was temporarily unavailable.
    pub inbox_unavailable: u64,
    /// Messages deleted from the queue.
    pub deleted: u64,
    /// Messages whose deletion failed twice: they will be delivered again.
    pub delete_failed: u64,
    /// Copies of a message received again (SQS delivers at least once) while this source
    /// still had it in flight, or after the inbox accepted it (the last 10,000 accepted ids are
    /// remembered): not handed to the inbox a second time, and deleted with the newest
    /// receipt handle. Copies beyond that window reach the inbox again; it deduplicates.
    pub duplicates: u64,
}

impl AddAssign for SourceStats {
    fn add_assign(&mut self, other: Self) {
        self.received += other.received;
        self.accepted += other.accepted;
        self.dead_lettered += other.dead_lettered;
        self.left_on_queue += other.left_on_queue;
        self.inbox_unavailable += other.inbox_unavailable;
        self.deleted += other.deleted;
        self.delete_failed += other.delete_failed;
        self.duplicates += other.duplicates;
    }
}

/// A queue, a client for it, and the adapter that understands its messages.
#[derive(Clone)]
pub struct SqsSource {
    inner: Arc<Inner>,
}

struct Inner {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    config: SqsConfig,
    adapter: Arc<dyn Adapter>,
    seen: Seen,
}

/// How many accepted message ids a source remembers, to drop copies SQS delivers again.
const REMEMBERED: usize = 10_000;

/// Message ids this source is processing (with the receipt handles of copies other pollers
/// received meanwhile) or has recently had accepted by the inbox.
#[derive(Default)]
struct Seen(Mutex<SeenState>);

#[derive(Default)]
struct SeenState {
    in_flight: HashMap<String, Vec<String>>,
    done: HashSet<String>,
    done_order: VecDeque<String>,
}

/// What [`Seen::claim`] found.
#[derive(Debug, PartialEq, Eq)]
enum Claim {
    /// First copy: process it.
    New,
    /// Another poller has it in flight; its receipt handle was kept for the delete.
    InFlight,
    /// Already accepted by the inbox: delete this copy, do not process it again.
    Done,
}

impl Seen {
    fn claim(&self, message_id: &str, receipt: &str) -> Claim {
        if message_id.is_empty() {
            return Claim::New;
        }
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if state.done.contains(message_id) {
            return Claim::Done;
        }
        match state.in_flight.get_mut(message_id) {
            Some(copies) => {
                copies.push(receipt.to_owned());
                Claim::InFlight
            }
            None => {
                state.in_flight.insert(message_id.to_owned(), Vec::new());
                Claim::New
            }
        }
    }

    /// Ends a claim, remembering the id when the inbox accepted it, and returns the newest
    /// receipt handle seen for the message: SQS deletes reliably only with the most recent one.
    fn release(&self, message_id: &str, own: String, accepted: bool) -> String {
        if message_id.is_empty() {
            return own;
        }
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let newest = state
            .in_flight
            .remove(message_id)
            .and_then(|mut copies| copies.pop())
            .unwrap_or(own);
        if accepted && state.done.insert(message_id.to_owned()) {
            state.done_order.push_back(message_id.to_owned());
            while state.done_order.len() > REMEMBERED {
                if let Some(old) = state.done_order.pop_front() {
                    state.done.remove(&old);
                }
            }
        }
        newest
    }
}

impl std::fmt::Debug for SqsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsSource")
            .field("queue_url", &self.inner.queue_url)
            .field("provider", &self.inner.adapter.provider())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl SqsSource {
    /// Builds the client and, for a queue given by name, resolves its URL with `GetQueueUrl`.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an invalid configuration, missing credentials, a queue name
    /// that does not exist or credentials the queue rejects; [`ErrorKind::Unavailable`] when
    /// the endpoint cannot be reached.
    pub async fn connect(config: SqsConfig, adapter: Box<dyn Adapter>) -> Result<Self, Error> {
        let client = config::client(&config).await?;
        let queue_url = match &config.queue {
            QueueRef::Url(url) => url.clone(),
            QueueRef::Name(name) => client
                .get_queue_url()
                .queue_name(name)
                .send()
                .await
                .map_err(|e| error::from_sdk("GetQueueUrl", name, e))?
                .queue_url
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Config,
                        format!("GetQueueUrl returned no URL for queue `{name}`"),
                    )
                })?,
        };
        Ok(SqsSource {
            inner: Arc::new(Inner {
                client,
                queue_url,
                config,
                adapter: Arc::from(adapter),
                seen: Seen::default(),
            }),
        })
    }

    /// The URL of the queue this source pulls.
    pub fn queue_url(&self) -> &str {
        &self.inner.queue_url
    }

    /// The SQS client (to send test messages, or inspect the queue).
    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.inner.client
    }

    /// Polls with `pollers` concurrent loops until `shutdown` turns `true` (or its sender is
    /// dropped), then lets every loop finish its in-flight batch and returns the totals.
    ///
    /// A receive that is waiting for messages is abandoned on shutdown (SQS makes any message
    /// it was about to hand over visible again after the visibility timeout); a batch already
    /// received is always taken to the end: inbox, then delete.
    ///
    /// # Errors
    /// The first permanent error of any loop (a missing queue, rejected credentials, an inbox
    /// that refuses for good); the other loops then stop after their in-flight batch.
    /// Temporary errors (network, throttling, a temporarily unavailable inbox) are logged and
    /// retried, never returned.
    pub async fn run(
        &self,
        inbox: Arc<dyn Inbox>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<SourceStats, Error> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut pollers = JoinSet::new();
        for index in 0..self.inner.config.pollers {
            let inner = Arc::clone(&self.inner);
            let inbox = Arc::clone(&inbox);
            let stop = Stop {
                shutdown: shutdown.clone(),
                internal: stop_rx.clone(),
            };
            pollers.spawn(async move { inner.poll_loop(index, inbox.as_ref(), stop).await });
        }
        let mut total = SourceStats::default();
        let mut first_error = None;
        while let Some(joined) = pollers.join_next().await {
            let (stats, result) = joined.unwrap_or_else(|join| {
                (
                    SourceStats::default(),
                    Err(Error::new(
                        ErrorKind::Unavailable,
                        format!("a poller died: {join}"),
                    )),
                )
            });
            total += stats;
            if let Err(error) = result {
                let _ = stop_tx.send(true);
                first_error.get_or_insert(error);
            }
        }
        tracing::info!(?total, queue = %self.inner.queue_url, "SQS source stopped");
        match first_error {
            Some(error) => Err(error),
            None => Ok(total),
        }
    }

    /// One receive (waiting up to the configured long-poll time) and its batch, to the end.
    ///
    /// # Errors
    /// Any receive error, and a permanent inbox error.
    pub async fn poll_once(&self, inbox: &dyn Inbox) -> Result<SourceStats, Error> {
        let messages = self.inner.receive().await?;
        let mut stats = SourceStats::default();
        self.inner.handle(messages, inbox, &mut stats).await?;
        Ok(stats)
    }
}

/// The two reasons to stop: the caller's shutdown and another poller's fatal error.
struct Stop {
    shutdown: watch::Receiver<bool>,
    internal: watch::Receiver<bool>,
}

impl Stop {
    fn requested(&self) -> bool {
        *self.shutdown.borrow() || *self.internal.borrow()
    }

    /// Resolves when a stop is requested (a dropped sender counts as a request).
    async fn wait(&mut self) {
        tokio::select! {
            _ = self.shutdown.wait_for(|stop| *stop) => {}
            _ = self.internal.wait_for(|stop| *stop) => {}
        }
    }
}

impl Inner {
    async fn poll_loop(
        &self,
        index: usize,
        inbox: &dyn Inbox,
        mut stop: Stop,
    ) -> (SourceStats, Result<(), Error>) {
        let mut stats = SourceStats::default();
        let mut backoff = Duration::from_secs(1);
        tracing::debug!(poller = index, queue = %self.queue_url, "poller started");
        while !stop.requested() {
            let received = tokio::select! {
                biased;
                () = stop.wait() => break,
                received = self.receive() => received,
            };
            let messages = match received {
                Ok(messages) => {
                    backoff = Duration::from_secs(1);
                    messages
                }
                Err(error) if Disposition::of(Step::Receive, &error) == Disposition::Leave => {
                    tracing::warn!(poller = index, %error, retry_in = ?backoff, "receive failed");
                    tokio::select! {
                        () = stop.wait() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Err(error) => return (stats, Err(error)),
            };
            // Not cancellable: a received batch is always taken to the inbox and deleted.
            if let Err(error) = self.handle(messages, inbox, &mut stats).await {
                return (stats, Err(error));
            }
        }
        tracing::debug!(poller = index, "poller stopped");
        (stats, Ok(()))
    }

    async fn receive(&self) -> Result<Vec<Message>, Error> {
        let mut request = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(i32::from(self.config.batch_size))
            .wait_time_seconds(i32::from(self.config.wait_time_seconds))
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All");
        if let Some(seconds) = self.config.visibility_timeout_seconds() {
            request = request.visibility_timeout(seconds);
        }
        let output = request
            .send()
            .await
            .map_err(|e| error::from_sdk("ReceiveMessage", &self.queue_url, e))?;
        Ok(output.messages.unwrap_or_default())
    }

    /// Normalizes a batch, hands what belongs to the inbox, and deletes what it accepted.
    async fn handle(
        &self,
        messages: Vec<Message>,
        inbox: &dyn Inbox,
        stats: &mut SourceStats,
    ) -> Result<(), Error> {
        if messages.is_empty() {
            return Ok(());
        }
        stats.received += messages.len() as u64;
        let mut claimed = Vec::with_capacity(messages.len());
        let mut duplicates = Vec::new();
        for message in messages {
            let message_id = message.message_id.clone().unwrap_or_default();
            let Some(receipt) = message.receipt_handle.clone() else {
                tracing::warn!(%message_id, "message without a receipt handle; skipped");
                stats.left_on_queue += 1;
                continue;
            };
            match self.seen.claim(&message_id, &receipt) {
                Claim::New => claimed.push((message, message_id, receipt)),
                Claim::InFlight => {
                    tracing::debug!(%message_id, "received again while in flight; not processed twice");
                    stats.duplicates += 1;
                }
                Claim::Done => {
                    tracing::debug!(%message_id, "received again after the inbox accepted it; deleted");
                    stats.duplicates += 1;
                    duplicates.push((message_id, receipt));
                }
            }
        }
        let result = self.process(claimed.iter(), inbox, stats).await;
        // Release every claim, whatever happened; delete what the inbox accepted.
        let mut to_delete = Vec::new();
        for (_, message_id, receipt) in claimed {
            let accepted = result.as_ref().is_ok_and(|ids| ids.contains(&message_id));
            let newest = self.seen.release(&message_id, receipt, accepted);
            if accepted {
                to_delete.push((message_id, newest));
            }
        }
        to_delete.append(&mut duplicates);
        if !to_delete.is_empty() {
            self.delete(to_delete, stats).await;
        }
        result.map(|_| ())
    }

    /// Normalizes and hands to the inbox; returns the ids of the messages the inbox accepted
    /// (none when it was temporarily unavailable).
    async fn process<'a>(
        &self,
        messages: impl Iterator<Item = &'a (Message, String, String)>,
        inbox: &dyn Inbox,
        stats: &mut SourceStats,
    ) -> Result<Vec<String>, Error> {
        let mut batch = Vec::new();
        let mut dead = 0;
        for (message, message_id, _) in messages {
            let delivery = to_delivery(message, Utc::now());
            let outcome = self
                .adapter
                .construct(&delivery, &self.config.adapter_credentials);
            if let Err(error) = &outcome {
                let leave = Disposition::of(Step::Normalize, error) != Disposition::DeadLetter
                    || self.config.dead_letters == DeadLetterPolicy::LeaveForRedrive;
                if leave {
                    tracing::error!(%message_id, %error, "message left on the queue");
                    stats.left_on_queue += 1;
                    continue;
                }
                tracing::warn!(%message_id, %error, "dead letter");
                dead += 1;
            }
            batch.push(SourcedDelivery {
                message_id: message_id.clone(),
                delivery,
                outcome,
            });
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = batch.iter().map(|d| d.message_id.clone()).collect();
        let count = ids.len() as u64;
        match inbox.accept(batch).await {
            Ok(()) => {
                stats.accepted += count - dead;
                stats.dead_lettered += dead;
                Ok(ids)
            }
            Err(error) if Disposition::of(Step::Inbox, &error) == Disposition::Leave => {
                tracing::warn!(
                    %error,
                    messages = count,
                    "inbox unavailable; the messages stay on the queue and come back after the \
                     visibility timeout"
                );
                stats.inbox_unavailable += count;
                Ok(Vec::new())
            }
            Err(error) => Err(error),
        }
    }

    /// Deletes in batches of 10; entries that fail are retried once, then logged (they will
    /// be delivered again, and deduplicated downstream).
    async fn delete(&self, receipts: Vec<(String, String)>, stats: &mut SourceStats) {
        for chunk in receipts.chunks(10) {
            let mut pending: Vec<(String, &str, &str)> = chunk
                .iter()
                .enumerate()
                .map(|(i, (id, receipt))| (i.to_string(), id.as_str(), receipt.as_str()))
                .collect();
            for attempt in 1..=2 {
                let entries: Vec<DeleteMessageBatchRequestEntry> = pending
                    .iter()
                    .filter_map(|(entry, _, receipt)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(entry)
                            .receipt_handle(*receipt)
                            .build()
                            .ok()
                    })
                    .collect();
                let result = self
                    .client
                    .delete_message_batch()
                    .queue_url(&self.queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await;
                match result {
                    Ok(output) => {
                        let failed: Vec<&str> = output.failed().iter().map(|f| f.id()).collect();
                        for failure in output.failed() {
                            tracing::debug!(
                                attempt,
                                code = failure.code(),
                                message = failure.message(),
                                "delete entry failed"
                            );
                        }
                        let before = pending.len();
                        pending.retain(|(entry, _, _)| failed.contains(&entry.as_str()));
                        stats.deleted += (before - pending.len()) as u64;
                    }
                    Err(e) => {
                        let error = error::from_sdk("DeleteMessageBatch", &self.queue_url, e);
                        tracing::debug!(attempt, %error, "delete batch failed");
                    }
                }
                if pending.is_empty() {
                    break;
                }
            }
            if !pending.is_empty() {
                let ids: Vec<&str> = pending.iter().map(|(_, id, _)| *id).collect();
                tracing::warn!(
                    ?ids,
                    "could not delete messages after a retry; they will be delivered again \
                     after the visibility timeout and deduplicated downstream"
                );
                stats.delete_failed += pending.len() as u64;
            }
        }
    }
}

/// The [`RawDelivery`] of a message: its body, the `MessageId`, the system attributes and the
/// string/number message attributes as headers (sorted by name), and `received_at` from the
/// `SentTimestamp` attribute, or `now` when the queue gives none.
pub(crate) fn to_delivery(message: &Message, now: DateTime<Utc>) -> RawDelivery {
    let mut headers = Headers::new();
    if let Some(id) = message.message_id() {
        headers.insert(MESSAGE_ID_HEADER, id);
    }
    let mut system: Vec<(&str, &str)> = message
        .attributes()
        .map(|a| a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .unwrap_or_default();
    system.sort_unstable();
    for (name, value) in &system {
        headers.insert(*name, *value);
    }
    let mut custom: Vec<(&str, &str)> = message
        .message_attributes()
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| v.string_value().map(|s| (k.as_str(), s)))
                .collect()
        })
        .unwrap_or_default();
    custom.sort_unstable();
    for (name, value) in &custom {
        headers.insert(*name, *value);
    }
    let sent = message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
        .and_then(|millis| millis.trim().parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_millis);
    RawDelivery {
        body: message.body().unwrap_or_default().as_bytes().to_vec(),
        headers,
        received_at: sent.unwrap_or(now),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use aws_sdk_sqs::types::MessageAttributeValue;

    use super::*;

    #[test]
    fn deliveries_carry_the_message_id_attributes_and_sent_timestamp() {
        let message = Message::builder()
            .message_id("m-1")
            .receipt_handle("r")
            .body(r#"{"id":"s1"}"#)
            .attributes(MessageSystemAttributeName::SentTimestamp, "1712163088943")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "2")
            .message_attributes(
                "trace",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("abc")
                    .build()
                    .unwrap(),
            )
            .build();
        let now = DateTime::from_timestamp(0, 0).unwrap();
        let delivery = to_delivery(&message, now);
        assert_eq!(delivery.body, br#"{"id":"s1"}"#);
        assert_eq!(delivery.headers.get("messageid"), Some("m-1"));
        assert_eq!(delivery.headers.get("ApproximateReceiveCount"), Some("2"));
        assert_eq!(delivery.headers.get("trace"), Some("abc"));
        assert_eq!(
            delivery.received_at.to_rfc3339(),
            "2024-04-03T16:51:28.943+00:00"
        );
    }

    #[test]
    fn copies_in_flight_or_already_accepted_are_not_processed_twice() {
        let seen = Seen::default();
        assert_eq!(seen.claim("m1", "r1"), Claim::New);
        assert_eq!(seen.claim("m1", "r2"), Claim::InFlight);
        // The newest receipt handle is the one to delete with.
        assert_eq!(seen.release("m1", "r1".into(), true), "r2");
        assert_eq!(seen.claim("m1", "r3"), Claim::Done);
        // Not accepted: a later copy is processed again.
        assert_eq!(seen.claim("m2", "r1"), Claim::New);
        assert_eq!(seen.release("m2", "r1".into(), false), "r1");
        assert_eq!(seen.claim("m2", "r2"), Claim::New);
        // Messages without an id are never deduplicated.
        assert_eq!(seen.claim("", "r"), Claim::New);
        assert_eq!(seen.claim("", "r"), Claim::New);
    }

    #[test]
    fn the_accepted_window_is_bounded() {
        let seen = Seen::default();
        for i in 0..=REMEMBERED {
            let id = i.to_string();
            assert_eq!(seen.claim(&id, "r"), Claim::New);
            seen.release(&id, "r".into(), true);
        }
        assert_eq!(
            seen.claim("0", "r"),
            Claim::New,
            "the oldest id was forgotten"
        );
        assert_eq!(seen.claim(&REMEMBERED.to_string(), "r"), Claim::Done);
    }

    #[test]
    fn received_at_falls_back_to_the_clock() {
        let message = Message::builder().message_id("m").body("x").build();
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        assert_eq!(to_delivery(&message, now).received_at, now);
        let odd = Message::builder()
            .attributes(MessageSystemAttributeName::SentTimestamp, "soon")
            .build();
        assert_eq!(to_delivery(&odd, now).received_at, now);
    }
}
