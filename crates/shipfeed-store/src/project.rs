//! The projection rules, once for every database: what a batch of projected deliveries does to
//! the tables (events deduplicated by id, revised or retracted; notices; dead letters; the
//! states of the shipments it touched) and the feed items each of these makes.
//!
//! A batch is decided in memory, delivery after delivery in inbox order, from one read of what
//! the store holds of it (the stored versions of its event ids; then the events and states of
//! the shipments it changes), and then written with one bulk call per table: a database charges
//! per statement (PostgreSQL a round trip each), far less per row. The outcome is the same as
//! projecting the deliveries one at a time.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use shipfeed_core::drift::{unknown_status, DriftKind};
use shipfeed_core::identity::{provider_id_key, tracking_number, Identity};
use shipfeed_core::{
    current_state, latest_event, Error, Output, Provider, ShipmentRef, ShipmentState, TrackingEvent,
};

use crate::alerts::{self, AlertCleared};
use crate::driver::{
    order_number_key, AliasRow, DriftRow, EventRow, FeedRow, ProjectionRow, ShipmentRow,
    StoredEvent, WriteDriver,
};
use crate::{
    DeliveryDrift, DriftItem, Projection, Retraction, ShipmentStateChange, StatusChange,
    StoreError, DRIFT_KEYS_PER_KIND,
};

/// An adapter's outputs as rows, or the reason the delivery is a dead letter.
///
/// Built by the calling task, not the writer: JSON bodies, hashes and shipment keys cost
/// nothing serial there, while the writer is the one task every projection waits for.
pub(crate) type Outcome = Result<Rows, String>;

#[derive(Default)]
pub(crate) struct Rows {
    /// `None` only for the stand-in rows of a dead letter.
    provider: Option<Provider>,
    events: Vec<(EventRow, TrackingEvent)>,
    /// Notices as JSON.
    notices: Vec<String>,
    /// What the adapter noted it does not know.
    drift: Option<DeliveryDrift>,
}

/// The rows of an adapter's outputs, or the dead-letter reason; shipments keyed by `identity`.
pub(crate) fn outcome_rows(
    provider: Provider,
    outcome: Result<Vec<Output>, Error>,
    drift: Option<DeliveryDrift>,
    identity: &Identity,
) -> Outcome {
    let mut rows = Rows {
        provider: Some(provider),
        drift,
        ..Rows::default()
    };
    for output in outcome.map_err(|error| error.to_string())? {
        match output {
            Output::Event(event) => {
                let key = identity.shipment_key(provider, &event.shipment);
                rows.events.push(event_row(event, key));
            }
            Output::Notice(notice) => rows.notices.push(to_json(&notice)),
        }
    }
    Ok(rows)
}

/// An event as it is stored under shipment `key`.
fn event_row(mut event: TrackingEvent, shipment_key: String) -> (EventRow, TrackingEvent) {
    let row = EventRow {
        event_id: event.event_id.as_str().to_owned(),
        shipment_key,
        occurred_at: event.occurred_at,
        status: event.status.map(|status| status.as_str()),
        body: to_json(&event),
        content_hash: content_hash(&mut event),
    };
    (row, event)
}

/// The feed item of an event in one of its revisions.
fn event_item(row: &EventRow, revision: i64) -> FeedRow<'_> {
    FeedRow {
        kind: "event",
        event_id: Some(Cow::Borrowed(&row.event_id)),
        revision: Some(revision),
        shipment_key: Cow::Borrowed(&row.shipment_key),
        body: Cow::Borrowed(&row.body),
    }
}

/// A provider's own shipment id, as aliases are keyed.
type ProviderId = (String, String);

/// The provider's own shipment id of an event that has no tracking number yet, which an
/// alias may link to its parcel.
fn unlinked_id(event: &TrackingEvent) -> Option<&str> {
    match &event.shipment {
        ShipmentRef {
            tracking_number: None,
            provider_shipment_id: Some(id),
            ..
        } => Some(id),
        _ => None,
    }
}

/// An event of a provider's shipment id under the parcel its alias names: the carrier and
/// tracking number filled in, the parcel's key. Its content changes, so consumers get it
/// again as a new revision.
fn linked(event: &TrackingEvent, alias: &AliasRow) -> (EventRow, TrackingEvent) {
    let mut event = event.clone();
    if alias.carrier.is_some() {
        event.shipment.carrier.clone_from(&alias.carrier);
    }
    event.shipment.tracking_number = Some(alias.tracking_number.clone());
    event_row(event, alias.shipment_key.clone())
}

