//! HTTP push subscriptions against a real receiver that verifies every request with the
//! `standardwebhooks` crate (an implementation nobody here wrote), on real stores (SQLite and
//! PostgreSQL): every item arrives verified, in feed order per shipment, exactly once after
//! deduplication on `webhook-id`, through 500s, timeouts, throttling and a receiver that is down
//! for a while; a shipment waiting for a retry holds back only itself.
//!
//! Nothing here depends on timing: the retry schedules are short so that the tests finish soon,
//! and every wait is for a condition (with a deadline only as a guard against a hang).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use shipfeed_store::{ControlAction, PushState, Store, SubscriptionStatus};
use shipfeed_subscriptions::{Start, Subscription, SubscriptionConfig};
use shipfeed_testkit::webhook_receiver::{generate_secret, Received, Reply, WebhookReceiver};
use support::{add_parcel_events, wait_until, Backend, Replica, TestDb};

on_both_stores!(
    every_item_arrives_verified_once_in_order_per_shipment_through_failures,
    an_exhausted_message_is_kept_and_redelivered_under_the_same_id,
    a_410_disables_the_subscription_until_it_is_resumed,
    a_subscription_failing_longer_than_disable_after_is_disabled_and_says_why,
    a_batch_subscription_posts_up_to_n_items_at_once_in_feed_order,
);

/// How long a test waits for a condition before it fails (a guard, never a measurement).
const GUARD: Duration = Duration::from_secs(60);

/// An HTTP subscription to `url`, its secrets in a file of `db`'s directory, with a short
/// schedule and timeout so that the tests finish soon.
fn http_subscription(
    db: &TestDb,
    name: &str,
    url: &str,
    secrets: &[&str],
    extra: &str,
) -> Subscription {
    let secret_file = db.file(&format!("{name}.secret"));
    std::fs::write(&secret_file, secrets.join(" ")).unwrap();
    let table = format!(
        "name = '{name}'\nkind = 'http'\nurl = '{url}'\nsecret_file = '{}'\nstart = 'beginning'\n\
         timeout = '500ms'\nconcurrency = 4\nretry_schedule = ['50ms', '100ms', '150ms', '200ms']\n{extra}",
        secret_file.display()
    );
    let config: SubscriptionConfig = toml::from_str(&table).unwrap();
    config.check().unwrap()
}

/// The whole feed as `(seq, webhook-id, shipment key)`, in order.
async fn feed_ids(store: &Store) -> Vec<(i64, String, String)> {
    let items = store.events_after(0, 100_000).await.unwrap();
    items
        .iter()
        .map(|item| {
            let body = serde_json::to_value(item).unwrap();
            let id = match body["type"].as_str().unwrap() {
                "event" => format!(
                    "{}:{}",
                    body["event_id"].as_str().unwrap(),
                    body["revision"]
                ),
                "shipment_state" => format!("shipment_state:{}", body["seq"]),
                other => panic!("no {other} items in these tests"),
            };
            (item.seq(), id, item.shipment_key().unwrap().to_owned())
        })
        .collect()
}

/// The requests answered 2xx, the first of each `webhook-id` only, in arrival order.
fn first_deliveries(received: &[Received]) -> Vec<&Received> {
    let mut seen = HashSet::new();
    received
        .iter()
        .filter(|r| r.is_delivered() && seen.insert(r.webhook_id.clone()))
        .collect()
}

/// Whether every feed item has arrived (answered 2xx).
fn all_arrived(received: &[Received], expected: usize) -> bool {
    first_deliveries(received).len() >= expected
}

/// Checks what the receiver got against the feed: each item verified, exactly once after
/// deduplication on `webhook-id`, with the item's JSON as its body, and the items of each
/// shipment in feed order.
fn assert_feed_arrived(received: &[Received], feed: &[(i64, String, String)]) {
    assert!(
        received.iter().all(|r| r.verified),
        "every request verifies with the standardwebhooks crate"
    );
    let firsts = first_deliveries(received);
    let got: BTreeMap<&str, i64> = firsts
        .iter()
        .map(|r| (r.webhook_id.as_str(), r.body["seq"].as_i64().unwrap()))
        .collect();
    let expected: BTreeMap<&str, i64> = feed
        .iter()
        .map(|(seq, id, _)| (id.as_str(), *seq))
        .collect();
    assert_eq!(
        got, expected,
        "each feed item once (after dedup), under its webhook-id"
    );
    let mut last_of: HashMap<&str, i64> = HashMap::new();
    for r in &firsts {
        let key = r.body["shipment_key"].as_str().unwrap();
        let seq = r.body["seq"].as_i64().unwrap();
        if let Some(before) = last_of.insert(key, seq) {
            assert!(before < seq, "{key}: seq {seq} arrived after {before}");
        }
    }
}

