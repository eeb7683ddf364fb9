//! The ordering rule: a shipment's current state as a pure function of the *set* of its events.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{EstimatedDelivery, EventId, Status, TrackingEvent};

/// A shipment's current state, derived from its events by [`current_state`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShipmentState {
    /// Status of the winning event (see [`current_state`]).
    pub status: Status,
    /// Substatus of the winning event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<String>,
    /// Whether `status` is terminal.
    pub terminal: bool,
    /// The event that set `status`.
    pub status_event_id: EventId,
    /// When that event happened.
    pub status_occurred_at: DateTime<Utc>,
    /// The latest event of any kind (including events without a status change).
    pub last_event_id: EventId,
    /// When the latest event happened.
    pub last_occurred_at: DateTime<Utc>,
    /// The estimate carried by the latest event that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_delivery: Option<EstimatedDelivery>,
    /// Number of distinct events considered.
    pub event_count: usize,
}

/// Total order deciding which event wins: later `occurred_at`, then terminal over non-terminal,
/// then the greater `event_id`. `event_id` is unique per event, so no two distinct events tie.
fn precedence(a: &TrackingEvent, b: &TrackingEvent) -> Ordering {
    let terminal = |e: &TrackingEvent| e.status.is_some_and(Status::is_terminal);
    a.occurred_at
        .cmp(&b.occurred_at)
        .then_with(|| terminal(a).cmp(&terminal(b)))
        .then_with(|| a.event_id.cmp(&b.event_id))
}

