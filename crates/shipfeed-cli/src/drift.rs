//! `shipfeed drift`: what the adapters met in deliveries and do not know, per provider, read
//! from the store the configuration names (as `GET /v1/drift` serves it).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use shipfeed_server::Config;
use shipfeed_store::DriftReport;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The service's configuration (the same file `serve` uses; default: the embedded one).
    #[arg(long, short, env = "SHIPFEED_CONFIG")]
    config: Option<PathBuf>,
    /// Only this provider's drift.
    #[arg(long)]
    provider: Option<shipfeed::Provider>,
    /// Print the report as JSON (the body of `GET /v1/drift`) instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &Args) -> Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    let report = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(async {
            let store = shipfeed_store::open(&config.store)
                .await
                .with_context(|| format!("open the store {}", config.store))?;
            store.drift(args.provider).await.context("read drift")
        })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The report as an aligned text table, then what the cap dropped.
fn table(report: &DriftReport) -> String {
    let header = [
        "PROVIDER",
        "KIND",
        "KEY",
        "DELIVERIES",
        "FIRST SEEN",
        "LAST SEEN",
        "SAMPLE SEQ",
    ];
    let rows: Vec<[String; 7]> = report
        .entries
        .iter()
        .map(|entry| {
            [
                entry.provider.to_string(),
                entry.kind.to_string(),
                // A key comes from a payload: no control characters on the terminal.
                entry.key.escape_debug().to_string(),
                entry.deliveries.to_string(),
                crate::table::time(entry.first_seen),
                crate::table::time(entry.last_seen),
                entry.sample_delivery_seq.to_string(),
            ]
        })
        .collect();
    let mut out = if rows.is_empty() {
        "no drift recorded\n".to_owned()
    } else {
        crate::table::aligned(header, &rows)
    };
    for dropped in &report.dropped {
        let _ = writeln!(
            out,
            "{} {}: {} observations past the cap of {} keys, not kept",
            dropped.provider,
            dropped.kind,
            dropped.observations,
            shipfeed_store::DRIFT_KEYS_PER_KIND
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipfeed::drift::DriftKind;
    use shipfeed::Provider;
    use shipfeed_store::{DriftDropped, DriftEntry};

    #[test]
    fn the_table_aligns_columns_and_lists_what_the_cap_dropped() {
        let at = chrono::DateTime::from_timestamp(1_764_770_400, 0).unwrap_or_default();
        let report = DriftReport {
            entries: vec![DriftEntry {
                provider: Provider::Sendcloud,
                kind: DriftKind::UnknownField,
                key: "parcel.colour\n".to_owned(),
                deliveries: 12,
                first_seen: at,
                last_seen: at,
                sample_delivery_seq: 7,
            }],
            dropped: vec![DriftDropped {
                provider: Provider::Shipup,
                kind: DriftKind::UnknownField,
                observations: 3,
            }],
        };
        let text = table(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("PROVIDER   KIND           KEY"),
            "{text}"
        );
        assert!(lines[1].contains(r"parcel.colour\n"), "{text}");
        assert_eq!(
            lines[0].find("DELIVERIES"),
            lines[1].find("12"),
            "columns line up: {text}"
        );
        assert!(
            lines[2].starts_with("shipup unknown_field: 3 observations"),
            "{text}"
        );
        assert_eq!(table(&DriftReport::default()), "no drift recorded\n");
    }
}