async fn every_item_arrives_verified_once_in_order_per_shipment_through_failures(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let secret = generate_secret(1);
    let receiver = WebhookReceiver::start(&secret).await;
    let parcels = add_parcel_events(&store, 8, 3).await;
    let (failing, throttled, stalled) = (
        parcels[0].1[0].clone(),
        parcels[1].1[0].clone(),
        parcels[2].1[0].clone(),
    );
    // The first event of parcel 0 fails three times, parcel 1's is throttled once, parcel 2's
    // stalls past the timeout once; everything else is taken at once.
    receiver.set_script(move |request| {
        let event = request.body["event_id"].as_str().unwrap_or_default();
        match (event, request.attempt) {
            (e, 1..=3) if e == failing => Reply::Status(500),
            (e, 1) if e == throttled => Reply::Throttle {
                status: 429,
                retry_after_secs: 1,
            },
            (e, 1) if e == stalled => Reply::Stall(Duration::from_secs(2)),
            _ => Reply::Ok,
        }
    });
    let subscription = http_subscription(&db, "orders", &receiver.url(), &[&secret], "");
    let replica =
        Replica::start_with(store.clone(), &[subscription], |s| s.with_replica("r1")).await;

    let feed = feed_ids(&store).await;
    receiver
        .wait_until("the first feed items", GUARD, |got| {
            all_arrived(got, feed.len())
        })
        .await;
    // Parcel 0's first event waited for its retries; the other parcels' later events did not
    // wait for it.
    let received = receiver.received();
    let firsts = first_deliveries(&received);
    let position = |id: &str| firsts.iter().position(|r| r.webhook_id == id).unwrap();
    let stuck = position(&format!("{}:1", parcels[0].1[0]));
    let other_last = position(&format!("{}:1", parcels[3].1[2]));
    assert!(
        other_last < stuck,
        "another parcel's last event ({other_last}) arrived before the stuck one ({stuck})"
    );
    assert_eq!(
        received
            .iter()
            .filter(|r| r.webhook_id == format!("{}:1", parcels[0].1[0]))
            .count(),
        4,
        "three failures, then the success"
    );
    assert_feed_arrived(&received, &feed);

    // The receiver goes down; new items are parked with their attempts, then arrive once it
    // is up again.
    receiver.set_down(true).await;
    add_parcel_events(&store, 3, 2).await;
    replica.notify();
    wait_until("items parked while the receiver is down", || async {
        let parked = store
            .push_messages("orders", Some(PushState::Pending), 0, 100)
            .await
            .unwrap();
        if parked.iter().any(|m| m.attempts > 0) {
            Ok(())
        } else {
            Err(format!("{parked:?}"))
        }
    })
    .await;
    receiver.set_down(false).await;
    let feed = feed_ids(&store).await;
    receiver
        .wait_until("every feed item", GUARD, |got| all_arrived(got, feed.len()))
        .await;
    assert_feed_arrived(&receiver.received(), &feed);
    wait_until("nothing parked", || async {
        let parked = store.push_messages("orders", None, 0, 100).await.unwrap();
        if parked.is_empty() {
            Ok(())
        } else {
            Err(format!("{parked:?}"))
        }
    })
    .await;
    replica.stop().await;
}

