//! HTTP push subscriptions: signed POSTs, one per feed item, retried per item on a durable
//! schedule, in feed order per shipment.
//!
//! The driver works in **rounds**, each under the subscription's lease:
//!
//! 1. read the subscription's state (an operator may have paused, resumed or redelivered) and,
//!    after a takeover or an operator's change, its parked messages;
//! 2. pick the parked messages that are due and at the head of their shipment (no earlier
//!    parked item shares one of their ordering keys);
//! 3. read a page of the feed after the cursor; an item whose shipment has a parked message is
//!    parked behind it at once (never sent ahead of it), the others are grouped by shipment;
//! 4. send: up to `concurrency` groups at a time, each group's items one after the other,
//!    stopping at its first failure (the rest of the group is parked behind it);
//! 5. write, in one transaction under the lease: the messages parked, updated (attempts, next
//!    attempt) or delivered, the subscription's health, and the cursor past the page.
//!
//! So the cursor never waits for a retry: a failing shipment holds back its own later items
//! only. A crash before step 5 sends the round again: at-least-once, under the same
//! `webhook-id`s, which receivers deduplicate on.
//!
//! **When the receiver is down** (a round's new items all fail, nothing succeeds) the
//! subscription is *failing*: it stops reading the feed, so the parked set does not grow with
//! the whole backlog, and probes with one new item per first retry interval besides the parked
//! messages' own retries. The first success ends it. Failing longer than `disable_after`
//! disables the subscription; a 410 Gone answer does at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::future::Either;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use shipfeed_store::{
    Clock, FeedItem, FeedPage, Filter, Lease, PushCommit, PushMessage, PushState, Store,
    StoreError, SubscriptionControl, SubscriptionStatus,
};

use crate::http::{Attempt, Endpoint};
use crate::metrics::Series;
use crate::target::message_id;
use crate::HttpTarget;

/// The most parked messages a subscription keeps pending before it stops reading the feed
/// (its driver holds them in memory).
const MAX_PENDING: usize = 10_000;

/// How long a busy driver goes on with the operator's state it read (an idle one reads it at
/// every round).
const CONTROL_EVERY: Duration = Duration::from_millis(250);

/// Why a message waits without having been attempted.
const WAITING: &str = "waiting for an earlier item of its shipment";

/// What orders an item: no later item sharing one of these keys is delivered before it. The
/// shipment (an event's revisions may move it to another shipment when identities are
/// linked: its event id orders those).
pub(crate) fn ordering_keys(item: &FeedItem) -> Vec<String> {
    let mut keys: Vec<String> = item
        .shipment_key()
        .map(|key| format!("shipment:{key}"))
        .into_iter()
        .collect();
    match item {
        FeedItem::Event(event) => keys.push(format!("event:{}", event.event.event_id.as_str())),
        FeedItem::Retraction(retraction) => keys.push(format!("event:{}", retraction.event_id)),
        _ => {}
    }
    keys
}

/// The parked messages of the epoch and operator's version they were read under.
struct Loaded {
    epoch: i64,
    version: i64,
    failing_since: Option<DateTime<Utc>>,
    /// By feed seq.
    pending: BTreeMap<i64, PushMessage>,
}

/// What a round came to.
pub(crate) enum Round {
    /// It did something: go on at once.
    More,
    /// Nothing to do before this long (or before new items are stored).
    Wait(Duration),
}

/// One HTTP push subscription's driver state.
pub(crate) struct Pusher {
    name: String,
    cursor: String,
    endpoint: Endpoint,
    target: HttpTarget,
    store: Store,
    clock: Arc<dyn Clock>,
    batch_size: usize,
    filter: Filter,
    series: Series,
    loaded: Option<Loaded>,
    throttled_until: Option<DateTime<Utc>>,
    last_probe: Option<DateTime<Utc>>,
    /// The next page, read while the previous one was sent: `(after, limit, page)`.
    prefetched: Option<(i64, usize, FeedPage)>,
    /// The operator's state and when it was read.
    control: Option<(std::time::Instant, SubscriptionControl)>,
    /// Whether the last round ended in a wait (the next one reads the operator's state).
    waited: bool,
}

/// An item to send: its message (attempts so far, retry state; its `body` only filled in when
/// it is parked), the request body, and whether it was parked.
struct Outgoing {
    message: PushMessage,
    body: bytes::Bytes,
    parked: bool,
}

impl Outgoing {
    /// A parked message, sent again.
    fn parked(message: &PushMessage) -> Self {
        Outgoing {
            body: bytes::Bytes::from(message.body.clone().into_bytes()),
            message: message.clone(),
            parked: true,
        }
    }

