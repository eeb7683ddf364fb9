//! Subscriptions over real stores (SQLite and PostgreSQL), real files and real NATS: each
//! subscription gets every feed item once and in order from where it starts, resumes from its
//! cursor, and across replicas is driven by one lease holder at a time, taken over when the
//! holder stops.
//!
//! PostgreSQL (`postgres://postgres@127.0.0.1:5432/test`, or `SHIPFEED_TEST_POSTGRES_URL`) and
//! NATS JetStream (`nats://127.0.0.1:4222`, or `SHIPFEED_TEST_NATS_URL`) must be running: the
//! tests fail, never skip, without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::path::Path;
use std::time::Duration;

use shipfeed_store::{LeaseHolder, Store, StoreError};
use shipfeed_subscriptions::{Start, Subscription, Target};
use support::{
    add_events, clock, feed, lines, wait_for_cursor, wait_until, Backend, Replica, TestDb,
    ITEMS_PER_EVENT, TTL,
};

on_both_stores!(
    two_subscriptions_each_receive_every_item_once_in_order,
    a_new_subscription_starts_where_its_start_says,
    a_restarted_subscription_resumes_from_its_cursor,
    a_failing_delivery_is_retried_and_skips_nothing,
    a_holder_whose_lease_ran_out_resumes_from_the_cursor_its_successor_saved,
    a_filtered_subscription_writes_only_what_matches_and_its_cursor_moves_past_the_rest,
);

fn file_subscription(name: &str, path: &Path, start: Start) -> Subscription {
    Subscription::new(name, Target::File(path.to_owned()), start).unwrap()
}

/// Waits until the file holds exactly the whole feed and the cursor is at its end: every item
/// once, in order.
async fn wait_for_whole_feed(store: &Store, cursor: &str, path: &Path) {
    let expected = feed(store).await;
    let end = store.feed_end().await.unwrap();
    wait_for_cursor(store, cursor, end).await;
    // The file is synced before the cursor is saved: it is complete now.
    assert_eq!(lines(path), expected, "{} against the feed", path.display());
}

