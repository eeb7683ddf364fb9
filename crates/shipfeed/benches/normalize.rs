//! Normalize throughput per provider, as a ratio against `serde_json::from_slice::<Value>` over
//! the same bytes, measured in the same run and the same criterion group.
//!
//! ```sh
//! cargo bench -p shipfeed --all-features --bench normalize            # full run
//! cargo bench -p shipfeed --all-features --bench normalize -- --quick # a quick look
//! ```
//!
//! Each provider's group measures three functions over one seeded corpus
//! ([`shipfeed_testkit::corpus`]): `value_parse` (the baseline), `normalize`
//! ([`Adapter::parse`]) and `verify_normalize` ([`Adapter::construct`]: signature or Basic check,
//! then parse). After criterion's own report, a table prints MB/s, deliveries/s and events/s and
//! the two ratios (`baseline time / time`), from criterion's means and as the median of
//! interleaved rounds (robust to drift; the verdict uses it), with their targets (normalize
//! ≥ 2.0×, verify+normalize ≥ 1.5×). Figures are ratios because absolute numbers drift between runs on
//! a shared 2-core machine; nothing here is a pass/fail assertion.
#![forbid(unsafe_code)]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput};
use shipfeed::registry::{self, Settings};
use shipfeed::{Output, Provider, RawDelivery};
use shipfeed_testkit::corpus;

/// The allocator the `shipfeed` binary ships with, so that the figures are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Deliveries per provider corpus; one criterion iteration goes through all of them.
const CORPUS_SIZE: u64 = 256;
/// The corpus seed: the same bytes on every run.
const SEED: u64 = 0x5eed_0007;

const FUNCTIONS: [&str; 3] = ["value_parse", "normalize", "verify_normalize"];

/// What the summary needs to know about one provider's corpus.
struct CorpusInfo {
    provider: Provider,
    bytes: u64,
    deliveries: u64,
    events: u64,
    /// Median paired ratios `[normalize, verify_normalize]`, when measured.
    paired: Option<[f64; 2]>,
}

/// Rounds of the paired measurement.
const PAIRED_ROUNDS: usize = 41;

fn main() {
    let started = SystemTime::now();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let mut infos = Vec::new();
    for provider in Provider::ALL {
        infos.push(bench_provider(&mut criterion, provider));
    }
    criterion.final_summary();
    summary(&infos, started);
}

fn bench_provider(criterion: &mut Criterion, provider: Provider) -> CorpusInfo {
    let adapter = registry::adapter(provider, &Settings::default()).expect("provider enabled");
    let credentials = corpus::credentials(provider);
    let deliveries: Vec<RawDelivery> = corpus::generate(provider, SEED, 0..CORPUS_SIZE)
        .iter()
        .map(corpus::Delivery::raw)
        .collect();
    // The corpus must be what the adapter accepts: authentic, understood, with events.
    let mut events = 0;
    for (index, delivery) in deliveries.iter().enumerate() {
        let outputs = adapter
            .construct(delivery, &credentials)
            .unwrap_or_else(|e| panic!("{provider} corpus delivery {index}: {e}"));
        let count = outputs.iter().filter_map(Output::as_event).count() as u64;
        assert!(count > 0, "{provider} corpus delivery {index}: no event");
        events += count;
    }
    let bytes: u64 = deliveries.iter().map(|d| d.body.len() as u64).sum();

    let mut group = criterion.benchmark_group(provider.as_str());
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(FUNCTIONS[0], |b| {
        b.iter(|| {
            for delivery in &deliveries {
                let value: serde_json::Value =
                    serde_json::from_slice(black_box(&delivery.body)).expect("valid JSON");
                black_box(value);
            }
        });
    });
    group.bench_function(FUNCTIONS[1], |b| {
        b.iter(|| {
            for delivery in &deliveries {
                black_box(adapter.parse(black_box(delivery)).expect("normalizes"));
            }
        });
    });
    group.bench_function(FUNCTIONS[2], |b| {
        b.iter(|| {
            for delivery in &deliveries {
                let outputs = adapter
                    .construct(black_box(delivery), &credentials)
                    .expect("authentic");
                black_box(outputs);
            }
        });
    });
    group.finish();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not (criterion's test mode).
    let benching = std::env::args().any(|a| a == "--bench");
    let paired = benching.then(|| paired(&deliveries, adapter.as_ref(), &credentials));
    CorpusInfo {
        provider,
        bytes,
        deliveries: deliveries.len() as u64,
        events,
        paired,
    }
}

/// Ratios robust to a machine that drifts: each round times the three functions back to back
/// over the whole corpus (rotating which goes first), so a slow minute slows all three; the
/// median over rounds of `baseline / function`. Criterion measures the three one after the
/// other, seconds apart, so its means can drift apart by ±20 % on a shared machine.
fn paired(
    deliveries: &[RawDelivery],
    adapter: &dyn shipfeed::Adapter,
    credentials: &shipfeed::Credentials,
) -> [f64; 2] {
    let run = |function: usize| {
        let started = Instant::now();
        for delivery in deliveries {
            match function {
                0 => drop(black_box(serde_json::from_slice::<serde_json::Value>(
                    black_box(&delivery.body),
                ))),
                1 => drop(black_box(adapter.parse(black_box(delivery)))),
                _ => drop(black_box(
                    adapter.construct(black_box(delivery), credentials),
                )),
            }
        }
        started.elapsed().as_secs_f64()
    };
    let mut ratios = [Vec::new(), Vec::new()];
    for round in 0..PAIRED_ROUNDS {
        let mut times = [0.0; 3];
        for step in 0..3 {
            let function = (round + step) % 3;
            times[function] = run(function);
        }
        ratios[0].push(times[0] / times[1]);
        ratios[1].push(times[0] / times[2]);
    }
    ratios.map(|mut r| {
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    })
}

/// Where criterion writes its estimates: `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`,
/// else the workspace's `target/criterion` (cargo runs benches from the package directory).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/criterion")
}

