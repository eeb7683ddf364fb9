//! `cargo xtask bench ingest`: `shipfeed serve` (release, SQLite, durable group commit) against
//! a bare axum endpoint on the same stack, under the same `wrk` load in the same run.
//!
//! The load: pre-signed Sendcloud, HappyColis and Shipup deliveries from
//! `shipfeed_testkit::corpus` (every one with its own ids), written as raw HTTP requests to a
//! file that a generated Lua script hands to wrk round-robin, each wrk thread taking its own
//! slice; 64 connections for a fixed duration. Afterwards the deliveries stored in SQLite are
//! counted and compared with wrk's 2xx answers.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use shipfeed_testkit::corpus;

use crate::bench::{self, Guard, Options, TempDir};

const SECRET_ENV: &str = "SHIPFEED_BENCH_SECRET";

/// What one wrk run reported.
#[derive(Debug, Default)]
struct Load {
    requests: u64,
    status_errors: u64,
    socket_errors: u64,
    timeouts: u64,
    duration_s: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    sent: u64,
    wraps: u64,
}

impl Load {
    fn ok(&self) -> u64 {
        self.requests.saturating_sub(self.status_errors)
    }

    fn rate(&self) -> f64 {
        self.ok() as f64 / self.duration_s.max(1e-9)
    }
}

pub(crate) fn run(root: &Path, options: &Options) -> Result<()> {
    let duration: u64 = options.get("duration", 15)?;
    let connections: u64 = options.get("connections", 64)?;
    let threads: u64 = options.get("threads", 2)?;
    let requests: u64 = options.get("requests", 150_000)?;
    bench::print_machine();
    let wrk = ensure_wrk()?;
    let release = bench::build_release(root)?;
    let dir = TempDir::new("shipfeed-bench-ingest")?;

    eprintln!("bench: generating {requests} signed deliveries (Sendcloud, HappyColis, Shipup)");
    let deliveries = corpus::mixed(&corpus::WEBHOOK_PROVIDERS, 0x5eed_1e57, 0..requests);
    let requests_file = dir.0.join("requests.http");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&requests_file)?);
    let mut body_bytes = 0;
    for delivery in &deliveries {
        let mut head = format!(
            "POST /webhooks/{} HTTP/1.1\r\nHost: 127.0.0.1\r\n",
            delivery.provider.as_str()
        );
        for (name, value) in &delivery.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let _ = write!(head, "Content-Length: {}\r\n\r\n", delivery.body.len());
        let length = head.len() + delivery.body.len();
        writeln!(out, "{length}")?;
        out.write_all(head.as_bytes())?;
        out.write_all(&delivery.body)?;
        body_bytes += delivery.body.len();
    }
    out.flush()?;
    drop(out);
    let history: usize = deliveries.iter().map(|d| d.history).sum();
    println!(
        "load: {requests} unique deliveries, {} B body avg, {:.1} events avg; wrk -t{threads} -c{connections} -d{duration}s",
        body_bytes / deliveries.len().max(1),
        history as f64 / deliveries.len().max(1) as f64
    );
    drop(deliveries);
    let script = dir.0.join("load.lua");
    std::fs::write(&script, lua_script(&requests_file, threads, None)?)?;
    let wrk_args = WrkArgs {
        wrk: &wrk,
        script: &script,
        threads,
        connections,
        duration,
    };

    // The bare endpoint, then the same parsing each body as a `Value` (a reference only).
    let (bare_load, bare_rss) = run_bare(&release, &wrk_args, &[])?;
    let (parse_load, parse_rss) = run_bare(&release, &wrk_args, &["--parse-json"])?;
    let (normalize_load, normalize_rss) = run_bare(&release, &wrk_args, &["--verify-normalize"])?;

    // shipfeed serve on SQLite, then on PostgreSQL: as fast as the connections go, then on a
    // fresh database at half that rate (paced connections, so that latency is measured at a
    // fixed offered rate rather than set by the connection count).
    let runs = Runs {
        release: &release,
        dir: &dir.0,
        requests_file: &requests_file,
        requests,
        wrk_args: &wrk_args,
    };
    let sqlite = runs.closed_and_paced(Backend::Sqlite)?;
    let postgres = runs.closed_and_paced(Backend::Postgres)?;

    report(
        &bare_load,
        bare_rss,
        [(&parse_load, parse_rss), (&normalize_load, normalize_rss)],
        &sqlite.0.load,
        sqlite.0.rss,
        &sqlite.0.stored,
        &sqlite.0.metrics,
        connections,
    );
    for (name, (closed, paced)) in [("SQLite", &sqlite), ("PostgreSQL", &postgres)] {
        println!();
        println!(
            "{name}: closed loop {:.0} 2xx/s ({:.3}x bare), p50 {:.2} ms, p99 {:.2} ms, peak RSS {} MiB; {}",
            closed.load.rate(),
            closed.load.rate() / bare_load.rate().max(1e-9),
            closed.load.p50_ms,
            closed.load.p99_ms,
            mib(closed.rss),
            projector_line(&closed.stored, &closed.metrics)
        );
        report_paced(name, closed, paced);
    }
    Ok(())
}

