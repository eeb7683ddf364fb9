//! `cargo xtask <command>`: the project's automation, in Rust so it runs wherever cargo does.
#![forbid(unsafe_code)]

mod bench;
mod bench_ingest;
mod bench_project;
mod bench_push;
mod bench_rabbitmq;
mod bench_sqs;
mod ci;
mod debian;
mod fixtures;
mod load;
mod moto;
mod services;
mod sustained;

use std::path::PathBuf;

use anyhow::{bail, Result};

const HELP: &str = "\
cargo xtask <command>

  ci                   every check CI runs: fmt, clippy, each provider alone, core purity,
                       fixtures fresh, all tests (installs moto_server, starts
                       PostgreSQL and NATS if they are down), docs
  fixtures [--check]   write fixtures/*/generated and schema/ (or check they are fresh)
  moto                 install moto_server into .venv (idempotent) and print its path
  screenshots          run the console's browser test, saving its pages as docs/screenshots/*.png
                       (installs chromium and chromium-driver if missing)
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["fixtures"] => fixtures::run(&workspace_root(), false),
        ["fixtures", "--check"] => fixtures::run(&workspace_root(), true),

        ["ci"] => ci::run(&workspace_root()),
        ["moto"] => {
            println!("{}", moto::ensure(&workspace_root())?.display());
            Ok(())
        }
        ["screenshots"] => screenshots(&workspace_root()),
        ["bench", rest @ ..] => bench::run(&workspace_root(), rest),
        [] | ["help" | "--help" | "-h"] => {
            print!("{HELP}{}", bench::HELP);
            Ok(())
        }
        other => bail!("unknown arguments {other:?}\n\n{HELP}{}", bench::HELP),
    }
}

/// The README's screenshots of the console: the browser test, saving what it sees.
fn screenshots(root: &std::path::Path) -> Result<()> {
    debian::ensure("chromium", &["chromium", "chromium-driver"])?;
    debian::ensure("chromedriver", &["chromium-driver"])?;
    let dir = root.join("docs/screenshots");
    bench::status(
        std::process::Command::new(bench::cargo())
            .current_dir(root)
            .args([
                "test",
                "--locked",
                "-p",
                "shipfeed-cli",
                "--test",
                "console",
            ])
            .env("SHIPFEED_SCREENSHOTS", &dir),
        "cargo test --test console (saving screenshots)",
    )?;
    eprintln!("screenshots in {}", dir.display());
    Ok(())
}

/// The workspace root (xtask lives one level below it).
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

#[cfg(test)]
mod tests {
    /// Plain `cargo test` fails when generated fixtures or the schema are stale.
    #[test]
    fn generated_files_are_fresh() {
        if let Err(error) = crate::fixtures::run(&crate::workspace_root(), true) {
            panic!("{error:#}");
        }
    }
}
