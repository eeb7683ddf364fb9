//! `ShippingEventEnum` → canonical status.

use shipfeed_core::{Mapping, Status};

/// Every documented `ShippingEventEnum` value and its mapping (sources and reasons in
/// `docs.md`). HappyColis documents the enum as partial, so anything else is unmapped.
pub(crate) const TABLE: &[(&str, Mapping)] = &[
    ("NEW", Mapping::status(Status::PreTransit)),
    ("INFO_RECEIVED", Mapping::status(Status::PreTransit)),
    ("PENDING", Mapping::status(Status::PreTransit)),
    ("IN_TRANSIT", Mapping::status(Status::InTransit)),
    ("OUT_FOR_DELIVERY", Mapping::status(Status::OutForDelivery)),
    ("ATTEMPT_FAIL", Mapping::status(Status::AttemptFailed)),
    (
        "AVAILABLE_FOR_PICKUP",
        Mapping::status(Status::AvailableForPickup),
    ),
    ("DELIVERED", Mapping::status(Status::Delivered)),
    ("DELIVERED_TO_SENDER", Mapping::status(Status::Returned)),
    ("EXCEPTION", Mapping::status(Status::Exception)),
    (
        "RETURNED_TO_SENDER",
        Mapping::status(Status::ReturnToSender),
    ),
    ("EXPIRED", Mapping::status(Status::Expired)),
];

/// Maps a `ShippingEventEnum` value, ignoring ASCII case and surrounding white space.
/// Unknown values give [`Mapping::unmapped`], never an error.
pub(crate) fn map_status(code: &str) -> Mapping {
    let code = code.trim();
    TABLE
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(code))
        .map_or(Mapping::unmapped(), |(_, mapping)| *mapping)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_value_maps_as_documented() {
        let expected = [
            ("NEW", Status::PreTransit),
            ("INFO_RECEIVED", Status::PreTransit),
            ("PENDING", Status::PreTransit),
            ("IN_TRANSIT", Status::InTransit),
            ("OUT_FOR_DELIVERY", Status::OutForDelivery),
            ("ATTEMPT_FAIL", Status::AttemptFailed),
            ("AVAILABLE_FOR_PICKUP", Status::AvailableForPickup),
            ("DELIVERED", Status::Delivered),
            ("DELIVERED_TO_SENDER", Status::Returned),
            ("EXCEPTION", Status::Exception),
            ("RETURNED_TO_SENDER", Status::ReturnToSender),
            ("EXPIRED", Status::Expired),
        ];
        assert_eq!(TABLE.len(), expected.len());
        for (code, status) in expected {
            assert_eq!(map_status(code), Mapping::status(status), "{code}");
        }
    }

    #[test]
    fn matching_ignores_case_and_padding() {
        assert_eq!(map_status("in_transit").status, Status::InTransit);
        assert_eq!(map_status(" Delivered_To_Sender ").status, Status::Returned);
    }

    #[test]
    fn substatuses_start_with_their_status() {
        for (code, mapping) in TABLE {
            if let Some(sub) = mapping.substatus {
                assert!(sub.starts_with(mapping.status.as_str()), "{code}: {sub}");
            }
        }
    }

    #[test]
    fn unknown_values_are_unmapped_not_guessed() {
        for code in ["CUSTOMS_HOLD", "", "IN TRANSIT", "DELIVERED2"] {
            assert_eq!(map_status(code), Mapping::unmapped(), "{code}");
        }
    }
}
