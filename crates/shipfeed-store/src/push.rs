//! What an HTTP push subscription keeps in the store, once for every database: the messages
//! that wait for a retry (each with its own schedule) or have used up every attempt, and the
//! subscription's state (active, paused, disabled, since when it fails).
//!
//! A message is written here only when an attempt fails (or when an earlier item of the same
//! shipment waits here): a subscription whose receiver answers stores nothing but its cursor.
//! Writes made by the subscription's driver carry its lease's epoch ([`Store::commit_push`]);
//! an operator's pause, resume or redelivery ([`Store::control_subscription`],
//! [`Store::redeliver`]) bumps the subscription's `version`, which tells the driver to read
//! its state again.
//!
//! [`Store::commit_push`]: crate::Store::commit_push
//! [`Store::control_subscription`]: crate::Store::control_subscription
//! [`Store::redeliver`]: crate::Store::redeliver

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::driver::{PushControlRow, PushRow, WriteDriver};
use crate::StoreError;

/// Where a stored push message is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum PushState {
    /// Waiting for its next attempt (or for an earlier item of its shipment).
    #[default]
    Pending,
    /// Every attempt of the schedule failed: kept until redelivered.
    Exhausted,
}

impl PushState {
    /// The name stored and shown: `pending`, `exhausted`.
    pub fn as_str(self) -> &'static str {
        match self {
            PushState::Pending => "pending",
            PushState::Exhausted => "exhausted",
        }
    }

    fn parse(text: &str) -> Self {
        if text == "exhausted" {
            PushState::Exhausted
        } else {
            PushState::Pending
        }
    }
}

/// A feed item an HTTP push subscription has not delivered yet, with its retry state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PushMessage {
    /// The feed item's `seq`.
    pub seq: i64,
    /// Its `webhook-id`: the same on every attempt.
    pub webhook_id: String,
    /// What orders it: no later item sharing one of these keys is delivered before it.
    pub ordering_keys: Vec<String>,
    /// Pending or exhausted.
    pub state: PushState,
    /// Attempts made so far (0: it waits behind an earlier item of its shipment).
    pub attempts: u32,
    /// When it may be attempted next.
    pub next_attempt_at: DateTime<Utc>,
    /// When it was first parked here.
    pub first_failed_at: DateTime<Utc>,
    /// The HTTP status of the last attempt, when the receiver answered.
    pub last_status: Option<u16>,
    /// What went wrong at the last attempt (no body of the receiver's: only its status or the
    /// transport's error).
    pub last_error: Option<String>,
    /// The request body: the feed item as JSON, exactly as first sent.
    #[serde(skip)]
    pub body: String,
}

/// Whether an HTTP push subscription sends.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// It sends.
    #[default]
    Active,
    /// An operator paused it: nothing is sent, its cursor waits.
    Paused,
    /// It was disabled (failing too long, or its receiver answered 410): nothing is sent until
    /// an operator resumes it.
    Disabled,
}

impl SubscriptionStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Paused => "paused",
            SubscriptionStatus::Disabled => "disabled",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "paused" => SubscriptionStatus::Paused,
            "disabled" => SubscriptionStatus::Disabled,
            _ => SubscriptionStatus::Active,
        }
    }
}

/// An HTTP push subscription's state as stored (a subscription never changed is active, at
/// version 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SubscriptionControl {
    /// The subscription's name.
    pub name: String,
    /// Whether it sends.
    pub status: SubscriptionStatus,
    /// Why it is paused or disabled.
    pub reason: Option<String>,
    /// When its status last changed.
    pub changed_at: Option<DateTime<Utc>>,
    /// Since when every attempt has failed (none while it delivers).
    pub failing_since: Option<DateTime<Utc>>,
    /// Incremented by every operator's change (pause, resume, redelivery).
    pub version: i64,
}

impl SubscriptionControl {
    /// The state of a subscription never changed.
    pub fn new(name: &str) -> Self {
        SubscriptionControl {
            name: name.to_owned(),
            status: SubscriptionStatus::Active,
            reason: None,
            changed_at: None,
            failing_since: None,
            version: 0,
        }
    }
}

/// An operator's change to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAction {
    /// Stop sending until resumed.
    Pause,
    /// Send again (after a pause, or re-enable after it was disabled).
    Resume,
    /// Stop sending, saying why.
    Disable(String),
}

/// What one round of an HTTP push subscription's driver changes, written in one transaction
/// under its lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushCommit {
    /// The feed position it has read up to (every item up to it delivered or parked).
    pub cursor: Option<i64>,
    /// Messages parked or updated (a failed attempt, or an item held behind one).
    pub park: Vec<PushMessage>,
    /// Parked messages now delivered (removed).
    pub delivered: Vec<i64>,
    /// A new `failing_since` (`Some(None)`: it delivers again).
    pub failing_since: Option<Option<DateTime<Utc>>>,
    /// Disable the subscription, saying why.
    pub disable: Option<String>,
}

