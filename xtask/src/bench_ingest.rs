//! `cargo xtask bench ingest`: `shipfeed serve` (release, projector running throughout) on
//! SQLite and on PostgreSQL, against a bare axum endpoint on the same stack.
//!
//! The load: pre-signed Sendcloud, HappyColis and Shipup deliveries from
//! `shipfeed_testkit::corpus` (every one with its own ids), written as raw HTTP requests to a
//! file. Closed loop: a generated Lua script hands them to wrk round-robin, each wrk thread
//! taking its own slice, 64 connections for a fixed duration, against the bare endpoint, two
//! references and `shipfeed serve`. Open loop: the bench's own generator (`crate::load`) sends
//! them once each at a fixed offered rate; a search over such steps finds the sustained rate
//! (`crate::sustained`), and a run at half of it measures ack and end-to-end latency. Each run
//! of `shipfeed serve` starts on a fresh store, and its stored rows are counted afterwards.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use shipfeed_testkit::corpus;

use crate::bench::{self, Guard, Options, TempDir};
use crate::load;
use crate::sustained::{self, Sample, Search, Verdict};

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
    /// wrk's connections (each may leave one request in flight at the deadline).
    connections: u64,
}

impl Load {
    fn ok(&self) -> u64 {
        self.requests.saturating_sub(self.status_errors)
    }

    fn rate(&self) -> f64 {
        self.ok() as f64 / self.duration_s.max(1e-9)
    }
}

/// Deliveries per projector batch, written into the service's config: the keep-up rule allows
/// a lag of one batch.
const PROJECTOR_BATCH: usize = 256;

/// How often `/metrics` is scraped for the projector's lag during an open-loop run.
const SAMPLE_PERIOD: Duration = Duration::from_millis(250);

/// `bench requests`: the load's requests alone, for `bench load` against a service started by
/// hand (under a profiler, say).
pub(crate) fn requests(options: &Options) -> Result<()> {
    let out: String = options.get("out", "requests.http".to_owned())?;
    let requests: u64 = options.get("requests", 200_000)?;
    let (body_avg, events_avg) = write_requests(Path::new(&out), requests)?;
    println!("{out}: {requests} signed deliveries, {body_avg} B body and {events_avg:.1} events on average");
    print!("{}", config_toml());
    Ok(())
}

/// Writes `requests` pre-signed deliveries (Sendcloud, HappyColis and Shipup in turn, each with
/// ids of its own) as raw HTTP requests, each after a line with its length; returns the
/// average body size and number of events.
fn write_requests(path: &Path, requests: u64) -> Result<(usize, f64)> {
    eprintln!("bench: generating {requests} signed deliveries (Sendcloud, HappyColis, Shipup)");
    let deliveries = corpus::mixed(&corpus::WEBHOOK_PROVIDERS, 0x5eed_1e57, 0..requests);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
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
    let history: usize = deliveries.iter().map(|d| d.history).sum();
    let count = deliveries.len().max(1);
    Ok((body_bytes / count, history as f64 / count as f64))
}

