//! Which events belong to one shipment: the key a shipment is known by, and how tracking
//! numbers and carriers are compared.
//!
//! The rule (ARCHITECTURE.md, "One timeline per parcel", says why):
//!
//! - A parcel is its **carrier and tracking number**: `carrier:TRACKINGNUMBER`, the tracking
//!   number compared in [`tracking_number`] form (case, white space and dashes do not count),
//!   the carrier as its slug ([`crate::carrier`]). The same number under two carriers is two
//!   parcels (carriers recycle numbers), unless the operator configured those carriers as one
//!   ([`Identity::with_carrier_groups`]).
//! - Without a carrier, the provider scopes the number: `provider:tracking:NUMBER`.
//! - Without a tracking number, the provider's own shipment id: `provider:id:ID`, until an
//!   event of the same provider carries that id together with a carrier and tracking number;
//!   the store then links the two (an alias) and moves the earlier events under the parcel.
//! - With neither: `provider:unidentified`.

use std::collections::BTreeMap;

use crate::{EventId, Provider, ShipmentRef, Status, TrackingEvent};

/// A tracking number in the form numbers are compared in: white space and dashes removed,
/// ASCII letters upper-cased.
///
/// ```
/// use shipfeed_core::identity::tracking_number;
/// assert_eq!(tracking_number(" 3s-abc 123 "), "3SABC123");
/// ```
pub fn tracking_number(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// How shipments are identified. The default keeps every carrier apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Carrier slug → the slug its group is known by.
    groups: BTreeMap<String, String>,
}

impl Identity {
    /// Carriers that count as one for identity, per group (e.g. a carrier and the brand it
    /// hands parcels to): a tracking number under any carrier of a group is one parcel. Each
    /// group is known by its first slug.
    ///
    /// ```
    /// use shipfeed_core::identity::Identity;
    /// use shipfeed_core::{Provider, ShipmentRef};
    /// let identity = Identity::with_carrier_groups([["dhl", "dhl_ecommerce"]]);
    /// let parcel = |carrier: &str| ShipmentRef {
    ///     carrier: Some(carrier.into()),
    ///     tracking_number: Some("jd0001".into()),
    ///     ..ShipmentRef::default()
    /// };
    /// assert_eq!(identity.shipment_key(Provider::Shipup, &parcel("dhl_ecommerce")), "dhl:JD0001");
    /// assert_eq!(identity.shipment_key(Provider::Shipup, &parcel("ups")), "ups:JD0001");
    /// ```
    pub fn with_carrier_groups<G, C>(groups: impl IntoIterator<Item = G>) -> Self
    where
        G: IntoIterator<Item = C>,
        C: AsRef<str>,
    {
        let mut identity = Identity::default();
        for group in groups {
            let mut members = group.into_iter();
            let Some(first) = members.next() else {
                continue;
            };
            let name = first.as_ref().to_owned();
            identity.groups.insert(name.clone(), name.clone());
            for member in members {
                identity
                    .groups
                    .insert(member.as_ref().to_owned(), name.clone());
            }
        }
        identity
    }

    /// The slug a carrier is identified by: its group's, or its own.
    pub fn carrier<'a>(&'a self, slug: &'a str) -> &'a str {
        self.groups.get(slug).map_or(slug, String::as_str)
    }

    /// The key of the shipment an event with this reference belongs to (see the module
    /// documentation), before any alias the store knows.
    ///
    /// ```
    /// use shipfeed_core::identity::Identity;
    /// use shipfeed_core::{Provider, ShipmentRef};
    /// let parcel = ShipmentRef {
    ///     carrier: Some("postnl".into()),
    ///     tracking_number: Some("3s abc-1".into()),
    ///     ..ShipmentRef::default()
    /// };
    /// assert_eq!(Identity::default().shipment_key(Provider::Sendcloud, &parcel), "postnl:3SABC1");
    /// ```
    pub fn shipment_key(&self, provider: Provider, shipment: &ShipmentRef) -> String {
        match (
            &shipment.carrier,
            &shipment.tracking_number,
            &shipment.provider_shipment_id,
        ) {
            (Some(carrier), Some(tracking), _) => {
                format!("{}:{}", self.carrier(carrier), tracking_number(tracking))
            }
            (None, Some(tracking), _) => {
                format!("{provider}:tracking:{}", tracking_number(tracking))
            }
            (_, None, Some(id)) => provider_id_key(provider, id),
            (_, None, None) => format!("{provider}:unidentified"),
        }
    }
}

/// The key of a shipment known only by the provider's own id for it.
pub fn provider_id_key(provider: Provider, id: &str) -> String {
    format!("{provider}:id:{id}")
}

