//! `cargo xtask bench <normalize|ingest|sqs>`: the benchmarks of issue 7. Every figure is a
//! ratio against a baseline measured in the same run (these are noisy 2-core machines), and
//! nothing here is ever a test assertion. See BENCHMARKS.md for what each one measures.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub(crate) const HELP: &str = "  bench normalize [--quick]
                       criterion: normalize per provider vs serde_json Value parse (ratios)
  bench ingest [--duration S] [--connections N] [--threads N] [--requests N]
                       release `shipfeed serve` (SQLite) vs a bare axum endpoint under wrk
                       (installed with apt-get when missing): req/s, p50/p99, peak RSS, and
                       stored deliveries = 2xx answers
  bench sqs [--messages N] [--rounds N] [--max-depth N] [--pollers N] [--wait-seconds S]
                       moto_server: drain Seven Senders messages through shipfeed (normalize,
                       commit, delete) vs a raw receive/delete loop, fed in waves of
                       --max-depth (100): msgs/s and their ratio
";

pub(crate) fn run(root: &Path, args: &[&str]) -> Result<()> {
    match args {
        ["normalize", rest @ ..] => normalize(root, rest),
        ["ingest", rest @ ..] => crate::bench_ingest::run(root, &Options::parse(rest)?),
        ["sqs", rest @ ..] => crate::bench_sqs::run(root, &Options::parse(rest)?),
        _ => bail!("usage:\n{HELP}"),
    }
}

/// `--name value` pairs.
pub(crate) struct Options(Vec<(String, String)>);

impl Options {
    fn parse(args: &[&str]) -> Result<Self> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let Some(name) = flag.strip_prefix("--") else {
                bail!("unexpected argument `{flag}`\n{HELP}");
            };
            let value = it.next().with_context(|| format!("{flag} needs a value"))?;
            pairs.push((name.to_owned(), (*value).to_owned()));
        }
        Ok(Options(pairs))
    }

    /// The value of `--name`, or `default`.
    pub(crate) fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.iter().rev().find(|(n, _)| n == name) {
            Some((_, value)) => value
                .parse()
                .map_err(|e| anyhow::anyhow!("--{name} {value}: {e}")),
            None => Ok(default),
        }
    }
}

fn normalize(root: &Path, rest: &[&str]) -> Result<()> {
    print_machine();
    let mut command = Command::new(cargo());
    command.current_dir(root).args([
        "bench",
        "-p",
        "shipfeed",
        "--all-features",
        "--bench",
        "normalize",
    ]);
    if !rest.is_empty() {
        command.arg("--").args(rest);
    }
    status(&mut command, "cargo bench normalize")
}

pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs a command to completion, failing on a non-zero exit.
pub(crate) fn status(command: &mut Command, what: &str) -> Result<()> {
    eprintln!("bench: {what}");
    let status = command.status().with_context(|| format!("start: {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Every binary the benches run, built by one `cargo build --release`: separate invocations
/// would resolve different feature sets for the shared dependencies (the examples' dev
/// dependencies) and rebuild them back and forth on every bench run.
const BENCH_BINARIES: &[&str] = &[
    "-p",
    "shipfeed-cli",
    "--bin",
    "shipfeed",
    "-p",
    "shipfeed-server",
    "--example",
    "bare_endpoint",
    "--example",
    "sqs_drain",
];

/// Builds [`BENCH_BINARIES`] in release mode; returns the release directory.
pub(crate) fn build_release(root: &Path) -> Result<PathBuf> {
    let args = BENCH_BINARIES;
    let mut command = Command::new(cargo());
    command
        .current_dir(root)
        .args(["build", "--release"])
        .args(args);
    status(
        &mut command,
        &format!("cargo build --release {}", args.join(" ")),
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release"))
}

/// Machine facts for BENCHMARKS.md: cores, CPU model, kernel, date.
pub(crate) fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let kernel = command_output("uname", &["-r"]);
    println!("machine: {cores} cores, {cpu}, Linux {kernel}, {date}");
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A minimal HTTP/1.1 GET on 127.0.0.1: the status code and the body.
pub(crate) fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    http_exchange(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// Sends `request` (head and body, already framed) to 127.0.0.1:`port` on a connection of its
/// own and reads the answer to its end: the status code and the body.
pub(crate) fn http_exchange(port: u16, request: &[u8]) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request)?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Waits until `GET path` answers 200 on `port`, or the child exits, or `limit` passes.
pub(crate) fn wait_ready(child: &mut Child, port: u16, path: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the process exited before answering ({status})");
        }
        if matches!(http_get(port, path), Ok((200, _))) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing answered 200 on 127.0.0.1:{port}{path} within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Peak resident set size of a running process in KiB (`VmHWM`).
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Asks a child to stop with SIGTERM (graceful shutdown), then kills it after `grace`.
pub(crate) fn stop(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A child process that is killed when dropped (an early error never leaves it running).
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A scratch directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
