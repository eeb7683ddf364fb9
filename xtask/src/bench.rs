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
               [--step-seconds S] [--max-steps N] [--pool N] [--quick]
                       release `shipfeed serve` on SQLite and PostgreSQL: closed loop under wrk
                       (installed with apt-get when missing) against a bare axum endpoint and
                       two references; then open loop at fixed offered rates: the sustained
                       rate (the projector keeps up) searched step by step, and ack and end-to-
                       end latency at half of it
  bench project [--deliveries N] [--repeat N]
                       the projector alone draining a backlog on SQLite and PostgreSQL
                       (each delivery appended --repeat times: the repeats are duplicates),
                       against the adapters alone normalizing the same deliveries (ratio)
  bench push [--deliveries N] [--concurrency N] [--rounds N] [--rate R]
                       an HTTP push subscription draining a projected backlog to a local
                       receiver vs a plain reqwest loop POSTing the same bodies at the same
                       concurrency (ratio, interleaved rounds); then ingest-to-receipt
                       latency at --rate deliveries/s
  bench rabbitmq [--deliveries N] [--rounds N] [--batch N]
                       a RabbitMQ subscription draining a projected backlog to the local
                       broker (persistent messages, publisher confirms, a durable queue) vs a
                       plain lapin loop publishing the same bodies with confirms, --batch at
                       a time (ratio, interleaved rounds)
  bench load --requests FILE --port N --rate R --count N [--pool N]
                       the open-loop load generator alone (`bench ingest` runs it): sends the
                       first N requests of FILE once each at R/s, prints a JSON report
  bench requests [--out FILE] [--requests N]
                       writes the requests `bench ingest` sends (for `bench load` against a
                       service started by hand) and prints the config it serves them with
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
        ["project", rest @ ..] => crate::bench_project::run(root, &Options::parse(rest)?),
        ["push", rest @ ..] => crate::bench_push::run(root, &Options::parse(rest)?),
        ["rabbitmq", rest @ ..] => crate::bench_rabbitmq::run(root, &Options::parse(rest)?),
        ["load", rest @ ..] => crate::load::main(&Options::parse(rest)?),
        ["requests", rest @ ..] => crate::bench_ingest::requests(&Options::parse(rest)?),
        _ => bail!("usage:\n{HELP}"),
    }
}

/// Options that take no value (`--quick`): read with `get(name, false)`.
const FLAGS: &[&str] = &["quick"];

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
            if FLAGS.contains(&name) {
                pairs.push((name.to_owned(), "true".to_owned()));
                continue;
            }
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
/// dependencies) and rebuild them back and forth on every bench run. xtask itself is among
/// them: `bench ingest` runs its open-loop load generator optimized, as a process of its own.
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
    "-p",
    "shipfeed-projector",
    "--example",
    "project_drain",
    "-p",
    "shipfeed-subscriptions",
    "--example",
    "push_drain",
    "--example",
    "rabbitmq_drain",
    "-p",
    "xtask",
    "--bin",
    "xtask",
];

/// What `cargo run` sets for the program it runs, besides `CARGO_PKG_*` (and `CARGO`, which the
/// nested build uses).
const RUN_VARIABLES: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
];

/// Builds [`BENCH_BINARIES`] in release mode; returns the release directory.
pub(crate) fn build_release(root: &Path) -> Result<PathBuf> {
    let args = BENCH_BINARIES;
    let mut command = Command::new(cargo());
    // `cargo xtask` (cargo run) leaves xtask's own package variables (CARGO_PKG_NAME,
    // CARGO_MANIFEST_DIR, ...) in the environment; passed on, they mark `ring` and all that
    // depends on it dirty against a build from a shell, and every bench run rebuilt them.
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("CARGO_PKG_") || RUN_VARIABLES.contains(&name_text.as_ref()) {
            command.env_remove(&name);
        }
    }
    command
        .current_dir(root)
        .args(["build", "--release"])
        .args(args);
    status(
        &mut command,
        &format!("cargo build --release {}", args.join(" ")),
    )?;
    Ok(target_dir(root)?.join("release"))
}

/// The target directory cargo builds into, as cargo itself resolves it (`CARGO_TARGET_DIR`,
/// `build.target-dir` in a config file, or `target/` under the workspace).
fn target_dir(root: &Path) -> Result<PathBuf> {
    let output = Command::new(cargo())
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("run cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed ({})", output.status);
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata's output")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata names no target_directory")
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
    let mut buffer = Vec::new();
    let mut chunk = [0; 8192];
    loop {
        let read = stream.read(&mut chunk)?;
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(response) = parse_response(&buffer, read == 0)? {
            let body = String::from_utf8_lossy(&buffer[response.body]).into_owned();
            return Ok((response.status, body));
        }
    }
}

/// One complete HTTP/1.1 response at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Where the body lies in the buffer; it ends the response.
    pub(crate) body: std::ops::Range<usize>,
    /// The server closes the connection after it (`Connection: close`, or a body that only the
    /// end of the stream delimits).
    pub(crate) close: bool,
}