async fn an_exhausted_message_is_kept_and_redelivered_under_the_same_id(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let secret = generate_secret(2);
    let receiver = WebhookReceiver::start(&secret).await;
    let parcels = add_parcel_events(&store, 3, 2).await;
    let refused = format!("{}:1", parcels[0].1[0]);
    let gate = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let refusing = std::sync::Arc::clone(&gate);
    let id = refused.clone();
    receiver.set_script(move |request| {
        if request.webhook_id == id && refusing.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::Status(500)
        } else {
            Reply::Ok
        }
    });
    let subscription = http_subscription(&db, "audit", &receiver.url(), &[&secret], "");
    let replica =
        Replica::start_with(store.clone(), &[subscription], |s| s.with_replica("r1")).await;

    // Five attempts (the first and four retries), then it is exhausted and kept; parcel 0's
    // next event is no longer held back by it.
    wait_until("the refused message exhausted", || async {
        let exhausted = store
            .push_messages("audit", Some(PushState::Exhausted), 0, 10)
            .await
            .unwrap();
        match exhausted.as_slice() {
            [message] if message.webhook_id == refused => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let exhausted = store
        .push_messages("audit", Some(PushState::Exhausted), 0, 10)
        .await
        .unwrap();
    assert_eq!(exhausted[0].attempts, 5);
    assert_eq!(exhausted[0].last_status, Some(500));
    let feed = feed_ids(&store).await;
    receiver
        .wait_until("every other item", GUARD, |got| {
            first_deliveries(got).len() == feed.len() - 1
        })
        .await;
    assert_eq!(
        receiver
            .received()
            .iter()
            .filter(|r| r.webhook_id == refused)
            .count(),
        5
    );

    // Fixed on the receiver's side: redelivered, under the same webhook-id.
    gate.store(false, std::sync::atomic::Ordering::SeqCst);
    let now = chrono::Utc::now();
    assert_eq!(store.redeliver("audit", None, now).await.unwrap(), 1);
    replica.notify();
    receiver
        .wait_until("the redelivered item", GUARD, |got| {
            all_arrived(got, feed.len())
        })
        .await;
    let received = receiver.received();
    assert_eq!(
        received.iter().filter(|r| r.webhook_id == refused).count(),
        6
    );
    assert!(received.iter().all(|r| r.verified));
    replica.stop().await;
}

async fn a_410_disables_the_subscription_until_it_is_resumed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let secret = generate_secret(3);
    let receiver = WebhookReceiver::start(&secret).await;
    add_parcel_events(&store, 2, 1).await;
    let gone = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let answering = std::sync::Arc::clone(&gone);
    receiver.set_script(move |_| {
        if answering.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::Status(410)
        } else {
            Reply::Ok
        }
    });
    let subscription = http_subscription(&db, "support", &receiver.url(), &[&secret], "");
    let replica =
        Replica::start_with(store.clone(), &[subscription], |s| s.with_replica("r1")).await;
    wait_until("the subscription disabled", || async {
        let control = store.subscription_control("support").await.unwrap();
        if control.status == SubscriptionStatus::Disabled {
            Ok(())
        } else {
            Err(format!("{control:?}"))
        }
    })
    .await;
    let control = store.subscription_control("support").await.unwrap();
    assert_eq!(
        control.reason.as_deref(),
        Some("the receiver answered 410 Gone")
    );

    // Items stored while it is disabled wait for the resume, and so does the one refused.
    add_parcel_events(&store, 1, 1).await;
    replica.notify();
    gone.store(false, std::sync::atomic::Ordering::SeqCst);
    let resumed = store
        .control_subscription("support", ControlAction::Resume, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(resumed.status, SubscriptionStatus::Active);
    assert_eq!(resumed.reason, None);
    replica.notify();
    let feed = feed_ids(&store).await;
    receiver
        .wait_until("every item after the resume", GUARD, |got| {
            all_arrived(got, feed.len())
        })
        .await;
    assert_feed_arrived(&receiver.received(), &feed);
    replica.stop().await;
}

async fn a_subscription_failing_longer_than_disable_after_is_disabled_and_says_why(
    backend: Backend,
) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let secret = generate_secret(8);
    let receiver = WebhookReceiver::start(&secret).await;
    receiver.set_script(|_| Reply::Status(500));
    add_parcel_events(&store, 2, 2).await;
    let subscription = http_subscription(
        &db,
        "notifications",
        &receiver.url(),
        &[&secret],
        "disable_after = '300ms'",
    );
    let replica =
        Replica::start_with(store.clone(), &[subscription], |s| s.with_replica("r1")).await;
    wait_until("the subscription disabled", || async {
        let control = store.subscription_control("notifications").await.unwrap();
        if control.status == SubscriptionStatus::Disabled {
            Ok(())
        } else {
            Err(format!("{control:?}"))
        }
    })
    .await;
    let control = store.subscription_control("notifications").await.unwrap();
    let reason = control.reason.unwrap();
    assert!(
        reason.starts_with("every attempt has failed since ")
            && reason.ends_with("(longer than disable_after, 300ms)"),
        "{reason}"
    );
    assert!(control.failing_since.is_some());
    // Its failed messages are kept (pending for when it is resumed, or exhausted if their
    // schedule ran out first, for a redelivery).
    let kept = store
        .push_messages("notifications", None, 0, 100)
        .await
        .unwrap();
    assert!(kept.iter().any(|m| m.attempts >= 1), "{kept:?}");
    assert!(receiver
        .received()
        .iter()
        .all(|r| r.verified && r.answered == 500));
    replica.stop().await;
}