/// The model types serialize infallibly (plain structs, string keys).
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Starts every hash [`content_hash`] makes. A stored hash without it was made by an earlier
/// shipfeed in another way; the event's stored JSON is then hashed again before comparing.
pub(crate) const CONTENT_HASH_PREFIX: &str = "c2:";

/// The hash of an event's canonical content: its JSON with what differs between deliveries of
/// the same event (when it was received, the delivery's id, whether it triggered the delivery)
/// set to fixed values. Those fields are put back before it returns; taking the event mutably
/// spares copying it.
pub(crate) fn content_hash(event: &mut TrackingEvent) -> String {
    use sha2::Digest as _;
    let received_at = std::mem::take(&mut event.received_at);
    let delivery_id = event.delivery_id.take();
    let trigger = std::mem::take(&mut event.trigger);
    let mut hasher = sha2::Sha256::new();
    // Writing into a hasher cannot fail, and the model types serialize infallibly.
    let _ = serde_json::to_writer(&mut hasher, &*event);
    event.received_at = received_at;
    event.delivery_id = delivery_id;
    event.trigger = trigger;
    format!("{CONTENT_HASH_PREFIX}{}", hex::encode(hasher.finalize()))
}

/// What the store holds of an event while a batch is decided: as read, then as the batch
/// changed it so far.
struct Known {
    revision: i64,
    /// The delivery its content comes from.
    owner: i64,
    shipment_key: String,
    /// This build's hash of its content; `None` until needed when it was stored by an earlier
    /// build (then `body` is hashed).
    hash: Option<String>,
    body: Option<String>,
    retracted: bool,
}

impl Known {
    fn stored(event: StoredEvent) -> Self {
        let current = event.content_hash.starts_with(CONTENT_HASH_PREFIX);
        Known {
            revision: event.revision,
            owner: event.delivery_seq,
            shipment_key: event.shipment_key,
            hash: current.then_some(event.content_hash),
            body: event.body,
            retracted: event.retracted,
        }
    }

    fn new(seq: i64, row: &EventRow, revision: i64) -> Self {
        Known {
            revision,
            owner: seq,
            shipment_key: row.shipment_key.clone(),
            hash: Some(row.content_hash.clone()),
            body: None,
            retracted: false,
        }
    }

    fn same_content(&mut self, hash: &str) -> bool {
        if self.hash.is_none() {
            self.hash = self
                .body
                .take()
                .and_then(|body| crate::parse_stored::<TrackingEvent>(&body, "event"))
                .map(|mut event| content_hash(&mut event));
        }
        self.hash.as_deref() == Some(hash)
    }
}

/// A change to a stored event, applied in the order decided (a retraction and a later revision
/// of the same event must not swap).
enum Change<'a> {
    Revise {
        seq: i64,
        row: &'a EventRow,
        revision: i64,
    },
    Retract(String),
}

/// What a delivery does to shipment timelines, in order: an event added under a key, or one
/// removed from a key (moved by a revision, or retracted).
enum Step<'a> {
    Add(&'a str, &'a TrackingEvent),
    Remove(String, String),
}

impl Step<'_> {
    fn key(&self) -> &str {
        match self {
            Step::Add(key, _) => key,
            Step::Remove(key, _) => key,
        }
    }
}

/// One delivery, decided: its projection, its event and retraction items, what it does to
/// timelines.
struct Decided<'a> {
    projection: Projection,
    items: Vec<FeedRow<'a>>,
    steps: Vec<Step<'a>>,
}