pub(crate) fn row(subscription: &str, message: &PushMessage) -> PushRow {
    PushRow {
        subscription: subscription.to_owned(),
        seq: message.seq,
        webhook_id: message.webhook_id.clone(),
        ordering_keys: crate::project::to_json(&message.ordering_keys),
        state: message.state.as_str().to_owned(),
        attempts: i64::from(message.attempts),
        next_attempt_at: message.next_attempt_at,
        first_failed_at: message.first_failed_at,
        last_status: message.last_status.map(i64::from),
        last_error: message.last_error.clone(),
        body: message.body.clone(),
    }
}

pub(crate) fn message(row: PushRow) -> PushMessage {
    PushMessage {
        seq: row.seq,
        webhook_id: row.webhook_id,
        ordering_keys: serde_json::from_str(&row.ordering_keys).unwrap_or_default(),
        state: PushState::parse(&row.state),
        attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
        next_attempt_at: row.next_attempt_at,
        first_failed_at: row.first_failed_at,
        last_status: row.last_status.and_then(|s| u16::try_from(s).ok()),
        last_error: row.last_error,
        body: row.body,
    }
}

pub(crate) fn control(row: PushControlRow) -> SubscriptionControl {
    SubscriptionControl {
        status: SubscriptionStatus::parse(&row.status),
        name: row.name,
        reason: row.reason,
        changed_at: row.changed_at,
        failing_since: row.failing_since,
        version: row.version,
    }
}

fn control_row(control: &SubscriptionControl) -> PushControlRow {
    PushControlRow {
        name: control.name.clone(),
        status: control.status.as_str().to_owned(),
        reason: control.reason.clone(),
        changed_at: control.changed_at,
        failing_since: control.failing_since,
        version: control.version,
    }
}

async fn stored_control(
    driver: &mut impl WriteDriver,
    name: &str,
) -> Result<SubscriptionControl, StoreError> {
    Ok(driver
        .push_control(name)
        .await?
        .map_or_else(|| SubscriptionControl::new(name), control))
}

/// Writes a round of the driver (the lease was checked by the caller).
pub(crate) async fn commit(
    driver: &mut impl WriteDriver,
    subscription: &str,
    cursor: &str,
    round: &PushCommit,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if !round.park.is_empty() {
        let rows: Vec<PushRow> = round
            .park
            .iter()
            .map(|message| row(subscription, message))
            .collect();
        driver.upsert_push(&rows).await?;
    }
    if !round.delivered.is_empty() {
        driver.delete_push(subscription, &round.delivered).await?;
    }
    if round.failing_since.is_some() || round.disable.is_some() {
        let mut state = stored_control(driver, subscription).await?;
        if let Some(since) = round.failing_since {
            state.failing_since = since;
        }
        if let Some(reason) = &round.disable {
            state.status = SubscriptionStatus::Disabled;
            state.reason = Some(reason.clone());
            state.changed_at = Some(now);
        }
        driver.put_push_control(&control_row(&state)).await?;
    }
    if let Some(position) = round.cursor {
        driver.save_cursor(cursor, position).await?;
    }
    Ok(())
}

/// An operator's change: the state after it.
pub(crate) async fn change(
    driver: &mut impl WriteDriver,
    subscription: &str,
    action: &ControlAction,
    now: DateTime<Utc>,
) -> Result<SubscriptionControl, StoreError> {
    let mut state = stored_control(driver, subscription).await?;
    let (status, reason) = match action {
        ControlAction::Pause => (
            SubscriptionStatus::Paused,
            Some("paused by an operator".into()),
        ),
        ControlAction::Resume => (SubscriptionStatus::Active, None),
        ControlAction::Disable(reason) => (SubscriptionStatus::Disabled, Some(reason.clone())),
    };
    if status == SubscriptionStatus::Active {
        // Resumed: how long it failed before no longer counts towards disabling it again.
        state.failing_since = None;
    }
    state.status = status;
    state.reason = reason;
    state.changed_at = Some(now);
    state.version += 1;
    driver.put_push_control(&control_row(&state)).await?;
    Ok(state)
}

/// Puts the exhausted messages first parked at or after `since` back on schedule, due at
/// `now` with a fresh set of attempts; returns how many.
pub(crate) async fn redeliver(
    driver: &mut impl WriteDriver,
    subscription: &str,
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let count = driver
        .redeliver_push(subscription, since.unwrap_or(DateTime::UNIX_EPOCH), now)
        .await?;
    let mut state = stored_control(driver, subscription).await?;
    state.version += 1;
    driver.put_push_control(&control_row(&state)).await?;
    Ok(count)
}
