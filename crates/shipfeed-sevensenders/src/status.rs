//! Seven Senders status and event names → canonical status.
//!
//! Both tables are `const` data keyed by the folded name (trimmed, lower case, runs of white
//! space collapsed), so `"Out for Delivery"`, `"out for delivery"` and `" OUT  FOR DELIVERY "`
//! all hit the same row. `src/docs.md` carries the same tables with their sources.

use shipfeed_core::{Mapping, Status};

/// Shipment statuses (the message's `status` field). Partial list: anything else is
/// [`Mapping::unmapped`].
pub(crate) const STATUSES: &[(&str, Mapping)] = &[
    ("new", Mapping::status(Status::PreTransit)),
    ("info", Mapping::status(Status::PreTransit)),
    (
        "pickup",
        Mapping::sub(Status::InTransit, "in_transit.picked_up"),
    ),
    ("first scan at lmc", Mapping::status(Status::InTransit)),
    ("hub scan at lmc", Mapping::status(Status::InTransit)),
    ("in transit", Mapping::status(Status::InTransit)),
    ("out for delivery", Mapping::status(Status::OutForDelivery)),
    (
        "delivery attempt failed",
        Mapping::status(Status::AttemptFailed),
    ),
    (
        "delivered to pickup point",
        Mapping::status(Status::AvailableForPickup),
    ),
    ("delivered", Mapping::status(Status::Delivered)),
    ("postal return", Mapping::status(Status::ReturnToSender)),
];

/// Event (and deprecated ticket) names. `None` = a documented event that does not change the
/// shipment's status (Seven Senders sends the status change, if any, in `status`). Names not
/// listed are [`Mapping::unmapped`].
pub(crate) const EVENTS: &[(&str, Option<Mapping>)] = &[
    // Shipment events with a clear canonical meaning.
    (
        "delayed",
        Some(Mapping::sub(Status::Exception, "exception.delayed")),
    ),
    (
        "light damage",
        Some(Mapping::sub(Status::Exception, "exception.damaged")),
    ),
    (
        "contact carrier",
        Some(Mapping::sub(Status::Exception, "exception.contact_carrier")),
    ),
    ("delivered", Some(Mapping::status(Status::Delivered))),
    // Documented shipment events that change no status.
    ("7s hub scan", None),
    ("carded", None),
    ("carrier changed", None),
    ("hub scan", None),
    ("first hub scan", None),
    ("delivery requested at the carrier's", None),
    // Order events: about the order, not the parcel.
    ("order cancelled", None),
    ("order completed", None),
    ("order created", None),
    ("order delayed", None),
    ("order is being prepared", None),
    ("order paid", None),
    ("order shipped", None),
    ("ordered items are being produced", None),
];

/// Trims, lower-cases and collapses white space, so table keys match any capitalisation.
pub(crate) fn fold(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !folded.is_empty() {
            folded.push(' ');
        }
        if word.is_ascii() {
            folded.extend(word.chars().map(|c| c.to_ascii_lowercase()));
        } else {
            folded.push_str(&word.to_lowercase());
        }
    }
    folded
}

/// The mapping of a shipment status; `None` when the status is blank (an event without a
/// status change). Unknown statuses are [`Mapping::unmapped`], never an error.
pub(crate) fn map_status(raw: &str) -> Option<Mapping> {
    let key = fold(raw);
    if key.is_empty() {
        return None;
    }
    Some(
        STATUSES
            .iter()
            .find(|(name, _)| *name == key)
            .map_or_else(Mapping::unmapped, |(_, mapping)| *mapping),
    )
}