async fn a_batch_subscription_posts_up_to_n_items_at_once_in_feed_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let secret = generate_secret(10);
    let receiver = WebhookReceiver::start(&secret).await;
    // The first request fails: its items are retried, and what follows waits or goes on.
    receiver.set_script(|request| {
        if request.attempt == 1 && request.body["items"][0]["seq"] == 1 {
            Reply::Status(500)
        } else {
            Reply::Ok
        }
    });
    add_parcel_events(&store, 4, 3).await;
    let subscription =
        http_subscription(&db, "analytics", &receiver.url(), &[&secret], "batch = 3");
    let replica =
        Replica::start_with(store.clone(), &[subscription], |s| s.with_replica("r1")).await;
    let feed = feed_ids(&store).await;
    let items_of = |request: &Received| -> Vec<serde_json::Value> {
        assert_eq!(request.body["type"], "batch", "{}", request.body);
        request.body["items"].as_array().unwrap().clone()
    };
    receiver
        .wait_until("every item, in batches", GUARD, |got| {
            let ids: HashSet<String> = got
                .iter()
                .filter(|r| r.is_delivered())
                .flat_map(|r| r.body["items"].as_array().cloned().unwrap_or_default())
                .map(|item| item["seq"].to_string())
                .collect();
            ids.len() == feed.len()
        })
        .await;
    let received = receiver.received();
    assert!(received.iter().all(|r| r.verified));
    assert!(
        received.iter().any(|r| r.answered == 500),
        "the script's failure happened"
    );
    // A batch id names its items: the same id always carries the same items.
    let mut by_id: HashMap<&str, Vec<serde_json::Value>> = HashMap::new();
    for request in &received {
        let items = items_of(request);
        assert!((1..=3).contains(&items.len()), "{} items", items.len());
        assert!(request.webhook_id.starts_with("batch:"));
        let before = by_id
            .entry(request.webhook_id.as_str())
            .or_insert_with(|| items.clone());
        assert_eq!(before, &items, "{}", request.webhook_id);
    }
    // Items of one shipment arrive in feed order (first arrival of each item), and each item
    // is the feed item as the pull feed shows it.
    let mut seen = HashSet::new();
    let mut last_of: HashMap<String, i64> = HashMap::new();
    let expected: HashMap<i64, &str> = feed
        .iter()
        .map(|(seq, _, key)| (*seq, key.as_str()))
        .collect();
    for request in received.iter().filter(|r| r.is_delivered()) {
        for item in items_of(request) {
            let seq = item["seq"].as_i64().unwrap();
            if !seen.insert(seq) {
                continue;
            }
            let key = item["shipment_key"].as_str().unwrap().to_owned();
            assert_eq!(expected[&seq], key);
            if let Some(before) = last_of.insert(key.clone(), seq) {
                assert!(before < seq, "{key}: {seq} after {before}");
            }
        }
    }
    replica.stop().await;
}

/// Rotation: signed with the old and the new secret at once, a request verifies for a receiver
/// that knows only the old one and for one that knows only the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_rotating_every_request_verifies_with_either_secret() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.open().await;
    let (old, new) = (generate_secret(4), generate_secret(5));
    let knows_old = WebhookReceiver::start(&old).await;
    let knows_new = WebhookReceiver::start(&new).await;
    let knows_neither = WebhookReceiver::start(&generate_secret(6)).await;
    add_parcel_events(&store, 2, 2).await;
    let subscriptions = [
        http_subscription(&db, "old", &knows_old.url(), &[&old, &new], ""),
        http_subscription(&db, "new", &knows_new.url(), &[&old, &new], ""),
        http_subscription(&db, "neither", &knows_neither.url(), &[&old, &new], ""),
    ];
    let replica =
        Replica::start_with(store.clone(), &subscriptions, |s| s.with_replica("r1")).await;
    let feed = feed_ids(&store).await;
    for receiver in [&knows_old, &knows_new] {
        receiver
            .wait_until("every item", GUARD, |got| all_arrived(got, feed.len()))
            .await;
        let received = receiver.received();
        assert!(received.iter().all(|r| r.signatures.len() == 2));
        assert_feed_arrived(&received, &feed);
    }
    knows_neither
        .wait_until("a first attempt", GUARD, |got| !got.is_empty())
        .await;
    assert!(
        knows_neither
            .received()
            .iter()
            .all(|r| !r.verified && r.answered == 401),
        "a receiver with another secret refuses every request"
    );
    replica.stop().await;
}