/// Records a batch of projected deliveries (`items`: inbox `seq` and outcome, in inbox order)
/// and returns what each produced.
///
/// An event's content comes from the most recent delivery (by inbox `seq`) that carries it:
/// a new `event_id` is stored as revision 1; a stored one whose content (by hash: never the
/// per-delivery fields) differs, carried by this delivery or a later one than its owner, is
/// stored as the next revision; an older delivery never overrides a newer one. When deliveries
/// are projected again (`again`, replay), the events one owned and no longer yields (an id that
/// changed with a fix, or the delivery became a dead letter) are retracted. Each of these
/// enters the feed, followed by a `shipment_state` item for every shipment whose status (or
/// what set it) the delivery changed; states are recomputed from the whole set of a
/// shipment's events, so arrival order can never regress them.
pub(crate) async fn project(
    driver: &mut impl WriteDriver,
    items: &[(i64, Outcome)],
    again: bool,
) -> Result<Vec<Projection>, StoreError> {
    let no_rows = Rows::default();
    let batch: Vec<(i64, &Rows, Option<&str>)> = items
        .iter()
        .map(|(seq, outcome)| match outcome {
            Ok(rows) => (*seq, rows, None),
            Err(reason) => (*seq, &no_rows, Some(reason.as_str())),
        })
        .collect();

    // Aliases: a provider's own shipment id linked to its parcel by the latest delivery (by
    // inbox seq) that carried both. Events of an id that has an alias are stored under the
    // parcel, with its carrier and tracking number; when the batch links an id anew, the
    // events stored under the id until then move to the parcel, each as a new revision.
    let provider_ids: BTreeSet<(&str, &str)> = batch
        .iter()
        .flat_map(|(_, rows, _)| rows.events.iter())
        .filter_map(|(_, event)| {
            let id = event.shipment.provider_shipment_id.as_deref()?;
            Some((event.provider.as_str(), id))
        })
        .collect();
    let provider_ids: Vec<(&str, &str)> = provider_ids.into_iter().collect();
    let mut aliases: HashMap<ProviderId, AliasRow> = driver
        .aliases(&provider_ids)
        .await?
        .into_iter()
        .map(|alias| {
            (
                (alias.provider.clone(), alias.provider_shipment_id.clone()),
                alias,
            )
        })
        .collect();
    let mut learned: BTreeMap<ProviderId, i64> = BTreeMap::new();
    for &(seq, rows, _) in &batch {
        for (row, event) in &rows.events {
            let shipment = &event.shipment;
            let (Some(id), Some(tracking)) =
                (&shipment.provider_shipment_id, &shipment.tracking_number)
            else {
                continue;
            };
            let known = (event.provider.as_str().to_owned(), id.clone());
            if aliases.get(&known).is_some_and(|alias| {
                alias.shipment_key == row.shipment_key || alias.delivery_seq > seq
            }) {
                continue;
            }
            learned.insert(known.clone(), seq);
            aliases.insert(
                known,
                AliasRow {
                    provider: event.provider.as_str().to_owned(),
                    provider_shipment_id: id.clone(),
                    shipment_key: row.shipment_key.clone(),
                    carrier: shipment.carrier.clone(),
                    tracking_number: tracking.clone(),
                    delivery_seq: seq,
                },
            );
        }
    }
    // The batch's own events of linked ids, under their parcel.
    let relinked: Vec<Vec<Option<(EventRow, TrackingEvent)>>> = batch
        .iter()
        .map(|(_, rows, _)| {
            rows.events
                .iter()
                .map(|(_, event)| {
                    let id = unlinked_id(event)?;
                    let alias =
                        aliases.get(&(event.provider.as_str().to_owned(), id.to_owned()))?;
                    Some(linked(event, alias))
                })
                .collect()
        })
        .collect();
    // The stored events of ids the batch links anew, moved by the delivery that linked them.
    let carried: BTreeSet<&str> = batch
        .iter()
        .flat_map(|(_, rows, _)| rows.events.iter().map(|(row, _)| row.event_id.as_str()))
        .collect();
    let unlinked_keys: Vec<String> = learned
        .keys()
        .filter_map(|(provider, id)| Some(provider_id_key(provider.parse().ok()?, id)))
        .collect();
    let unlinked_keys: Vec<&str> = unlinked_keys.iter().map(String::as_str).collect();
    let mut moves: BTreeMap<i64, Vec<(EventRow, TrackingEvent)>> = BTreeMap::new();
    for (_, body) in driver.shipment_events(&unlinked_keys).await? {
        let Some(event) = crate::parse_stored::<TrackingEvent>(&body, "event") else {
            continue;
        };
        if carried.contains(event.event_id.as_str()) {
            continue;
        }
        let Some(id) = unlinked_id(&event) else {
            continue;
        };
        let known = (event.provider.as_str().to_owned(), id.to_owned());
        if let (Some(alias), Some(seq)) = (aliases.get(&known), learned.get(&known)) {
            moves.entry(*seq).or_default().push(linked(&event, alias));
        }
    }

    // What the store holds of the batch's events and, on replay, of those its deliveries own.
    let ids: BTreeSet<&str> = carried
        .iter()
        .copied()
        .chain(
            moves
                .values()
                .flatten()
                .map(|(row, _)| row.event_id.as_str()),
        )
        .collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    let mut known: HashMap<String, Known> = HashMap::new();
    for event in driver.stored_events(&ids, CONTENT_HASH_PREFIX).await? {
        known.insert(event.event_id.clone(), Known::stored(event));
    }
    let mut owned: HashMap<i64, Vec<String>> = HashMap::new();
    if again {
        let seqs: Vec<i64> = batch.iter().map(|(seq, _, _)| *seq).collect();
        for event in driver.owned_events(&seqs, CONTENT_HASH_PREFIX).await? {
            owned
                .entry(event.delivery_seq)
                .or_default()
                .push(event.event_id.clone());
            known
                .entry(event.event_id.clone())
                .or_insert_with(|| Known::stored(event));
        }
    }

    // Drift counts at a delivery's first projection only.
    let mut drift = if again {
        DriftTally::default()
    } else {
        DriftTally::read(driver, &batch).await?
    };

    // Each delivery in order: its events' fates.
    let mut inserts: Vec<(i64, &EventRow)> = Vec::new();
    let mut changes: Vec<Change<'_>> = Vec::new();
    let mut notices: Vec<(i64, &str)> = Vec::new();
    let mut decided: Vec<Decided<'_>> = Vec::with_capacity(batch.len());
    for (&(seq, rows, dead_letter), relinked) in batch.iter().zip(&relinked) {
        let first_insert = inserts.len();
        let mut delivery = Decided {
            projection: Projection {
                delivery_seq: seq,
                dead_letter: dead_letter.map(str::to_owned),
                ..Projection::default()
            },
            items: Vec::new(),
            steps: Vec::new(),
        };
        let carried = rows
            .events
            .iter()
            .zip(relinked)
            .map(|(original, relinked)| relinked.as_ref().unwrap_or(original));
        for (row, event) in carried {
            let revision = match known.get_mut(&row.event_id) {
                None => {
                    known.insert(row.event_id.clone(), Known::new(seq, row, 1));
                    inserts.push((seq, row));
                    delivery.projection.events.push(row.event_id.clone());
                    delivery
                        .projection
                        .new_event_statuses
                        .push(row.status.unwrap_or("none"));
                    1
                }
                Some(stored) => {
                    if !stored.retracted
                        && (seq < stored.owner || stored.same_content(&row.content_hash))
                    {
                        delivery.projection.duplicates.push(row.event_id.clone());
                        continue;
                    }
                    let revision = stored.revision + 1;
                    let previous = std::mem::replace(stored, Known::new(seq, row, revision));
                    delivery
                        .steps
                        .push(Step::Remove(previous.shipment_key, row.event_id.clone()));
                    changes.push(Change::Revise { seq, row, revision });
                    delivery.projection.revised.push(row.event_id.clone());
                    revision
                }
            };
            delivery.steps.push(Step::Add(&row.shipment_key, event));
            delivery.items.push(event_item(row, revision));
        }
        for (row, event) in moves.get(&seq).into_iter().flatten() {
            // A move keeps the event's owner: the delivery that carried it still does.
            let Some(stored) = known.get_mut(&row.event_id) else {
                continue;
            };
            let (owner, revision) = (stored.owner, stored.revision + 1);
            let previous = std::mem::replace(stored, Known::new(owner, row, revision));
            changes.push(Change::Revise {
                seq: owner,
                row,
                revision,
            });
            delivery.projection.revised.push(row.event_id.clone());
            delivery
                .steps
                .push(Step::Remove(previous.shipment_key, row.event_id.clone()));
            delivery.steps.push(Step::Add(&row.shipment_key, event));
            delivery.items.push(event_item(row, revision));
        }
        if again {
            let yielded: BTreeSet<&str> = rows
                .events
                .iter()
                .map(|(row, _)| row.event_id.as_str())
                .collect();
            for event_id in owned.get(&seq).into_iter().flatten() {
                let Some(stored) = known.get_mut(event_id) else {
                    continue;
                };
                if stored.owner != seq || stored.retracted || yielded.contains(event_id.as_str()) {
                    continue;
                }
                stored.retracted = true;
                changes.push(Change::Retract(event_id.clone()));
                let body = to_json(&Retraction {
                    seq: 0,
                    event_id: event_id.clone(),
                    revision: stored.revision,
                    shipment_key: stored.shipment_key.clone(),
                    delivery_seq: seq,
                });
                delivery.items.push(FeedRow {
                    kind: "retraction",
                    event_id: Some(Cow::Owned(event_id.clone())),
                    revision: Some(stored.revision),
                    shipment_key: Cow::Owned(stored.shipment_key.clone()),
                    body: Cow::Owned(body),
                });
                delivery.projection.retracted.push(event_id.clone());
                delivery
                    .steps
                    .push(Step::Remove(stored.shipment_key.clone(), event_id.clone()));
            }
        }
        for body in &rows.notices {
            notices.push((seq, body));
            delivery.projection.notices += 1;
        }
        if let (false, Some(provider)) = (again, rows.provider) {
            // The events this delivery is the first to carry: revision 1 of its own.
            let first = inserts[first_insert..]
                .iter()
                .map(|(_, row)| row.event_id.as_str())
                .collect::<HashSet<&str>>();
            let new_events = rows
                .events
                .iter()
                .filter(|(row, _)| first.contains(row.event_id.as_str()))
                .map(|(_, event)| event);
            let items = drift.count(seq, provider, rows.drift.as_ref(), new_events);
            delivery.items.extend(items);
        }
        decided.push(delivery);
    }

    // The shipments the batch changes, as stored: their events and states.
    let touched: BTreeSet<&str> = decided
        .iter()
        .flat_map(|delivery| delivery.steps.iter().map(Step::key))
        .collect();
    let touched: Vec<&str> = touched.into_iter().collect();
    let stored_events: Vec<(String, TrackingEvent)> = driver
        .shipment_events(&touched)
        .await?
        .into_iter()
        .filter_map(|(key, body)| Some((key, crate::parse_stored(&body, "event")?)))
        .collect();
    let mut timelines: HashMap<String, BTreeMap<&str, &TrackingEvent>> = HashMap::new();
    for (key, event) in &stored_events {
        timelines
            .entry(key.clone())
            .or_default()
            .insert(event.event_id.as_str(), event);
    }
    let mut states: HashMap<String, ShipmentState> = HashMap::new();
    for (key, state) in driver.shipment_states(&touched).await? {
        if let Some(state) = crate::parse_stored(&state, "state") {
            states.insert(key, state);
        }
    }
    let stored_states: BTreeSet<String> = states.keys().cloned().collect();
    let mut open_alerts = alerts::open_of(driver, &touched).await?;

    // Each delivery in order again: its items, then the state changes it made.
    let mut feed: Vec<FeedRow<'_>> = Vec::new();
    let mut projections = Vec::with_capacity(decided.len());
    let mut changed_shipments: BTreeSet<String> = BTreeSet::new();
    let mut cleared: Vec<(String, String)> = Vec::new();
    for delivery in decided {
        let delivery_seq = delivery.projection.delivery_seq;
        feed.extend(delivery.items);
        for step in &delivery.steps {
            match step {
                Step::Add(key, event) => {
                    timelines
                        .entry((*key).to_owned())
                        .or_default()
                        .insert(event.event_id.as_str(), event);
                }
                Step::Remove(key, event_id) => {
                    if let Some(timeline) = timelines.get_mut(key) {
                        timeline.remove(event_id.as_str());
                    }
                }
            }
        }
        let changed: BTreeSet<&str> = delivery.steps.iter().map(Step::key).collect();
        for key in changed {
            let events = timelines
                .get(key)
                .into_iter()
                .flat_map(|timeline| timeline.values().copied());
            let state = current_state(events.clone());
            let previous = states.get(key);
            let moved = match (previous, &state) {
                (None, None) => false,
                (Some(previous), Some(state)) => {
                    (
                        previous.status,
                        &previous.substatus,
                        &previous.status_event_id,
                    ) != (state.status, &state.substatus, &state.status_event_id)
                }
                _ => true,
            };
            if moved {
                let body = to_json(&ShipmentStateChange {
                    seq: 0,
                    shipment_key: key.to_owned(),
                    shipment: latest_event(events).map(|event| event.shipment.clone()),
                    previous: previous.map(|previous| StatusChange {
                        status: previous.status,
                        substatus: previous.substatus.clone(),
                        status_event_id: previous.status_event_id.clone(),
                    }),
                    state: state.clone(),
                });
                feed.push(FeedRow {
                    kind: "shipment_state",
                    event_id: state
                        .as_ref()
                        .map(|state| Cow::Owned(state.status_event_id.as_str().to_owned())),
                    revision: None,
                    shipment_key: Cow::Owned(key.to_owned()),
                    body: Cow::Owned(body),
                });
            }
            // An alert holds while the shipment's last event and status are those it was
            // raised on: this delivery moved them, so it clears the alert, in this transaction.
            if let Some(raised) = open_alerts.get_mut(key) {
                raised.retain(|alert| {
                    if alerts::still_holds(alert, state.as_ref()) {
                        return true;
                    }
                    let item = AlertCleared {
                        seq: 0,
                        alert_id: alert.alert_id.clone(),
                        rule: alert.rule.clone(),
                        shipment_key: key.to_owned(),
                        cleared_by: state.as_ref().map(|state| state.last_event_id.clone()),
                        status: state.as_ref().map(|state| state.status),
                        delivery_seq,
                    };
                    let body = to_json(&item);
                    feed.push(FeedRow {
                        kind: "alert_cleared",
                        event_id: item.cleared_by.map(|id| Cow::Owned(id.0)),
                        revision: None,
                        shipment_key: Cow::Owned(key.to_owned()),
                        body: Cow::Owned(body.clone()),
                    });
                    cleared.push((item.alert_id, body));
                    false
                });
            }
            match state {
                Some(state) => states.insert(key.to_owned(), state),
                None => states.remove(key),
            };
            changed_shipments.insert(key.to_owned());
        }
        projections.push(delivery.projection);
    }

    // The writes, one bulk call per table; changes to stored events in the order decided.
    driver.insert_events(&inserts).await?;
    for change in &changes {
        match change {
            Change::Revise { seq, row, revision } => {
                driver.revise_event(*seq, row, *revision).await?;
            }
            Change::Retract(event_id) => driver.retract_event(event_id).await?,
        }
    }
    driver.insert_notices(&notices).await?;
    drift.write(driver).await?;
    driver.append_feed(&feed).await?;
    let mut shipments = Vec::new();
    for key in &changed_shipments {
        let latest = timelines
            .get(key)
            .and_then(|timeline| latest_event(timeline.values().copied()));
        match (states.get(key), latest) {
            (Some(state), Some(latest)) => shipments.push(shipment_row(key, latest, state)),
            // Every event retracted (or none with a status): no state to show.
            _ if stored_states.contains(key) => driver.delete_shipment(key).await?,
            _ => {}
        }
    }
    driver.upsert_shipments(&shipments).await?;
    let cleared: Vec<(&str, &str)> = cleared
        .iter()
        .map(|(id, body)| (id.as_str(), body.as_str()))
        .collect();
    driver.clear_alerts(&cleared).await?;
    let learned: Vec<AliasRow> = learned
        .keys()
        .filter_map(|known| aliases.remove(known))
        .collect();
    driver.upsert_aliases(&learned).await?;
    let recorded: Vec<String> = projections.iter().map(to_json).collect();
    let rows: Vec<ProjectionRow<'_>> = projections
        .iter()
        .zip(&recorded)
        .map(|(projection, json)| ProjectionRow {
            seq: projection.delivery_seq,
            dead_letter: projection.dead_letter.as_deref(),
            projection: json,
        })
        .collect();
    let updated = driver.set_projections(&rows).await?;
    if updated != rows.len() {
        return Err(StoreError::NotFound(format!(
            "{} of the deliveries {:?} are not stored",
            rows.len() - updated,
            rows.iter().map(|row| row.seq).collect::<Vec<_>>()
        )));
    }
    Ok(projections)
}

