//! `cargo xtask moto`: a project-local `moto_server` (the SQS-compatible test server from PyPI),
//! installed idempotently into `<workspace>/.venv`. Tests that need SQS start their own server
//! from there, on a free port.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The `moto_server` executable, installing `moto[server]` into `.venv` first when missing.
pub(crate) fn ensure(root: &Path) -> Result<PathBuf> {
    let venv = root.join(".venv");
    let server = venv.join("bin/moto_server");
    if server.exists() {
        return Ok(server);
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    if !venv.join("bin/pip").exists() {
        run(
            Command::new(&python).args(["-m", "venv"]).arg(&venv),
            "create .venv",
        )?;
    }
    run(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "moto[server]>=5,<6",
        ]),
        "pip install moto[server]",
    )?;
    if !server.exists() {
        bail!("pip installed moto but {} is missing", server.display());
    }
    Ok(server)
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    eprintln!("moto: {what}");
    let status = command.status().with_context(|| format!("start: {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
