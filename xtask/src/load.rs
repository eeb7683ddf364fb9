//! The open-loop load generator of `cargo xtask bench ingest` (`xtask bench load`, run as a
//! process of its own from the release build so that it is optimized and its CPU is its own).
//!
//! It sends the first `count` pre-signed requests of the bench's `requests.http` (each preceded
//! by its length on a line), each exactly once, at a fixed offered rate: request *i* is due at
//! `t0 + i / rate`, whatever happened to the requests before it. A timer thread hands each due
//! request to a free keep-alive connection of a pool, opening one more when none is free; only
//! when the pool is full does a request wait for a connection, and that is counted
//! (`exhausted`): the load then is no longer open at that rate. Latency runs from the request's
//! due time, not its send time, to the end of its response, so that a slow answer shows in the
//! latency of every request that was due while it held things up (no coordinated omission).

use std::collections::VecDeque;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::bench::{self, Options};

/// The line the generator prints on stdout at `t0`, before its report.
pub(crate) const STARTED: &str = "started";

/// Connections the pool may open: enough for a stall of a second at 2 000 requests/s.
pub(crate) const POOL: usize = 2048;

/// How long the generator waits, after the last request was due, for the answers still out.
const DRAIN: Duration = Duration::from_secs(30);

/// What one open-loop run measured (printed as one JSON line).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) offered_rate: f64,
    pub(crate) requests: usize,
    /// From `t0` to the last request's due time.
    pub(crate) schedule_s: f64,
    pub(crate) ok: usize,
    pub(crate) non_2xx: usize,
    /// Requests without an answer: connection errors, and those still out after [`DRAIN`].
    pub(crate) failed: usize,
    /// 2xx answers per second, from `t0` to the last answer.
    pub(crate) achieved_rate: f64,
    /// Requests sent per second, from `t0` to the last send.
    pub(crate) sent_rate: f64,
    /// Latency from the due time to the end of the answer, over all answers, in ms.
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// From the due time to the start of the send: how late the generator itself was.
    pub(crate) send_lag_p99_ms: f64,
    pub(crate) send_lag_max_ms: f64,
    pub(crate) pool: usize,
    /// Connections opened (the pool grows only when no connection is free).
    pub(crate) connections: usize,
    /// Requests that found every connection of a full pool busy and waited for one.
    pub(crate) exhausted: usize,
    /// Distinct `delivery_seq`s among the 2xx answers (each should have its own).
    pub(crate) distinct_seqs: usize,
    /// The generator's own user + system CPU seconds, and its wall time from `t0`.
    pub(crate) cpu_s: f64,
    pub(crate) wall_s: f64,
}

impl Report {
    /// The run stayed open loop: no request ever waited for a connection.
    pub(crate) fn open(&self) -> bool {
        self.exhausted == 0
    }
}

/// When request `index` is due, from `t0`.
pub(crate) fn due(index: usize, rate: f64) -> Duration {
    Duration::from_nanos((index as f64 * 1e9 / rate).round() as u64)
}

/// How many requests a run of `seconds` at `rate` sends, at most `available` (each is sent once).
pub(crate) fn schedule_len(rate: f64, seconds: f64, available: usize) -> usize {
    ((rate * seconds).ceil() as usize).clamp(1, available.max(1))
}

