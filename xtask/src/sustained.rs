//! The sustained rate of `bench ingest`: the highest offered rate at which the projector keeps
//! up. The rule that says whether one open-loop step kept up, and the search that picks the
//! next step's rate; both pure, so that they are tested on made-up runs. BENCHMARKS.md §2
//! states the same rule.

use crate::load::Report;

/// One `/metrics` scrape during a step: seconds since the generator's `t0`, and
/// `shipfeed_projector_lag_deliveries`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub(crate) at: f64,
    pub(crate) lag: f64,
}

/// The least-squares slope of the lag over time, in deliveries per second (`None` under two
/// distinct times).
pub(crate) fn slope(samples: &[Sample]) -> Option<f64> {
    let n = samples.len() as f64;
    let mean_at = samples.iter().map(|s| s.at).sum::<f64>() / n;
    let mean_lag = samples.iter().map(|s| s.lag).sum::<f64>() / n;
    let spread: f64 = samples.iter().map(|s| (s.at - mean_at).powi(2)).sum();
    if samples.len() < 2 || spread <= 0.0 {
        return None;
    }
    let covariance: f64 = samples
        .iter()
        .map(|s| (s.at - mean_at) * (s.lag - mean_lag))
        .sum();
    Some(covariance / spread)
}

/// The share of the offered rate the inbox must acknowledge, from `t0` to the last answer,
/// for a step to count: a lagging inbox would hide a lagging projector.
pub(crate) const ACHIEVED_SHARE: f64 = 0.95;

/// Whether one step kept up, and the figures that decided it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub(crate) keeps_up: bool,
    /// The lag at the last sample (the schedule's end).
    pub(crate) end_lag: f64,
    /// The lag's slope over the second half of the schedule, deliveries/s (NaN: too few samples).
    pub(crate) slope: f64,
    /// The largest slope that counts as not growing: one batch over the whole schedule.
    pub(crate) slope_bound: f64,
    /// Why not, when it did not.
    pub(crate) why: Option<String>,
}

/// The keep-up rule. A step keeps up when
/// 1. the inbox took the offered load: no request waited for a connection (the load stayed
///    open), every request was answered 2xx, and the 2xx rate reached [`ACHIEVED_SHARE`] of the
///    offered rate;
/// 2. the lag at the end of the schedule is at most one projector batch (`batch`);
/// 3. the lag is not growing over the schedule's second half: the least-squares slope of the
///    samples taken then is at most `batch / schedule` (one batch over the whole step).
pub(crate) fn judge(report: &Report, samples: &[Sample], batch: usize) -> Verdict {
    let batch = batch as f64;
    let schedule = report.schedule_s.max(1e-9);
    let end_lag = samples.last().map_or(f64::NAN, |s| s.lag);
    let second_half: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.at >= schedule / 2.0)
        .collect();
    let slope = slope(&second_half).unwrap_or(f64::NAN);
    let slope_bound = batch / schedule;
    let why = if !report.open() {
        Some(format!(
            "not open loop: {} requests waited for one of the {} connections",
            report.exhausted, report.pool
        ))
    } else if report.non_2xx + report.failed > 0 {
        Some(format!(
            "{} non-2xx, {} unanswered",
            report.non_2xx, report.failed
        ))
    } else if report.achieved_rate < ACHIEVED_SHARE * report.offered_rate {
        Some(format!(
            "the inbox acknowledged {:.0}/s of {:.0}/s offered",
            report.achieved_rate, report.offered_rate
        ))
    } else if end_lag.is_nan() || slope.is_nan() {
        Some("too few lag samples".to_owned())
    } else if end_lag > batch {
        Some(format!(
            "lag at the end {end_lag:.0} > one batch ({batch:.0})"
        ))
    } else if slope > slope_bound {
        Some(format!(
            "lag growing over the second half: {slope:.1}/s > {slope_bound:.1}/s"
        ))
    } else {
        None
    };
    Verdict {
        keeps_up: why.is_none(),
        end_lag,
        slope,
        slope_bound,
        why,
    }
}