/// Two replicas drive one subscription: one holds its lease and pushes each item once; when it
/// crashes, the other takes over from the durable state and delivers the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_push_each_item_through_one_of_them() {
    let db = TestDb::new(Backend::Postgres).await;
    let (store_a, store_b) = (db.open().await, db.open().await);
    let secret = generate_secret(7);
    let receiver = WebhookReceiver::start(&secret).await;
    add_parcel_events(&store_a, 5, 2).await;
    let subscription = http_subscription(&db, "analytics", &receiver.url(), &[&secret], "");
    // Leases long enough that a loaded machine never lets one run out while its holder works
    // (which would give a duplicate): only the crash below hands the subscription over.
    let ttl = chrono::TimeDelta::seconds(10);
    let a = Replica::start_with(store_a.clone(), std::slice::from_ref(&subscription), |s| {
        s.with_replica("replica-a").with_lease_ttl(ttl)
    })
    .await;
    let b = Replica::start_with(store_b.clone(), &[subscription], |s| {
        s.with_replica("replica-b").with_lease_ttl(ttl)
    })
    .await;
    let feed = feed_ids(&store_a).await;
    receiver
        .wait_until("every item", GUARD, |got| all_arrived(got, feed.len()))
        .await;
    let received = receiver.received();
    assert_eq!(
        received.len(),
        feed.len(),
        "each item pushed once, by one replica"
    );
    assert_feed_arrived(&received, &feed);

    let (holder, standby) = if a.holds("analytics") { (a, b) } else { (b, a) };
    holder.abort().await;
    add_parcel_events(&standby.store, 4, 2).await;
    standby.notify();
    let feed = feed_ids(&standby.store).await;
    receiver
        .wait_until("every item, after the takeover", GUARD, |got| {
            all_arrived(got, feed.len())
        })
        .await;
    assert_feed_arrived(&receiver.received(), &feed);
    assert!(standby.holds("analytics"));
    standby.stop().await;
}

/// An `http` table is checked when read: its URL, its secret (never shown), its keys.
#[test]
fn an_http_table_checks_its_keys() {
    let parse = |text: &str| -> Result<Subscription, String> {
        let config: SubscriptionConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check().map_err(|e| e.to_string())
    };
    for (text, says) in [
        ("name = 'a'\nkind = 'http'\nsecret_env = 'X'", "kind \"http\" needs `url`"),
        (
            "name = 'a'\nkind = 'http'\nurl = 'ftp://x'\nsecret_env = 'X'",
            "is not an http:// or https:// URL",
        ),
        (
            "name = 'a'\nkind = 'http'\nurl = 'http://x'",
            "needs its signing secret in one of `secret_env` or `secret_file`",
        ),
        (
            "name = 'a'\nkind = 'http'\nurl = 'http://x'\nsecret_env = 'SHIPFEED_TEST_UNSET_SECRET'",
            "the environment variable SHIPFEED_TEST_UNSET_SECRET is not set",
        ),
        ("name = 'a'\nkind = 'stdout'\nconcurrency = 2", "`concurrency` is only for kind \"http\""),
    ] {
        let error = parse(text).unwrap_err();
        assert!(error.contains(says), "{text}: {error}");
    }
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "whsec_not*base64").unwrap();
    let error = parse(&format!(
        "name = 'a'\nkind = 'http'\nurl = 'http://x'\nsecret_file = '{}'",
        secret_file.display()
    ))
    .unwrap_err();
    assert!(error.contains("`whsec_` followed by base64"), "{error}");
    assert!(
        !error.contains("not*base64"),
        "the secret is never shown: {error}"
    );
    assert_eq!(
        parse("name = 'a'\nkind = 'stdout'\nstart = 'beginning'")
            .unwrap()
            .start(),
        Start::Beginning
    );
}
