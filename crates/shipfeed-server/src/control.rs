//! What an operator does with the configured subscriptions, in one place for the HTTP API
//! (`/v1/subscriptions`) and the commands (`shipfeed subscription ...`, `shipfeed
//! redeliver`): list them with their position and state, list the messages an HTTP push
//! subscription has parked, pause it, resume (re-enable) it, and put its exhausted messages
//! back on schedule.
//!
//! Every change is written to the store, where the replica driving the subscription reads it
//! at its next round: no restart. Every change asked for (pause, resume, redeliver) is
//! recorded in the audit log once it ran, done or refused, with the [`Actor`] who asked. (The API also wakes the subscriptions of the replica that
//! answered, so that its change takes effect at once there.) Only subscriptions of kind
//! `http` have such a state; the others are always `active`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;
use shipfeed_store::{
    AuditAction, ControlAction, PushMessage, PushState, Store, StoreError, SubscriptionControl,
    SubscriptionStatus,
};
use shipfeed_subscriptions::{Subscription, Target};

use crate::audit::{self, Actor};

/// The kind of a subscription's target, as its `kind` key names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionKind {
    /// JSON lines on stdout (also the legacy `sink = "stdout"`).
    Stdout,
    /// JSON lines appended to a file.
    File,
    /// NATS JetStream.
    Nats,
    /// Signed HTTP POSTs (Standard Webhooks): the only kind that can be paused, resumed and
    /// redelivered.
    Http,
    /// RabbitMQ (a topic exchange, publisher confirms).
    Rabbitmq,
}

impl SubscriptionKind {
    /// The kind of `target`.
    pub fn of(target: &Target) -> Self {
        match target {
            Target::Stdout => SubscriptionKind::Stdout,
            Target::File(_) => SubscriptionKind::File,
            Target::Nats(_) => SubscriptionKind::Nats,
            Target::Http(_) => SubscriptionKind::Http,
            Target::Rabbitmq(_) => SubscriptionKind::Rabbitmq,
        }
    }

    /// Its name, as in the configuration: `stdout`, `file`, `nats`, `http`, `rabbitmq`.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionKind::Stdout => "stdout",
            SubscriptionKind::File => "file",
            SubscriptionKind::Nats => "nats",
            SubscriptionKind::Http => "http",
            SubscriptionKind::Rabbitmq => "rabbitmq",
        }
    }
}

impl std::fmt::Display for SubscriptionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One configured subscription as an operator sees it: where it is and whether it sends. No
/// target address (a URL may carry a token), no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SubscriptionSummary {
    /// Its name (`sink` for the legacy `sink` setting).
    pub name: String,
    /// Its target's kind.
    pub kind: SubscriptionKind,
    /// The feed `seq` it has delivered (or, for kind `http`, delivered or parked) up to;
    /// `null` before its first run.
    pub cursor: Option<i64>,
    /// Whether it sends (always `active` for a kind other than `http`).
    pub status: SubscriptionStatus,
    /// Why it is paused or disabled.
    pub reason: Option<String>,
    /// When its status last changed (`null`: never).
    pub changed_at: Option<DateTime<Utc>>,
    /// Since when every attempt to deliver has failed (`null` while it delivers).
    pub failing_since: Option<DateTime<Utc>>,
    /// Feed items past its cursor, before its filter (`null` before its first run): what
    /// `shipfeed_subscription_lag` shows for the replica driving it.
    pub lag: Option<i64>,
}

/// Why an operator's request about a subscription cannot be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No subscription of that name is configured.
    #[error("no subscription `{0}` is configured")]
    Unknown(String),
    /// The subscription is not of kind `http`: it has no state to change and parks nothing.
    #[error(
        "subscription `{name}` is of kind \"{kind}\": only subscriptions of kind \"http\" are \
         paused, resumed, redelivered or park messages"
    )]
    NotPush {
        /// The subscription.
        name: String,
        /// Its kind.
        kind: SubscriptionKind,
    },
    /// The store cannot be read or written (nothing was changed).
    #[error("cannot read or write the store")]
    Store(#[from] StoreError),
}

/// A parked message's state by its name: `pending` or `exhausted`.
///
/// ```
/// use shipfeed_server::control::parse_state;
/// use shipfeed_store::PushState;
/// assert_eq!(parse_state("exhausted"), Ok(PushState::Exhausted));
/// assert!(parse_state("gone").is_err());
/// ```
///
/// # Errors
/// A message naming the states, for any other name.
pub fn parse_state(text: &str) -> Result<PushState, String> {
    match text {
        "pending" => Ok(PushState::Pending),
        "exhausted" => Ok(PushState::Exhausted),
        other => Err(format!(
            "unknown state `{other}`: use `pending` or `exhausted`"
        )),
    }
}

/// The subscription `name` of `subscriptions`, when it is of kind `http` (what every change
/// and the messages need; checked before the store is opened, by the commands).
///
/// # Errors
/// [`ControlError::Unknown`] when none is configured by that name,
/// [`ControlError::NotPush`] when it is of another kind.
pub fn push_subscription<'a>(
    subscriptions: &'a [Subscription],
    name: &str,
) -> Result<&'a Subscription, ControlError> {
    let subscription = subscriptions
        .iter()
        .find(|subscription| subscription.name() == name)
        .ok_or_else(|| ControlError::Unknown(name.to_owned()))?;
    match SubscriptionKind::of(subscription.target()) {
        SubscriptionKind::Http => Ok(subscription),
        kind => Err(ControlError::NotPush {
            name: name.to_owned(),
            kind,
        }),
    }
}