/// The `kind` of the drift rows that count what the cap dropped (their key is the kind).
pub(crate) const DRIFT_DROPPED: &str = "dropped";

/// A batch's drift, decided delivery after delivery, from what the store holds (its keys and
/// the fingerprints of the deliveries it counted).
///
/// The rule: a delivery counts once, at its first projection (never on replay), unless its
/// bytes are identical to a delivery of the same provider counted before (a retry). Its
/// observations are the adapter's notes (unknown fields, unexpected types, unknown message
/// types), and the unknown status codes of the events it is the first to carry (an event
/// sent again in a later history counts no more). Each `(provider, kind, key)` counts a
/// delivery once; past [`DRIFT_KEYS_PER_KIND`] keys per provider and kind, new keys are
/// only counted as dropped.
#[derive(Default)]
struct DriftTally {
    /// `(provider, kind, key)` stored or met in the batch.
    known: HashSet<(String, String, String)>,
    /// Keys per `(provider, kind)`, stored or met in the batch.
    keys: HashMap<(String, String), usize>,
    fingerprints: HashSet<(String, String)>,
    /// The batch's counts, in the order first met.
    rows: Vec<DriftRow>,
    index: HashMap<(String, String, String), usize>,
    counted: Vec<(String, String, i64)>,
}

impl DriftTally {
    /// Reads what the store holds of the drift of `batch`; an empty tally, and no read, when
    /// there is none to count.
    async fn read(
        driver: &mut impl WriteDriver,
        batch: &[(i64, &Rows, Option<&str>)],
    ) -> Result<Self, StoreError> {
        let mut providers: BTreeSet<&str> = BTreeSet::new();
        let mut fingerprints: BTreeSet<(&str, &str)> = BTreeSet::new();
        for (_, rows, _) in batch {
            let Some(provider) = rows.provider else {
                continue;
            };
            if let Some(drift) = &rows.drift {
                fingerprints.insert((provider.as_str(), drift.fingerprint.as_str()));
                providers.insert(provider.as_str());
            }
            if rows.events.iter().any(|(_, event)| event.is_unmapped()) {
                providers.insert(provider.as_str());
            }
        }
        let mut tally = DriftTally::default();
        if providers.is_empty() {
            return Ok(tally);
        }
        let providers: Vec<&str> = providers.into_iter().collect();
        for (provider, kind, key) in driver.drift_keys(&providers).await? {
            if kind != DRIFT_DROPPED {
                *tally
                    .keys
                    .entry((provider.clone(), kind.clone()))
                    .or_default() += 1;
            }
            tally.known.insert((provider, kind, key));
        }
        let fingerprints: Vec<(&str, &str)> = fingerprints.into_iter().collect();
        tally.fingerprints = driver
            .drift_fingerprints(&fingerprints)
            .await?
            .into_iter()
            .collect();
        Ok(tally)
    }

