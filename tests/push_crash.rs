//! `kill -9` of `shipfeed serve` while it pushes to a real receiver (verifying every request
//! with the `standardwebhooks` crate) and while a message waits for its retry: nothing is lost,
//! the retry schedule resumes where it was (attempts are not reset), and what is sent again
//! carries the same `webhook-id`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shipfeed_store::{PushState, Store};
use shipfeed_testkit::webhook_receiver::{generate_secret, Received, Reply, WebhookReceiver};
use support::{
    client, delivery_seq, post, projected, sendcloud_status, tracking_number, Backend, Server,
    TestStore,
};

/// Parcels in the burst, each with two status events.
const PARCELS: u64 = 300;
/// Receipts after which the server is killed.
const KILL_AFTER: usize = 60;
/// The first parcel's number: the receiver refuses its items until the test says otherwise.
const FIRST_PARCEL: u64 = 40_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_pushing_loses_nothing_and_keeps_retry_schedules_sqlite() {
    kill9_while_pushing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_pushing_loses_nothing_and_keeps_retry_schedules_postgres() {
    kill9_while_pushing(Backend::Postgres).await;
}

/// Waits for `condition`, failing with `what` after a minute (a guard against a hang).
async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every feed item's `webhook-id`, with its shipment key and seq.
async fn feed_ids(store: &Store) -> BTreeMap<String, (String, i64)> {
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
                other => panic!("no {other} items in this drill"),
            };
            (id, (item.shipment_key().unwrap().to_owned(), item.seq()))
        })
        .collect()
}

