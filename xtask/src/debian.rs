//! Programs the benches and tests run that come from Debian's packages (`wrk`, `chromium`,
//! `chromedriver`, `promtool`): found on `PATH`, or installed with `apt-get` when missing, so
//! that a fresh machine needs no step the README does not name.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// `binary` on `PATH`, installing `packages` with `apt-get` first when it is missing (needs
/// root). `apt-get update` runs only when the first install fails: a fresh machine's package
/// lists may be empty or stale.
pub(crate) fn ensure(binary: &str, packages: &[&str]) -> Result<PathBuf> {
    if let Some(path) = on_path(binary) {
        return Ok(path);
    }
    eprintln!("xtask: {binary} not found; installing {packages:?} with apt-get");
    let install = || {
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    install()
        .or_else(|_| {
            run(Command::new("apt-get").args(["update", "-q"]))?;
            install()
        })
        .with_context(|| {
            format!(
                "install {binary} (Debian packages {packages:?}; run as root or install them yourself)"
            )
        })?;
    on_path(binary)
        .with_context(|| format!("apt-get installed {packages:?} but {binary} is not on PATH"))
}

fn on_path(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|candidate| candidate.is_file())
    })
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}
