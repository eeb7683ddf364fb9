//! The subscription stage of shipfeed's pipeline: named consumers of the stored event feed.
//!
//! ```text
//! transports ─▶ inbox ─▶ projector ─▶ feed ─▶ subscriptions (this crate: stdout, file, NATS,
//!                                                             RabbitMQ, HTTP push)
//! ```
//!
//! A [`Subscription`] has a name, a [`Target`] (JSON lines on stdout, JSON lines appended to a
//! file, NATS JetStream, a RabbitMQ topic exchange, or signed HTTP POSTs), and its own durable
//! cursor in the store
//! (`subscription:<name>`). The [`Runner`] drives each one in a task of its own:
//!
//! 1. hold the subscription's lease (`subscription:<name>`, with a fencing epoch: across
//!    replicas, one drives it at a time; the others stand by and take over when it stops
//!    renewing);
//! 2. on its very first run (no saved cursor), resolve its [`Start`] and save it under the
//!    lease;
//! 3. read a batch of feed items after the cursor, deliver it, then save the cursor under the
//!    lease. A save refused because another replica took the lease over means: stand by.
//!
//! A failed delivery is retried, with backoff, from the same item: nothing is ever skipped.
//!
//! A subscription with a [`Filter`](shipfeed_store::Filter) (`filter = { ... }` in its table)
//! reads the feed through it ([`Store::feed_page`](shipfeed_store::Store::feed_page)): it
//! delivers the items the filter admits, plus the revisions and retractions of events it
//! admitted before, and saves its cursor past the items left out.
//!
//! # At-least-once
//!
//! The cursor is saved *after* the batch is delivered, so a crash (or a lost lease) between
//! the two delivers that batch again. Consumers deduplicate on `event_id`: NATS JetStream does
//! it for them within its duplicate window, since each message's `Nats-Msg-Id` is its
//! `event_id`; a RabbitMQ consumer deduplicates on each message's `message_id` (the same id);
//! a file or stdout consumer skips an `event_id` it has seen (or a `seq` not
//! greater than the last it processed).
//!
//! Every line and message is a feed item exactly as `GET /v1/events` lists it:
//! `{"seq": N, "type": "event", ...}` (`schema/feed-item.schema.json`).
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use prometheus_client::registry::Registry;
//! use shipfeed_subscriptions::{plan, Metrics, Runner, Settings, SubscriptionConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let store = shipfeed_store::Store::sqlite(dir.path().join("shipfeed.db"))?;
//! let tables: Vec<SubscriptionConfig> = vec![toml::from_str(&format!(
//!     "name = 'audit'\nkind = 'file'\npath = '{}'\nstart = 'beginning'",
//!     dir.path().join("audit.jsonl").display()
//! ))?];
//! let subscriptions = plan(&tables, None)?;
//!
//! let mut registry = Registry::default();
//! let wake = Arc::new(tokio::sync::Notify::new()); // notify_waiters() after each commit
//! let runner = Runner::new(store, wake, Metrics::register(&mut registry), Settings::default());
//! let (stop, shutdown) = tokio::sync::watch::channel(false);
//! let tasks = runner.start(&subscriptions, &shutdown).await?;
//! // ... serve; at shutdown:
//! stop.send(true)?;
//! for task in tasks {
//!     task.await?; // each has released its lease
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//!
//! Per subscription (label `subscription`), registered by [`Metrics::register`]: its lag in
//! feed items, items delivered, delivery failures, and whether this replica holds its lease.
#![forbid(unsafe_code)]

mod config;
mod error;
mod http;
mod metrics;
mod push;
mod run;
mod target;

pub use config::{
    plan, HttpTarget, Kind, RabbitmqTarget, Start, Subscription, SubscriptionConfig, Target,
    PREFIX, SINK_NAME,
};
pub use error::{BoxError, Error};
pub use http::{signature, Secret};
pub use metrics::Metrics;
pub use run::{replica_id, Runner, Settings};
pub use target::{
    rabbitmq_routing_key, NATS_STREAM, NATS_SUBJECT_PREFIX, RABBITMQ_EXCHANGE,
    RABBITMQ_ROUTING_PREFIX,
};
