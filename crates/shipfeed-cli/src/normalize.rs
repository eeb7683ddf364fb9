//! `shipfeed normalize`: raw deliveries in, canonical JSON lines out.

use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use shipfeed::registry::{self, Settings};
use shipfeed::{Headers, Provider, RawDelivery};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The provider that sent the deliveries: sendcloud, sevensenders, happycolis, shipup.
    #[arg(long, short)]
    provider: Provider,
    /// Body files (the exact bytes of one delivery each); `-` or none reads stdin.
    files: Vec<PathBuf>,
    /// Zone for times the source gives without one (Seven Senders), e.g. Europe/Berlin.
    #[arg(long, default_value = "UTC")]
    source_time_zone: chrono_tz::Tz,
    /// The `received_at` to stamp on events (RFC 3339); default: now.
    #[arg(long)]
    received_at: Option<DateTime<Utc>>,
}

/// Normalizes every input; a bad one is reported on stderr (file, JSON path, reason) and the
/// rest are still processed. Exit 1 when any input failed.
pub(crate) fn run(args: &Args) -> Result<ExitCode> {
    let adapter = registry::adapter(
        args.provider,
        &Settings::with_source_time_zone(args.source_time_zone),
    )?;
    let received_at = args.received_at.unwrap_or_else(Utc::now);
    let inputs: Vec<PathBuf> = if args.files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.files.clone()
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut failed = 0usize;
    for input in &inputs {
        let (name, body) = match read_input(input) {
            Ok(read) => read,
            Err(error) => {
                eprintln!("error: {}: {error:#}", input.display());
                failed += 1;
                continue;
            }
        };
        let delivery = RawDelivery {
            body,
            headers: Headers::new(),
            received_at,
        };
        match adapter.parse(&delivery) {
            Ok(outputs) => {
                for output in outputs {
                    serde_json::to_writer(&mut out, &output)?;
                    out.write_all(b"\n")?;
                }
            }
            Err(error) => {
                eprintln!("error: {name}: {error}");
                failed += 1;
            }
        }
    }
    out.flush()?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn read_input(path: &PathBuf) -> Result<(String, Vec<u8>)> {
    if path.as_os_str() == "-" {
        let mut body = Vec::new();
        io::stdin().read_to_end(&mut body).context("read stdin")?;
        return Ok(("<stdin>".to_owned(), body));
    }
    let body = std::fs::read(path).with_context(|| "cannot read file".to_owned())?;
    Ok((path.display().to_string(), body))
}
