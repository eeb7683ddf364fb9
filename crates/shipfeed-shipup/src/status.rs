//! Shipup codes → canonical [`Mapping`]s: three `const` tables and their lookups.
//!
//! The tables are written out, with sources and reasons, in the crate's `docs.md`.

use shipfeed_core::{Mapping, Status};

/// `event.event_type_code`, the complete documented list (/reference/event-type-codes).
pub(crate) const EVENT_TYPE_CODES: &[(&str, Mapping)] = &[
    ("label_created", Mapping::status(Status::PreTransit)),
    (
        "origin_scan",
        Mapping::sub(Status::InTransit, "in_transit.picked_up"),
    ),
    ("transit", Mapping::status(Status::InTransit)),
    ("incident", Mapping::status(Status::Exception)),
    ("out_for_delivery", Mapping::status(Status::OutForDelivery)),
    ("failed_attempt", Mapping::status(Status::AttemptFailed)),
    ("pickup_point", Mapping::status(Status::AvailableForPickup)),
    ("delivered", Mapping::status(Status::Delivered)),
    ("return", Mapping::status(Status::ReturnToSender)),
    // Return accounts only: the shopper handed the return parcel in.
    (
        "drop_off",
        Mapping::sub(Status::InTransit, "in_transit.dropped_off"),
    ),
    ("expired", Mapping::status(Status::Expired)),
];

/// `tracker.delivery_status_code` (/reference/delivery-statuses).
pub(crate) const DELIVERY_STATUS_CODES: &[(&str, Mapping)] = &[
    // No event yet: the shipment is announced, nothing more.
    ("pending", Mapping::status(Status::PreTransit)),
    ("info_received", Mapping::status(Status::PreTransit)),
    ("in_transit", Mapping::status(Status::InTransit)),
    ("failed_attempt", Mapping::status(Status::AttemptFailed)),
    ("exception", Mapping::status(Status::Exception)),
    // Still moving but past the expected delivery date.
    (
        "delayed",
        Mapping::sub(Status::Exception, "exception.delayed"),
    ),
    ("pickup", Mapping::status(Status::AvailableForPickup)),
    ("delivered", Mapping::status(Status::Delivered)),
    ("return", Mapping::status(Status::ReturnToSender)),
    ("expired", Mapping::status(Status::Expired)),
];

/// `standard_event_slug` / `standard_event.slug` (/reference/standard-slug-codes). Shipup's
/// list is published only in part (its `transit` group); slugs whose meaning is not clear from
/// the name are left out on purpose and map to `unknown.unmapped`.
pub(crate) const STANDARD_EVENT_SLUGS: &[(&str, Mapping)] = &[
    ("in_transit", Mapping::status(Status::InTransit)),
    (
        "package_arrived_at_depot_open",
        Mapping::sub(Status::InTransit, "in_transit.at_depot"),
    ),
    (
        "cross_border",
        Mapping::sub(Status::InTransit, "in_transit.cross_border"),
    ),
    (
        "left_the_origin_country",
        Mapping::sub(Status::InTransit, "in_transit.left_origin_country"),
    ),
    (
        "at_customs",
        Mapping::sub(Status::InTransit, "in_transit.at_customs"),
    ),
    (
        "delivery_scheduled",
        Mapping::sub(Status::InTransit, "in_transit.delivery_scheduled"),
    ),
    (
        "delivery_scheduled_by_recipient",
        Mapping::sub(Status::InTransit, "in_transit.rescheduled"),
    ),
    (
        "scheduled_delivery_postponed_by_client",
        Mapping::sub(Status::InTransit, "in_transit.rescheduled"),
    ),
    (
        "package_sent_to_the_chosen_pickup_point",
        Mapping::sub(Status::InTransit, "in_transit.to_pickup_point"),
    ),
    (
        "package_sent_to_pickup_point_because_of_delivery_area",
        Mapping::sub(Status::InTransit, "in_transit.rerouted"),
    ),
    (
        "possible_delay",
        Mapping::sub(Status::Exception, "exception.delayed"),
    ),
    (
        "delay_due_to_missing_document",
        Mapping::sub(Status::Exception, "exception.missing_documents"),
    ),
    (
        "awaiting_information_on_address",
        Mapping::sub(Status::Exception, "exception.address_invalid"),
    ),
    (
        "unable_to_contact_recipient",
        Mapping::sub(Status::Exception, "exception.recipient_unreachable"),
    ),
    (
        "contact_carrier_to_schedule_delivery",
        Mapping::sub(Status::Exception, "exception.recipient_action_required"),
    ),
    (
        "awaiting_information_from_shipper",
        Mapping::sub(Status::Exception, "exception.shipper_action_required"),
    ),
    (
        "package_arrived_at_depot_items_missing",
        Mapping::sub(Status::Exception, "exception.items_missing"),
    ),
    (
        "package_staying_at_depot_merchant_behest",
        Mapping::sub(Status::Exception, "exception.held"),
    ),
    (
        "package_staying_at_depot_client_behest",
        Mapping::sub(Status::Exception, "exception.held"),
    ),
    (
        "held_for_future_delivery",
        Mapping::sub(Status::Exception, "exception.held"),
    ),
];

