//! The SQS source against a real SQS-compatible server (`moto_server`, started per test).
//! Bounded waits with generous limits; no timing thresholds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shipfeed_core::{ErrorKind, Status};
use shipfeed_sqs::{DeadLetterPolicy, Inbox, QueueRef, SourceStats, SqsSource};
use support::{
    adapter, assert_deleted_after_confirmed, body, config, config_at, create_queue, send_all,
    setup_client, setup_client_at, unique_name, wait_until, Event, HangingInbox, Moto, Recorder,
    RecordingInbox,
};
use tokio::sync::watch;

const LIMIT: Duration = Duration::from_secs(180);

/// Polls until a receive returns messages; the stats of that poll.
async fn poll_until_received(source: &SqsSource, inbox: &dyn Inbox) -> SourceStats {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let stats = source.poll_once(inbox).await.expect("poll");
        if stats.received > 0 {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message received within {LIMIT:?}"
        );
    }
}

/// Every documented status (varied case), a blank, null and absent status, an unknown status
/// and malformed bodies: each message reaches the inbox exactly once, is deleted only after the
/// inbox confirmed, and every one of them is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_normalized_once_and_deleted_after_the_inbox_confirmed() {
    let moto = Moto::start();
    // Everything goes through the recorder, so that the queue URLs name one host.
    let recorder = Arc::new(Recorder::start(&moto.endpoint));
    let client = setup_client_at(&recorder.endpoint);
    let name = unique_name("mixed");
    let url = create_queue(&client, &name, 60).await;

    let statuses = [
        r#""New""#,
        r#""INFO""#,
        r#""pickup""#,
        r#""First Scan at LMC""#,
        r#""hub scan at lmc""#,
        r#""In transit""#,
        r#""Out for Delivery""#,
        r#""Delivery attempt failed""#,
        r#""Delivered to pickup point""#,
        r#""DELIVERED""#,
        r#""Postal return""#,
        r#""""#,
        "null",
        r#""Parcel beamed up""#,
    ];
    let mut bodies: Vec<String> = statuses
        .iter()
        .enumerate()
        .map(|(n, s)| body(n, s))
        .collect();
    bodies.push(r#"{"id":"s900","status_time":"03.04.2024 20:22:30"}"#.to_owned()); // absent
    bodies.push("{not json".to_owned());
    bodies.push(r#"{"id":"s902","status":"Delivered","status_time":"2024-04-03"}"#.to_owned());
    let total = bodies.len();
    send_all(&client, &url, &bodies).await;

    let inbox = Arc::new(RecordingInbox::checking(Arc::clone(&recorder)));
    // By name: exercises GetQueueUrl.
    let source = SqsSource::connect(
        config_at(&recorder.endpoint, QueueRef::Name(name)).with_pollers(2),
        adapter(),
    )
    .await
    .expect("connect");
    assert_eq!(source.queue_url(), url);
    let (stop, shutdown) = watch::channel(false);
    let dyn_inbox: Arc<dyn Inbox> = inbox.clone();
    let running = tokio::spawn({
        let source = source.clone();
        async move { source.run(dyn_inbox, shutdown).await }
    });
    wait_until(LIMIT, "every message in the inbox", || async {
        inbox.len() >= total
    })
    .await;
    // The pollers finish their batches (inbox, then delete) before `run` returns.
    stop.send(true).unwrap();
    let stats = running.await.unwrap().expect("run");

    let deleted = assert_deleted_after_confirmed(&recorder.events());
    let accepted: HashSet<String> = inbox.counts().into_keys().collect();
    assert_eq!(
        deleted, accepted,
        "moto confirmed the delete of every message"
    );
    let counts = inbox.counts();
    assert_eq!(counts.len(), total, "distinct messages");
    assert!(
        counts.values().all(|c| *c == 1),
        "each message exactly once: {counts:?}"
    );
    // moto, like SQS, may hand a message out twice to concurrent pollers: the copy is
    // counted, never processed twice.
    assert_eq!(stats.received, total as u64 + stats.duplicates);
    assert_eq!(stats.accepted + stats.dead_lettered, total as u64);
    assert_eq!(stats.dead_lettered, 2);
    assert_deleted(stats, total);

    let records = inbox.records();
    // received_at is the queue's SentTimestamp, not the consumer's clock.
    for record in &records {
        let sent = record
            .sent_timestamp
            .as_deref()
            .expect("SentTimestamp attribute");
        assert_eq!(record.received_at.timestamp_millis().to_string(), sent);
    }
    let status_of = |shipment: &str| {
        let record = records
            .iter()
            .find(|r| r.body.contains(&format!(r#""id":"{shipment}""#)))
            .unwrap_or_else(|| panic!("{shipment} not in the inbox"));
        let outputs = record.outputs.as_ref().expect("normalized");
        let event = outputs[0].as_event().expect("event");
        assert_eq!(
            event.delivery_id.as_deref(),
            Some(record.message_id.as_str())
        );
        (event.status, event.substatus.clone())
    };
    assert_eq!(status_of("s0"), (Some(Status::PreTransit), None));
    assert_eq!(
        status_of("s2"),
        (Some(Status::InTransit), Some("in_transit.picked_up".into()))
    );
    assert_eq!(status_of("s9"), (Some(Status::Delivered), None));
    assert_eq!(status_of("s10"), (Some(Status::ReturnToSender), None));
    assert_eq!(status_of("s11"), (None, None), "blank status");
    assert_eq!(status_of("s12"), (None, None), "null status");
    assert_eq!(status_of("s900"), (None, None), "absent status");
    assert_eq!(
        status_of("s13"),
        (Some(Status::Unknown), Some("unknown.unmapped".into()))
    );
    let dead: Vec<_> = records.iter().filter(|r| r.outputs.is_err()).collect();
    assert_eq!(dead.len(), 2);
    assert!(dead
        .iter()
        .all(|r| matches!(r.outputs, Err((ErrorKind::Payload, _)))));
    assert!(dead
        .iter()
        .any(|r| r.outputs.as_ref().err().and_then(|e| e.1.as_deref()) == Some("status_time")));
}

/// A temporarily failing inbox leaves the batch on the queue; it comes back after the
/// visibility timeout and is then accepted and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_inbox_failure_leaves_messages_for_redelivery() {
    let moto = Moto::start();
    let client = setup_client(&moto);
    let url = create_queue(&client, &unique_name("inboxfail"), 60).await;
    let bodies: Vec<String> = (0..3).map(|n| body(n, r#""In transit""#)).collect();
    send_all(&client, &url, &bodies).await;

    let inbox = Arc::new(RecordingInbox::default());
    inbox.fail_first.store(1, Ordering::SeqCst);
    let source = SqsSource::connect(
        config(&moto, QueueRef::Url(url.clone())).with_visibility_timeout(Duration::from_secs(2)),
        adapter(),
    )
    .await
    .expect("connect");

    // The first batch fails in the inbox: no delete is even attempted (an attempt ends in
    // `deleted` or `delete_failed`).
    let first = poll_until_received(&source, inbox.as_ref()).await;
    assert!(first.received > 0);
    assert_eq!(first.inbox_unavailable, first.received);
    assert_eq!((first.deleted, first.delete_failed), (0, 0), "{first:?}");
    assert_eq!(inbox.len(), 0);
    let failed = inbox.failed.lock().unwrap().clone();
    assert_eq!(failed.len() as u64, first.received);

    // After the visibility timeout the messages come back and are accepted, then deleted.
    let later = Arc::new(Mutex::new(SourceStats::default()));
    wait_until(LIMIT, "all three accepted", || {
        let (source, inbox, later) = (source.clone(), inbox.clone(), later.clone());
        async move {
            let stats = source.poll_once(inbox.as_ref()).await.expect("poll");
            *later.lock().unwrap() += stats;
            inbox.len() >= 3
        }
    })
    .await;
    let later = *later.lock().unwrap();
    let counts = inbox.counts();
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|c| *c == 1));
    assert!(
        failed.iter().all(|id| counts.contains_key(id)),
        "the failed batch came back: {failed:?} vs {counts:?}"
    );
    assert_eq!(later.accepted, 3, "{later:?}");
    assert_deleted(later, 3);
    assert_eq!(later.delete_failed, 0, "{later:?}");
}

/// A consumer that dies between receive and the inbox's confirmation loses nothing: it deletes
/// nothing, the messages reappear after the visibility timeout and the next consumer processes
/// and deletes every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_receive_and_inbox_loses_nothing() {
    const TOTAL: usize = 25;
    let moto = Moto::start();
    let client = setup_client(&moto);
    let url = create_queue(&client, &unique_name("crash"), 60).await;
    let bodies: Vec<String> = (0..TOTAL)
        .map(|n| body(n, r#""Out for delivery""#))
        .collect();
    send_all(&client, &url, &bodies).await;
    let make_config = |endpoint: &str| {
        config_at(endpoint, QueueRef::Url(url.clone()))
            .with_pollers(2)
            .with_visibility_timeout(Duration::from_secs(2))
    };

    // The doomed consumer talks to moto through a recorder: what it received and asked to
    // delete is known exactly (moto's queue counters are approximate).
    let recorder = Recorder::start(&moto.endpoint);
    let arrived = Arc::new(tokio::sync::Notify::new());
    let hanging: Arc<dyn Inbox> = Arc::new(HangingInbox {
        arrived: arrived.clone(),
    });
    let doomed = SqsSource::connect(make_config(&recorder.endpoint), adapter())
        .await
        .expect("connect");
    let (_stop, shutdown) = watch::channel(false);
    let crashed = tokio::spawn(async move { doomed.run(hanging, shutdown).await });
    tokio::time::timeout(LIMIT, arrived.notified())
        .await
        .expect("a batch reached the inbox");
    crashed.abort();
    assert!(crashed.await.unwrap_err().is_cancelled());
    let seen_by_crashed = recorder.events();
    assert_eq!(
        recorder.delete_requests(),
        Vec::<String>::new(),
        "nothing deleted by the crashed consumer"
    );
    let taken: BTreeSet<String> = seen_by_crashed
        .iter()
        .filter_map(|e| match e {
            Event::Received(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    assert!(!taken.is_empty(), "the crashed consumer received messages");

    let inbox = Arc::new(RecordingInbox::default());
    let source = SqsSource::connect(make_config(&moto.endpoint), adapter())
        .await
        .expect("connect");
    let (stop, shutdown) = watch::channel(false);
    let dyn_inbox: Arc<dyn Inbox> = inbox.clone();
    let running = tokio::spawn(async move { source.run(dyn_inbox, shutdown).await });
    wait_until(LIMIT, "all 25 bodies accepted", || async {
        let accepted: HashSet<String> = inbox.records().into_iter().map(|r| r.body).collect();
        bodies.iter().all(|b| accepted.contains(b))
    })
    .await;
    // The pollers finish their batches (inbox, then delete) before `run` returns.
    stop.send(true).unwrap();
    let stats = running.await.unwrap().expect("run");

    let records = inbox.records();
    let counts = inbox.counts();
    assert_eq!(counts.len(), TOTAL, "{counts:?}");
    assert!(counts.values().all(|c| *c == 1), "{counts:?}");
    let mut accepted: Vec<&str> = records.iter().map(|r| r.body.as_str()).collect();
    accepted.sort_unstable();
    let mut sent: Vec<&str> = bodies.iter().map(String::as_str).collect();
    sent.sort_unstable();
    assert_eq!(accepted, sent, "every body exactly once");
    assert!(
        taken.iter().all(|id| counts.contains_key(id)),
        "what the crashed consumer held came back: {taken:?}"
    );
    assert_eq!(stats.accepted, TOTAL as u64, "{stats:?}");
    assert_deleted(stats, TOTAL);
    assert_eq!(stats.delete_failed, 0, "{stats:?}");
}

/// 1,000 messages fed in waves (moto's cost per call grows with depth, so the depth stays at
/// about 100): each is normalized exactly once and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_messages_is_drained_exactly_once() {
    const TOTAL: usize = 1000;
    const WAVE: usize = 100;
    let moto = Moto::start();
    let client = setup_client(&moto);
    let url = create_queue(&client, &unique_name("burst"), 300).await;
    let inbox = Arc::new(RecordingInbox::default());
    let source = SqsSource::connect(
        config(&moto, QueueRef::Url(url.clone())).with_pollers(4),
        adapter(),
    )
    .await
    .expect("connect");
    let (stop, shutdown) = watch::channel(false);
    let dyn_inbox: Arc<dyn Inbox> = inbox.clone();
    let running = tokio::spawn(async move { source.run(dyn_inbox, shutdown).await });

    for wave in 0..TOTAL / WAVE {
        let bodies: Vec<String> = (wave * WAVE..(wave + 1) * WAVE)
            .map(|n| {
                body(
                    n,
                    if n % 7 == 0 {
                        r#""""#
                    } else {
                        r#""In transit""#
                    },
                )
            })
            .collect();
        send_all(&client, &url, &bodies).await;
        let done = (wave + 1) * WAVE;
        wait_until(LIMIT, &format!("wave {wave} drained"), || async {
            inbox.len() >= done
        })
        .await;
    }
    // The pollers finish their batches (inbox, then delete) before `run` returns.
    stop.send(true).unwrap();
    let stats = running.await.unwrap().expect("run");

    let records = inbox.records();
    let counts = inbox.counts();
    let dups: Vec<_> = records
        .iter()
        .filter(|r| counts[&r.message_id] > 1)
        .map(|r| (r.message_id.clone(), r.receive_count))
        .collect();
    assert_eq!(records.len(), TOTAL, "no duplicates: {dups:?}, {stats:?}");
    let shipments: HashSet<String> = records
        .iter()
        .map(|r| {
            let outputs = r.outputs.as_ref().expect("normalized");
            let event = outputs[0].as_event().expect("event");
            event.shipment.provider_shipment_id.clone().expect("id")
        })
        .collect();
    assert_eq!(shipments.len(), TOTAL, "every shipment exactly once");
    assert_eq!(stats.accepted, TOTAL as u64);
    assert_deleted(stats, TOTAL);
    assert_eq!(stats.delete_failed, 0);
    // Copies the server handed out again (moto, like SQS, delivers at least once; with 4
    // pollers it happens) are counted, not processed twice.
    assert_eq!(stats.received, TOTAL as u64 + stats.duplicates);
}

/// `LeaveForRedrive` keeps a bad message on the queue instead of dead-lettering it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_for_redrive_keeps_bad_messages_on_the_queue() {
    let moto = Moto::start();
    let client = setup_client(&moto);
    let url = create_queue(&client, &unique_name("redrive"), 60).await;
    send_all(&client, &url, &["[not an object]".to_owned()]).await;
    let inbox = RecordingInbox::default();
    let source = SqsSource::connect(
        config(&moto, QueueRef::Url(url.clone()))
            .with_dead_letters(DeadLetterPolicy::LeaveForRedrive)
            .with_visibility_timeout(Duration::from_secs(1)),
        adapter(),
    )
    .await
    .expect("connect");
    let stats = poll_until_received(&source, &inbox).await;
    assert_eq!(stats.left_on_queue, 1);
    assert_eq!((stats.deleted, stats.delete_failed), (0, 0), "{stats:?}");
    assert_eq!(
        inbox.calls.load(Ordering::SeqCst),
        0,
        "the inbox never saw it"
    );
    // Still on the queue: it is handed out again once its visibility timeout ends.
    let deadline = tokio::time::Instant::now() + LIMIT;
    let again = loop {
        let out = client
            .receive_message()
            .queue_url(&url)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        if let Some(message) = out.messages.unwrap_or_default().pop() {
            break message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the message did not come back within {LIMIT:?}"
        );
    };
    assert_eq!(again.body(), Some("[not an object]"));
}

/// A queue name or URL that does not exist is a configuration error that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_queues_give_clear_errors() {
    let moto = Moto::start();

    let err = SqsSource::connect(
        config(&moto, QueueRef::Name("no-such-queue".into())),
        adapter(),
    )
    .await
    .expect_err("missing queue name");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(
        err.to_string().contains("`no-such-queue` does not exist"),
        "{err}"
    );

    let url = format!("{}/123456789012/no-such-queue", moto.endpoint);
    let source = SqsSource::connect(config(&moto, QueueRef::Url(url.clone())), adapter())
        .await
        .expect("a URL is not checked before the first receive");
    let (_stop, shutdown) = watch::channel(false);
    let inbox: Arc<dyn Inbox> = Arc::new(RecordingInbox::default());
    let err = tokio::time::timeout(LIMIT, source.run(inbox, shutdown))
        .await
        .expect("run stops by itself")
        .expect_err("missing queue URL");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

/// Credentials the queue does not accept are a configuration error that says what to use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_give_a_clear_error() {
    let moto = Moto::start_checking_credentials();
    let err = SqsSource::connect(config(&moto, QueueRef::Name("any-queue".into())), adapter())
        .await
        .expect_err("unknown access key");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(
        err.to_string().contains("rejected the credentials"),
        "{err}"
    );
    assert!(err.to_string().contains("empty secret"), "{err}");
}

/// Every message was deleted once; a copy received after the inbox accepted its message is
/// deleted too, a copy received while the message was still in flight is not.
fn assert_deleted(stats: SourceStats, total: usize) {
    let total = total as u64;
    assert!(
        (total..=total + stats.duplicates).contains(&stats.deleted),
        "{stats:?}"
    );
}