/// Which store `shipfeed serve` runs on.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// What every `shipfeed serve` run of the bench shares.
struct Runs<'a> {
    release: &'a Path,
    dir: &'a Path,
    requests_file: &'a Path,
    requests: u64,
    wrk_args: &'a WrkArgs<'a>,
}

impl Runs<'_> {
    /// The closed-loop run, then the paced one at half its rate with end-to-end probes.
    fn closed_and_paced(&self, backend: Backend) -> Result<(ServeRun, ServeRun)> {
        let closed = run_serve(
            self.release,
            self.dir,
            backend,
            "closed",
            self.wrk_args,
            Vec::new(),
        )?;
        let half_rate = (closed.load.rate() / 2.0).max(1.0);
        let paced_connections = self.wrk_args.connections.max(256);
        let paced_script = self.dir.join("paced.lua");
        // Each connection waits this long after each answer: C connections then offer about
        // C / (wait + latency) requests per second, the target rate while latency stays small.
        let wait_ms = paced_connections as f64 * 1000.0 / half_rate;
        std::fs::write(
            &paced_script,
            lua_script(self.requests_file, self.wrk_args.threads, Some(wait_ms))?,
        )?;
        let paced_args = WrkArgs {
            script: &paced_script,
            connections: paced_connections,
            ..*self.wrk_args
        };
        // Probes beyond the load's corpus, so that none is a duplicate of a load delivery.
        let probes = corpus::mixed(
            &corpus::WEBHOOK_PROVIDERS,
            0x9e0b_e500,
            self.requests..self.requests + 1000,
        );
        let mut paced = run_serve(
            self.release,
            self.dir,
            backend,
            "paced",
            &paced_args,
            probes,
        )?;
        paced.wait_ms = wait_ms;
        Ok((closed, paced))
    }
}

/// The paced run's line and its end-to-end probes.
fn report_paced(name: &str, closed: &ServeRun, paced: &ServeRun) {
    println!(
        "{name}: paced, {} connections each waiting {:.1} ms after each answer to offer half the \
         closed-loop rate ({:.0}/s): {:.0} 2xx/s, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max \
         {:.1} ms, peak RSS {} MiB; {}",
        paced.connections,
        paced.wait_ms,
        closed.load.rate() / 2.0,
        paced.load.rate(),
        paced.load.p50_ms,
        paced.load.p90_ms,
        paced.load.p99_ms,
        paced.load.max_ms,
        mib(paced.rss),
        projector_line(&paced.stored, &paced.metrics)
    );
    let probes = &paced.end_to_end_ms;
    println!(
        "{name}: end to end at that rate (a probe every 100 ms, from its 2xx to GET \
         /v1/deliveries/{{seq}} saying projected, one clock): {} probes, p50 {:.1} ms, p99 {:.1} \
         ms, max {:.1} ms",
        probes.len(),
        quantile(probes, 0.5),
        quantile(probes, 0.99),
        probes.iter().copied().fold(0.0, f64::max)
    );
}

/// One `shipfeed serve` measurement: its load, peak RSS, `/metrics` as the load ended, and
/// what its database held after it stopped.
struct ServeRun {
    load: Load,
    rss: Option<u64>,
    metrics: String,
    stored: Stored,
    /// Milliseconds from a probe's 2xx to its projection, one per probe.
    end_to_end_ms: Vec<f64>,
    /// The load's connections, and how long each waited after an answer (0: closed loop).
    connections: u64,
    wait_ms: f64,
}

