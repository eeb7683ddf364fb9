//! The audit log's writing side, once for the HTTP API and the commands: every operator's
//! action (replay, redelivery, pause, resume) is recorded after it ran, with who asked for it
//! and how it ended, whether through `/v1/...` or `shipfeed ...`. The actions themselves
//! ([`SubscriptionAdmin`](crate::SubscriptionAdmin)'s changes, [`Service::replay`] and
//! [`Service::replay_deliveries`]) call `record`, so no handler or command records anything
//! by itself, and none can forget to.
//!
//! An entry holds names, parameters and counts only: no delivery body, no token, no
//! error text of an adapter (which may quote a payload).
//!
//! [`Service::replay`]: crate::Service::replay
//! [`Service::replay_deliveries`]: crate::Service::replay_deliveries

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shipfeed_projector::{ReplayOutcome, ReplayReport, ReplaySummary};
use shipfeed_store::{AuditAction, AuditOutcome, AuditRecord, Store};

/// Who asked for an operator's action, as the audit log names them: a caller of the HTTP
/// API by the name of its token (`anonymous` while the API runs open), the command line as
/// `cli:<user>`.
///
/// ```
/// use shipfeed_server::api_auth::Caller;
/// use shipfeed_server::audit::Actor;
/// assert_eq!(Actor::from(&Caller(Some("support-tools".into()))).as_str(), "support-tools");
/// assert_eq!(Actor::from(&Caller(None)).as_str(), "anonymous");
/// assert_eq!(Actor::cli(Some("ops")).as_str(), "cli:ops");
/// assert_eq!(Actor::cli(None).as_str(), "cli:unknown");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(String);

/// A caller of the HTTP API, as the token check put it on the request: the name of the
/// `[[api_token]]` it presented (by header or console session), or `anonymous`.
impl From<&crate::api_auth::Caller> for Actor {
    fn from(caller: &crate::api_auth::Caller) -> Self {
        Actor(caller.actor().to_owned())
    }
}

impl Actor {
    /// The command line, run by `user` (its `$USER`): `cli:<user>`, `cli:unknown` when
    /// there is none.
    pub fn cli(user: Option<&str>) -> Self {
        let user = user.map(str::trim).filter(|user| !user.is_empty());
        Actor(format!("cli:{}", user.unwrap_or("unknown")))
    }

    /// The name recorded.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is recorded of an action, besides who did it and how it ended.
pub(crate) struct Action<'a> {
    /// What.
    pub(crate) action: AuditAction,
    /// To what (a subscription's name, the deliveries replayed).
    pub(crate) target: &'a str,
    /// With which parameters.
    pub(crate) parameters: Value,
    /// When it ran.
    pub(crate) at: DateTime<Utc>,
}

/// Records in `store`'s audit log that `actor` did `action`, which ended in `result`:
/// `ok` with the result's JSON (`detail`: `{"parameters", "result"}`), or `error` with the
/// error's message (`{"parameters", "error"}`). A failure to record is logged, never
/// returned: the action has run, and its answer stands.
pub(crate) async fn record<T, E: std::fmt::Display>(
    store: &Store,
    actor: &Actor,
    action: Action<'_>,
    result: &Result<T, E>,
    detail: impl FnOnce(&T) -> Value,
) {
    let (outcome, detail) = match result {
        Ok(done) => (
            AuditOutcome::Ok,
            json!({"parameters": action.parameters, "result": detail(done)}),
        ),
        Err(error) => (
            AuditOutcome::Error,
            json!({"parameters": action.parameters, "error": error.to_string()}),
        ),
    };
    let record = AuditRecord {
        at: action.at,
        actor: actor.as_str().to_owned(),
        action: action.action,
        target: action.target.to_owned(),
        outcome,
        detail,
    };
    if let Err(error) = store.record_audit(record).await {
        tracing::error!(
            error = %shipfeed::error_chain(&error),
            actor = %actor,
            action = action.action.as_str(),
            target = action.target,
            outcome = outcome.as_str(),
            "an operator's action ran but could not be recorded in the audit log"
        );
    }
}

/// A replay's counts, without the event ids it lists.
pub(crate) fn replay_counts(summary: &ReplaySummary) -> Value {
    json!({
        "replayed": summary.replayed,
        "new_events": summary.new_events,
        "duplicates": summary.duplicates,
        "revised": summary.revised,
        "retracted": summary.retracted,
        "recovered": summary.recovered,
        "dead_letters": summary.dead_letters,
        "skipped": summary.skipped,
        "skipped_endpoints": summary.skipped_endpoints,
    })
}

/// A replay by `seq`: its counts, and the `seq`s by outcome (no error text: a dead letter's
/// reason may quote its payload).
pub(crate) fn replay_report(report: &ReplayReport) -> Value {
    let mut counts = replay_counts(&report.summary);
    let mut by_outcome: std::collections::BTreeMap<ReplayOutcome, Vec<i64>> = Default::default();
    for delivery in &report.deliveries {
        by_outcome
            .entry(delivery.outcome)
            .or_default()
            .push(delivery.seq);
    }
    let outcomes: serde_json::Map<String, Value> = by_outcome
        .into_iter()
        .map(|(outcome, seqs)| (outcome.as_str().to_owned(), json!(seqs)))
        .collect();
    if let Some(counts) = counts.as_object_mut() {
        counts.insert("outcomes".to_owned(), Value::Object(outcomes));
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipfeed_projector::ReplayedDelivery;

    #[test]
    fn a_replay_by_seq_is_recorded_as_counts_and_seqs_by_outcome() {
        let delivery = |seq, outcome, error: Option<&str>| ReplayedDelivery {
            seq,
            outcome,
            error: error.map(str::to_owned),
        };
        let report = ReplayReport {
            summary: ReplaySummary {
                replayed: 2,
                recovered: 1,
                dead_letters: 1,
                revised_events: vec!["sendcloud:3SABC-1".into()],
                ..ReplaySummary::default()
            },
            deliveries: vec![
                delivery(12, ReplayOutcome::Recovered, None),
                delivery(13, ReplayOutcome::DeadLetter, Some("parcel: \"J. Doe\"")),
                delivery(14, ReplayOutcome::NotFound, None),
                delivery(15, ReplayOutcome::Recovered, None),
            ],
        };
        let detail = replay_report(&report);
        assert_eq!(
            detail["outcomes"],
            json!({"recovered": [12, 15], "dead_letter": [13], "not_found": [14]})
        );
        assert_eq!(
            (detail["replayed"].as_u64(), detail["recovered"].as_u64()),
            (Some(2), Some(1))
        );
        let text = detail.to_string();
        assert!(
            !text.contains("J. Doe") && !text.contains("3SABC"),
            "{text}"
        );
    }
}
