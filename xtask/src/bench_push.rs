//! `cargo xtask bench push`: an HTTP push subscription draining a backlog against a plain
//! `reqwest` loop POSTing the same bodies to the same receiver at the same concurrency (the
//! `push_drain` example of `shipfeed-subscriptions`), in interleaved rounds of one run; then
//! the latency from an ingest's acknowledgement to the receiver's receipt.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::bench::{self, Options};

pub(crate) fn run(root: &Path, options: &Options) -> Result<()> {
    let deliveries: u64 = options.get("deliveries", 8_000)?;
    let concurrency: u64 = options.get("concurrency", 16)?;
    let rounds: u64 = options.get("rounds", 5)?;
    let rate: f64 = options.get("rate", 50.0)?;
    bench::print_machine();
    let release = bench::build_release(root)?;
    let output = Command::new(release.join("examples/push_drain"))
        .args(["--deliveries", &deliveries.to_string()])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--rounds", &rounds.to_string()])
        .args(["--rate", &rate.to_string()])
        .output()
        .context("run push_drain")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "push_drain failed ({}):\n{text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    print!("{text}");
    let rates = |phase: &str| -> Vec<f64> {
        text.lines()
            .filter(|line| line.starts_with(&format!("RESULT phase={phase} ")))
            .filter_map(|line| {
                let field = |name: &str| -> Option<f64> {
                    line.split_whitespace()
                        .find_map(|part| part.strip_prefix(&format!("{name}=")))?
                        .parse()
                        .ok()
                };
                Some(field("items")? / field("seconds")?)
            })
            .collect()
    };
    let (baseline, push) = (rates("baseline"), rates("push"));
    let [baseline_median] = bench::quantiles(&baseline, [0.5]);
    let [push_median] = bench::quantiles(&push, [0.5]);
    let pairs: Vec<String> = baseline
        .iter()
        .zip(&push)
        .map(|(b, p)| format!("{:.2}", p / b))
        .collect();
    println!(
        "push {push_median:.0} items/s vs reqwest loop {baseline_median:.0} items/s at concurrency {concurrency}: {:.2}x (median of {rounds} rounds; per round: {})",
        push_median / baseline_median,
        pairs.join(", ")
    );
    Ok(())
}
