//! Replay: project stored deliveries again with this build's adapters (after a mapping fix),
//! in place of the running projector: all of them, those a filter selects, or some named by
//! their inbox `seq`s, saying of each what became of it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use shipfeed_core::Provider;
use shipfeed_store::{PreparedBatch, StoreError, StoredDelivery, PROJECTOR};

use crate::Projector;

/// Deliveries read from the store per round trip (and recorded per transaction).
const PAGE: usize = 500;

/// How many revised and retracted event ids a summary lists (it counts them all).
pub const LISTED: usize = 100;

/// Which stored deliveries to replay (every condition given must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayFilter {
    /// Only deliveries that are currently dead letters.
    pub dead_letters_only: bool,
    /// Only this provider's deliveries.
    pub provider: Option<Provider>,
    /// Only deliveries received at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only the deliveries with these inbox `seq`s (read by `seq`, not by scanning the inbox).
    pub seqs: Option<BTreeSet<i64>>,
}

/// What the filter selects, in words: `all deliveries`, `dead letters 12-13, 20 of sendcloud`,
/// `all deliveries received since 2024-06-01T00:00:00Z`. A long list of `seq`s is cut short.
///
/// ```
/// use shipfeed_projector::ReplayFilter;
/// assert_eq!(ReplayFilter::default().to_string(), "all deliveries");
/// let some = ReplayFilter {
///     dead_letters_only: true,
///     seqs: Some([12, 13, 20].into()),
///     ..ReplayFilter::default()
/// };
/// assert_eq!(some.to_string(), "dead letters 12-13, 20");
/// ```
impl std::fmt::Display for ReplayFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// The `seq` ranges named before the rest is only counted.
        const RANGES: usize = 10;
        let what = if self.dead_letters_only {
            "dead letters"
        } else {
            "deliveries"
        };
        match &self.seqs {
            None => write!(f, "all {what}")?,
            Some(seqs) => {
                write!(f, "{what}")?;
                let mut ranges: Vec<(i64, i64)> = Vec::new();
                for &seq in seqs {
                    match ranges.last_mut() {
                        Some((_, end)) if end.checked_add(1) == Some(seq) => *end = seq,
                        _ => ranges.push((seq, seq)),
                    }
                }
                for (i, (start, end)) in ranges.iter().take(RANGES).enumerate() {
                    let separator = if i == 0 { " " } else { ", " };
                    if start == end {
                        write!(f, "{separator}{start}")?;
                    } else {
                        write!(f, "{separator}{start}-{end}")?;
                    }
                }
                if ranges.len() > RANGES {
                    let named: i64 = ranges[..RANGES].iter().map(|(s, e)| e - s + 1).sum();
                    let more = i64::try_from(seqs.len()).unwrap_or(i64::MAX) - named;
                    write!(f, " and {more} more")?;
                }
            }
        }
        if let Some(provider) = self.provider {
            write!(f, " of {provider}")?;
        }
        if let Some(since) = self.since {
            write!(
                f,
                " received since {}",
                since.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            )?;
        }
        Ok(())
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ReplaySummary {
    /// Deliveries re-normalized.
    pub replayed: u64,
    /// Events stored for the first time.
    pub new_events: u64,
    /// Events that were already stored as they are.
    pub duplicates: u64,
    /// Events whose content changed: each entered the feed again as its next revision.
    pub revised: u64,
    /// Events no delivery yields any more: each was retracted.
    pub retracted: u64,
    /// The ids of the revised events (the first [`LISTED`] of them).
    pub revised_events: Vec<String>,
    /// The ids of the retracted events (the first [`LISTED`] of them).
    pub retracted_events: Vec<String>,
    /// Dead letters that normalize now.
    pub recovered: u64,
    /// Deliveries that still (or now) cannot be normalized.
    pub dead_letters: u64,
    /// Deliveries left as they are because the endpoint or SQS source they arrived on is no
    /// longer configured (or now serves another provider): their settings are unknown.
    pub skipped: u64,
    /// The skipped deliveries per endpoint name.
    pub skipped_endpoints: BTreeMap<String, u64>,
}

/// What became of one delivery a replay was asked for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ReplayOutcome {
    /// It was a dead letter and normalizes now: its events are in the feed.
    Recovered,
    /// It normalized before and still does (its events revised or retracted where they
    /// changed).
    Projected,
    /// It cannot be normalized, still or now: a dead letter (`error` says why).
    DeadLetter,
    /// Left as it is: the endpoint or SQS source it arrived on is no longer configured, or
    /// now serves another provider (`error` says which).
    Skipped,
    /// Stored, but the projector has not reached it yet: left to the projector.
    Pending,
    /// No delivery has this `seq`.
    NotFound,
}

