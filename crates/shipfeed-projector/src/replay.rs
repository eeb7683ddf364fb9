//! Replay: project stored deliveries again with this build's adapters (after a mapping fix),
//! in place of the running projector.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shipfeed_core::Provider;
use shipfeed_store::{PreparedBatch, StoreError, PROJECTOR};

use crate::Projector;

/// Deliveries read from the store per round trip (and recorded per transaction).
const PAGE: usize = 500;

/// How many revised and retracted event ids a summary lists (it counts them all).
pub const LISTED: usize = 100;

/// Which stored deliveries to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Only deliveries that are currently dead letters.
    pub dead_letters_only: bool,
    /// Only this provider's deliveries.
    pub provider: Option<Provider>,
    /// Only deliveries received at or after this instant.
    pub since: Option<DateTime<Utc>>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
        mut progress: impl FnMut(&ReplaySummary),
    ) -> Result<ReplaySummary, StoreError> {
        let mut lease = self.lease_holder(format!("replay:{}", self.options.holder));
        let taken = lease.take_over().await?;
        tracing::info!(epoch = taken.epoch, "replay holds the projector lease");
        let result = self
            .replay_under(&mut lease, taken.epoch, filter, &mut progress)
            .await;
        if let Err(error) = lease.release().await {
            tracing::warn!(%error, "could not release the projector lease; it runs out by itself");
        }
        result
    }

    async fn replay_under(
        &self,
        lease: &mut shipfeed_store::LeaseHolder,
        epoch: i64,
        filter: &ReplayFilter,
        progress: &mut impl FnMut(&ReplaySummary),
    ) -> Result<ReplaySummary, StoreError> {
        let projected_up_to = self.store.cursor(PROJECTOR).await?;
        let mut summary = ReplaySummary::default();
        let mut after = 0;
        while after < projected_up_to {
            let page = self
                .store
                .deliveries(after, PAGE, filter.dead_letters_only)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let mut batch = Vec::new();
            let mut was_dead = Vec::new();
            for stored in page {
                if stored.seq > projected_up_to
                    || filter.provider.is_some_and(|p| p != stored.provider)
                    || filter
                        .since
                        .is_some_and(|t| stored.delivery.received_at < t)
                {
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
                if projection.dead_letter.is_some() {
                    summary.dead_letters += 1;
                } else if was_dead {
                    summary.recovered += 1;
                }
            }
            progress(&summary);
        }
        Ok(summary)
    }
}