    /// An item never attempted.
    fn new(item: &FeedItem, now: DateTime<Utc>) -> Self {
        // A feed item always serializes (no map with non-string keys in it).
        let body = serde_json::to_vec(item).unwrap_or_default();
        Outgoing {
            message: PushMessage {
                seq: item.seq(),
                webhook_id: message_id(item),
                ordering_keys: ordering_keys(item),
                state: PushState::Pending,
                attempts: 0,
                next_attempt_at: now,
                first_failed_at: now,
                last_status: None,
                last_error: Some(WAITING.to_owned()),
                body: String::new(),
            },
            body: bytes::Bytes::from(body),
            parked: false,
        }
    }

    /// Its message as it is parked: with its body.
    fn into_parked(self) -> PushMessage {
        let mut message = self.message;
        if message.body.is_empty() {
            message.body = String::from_utf8_lossy(&self.body).into_owned();
        }
        message
    }
}

impl Pusher {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: &str,
        cursor: &str,
        target: &HttpTarget,
        store: Store,
        clock: Arc<dyn Clock>,
        batch_size: usize,
        filter: Filter,
        series: Series,
    ) -> Result<Self, reqwest::Error> {
        Ok(Pusher {
            name: name.to_owned(),
            cursor: cursor.to_owned(),
            endpoint: Endpoint::new(
                target.url.clone(),
                target.secrets.clone(),
                target.timeout,
                target.concurrency,
            )?,
            target: target.clone(),
            store,
            clock,
            batch_size,
            filter,
            series,
            loaded: None,
            throttled_until: None,
            last_probe: None,
            prefetched: None,
            control: None,
            waited: false,
        })
    }

    /// Forgets what it read from the store (after a failed write or a lost lease).
    pub(crate) fn forget(&mut self) {
        self.loaded = None;
        self.prefetched = None;
        self.control = None;
    }

    /// One round from `position`: the new cursor position (when it moved) and what to do next.
    pub(crate) async fn round(
        &mut self,
        lease: &Lease,
        position: i64,
    ) -> Result<(Option<i64>, Round), StoreError> {
        // The operator's state, read again at most every CONTROL_EVERY while busy (and at
        // every round after a wait).
        let control = match self.control.take() {
            Some((read, control)) if read.elapsed() < CONTROL_EVERY && !self.waited => {
                (read, control)
            }
            _ => (
                std::time::Instant::now(),
                self.store.subscription_control(&self.name).await?,
            ),
        };
        let control = &self.control.insert(control).1.clone();
        self.waited = false;
        self.load(lease, control).await?;
        let now = self.clock.now();
        if control.status != SubscriptionStatus::Active {
            self.waited = true;
            return Ok((None, Round::Wait(Duration::MAX)));
        }
        if let Some(until) = self.throttled_until.filter(|until| *until > now) {
            self.waited = true;
            return Ok((None, Round::Wait(until_from(now, until))));
        }
        // Taken out for the round, put back when it succeeds: after a failure, the next round
        // reads it from the store again.
        let Some(mut loaded) = self.loaded.take() else {
            return Err(StoreError::Internal("push state not loaded".into()));
        };

        // The parked messages due now that no earlier parked item holds back.
        let mut held: HashSet<String> = HashSet::new();
        let mut groups: Vec<Vec<Outgoing>> = Vec::new();
        let mut next_due: Option<DateTime<Utc>> = None;
        for message in loaded.pending.values() {
            let head = message.ordering_keys.iter().all(|key| !held.contains(key));
            held.extend(message.ordering_keys.iter().cloned());
            if !head {
                continue;
            }
            if message.next_attempt_at <= now {
                if groups.len() < self.batch_size {
                    groups.push(vec![Outgoing::parked(message)]);
                }
            } else {
                next_due = Some(next_due.map_or(message.next_attempt_at, |at| {
                    at.min(message.next_attempt_at)
                }));
            }
        }

        // New items: all of a page while delivering, one probe now and then while failing.
        let first_wait = self.first_wait();
        let limit = if loaded.pending.len() >= MAX_PENDING {
            0
        } else if loaded.failing_since.is_none() {
            self.batch_size
        } else if self
            .last_probe
            .is_none_or(|probe| now >= probe + first_wait)
        {
            self.last_probe = Some(now);
            1
        } else {
            next_due = Some(next_due.map_or(now + first_wait, |at| at.min(now + first_wait)));
            0
        };
        let mut commit = PushCommit::default();
        let mut read_to = None;
        let mut prefetch_from = None;
        if limit > 0 {
            let page = match self.prefetched.take() {
                Some((after, read, page)) if after == position && read == limit => page,
                _ => self.store.feed_page(position, limit, &self.filter).await?,
            };
            if page.items.len() == limit && limit == self.batch_size {
                // More is likely waiting: read it while this page is sent.
                prefetch_from = Some(page.next_cursor);
            }
            if page.next_cursor > position {
                read_to = Some(page.next_cursor);
                commit.cursor = Some(page.next_cursor);
            }
            let mut group_of: HashMap<String, usize> = HashMap::new();
            for item in page.items {
                let outgoing = Outgoing::new(&item, now);
                let keys = &outgoing.message.ordering_keys;
                if keys.iter().any(|key| held.contains(key)) {
                    held.extend(keys.iter().cloned());
                    commit.park.push(outgoing.into_parked());
                    continue;
                }
                let group = place(&mut groups, &mut group_of, keys);
                groups[group].push(outgoing);
            }
        }

        // Send, then account for every attempt.
        let attempted = !groups.is_empty();
        let endpoint = &self.endpoint;
        let clock = &self.clock;
        let per_item = |groups: Vec<Vec<Outgoing>>| {
            futures_util::stream::iter(groups.into_iter().map(|group| async move {
                let mut done = Vec::with_capacity(group.len());
                let mut stopped = false;
                for outgoing in group {
                    if stopped {
                        done.push((outgoing, None));
                        continue;
                    }
                    let attempt = endpoint
                        .post(
                            &outgoing.message.webhook_id,
                            clock.now().timestamp(),
                            outgoing.body.clone(),
                        )
                        .await;
                    stopped = attempt != Attempt::Delivered;
                    done.push((outgoing, Some(attempt)));
                }
                done
            }))
            .buffer_unordered(self.target.concurrency.max(1))
            .collect::<Vec<Vec<(Outgoing, Option<Attempt>)>>>()
        };
        let sends = match self.target.batch {
            None => Either::Left(per_item(groups)),
            Some(size) => {
                let mut items: Vec<Outgoing> = groups.into_iter().flatten().collect();
                items.sort_by_key(|outgoing| outgoing.message.seq);
                Either::Right(send_batches(endpoint, clock, items, size))
            }
        };
        let (store, filter, batch_size) = (&self.store, &self.filter, self.batch_size);
        let prefetch = async move {
            match prefetch_from {
                Some(after) => Some((after, store.feed_page(after, batch_size, filter).await)),
                None => None,
            }
        };
        let (results, prefetched) = tokio::join!(sends, prefetch);
        self.prefetched = match prefetched {
            Some((after, Ok(page))) => Some((after, batch_size, page)),
            _ => None, // read again next round
        };

        let (mut delivered, mut failed_new, mut failed) = (0_u64, 0_u64, 0_u64);
        let mut exhausted = 0_u64;
        for (outgoing, attempt) in results.into_iter().flatten() {
            if attempt == Some(Attempt::Delivered) {
                delivered += 1;
                if outgoing.parked {
                    commit.delivered.push(outgoing.message.seq);
                }
                continue;
            }
            let parked = outgoing.parked;
            let mut message = outgoing.into_parked();
            match attempt {
                Some(Attempt::Delivered) => {}
                None => {} // behind a failure in its group: parked as it is
                Some(Attempt::Failed {
                    status,
                    error,
                    throttle,
                    gone,
                }) => {
                    failed += 1;
                    if !parked {
                        failed_new += 1;
                        message.first_failed_at = now;
                    }
                    message.attempts = message.attempts.saturating_add(1);
                    message.last_status = status;
                    message.last_error = Some(error);
                    match self.wait_after(&message) {
                        Some(wait) => message.next_attempt_at = now + wait,
                        None => {
                            message.state = PushState::Exhausted;
                            exhausted += 1;
                        }
                    }
                    if let Some(asked) = throttle {
                        let pause = asked.unwrap_or(first_wait.to_std().unwrap_or_default());
                        let until = now + TimeDelta::from_std(pause).unwrap_or(first_wait);
                        message.next_attempt_at = message.next_attempt_at.max(until);
                        self.throttled_until =
                            Some(self.throttled_until.map_or(until, |at| at.max(until)));
                    }
                    if gone {
                        commit.disable = Some("the receiver answered 410 Gone".to_owned());
                    }
                }
            }
            commit.park.push(message);
        }

        // Health: any success ends a failure; new items all failing starts one.
        let failing_since = if delivered > 0 {
            None
        } else if failed_new > 0 {
            Some(loaded.failing_since.unwrap_or(now))
        } else {
            loaded.failing_since
        };
        if failing_since != loaded.failing_since {
            commit.failing_since = Some(failing_since);
        }
        if let Some(since) = failing_since.filter(|_| failed > 0) {
            let limit = TimeDelta::from_std(self.target.disable_after).unwrap_or(TimeDelta::MAX);
            if now - since >= limit && commit.disable.is_none() {
                commit.disable = Some(format!(
                    "every attempt has failed since {} (longer than disable_after, {})",
                    since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    humantime::format_duration(self.target.disable_after)
                ));
            }
        }

        if commit != PushCommit::default() {
            let parked = commit.park.clone();
            let removed = commit.delivered.clone();
            let disabled = commit.disable.clone();
            self.store
                .commit_push(lease, &self.name, &self.cursor, commit, now)
                .await?;
            for seq in removed {
                loaded.pending.remove(&seq);
            }
            for message in parked {
                if message.state == PushState::Pending {
                    loaded.pending.insert(message.seq, message);
                } else {
                    loaded.pending.remove(&message.seq);
                }
            }
            loaded.failing_since = failing_since;
            if let Some(reason) = disabled {
                tracing::warn!(subscription = %self.name, %reason, "subscription disabled; resume it once its receiver is fixed");
                // Read the state again at once: nothing more is sent while it is disabled.
                self.control = None;
            }
        }
        self.series.delivered.inc_by(delivered);
        self.series.failures.inc_by(failed);
        self.series.exhausted.inc_by(exhausted);
        self.series
            .parked
            .set(i64::try_from(loaded.pending.len()).unwrap_or(i64::MAX));
        if failed > 0 {
            tracing::warn!(subscription = %self.name, failed, delivered, parked = loaded.pending.len(), "push attempts failed; each is retried on its schedule");
        }
        self.loaded = Some(loaded);
        let round = if attempted || read_to.is_some() {
            Round::More
        } else {
            self.waited = true;
            Round::Wait(next_due.map_or(Duration::MAX, |at| until_from(now, at)))
        };
        Ok((read_to, round))
    }

    /// Reads the parked messages again after a takeover or an operator's change.
    async fn load(
        &mut self,
        lease: &Lease,
        control: &SubscriptionControl,
    ) -> Result<(), StoreError> {
        if self
            .loaded
            .as_ref()
            .is_some_and(|loaded| loaded.epoch == lease.epoch && loaded.version == control.version)
        {
            return Ok(());
        }
        let mut pending = BTreeMap::new();
        let mut after = 0;
        loop {
            let page = self
                .store
                .push_messages(&self.name, Some(PushState::Pending), after, 1000)
                .await?;
            let Some(last) = page.last().map(|message| message.seq) else {
                break;
            };
            pending.extend(page.into_iter().map(|message| (message.seq, message)));
            after = last;
        }
        self.throttled_until = None;
        self.loaded = Some(Loaded {
            epoch: lease.epoch,
            version: control.version,
            failing_since: control.failing_since,
            pending,
        });
        Ok(())
    }

    /// The first wait of the schedule: how often a failing subscription probes.
    fn first_wait(&self) -> TimeDelta {
        self.target
            .retry_schedule
            .first()
            .and_then(|wait| TimeDelta::from_std(*wait).ok())
            .unwrap_or(TimeDelta::seconds(5))
    }

    /// The wait before the next attempt of a message that has failed `attempts` times, with
    /// jitter (±20 %, the same for the same message and attempt on every replica); `None`
    /// when the schedule is used up.
    fn wait_after(&self, message: &PushMessage) -> Option<TimeDelta> {
        let index = usize::try_from(message.attempts).ok()?.checked_sub(1)?;
        let base = *self.target.retry_schedule.get(index)?;
        let digest = Sha256::digest(format!("{}:{}", message.webhook_id, message.attempts));
        let mut bytes = [0_u8; 2];
        bytes.copy_from_slice(&digest[..2]);
        // 0.8 to 1.2 times the scheduled wait.
        let factor = 0.8 + 0.4 * f64::from(u16::from_be_bytes(bytes)) / f64::from(u16::MAX);
        TimeDelta::from_std(base.mul_f64(factor)).ok()
    }
}

