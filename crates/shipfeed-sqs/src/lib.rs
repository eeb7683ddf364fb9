//! A shipfeed source that pulls provider messages from an SQS (or SQS-compatible) queue, such
//! as Seven Senders' shipment-event queue.
//!
//! [`SqsSource`] receives batches (long polling, up to 10 messages, `N` concurrent pollers),
//! turns each message into a [`RawDelivery`](shipfeed_core::RawDelivery) (body; `MessageId`,
//! system and message attributes as headers; `received_at` from `SentTimestamp`), normalizes
//! it with the configured [`Adapter`](shipfeed_core::Adapter), and hands the batch to an
//! [`Inbox`]. Messages are deleted **only after the inbox has durably accepted them**. What
//! happens to a message follows from the error's kind and class, in one place (the source's
//! `Disposition::of`):
//!
//! | outcome | inbox | queue |
//! |---|---|---|
//! | normalized | events | deleted after the inbox's `Ok` |
//! | [`Payload`](shipfeed_core::ErrorKind::Payload) error (a bad message) | dead letter | deleted after the inbox's `Ok` (or left for the queue's redrive policy: [`DeadLetterPolicy`]) |
//! | other adapter error (configuration) | – | left |
//! | inbox or receive error, temporary | – | left; back after the visibility timeout |
//! | inbox or receive error, permanent | – | left; the source stops with the error |
//! | delete fails (after one retry) | – | delivered again; downstream dedup absorbs it |
//! | a copy of a message in flight here, or recently accepted (SQS is at-least-once) | – | not processed twice; deleted with the newest receipt handle |
//!
//! Depends on `shipfeed-core` only, so that a build of the `shipfeed` facade without this
//! crate never compiles the AWS SDK.
//!
//! ```no_run
//! use std::sync::Arc;
//! use shipfeed_sqs::{JsonLinesInbox, QueueRef, SqsConfig, SqsCredentials, SqsSource};
//!
//! # async fn run() -> Result<(), shipfeed_core::Error> {
//! let config = SqsConfig::new(QueueRef::Url("https://analytics-api.7senders.com/queue.xml".into()))
//!     .with_endpoint_url("https://analytics-api.7senders.com")
//!     .with_credentials(SqsCredentials::ApiKey("my-7s-api-key".into()));
//! let adapter = Box::new(shipfeed_sevensenders::SevenSendersAdapter::default());
//! let source = SqsSource::connect(config, adapter).await?;
//! let (stop, shutdown) = tokio::sync::watch::channel(false);
//! tokio::spawn(async move {
//!     let _ = tokio::signal::ctrl_c().await;
//!     let _ = stop.send(true);
//! });
//! let stats = source.run(Arc::new(JsonLinesInbox::stdio()), shutdown).await?;
//! eprintln!("{stats:?}");
//! # Ok(())
//! # }
//! ```
//!
//! Credentials: a Seven Senders API key goes in as the access key id with an **empty**
//! secret ([`SqsCredentials::ApiKey`]). The AWS SDK accepts an empty static secret, but its
//! own environment provider treats an empty `AWS_SECRET_ACCESS_KEY` as missing; so
//! [`SqsCredentials::Environment`] (the default) reads the variables itself. The region is
//! explicit, else `AWS_REGION` / `AWS_DEFAULT_REGION`, else `eu-central-1` (Seven Senders'),
//! and is never looked up from instance metadata.
#![forbid(unsafe_code)]

mod config;
mod error;
mod inbox;
mod source;

pub use config::{
    DeadLetterPolicy, QueueRef, SqsConfig, SqsCredentials, DEFAULT_REGION, MAX_BATCH,
    MAX_WAIT_TIME_SECONDS,
};
pub use inbox::{dead_letter_value, Inbox, JsonLinesInbox, SourcedDelivery};
pub use source::{SourceStats, SqsSource, MESSAGE_ID_HEADER};

/// Re-exported so that callers can implement [`Inbox`] without naming the crate.
pub use async_trait::async_trait;