/// How far apart two providers' reports of one physical scan may be: each provider stamps the
/// carrier's scan with its own delay and rounding.
pub const SAME_SCAN_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// One physical scan of a parcel, as one or more providers reported it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Scan {
    /// When the first report says it happened.
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    /// Its status (`None`: an event without a status change).
    pub status: Option<Status>,
    /// The events reporting it, in timeline order; each stays in the feed on its own.
    pub event_ids: Vec<EventId>,
    /// The providers that reported it, in that order.
    pub seen_via: Vec<Provider>,
}

/// Groups a shipment's timeline (in timeline order) into physical scans: events of different
/// providers with the same status within [`SAME_SCAN_WINDOW`] of the scan's first report are
/// one scan "seen via" each of them. Events of one provider are never merged with each other
/// (a provider reports each scan once).
///
/// ```
/// use shipfeed_core::identity::scans;
/// use shipfeed_core::{Provider, Status};
/// # use shipfeed_core::doc_support::event;
/// let by_sendcloud = event("a", "2024-04-02T09:00:00Z", Status::InTransit);
/// let mut by_shipup = event("b", "2024-04-02T09:02:00Z", Status::InTransit);
/// by_shipup.provider = Provider::Shipup;
/// let scans = scans(&[by_sendcloud, by_shipup]);
/// assert_eq!(scans.len(), 1);
/// assert_eq!(scans[0].seen_via, [Provider::Sendcloud, Provider::Shipup]);
/// ```
pub fn scans(timeline: &[TrackingEvent]) -> Vec<Scan> {
    let mut scans: Vec<Scan> = Vec::new();
    for event in timeline {
        let same = scans.iter_mut().rev().find(|scan| {
            scan.status == event.status
                && !scan.seen_via.contains(&event.provider)
                && (event.occurred_at - scan.occurred_at).abs() <= SAME_SCAN_WINDOW
        });
        match same {
            Some(scan) => {
                scan.event_ids.push(event.event_id.clone());
                scan.seen_via.push(event.provider);
            }
            None => scans.push(Scan {
                occurred_at: event.occurred_at,
                status: event.status,
                event_ids: vec![event.event_id.clone()],
                seen_via: vec![event.provider],
            }),
        }
    }
    scans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parcel(carrier: Option<&str>, tracking: Option<&str>, id: Option<&str>) -> ShipmentRef {
        ShipmentRef {
            carrier: carrier.map(Into::into),
            tracking_number: tracking.map(Into::into),
            provider_shipment_id: id.map(Into::into),
            ..ShipmentRef::default()
        }
    }

    #[test]
    fn case_spaces_and_dashes_do_not_make_another_parcel() {
        let identity = Identity::default();
        let key = |tracking| {
            identity.shipment_key(
                Provider::Sendcloud,
                &parcel(Some("dhl"), Some(tracking), None),
            )
        };
        assert_eq!(key("JJD 0001-2345"), key("jjd00012345"));
        assert_eq!(key("jjd00012345"), "dhl:JJD00012345");
    }

    #[test]
    fn the_same_number_under_two_carriers_is_two_parcels_unless_grouped() {
        let apart = Identity::default();
        let ups = parcel(Some("ups"), Some("1Z999"), None);
        let dhl = parcel(Some("dhl"), Some("1Z999"), None);
        assert_ne!(
            apart.shipment_key(Provider::Shipup, &ups),
            apart.shipment_key(Provider::Shipup, &dhl)
        );
        let grouped = Identity::with_carrier_groups([["dhl", "ups"]]);
        assert_eq!(
            grouped.shipment_key(Provider::Shipup, &ups),
            grouped.shipment_key(Provider::Shipup, &dhl)
        );
    }

    #[test]
    fn without_a_carrier_or_a_number_the_provider_scopes_the_key() {
        let identity = Identity::default();
        assert_eq!(
            identity.shipment_key(Provider::Shipup, &parcel(None, Some("ab 1"), Some("9"))),
            "shipup:tracking:AB1"
        );
        assert_eq!(
            identity.shipment_key(Provider::Sendcloud, &parcel(Some("dhl"), None, Some("42"))),
            "sendcloud:id:42"
        );
        assert_eq!(
            identity.shipment_key(Provider::Sendcloud, &parcel(None, None, None)),
            "sendcloud:unidentified"
        );
    }

    #[test]
    fn one_provider_reporting_twice_is_two_scans_and_other_statuses_stay_apart() {
        use crate::doc_support::event;
        let first = event("a", "2024-04-02T09:00:00Z", Status::InTransit);
        let again = event("b", "2024-04-02T09:01:00Z", Status::InTransit);
        let mut other_status = event("c", "2024-04-02T09:01:00Z", Status::OutForDelivery);
        other_status.provider = Provider::Shipup;
        let mut too_late = event("d", "2024-04-02T09:06:30Z", Status::InTransit);
        too_late.provider = Provider::Shipup;
        // `too_late` is more than five minutes after `first`, and `again` is Sendcloud's own.
        let grouped = scans(&[first, again, other_status, too_late]);
        assert_eq!(grouped.len(), 4, "{grouped:?}");
    }
}