/// Sends `items` (in feed order) in batches of `size`, one batch after the other, stopping at
/// the first that fails (the items after it are not attempted).
async fn send_batches(
    endpoint: &Endpoint,
    clock: &Arc<dyn Clock>,
    items: Vec<Outgoing>,
    size: usize,
) -> Vec<Vec<(Outgoing, Option<Attempt>)>> {
    let mut done = Vec::new();
    let mut stopped = false;
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let chunk: Vec<Outgoing> = items.by_ref().take(size.max(1)).collect();
        if stopped {
            done.push(chunk.into_iter().map(|outgoing| (outgoing, None)).collect());
            continue;
        }
        let (webhook_id, body) = batch_request(&chunk);
        let attempt = endpoint
            .post(&webhook_id, clock.now().timestamp(), body)
            .await;
        stopped = attempt != Attempt::Delivered;
        done.push(
            chunk
                .into_iter()
                .map(|outgoing| (outgoing, Some(attempt.clone())))
                .collect(),
        );
    }
    done
}

/// A batch's `webhook-id` and body: `batch:` and the first 16 bytes (hex) of the SHA-256 of
/// its items' ids, so that the same items always make the same id; the body
/// `{"type":"batch","items":[...]}` holds each item's JSON as it would be sent alone.
fn batch_request(chunk: &[Outgoing]) -> (String, bytes::Bytes) {
    let mut digest = Sha256::new();
    let mut body = Vec::with_capacity(
        32 + chunk
            .iter()
            .map(|outgoing| outgoing.body.len() + 1)
            .sum::<usize>(),
    );
    body.extend_from_slice(br#"{"type":"batch","items":["#);
    for (n, outgoing) in chunk.iter().enumerate() {
        digest.update(outgoing.message.webhook_id.as_bytes());
        digest.update(b"\n");
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&outgoing.body);
    }
    body.extend_from_slice(b"]}");
    let id = format!("batch:{}", hex::encode(&digest.finalize()[..16]));
    (id, bytes::Bytes::from(body))
}