/// The mapping of an event or ticket name; `None` when the name is blank or the event is
/// documented as not changing the status. Unknown names are [`Mapping::unmapped`].
pub(crate) fn map_event(raw: &str) -> Option<Mapping> {
    let key = fold(raw);
    if key.is_empty() {
        return None;
    }
    match EVENTS.iter().find(|(name, _)| *name == key) {
        Some((_, mapping)) => *mapping,
        None => Some(Mapping::unmapped()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn status(raw: &str) -> (Status, Option<&'static str>) {
        let m = map_status(raw).unwrap();
        (m.status, m.substatus)
    }

    #[test]
    fn every_documented_status_maps_in_any_case() {
        // Spellings as they appear in the sources (note the differing capitalisation).
        let documented: &[(&str, Status, Option<&str>)] = &[
            ("New", Status::PreTransit, None),
            ("Info", Status::PreTransit, None),
            ("Pickup", Status::InTransit, Some("in_transit.picked_up")),
            ("First scan at LMC", Status::InTransit, None),
            ("First Scan at LMC", Status::InTransit, None),
            ("Hub scan at LMC", Status::InTransit, None),
            ("Hub Scan at LMC", Status::InTransit, None),
            ("In transit", Status::InTransit, None),
            ("Out for delivery", Status::OutForDelivery, None),
            ("Out for Delivery", Status::OutForDelivery, None),
            ("Delivery attempt failed", Status::AttemptFailed, None),
            (
                "Delivered to pickup point",
                Status::AvailableForPickup,
                None,
            ),
            ("Delivered", Status::Delivered, None),
            ("Postal return", Status::ReturnToSender, None),
        ];
        for (raw, want, sub) in documented {
            assert_eq!(status(raw), (*want, *sub), "{raw}");
            assert_eq!(status(&raw.to_uppercase()), (*want, *sub), "{raw} upper");
            assert_eq!(status(&raw.to_lowercase()), (*want, *sub), "{raw} lower");
            assert_eq!(
                status(&format!("  {}  ", raw.replace(' ', "  "))),
                (*want, *sub)
            );
        }
    }

    #[test]
    fn every_table_row_is_reachable_and_substatuses_start_with_their_status() {
        for (key, mapping) in STATUSES {
            assert_eq!(fold(key), *key, "table keys are folded");
            assert_eq!(map_status(key), Some(*mapping));
            if let Some(sub) = mapping.substatus {
                assert!(sub.starts_with(mapping.status.as_str()), "{sub}");
            }
        }
        for (key, mapping) in EVENTS {
            assert_eq!(fold(key), *key, "table keys are folded");
            assert_eq!(map_event(key), *mapping);
            if let Some(Mapping {
                status,
                substatus: Some(sub),
            }) = mapping
            {
                assert!(sub.starts_with(status.as_str()), "{sub}");
            }
        }
    }

    #[test]
    fn blank_status_is_no_status_change_and_unknown_is_unmapped() {
        assert_eq!(map_status(""), None);
        assert_eq!(map_status("   "), None);
        assert_eq!(map_status("Teleported"), Some(Mapping::unmapped()));
        assert_eq!(
            map_status("Non-trackable shipment created"),
            Some(Mapping::unmapped())
        );
    }

    #[test]
    fn documented_events_map_or_change_nothing() {
        assert_eq!(
            map_event("Delayed"),
            Some(Mapping::sub(Status::Exception, "exception.delayed"))
        );
        assert_eq!(
            map_event("DELIVERED"),
            Some(Mapping::status(Status::Delivered))
        );
        assert_eq!(
            map_event("Light damage"),
            Some(Mapping::sub(Status::Exception, "exception.damaged"))
        );
        assert_eq!(
            map_event("Contact Carrier"),
            Some(Mapping::sub(Status::Exception, "exception.contact_carrier"))
        );
        for neutral in [
            "7S hub scan",
            "Carded",
            "Carrier changed",
            "First hub scan",
            "Order Paid",
        ] {
            assert_eq!(map_event(neutral), None, "{neutral}");
        }
        assert_eq!(map_event(""), None);
        assert_eq!(map_event("Parcel eaten by dog"), Some(Mapping::unmapped()));
    }
}
