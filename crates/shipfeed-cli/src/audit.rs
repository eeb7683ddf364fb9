//! `shipfeed audit`: the audit log of operators' actions, newest first, on the store the
//! configuration names (as `GET /v1/audit` serves it); and who the commands that change
//! something record as their actor.

use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;
use shipfeed_server::{Actor, Config};
use shipfeed_store::AuditEntry;

use crate::subscription::ConfigArg;
use crate::table;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// How many entries, newest first (1 to 1000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,
    /// Only entries with a smaller id (the `next` of the page before).
    #[arg(long)]
    before: Option<i64>,
    /// Print `{"entries": [...], "next": id}` (the body of `GET /v1/audit`) instead of a
    /// table.
    #[arg(long)]
    json: bool,
}

/// Who the commands record as having acted: `cli:<$USER>` (`cli:unknown` without it).
pub(crate) fn actor() -> Actor {
    Actor::cli(std::env::var("USER").ok().as_deref())
}

pub(crate) fn run(args: &Args) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        let config = Config::load(args.config.path())?;
        let store = shipfeed_store::open(&config.store)
            .await
            .with_context(|| format!("open the store {}", config.store))?;
        let limit = usize::from(args.limit);
        let entries = store
            .audit(args.before, limit)
            .await
            .context("read the audit log")?;
        if args.json {
            let next = (entries.len() == limit)
                .then(|| entries.last().map(|entry| entry.id))
                .flatten();
            let body = json!({ "entries": entries, "next": next });
            println!("{}", serde_json::to_string_pretty(&body)?);
        } else {
            print!("{}", audit_table(&entries));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The entries as an aligned table, their detail as compact JSON last.
fn audit_table(entries: &[AuditEntry]) -> String {
    if entries.is_empty() {
        return "no audit entry\n".to_owned();
    }
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|entry| {
            [
                entry.id.to_string(),
                table::time(entry.at),
                entry.actor.clone(),
                entry.action.to_string(),
                entry.target.clone(),
                entry.outcome.to_string(),
                entry.detail.to_string(),
            ]
        })
        .collect();
    table::aligned(
        ["ID", "AT", "ACTOR", "ACTION", "TARGET", "OUTCOME", "DETAIL"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipfeed_store::{AuditAction, AuditOutcome};

    #[test]
    fn the_audit_table_shows_every_column_with_the_detail_last() {
        let entry = |id, actor: &str, action, target: &str, outcome, detail| AuditEntry {
            id,
            at: chrono::DateTime::from_timestamp(1_764_770_400, 0).unwrap_or_default(),
            actor: actor.to_owned(),
            action,
            target: target.to_owned(),
            outcome,
            detail,
        };
        let text = audit_table(&[
            entry(
                7,
                "cli:ops",
                AuditAction::Pause,
                "hooks",
                AuditOutcome::Ok,
                json!({"parameters": {}, "result": {"status": "paused"}}),
            ),
            entry(
                6,
                "operator",
                AuditAction::Replay,
                "deliveries 12-13",
                AuditOutcome::Error,
                json!({"error": "the store is shutting down"}),
            ),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "ID  AT                    ACTOR     ACTION  TARGET            OUTCOME  DETAIL",
                r#"7   2025-12-03T14:00:00Z  cli:ops   pause   hooks             ok       {"parameters":{},"result":{"status":"paused"}}"#,
                r#"6   2025-12-03T14:00:00Z  operator  replay  deliveries 12-13  error    {"error":"the store is shutting down"}"#,
            ]
        );
        assert_eq!(audit_table(&[]), "no audit entry\n");
    }

    #[test]
    fn the_commands_act_as_cli_and_their_user() {
        assert!(actor().as_str().starts_with("cli:"), "{}", actor());
    }
}