    /// Counts delivery `seq` of `provider` (its adapter's notes, and the unknown codes of the
    /// events it is the first to carry); returns the feed items of the keys it shows first.
    fn count<'e>(
        &mut self,
        seq: i64,
        provider: Provider,
        drift: Option<&DeliveryDrift>,
        new_events: impl Iterator<Item = &'e TrackingEvent>,
    ) -> Vec<FeedRow<'static>> {
        let mut observed: Vec<(DriftKind, String)> = Vec::new();
        let mut received_at = None;
        let mut dropped = 0;
        if let Some(drift) = drift {
            let fingerprint = (provider.as_str().to_owned(), drift.fingerprint.clone());
            if !self.fingerprints.insert(fingerprint.clone()) {
                return Vec::new();
            }
            self.counted.push((fingerprint.0, fingerprint.1, seq));
            received_at = Some(drift.received_at);
            dropped = drift.drift.dropped();
            observed.extend(
                drift
                    .drift
                    .observations()
                    .iter()
                    .map(|observation| (observation.kind, observation.key.clone())),
            );
        }
        for event in new_events {
            if let Some(code) = unknown_status(event) {
                received_at.get_or_insert(event.received_at);
                let code = (DriftKind::UnknownStatus, code.to_owned());
                if !observed.contains(&code) {
                    observed.push(code);
                }
            }
        }
        let Some(at) = received_at else {
            return Vec::new();
        };
        let provider_name = provider.as_str();
        if dropped > 0 {
            let key = DriftKind::UnknownField.as_str().to_owned();
            self.add(provider_name, DRIFT_DROPPED, key, seq, at, dropped);
        }
        let mut items = Vec::new();
        for (kind, key) in observed {
            let known = (provider_name.to_owned(), kind.as_str().to_owned(), key);
            if self.known.contains(&known) {
                self.add(provider_name, kind.as_str(), known.2, seq, at, 1);
                continue;
            }
            let keys = self
                .keys
                .entry((provider_name.to_owned(), kind.as_str().to_owned()))
                .or_default();
            if *keys >= DRIFT_KEYS_PER_KIND {
                self.add(
                    provider_name,
                    DRIFT_DROPPED,
                    kind.as_str().to_owned(),
                    seq,
                    at,
                    1,
                );
                continue;
            }
            *keys += 1;
            self.known.insert(known.clone());
            self.add(provider_name, kind.as_str(), known.2.clone(), seq, at, 1);
            items.push(FeedRow {
                kind: "drift",
                event_id: None,
                revision: None,
                shipment_key: Cow::Borrowed(""),
                body: Cow::Owned(to_json(&DriftItem {
                    seq: 0,
                    provider,
                    kind,
                    key: known.2,
                    delivery_seq: seq,
                    first_seen: at,
                })),
            });
        }
        items
    }

    fn add(
        &mut self,
        provider: &str,
        kind: &str,
        key: String,
        seq: i64,
        at: DateTime<Utc>,
        n: u64,
    ) {
        let id = (provider.to_owned(), kind.to_owned(), key);
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        match self.index.get(&id) {
            Some(&i) => {
                let row = &mut self.rows[i];
                row.deliveries = row.deliveries.saturating_add(n);
                row.last_seen = at;
            }
            None => {
                self.index.insert(id.clone(), self.rows.len());
                self.rows.push(DriftRow {
                    provider: id.0,
                    kind: id.1,
                    key: id.2,
                    deliveries: n,
                    first_seen: at,
                    last_seen: at,
                    sample_seq: seq,
                });
            }
        }
    }

    async fn write(&self, driver: &mut impl WriteDriver) -> Result<(), StoreError> {
        if self.rows.is_empty() && self.counted.is_empty() {
            return Ok(());
        }
        let counted: Vec<(&str, &str, i64)> = self
            .counted
            .iter()
            .map(|(provider, fingerprint, seq)| (provider.as_str(), fingerprint.as_str(), *seq))
            .collect();
        driver.record_drift(&self.rows, &counted).await
    }
}