/// The operator's view of a set of configured subscriptions over their store.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionAdmin<'a> {
    store: &'a Store,
    subscriptions: &'a [Subscription],
}

impl<'a> SubscriptionAdmin<'a> {
    /// The operations on `subscriptions` (the configured ones, as
    /// [`Config::subscriptions`](crate::Config::subscriptions) plans them), whose state is in
    /// `store`.
    pub fn new(store: &'a Store, subscriptions: &'a [Subscription]) -> Self {
        SubscriptionAdmin {
            store,
            subscriptions,
        }
    }

    /// Every configured subscription, in configuration order, with its saved cursor and its
    /// state.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn list(&self) -> Result<Vec<SubscriptionSummary>, StoreError> {
        let mut summaries = Vec::with_capacity(self.subscriptions.len());
        let feed_end = self.store.feed_end().await?;
        for subscription in self.subscriptions {
            let name = subscription.name();
            let kind = SubscriptionKind::of(subscription.target());
            let cursor = self.store.saved_cursor(subscription.cursor()).await?;
            // Only a push subscription reads its state: whatever is stored under another
            // kind's name (the same name was of kind http once) changes nothing.
            let control = if kind == SubscriptionKind::Http {
                self.store.subscription_control(name).await?
            } else {
                SubscriptionControl::new(name)
            };
            summaries.push(SubscriptionSummary {
                name: name.to_owned(),
                kind,
                cursor,
                status: control.status,
                reason: control.reason,
                changed_at: control.changed_at,
                failing_since: control.failing_since,
                lag: cursor.map(|cursor| (feed_end - cursor).max(0)),
            });
        }
        Ok(summaries)
    }

    /// The configured subscription `name`, when it is of kind `http` (see
    /// [`push_subscription`]).
    ///
    /// # Errors
    /// [`ControlError::Unknown`] when none is configured by that name,
    /// [`ControlError::NotPush`] when it is of another kind.
    pub fn push_subscription(&self, name: &str) -> Result<&'a Subscription, ControlError> {
        push_subscription(self.subscriptions, name)
    }

    /// Up to `limit` messages the push subscription `name` has parked after feed `seq`
    /// `after`, by `seq`; only those in `state` when given. Their bodies are not served.
    ///
    /// # Errors
    /// See [`push_subscription`](Self::push_subscription); [`ControlError::Store`] when the
    /// store cannot be read.
    pub async fn messages(
        &self,
        name: &str,
        state: Option<PushState>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<PushMessage>, ControlError> {
        self.push_subscription(name)?;
        Ok(self.store.push_messages(name, state, after, limit).await?)
    }

    /// Pauses the push subscription `name` (at `now`) for `actor`: it sends nothing, its
    /// cursor waits. Its state after the change. Recorded in the audit log, done or refused.
    ///
    /// # Errors
    /// See [`push_subscription`](Self::push_subscription); [`ControlError::Store`] when
    /// nothing was stored.
    pub async fn pause(
        &self,
        name: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<SubscriptionControl, ControlError> {
        self.change(name, (ControlAction::Pause, AuditAction::Pause), now, actor)
            .await
    }

    /// Resumes the push subscription `name` (at `now`) for `actor` after a pause, or
    /// re-enables it after it was disabled; how long it failed before no longer counts. Its
    /// state after the change. Recorded in the audit log, done or refused.
    ///
    /// # Errors
    /// See [`push_subscription`](Self::push_subscription); [`ControlError::Store`] when
    /// nothing was stored.
    pub async fn resume(
        &self,
        name: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<SubscriptionControl, ControlError> {
        self.change(
            name,
            (ControlAction::Resume, AuditAction::Resume),
            now,
            actor,
        )
        .await
    }

    async fn change(
        &self,
        name: &str,
        (action, audited): (ControlAction, AuditAction),
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<SubscriptionControl, ControlError> {
        let result = match self.push_subscription(name) {
            Ok(_) => self
                .store
                .control_subscription(name, action, now)
                .await
                .map_err(ControlError::from),
            Err(refused) => Err(refused),
        };
        let recorded = audit::Action {
            action: audited,
            target: name,
            parameters: json!({}),
            at: now,
        };
        audit::record(self.store, actor, recorded, &result, |state| {
            json!({"status": state.status, "reason": state.reason, "version": state.version})
        })
        .await;
        result
    }

    /// Puts the exhausted messages of the push subscription `name` first parked at or after
    /// `since` (all when `None`) back on schedule, due at `now`, each under its
    /// `webhook-id`, for `actor`; how many. (A paused or disabled subscription sends them
    /// once resumed.) Recorded in the audit log, done or refused.
    ///
    /// # Errors
    /// See [`push_subscription`](Self::push_subscription); [`ControlError::Store`] when
    /// nothing was stored.
    pub async fn redeliver(
        &self,
        name: &str,
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<u64, ControlError> {
        let result = match self.push_subscription(name) {
            Ok(_) => self
                .store
                .redeliver(name, since, now)
                .await
                .map_err(ControlError::from),
            Err(refused) => Err(refused),
        };
        let recorded = audit::Action {
            action: AuditAction::Redeliver,
            target: name,
            parameters: json!({"since": since}),
            at: now,
        };
        audit::record(
            self.store,
            actor,
            recorded,
            &result,
            |count| json!({"redelivered": count}),
        )
        .await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_states_parse_by_their_names_only() {
        for state in [PushState::Pending, PushState::Exhausted] {
            assert_eq!(parse_state(state.as_str()), Ok(state));
        }
        for wrong in ["", "Pending", "delivered", "exhausted "] {
            assert!(parse_state(wrong).is_err(), "{wrong:?}");
        }
    }
}
