//! The webhook receiver over real HTTP: requests signed by the `standardwebhooks` crate itself
//! (its `Webhook::sign`) and sent with reqwest are verified, recorded and answered as scripted;
//! the receiver goes down and comes back on the same URL; a sender signing with two secrets
//! passes a receiver knowing either.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use shipfeed_testkit::webhook_receiver::{generate_secret, Received, Reply, WebhookReceiver};
use standardwebhooks::Webhook;

/// Only a guard against a hanging test: nothing here waits on timing.
const GUARD: Duration = Duration::from_secs(20);

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs).unwrap()
}

/// The `webhook-signature` header for `body`, signed with each of `secrets` by the crate.
fn signature(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| {
            Webhook::new(secret)
                .unwrap()
                .sign(id, timestamp, body)
                .unwrap()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A POST of `body` to `url` with the three Standard Webhooks headers.
fn request(
    client: &reqwest::Client,
    url: &str,
    id: &str,
    timestamp: i64,
    signature: &str,
    body: &[u8],
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_vec())
}

/// Sends `body` signed with `secrets` now; the response status.
async fn send(
    client: &reqwest::Client,
    url: &str,
    secrets: &[&str],
    id: &str,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    let bytes = serde_json::to_vec(body).unwrap();
    let ts = now();
    request(
        client,
        url,
        id,
        ts,
        &signature(secrets, id, ts, &bytes),
        &bytes,
    )
    .send()
    .await
}

#[test]
fn generated_secrets_are_deterministic_distinct_and_accepted() {
    assert_eq!(generate_secret(1), generate_secret(1));
    assert_ne!(generate_secret(1), generate_secret(2));
    for seed in [0, 1, 255] {
        let secret = generate_secret(seed);
        assert!(secret.starts_with("whsec_"), "{secret}");
        Webhook::new(&secret).unwrap();
    }
}

#[tokio::test]
async fn a_correctly_signed_request_is_recorded_verified_and_answered_200() {
    let secret = generate_secret(1);
    let receiver = WebhookReceiver::start(&secret).await;
    assert!(receiver.url().starts_with("http://127.0.0.1:"));
    assert!(receiver.url().ends_with("/hook"));
    let client = reqwest::Client::new();
    let body = json!({"type": "shipment.updated", "data": {"n": 1}});
    let bytes = serde_json::to_vec(&body).unwrap();
    let ts = now();
    let sig = signature(&[&secret], "msg_1", ts, &bytes);

    let response = request(&client, &receiver.url(), "msg_1", ts, &sig, &bytes)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r.webhook_id, "msg_1");
    assert_eq!(r.timestamp, ts);
    assert_eq!(r.body, body);
    assert_eq!(r.raw_body, bytes);
    assert_eq!(r.signatures, vec![sig]);
    assert!(r.verified);
    assert_eq!(r.attempt, 1);
    assert_eq!(r.answered, 200);
    assert_eq!(receiver.delivered(), received);
}

#[tokio::test]
async fn a_wrongly_signed_request_is_answered_401_and_recorded_unverified() {
    let receiver = WebhookReceiver::start(&generate_secret(1)).await;
    let scripted = Arc::new(AtomicU32::new(0));
    let calls = Arc::clone(&scripted);
    receiver.set_script(move |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        Reply::Ok
    });
    let client = reqwest::Client::new();
    let other = generate_secret(2);

    let wrong = send(&client, &receiver.url(), &[&other], "msg_1", &json!({})).await;
    // a signature over another body
    let ts = now();
    let sig = signature(&[&generate_secret(1)], "msg_2", ts, b"{\"a\":1}");
    let tampered = request(&client, &receiver.url(), "msg_2", ts, &sig, b"{\"a\":2}")
        .send()
        .await;
    // no signature at all
    let unsigned = client
        .post(receiver.url())
        .header("webhook-id", "msg_3")
        .header("webhook-timestamp", now().to_string())
        .body("{}")
        .send()
        .await;

    for response in [wrong, tampered, unsigned] {
        assert_eq!(response.unwrap().status(), 401);
    }
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|r| !r.verified && r.answered == 401));
    assert_eq!(received[1].body, json!({"a": 2}));
    assert!(received[2].signatures.is_empty());
    assert!(receiver.delivered().is_empty());
    assert_eq!(scripted.load(Ordering::SeqCst), 0, "not scripted");
}