/// A shipment's row: found by its tracking number in compared form.
fn shipment_row<'a>(
    key: &'a str,
    latest: &TrackingEvent,
    state: &ShipmentState,
) -> ShipmentRow<'a> {
    ShipmentRow {
        key,
        carrier: latest.shipment.carrier.clone(),
        tracking_number: latest
            .shipment
            .tracking_number
            .as_deref()
            .map(tracking_number),
        order_number: latest
            .shipment
            .order_number
            .as_deref()
            .map(order_number_key)
            .filter(|number| !number.is_empty()),
        shipment: to_json(&latest.shipment),
        state: to_json(state),
        status: state.status.as_str(),
        last_event_id: state.last_event_id.as_str().to_owned(),
        last_occurred_at: state.last_occurred_at,
    }
}

/// Recomputes every shipment's state from its events, without feed items: after a migration
/// changed how shipments are keyed (two keys may have become one).
pub(crate) async fn rebuild_shipments(driver: &mut impl WriteDriver) -> Result<(), StoreError> {
    let keys = driver.shipment_keys().await?;
    for chunk in keys.chunks(512) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let mut timelines: BTreeMap<String, Vec<TrackingEvent>> = BTreeMap::new();
        for (key, body) in driver.shipment_events(&chunk).await? {
            if let Some(event) = crate::parse_stored(&body, "event") {
                timelines.entry(key).or_default().push(event);
            }
        }
        let states: Vec<(&str, ShipmentState, &TrackingEvent)> = timelines
            .iter()
            .filter_map(|(key, events)| {
                Some((key.as_str(), current_state(events)?, latest_event(events)?))
            })
            .collect();
        let rows: Vec<ShipmentRow<'_>> = states
            .iter()
            .map(|(key, state, latest)| shipment_row(key, latest, state))
            .collect();
        driver.upsert_shipments(&rows).await?;
    }
    driver.execute(REBUILD_DONE).await
}

/// The cursor whose presence asks for [`rebuild_shipments`] (set by a migration).
pub(crate) const REBUILD_SHIPMENTS: &str = "rebuild:shipments";
const REBUILD_DONE: &str = "DELETE FROM cursors WHERE name = 'rebuild:shipments'";