/// The search for the sustained rate: from `start`, multiply by `factor` while steps keep up
/// (divide while they do not) until one rate kept up and another did not, then bisect between
/// them (geometrically) until they are within `precision` of each other. Never above
/// `ceiling` (the inbox's closed-loop rate: beyond it the load cannot stay open) nor below
/// `floor`.
#[derive(Debug, Clone)]
pub(crate) struct Search {
    pub(crate) start: f64,
    pub(crate) factor: f64,
    pub(crate) precision: f64,
    pub(crate) floor: f64,
    pub(crate) ceiling: f64,
    /// The highest rate that kept up, and the lowest that did not.
    kept_up: Option<f64>,
    fell_behind: Option<f64>,
}

impl Search {
    pub(crate) fn new(start: f64, ceiling: f64) -> Search {
        Search {
            start,
            factor: 2.0,
            precision: 0.15,
            floor: 10.0,
            ceiling: ceiling.max(10.0),
            kept_up: None,
            fell_behind: None,
        }
    }

    /// The next rate to try; `None` when the search is over.
    pub(crate) fn next(&self) -> Option<f64> {
        match (self.kept_up, self.fell_behind) {
            (None, None) => Some(self.start.clamp(self.floor, self.ceiling)),
            (Some(low), None) => {
                (low < self.ceiling).then(|| (low * self.factor).min(self.ceiling))
            }
            (None, Some(high)) => (high > self.floor).then(|| (high / self.factor).max(self.floor)),
            (Some(low), Some(high)) => {
                (high / low > 1.0 + self.precision).then(|| (low * high).sqrt())
            }
        }
    }

    pub(crate) fn record(&mut self, rate: f64, keeps_up: bool) {
        if keeps_up {
            self.kept_up = Some(self.kept_up.map_or(rate, |r| r.max(rate)));
        } else {
            self.fell_behind = Some(self.fell_behind.map_or(rate, |r| r.min(rate)));
        }
    }

    /// The sustained rate: the highest rate that kept up.
    pub(crate) fn sustained(&self) -> Option<f64> {
        self.kept_up
    }

