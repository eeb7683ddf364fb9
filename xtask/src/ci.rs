//! `cargo xtask ci`: everything CI checks, in the order that fails fastest. The README's test
//! command and `.ci/run` both call this.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Crates that must never appear under `shipfeed-core` (it does no I/O).
const CORE_FORBIDDEN: &[&str] = &[
    "tokio", "axum", "hyper", "aws-", "sqlx", "rusqlite", "reqwest",
];

pub(crate) fn run(root: &Path) -> Result<()> {
    step(root, "format", &["fmt", "--all", "--", "--check"])?;
    step(
        root,
        "clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    each_feature_alone(root)?;
    core_is_pure(root)?;
    step(
        root,
        "fixtures fresh",
        &[
            "run", "--quiet", "--locked", "-p", "xtask", "--", "fixtures", "--check",
        ],
    )?;
    crate::moto::ensure(root).context("install moto_server for the SQS tests")?;
    crate::services::ensure_postgres()?;
    crate::services::ensure_nats()?;
    crate::services::ensure_rabbitmq()?;
    // The console's browser test drives Debian's Chromium through its ChromeDriver; the alert
    // rules are checked and unit-tested with Prometheus's own promtool.
    crate::debian::ensure("chromium", &["chromium", "chromium-driver"])?;
    crate::debian::ensure("chromedriver", &["chromium-driver"])?;
    crate::debian::ensure("promtool", &["prometheus"])?;
    step(
        root,
        "tests",
        &["test", "--workspace", "--all-features", "--locked"],
    )?;
    let mut doc = cargo(
        root,
        &[
            "doc",
            "--workspace",
            "--no-deps",
            "--all-features",
            "--locked",
        ],
    );
    doc.env("RUSTDOCFLAGS", "-D warnings");
    run_step("docs", doc)?;
    eprintln!("ci: all checks passed");
    Ok(())
}

fn cargo(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root).args(args);
    command
}

fn step(root: &Path, name: &str, args: &[&str]) -> Result<()> {
    run_step(name, cargo(root, args))
}

fn run_step(name: &str, mut command: Command) -> Result<()> {
    eprintln!("ci: {name}: {command:?}");
    let status = command.status().with_context(|| format!("start {name}"))?;
    if !status.success() {
        bail!("ci step `{name}` failed ({status})");
    }
    Ok(())
}

fn output(root: &Path, args: &[&str]) -> Result<String> {
    let out = cargo(root, args)
        .output()
        .with_context(|| format!("cargo {args:?}"))?;
    if !out.status.success() {
        bail!(
            "cargo {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The facade builds with no provider and with each provider alone. The feature list is read
/// from the manifest, so adding a provider needs no CI edit.
fn each_feature_alone(root: &Path) -> Result<()> {
    let metadata = output(
        root,
        &["metadata", "--no-deps", "--format-version", "1", "--locked"],
    )?;
    let metadata: serde_json::Value = serde_json::from_str(&metadata)?;
    let facade = metadata["packages"]
        .as_array()
        .and_then(|packages| packages.iter().find(|p| p["name"] == "shipfeed"))
        .context("package `shipfeed` not found")?;
    let mut features: Vec<String> = facade["features"]
        .as_object()
        .map(|f| f.keys().filter(|k| *k != "default").cloned().collect())
        .unwrap_or_default();
    features.sort();
    features.insert(0, String::new());
    for feature in &features {
        let label = if feature.is_empty() {
            "no provider"
        } else {
            feature
        };
        step(
            root,
            &format!("facade with {label}"),
            &[
                "check",
                "-p",
                "shipfeed",
                "--no-default-features",
                "--features",
                feature,
                "--locked",
            ],
        )?;
    }
    // A Sendcloud-only build must not pull in the AWS SDK.
    let tree = output(
        root,
        &[
            "tree",
            "-p",
            "shipfeed",
            "--no-default-features",
            "--features",
            "sendcloud",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--locked",
        ],
    )?;
    if let Some(line) = tree.lines().find(|l| l.starts_with("aws-")) {
        bail!("`shipfeed` with only `sendcloud` depends on {line}");
    }
    Ok(())
}

fn core_is_pure(root: &Path) -> Result<()> {
    let tree = output(
        root,
        &[
            "tree",
            "-p",
            "shipfeed-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--locked",
        ],
    )?;
    let offenders: Vec<&str> = tree
        .lines()
        .filter(|line| CORE_FORBIDDEN.iter().any(|bad| line.starts_with(bad)))
        .collect();
    if !offenders.is_empty() {
        bail!("shipfeed-core must not depend on I/O crates, found: {offenders:?}");
    }
    eprintln!(
        "ci: shipfeed-core is pure ({} crates, none of {CORE_FORBIDDEN:?})",
        tree.lines().count()
    );
    Ok(())
}