impl ReplayOutcome {
    /// The name shown: `recovered`, `projected`, `dead_letter`, `skipped`, `pending`,
    /// `not_found`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayOutcome::Recovered => "recovered",
            ReplayOutcome::Projected => "projected",
            ReplayOutcome::DeadLetter => "dead_letter",
            ReplayOutcome::Skipped => "skipped",
            ReplayOutcome::Pending => "pending",
            ReplayOutcome::NotFound => "not_found",
        }
    }
}

/// One delivery a replay was asked for, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ReplayedDelivery {
    /// Its inbox `seq`.
    pub seq: i64,
    /// What became of it.
    pub outcome: ReplayOutcome,
    /// Why it is a dead letter (`dead_letter`) or was left alone (`skipped`); `null`
    /// otherwise.
    pub error: Option<String>,
}

/// What replaying some deliveries by `seq` did ([`Projector::replay_deliveries`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ReplayReport {
    /// The counts, as for any replay.
    pub summary: ReplaySummary,
    /// Each `seq` asked for, once, in `seq` order, with what became of it.
    pub deliveries: Vec<ReplayedDelivery>,
}

impl Projector {
    /// Re-normalizes the stored deliveries that match `filter` and that the projector has
    /// already projected, in inbox order, calling `progress` after each page. A delivery is
    /// not verified again (it was authenticated when it arrived, and secrets may have been
    /// rotated since). A delivery whose endpoint or source is gone from the configuration is
    /// skipped and counted, never normalized with settings it did not arrive under.
    ///
    /// Replay is a second writer of projections, so it **takes the projector's lease over**
    /// for as long as it runs: a running service's projector has its next batch refused by
    /// the epoch, stands by, and resumes from its own cursor once replay releases the lease.
    /// Deliveries still waiting in the inbox are left to it.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read or written, or when another replay took
    /// the lease over meanwhile ([`StoreError::Fenced`]); what was replayed before stays
    /// replayed, and running again is safe.
    pub async fn replay(
        &self,
        filter: &ReplayFilter,
        progress: impl FnMut(&ReplaySummary),
    ) -> Result<ReplaySummary, StoreError> {
        self.replay_each(filter, progress, |_| {}).await
    }

    /// Replays exactly the deliveries `seqs`, as [`replay`](Projector::replay) does (under
    /// the projector's lease, taken over meanwhile), and says of each what became of it:
    /// recovered, projected (again), a dead letter, skipped (its endpoint is gone), pending
    /// (the projector has not reached it: left to it) or not found.
    ///
    /// # Errors
    /// As [`replay`](Projector::replay).
    pub async fn replay_deliveries(
        &self,
        seqs: &BTreeSet<i64>,
    ) -> Result<ReplayReport, StoreError> {
        let filter = ReplayFilter {
            seqs: Some(seqs.clone()),
            ..ReplayFilter::default()
        };
        let mut deliveries = BTreeMap::new();
        let summary = self
            .replay_each(
                &filter,
                |_| {},
                |delivery| {
                    deliveries.insert(delivery.seq, delivery);
                },
            )
            .await?;
        Ok(ReplayReport {
            summary,
            deliveries: deliveries.into_values().collect(),
        })
    }

    /// [`replay`](Projector::replay), calling `each` with what became of every delivery
    /// `filter` selects (and, when it names `seqs`, of those not found).
    async fn replay_each(
        &self,
        filter: &ReplayFilter,
        mut progress: impl FnMut(&ReplaySummary),
        mut each: impl FnMut(ReplayedDelivery),
    ) -> Result<ReplaySummary, StoreError> {
        let mut lease = self.lease_holder(format!("replay:{}", self.options.holder));
        let taken = lease.take_over().await?;
        tracing::info!(epoch = taken.epoch, %filter, "replay holds the projector lease");
        let result = self
            .replay_under(&mut lease, taken.epoch, filter, &mut progress, &mut each)
            .await;
        if let Err(error) = lease.release().await {
            tracing::warn!(%error, "could not release the projector lease; it runs out by itself");
        }
        result
    }

    /// The next page of deliveries `filter` may select after `seq` `after` (`None` past the
    /// last one), and where the page after it starts. Deliveries named by `seq` and not
    /// stored are reported to `each` here.
    async fn replay_page(
        &self,
        filter: &ReplayFilter,
        after: i64,
        projected_up_to: i64,
        each: &mut impl FnMut(ReplayedDelivery),
    ) -> Result<Option<(Vec<StoredDelivery>, i64)>, StoreError> {
        let Some(seqs) = &filter.seqs else {
            if after >= projected_up_to {
                return Ok(None);
            }
            let page = self
                .store
                .deliveries(after, PAGE, filter.dead_letters_only)
                .await?;
            return Ok(page.last().map(|last| last.seq).map(|next| (page, next)));
        };
        let wanted: Vec<i64> = match after.checked_add(1) {
            Some(first) => seqs.range(first..).take(PAGE).copied().collect(),
            None => Vec::new(),
        };
        let Some(&next) = wanted.last() else {
            return Ok(None);
        };
        let page = self.store.deliveries_at(&wanted).await?;
        let found: BTreeSet<i64> = page.iter().map(|stored| stored.seq).collect();
        for seq in wanted.into_iter().filter(|seq| !found.contains(seq)) {
            each(ReplayedDelivery {
                seq,
                outcome: ReplayOutcome::NotFound,
                error: None,
            });
        }
        Ok(Some((page, next)))
    }