/// The refused message as stored: its attempts.
async fn refused_attempts(store: &Store, webhook_id: &str) -> Option<u32> {
    store
        .push_messages("orders", Some(PushState::Pending), 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .find(|message| message.webhook_id == webhook_id)
        .map(|message| message.attempts)
}

async fn kill9_while_pushing(backend: Backend) {
    let store = TestStore::new(backend);
    let secret = generate_secret(9);
    let receiver = WebhookReceiver::start(&secret).await;
    // Every item of the first parcel is refused until the test says otherwise: its first
    // event waits for retries, and holds back the parcel's later items.
    let refusing = Arc::new(AtomicBool::new(true));
    let refused_tracking = tracking_number(FIRST_PARCEL);
    {
        let refusing = Arc::clone(&refusing);
        let tracking = refused_tracking.clone();
        receiver.set_script(move |request| {
            let refused = request.body["shipment_key"]
                .as_str()
                .is_some_and(|key| key.contains(tracking.as_str()));
            if refused && refusing.load(Ordering::SeqCst) {
                Reply::Status(503)
            } else {
                Reply::Ok
            }
        });
    }
    let secret_file = Server::scratch_file(&store, "push.secret");
    std::fs::write(&secret_file, &secret).unwrap();
    // Retries every second, more of them than the drill needs.
    let schedule = vec!["\"1s\""; 60].join(", ");
    let subscription = format!(
        "[[subscription]]\nname = \"orders\"\nkind = \"http\"\nurl = \"{}\"\n\
         secret_file = \"{}\"\nstart = \"beginning\"\nconcurrency = 4\nretry_schedule = [{schedule}]\n",
        receiver.url(),
        secret_file.display()
    );
    let server = Arc::new(Mutex::new(Server::start(&store, &subscription).await));
    let base = server.lock().unwrap().base.clone();
    let http = client();

    // A burst, posted while the server pushes: every parcel announced, then in transit.
    let deliveries: Vec<_> = [
        (0, (1, "Announced")),
        (1, (3, "En route to sorting center")),
    ]
    .into_iter()
    .flat_map(|(step, status)| {
        (0..PARCELS).map(move |n| {
            let parcel = FIRST_PARCEL + n;
            let at = 1_712_000_000_000 + (parcel as i64) * 10_000 + step * 1000;
            sendcloud_status(parcel, status, at)
        })
    })
    .collect();
    // The second half (the in-transit events) waits for the kill, so that the kill always
    // lands inside the burst, however fast the machine pushes the first half.
    let (killed, kill_done) = tokio::sync::oneshot::channel::<()>();
    let poster = {
        let (http, base, deliveries) = (http.clone(), base.clone(), deliveries.clone());
        tokio::spawn(async move {
            let mut acknowledged = BTreeMap::new();
            let mut kill_done = Some(kill_done);
            for (n, delivery) in deliveries.iter().enumerate() {
                if n == deliveries.len() / 2 {
                    if let Some(kill_done) = kill_done.take() {
                        let _ = kill_done.await;
                    }
                }
                if let Ok((200, answer)) = post(&http, &base, delivery).await {
                    acknowledged.insert(n, delivery_seq(&answer));
                }
            }
            acknowledged
        })
    };

    // Killed mid-push, while the refused message waits for a retry.
    let stored = shipfeed_store::open(&store.url).await.unwrap();
    receiver
        .wait_until("receipts before the kill", Duration::from_secs(60), |got| {
            got.iter().filter(|r| r.is_delivered()).count() >= KILL_AFTER
                && got.iter().any(|r| r.answered == 503)
        })
        .await;
    let refused_webhook_id = receiver
        .received()
        .iter()
        .find(|r| r.answered == 503)
        .map(|r| r.webhook_id.clone())
        .unwrap();
    wait_for("the refused message parked after a failed attempt", || {
        let (stored, id) = (stored.clone(), refused_webhook_id.clone());
        async move { refused_attempts(&stored, &id).await.is_some_and(|n| n >= 1) }
    })
    .await;
    server.lock().unwrap().kill9();
    let _ = killed.send(());
    let attempts_at_kill = refused_attempts(&stored, &refused_webhook_id)
        .await
        .unwrap();
    let acknowledged = poster.await.unwrap();
    assert!(
        acknowledged.len() < deliveries.len(),
        "the kill must land inside the burst: {} of {} acknowledged",
        acknowledged.len(),
        deliveries.len()
    );

    // Restarted: the schedule goes on from the attempts made, under the same webhook-id; the
    // provider sends again what was never acknowledged.
    let server = Arc::try_unwrap(server)
        .ok()
        .unwrap()
        .into_inner()
        .unwrap()
        .restart()
        .await;
    let mut last_seq = acknowledged.values().copied().max().unwrap_or_default();
    for (n, delivery) in deliveries.iter().enumerate() {
        if !acknowledged.contains_key(&n) {
            let (status, answer) = post(&http, &server.base, delivery).await.unwrap();
            assert_eq!(status, 200, "{answer}");
            last_seq = last_seq.max(delivery_seq(&answer));
        }
    }
    wait_for("a retry of the refused message after the restart", || {
        let (stored, id) = (stored.clone(), refused_webhook_id.clone());
        async move {
            refused_attempts(&stored, &id)
                .await
                .is_some_and(|n| n > attempts_at_kill)
        }
    })
    .await;
    refusing.store(false, Ordering::SeqCst);

    // Every feed item arrives: verified, under its webhook-id, each shipment in feed order.
    projected(&http, &server.base, last_seq).await;
    let feed = feed_ids(&stored).await;
    assert!(
        feed.len() >= 2 * PARCELS as usize,
        "{} feed items",
        feed.len()
    );
    receiver
        .wait_until("every feed item received", Duration::from_secs(60), |got| {
            let ids: BTreeSet<&str> = got
                .iter()
                .filter(|r| r.is_delivered())
                .map(|r| r.webhook_id.as_str())
                .collect();
            feed.keys().all(|id| ids.contains(id.as_str()))
        })
        .await;
    let received = receiver.received();
    assert!(
        received.iter().all(|r| r.verified),
        "every request verifies"
    );
    let refused: Vec<&Received> = received
        .iter()
        .filter(|r| r.webhook_id == refused_webhook_id)
        .collect();
    assert!(
        refused.len() as u32 > attempts_at_kill + 1,
        "attempts before and after the kill, under one webhook-id: {}",
        refused.len()
    );
    let mut first_seen: Vec<&Received> = Vec::new();
    let mut seen = BTreeSet::new();
    for r in received.iter().filter(|r| r.is_delivered()) {
        assert!(
            feed.contains_key(&r.webhook_id),
            "not a feed item: {}",
            r.webhook_id
        );
        if seen.insert(r.webhook_id.clone()) {
            first_seen.push(r);
        }
    }
    let mut last_of: HashMap<&str, i64> = HashMap::new();
    for r in first_seen {
        let (key, seq) = &feed[&r.webhook_id];
        if let Some(before) = last_of.insert(key, *seq) {
            assert!(before < *seq, "{key}: {seq} after {before}");
        }
    }
    wait_for("nothing left parked", || {
        let stored = stored.clone();
        async move {
            stored
                .push_messages("orders", None, 0, 10)
                .await
                .unwrap()
                .is_empty()
        }
    })
    .await;
    drop(server);
}
