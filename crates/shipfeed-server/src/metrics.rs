//! Counters in Prometheus text format. Label sets are small (endpoints, outcomes, statuses,
//! unmapped codes), so a locked ordered map is plenty.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Commit latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Default)]
pub(crate) struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    commit: Mutex<(Vec<u64>, f64, u64)>,
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Adds `by` to counter `name` with the given labels.
    pub(crate) fn add(&self, name: &'static str, labels: &[(&str, &str)], by: u64) {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        if let Ok(mut counters) = self.counters.lock() {
            *counters.entry((name, labels)).or_default() += by;
        }
    }

    pub(crate) fn observe_commit(&self, seconds: f64) {
        if let Ok(mut commit) = self.commit.lock() {
            if commit.0.is_empty() {
                commit.0 = vec![0; BUCKETS.len()];
            }
            for (count, bound) in commit.0.iter_mut().zip(BUCKETS) {
                if seconds <= bound {
                    *count += 1;
                }
            }
            commit.1 += seconds;
            commit.2 += 1;
        }
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(counters) = self.counters.lock() {
            let mut last = "";
            for ((name, labels), value) in counters.iter() {
                if *name != last {
                    let _ = writeln!(out, "# TYPE {name} counter");
                    last = name;
                }
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        if let Ok(commit) = self.commit.lock() {
            let _ = writeln!(out, "# TYPE shipfeed_commit_seconds histogram");
            for (i, bound) in BUCKETS.iter().enumerate() {
                let count = commit.0.get(i).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "shipfeed_commit_seconds_bucket{{le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "shipfeed_commit_seconds_bucket{{le=\"+Inf\"}} {}",
                commit.2
            );
            let _ = writeln!(out, "shipfeed_commit_seconds_sum {}", commit.1);
            let _ = writeln!(out, "shipfeed_commit_seconds_count {}", commit.2);
        }
        out
    }
}