/// Starts `shipfeed serve` on a fresh SQLite database named after `tag`, runs the load, reads
/// `/metrics` at once (the projector ran throughout), stops it and counts its rows.
fn run_serve(
    release: &Path,
    dir: &Path,
    backend: Backend,
    tag: &str,
    wrk_args: &WrkArgs<'_>,
    probes: Vec<corpus::Delivery>,
) -> Result<ServeRun> {
    let store = Store::create(backend, dir, tag)?;
    let config = dir.join("shipfeed.toml");
    std::fs::write(&config, config_toml())?;
    let port = bench::free_port()?;
    let log_path = dir.join(format!("serve-{tag}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut serve = Guard(
        Command::new(release.join("shipfeed"))
            .args(["serve", "--config"])
            .arg(&config)
            .env(SECRET_ENV, shipfeed_testkit::FIXTURE_SECRET)
            .env("SHIPFEED_LISTEN", format!("127.0.0.1:{port}"))
            .env("SHIPFEED_STORE", store.url())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start shipfeed serve")?,
    );
    if let Err(error) = bench::wait_ready(&mut serve.0, port, "/healthz", Duration::from_secs(60)) {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        bail!("shipfeed serve did not start: {error}\n{log}");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || end_to_end(port, probes, &stop))
    };
    let load = wrk_run(wrk_args, port)?;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let end_to_end_ms = prober
        .join()
        .map_err(|_| anyhow::anyhow!("the end-to-end prober panicked"))?;
    let rss = bench::peak_rss_kib(serve.0.id());
    let metrics = bench::http_get(port, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    bench::stop(&mut serve.0, Duration::from_secs(10));
    Ok(ServeRun {
        connections: wrk_args.connections,
        wait_ms: 0.0,
        load,
        rss,
        metrics,
        stored: store.count_rows()?,
        end_to_end_ms,
    })
}

/// A fresh store for one run: a SQLite file in the scratch directory, or a schema of its own
/// on the machine's PostgreSQL (dropped afterwards).
enum Store {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

/// The PostgreSQL server of the bench (as the tests: trust auth, database `test`).
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

impl Store {
    fn create(backend: Backend, dir: &Path, tag: &str) -> Result<Self> {
        Ok(match backend {
            Backend::Sqlite => Store::Sqlite(dir.join(format!("bench-{tag}.db"))),
            Backend::Postgres => {
                let schema = format!("shipfeed_bench_{tag}_{}", std::process::id());
                psql(&format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
                ))?;
                Store::Postgres(schema)
            }
        })
    }

    fn url(&self) -> String {
        match self {
            Store::Sqlite(path) => path.display().to_string(),
            Store::Postgres(schema) => format!("{POSTGRES}?options=-csearch_path%3D{schema}"),
        }
    }

    fn count_rows(&self) -> Result<Stored> {
        match self {
            Store::Sqlite(path) => count_rows(path),
            Store::Postgres(schema) => {
                let text = psql(&format!(
                    "SET search_path = {schema}; SELECT (SELECT count(*) FROM deliveries), \
                     (SELECT count(*) FROM deliveries WHERE dead_letter), \
                     (SELECT count(*) FROM deliveries WHERE projection IS NOT NULL), \
                     (SELECT count(*) FROM events)"
                ))?;
                let counts: Vec<u64> = text
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .split('|')
                    .filter_map(|n| n.trim().parse().ok())
                    .collect();
                let [deliveries, dead_letters, projected, events] = counts[..] else {
                    bail!("psql answered {text:?}");
                };
                Ok(Stored {
                    deliveries,
                    dead_letters,
                    projected,
                    events,
                })
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Store::Postgres(schema) = self {
            if let Err(error) = psql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")) {
                eprintln!("bench: schema {schema} not dropped: {error}");
            }
        }
    }
}

/// Runs SQL with the machine's `psql` on the bench's PostgreSQL; its unaligned output.
fn psql(sql: &str) -> Result<String> {
    let output = Command::new("psql")
        .args([
            POSTGRES,
            "-X",
            "-q",
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .context("run psql (PostgreSQL's client)")?;
    if !output.status.success() {
        bail!(
            "psql failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Posts one probe delivery every 100 ms while the load runs, and for each measures, on this
/// process's clock, the time from its 2xx to `GET /v1/deliveries/{seq}` saying it is projected
/// (its events are then readable in `/v1/events`). Milliseconds, one per probe.
fn end_to_end(
    port: u16,
    probes: Vec<corpus::Delivery>,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<f64> {
    let mut measured = Vec::new();
    for probe in probes {
        if stop.load(std::sync::atomic::Ordering::Acquire) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let Ok((200, answer)) = http_post(port, &probe) else {
            continue;
        };
        let acknowledged = std::time::Instant::now();
        let Some(seq) = serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|answer| answer["delivery_seq"].as_i64())
        else {
            continue;
        };
        let deadline = acknowledged + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let projected = bench::http_get(port, &format!("/v1/deliveries/{seq}"))
                .is_ok_and(|(_, body)| body.contains(r#""projected":true"#));
            if projected {
                measured.push(acknowledged.elapsed().as_secs_f64() * 1e3);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    measured
}

/// POSTs one delivery to its provider's endpoint; the status and the body of the answer.
fn http_post(port: u16, delivery: &corpus::Delivery) -> Result<(u16, String)> {
    let mut head = format!(
        "POST /webhooks/{} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n",
        delivery.provider.as_str()
    );
    for (name, value) in &delivery.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let _ = write!(head, "Content-Length: {}\r\n\r\n", delivery.body.len());
    let mut request = head.into_bytes();
    request.extend_from_slice(&delivery.body);
    bench::http_exchange(port, &request)
}

/// The `q`-quantile (0..=1) of `values`, by nearest rank.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// Runs the load against the `bare_endpoint` example started with `args`.
fn run_bare(release: &Path, wrk_args: &WrkArgs<'_>, args: &[&str]) -> Result<(Load, Option<u64>)> {
    let port = bench::free_port()?;
    let mut bare = Guard(
        Command::new(release.join("examples/bare_endpoint"))
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start bare_endpoint")?,
    );
    bench::wait_ready(&mut bare.0, port, "/healthz", Duration::from_secs(30))?;
    let load = wrk_run(wrk_args, port)?;
    let rss = bench::peak_rss_kib(bare.0.id());
    bench::stop(&mut bare.0, Duration::from_secs(5));
    Ok((load, rss))
}

struct WrkArgs<'a> {
    wrk: &'a Path,
    script: &'a Path,
    threads: u64,
    connections: u64,
    duration: u64,
}

/// `wrk` on PATH, installed from Debian's packages when missing (needs root).
fn ensure_wrk() -> Result<std::path::PathBuf> {
    let find = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("wrk"))
                .find(|candidate| candidate.exists())
        })
    };
    if let Some(path) = find() {
        return Ok(path);
    }
    eprintln!("bench: wrk not found; installing it with apt-get");
    bench::status(
        Command::new("apt-get").args(["install", "-y", "-q", "wrk"]),
        "apt-get install wrk",
    )
    .or_else(|_| {
        bench::status(
            Command::new("apt-get").args(["update", "-q"]),
            "apt-get update",
        )?;
        bench::status(
            Command::new("apt-get").args(["install", "-y", "-q", "wrk"]),
            "apt-get install wrk",
        )
    })
    .context("install wrk (Debian package `wrk`; run as root or install it yourself)")?;
    find().context("apt-get installed wrk but it is not on PATH")
}

/// Each thread loads every `threads`-th request of the file (so no two threads send the same
/// delivery), cycles through them, and counts what it sent; `done` prints one `BENCH` line.
/// The wrk script: each thread sends its share of the corpus; with `wait_ms`, each connection
/// waits that long after each answer (wrk's `delay`), which paces the load.
fn lua_script(requests: &Path, threads: u64, wait_ms: Option<f64>) -> Result<String> {
    let pacing = wait_ms.map_or_else(String::new, |ms| {
        format!(
            "\nfunction delay()\n  return {}\nend\n",
            ms.round().max(1.0)
        )
    });
    let path = requests
        .to_str()
        .context("the scratch path is not UTF-8")?
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    Ok(format!(
        r#"-- generated by `cargo xtask bench ingest`
local path = "{path}"
local stride = {threads}
local threads = {{}}
local created = 0

function setup(thread)
  thread:set("slot", created)
  created = created + 1
  table.insert(threads, thread)
end

function init(args)
  pending = {{}}
  local f = assert(io.open(path, "rb"))
  local n = 0
  while true do
    local line = f:read("*l")
    if not line then break end
    local data = f:read(tonumber(line))
    if n % stride == slot then pending[#pending + 1] = data end
    n = n + 1
  end
  f:close()
  position = 0
  sent = 0
  wraps = 0
end

function request()
  position = position + 1
  if position > #pending then
    position = 1
    wraps = wraps + 1
  end
  sent = sent + 1
  return pending[position]
end

function done(summary, latency, requests)
  local total_sent, total_wraps = 0, 0
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
    total_wraps = total_wraps + thread:get("wraps")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d status_errors=%d socket_errors=%d timeouts=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d sent=%d wraps=%d\n",
    summary.requests, e.status, e.connect + e.read + e.write, e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    total_sent, total_wraps))
end
{pacing}"#
    ))
}

fn wrk_run(args: &WrkArgs<'_>, port: u16) -> Result<Load> {
    eprintln!("bench: wrk against 127.0.0.1:{port}");
    let output = Command::new(args.wrk)
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.duration))
        .args(["--timeout", "10s", "-s"])
        .arg(args.script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}):\n{text}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = text
        .lines()
        .find(|l| l.starts_with("BENCH "))
        .with_context(|| format!("no BENCH line in wrk's output:\n{text}"))?;
    let field = |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    Ok(Load {
        requests: field("requests") as u64,
        status_errors: field("status_errors") as u64,
        socket_errors: field("socket_errors") as u64,
        timeouts: field("timeouts") as u64,
        duration_s: field("duration_us") / 1e6,
        p50_ms: field("p50_us") / 1e3,
        p90_ms: field("p90_us") / 1e3,
        p99_ms: field("p99_us") / 1e3,
        max_ms: field("max_us") / 1e3,
        sent: field("sent") as u64,
        wraps: field("wraps") as u64,
    })
}

fn config_toml() -> String {
    let mut text = String::from(
        "# generated by `cargo xtask bench ingest`; the store and listen address come from the\n\
         # environment; no event sink, so that only ingestion is measured\nsink = \"none\"\n",
    );
    for provider in corpus::WEBHOOK_PROVIDERS {
        let _ = write!(
            text,
            "\n[[endpoint]]\nname = \"{0}\"\nprovider = \"{0}\"\nsecret_env = \"{SECRET_ENV}\"\n",
            provider.as_str()
        );
        if provider == shipfeed_core::Provider::Shipup {
            let _ = writeln!(text, "basic_user = \"{}\"", corpus::SHIPUP_USER);
        }
    }
    text
}

/// Rows in the store after the run.
#[derive(Debug)]
struct Stored {
    deliveries: u64,
    dead_letters: u64,
    /// Deliveries the projector had projected when the service stopped.
    projected: u64,
    events: u64,
}

fn count_rows(database: &Path) -> Result<Stored> {
    let conn =
        rusqlite::Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("open {}", database.display()))?;
    let inbox = shipfeed_store::Store::sqlite_inbox_path(database);
    conn.execute(
        "ATTACH DATABASE ?1 AS inbox",
        [inbox.to_string_lossy().as_ref()],
    )
    .context("attach the inbox")?;
    let count = |sql: &str| -> Result<u64> {
        let n: i64 = conn.query_row(sql, [], |row| row.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    Ok(Stored {
        deliveries: count("SELECT count(*) FROM deliveries")?,
        dead_letters: count("SELECT count(*) FROM projections WHERE dead_letter = 1")?,
        projected: count("SELECT count(*) FROM projections WHERE projection IS NOT NULL")?,
        events: count("SELECT count(*) FROM events")?,
    })
}

/// Sum of a metric's samples whose labels contain `filter`.
fn metric_value(metrics: &str, name: &str, filter: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
}

fn metric_sum(metrics: &str, name: &str, filter: &str) -> u64 {
    metric_value(metrics, name, filter) as u64
}

/// How far the projector got: deliveries projected by the stop, and its lag as the load ended.
fn projector_line(stored: &Stored, metrics: &str) -> String {
    format!(
        "projector: {} of {} deliveries projected when the service stopped; as the load ended it \
         was {} deliveries and {:.2} s behind the inbox ({:.0} batches, {:.1} deliveries per batch)",
        stored.projected,
        stored.deliveries,
        metric_value(metrics, "shipfeed_projector_lag_deliveries", ""),
        metric_value(metrics, "shipfeed_projector_lag_seconds", ""),
        metric_value(metrics, "shipfeed_projector_batch_size_count", ""),
        metric_value(metrics, "shipfeed_projector_batch_size_sum", "")
            / metric_value(metrics, "shipfeed_projector_batch_size_count", "").max(1.0),
    )
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn verdict(holds: bool) -> &'static str {
    if holds {
        "holds"
    } else {
        "MISSED"
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    bare: &Load,
    bare_rss: Option<u64>,
    [(parse, parse_rss), (normalize, normalize_rss)]: [(&Load, Option<u64>); 2],
    serve: &Load,
    serve_rss: Option<u64>,
    stored: &Stored,
    metrics: &str,
    connections: u64,
) {
    println!();
    println!("| target | 2xx/s | 2xx | non-2xx | socket errors | timeouts | p50 ms | p90 ms | p99 ms | max ms | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, load, rss) in [
        ("bare axum endpoint", bare, bare_rss),
        ("bare + Value parse (reference)", parse, parse_rss),
        (
            "bare + verify + normalize (reference)",
            normalize,
            normalize_rss,
        ),
        ("shipfeed serve (SQLite)", serve, serve_rss),
    ] {
        println!(
            "| {name} | {:.0} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {} |",
            load.rate(),
            load.ok(),
            load.status_errors,
            load.socket_errors,
            load.timeouts,
            load.p50_ms,
            load.p90_ms,
            load.p99_ms,
            load.max_ms,
            mib(rss)
        );
    }
    let ratio = serve.rate() / bare.rate().max(1e-9);
    println!();
    println!(
        "reference: parsing each body once as a serde_json Value leaves {:.3}× the bare rate; \
         verifying and normalizing it as shipfeed does, without storing, {:.3}×",
        parse.rate() / bare.rate().max(1e-9),
        normalize.rate() / bare.rate().max(1e-9)
    );
    let rss_mib = serve_rss.map_or(f64::INFINITY, |k| k as f64 / 1024.0);
    println!();
    println!("| target | measured | verdict |");
    println!("|---|---:|---|");
    println!(
        "| acknowledgements ≥ 0.30× bare (projector running) | {ratio:.3}× | {} |",
        verdict(ratio >= 0.3)
    );
    println!(
        "| p99 (closed loop, {connections} connections; the open-loop target is not measured here) | {:.2} ms | — |",
        serve.p99_ms,
    );
    println!(
        "| peak RSS ≤ 64 MiB | {rss_mib:.1} MiB | {} |",
        verdict(rss_mib <= 64.0)
    );
    // wrk stops at the deadline with one request in flight per connection: those can be stored
    // (the commit was under way) without wrk counting their answer.
    let in_flight = serve
        .sent
        .saturating_sub(serve.requests + serve.socket_errors + serve.timeouts);
    let consistent = stored.deliveries >= serve.ok()
        && stored.deliveries - serve.ok() <= in_flight.max(connections);
    let answered_metrics = metric_sum(metrics, "shipfeed_deliveries_total", "outcome=\"accepted\"");
    println!();
    println!(
        "integrity: {} deliveries stored ({} dead letters, {} events) for {} 2xx answers; \
         {} requests were in flight when wrk stopped; the service counted {} accepted answers in \
         /metrics → {}",
        stored.deliveries,
        stored.dead_letters,
        stored.events,
        serve.ok(),
        in_flight,
        answered_metrics,
        if consistent {
            "consistent (every 2xx is stored; the surplus is the requests cut off in flight)"
        } else {
            "INCONSISTENT"
        }
    );
    println!("{}", projector_line(stored, metrics));
    if serve.wraps > 0 {
        println!(
            "note: shipfeed got more requests than the corpus holds ({} wrap(s) over the wrk \
             threads): the repeats were stored as deliveries with duplicate events; raise \
             --requests",
            serve.wraps
        );
    }
    if bare.wraps > 0 {
        println!(
            "note: the bare endpoint cycled through the corpus {} time(s) (it stores nothing, so \
             repeats cost it the same)",
            bare.wraps
        );
    }
}
