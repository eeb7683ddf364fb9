//! `shipfeed subscription list|messages|pause|resume` and `shipfeed redeliver`: what an
//! operator does with the subscriptions, on the store the configuration names (as
//! `/v1/subscriptions` does it, through the same [`SubscriptionAdmin`], which records each
//! change in the audit log as `cli:<user>`). The running service reads a change at its next
//! round: no restart.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde_json::json;
use shipfeed_server::{Config, SubscriptionAdmin, SubscriptionSummary};
use shipfeed_store::{PushMessage, PushState, SubscriptionControl};
use shipfeed_subscriptions::Subscription;

use crate::table;

/// The configuration option every one of these commands takes (before or after the
/// subcommand's name).
#[derive(clap::Args)]
pub(crate) struct ConfigArg {
    /// The service's configuration (the same file `serve` uses; default: the embedded one).
    #[arg(long, short, env = "SHIPFEED_CONFIG", global = true)]
    config: Option<PathBuf>,
}

impl ConfigArg {
    /// The configuration file given, if any.
    pub(crate) fn path(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }
}

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Every configured subscription: its kind, cursor and state (as `GET /v1/subscriptions`).
    List {
        /// Print the body of `GET /v1/subscriptions` instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The messages an HTTP push subscription keeps: pending (waiting for a retry) and
    /// exhausted (waiting for a redelivery), without their bodies.
    Messages {
        /// The subscription (of kind `http`).
        name: String,
        /// Only the messages in this state: `pending` or `exhausted`.
        #[arg(long, value_parser = shipfeed_server::control::parse_state)]
        state: Option<PushState>,
        /// Print the messages as a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop an HTTP push subscription sending; its cursor and messages wait.
    Pause(Change),
    /// Make an HTTP push subscription send again after a pause, or re-enable it after it was
    /// disabled.
    Resume(Change),
}

#[derive(clap::Args)]
struct Change {
    /// The subscription (of kind `http`).
    name: String,
    /// Print its state after the change as JSON instead of a sentence.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub(crate) struct RedeliverArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The subscription (of kind `http`).
    #[arg(long)]
    subscription: String,
    /// Only the messages first parked at or after this time (RFC 3339, e.g.
    /// 2024-06-01T00:00:00Z).
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// Print `{"redelivered": N}` instead of a sentence.
    #[arg(long)]
    json: bool,
}

/// The configured subscriptions and their store, opened from `config`.
struct Opened {
    store: shipfeed_store::Store,
    subscriptions: Vec<Subscription>,
}

impl Opened {
    /// Loads the configuration and, once `push` (when given) names one of its HTTP push
    /// subscriptions, opens its store (so that a wrong name leaves no store file behind).
    async fn new(config: &ConfigArg, push: Option<&str>) -> Result<Self> {
        let config = Config::load(config.config.as_deref())?;
        let subscriptions = config.subscriptions()?;
        if let Some(name) = push {
            shipfeed_server::control::push_subscription(&subscriptions, name)?;
        }
        let store = shipfeed_store::open(&config.store)
            .await
            .with_context(|| format!("open the store {}", config.store))?;
        Ok(Opened {
            store,
            subscriptions,
        })
    }

    fn admin(&self) -> SubscriptionAdmin<'_> {
        SubscriptionAdmin::new(&self.store, &self.subscriptions)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

pub(crate) fn run(args: &Args) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let push = match &args.command {
            Command::List { .. } => None,
            Command::Messages { name, .. } => Some(name),
            Command::Pause(change) | Command::Resume(change) => Some(&change.name),
        };
        let opened = Opened::new(&args.config, push.map(String::as_str)).await?;
        match &args.command {
            Command::List { json } => {
                let list = opened
                    .admin()
                    .list()
                    .await
                    .context("read the subscriptions")?;
                if *json {
                    let body = json!({ "subscriptions": list });
                    println!("{}", serde_json::to_string_pretty(&body)?);
                } else {
                    print!("{}", subscriptions_table(&list));
                }
            }
            Command::Messages { name, state, json } => {
                let messages = all_messages(opened.admin(), name, *state).await?;
                if *json {
                    println!("{}", serde_json::to_string_pretty(&messages)?);
                } else {
                    print!("{}", messages_table(&messages));
                }
            }
            Command::Pause(change) => {
                let state = opened
                    .admin()
                    .pause(&change.name, Utc::now(), &crate::audit::actor())
                    .await?;
                print_change(&state, change.json)?;
            }
            Command::Resume(change) => {
                let state = opened
                    .admin()
                    .resume(&change.name, Utc::now(), &crate::audit::actor())
                    .await?;
                print_change(&state, change.json)?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn redeliver(args: &RedeliverArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let opened = Opened::new(&args.config, Some(&args.subscription)).await?;
        let count = opened
            .admin()
            .redeliver(
                &args.subscription,
                args.since,
                Utc::now(),
                &crate::audit::actor(),
            )
            .await?;
        if args.json {
            println!("{}", json!({ "redelivered": count }));
        } else {
            let since = args
                .since
                .map(|since| format!(" first parked at or after {}", table::time(since)))
                .unwrap_or_default();
            println!(
                "subscription `{}`: {count} exhausted message(s){since} due again; the \
                 replica driving it sends them at its next round",
                args.subscription
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Every message the subscription keeps (in `state`, when given), page after page.
async fn all_messages(
    admin: SubscriptionAdmin<'_>,
    name: &str,
    state: Option<PushState>,
) -> Result<Vec<PushMessage>> {
    const PAGE: usize = 1000;
    let mut messages: Vec<PushMessage> = Vec::new();
    loop {
        let after = messages.last().map_or(0, |message| message.seq);
        let page = admin.messages(name, state, after, PAGE).await?;
        let full = page.len() == PAGE;
        messages.extend(page);
        if !full {
            return Ok(messages);
        }
    }
}

fn print_change(state: &SubscriptionControl, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(state)?);
    } else {
        let reason = state
            .reason
            .as_deref()
            .map(|reason| format!(" ({reason})"))
            .unwrap_or_default();
        println!(
            "subscription `{}` is {}{reason}; the replica driving it reads this at its next round",
            state.name,
            state.status.as_str()
        );
    }
    Ok(())
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

/// The subscriptions as an aligned table.
fn subscriptions_table(list: &[SubscriptionSummary]) -> String {
    if list.is_empty() {
        return "no subscription configured\n".to_owned();
    }
    let rows: Vec<[String; 7]> = list
        .iter()
        .map(|summary| {
            [
                summary.name.clone(),
                summary.kind.to_string(),
                or_dash(summary.cursor.map(|cursor| cursor.to_string())),
                summary.status.as_str().to_owned(),
                or_dash(summary.changed_at.map(table::time)),
                or_dash(summary.failing_since.map(table::time)),
                or_dash(summary.reason.clone()),
            ]
        })
        .collect();
    table::aligned(
        [
            "NAME",
            "KIND",
            "CURSOR",
            "STATUS",
            "CHANGED",
            "FAILING SINCE",
            "REASON",
        ],
        &rows,
    )
}

/// The messages as an aligned table.
fn messages_table(messages: &[PushMessage]) -> String {
    if messages.is_empty() {
        return "no message kept\n".to_owned();
    }
    let rows: Vec<[String; 8]> = messages
        .iter()
        .map(|message| {
            [
                message.seq.to_string(),
                message.state.as_str().to_owned(),
                message.attempts.to_string(),
                if message.state == PushState::Exhausted {
                    "-".to_owned()
                } else {
                    table::time(message.next_attempt_at)
                },
                table::time(message.first_failed_at),
                or_dash(message.last_status.map(|status| status.to_string())),
                message.webhook_id.clone(),
                or_dash(message.last_error.clone()),
            ]
        })
        .collect();
    table::aligned(
        [
            "SEQ",
            "STATE",
            "ATTEMPTS",
            "NEXT ATTEMPT",
            "FIRST FAILED",
            "LAST STATUS",
            "WEBHOOK ID",
            "LAST ERROR",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipfeed_server::SubscriptionKind;
    use shipfeed_store::SubscriptionStatus;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap_or_default()
    }

    #[test]
    fn the_subscriptions_table_shows_every_column_and_dashes_for_nothing() {
        let list = [
            SubscriptionSummary {
                name: "orders".into(),
                kind: SubscriptionKind::Http,
                cursor: Some(42),
                status: SubscriptionStatus::Paused,
                reason: Some("paused by an operator".into()),
                changed_at: Some(at(1_764_770_400)),
                failing_since: None,
                lag: Some(3),
            },
            SubscriptionSummary {
                name: "audit".into(),
                kind: SubscriptionKind::File,
                cursor: None,
                status: SubscriptionStatus::Active,
                reason: None,
                changed_at: None,
                failing_since: None,
                lag: None,
            },
        ];
        let text = subscriptions_table(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME    KIND  CURSOR  STATUS  CHANGED               FAILING SINCE  REASON",
                "orders  http  42      paused  2025-12-03T14:00:00Z  -              paused by an operator",
                "audit   file  -       active  -                     -              -",
            ]
        );
        assert_eq!(subscriptions_table(&[]), "no subscription configured\n");
    }

    #[test]
    fn the_messages_table_leaves_out_the_next_attempt_of_an_exhausted_one() {
        let message = |seq: i64, state: PushState| PushMessage {
            seq,
            webhook_id: format!("msg_{seq}"),
            ordering_keys: vec!["shipment:x".into()],
            state,
            attempts: 3,
            next_attempt_at: at(1_764_770_460),
            first_failed_at: at(1_764_770_400),
            last_status: Some(500),
            last_error: Some("answered 500 Internal Server Error".into()),
            body: "{}".into(),
        };
        let text = messages_table(&[
            message(7, PushState::Pending),
            message(9, PushState::Exhausted),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("SEQ  STATE      ATTEMPTS  NEXT ATTEMPT"),
            "{text}"
        );
        assert!(
            lines[1].contains("pending    3         2025-12-03T14:01:00Z"),
            "{text}"
        );
        assert!(lines[2].contains("exhausted  3         -   "), "{text}");
        assert!(
            lines[2].ends_with("msg_9       answered 500 Internal Server Error"),
            "{text}"
        );
        assert_eq!(messages_table(&[]), "no message kept\n");
    }
}