/// The response at the start of `buffer` once all of it is there (`None`: read more). `eof`:
/// the peer closed the stream after `buffer`, which ends a body without `Content-Length`.
/// Only what the bench's servers send is understood: no chunked bodies, no 1xx answers.
pub(crate) fn parse_response(buffer: &[u8], eof: bool) -> Result<Option<Response>> {
    let Some(head_len) = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
    else {
        if eof {
            bail!("the connection closed before a whole response head");
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buffer[..head_len]).context("a response head not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split(' ').collect::<Vec<_>>()[..] {
        [version, code, ..] if version.starts_with("HTTP/1.") => code.parse().ok(),
        _ => None,
    }
    .with_context(|| format!("not an HTTP/1.x status line: {status_line:?}"))?;
    let mut length = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .with_context(|| format!("Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("a chunked response (Transfer-Encoding: {value}) is not understood here");
        } else if name.eq_ignore_ascii_case("connection") {
            close |= value.eq_ignore_ascii_case("close");
        }
    }
    let end = match length {
        Some(length) if buffer.len() >= head_len + length => head_len + length,
        Some(length) if eof => bail!(
            "the connection closed {} bytes into a body of {length}",
            buffer.len() - head_len
        ),
        None if eof => buffer.len(),
        _ => return Ok(None),
    };
    Ok(Some(Response {
        status,
        body: head_len..end,
        close: close || length.is_none(),
    }))
}

/// The `delivery_seq` of `shipfeed serve`'s answer to an accepted delivery
/// (`{"status":"accepted","delivery_seq":N}`).
pub(crate) fn delivery_seq(body: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Accepted {
        delivery_seq: i64,
    }
    serde_json::from_slice::<Accepted>(body)
        .ok()
        .map(|a| a.delivery_seq)
}

/// The `q`-quantiles (0..=1) of `values`, by nearest rank (NaN when there are none).
pub(crate) fn quantiles<const N: usize>(values: &[f64], qs: [f64; N]) -> [f64; N] {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    qs.map(|q| {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
    })
}

/// User plus system CPU seconds a process has used so far (`/proc/<pid>/stat`; `self` for this
/// one), in the kernel's `USER_HZ` ticks of 1/100 s.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    parse_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces; the fields after it are plain numbers, and
    // utime, stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_complete_when_its_body_is() {
        let whole = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 41\r\n\r\n{\"status\":\"accepted\",\"delivery_seq\":1234}";
        for cut in [0, 10, 60, whole.len() - 1] {
            assert_eq!(
                parse_response(&whole[..cut], false).unwrap(),
                None,
                "cut at {cut}"
            );
        }
        let response = parse_response(whole, false).unwrap().unwrap();
        assert_eq!(response.status, 200);
        assert!(!response.close);
        assert_eq!(
            &whole[response.body.clone()],
            br#"{"status":"accepted","delivery_seq":1234}"#
        );
        assert_eq!(delivery_seq(&whole[response.body]), Some(1234));
    }

    #[test]
    fn bytes_after_the_response_are_not_its_own() {
        let two = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\nConnection: close\r\n\r\nnoHTTP/1.1 200 OK\r\n";
        let response = parse_response(two, false).unwrap().unwrap();
        assert_eq!(response.status, 503);
        assert!(response.close);
        assert_eq!(&two[response.body], b"no");
    }

    #[test]
    fn without_a_length_the_end_of_the_stream_ends_the_body() {
        let text = b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\nnot here";
        assert_eq!(parse_response(text, false).unwrap(), None);
        let response = parse_response(text, true).unwrap().unwrap();
        assert_eq!(response.status, 404);
        assert_eq!(&text[response.body], b"not here");
        assert!(response.close);
    }

    #[test]
    fn truncated_chunked_or_foreign_answers_are_errors() {
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert!(parse_response(short, true).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n", true).is_err());
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert!(parse_response(chunked, false).is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", false).is_err());
    }

    #[test]
    fn only_an_acceptance_has_a_delivery_seq() {
        assert_eq!(
            delivery_seq(br#"{"status":"accepted","delivery_seq":7}"#),
            Some(7)
        );
        assert_eq!(delivery_seq(br#"{"status":"received","bytes":7}"#), None);
        assert_eq!(delivery_seq(b""), None);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(
            quantiles(&values, [0.0, 0.5, 0.9, 0.99, 1.0]),
            [1.0, 50.0, 90.0, 99.0, 100.0]
        );
        assert_eq!(quantiles(&[3.0], [0.5, 0.99]), [3.0, 3.0]);
        assert!(quantiles(&[], [0.5])[0].is_nan());
    }

    #[test]
    fn cpu_seconds_from_a_stat_line() {
        let stat = "4242 (xtask load) S 1 4242 4242 0 -1 4194304 2075 0 0 0 731 129 0 0 20 0 4 0 \
                    9145 1187840000 120000 18446744073709551615";
        assert_eq!(parse_cpu_seconds(stat), Some(8.6));
        assert_eq!(parse_cpu_seconds("garbage"), None);
    }
}