#[tokio::test]
async fn a_timestamp_outside_the_crates_five_minute_tolerance_does_not_verify() {
    let secret = generate_secret(1);
    let receiver = WebhookReceiver::start(&secret).await;
    let client = reqwest::Client::new();
    for ts in [now() - 600, now() + 600] {
        let sig = signature(&[&secret], "msg_old", ts, b"{}");
        let response = request(&client, &receiver.url(), "msg_old", ts, &sig, b"{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    let received = receiver.received();
    assert_eq!(
        received.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(received.iter().all(|r| !r.verified));
}

#[tokio::test]
async fn a_throttling_script_answers_retry_after_then_accepts_the_retry() {
    let secret = generate_secret(3);
    let receiver = WebhookReceiver::start(&secret).await;
    receiver.set_script(|r: &Received| match r.attempt {
        1 => Reply::Throttle {
            status: 429,
            retry_after_secs: 7,
        },
        2 => Reply::Status(503),
        _ => Reply::Ok,
    });
    let client = reqwest::Client::new();
    let body = json!({"n": 1});

    let first = send(&client, &receiver.url(), &[&secret], "msg_t", &body)
        .await
        .unwrap();
    assert_eq!(first.status(), 429);
    assert_eq!(first.headers()["retry-after"], "7");
    let second = send(&client, &receiver.url(), &[&secret], "msg_t", &body)
        .await
        .unwrap();
    assert_eq!(second.status(), 503);
    assert!(second.headers().get("retry-after").is_none());
    let third = send(&client, &receiver.url(), &[&secret], "msg_t", &body)
        .await
        .unwrap();
    assert_eq!(third.status(), 200);
    // another id starts its own count
    let other = send(&client, &receiver.url(), &[&secret], "msg_u", &body)
        .await
        .unwrap();
    assert_eq!(other.status(), 429);

    let received = receiver.received();
    let seen: Vec<_> = received
        .iter()
        .map(|r| (r.webhook_id.as_str(), r.attempt, r.answered))
        .collect();
    assert_eq!(
        seen,
        [
            ("msg_t", 1, 429),
            ("msg_t", 2, 503),
            ("msg_t", 3, 200),
            ("msg_u", 1, 429)
        ]
    );
    assert!(received.iter().all(|r| r.verified));
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        (delivered[0].webhook_id.as_str(), delivered[0].attempt),
        ("msg_t", 3)
    );
}

#[tokio::test]
async fn a_stall_answers_200_after_its_sleep() {
    let secret = generate_secret(4);
    let receiver = WebhookReceiver::start(&secret).await;
    receiver.set_script(|_| Reply::Stall(Duration::from_millis(50)));
    let client = reqwest::Client::new();

    let response = send(&client, &receiver.url(), &[&secret], "msg_s", &json!({}))
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(receiver.delivered().len(), 1);
    assert_eq!(receiver.received()[0].answered, 200);
}

#[tokio::test]
async fn a_stall_outlasts_the_senders_timeout_and_is_not_delivered() {
    let secret = generate_secret(4);
    let receiver = WebhookReceiver::start(&secret).await;
    receiver.set_script(|r: &Received| {
        if r.attempt == 1 {
            Reply::Stall(Duration::from_secs(3600))
        } else {
            Reply::Ok
        }
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();

    let first = send(&client, &receiver.url(), &[&secret], "msg_s", &json!({})).await;
    assert!(first.unwrap_err().is_timeout());
    let retry = send(&client, &receiver.url(), &[&secret], "msg_s", &json!({}))
        .await
        .unwrap();
    assert_eq!(retry.status(), 200);

    let received = receiver.received();
    assert_eq!(
        received
            .iter()
            .map(|r| (r.attempt, r.answered))
            .collect::<Vec<_>>(),
        [(1, 0), (2, 200)]
    );
    assert_eq!(receiver.delivered().len(), 1);
    assert_eq!(receiver.delivered()[0].attempt, 2);
}

#[tokio::test]
async fn going_down_refuses_connections_and_coming_back_serves_the_same_url() {
    let secret = generate_secret(5);
    let receiver = WebhookReceiver::start(&secret).await;
    let url = receiver.url();
    let pooled = reqwest::Client::new(); // keeps its connection alive across set_down
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };

    let before = send(&pooled, &url, &[&secret], "msg_1", &json!({})).await;
    assert_eq!(before.unwrap().status(), 200);

    receiver.set_down(true).await;
    receiver.set_down(true).await; // no-op
    let refused = send(&fresh(), &url, &[&secret], "msg_2", &json!({})).await;
    assert!(refused.unwrap_err().is_connect());
    // the pooled keep-alive connection was closed too: no request gets through
    let on_pooled = send(&pooled, &url, &[&secret], "msg_2", &json!({})).await;
    assert!(on_pooled.is_err());
    assert_eq!(receiver.received().len(), 1);

    receiver.set_down(false).await;
    receiver.set_down(false).await; // no-op
    assert_eq!(receiver.url(), url);
    let after = send(&fresh(), &url, &[&secret], "msg_2", &json!({})).await;
    assert_eq!(after.unwrap().status(), 200);
    let after_pooled = send(&pooled, &url, &[&secret], "msg_2", &json!({})).await;
    assert_eq!(after_pooled.unwrap().status(), 200);

    let received = receiver.received();
    assert_eq!(
        received
            .iter()
            .map(|r| (r.webhook_id.as_str(), r.attempt, r.answered))
            .collect::<Vec<_>>(),
        [("msg_1", 1, 200), ("msg_2", 1, 200), ("msg_2", 2, 200)]
    );

    // a few more cycles on the same port. A request while down drops the pooled connection
    // set_down closed; without one, the first request after coming back could still pick that
    // stale connection and fail (as after a real server restart)
    for i in 0..3 {
        let id = format!("msg_cycle_{i}");
        receiver.set_down(true).await;
        let down = send(&pooled, &url, &[&secret], &id, &json!({})).await;
        assert!(down.is_err());
        receiver.set_down(false).await;
        let response = send(&pooled, &url, &[&secret], &id, &json!({})).await;
        assert_eq!(response.unwrap().status(), 200);
    }
    assert_eq!(receiver.received().len(), 6);
}

#[tokio::test]
async fn going_down_cuts_a_stalled_request_without_an_answer() {
    let secret = generate_secret(6);
    let receiver = WebhookReceiver::start(&secret).await;
    receiver.set_script(|_| Reply::Stall(Duration::from_secs(3600)));
    let url = receiver.url();
    let sender = {
        let secret = secret.clone();
        let url = url.clone();
        tokio::spawn(async move {
            send(
                &reqwest::Client::new(),
                &url,
                &[&secret],
                "msg_s",
                &json!({}),
            )
            .await
        })
    };
    receiver
        .wait_until("the stalled request arrives", GUARD, |r| r.len() == 1)
        .await;
    assert_eq!(receiver.received()[0].answered, 0);

    receiver.set_down(true).await;

    assert!(sender.await.unwrap().is_err());
    assert_eq!(receiver.received()[0].answered, 0);
    assert!(receiver.delivered().is_empty());
}

#[tokio::test]
async fn rotation_a_sender_signing_with_both_secrets_passes_either_receiver() {
    let (old, new, unrelated) = (
        generate_secret(10),
        generate_secret(11),
        generate_secret(12),
    );
    let knows_old = WebhookReceiver::start(&old).await;
    let knows_new = WebhookReceiver::start(&new).await;
    let knows_neither = WebhookReceiver::start(&unrelated).await;
    let knows_both = WebhookReceiver::start_with_secrets(&[&unrelated, &old, &new]).await;
    let client = reqwest::Client::new();
    let body = json!({"rotating": true});

    for receiver in [&knows_old, &knows_new, &knows_neither, &knows_both] {
        send(&client, &receiver.url(), &[&old, &new], "msg_r", &body)
            .await
            .unwrap();
    }
    // a receiver with several secrets accepts a sender signing with only one of them
    send(&client, &knows_both.url(), &[&new], "msg_n", &body)
        .await
        .unwrap();

    for receiver in [&knows_old, &knows_new] {
        let received = receiver.received();
        assert_eq!(received.len(), 1);
        assert!(received[0].verified);
        assert_eq!(received[0].signatures.len(), 2, "v1,A v1,B");
        assert!(received[0].signatures.iter().all(|s| s.starts_with("v1,")));
    }
    let refused = knows_neither.received();
    assert!(!refused[0].verified);
    assert_eq!(refused[0].answered, 401);
    assert_eq!(knows_both.delivered().len(), 2);
}

#[tokio::test]
async fn wait_until_is_woken_by_each_request() {
    let secret = generate_secret(7);
    let receiver = WebhookReceiver::start(&secret).await;
    let url = receiver.url();
    let senders: Vec<_> = (0..3)
        .map(|i| {
            let (secret, url) = (secret.clone(), url.clone());
            tokio::spawn(async move {
                let id = format!("msg_{i}");
                send(
                    &reqwest::Client::new(),
                    &url,
                    &[&secret],
                    &id,
                    &json!({"i": i}),
                )
                .await
            })
        })
        .collect();

    receiver
        .wait_until("three deliveries", GUARD, |r| {
            r.iter().filter(|r| r.is_delivered()).count() == 3
        })
        .await;

    let mut ids: Vec<_> = receiver
        .delivered()
        .into_iter()
        .map(|r| r.webhook_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["msg_0", "msg_1", "msg_2"]);
    for sender in senders {
        assert_eq!(sender.await.unwrap().unwrap().status(), 200);
    }
}

#[tokio::test]
#[should_panic(expected = "waiting until a delivery that never comes; received 0")]
async fn wait_until_panics_with_what_it_waited_for() {
    let receiver = WebhookReceiver::start(&generate_secret(8)).await;
    receiver
        .wait_until(
            "a delivery that never comes",
            Duration::from_millis(10),
            |r| !r.is_empty(),
        )
        .await;
}