    async fn replay_under(
        &self,
        lease: &mut shipfeed_store::LeaseHolder,
        epoch: i64,
        filter: &ReplayFilter,
        progress: &mut impl FnMut(&ReplaySummary),
        each: &mut impl FnMut(ReplayedDelivery),
    ) -> Result<ReplaySummary, StoreError> {
        let projected_up_to = self.store.cursor(PROJECTOR).await?;
        let mut summary = ReplaySummary::default();
        let mut after = 0;
        while let Some((page, next)) = self
            .replay_page(filter, after, projected_up_to, each)
            .await?
        {
            after = next;
            let mut batch = Vec::new();
            let mut was_dead = Vec::new();
            for stored in page {
                if (filter.dead_letters_only && !stored.dead_letter)
                    || filter.provider.is_some_and(|p| p != stored.provider)
                    || filter
                        .since
                        .is_some_and(|t| stored.delivery.received_at < t)
                {
                    continue;
                }
                if stored.seq > projected_up_to {
                    each(ReplayedDelivery {
                        seq: stored.seq,
                        outcome: ReplayOutcome::Pending,
                        error: None,
                    });
                    continue;
                }
                if self
                    .adapters
                    .get(&stored.endpoint, stored.provider)
                    .is_none()
                {
                    tracing::warn!(
                        endpoint = %stored.endpoint,
                        provider = %stored.provider,
                        delivery = stored.seq,
                        "not replayed: no such endpoint or source in the configuration"
                    );
                    summary.skipped += 1;
                    *summary
                        .skipped_endpoints
                        .entry(stored.endpoint.clone())
                        .or_default() += 1;
                    each(ReplayedDelivery {
                        seq: stored.seq,
                        outcome: ReplayOutcome::Skipped,
                        error: Some(format!(
                            "no endpoint or sqs_source `{}` for {} is configured: left as it is",
                            stored.endpoint, stored.provider
                        )),
                    });
                    continue;
                }
                was_dead.push(stored.dead_letter);
                batch.push(self.normalize(&stored));
            }
            let providers: Vec<Provider> = batch.iter().map(|item| item.provider).collect();
            let held = lease.hold().await?.ok_or_else(|| StoreError::Fenced {
                lease: PROJECTOR.to_owned(),
                epoch,
                current: None,
            })?;
            let batch = PreparedBatch::new(batch, &self.options.identity);
            let projections = self.store.reproject(&held, batch).await?;
            for ((projection, provider), was_dead) in
                projections.iter().zip(providers).zip(was_dead)
            {
                self.observer.replayed(provider, projection);
                summary.replayed += 1;
                summary.new_events += projection.events.len() as u64;
                summary.duplicates += projection.duplicates.len() as u64;
                summary.revised += projection.revised.len() as u64;
                summary.retracted += projection.retracted.len() as u64;
                for (listed, ids) in [
                    (&mut summary.revised_events, &projection.revised),
                    (&mut summary.retracted_events, &projection.retracted),
                ] {
                    let room = LISTED.saturating_sub(listed.len());
                    listed.extend(ids.iter().take(room).cloned());
                }
                let outcome = if projection.dead_letter.is_some() {
                    summary.dead_letters += 1;
                    ReplayOutcome::DeadLetter
                } else if was_dead {
                    summary.recovered += 1;
                    ReplayOutcome::Recovered
                } else {
                    ReplayOutcome::Projected
                };
                each(ReplayedDelivery {
                    seq: projection.delivery_seq,
                    outcome,
                    error: projection.dead_letter.clone(),
                });
            }
            progress(&summary);
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_reads_as_what_it_selects_with_long_seq_lists_cut_short() {
        let filter = |seqs: Option<BTreeSet<i64>>| ReplayFilter {
            seqs,
            ..ReplayFilter::default()
        };
        assert_eq!(filter(Some([5].into())).to_string(), "deliveries 5");
        let spread: BTreeSet<i64> = (0..15).map(|i| i * 10).chain([1, 2]).collect();
        assert_eq!(
            filter(Some(spread)).to_string(),
            "deliveries 0-2, 10, 20, 30, 40, 50, 60, 70, 80, 90 and 5 more"
        );
        let since = DateTime::parse_from_rfc3339("2024-06-01T00:00:00Z")
            .map(|t| t.to_utc())
            .ok();
        let all = ReplayFilter {
            dead_letters_only: true,
            provider: Some(Provider::Sendcloud),
            since,
            seqs: None,
        };
        assert_eq!(
            all.to_string(),
            "all dead letters of sendcloud received since 2024-06-01T00:00:00Z"
        );
    }
}
