//! The audit log, once for every database: what operators did (replay, redeliver, pause,
//! resume), who, when, to what, and how it ended. Entries are only ever appended; their ids
//! increase, so the log is read newest first from an id ([`Store::audit`]).
//!
//! What an entry holds is the caller's to choose, within one rule: nothing secret or personal
//! (no delivery bodies, no tokens, no payload-derived error text), only names, parameters and
//! counts.
//!
//! [`Store::audit`]: crate::Store::audit

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::driver::{AuditRow, WriteDriver};
use crate::StoreError;

/// What an operator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// Stored deliveries projected again with this build's adapters.
    Replay,
    /// An HTTP push subscription's exhausted messages put back on schedule.
    Redeliver,
    /// An HTTP push subscription paused.
    Pause,
    /// An HTTP push subscription resumed (or re-enabled).
    Resume,
}

impl AuditAction {
    /// The name stored and shown: `replay`, `redeliver`, `pause`, `resume`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Replay => "replay",
            AuditAction::Redeliver => "redeliver",
            AuditAction::Pause => "pause",
            AuditAction::Resume => "resume",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            AuditAction::Replay,
            AuditAction::Redeliver,
            AuditAction::Pause,
            AuditAction::Resume,
        ]
        .into_iter()
        .find(|action| action.as_str() == text)
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an operator's action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// It was done.
    Ok,
    /// It was refused or failed (the entry's `detail` says why).
    Error,
}

impl AuditOutcome {
    /// The name stored and shown: `ok`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Error => "error",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "ok" => Some(AuditOutcome::Ok),
            "error" => Some(AuditOutcome::Error),
            _ => None,
        }
    }
}

impl std::fmt::Display for AuditOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator's action, as it is recorded ([`Store::record_audit`]); the store gives it its
/// id.
///
/// [`Store::record_audit`]: crate::Store::record_audit
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When it ended.
    pub at: DateTime<Utc>,
    /// Who did it: an API token's name, `cli:<user>`, or `anonymous` (the API open without
    /// tokens).
    pub actor: String,
    /// What.
    pub action: AuditAction,
    /// To what: a subscription's name, the deliveries or the replay's filter, as text.
    pub target: String,
    /// Done, or refused or failed.
    pub outcome: AuditOutcome,
    /// Its parameters and its result (or the error), as JSON.
    pub detail: serde_json::Value,
}

/// One entry of the audit log (`GET /v1/audit`, `shipfeed audit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct AuditEntry {
    /// Its id: greater than every earlier entry's (the `before` of the next page).
    pub id: i64,
    /// When the action ended.
    pub at: DateTime<Utc>,
    /// Who did it: the API token's name, `cli:<user>` for the command line, `anonymous` when
    /// the API runs open (no `[[api_token]]`).
    pub actor: String,
    /// What was done.
    pub action: AuditAction,
    /// To what: a subscription's name, the deliveries replayed, or the replay's filter.
    pub target: String,
    /// Whether it was done (`ok`) or refused or failed (`error`).
    pub outcome: AuditOutcome,
    /// The action's parameters and its result (counts), or the error.
    pub detail: serde_json::Value,
}

/// Appends a record; its id.
pub(crate) async fn record(
    driver: &mut impl WriteDriver,
    record: &AuditRecord,
) -> Result<i64, StoreError> {
    let row = AuditRow {
        id: 0,
        at: record.at,
        actor: record.actor.clone(),
        action: record.action.as_str().to_owned(),
        target: record.target.clone(),
        outcome: record.outcome.as_str().to_owned(),
        detail: crate::project::to_json(&record.detail),
    };
    driver.insert_audit(&row).await
}

/// A stored entry read back; one this build cannot read (an action of a newer build) is
/// logged and left out.
pub(crate) fn entry(row: AuditRow) -> Option<AuditEntry> {
    let (Some(action), Some(outcome)) = (
        AuditAction::parse(&row.action),
        AuditOutcome::parse(&row.outcome),
    ) else {
        tracing::warn!(
            id = row.id,
            action = row.action,
            outcome = row.outcome,
            "skipping an audit entry this build cannot read"
        );
        return None;
    };
    Some(AuditEntry {
        id: row.id,
        at: row.at,
        actor: row.actor,
        action,
        target: row.target,
        outcome,
        detail: crate::parse_stored(&row.detail, "audit detail")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_outcomes_read_back_by_their_names_only() {
        for action in [
            AuditAction::Replay,
            AuditAction::Redeliver,
            AuditAction::Pause,
            AuditAction::Resume,
        ] {
            assert_eq!(AuditAction::parse(action.as_str()), Some(action));
            let json = serde_json::to_value(action).unwrap_or_default();
            assert_eq!(json, action.as_str());
        }
        for outcome in [AuditOutcome::Ok, AuditOutcome::Error] {
            assert_eq!(AuditOutcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(AuditAction::parse("disable"), None);
        assert_eq!(AuditOutcome::parse("OK"), None);
    }
}