/// Slugs Shipup lists whose meaning is too vague to map: they stay `unknown.unmapped`.
#[cfg(test)]
pub(crate) const UNMAPPED_SLUGS: &[&str] = &["other"];

fn lookup(table: &[(&str, Mapping)], code: &str) -> Option<Mapping> {
    let code = code.trim();
    table
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(code))
        .map(|(_, mapping)| *mapping)
}

/// The mapping of an `event_type_code`, `None` when the code is not documented.
pub(crate) fn map_event_type_code(code: &str) -> Option<Mapping> {
    lookup(EVENT_TYPE_CODES, code)
}

/// The mapping of a tracker's `delivery_status_code`, `None` when the code is not documented.
pub(crate) fn map_delivery_status_code(code: &str) -> Option<Mapping> {
    lookup(DELIVERY_STATUS_CODES, code)
}

/// The mapping of a standard event slug. A slug spelled like an event type code (the
/// documentation's Origin scan event has slug `origin_scan`) maps as that code.
pub(crate) fn map_standard_event_slug(slug: &str) -> Option<Mapping> {
    lookup(STANDARD_EVENT_SLUGS, slug).or_else(|| map_event_type_code(slug))
}

/// How one event's status was decided: the mapping and the raw code it came from.
pub(crate) fn map_event<'c>(
    event_type_code: Option<&'c str>,
    slug: Option<&'c str>,
) -> (Mapping, Option<&'c str>) {
    match (event_type_code, slug) {
        // A present code is authoritative, even when unknown, so that the unknown code is
        // counted (and later mapped) instead of hidden behind the slug.
        (Some(code), _) => (
            map_event_type_code(code).unwrap_or(Mapping::unmapped()),
            Some(code),
        ),
        (None, Some(slug)) => (
            map_standard_event_slug(slug).unwrap_or(Mapping::unmapped()),
            Some(slug),
        ),
        (None, None) => (Mapping::unmapped(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipfeed_core::UNMAPPED;

    fn sub(m: Mapping) -> (Status, Option<&'static str>) {
        (m.status, m.substatus)
    }

    #[test]
    fn every_event_type_code() {
        use Status::*;
        let expected = [
            ("label_created", (PreTransit, None)),
            ("origin_scan", (InTransit, Some("in_transit.picked_up"))),
            ("transit", (InTransit, None)),
            ("incident", (Exception, None)),
            ("out_for_delivery", (OutForDelivery, None)),
            ("failed_attempt", (AttemptFailed, None)),
            ("pickup_point", (AvailableForPickup, None)),
            ("delivered", (Delivered, None)),
            ("return", (ReturnToSender, None)),
            ("drop_off", (InTransit, Some("in_transit.dropped_off"))),
            ("expired", (Expired, None)),
        ];
        assert_eq!(expected.len(), EVENT_TYPE_CODES.len());
        for (code, want) in expected {
            assert_eq!(map_event_type_code(code).map(sub), Some(want), "{code}");
        }
    }

    #[test]
    fn every_delivery_status_code() {
        use Status::*;
        let expected = [
            ("pending", (PreTransit, None)),
            ("info_received", (PreTransit, None)),
            ("in_transit", (InTransit, None)),
            ("failed_attempt", (AttemptFailed, None)),
            ("exception", (Exception, None)),
            ("delayed", (Exception, Some("exception.delayed"))),
            ("pickup", (AvailableForPickup, None)),
            ("delivered", (Delivered, None)),
            ("return", (ReturnToSender, None)),
            ("expired", (Expired, None)),
        ];
        assert_eq!(expected.len(), DELIVERY_STATUS_CODES.len());
        for (code, want) in expected {
            assert_eq!(
                map_delivery_status_code(code).map(sub),
                Some(want),
                "{code}"
            );
        }
    }

    #[test]
    fn every_standard_event_slug() {
        use Status::*;
        let expected = [
            ("in_transit", (InTransit, None)),
            (
                "package_arrived_at_depot_open",
                (InTransit, Some("in_transit.at_depot")),
            ),
            ("cross_border", (InTransit, Some("in_transit.cross_border"))),
            (
                "left_the_origin_country",
                (InTransit, Some("in_transit.left_origin_country")),
            ),
            ("at_customs", (InTransit, Some("in_transit.at_customs"))),
            (
                "delivery_scheduled",
                (InTransit, Some("in_transit.delivery_scheduled")),
            ),
            (
                "delivery_scheduled_by_recipient",
                (InTransit, Some("in_transit.rescheduled")),
            ),
            (
                "scheduled_delivery_postponed_by_client",
                (InTransit, Some("in_transit.rescheduled")),
            ),
            (
                "package_sent_to_the_chosen_pickup_point",
                (InTransit, Some("in_transit.to_pickup_point")),
            ),
            (
                "package_sent_to_pickup_point_because_of_delivery_area",
                (InTransit, Some("in_transit.rerouted")),
            ),
            ("possible_delay", (Exception, Some("exception.delayed"))),
            (
                "delay_due_to_missing_document",
                (Exception, Some("exception.missing_documents")),
            ),
            (
                "awaiting_information_on_address",
                (Exception, Some("exception.address_invalid")),
            ),
            (
                "unable_to_contact_recipient",
                (Exception, Some("exception.recipient_unreachable")),
            ),
            (
                "contact_carrier_to_schedule_delivery",
                (Exception, Some("exception.recipient_action_required")),
            ),
            (
                "awaiting_information_from_shipper",
                (Exception, Some("exception.shipper_action_required")),
            ),
            (
                "package_arrived_at_depot_items_missing",
                (Exception, Some("exception.items_missing")),
            ),
            (
                "package_staying_at_depot_merchant_behest",
                (Exception, Some("exception.held")),
            ),
            (
                "package_staying_at_depot_client_behest",
                (Exception, Some("exception.held")),
            ),
            (
                "held_for_future_delivery",
                (Exception, Some("exception.held")),
            ),
        ];
        assert_eq!(expected.len(), STANDARD_EVENT_SLUGS.len());
        for (slug, want) in expected {
            assert_eq!(map_standard_event_slug(slug).map(sub), Some(want), "{slug}");
        }
        for slug in UNMAPPED_SLUGS {
            assert_eq!(map_standard_event_slug(slug), None, "{slug}");
        }
        // Spelled like an event type code.
        assert_eq!(
            map_standard_event_slug("origin_scan").map(sub),
            Some((InTransit, Some("in_transit.picked_up")))
        );
    }

    #[test]
    fn substatuses_start_with_their_status() {
        for (code, m) in EVENT_TYPE_CODES
            .iter()
            .chain(DELIVERY_STATUS_CODES)
            .chain(STANDARD_EVENT_SLUGS)
        {
            if let Some(sub) = m.substatus {
                assert!(
                    sub.starts_with(&format!("{}.", m.status.as_str())),
                    "{code}: {sub}"
                );
            }
        }
    }

    #[test]
    fn lookups_ignore_case_and_padding() {
        assert_eq!(
            map_event_type_code(" Delivered ").map(|m| m.status),
            Some(Status::Delivered)
        );
        assert_eq!(
            map_delivery_status_code("PICKUP").map(|m| m.status),
            Some(Status::AvailableForPickup)
        );
    }

    #[test]
    fn event_code_wins_then_slug_then_unmapped() {
        let (m, code) = map_event(Some("transit"), Some("at_customs"));
        assert_eq!((m.status, code), (Status::InTransit, Some("transit")));
        assert_eq!(m.substatus, None);

        let (m, code) = map_event(None, Some("at_customs"));
        assert_eq!(
            (m.substatus, code),
            (Some("in_transit.at_customs"), Some("at_customs"))
        );

        // An unknown code is kept and counted, not hidden behind a known slug.
        let (m, code) = map_event(Some("teleported"), Some("at_customs"));
        assert_eq!(
            (m.status, m.substatus, code),
            (Status::Unknown, Some(UNMAPPED), Some("teleported"))
        );

        let (m, code) = map_event(None, Some("other"));
        assert_eq!((m.substatus, code), (Some(UNMAPPED), Some("other")));

        let (m, code) = map_event(None, None);
        assert_eq!((m, code), (Mapping::unmapped(), None));
    }
}