/// Every complete line of a target file, as `(seq, type)`.
fn typed_lines(path: &Path) -> Vec<(i64, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let item: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                item["seq"].as_i64().unwrap(),
                item["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn a_filtered_subscription_writes_only_what_matches_and_its_cursor_moves_past_the_rest(
    backend: Backend,
) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    add_events(&store, 3).await; // each: an event (delivered, postnl), then its shipment_state
    let filtered =
        |query: &[(&str, &str)]| shipfeed_store::Filter::from_query(query.iter().copied()).unwrap();
    let paths = [
        db.file("events.jsonl"),
        db.file("states.jsonl"),
        db.file("nothing.jsonl"),
    ];
    let subscriptions = [
        file_subscription("events", &paths[0], Start::Beginning)
            .with_filter(filtered(&[("type", "event"), ("status", "delivered")])),
        file_subscription("states", &paths[1], Start::Beginning).with_filter(filtered(&[
            ("type", "shipment_state"),
            ("carrier", "PostNL"),
        ])),
        file_subscription("nothing", &paths[2], Start::Beginning)
            .with_filter(filtered(&[("carrier", "dhl")])),
    ];
    let replica = Replica::start(store.clone(), "replica-1", clock(), &subscriptions).await;
    add_events(&store, 2).await;
    replica.notify();
    let end = store.feed_end().await.unwrap();
    for name in ["events", "states", "nothing"] {
        // The last item is a shipment state: the cursor of `events` still reaches it.
        wait_for_cursor(&store, &format!("subscription:{name}"), end).await;
    }
    let all: Vec<(i64, String)> = store
        .events_after(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|item| {
            let value = serde_json::to_value(item).unwrap();
            (item.seq(), value["type"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(all.len(), 10, "five events, five states: {all:?}");
    let of_type = |kind: &str| -> Vec<(i64, String)> {
        all.iter().filter(|(_, t)| t == kind).cloned().collect()
    };
    assert_eq!(typed_lines(&paths[0]), of_type("event"));
    assert_eq!(lines(&paths[0]), feed(&store).await, "the events, in order");
    assert_eq!(typed_lines(&paths[1]), of_type("shipment_state"));
    assert_eq!(
        typed_lines(&paths[2]),
        [],
        "nothing matches: nothing written"
    );
    let delivered = "shipfeed_subscription_delivered_total{subscription=\"nothing\"}";
    assert_eq!(replica.metric(delivered).unwrap_or(0), 0);
    replica.stop().await;
}

async fn two_subscriptions_each_receive_every_item_once_in_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    add_events(&store, 3).await;
    let (a, b) = (db.file("a.jsonl"), db.file("b.jsonl"));
    let subscriptions = [
        file_subscription("a", &a, Start::Beginning),
        file_subscription("b", &b, Start::Beginning),
    ];
    let replica = Replica::start(store.clone(), "replica-1", clock(), &subscriptions).await;
    for _ in 0..3 {
        add_events(&store, 2).await;
        replica.notify();
    }
    assert_eq!(feed(&store).await.len(), 9);
    wait_for_whole_feed(&store, "subscription:a", &a).await;
    wait_for_whole_feed(&store, "subscription:b", &b).await;
    for name in ["a", "b"] {
        let delivered = format!("shipfeed_subscription_delivered_total{{subscription=\"{name}\"}}");
        assert_eq!(
            replica.metric(&delivered),
            Some(9 * ITEMS_PER_EVENT),
            "{delivered}"
        );
        assert!(replica.holds(name));
    }
    replica.stop().await;
}

async fn a_new_subscription_starts_where_its_start_says(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    add_events(&store, 3).await;
    let before = feed(&store).await;
    let first = before[0].0;
    let created_at_end = store.feed_end().await.unwrap();
    let paths = [
        db.file("end.jsonl"),
        db.file("beginning.jsonl"),
        db.file("after.jsonl"),
    ];
    let subscriptions = [
        file_subscription("end", &paths[0], Start::default()),
        file_subscription("beginning", &paths[1], Start::Beginning),
        file_subscription("after", &paths[2], Start::After(first)),
    ];
    let replica = Replica::start(store.clone(), "replica-1", clock(), &subscriptions).await;
    // Created now: the default start is the feed's end at this point.
    wait_for_cursor(&store, "subscription:end", created_at_end).await;
    add_events(&store, 2).await;
    replica.notify();
    let all = feed(&store).await;
    let end = store.feed_end().await.unwrap();
    for name in ["end", "beginning", "after"] {
        wait_for_cursor(&store, &format!("subscription:{name}"), end).await;
    }
    assert_eq!(
        lines(&paths[0]),
        all[3..],
        "default start: only what came after"
    );
    assert_eq!(lines(&paths[1]), all, "start = beginning: everything");
    assert_eq!(
        lines(&paths[2]),
        all[1..],
        "start = {first}: what came after it"
    );
    replica.stop().await;
}

async fn a_restarted_subscription_resumes_from_its_cursor(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let path = db.file("orders.jsonl");
    let subscriptions = [file_subscription("orders", &path, Start::Beginning)];
    add_events(&store, 3).await;
    let clock = clock();
    let replica = Replica::start(store.clone(), "replica-1", clock.clone(), &subscriptions).await;
    wait_for_whole_feed(&store, "subscription:orders", &path).await;
    replica.stop().await;

    // Stopped gracefully, it gave its lease back: another holder gets it at once.
    let mut other = LeaseHolder::new(
        store.clone(),
        "subscription:orders",
        "someone-else",
        TTL,
        clock.clone(),
    );
    assert!(
        other.hold().await.unwrap().is_some(),
        "the lease was released"
    );
    other.release().await.unwrap();

    add_events(&store, 2).await;
    let replica = Replica::start(store.clone(), "replica-1", clock, &subscriptions).await;
    wait_for_whole_feed(&store, "subscription:orders", &path).await;
    assert_eq!(lines(&path).len(), 5, "nothing delivered twice");
    replica.stop().await;
}

async fn a_failing_delivery_is_retried_and_skips_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    add_events(&store, 4).await;
    // The file's directory does not exist yet: every delivery fails until it does.
    let path = db.file("later/orders.jsonl");
    let subscriptions = [file_subscription("orders", &path, Start::Beginning)];
    let replica = Replica::start(store.clone(), "replica-1", clock(), &subscriptions).await;
    let failures = r#"shipfeed_subscription_delivery_failures_total{subscription="orders"}"#;
    let lag = r#"shipfeed_subscription_lag{subscription="orders"}"#;
    wait_until("two failed deliveries", || async {
        match replica.metric(failures) {
            Some(count) if count >= 2 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let end = store.feed_end().await.unwrap();
    assert_eq!(replica.metric(lag), Some(end), "nothing delivered yet");
    assert_eq!(
        store.saved_cursor("subscription:orders").await.unwrap(),
        Some(0),
        "the start is saved, the cursor has not moved"
    );

    std::fs::create_dir(db.file("later")).unwrap();
    wait_for_whole_feed(&store, "subscription:orders", &path).await;
    let delivered = r#"shipfeed_subscription_delivered_total{subscription="orders"}"#;
    assert_eq!(replica.metric(delivered), Some(4 * ITEMS_PER_EVENT));
    wait_until("the lag back at 0", || async {
        match replica.metric(lag) {
            Some(0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    replica.stop().await;
}

/// A holder that stalled past its lease, while another holder took the subscription, moved
/// its cursor and gave it back, resumes from that cursor when it gets the lease again (under a
/// new epoch), not from where it had got to.
async fn a_holder_whose_lease_ran_out_resumes_from_the_cursor_its_successor_saved(
    backend: Backend,
) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let path = db.file("orders.jsonl");
    let subscriptions = [file_subscription("orders", &path, Start::Beginning)];
    let clock = clock();
    // A lease so long that, idle, the replica looks again only when told of new items: it
    // cannot renew in between the steps below.
    let ttl = chrono::TimeDelta::hours(1);
    add_events(&store, 2).await;
    let replica = Replica::start_with(store.clone(), &subscriptions, |settings| {
        settings
            .with_replica("replica-1")
            .with_clock(clock.clone())
            .with_lease_ttl(ttl)
    })
    .await;
    wait_for_whole_feed(&store, "subscription:orders", &path).await;
    let delivered = lines(&path);

    // Its lease runs out; a successor takes over, handles two more items (elsewhere: they are
    // not in this file) and releases the lease.
    clock.advance(ttl + chrono::TimeDelta::seconds(1));
    let mut successor = LeaseHolder::new(
        store.clone(),
        "subscription:orders",
        "replica-2",
        ttl,
        clock.clone(),
    );
    let lease = successor.hold().await.unwrap().expect("the lease ran out");
    add_events(&store, 2).await;
    let handled = store.feed_end().await.unwrap();
    store
        .save_cursor_under(&lease, "subscription:orders", handled)
        .await
        .unwrap();
    successor.release().await.unwrap();

    let last = add_events(&store, 1).await;
    replica.notify();
    wait_for_cursor(
        &store,
        "subscription:orders",
        store.feed_end().await.unwrap(),
    )
    .await;
    let written = lines(&path);
    assert_eq!(written[..delivered.len()], delivered);
    let after: Vec<&str> = written[delivered.len()..]
        .iter()
        .map(|(_, id)| id.as_str())
        .collect();
    assert_eq!(after, [last[0].as_str()], "only what the successor left");
    replica.stop().await;
}

/// Two replicas (two `Store`s on one PostgreSQL database) run the same subscription into the
/// same file: one holds the lease and delivers, the other stands by; when the holder crashes,
/// the other takes over once the lease has run out, from the saved cursor, and the crashed
/// holder's lease can no longer move the cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_take_turns_and_a_stale_holder_is_fenced() {
    let db = TestDb::new(Backend::Postgres).await;
    let (store_1, store_2) = (db.open().await, db.open().await);
    let path = db.file("orders.jsonl");
    let subscriptions = [file_subscription("orders", &path, Start::Beginning)];
    let clock = clock();
    add_events(&store_1, 3).await;
    let replicas = [
        Replica::start(store_1.clone(), "replica-1", clock.clone(), &subscriptions).await,
        Replica::start(store_2.clone(), "replica-2", clock.clone(), &subscriptions).await,
    ];
    let notify_all = |replicas: &[Replica]| replicas.iter().for_each(Replica::notify);
    wait_for_whole_feed(&store_1, "subscription:orders", &path).await;
    // Events stored through either replica's store reach the one file once.
    add_events(&store_2, 3).await;
    add_events(&store_1, 1).await;
    notify_all(&replicas);
    wait_for_whole_feed(&store_2, "subscription:orders", &path).await;
    assert_eq!(lines(&path).len(), 7);

    // Exactly one holder, by their own account and by the store's.
    let holding: Vec<bool> = replicas.iter().map(|r| r.holds("orders")).collect();
    assert_eq!(holding.iter().filter(|h| **h).count(), 1, "{holding:?}");
    let mut third = LeaseHolder::new(
        store_1.clone(),
        "subscription:orders",
        "replica-3",
        TTL,
        clock.clone(),
    );
    assert!(third.hold().await.unwrap().is_none(), "held by one of them");

    // The holder's lease as the holder has it (holding it again as the same holder renews it
    // under the same epoch), to try a stale write with later.
    let [first, second] = replicas;
    let (holder, standby) = if holding[0] {
        (first, second)
    } else {
        (second, first)
    };
    let mut as_holder = LeaseHolder::new(
        holder.store.clone(),
        "subscription:orders",
        holder.id.clone(),
        TTL,
        clock.clone(),
    );
    let stale = as_holder
        .hold()
        .await
        .unwrap()
        .expect("the holder's own lease");
    let holder_store = holder.store.clone();
    holder.abort().await;

    // Until the lease runs out, nobody drives the subscription: the standby sees the new
    // items wait (its lag gauge) and leaves them.
    add_events(&store_1, 2).await;
    standby.notify();
    let before_expiry = feed(&store_1).await;
    let delivered_up_to = store_1
        .saved_cursor("subscription:orders")
        .await
        .unwrap()
        .unwrap();
    let waiting = store_1.feed_end().await.unwrap() - delivered_up_to;
    let lag = r#"shipfeed_subscription_lag{subscription="orders"}"#;
    wait_until("the standby to see the new items", || async {
        match standby.metric(lag) {
            Some(seen) if seen == waiting => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(!standby.holds("orders"));
    assert_eq!(lines(&path).len(), 7, "the crashed holder's items only");

    clock.advance(TTL + chrono::TimeDelta::seconds(1));
    add_events(&store_2, 2).await;
    standby.notify();
    wait_for_whole_feed(&store_2, "subscription:orders", &path).await;
    assert_eq!(
        lines(&path).len(),
        before_expiry.len() + 2,
        "no gap, no repeat"
    );
    assert!(standby.holds("orders"), "the standby took over");

    // The crashed holder's epoch is over: its cursor save is refused and changes nothing.
    let end = store_1.feed_end().await.unwrap();
    let refused = holder_store
        .save_cursor_under(&stale, "subscription:orders", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::Fenced { epoch, current: Some(now), .. } if now > epoch),
        "{refused}"
    );
    assert_eq!(
        store_1.saved_cursor("subscription:orders").await.unwrap(),
        Some(end)
    );
    standby.stop().await;
}

/// A NATS subscription publishes each feed item once into JetStream stream `SHIPFEED`, with
/// `Nats-Msg-Id` = `event_id` and subject `shipfeed.events.<provider>.<status>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_subscription_publishes_every_item_once() {
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
            name: shipfeed_subscriptions::NATS_STREAM.to_owned(),
            subjects: vec![format!("{}.>", shipfeed_subscriptions::NATS_SUBJECT_PREFIX)],
            ..Default::default()
        })
        .await
        .unwrap();
    let before = stream.info().await.unwrap().state.last_sequence;

    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.open().await;
    let mut ours = add_events(&store, 3).await;
    let subscriptions =
        [Subscription::new("orders", Target::Nats(url.clone()), Start::Beginning).unwrap()];
    let replica = Replica::start(store.clone(), "replica-1", clock(), &subscriptions).await;
    ours.extend(add_events(&store, 2).await);
    replica.notify();
    let end = store.feed_end().await.unwrap();
    // Saved only after every message of the batch was acknowledged by JetStream.
    wait_for_cursor(&store, "subscription:orders", end).await;
    let last = stream.info().await.unwrap().state.last_sequence;

    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: before + 1,
            },
            ..Default::default()
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut reached = before;
    while reached < last {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            reached = reached.max(message.info().unwrap().stream_sequence);
            message.ack().await.unwrap();
            let item: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            let id = item["event_id"].as_str().unwrap_or_default().to_owned();
            if !ours.contains(&id) {
                continue; // another test's
            }
            let msg_id = message
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_owned());
            assert_eq!(msg_id, Some(format!("{id}:1")), "event_id:revision");
            assert_eq!(
                message.subject.as_str(),
                "shipfeed.events.sendcloud.delivered"
            );
            assert_eq!(item["type"], "event", "{item}");
            seen.push(id);
        }
    }
    assert_eq!(seen, ours, "every item once, in feed order");
    replica.stop().await;
}