pub(crate) fn run(root: &Path, options: &Options) -> Result<()> {
    let started = std::time::Instant::now();
    let quick: bool = options.get("quick", false)?;
    let duration: u64 = options.get("duration", if quick { 5 } else { 15 })?;
    let connections: u64 = options.get("connections", 64)?;
    let threads: u64 = options.get("threads", 2)?;
    // Enough that a 15 s closed loop at 11 000/s (SQLite with its own inbox file) sends no
    // delivery twice, and 20 s open-loop steps up to 10 000/s.
    let requests: u64 = options.get("requests", 200_000)?;
    let step_seconds: f64 = options.get("step-seconds", if quick { 5.0 } else { 20.0 })?;
    let max_steps: usize = options.get("max-steps", if quick { 5 } else { 8 })?;
    let pool: usize = options.get("pool", load::POOL)?;
    bench::print_machine();
    let wrk = crate::debian::ensure("wrk", &["wrk"])?;
    let release = bench::build_release(root)?;
    let dir = TempDir::new("shipfeed-bench-ingest")?;

    let requests_file = dir.0.join("requests.http");
    let (body_avg, events_avg) = write_requests(&requests_file, requests)?;
    println!(
        "load: {requests} unique deliveries, {} B body avg, {:.1} events avg; closed loop: wrk \
         -t{threads} -c{connections} -d{duration}s; open loop: steps of {step_seconds} s (at most \
         {max_steps}), then {duration} s at half the sustained rate, pool of {pool} connections",
        body_avg, events_avg
    );
    let script = dir.0.join("load.lua");
    std::fs::write(&script, lua_script(&requests_file, threads)?)?;
    let wrk_args = WrkArgs {
        wrk: &wrk,
        script: &script,
        threads,
        connections,
        duration,
    };

    // The bare endpoint, then the two references built from it.
    let (bare_load, bare_rss) = run_bare(&release, &wrk_args, &[])?;
    let (parse_load, parse_rss) = run_bare(&release, &wrk_args, &["--parse-json"])?;
    let (normalize_load, normalize_rss) = run_bare(&release, &wrk_args, &["--verify-normalize"])?;

    let runs = Runs {
        release: &release,
        dir: &dir.0,
        requests_file: &requests_file,
        requests,
        wrk_args: &wrk_args,
        step_seconds,
        max_steps,
        half_seconds: duration as f64,
        pool,
        started,
    };
    let sqlite = runs.backend(Backend::Sqlite)?;
    let postgres = runs.backend(Backend::Postgres)?;

    report(
        &bare_load,
        bare_rss,
        [(&parse_load, parse_rss), (&normalize_load, normalize_rss)],
        [("SQLite", &sqlite.closed), ("PostgreSQL", &postgres.closed)],
    );
    let reference = normalize_load.rate();
    for (name, backend) in [("SQLite", &sqlite), ("PostgreSQL", &postgres)] {
        report_open(name, backend, reference, step_seconds);
    }
    report_verdicts(
        &bare_load,
        reference,
        [("SQLite", &sqlite), ("PostgreSQL", &postgres)],
    );
    println!();
    println!(
        "bench ingest took {:.0} s (release build included)",
        started.elapsed().as_secs_f64()
    );
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
    step_seconds: f64,
    max_steps: usize,
    half_seconds: f64,
    pool: usize,
    /// When the bench started (progress lines say how long it has run).
    started: std::time::Instant,
}

/// Everything measured on one store.
struct BackendRuns {
    closed: ServeRun<Load>,
    steps: Vec<(ServeRun<OpenRun>, Verdict)>,
    search: Search,
    /// The rate of the half-rate run, and the run.
    half_rate: f64,
    half: ServeRun<OpenRun>,
    half_verdict: Verdict,
}

/// An open-loop run: the generator's report and the projector's lag sampled during it.
struct OpenRun {
    report: load::Report,
    samples: Vec<Sample>,
}

