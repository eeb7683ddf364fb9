//! `cargo xtask bench rabbitmq`: a RabbitMQ subscription draining a backlog against a plain
//! `lapin` publish-with-confirms loop publishing the same bodies to the same broker (the
//! `rabbitmq_drain` example of `shipfeed-subscriptions`), in interleaved rounds of one run.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::bench::{self, Options};

pub(crate) fn run(root: &Path, options: &Options) -> Result<()> {
    let deliveries: u64 = options.get("deliveries", 8_000)?;
    let rounds: u64 = options.get("rounds", 5)?;
    let batch: u64 = options.get("batch", 500)?;
    crate::services::ensure_rabbitmq()?;
    bench::print_machine();
    let release = bench::build_release(root)?;
    let output = Command::new(release.join("examples/rabbitmq_drain"))
        .args(["--deliveries", &deliveries.to_string()])
        .args(["--rounds", &rounds.to_string()])
        .args(["--batch", &batch.to_string()])
        .output()
        .context("run rabbitmq_drain")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "rabbitmq_drain failed ({}):\n{text}{}",
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
    let (baseline, rabbitmq) = (rates("baseline"), rates("rabbitmq"));
    let [baseline_median] = bench::quantiles(&baseline, [0.5]);
    let [rabbitmq_median] = bench::quantiles(&rabbitmq, [0.5]);
    let pairs: Vec<String> = baseline
        .iter()
        .zip(&rabbitmq)
        .map(|(b, r)| format!("{:.2}", r / b))
        .collect();
    println!(
        "rabbitmq {rabbitmq_median:.0} items/s vs lapin loop {baseline_median:.0} items/s, {batch} per confirm wait: {:.2}x (median of {rounds} rounds; per round: {})",
        rabbitmq_median / baseline_median,
        pairs.join(", ")
    );
    Ok(())
}