/// The group an item with these ordering keys joins: the one holding an earlier item that
/// shares a key (groups sharing keys through it are merged, in feed order), or a new one.
fn place(
    groups: &mut Vec<Vec<Outgoing>>,
    group_of: &mut HashMap<String, usize>,
    keys: &[String],
) -> usize {
    let mut found: Vec<usize> = keys
        .iter()
        .filter_map(|key| group_of.get(key).copied())
        .collect();
    found.sort_unstable();
    found.dedup();
    let group = match found.split_first() {
        None => {
            groups.push(Vec::new());
            groups.len() - 1
        }
        Some((&first, others)) => {
            for &other in others {
                let moved = std::mem::take(&mut groups[other]);
                groups[first].extend(moved);
                for target in group_of.values_mut() {
                    if *target == other {
                        *target = first;
                    }
                }
            }
            groups[first].sort_by_key(|outgoing| outgoing.message.seq);
            first
        }
    };
    for key in keys {
        group_of.insert(key.clone(), group);
    }
    group
}

fn until_from(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_sharing_a_key_share_a_group_in_feed_order_and_a_batch_is_named_by_its_items() {
        let outgoing = |seq: i64, keys: &[&str]| Outgoing {
            message: PushMessage {
                seq,
                webhook_id: seq.to_string(),
                ordering_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
                state: PushState::Pending,
                attempts: 0,
                next_attempt_at: DateTime::UNIX_EPOCH,
                first_failed_at: DateTime::UNIX_EPOCH,
                last_status: None,
                last_error: None,
                body: String::new(),
            },
            body: bytes::Bytes::from(format!(r#"{{"seq":{seq}}}"#)),
            parked: false,
        };
        let (id, body) = batch_request(&[outgoing(1, &[]), outgoing(2, &[])]);
        assert_eq!(
            body.as_ref(),
            br#"{"type":"batch","items":[{"seq":1},{"seq":2}]}"#
        );
        assert_eq!(
            batch_request(&[outgoing(1, &["a"]), outgoing(2, &[])]).0,
            id,
            "named by its items"
        );
        assert_ne!(batch_request(&[outgoing(1, &[])]).0, id);
        assert!(
            id.starts_with("batch:") && id.len() == "batch:".len() + 32,
            "{id}"
        );
        let mut groups = Vec::new();
        let mut group_of = HashMap::new();
        for (seq, keys) in [
            (1, &["a", "e1"][..]),
            (2, &["b", "e2"][..]),
            (3, &["a", "e3"][..]),
            (4, &["c", "e2"][..]), // joins b's group through e2
            (5, &["d"][..]),
            (6, &["c", "e1"][..]), // joins a's and (through c) b's
        ] {
            let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
            let group = place(&mut groups, &mut group_of, &keys);
            groups[group].push(outgoing(seq, &[]));
        }
        let seqs: Vec<Vec<i64>> = groups
            .iter()
            .filter(|group| !group.is_empty())
            .map(|group| group.iter().map(|o| o.message.seq).collect())
            .collect();
        assert_eq!(seqs, vec![vec![1, 2, 3, 4, 6], vec![5]]);
    }
}