impl Runs<'_> {
    /// The closed-loop run, the search for the sustained rate, then half that rate with
    /// end-to-end probes; each on a fresh store.
    fn backend(&self, backend: Backend) -> Result<BackendRuns> {
        let closed = self.serve(backend, "closed", Vec::new(), |port| {
            wrk_run(self.wrk_args, port)
        })?;
        // Beyond the closed-loop rate the inbox cannot answer in time and the load stops being
        // open; a quarter of it is a first step the projector may well hold.
        let mut search = Search::new(closed.load.rate() / 4.0, closed.load.rate());
        let mut steps = Vec::new();
        while steps.len() < self.max_steps {
            let Some(rate) = search.next() else {
                break;
            };
            let tag = format!("step{}", steps.len() + 1);
            let step = self.serve(backend, &tag, Vec::new(), |port| {
                self.open_loop(port, rate, self.step_seconds)
            })?;
            let verdict = sustained::judge(&step.load.report, &step.load.samples, PROJECTOR_BATCH);
            eprintln!(
                "bench: [{:.0} s] {backend:?} step {}: {rate:.0}/s offered, {:.0} 2xx/s, lag at the end {:.0}, \
                 slope {:.1}/s: {}",
                self.started.elapsed().as_secs_f64(),
                steps.len() + 1,
                step.load.report.achieved_rate,
                verdict.end_lag,
                verdict.slope,
                verdict.why.as_deref().unwrap_or("keeps up")
            );
            search.record(rate, verdict.keeps_up);
            steps.push((step, verdict));
        }
        // With no step keeping up, half the lowest rate tried still says what latency is there.
        let lowest = steps
            .iter()
            .map(|(step, _)| step.load.report.offered_rate)
            .fold(f64::INFINITY, f64::min);
        let half_rate = search.sustained().unwrap_or(lowest) / 2.0;
        // Probes beyond the load's corpus, so that none is a duplicate of a load delivery.
        let probes = corpus::mixed(
            &corpus::WEBHOOK_PROVIDERS,
            0x9e0b_e500,
            self.requests..self.requests + 1000,
        );
        let half = self.serve(backend, "half", probes, |port| {
            self.open_loop(port, half_rate, self.half_seconds)
        })?;
        let half_verdict = sustained::judge(&half.load.report, &half.load.samples, PROJECTOR_BATCH);
        Ok(BackendRuns {
            closed,
            steps,
            search,
            half_rate,
            half,
            half_verdict,
        })
    }

    /// Runs the generator (`xtask bench load`, release) at `rate` for `seconds` (fewer when the
    /// corpus runs out: each request is sent once), scraping the projector's lag from
    /// `/metrics` every [`SAMPLE_PERIOD`] from its `t0` to its last due time.
    fn open_loop(&self, port: u16, rate: f64, seconds: f64) -> Result<OpenRun> {
        let count = load::schedule_len(rate, seconds, self.requests as usize);
        eprintln!(
            "bench: [{:.0} s] open loop at {rate:.0}/s, {count} requests, against 127.0.0.1:{port}",
            self.started.elapsed().as_secs_f64()
        );
        let mut generator = Guard(
            Command::new(self.release.join("xtask"))
                .args(["bench", "load", "--requests"])
                .arg(self.requests_file)
                .args(["--port", &port.to_string()])
                .args(["--rate", &rate.to_string()])
                .args(["--count", &count.to_string()])
                .args(["--pool", &self.pool.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .context("start the load generator")?,
        );
        let stdout = generator
            .0
            .stdout
            .take()
            .context("the generator's stdout")?;
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        match lines.next() {
            Some(Ok(line)) if line == load::STARTED => {}
            other => bail!("the load generator did not start: {other:?}"),
        }
        let samples = sample_lag(port, load::due(count - 1, rate));
        let report = lines
            .next()
            .context("the load generator ended without a report")??;
        let status = generator.0.wait()?;
        if !status.success() {
            bail!("the load generator failed ({status})");
        }
        Ok(OpenRun {
            report: serde_json::from_str(&report)
                .with_context(|| format!("the generator's report {report:?}"))?,
            samples,
        })
    }

    /// Starts `shipfeed serve` on a fresh store named after `tag`, runs `drive` against its
    /// port (and the end-to-end `probes` beside it), reads `/metrics` at once (the projector
    /// ran throughout), stops it and counts its rows.
    fn serve<T>(
        &self,
        backend: Backend,
        tag: &str,
        probes: Vec<corpus::Delivery>,
        drive: impl FnOnce(u16) -> Result<T>,
    ) -> Result<ServeRun<T>> {
        let store = Store::create(backend, self.dir, tag)?;
        let config = self.dir.join("shipfeed.toml");
        std::fs::write(&config, config_toml())?;
        let port = bench::free_port()?;
        let log_path = self.dir.join(format!("serve-{tag}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut serve = Guard(
            Command::new(self.release.join("shipfeed"))
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
        if let Err(error) =
            bench::wait_ready(&mut serve.0, port, "/healthz", Duration::from_secs(60))
        {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("shipfeed serve did not start: {error}\n{log}");
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let prober = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || end_to_end(port, probes, &stop))
        };
        let load = drive(port);
        stop.store(true, std::sync::atomic::Ordering::Release);
        let end_to_end_ms = prober
            .join()
            .map_err(|_| anyhow::anyhow!("the end-to-end prober panicked"))?;
        let load = load?;
        let rss = bench::peak_rss_kib(serve.0.id());
        let metrics = bench::http_get(port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        bench::stop(&mut serve.0, Duration::from_secs(10));
        Ok(ServeRun {
            load,
            rss,
            metrics,
            stored: store.count_rows()?,
            end_to_end_ms,
        })
    }
}

/// Scrapes `shipfeed_projector_lag_deliveries` every [`SAMPLE_PERIOD`] from now until `until`
/// has passed, the last scrape at `until` itself (the schedule's end).
fn sample_lag(port: u16, until: Duration) -> Vec<Sample> {
    let start = std::time::Instant::now();
    let mut samples = Vec::new();
    let mut next = Duration::ZERO;
    loop {
        std::thread::sleep(next.saturating_sub(start.elapsed()));
        let at = start.elapsed();
        if let Ok((200, metrics)) = bench::http_get(port, "/metrics") {
            samples.push(Sample {
                at: at.as_secs_f64(),
                lag: metric_value(&metrics, "shipfeed_projector_lag_deliveries", ""),
            });
        }
        if next >= until {
            return samples;
        }
        next = (next + SAMPLE_PERIOD).min(until);
    }
}

/// One `shipfeed serve` measurement: its load, peak RSS, `/metrics` as the load ended, and
/// what its store held after it stopped.
struct ServeRun<T> {
    load: T,
    rss: Option<u64>,
    metrics: String,
    stored: Stored,
    /// Milliseconds from a probe's 2xx to its projection, one per probe.
    end_to_end_ms: Vec<f64>,
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
        match self {
            // A step's database is a few hundred MB: there is one per step.
            Store::Sqlite(path) => {
                let inbox = shipfeed_store::Store::sqlite_inbox_path(path);
                for file in [path.clone(), inbox] {
                    for suffix in ["", "-wal", "-shm"] {
                        let mut name = file.clone().into_os_string();
                        name.push(suffix);
                        let _ = std::fs::remove_file(name);
                    }
                }
            }
            Store::Postgres(schema) => {
                if let Err(error) = psql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")) {
                    eprintln!("bench: schema {schema} not dropped: {error}");
                }
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
        let Some(seq) = bench::delivery_seq(answer.as_bytes()) else {
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

/// The wrk script: each thread loads every `threads`-th request of the file (so no two threads
/// send the same delivery), cycles through them, and counts what it sent; `done` prints one
/// `BENCH` line.
fn lua_script(requests: &Path, threads: u64) -> Result<String> {
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
"#
    ))
}

fn wrk_run(args: &WrkArgs<'_>, port: u16) -> Result<Load> {
    eprintln!("bench: wrk against 127.0.0.1:{port} ({} s)", args.duration);
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
        connections: args.connections,
    })
}

fn config_toml() -> String {
    let mut text = format!(
        "# generated by `cargo xtask bench ingest`; the store and listen address come from the\n\
         # environment; no event sink, so that only ingestion is measured\nsink = \"none\"\n\n\
         [projector]\nbatch = {PROJECTOR_BATCH}\n",
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

/// The closed-loop table (bare endpoint, references, `shipfeed serve` on each store), the
/// references' ratios, and each store's integrity and projector lines.
fn report(
    bare: &Load,
    bare_rss: Option<u64>,
    [(parse, parse_rss), (normalize, normalize_rss)]: [(&Load, Option<u64>); 2],
    serves: [(&str, &ServeRun<Load>); 2],
) {
    println!();
    println!("closed loop (wrk):");
    println!();
    println!("| target | 2xx/s | 2xx | non-2xx | socket errors | timeouts | p50 ms | p90 ms | p99 ms | max ms | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let serve_rows =
        serves.map(|(name, run)| (format!("shipfeed serve ({name})"), &run.load, run.rss));
    let rows = [
        ("bare axum endpoint".to_owned(), bare, bare_rss),
        (
            "bare + Value parse (reference)".to_owned(),
            parse,
            parse_rss,
        ),
        (
            "bare + verify + normalize (reference)".to_owned(),
            normalize,
            normalize_rss,
        ),
    ];
    for (name, load, rss) in rows.into_iter().chain(serve_rows) {
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
    println!();
    println!(
        "reference: parsing each body once as a serde_json Value leaves {:.3}× the bare rate; \
         verifying and normalizing it as shipfeed does, without storing, {:.3}×",
        parse.rate() / bare.rate().max(1e-9),
        normalize.rate() / bare.rate().max(1e-9)
    );
    for (name, run) in serves {
        let serve = &run.load;
        let stored = &run.stored;
        // wrk stops at the deadline with one request in flight per connection: those can be
        // stored (the commit was under way) without wrk counting their answer.
        let in_flight = serve
            .sent
            .saturating_sub(serve.requests + serve.socket_errors + serve.timeouts);
        let consistent = stored.deliveries >= serve.ok()
            && stored.deliveries - serve.ok() <= in_flight.max(serve.connections);
        let answered = metric_sum(
            &run.metrics,
            "shipfeed_deliveries_total",
            "outcome=\"accepted\"",
        );
        println!();
        println!(
            "{name} integrity: {} deliveries stored ({} dead letters, {} events) for {} 2xx \
             answers; {} requests were in flight when wrk stopped; the service counted {} accepted \
             answers in /metrics → {}",
            stored.deliveries,
            stored.dead_letters,
            stored.events,
            serve.ok(),
            in_flight,
            answered,
            if consistent {
                "consistent (every 2xx is stored; the surplus is the requests cut off in flight)"
            } else {
                "INCONSISTENT"
            }
        );
        println!("{name} {}", projector_line(stored, &run.metrics));
        if serve.wraps > 0 {
            println!(
                "note: shipfeed got more requests than the corpus holds ({} wrap(s) over the wrk \
                 threads): the repeats were stored as deliveries with duplicate events; raise \
                 --requests",
                serve.wraps
            );
        }
    }
    if bare.wraps > 0 {
        println!(
            "note: the bare endpoint cycled through the corpus {} time(s) (it stores nothing, so \
             repeats cost it the same)",
            bare.wraps
        );
    }
}

/// One store's open-loop figures: the search's steps, the sustained rate, the half-rate run.
fn report_open(name: &str, runs: &BackendRuns, reference: f64, step_seconds: f64) {
    println!();
    println!(
        "{name}, open loop: the sustained rate, searched in steps of {step_seconds} s (a fresh \
         store each; keeps up = the inbox took the load, lag at the end ≤ {PROJECTOR_BATCH} (one \
         batch), lag slope over the second half ≤ one batch per step):"
    );
    println!();
    println!("| step | offered/s | requests | 2xx/s | stored | non-2xx + unanswered | connections (exhausted) | ack p50 ms | ack p99 ms | lag at the end | slope /s (bound) | generator CPU | keeps up |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (i, (step, verdict)) in runs.steps.iter().enumerate() {
        let r = &step.load.report;
        println!(
            "| {} | {:.0} | {} | {:.0} | {} | {} | {} ({}) | {:.2} | {:.2} | {:.0} | {:.1} ({:.1}) | {} | {} |",
            i + 1,
            r.offered_rate,
            r.requests,
            r.achieved_rate,
            step.stored.deliveries,
            r.non_2xx + r.failed,
            r.connections,
            r.exhausted,
            r.p50_ms,
            r.p99_ms,
            verdict.end_lag,
            verdict.slope,
            verdict.slope_bound,
            generator_cpu(r),
            verdict.why.as_deref().unwrap_or("yes"),
        );
    }
    println!();
    match runs.search.sustained() {
        Some(rate) => println!(
            "{name}: sustained rate {}{rate:.0}/s = {:.3}× the verify+normalize reference ({reference:.0}/s){}",
            if runs.search.at_ceiling() { "≥ " } else { "" },
            rate / reference.max(1e-9),
            if runs.search.at_ceiling() {
                " (kept up at the closed-loop rate, the highest the inbox takes)"
            } else {
                ""
            }
        ),
        None => println!(
            "{name}: sustained rate: no step kept up, down to {:.0}/s",
            runs.steps
                .iter()
                .map(|(s, _)| s.load.report.offered_rate)
                .fold(f64::INFINITY, f64::min)
        ),
    }
    let half = &runs.half;
    let r = &half.load.report;
    let [e2e_p50, e2e_p99, e2e_max] = bench::quantiles(&half.end_to_end_ms, [0.5, 0.99, 1.0]);
    println!(
        "{name}: at {:.0}/s (half {}) for {:.1} s, open loop{}: {:.0} 2xx/s, {} non-2xx, {} \
         unanswered; ack p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.1} ms; end to end (a \
         probe every 100 ms, from its 2xx to GET /v1/deliveries/{{seq}} saying projected, one \
         clock): {} probes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; keeps up: {}; peak RSS {} MiB",
        runs.half_rate,
        if runs.search.sustained().is_some() {
            "the sustained rate"
        } else {
            "the lowest rate tried"
        },
        r.schedule_s,
        if r.open() { "" } else { " NOT HELD (pool exhausted)" },
        r.achieved_rate,
        r.non_2xx,
        r.failed,
        r.p50_ms,
        r.p90_ms,
        r.p99_ms,
        r.max_ms,
        half.end_to_end_ms.len(),
        e2e_p50,
        e2e_p99,
        e2e_max,
        runs.half_verdict.why.as_deref().unwrap_or("yes"),
        mib(half.rss),
    );
    println!(
        "{name}: the generator sent {:.0}/s of {:.0}/s offered (send lag p99 {:.2} ms, max {:.1} \
         ms), over {} connections ({} requests waited for one); its CPU {}; {} distinct \
         delivery_seq for {} 2xx; {} deliveries stored (load and probes)",
        r.sent_rate,
        r.offered_rate,
        r.send_lag_p99_ms,
        r.send_lag_max_ms,
        r.connections,
        r.exhausted,
        generator_cpu(r),
        r.distinct_seqs,
        r.ok,
        half.stored.deliveries,
    );
    println!("{name} {}", projector_line(&half.stored, &half.metrics));
}

/// The generator's CPU seconds and the share of one core over its run.
fn generator_cpu(report: &load::Report) -> String {
    format!(
        "{:.1} s ({:.0} % of a core)",
        report.cpu_s,
        100.0 * report.cpu_s / report.wall_s.max(1e-9)
    )
}

/// The targets of issue 12, per store.
fn report_verdicts(bare: &Load, reference: f64, stores: [(&str, &BackendRuns); 2]) {
    println!();
    println!("| target (issue 12) | {} | {} |", stores[0].0, stores[1].0);
    println!("|---|---:|---:|");
    let row = |target: &str, cell: &dyn Fn(&BackendRuns) -> String| {
        println!(
            "| {target} | {} | {} |",
            cell(stores[0].1),
            cell(stores[1].1)
        );
    };
    row(
        "acknowledgements ≥ 0.30× bare (closed loop, projector running)",
        &|runs| {
            let ratio = runs.closed.load.rate() / bare.rate().max(1e-9);
            format!("{ratio:.3}× {}", verdict(ratio >= 0.3))
        },
    );
    row(
        "sustained ≥ 0.35× verify+normalize (projector keeps up)",
        &|runs| match runs.search.sustained() {
            Some(rate) => {
                let ratio = rate / reference.max(1e-9);
                format!("{ratio:.3}× {}", verdict(ratio >= 0.35))
            }
            None => format!("no step kept up {}", verdict(false)),
        },
    );
    row(
        "ack p99 ≤ 10 ms at half the sustained rate (open loop)",
        &|runs| {
            let r = &runs.half.load.report;
            let holds = r.p99_ms <= 10.0 && r.open() && runs.search.sustained().is_some();
            format!("{:.2} ms {}", r.p99_ms, verdict(holds))
        },
    );
    row("end to end p50 / p99 at half the sustained rate", &|runs| {
        let [p50, p99] = bench::quantiles(&runs.half.end_to_end_ms, [0.5, 0.99]);
        format!("{p50:.1} / {p99:.1} ms")
    });
    row("peak RSS ≤ 64 MiB (closed loop)", &|runs| {
        let rss_mib = runs.closed.rss.map_or(f64::INFINITY, |k| k as f64 / 1024.0);
        format!("{rss_mib:.1} MiB {}", verdict(rss_mib <= 64.0))
    });
}