/// `xtask bench load`: runs one open-loop load and prints [`STARTED`], then the report.
pub(crate) fn main(options: &Options) -> Result<()> {
    let file: String = options.get("requests", String::new())?;
    let port: u16 = options.get("port", 0)?;
    let rate: f64 = options.get("rate", 0.0)?;
    let count: usize = options.get("count", 0)?;
    let pool: usize = options.get("pool", POOL)?;
    if file.is_empty() || port == 0 || rate <= 0.0 || count == 0 || pool == 0 {
        bail!("bench load needs --requests FILE --port N --rate R --count N (and --pool N > 0)");
    }
    let corpus = Corpus::read(Path::new(&file), count)?;
    if corpus.len() < count {
        bail!("{file} holds {} requests, not {count}", corpus.len());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = run(&runtime, Arc::new(corpus), port, rate, pool)?;
    runtime.shutdown_background();
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The requests, back to back in one buffer.
struct Corpus {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Corpus {
    /// The first `count` requests of a `requests.http` file.
    fn read(path: &Path, count: usize) -> Result<Corpus> {
        let mut file = std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?,
        );
        let mut corpus = Corpus {
            bytes: Vec::new(),
            ends: Vec::with_capacity(count),
        };
        let mut line = String::new();
        while corpus.ends.len() < count {
            line.clear();
            if file.read_line(&mut line)? == 0 {
                break;
            }
            let length: usize = line
                .trim()
                .parse()
                .with_context(|| format!("a length line, not {line:?}"))?;
            let start = corpus.bytes.len();
            corpus.bytes.resize(start + length, 0);
            file.read_exact(&mut corpus.bytes[start..])?;
            corpus.ends.push(corpus.bytes.len());
        }
        Ok(corpus)
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn request(&self, index: usize) -> &[u8] {
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i]);
        &self.bytes[start..self.ends[index]]
    }
}

/// A request handed to a connection.
#[derive(Clone, Copy)]
struct Job {
    index: usize,
    due: Instant,
}

/// What became of one request.
struct Record {
    due: Instant,
    sent: Instant,
    done: Instant,
    /// The answer's status and `delivery_seq`; `None`: no answer.
    answer: Option<(u16, Option<i64>)>,
}

/// The pool: idle connections (last freed first, so that few stay warm), how many are open,
/// and the requests waiting because all of them are busy.
#[derive(Default)]
struct Pool {
    idle: Vec<mpsc::UnboundedSender<Job>>,
    open: usize,
    waiting: VecDeque<Job>,
}

struct Shared {
    corpus: Arc<Corpus>,
    port: u16,
    pool: Mutex<Pool>,
    records: Mutex<Vec<Record>>,
    finished: AtomicUsize,
}

impl Shared {
    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn run(
    runtime: &tokio::runtime::Runtime,
    corpus: Arc<Corpus>,
    port: u16,
    rate: f64,
    max_pool: usize,
) -> Result<Report> {
    let count = corpus.len();
    let shared = Arc::new(Shared {
        corpus,
        port,
        pool: Mutex::new(Pool::default()),
        records: Mutex::new(Vec::with_capacity(count)),
        finished: AtomicUsize::new(0),
    });
    let cpu_before = bench::cpu_seconds("self").unwrap_or(0.0);
    let mut exhausted = 0;
    let t0 = Instant::now();
    println!("{STARTED}");
    std::io::stdout().flush()?;
    // This thread is the timer: std's sleep wakes within tens of microseconds, tokio's timer
    // only on whole milliseconds. The connections run on the runtime's two workers.
    let mut next = 0;
    while next < count {
        let now = Instant::now();
        while next < count && t0 + due(next, rate) <= now {
            let job = Job {
                index: next,
                due: t0 + due(next, rate),
            };
            next += 1;
            let mut pool = shared.pool();
            if let Some(connection) = pool.idle.pop() {
                // A connection in the idle list is waiting on its channel.
                let _ = connection.send(job);
            } else if pool.open < max_pool {
                pool.open += 1;
                drop(pool);
                runtime.spawn(connection(Arc::clone(&shared), job));
            } else {
                pool.waiting.push_back(job);
                exhausted += 1;
            }
        }
        if next < count {
            let wake = t0 + due(next, rate);
            std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        }
    }
    let last_due = t0 + due(count - 1, rate);
    while shared.finished.load(Ordering::Acquire) < count && last_due.elapsed() < DRAIN {
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu_s = bench::cpu_seconds("self").unwrap_or(0.0) - cpu_before;
    let connections = shared.pool().open;
    let records = std::mem::take(
        &mut *shared
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    Ok(summarize(
        &records,
        Summary {
            t0,
            rate,
            requests: count,
            pool: max_pool,
            connections,
            exhausted,
            cpu_s,
            wall_s,
        },
    ))
}

/// What the timer knows besides the records.
struct Summary {
    t0: Instant,
    rate: f64,
    requests: usize,
    pool: usize,
    connections: usize,
    exhausted: usize,
    cpu_s: f64,
    wall_s: f64,
}

fn summarize(records: &[Record], run: Summary) -> Report {
    let ms = |d: Duration| d.as_nanos() as f64 / 1e6;
    let since_t0 = |at: Instant| at.saturating_duration_since(run.t0).as_secs_f64();
    let answered: Vec<&Record> = records.iter().filter(|r| r.answer.is_some()).collect();
    let latency: Vec<f64> = answered
        .iter()
        .map(|r| ms(r.done.saturating_duration_since(r.due)))
        .collect();
    let send_lag: Vec<f64> = records
        .iter()
        .map(|r| ms(r.sent.saturating_duration_since(r.due)))
        .collect();
    let ok: Vec<&Record> = answered
        .iter()
        .copied()
        .filter(|r| matches!(r.answer, Some((200..=299, _))))
        .collect();
    let mut seqs: Vec<i64> = ok.iter().filter_map(|r| r.answer?.1).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let last_answer = ok.iter().map(|r| since_t0(r.done)).fold(0.0, f64::max);
    let last_send = records.iter().map(|r| since_t0(r.sent)).fold(0.0, f64::max);
    let [p50, p90, p99, max] = bench::quantiles(&latency, [0.5, 0.9, 0.99, 1.0]);
    let [send_lag_p99, send_lag_max] = bench::quantiles(&send_lag, [0.99, 1.0]);
    Report {
        offered_rate: run.rate,
        requests: run.requests,
        schedule_s: due(run.requests.saturating_sub(1), run.rate).as_secs_f64(),
        ok: ok.len(),
        non_2xx: answered.len() - ok.len(),
        failed: run.requests - answered.len(),
        achieved_rate: ok.len() as f64 / last_answer.max(1e-9),
        sent_rate: records.len() as f64 / last_send.max(1e-9),
        p50_ms: p50,
        p90_ms: p90,
        p99_ms: p99,
        max_ms: max,
        send_lag_p99_ms: send_lag_p99,
        send_lag_max_ms: send_lag_max,
        pool: run.pool,
        connections: run.connections,
        exhausted: run.exhausted,
        distinct_seqs: seqs.len(),
        cpu_s: run.cpu_s,
        wall_s: run.wall_s,
    }
}

/// One connection of the pool: sends the jobs it is handed one at a time, keeping the stream
/// open between them (and opening a new one after an error), and after each answer takes the
/// oldest waiting request or goes back to the idle list.
async fn connection(shared: Arc<Shared>, first: Job) {
    let (sender, mut jobs) = mpsc::unbounded_channel();
    let mut stream = None;
    let mut buffer = Vec::with_capacity(1024);
    let mut job = Some(first);
    loop {
        let current = match job.take() {
            Some(current) => current,
            None => match jobs.recv().await {
                Some(current) => current,
                None => return,
            },
        };
        let sent = Instant::now();
        let answer = exchange(
            &mut stream,
            shared.port,
            shared.corpus.request(current.index),
            &mut buffer,
        )
        .await;
        let done = Instant::now();
        if answer.is_err() {
            stream = None;
        }
        shared
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Record {
                due: current.due,
                sent,
                done,
                answer: answer.ok(),
            });
        shared.finished.fetch_add(1, Ordering::AcqRel);
        let mut pool = shared.pool();
        job = pool.waiting.pop_front();
        if job.is_none() {
            pool.idle.push(sender.clone());
        }
    }
}

/// Sends one request on `stream` (connecting first when there is none) and reads its answer:
/// its status and, for a 2xx, its `delivery_seq`. Drops the stream when the server closes it.
async fn exchange(
    stream: &mut Option<TcpStream>,
    port: u16,
    request: &[u8],
    buffer: &mut Vec<u8>,
) -> Result<(u16, Option<i64>)> {
    let connection = match stream {
        Some(connection) => connection,
        None => {
            let connection = TcpStream::connect(("127.0.0.1", port)).await?;
            connection.set_nodelay(true)?;
            stream.insert(connection)
        }
    };
    connection.write_all(request).await?;
    buffer.clear();
    let response = loop {
        let read = connection.read_buf(buffer).await?;
        if let Some(response) = bench::parse_response(buffer, read == 0)? {
            break response;
        }
    };
    let seq = if (200..300).contains(&response.status) {
        bench::delivery_seq(&buffer[response.body.clone()])
    } else {
        None
    };
    if response.close {
        *stream = None;
    }
    Ok((response.status, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_due_at_fixed_intervals_from_t0() {
        assert_eq!(due(0, 4000.0), Duration::ZERO);
        assert_eq!(due(1, 4000.0), Duration::from_micros(250));
        assert_eq!(due(4000, 4000.0), Duration::from_secs(1));
        assert_eq!(due(12_345, 500.0), Duration::from_millis(24_690));
        assert_eq!(due(2, 3.0), Duration::from_nanos(666_666_667));
    }

    #[test]
    fn a_schedule_sends_each_request_at_most_once() {
        assert_eq!(schedule_len(2500.0, 20.0, 150_000), 50_000);
        assert_eq!(schedule_len(333.3, 3.0, 150_000), 1000);
        assert_eq!(schedule_len(20_000.0, 20.0, 150_000), 150_000);
        assert_eq!(schedule_len(0.01, 1.0, 10), 1);
    }

    #[test]
    fn the_corpus_is_read_by_its_length_lines() {
        let dir = std::env::temp_dir().join(format!("xtask-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("requests.http");
        let requests: [&[u8]; 3] = [b"GET /a HTTP/1.1\r\n\r\n", b"POST /b\n\n{}", b"x"];
        let mut text = Vec::new();
        for request in requests {
            text.extend_from_slice(format!("{}\n", request.len()).as_bytes());
            text.extend_from_slice(request);
        }
        std::fs::write(&file, &text).unwrap();
        let corpus = Corpus::read(&file, 2).unwrap();
        assert_eq!(corpus.len(), 2);
        assert_eq!(corpus.request(0), requests[0]);
        assert_eq!(corpus.request(1), requests[1]);
        let corpus = Corpus::read(&file, 10).unwrap();
        assert_eq!(corpus.len(), 3);
        assert_eq!(corpus.request(2), b"x");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn latency_counts_from_the_due_time() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Four requests due every 10 ms; the second answer is slow, the third request waited
        // for it (sent late), the fourth got no answer.
        let records = [
            (0, 0, 2, Some((200, Some(1)))),
            (10, 10, 40, Some((200, Some(2)))),
            (20, 40, 42, Some((503, None))),
            (30, 30, 31, None),
        ]
        .map(|(due, sent, done, answer)| Record {
            due: at(due),
            sent: at(sent),
            done: at(done),
            answer,
        });
        let report = summarize(
            &records,
            Summary {
                t0,
                rate: 100.0,
                requests: 4,
                pool: 1,
                connections: 1,
                exhausted: 1,
                cpu_s: 0.5,
                wall_s: 1.0,
            },
        );
        assert_eq!((report.ok, report.non_2xx, report.failed), (2, 1, 1));
        // Latencies from due: 2, 30, 22 ms (not 2, 30, 2 from the sends).
        assert_eq!(report.p50_ms, 22.0);
        assert_eq!(report.max_ms, 30.0);
        assert_eq!(report.send_lag_max_ms, 20.0);
        assert_eq!(report.schedule_s, 0.03);
        assert_eq!(report.achieved_rate, 2.0 / 0.04);
        assert_eq!(report.distinct_seqs, 2);
        assert!(!report.open());
    }
}