/// The current state of a shipment given all its events, in any order and with duplicates.
///
/// - The status comes from the winning event among those that carry a *known* status: the
///   latest `occurred_at` wins; ties go to a terminal status, then to the greater `event_id`.
/// - An event whose code nobody has mapped (`unknown`) never overwrites a known status; it
///   decides only when no event has a known status.
/// - Events without a status change (`status: None`) never set the status; they count for
///   `last_event_*`.
///
/// Returns `None` when no event carries any status. Arrival order never matters: any
/// permutation of the same events gives the same state.
///
/// ```
/// use shipfeed_core::{current_state, Status};
/// # use shipfeed_core::doc_support::event;
/// let delivered = event("a", "2024-04-03T16:00:00Z", Status::Delivered);
/// let late_in_transit = event("b", "2024-04-02T09:00:00Z", Status::InTransit);
/// let state = current_state(&[delivered, late_in_transit]).unwrap();
/// assert_eq!(state.status, Status::Delivered);
/// ```
///
/// Any collection of events or of references to them will do (a slice, a `Vec`, a map's
/// values), so that a caller holding them elsewhere need not copy them.
pub fn current_state<'a, I>(events: I) -> Option<ShipmentState>
where
    I: IntoIterator<Item = &'a TrackingEvent>,
    I::IntoIter: Clone,
{
    let events = events.into_iter();
    let known = |e: &&TrackingEvent| e.status.is_some_and(|s| s != Status::Unknown);
    let winner = events
        .clone()
        .filter(known)
        .max_by(|a, b| precedence(a, b))
        .or_else(|| {
            events
                .clone()
                .filter(|e| e.status.is_some())
                .max_by(|a, b| precedence(a, b))
        })?;
    let last = latest_event(events.clone())?;
    let estimated_delivery = events
        .clone()
        .filter(|e| e.estimated_delivery.is_some())
        .max_by(|a, b| precedence(a, b))
        .and_then(|e| e.estimated_delivery.clone());
    let mut ids: Vec<&EventId> = events.map(|e| &e.event_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let status = winner.status.unwrap_or(Status::Unknown);
    Some(ShipmentState {
        status,
        substatus: winner.substatus.clone(),
        terminal: status.is_terminal(),
        status_event_id: winner.event_id.clone(),
        status_occurred_at: winner.occurred_at,
        last_event_id: last.event_id.clone(),
        last_occurred_at: last.occurred_at,
        estimated_delivery,
        event_count: ids.len(),
    })
}

/// Sorts events into timeline order (the order in which [`current_state`] ranks them).
pub fn sort_timeline(events: &mut [TrackingEvent]) {
    events.sort_by(precedence);
}

/// The last event in timeline order (what [`sort_timeline`] puts last), `None` when there is
/// none.
///
/// ```
/// use shipfeed_core::{latest_event, Status};
/// # use shipfeed_core::doc_support::event;
/// let events = [
///     event("a", "2024-04-03T16:00:00Z", Status::Delivered),
///     event("b", "2024-04-02T09:00:00Z", Status::InTransit),
/// ];
/// assert_eq!(latest_event(&events).unwrap().event_id.as_str(), events[0].event_id.as_str());
/// ```
pub fn latest_event<'a>(
    events: impl IntoIterator<Item = &'a TrackingEvent>,
) -> Option<&'a TrackingEvent> {
    events.into_iter().max_by(|a, b| precedence(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc_support::event;
    use proptest::prelude::*;

    #[test]
    fn later_event_wins_whatever_the_arrival_order() {
        let events = [
            event("1", "2024-04-01T08:00:00Z", Status::PreTransit),
            event("2", "2024-04-02T08:00:00Z", Status::InTransit),
            event("3", "2024-04-03T08:00:00Z", Status::Delivered),
        ];
        let mut reversed = events.clone();
        reversed.reverse();
        assert_eq!(current_state(&events), current_state(&reversed));
        assert_eq!(current_state(&events).unwrap().status, Status::Delivered);
    }

    #[test]
    fn ties_prefer_terminal_then_event_id() {
        let at = "2024-04-03T08:00:00Z";
        let state = current_state(&[
            event("z", at, Status::OutForDelivery),
            event("a", at, Status::Delivered),
        ])
        .unwrap();
        assert_eq!(state.status, Status::Delivered);
        let state = current_state(&[
            event("a", at, Status::InTransit),
            event("b", at, Status::Exception),
        ])
        .unwrap();
        assert_eq!(state.status_event_id.as_str(), "b");
    }

    #[test]
    fn unmapped_and_statusless_events_do_not_overwrite_a_known_status() {
        let mut unmapped = event("u", "2024-04-05T08:00:00Z", Status::Unknown);
        unmapped.substatus = Some(crate::UNMAPPED.into());
        let mut note = event("n", "2024-04-06T08:00:00Z", Status::InTransit);
        note.status = None;
        let state = current_state(&[
            event("d", "2024-04-03T08:00:00Z", Status::Delivered),
            unmapped.clone(),
            note,
        ])
        .unwrap();
        assert_eq!(state.status, Status::Delivered);
        assert_eq!(state.last_event_id.as_str(), "n");
        assert_eq!(state.event_count, 3);
        assert_eq!(current_state(&[unmapped]).unwrap().status, Status::Unknown);
    }

    #[test]
    fn no_status_no_state() {
        let mut note = event("n", "2024-04-06T08:00:00Z", Status::InTransit);
        note.status = None;
        assert_eq!(current_state(&[note]), None);
        assert_eq!(current_state(&[]), None);
    }

    fn arb_event() -> impl Strategy<Value = TrackingEvent> {
        (
            0u8..6,
            0i64..5,
            proptest::option::weighted(0.9, proptest::sample::select(Status::ALL.to_vec())),
            proptest::bool::ANY,
        )
            .prop_map(|(id, hour, status, has_estimate)| {
                let at = format!("2024-04-0{}T0{}:00:00Z", 1 + hour % 3, hour);
                let mut e = event(&format!("e{id}"), &at, status.unwrap_or(Status::Unknown));
                e.status = status;
                if has_estimate {
                    e.estimated_delivery = Some(crate::EstimatedDelivery {
                        date: chrono::NaiveDate::from_ymd_opt(2024, 4, 10 + id as u32)
                            .unwrap_or_default(),
                        at: None,
                    });
                }
                e
            })
    }

    proptest! {
        #[test]
        fn any_permutation_gives_the_same_state(
            (events, shuffled) in proptest::collection::vec(arb_event(), 0..12)
                .prop_flat_map(|events| {
                    // Events sharing an id must be identical (an id names one carrier event).
                    let mut seen = std::collections::BTreeMap::new();
                    let events: Vec<_> = events
                        .into_iter()
                        .map(|e| seen.entry(e.event_id.clone()).or_insert(e).clone())
                        .collect();
                    (Just(events.clone()), Just(events).prop_shuffle())
                })
        ) {
            prop_assert_eq!(current_state(&events), current_state(&shuffled));
        }
    }
}
