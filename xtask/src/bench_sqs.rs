//! `cargo xtask bench sqs`: a private `moto_server` (installed into `.venv` by `cargo xtask
//! moto`), and the `sqs_drain` example of `shipfeed-server` run against it: the same Seven
//! Senders messages drained through shipfeed (normalize, durable SQLite commit, delete) and
//! through a raw aws-sdk-sqs receive/delete loop, fed in waves that keep the queue depth ≤ 100.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::bench::{self, Guard, Options, TempDir};

pub(crate) fn run(root: &Path, options: &Options) -> Result<()> {
    let messages: u64 = options.get("messages", 3000)?;
    let rounds: u64 = options.get("rounds", 2)?;
    let max_depth: u64 = options.get("max-depth", 100)?;
    let pollers: u64 = options.get("pollers", 2)?;
    let wait: u64 = options.get("wait-seconds", 0)?;
    bench::print_machine();
    let moto_server = crate::moto::ensure(root)?;
    let release = bench::build_release(root)?;
    let dir = TempDir::new("shipfeed-bench-sqs")?;

    let port = bench::free_port()?;
    let log = std::fs::File::create(dir.0.join("moto.log"))?;
    let mut moto = Guard(
        Command::new(&moto_server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", moto_server.display()))?,
    );
    bench::wait_ready(&mut moto.0, port, "/moto-api/", Duration::from_secs(120))?;
    eprintln!("bench: moto_server on 127.0.0.1:{port}");

    let output = Command::new(release.join("examples/sqs_drain"))
        .args(["--endpoint-url", &format!("http://127.0.0.1:{port}")])
        .args(["--messages", &messages.to_string()])
        .args(["--rounds", &rounds.to_string()])
        .args(["--max-depth", &max_depth.to_string()])
        .args(["--pollers", &pollers.to_string()])
        .args(["--wait-seconds", &wait.to_string()])
        .arg("--work-dir")
        .arg(dir.0.join("work"))
        .stderr(Stdio::inherit())
        .output()
        .context("run sqs_drain")?;
    bench::stop(&mut moto.0, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("sqs_drain failed ({}):\n{text}", output.status);
    }
    report(&text, max_depth, pollers, wait);
    Ok(())
}

fn field<'l>(line: &'l str, name: &str) -> &'l str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or("?")
}

fn report(text: &str, max_depth: u64, pollers: u64, wait: u64) {
    println!();
    println!("| round | drain | messages | drain s | msgs/s | wall s (with feeding) | wall msgs/s | detail |");
    println!("|---:|---|---:|---:|---:|---:|---:|---|");
    for line in text.lines().filter(|l| l.starts_with("RESULT ")) {
        let detail: Vec<&str> = line
            .split_whitespace()
            .filter(|kv| {
                [
                    "stored=",
                    "dead_letters=",
                    "deleted=",
                    "duplicates=",
                    "left_in_flight=",
                ]
                .iter()
                .any(|p| kv.starts_with(p))
            })
            .collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            field(line, "round"),
            field(line, "mode"),
            field(line, "messages"),
            field(line, "seconds"),
            field(line, "msgs_per_s"),
            field(line, "wall_seconds"),
            field(line, "wall_msgs_per_s"),
            detail.join(" ")
        );
    }
    if let Some(summary) = text.lines().find(|l| l.starts_with("SUMMARY ")) {
        let ratio: f64 = field(summary, "ratio").parse().unwrap_or(0.0);
        println!();
        println!(
            "shipfeed {} msgs/s vs raw loop {} msgs/s (drain time, mean over rounds): ratio \
             {ratio:.3}× (target ≥ 0.9×: {}); {pollers} pollers each, batches of 10, receive \
             wait {wait} s, fed in waves of {max_depth} (queue depth ≤ {max_depth})",
            field(summary, "shipfeed_msgs_per_s"),
            field(summary, "raw_msgs_per_s"),
            if ratio >= 0.9 { "holds" } else { "MISSED" }
        );
        println!(
            "reference: the raw loop asking for shipfeed's message attributes did {} msgs/s; \
             shipfeed against it: {}×",
            field(summary, "raw_attributes_msgs_per_s"),
            field(summary, "attributes_ratio"),
        );
    }
}