    /// The sustained rate is the ceiling itself: the projector kept up with all the inbox
    /// could take, so the true figure may be higher.
    pub(crate) fn at_ceiling(&self) -> bool {
        self.kept_up.is_some_and(|r| r >= self.ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(lags: impl IntoIterator<Item = f64>, period: f64) -> Vec<Sample> {
        lags.into_iter()
            .enumerate()
            .map(|(i, lag)| Sample {
                at: i as f64 * period,
                lag,
            })
            .collect()
    }

    /// A 20 s step at 1000/s, every request answered 2xx in time, open loop.
    fn clean_report() -> Report {
        Report {
            offered_rate: 1000.0,
            requests: 20_001,
            schedule_s: 20.0,
            ok: 20_001,
            achieved_rate: 998.0,
            pool: 512,
            ..Report::default()
        }
    }

    #[test]
    fn slope_is_the_least_squares_fit() {
        let line = samples((0..9).map(|i| 5.0 + 3.0 * f64::from(i)), 0.5);
        assert!((slope(&line).unwrap() - 6.0).abs() < 1e-9);
        let flat = samples([10.0, 30.0, 10.0, 30.0], 1.0);
        assert!((slope(&flat).unwrap() - 4.0).abs() < 1e-9);
        assert_eq!(slope(&samples([1.0], 1.0)), None);
        assert_eq!(slope(&[]), None);
    }

    #[test]
    fn a_small_steady_lag_keeps_up() {
        // 81 samples every 250 ms; the lag wanders between 0 and 90 (small batches).
        let lags = (0..81).map(|i| f64::from((i * 37) % 91));
        let verdict = judge(&clean_report(), &samples(lags, 0.25), 256);
        assert!(verdict.keeps_up, "{verdict:?}");
        assert_eq!(verdict.slope_bound, 12.8);
        assert_eq!(verdict.end_lag, f64::from((80 * 37) % 91));
    }

    #[test]
    fn a_lag_growing_through_the_second_half_does_not() {
        // Nothing behind for 10 s, then 20 more deliveries behind each second: under one batch
        // at the end (200), but growing.
        let lags = (0..81).map(|i| f64::from((i - 40).max(0)) * 5.0);
        let verdict = judge(&clean_report(), &samples(lags, 0.25), 256);
        assert!(!verdict.keeps_up);
        assert_eq!(verdict.end_lag, 200.0);
        assert!((verdict.slope - 20.0).abs() < 1e-9, "{verdict:?}");
        assert!(verdict.why.unwrap().contains("growing"));
        // The same growth from the start: 10/s over the whole step, still under the bound.
        let slow = (0..81).map(|i| f64::from(i) * 2.5);
        assert!(judge(&clean_report(), &samples(slow, 0.25), 256).keeps_up);
    }

    #[test]
    fn a_lag_of_more_than_a_batch_at_the_end_does_not() {
        // Flat through the second half, but a backlog of 300 built up early.
        let lags = (0..81).map(|i| if i < 20 { f64::from(i) * 15.0 } else { 300.0 });
        let verdict = judge(&clean_report(), &samples(lags, 0.25), 256);
        assert!(!verdict.keeps_up);
        assert_eq!(verdict.slope, 0.0);
        assert!(verdict.why.unwrap().contains("one batch"));
    }

    #[test]
    fn a_load_the_inbox_did_not_take_does_not_count() {
        let calm = samples((0..81).map(|_| 3.0), 0.25);
        let exhausted = Report {
            exhausted: 12,
            ..clean_report()
        };
        assert!(judge(&exhausted, &calm, 256)
            .why
            .unwrap()
            .contains("not open loop"));
        let refused = Report {
            non_2xx: 1,
            ..clean_report()
        };
        assert!(!judge(&refused, &calm, 256).keeps_up);
        let slow = Report {
            achieved_rate: 900.0,
            ..clean_report()
        };
        assert!(judge(&slow, &calm, 256)
            .why
            .unwrap()
            .contains("acknowledged"));
        assert!(judge(&clean_report(), &calm, 256).keeps_up);
    }

    #[test]
    fn no_samples_is_no_verdict_of_keeping_up() {
        assert!(!judge(&clean_report(), &[], 256).keeps_up);
    }

    /// Runs the search against a projector that keeps up at most `limit`/s.
    fn search(start: f64, ceiling: f64, limit: f64) -> (Vec<f64>, Option<f64>) {
        let mut search = Search::new(start, ceiling);
        let mut tried = Vec::new();
        while let Some(rate) = search.next() {
            tried.push(rate.round());
            search.record(rate, rate <= limit);
            assert!(tried.len() < 20, "the search does not end: {tried:?}");
        }
        (tried, search.sustained().map(f64::round))
    }

    #[test]
    fn the_search_steps_up_then_bisects() {
        let (tried, sustained) = search(1000.0, 16_000.0, 4500.0);
        assert_eq!(
            tried,
            [1000.0, 2000.0, 4000.0, 8000.0, 5657.0, 4757.0, 4362.0]
        );
        assert_eq!(sustained, Some(4362.0));
    }

    #[test]
    fn the_search_steps_down_when_the_first_rate_is_too_high() {
        let (tried, sustained) = search(1400.0, 5600.0, 700.0);
        assert_eq!(tried, [1400.0, 700.0, 990.0, 832.0, 763.0]);
        assert_eq!(sustained, Some(700.0));
    }

    #[test]
    fn the_search_stops_at_the_ceiling_and_the_floor() {
        let mut up = Search::new(3000.0, 5000.0);
        let (tried, sustained) = (0..3).fold((Vec::new(), None), |(mut tried, _), _| {
            if let Some(rate) = up.next() {
                tried.push(rate);
                up.record(rate, true);
            }
            (tried, up.sustained())
        });
        assert_eq!(tried, [3000.0, 5000.0]);
        assert_eq!(sustained, Some(5000.0));
        assert!(up.at_ceiling());
        let (tried, sustained) = search(40.0, 5000.0, 1.0);
        assert_eq!(tried, [40.0, 20.0, 10.0]);
        assert_eq!(sustained, None);
    }
}
