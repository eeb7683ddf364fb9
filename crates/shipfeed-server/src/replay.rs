//! Replay: re-normalize stored raw deliveries with this build's adapters (after a mapping
//! fix). Idempotent: events are deduplicated by `event_id`, so replaying twice adds nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shipfeed::Provider;

use crate::{IngestError, Service};

/// Deliveries read from the store per round trip.
const PAGE: usize = 500;

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
    /// Events that were already stored.
    pub duplicates: u64,
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

impl Service {
    /// Re-normalizes the stored deliveries that match `filter`, in arrival order, calling
    /// `progress` after each page. A delivery is not verified again (it was authenticated when
    /// it arrived, and secrets may have been rotated since). A delivery whose endpoint or
    /// source is gone from the configuration is skipped and counted, never normalized with
    /// settings it did not arrive under.
    ///
    /// # Errors
    /// [`IngestError`] when the store cannot be read or written; what was replayed before
    /// stays replayed, and running again is safe.
    pub async fn replay(
        &self,
        filter: &ReplayFilter,
        mut progress: impl FnMut(&ReplaySummary),
    ) -> Result<ReplaySummary, IngestError> {
        let mut summary = ReplaySummary::default();
        let mut after = 0;
        loop {
            let page = self
                .ingestor
                .store()
                .deliveries(after, PAGE, filter.dead_letters_only)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for stored in page {
                let provider = stored.provider;
                if filter.provider.is_some_and(|p| p != provider)
                    || filter
                        .since
                        .is_some_and(|t| stored.delivery.received_at < t)
                {
                    continue;
                }
                let endpoint = self
                    .endpoint_or_source(&stored.endpoint)
                    .filter(|endpoint| endpoint.provider == provider);
                let Some(endpoint) = endpoint else {
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
                };
                let outcome = endpoint.adapter.parse(&stored.delivery);
                let now_dead = outcome.is_err();
                let committed = self.ingestor.replay(stored.seq, provider, outcome).await?;
                summary.replayed += 1;
                summary.new_events += committed.new_events as u64;
                summary.duplicates += committed.duplicates as u64;
                if now_dead {
                    summary.dead_letters += 1;
                } else if stored.dead_letter {
                    summary.recovered += 1;
                }
            }
            progress(&summary);
        }
        Ok(summary)
    }
}