/// Mean time of one iteration in nanoseconds, when this run measured it.
fn mean_ns(dir: &Path, group: &str, function: &str, since: SystemTime) -> Option<f64> {
    let path = dir.join(group).join(function).join("new/estimates.json");
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .is_ok_and(|modified| modified >= since);
    if !fresh {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["mean"]["point_estimate"].as_f64()
}

fn summary(infos: &[CorpusInfo], since: SystemTime) {
    let dir = criterion_dir();
    let mut rows = Vec::new();
    for info in infos {
        let group = info.provider.as_str();
        let times: Vec<Option<f64>> = FUNCTIONS
            .iter()
            .map(|f| mean_ns(&dir, group, f, since))
            .collect();
        let Some(baseline) = times[0] else { continue };
        for (function, time) in FUNCTIONS.iter().zip(&times) {
            let Some(ns) = time else { continue };
            let seconds = ns / 1e9;
            let ratio = baseline / ns;
            let (paired, target) = match (*function, info.paired) {
                ("normalize", Some([p, _])) => (p, 2.0),
                ("verify_normalize", Some([_, p])) => (p, 1.5),
                _ => (1.0, 0.0),
            };
            let verdict = if target == 0.0 {
                "baseline".to_owned()
            } else {
                format!(
                    "≥ {target:.1}× {}",
                    if paired >= target { "holds" } else { "MISSED" }
                )
            };
            rows.push(format!(
                "| {group} | {function} | {:.1} | {:.0} | {:.0} | {ratio:.2}× | {paired:.2}× | {verdict} |",
                info.bytes as f64 / seconds / 1e6,
                info.deliveries as f64 / seconds,
                info.events as f64 / seconds,
            ));
        }
    }
    if rows.is_empty() {
        return; // test mode, or a filter that measured no baseline
    }
    println!();
    println!(
        "normalize summary (ratio = Value-parse time / time over the same bytes; criterion \
         means, and the median of {PAIRED_ROUNDS} interleaved rounds, which the verdict uses)"
    );
    for info in infos {
        println!(
            "  {}: {} deliveries, {} bytes ({} B avg), {} canonical events",
            info.provider,
            info.deliveries,
            info.bytes,
            info.bytes / info.deliveries.max(1),
            info.events
        );
    }
    println!();
    println!(
        "| provider | function | MB/s | deliveries/s | events/s | ratio (means) | ratio (paired median) | target |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    for row in rows {
        println!("{row}");
    }
}
