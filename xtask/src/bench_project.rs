//! `cargo xtask bench project`: the projector alone draining a backlog, on SQLite and on
//! PostgreSQL (the `project_drain` example of `shipfeed-projector`), against the adapters
//! alone normalizing the same deliveries in the same run.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::bench::{self, Options};

pub(crate) fn run(root: &Path, options: &Options) -> Result<()> {
    let deliveries: u64 = options.get("deliveries", 20_000)?;
    let repeat: u64 = options.get("repeat", 2)?;
    bench::print_machine();
    let release = bench::build_release(root)?;
    crate::services::ensure_postgres()?;
    println!(
        "{deliveries} unique deliveries (Sendcloud, HappyColis, Shipup), each appended {repeat} time(s), then projected by `Projector::run`"
    );
    for store in ["sqlite", "postgres"] {
        let output = Command::new(release.join("examples/project_drain"))
            .args(["--store", store, "--deliveries", &deliveries.to_string()])
            .args(["--repeat", &repeat.to_string()])
            .output()
            .context("run project_drain")?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "project_drain failed ({}):\n{text}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        for line in text.lines().filter(|line| !line.starts_with("RESULT")) {
            println!("{line}");
        }
    }
    Ok(())
}
