//! Sendcloud parcel status → canonical status.
//!
//! One table, matched on the numeric id first, then on the v3 `code`, then on the message
//! (case-insensitive, trailing period ignored). Sources are in `docs.md`.

use shipfeed_core::{Mapping, Status};

/// One Sendcloud parcel status: its id, its v3 code, the messages it is known under, and the
/// canonical mapping.
pub(crate) struct Entry {
    pub(crate) id: u32,
    pub(crate) code: &'static str,
    pub(crate) messages: &'static [&'static str],
    pub(crate) mapping: Mapping,
}

const fn entry(
    id: u32,
    code: &'static str,
    messages: &'static [&'static str],
    mapping: Mapping,
) -> Entry {
    Entry {
        id,
        code,
        messages,
        mapping,
    }
}

use Status::*;

/// Every status id of the published lists (FACTS.md §1.5) with its v3 code.
pub(crate) const TABLE: &[Entry] = &[
    entry(1, "ANNOUNCED", &["Announced"], Mapping::status(PreTransit)),
    entry(3, "TO_SORTING", &["En route to sorting center"], Mapping::status(InTransit)),
    entry(4, "DELAYED", &["Delivery delayed"], Mapping::sub(Exception, "exception.delayed")),
    entry(5, "SORTED", &["Sorted"], Mapping::status(InTransit)),
    entry(6, "UNSORTED", &["Not sorted"], Mapping::sub(Exception, "exception.missorted")),
    entry(7, "SORTING", &["Being sorted"], Mapping::status(InTransit)),
    entry(8, "DELIVERY_FAILED", &["Delivery attempt failed"], Mapping::status(AttemptFailed)),
    entry(11, "DELIVERED", &["Delivered"], Mapping::status(Delivered)),
    entry(12, "AWAITING_CUSTOMER_PICKUP", &["Awaiting customer pickup"], Mapping::status(AvailableForPickup)),
    entry(13, "ANNOUNCED_UNCOLLECTED", &["Announced: not collected"], Mapping::sub(PreTransit, "pre_transit.not_collected")),
    entry(15, "COLLECT_ERROR", &["Error collecting"], Mapping::sub(Exception, "exception.collection_failed")),
    entry(22, "PICKED_UP_BY_DRIVER", &["Shipment picked up by driver"], Mapping::sub(InTransit, "in_transit.picked_up")),
    entry(80, "UNDELIVERABLE", &["Unable to deliver"], Mapping::sub(Failure, "failure.undeliverable")),
    entry(91, "SHIPMENT_ON_ROUTE", &["Parcel en route"], Mapping::status(InTransit)),
    entry(92, "DRIVER_ON_ROUTE", &["Driver en route"], Mapping::status(OutForDelivery)),
    entry(93, "COLLECTED_BY_CUSTOMER", &["Shipment collected by customer"], Mapping::sub(Delivered, "delivered.collected_by_recipient")),
    entry(94, "CANCELLATION_FAILED", &["Parcel cancellation failed"], Mapping::sub(Exception, "exception.cancellation_failed")),
    entry(999, "NO_LABEL", &["No label"], Mapping::status(PreTransit)),
    entry(1000, "READY_TO_SEND", &["Ready to send"], Mapping::status(PreTransit)),
    entry(1001, "ANNOUNCING", &["Being announced"], Mapping::status(PreTransit)),
    entry(1002, "ANNOUNCEMENT_FAILED", &["Announcement failed"], Mapping::sub(Exception, "exception.announcement_failed")),
    entry(1337, "UNKNOWN", &["Unknown status - check carrier track & trace page for more insights"], Mapping::status(Unknown)),
    entry(1998, "CANCELLED_UPSTREAM", &["Cancelled upstream"], Mapping::status(Cancelled)),
    entry(1999, "CANCELLING", &["Cancellation requested"], Mapping::sub(PreTransit, "pre_transit.cancellation_requested")),
    entry(2000, "CANCELLED", &["Cancelled"], Mapping::status(Cancelled)),
    entry(2001, "CANCELLING_UPSTREAM", &["Submitting cancellation request"], Mapping::sub(PreTransit, "pre_transit.cancellation_requested")),
    entry(62989, "AT_CUSTOMS", &["At customs", "The package has been held at customs"], Mapping::sub(InTransit, "in_transit.at_customs")),
    entry(62990, "AT_SORTING_CENTRE", &["At sorting centre", "The package is in the sorting centre"], Mapping::status(InTransit)),
    entry(62991, "REFUSED_BY_RECIPIENT", &["Refused by recipient", "The package was refused by the recipient when delivered"], Mapping::sub(ReturnToSender, "return_to_sender.refused")),
    entry(62992, "RETURNED_TO_SENDER", &["Returned to sender", "The package was returned to the sender due to an issue"], Mapping::status(ReturnToSender)),
    entry(62993, "DELIVERY_METHOD_CHANGED", &["Delivery method changed", "The delivery method was changed by the request of the recipient or due to other circumstances"], Mapping::sub(InTransit, "in_transit.rerouted")),
    entry(62994, "DELIVERY_DATE_CHANGED", &["Delivery date changed", "The delivery date was changed by the request of the recipient or due to other"], Mapping::sub(InTransit, "in_transit.rescheduled")),
    entry(62995, "DELIVERY_ADDRESS_CHANGED", &["Delivery address changed", "The delivery address was changed by the request of the recipient or due to other circumstances"], Mapping::sub(InTransit, "in_transit.rerouted")),
    entry(62996, "EXCEPTION", &["Exception", "For unusual cases: lost, damaged, destroyed, etc"], Mapping::status(Exception)),
    entry(62997, "ADDRESS_INVALID", &["Address invalid", "The address is incorrect and the carrier needs address correction from the sender or the recipient"], Mapping::sub(Exception, "exception.address_invalid")),
];

fn same_message(a: &str, b: &str) -> bool {
    fn trim(s: &str) -> &str {
        s.trim().trim_end_matches('.').trim_end()
    }
    trim(a).eq_ignore_ascii_case(trim(b))
}

/// The table entry for a status, matched on id, then v3 code, then message.
pub(crate) fn lookup(
    id: Option<u64>,
    code: Option<&str>,
    message: Option<&str>,
) -> Option<&'static Entry> {
    id.and_then(|id| TABLE.iter().find(|e| u64::from(e.id) == id))
        .or_else(|| {
            let code = code?.trim();
            TABLE.iter().find(|e| e.code.eq_ignore_ascii_case(code))
        })
        .or_else(|| {
            let message = message?;
            TABLE
                .iter()
                .find(|e| e.messages.iter().any(|m| same_message(m, message)))
        })
}

/// The canonical mapping of a parcel status; unmapped when nothing matches.
pub(crate) fn map_status(id: Option<u64>, code: Option<&str>, message: Option<&str>) -> Mapping {
    lookup(id, code, message).map_or(Mapping::unmapped(), |e| e.mapping)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_id(id: u64) -> Mapping {
        map_status(Some(id), None, None)
    }

    #[test]
    fn every_published_id_is_mapped_as_canonical_recommends() {
        let expected: &[(u64, Status, Option<&str>)] = &[
            (1, PreTransit, None),
            (3, InTransit, None),
            (4, Exception, Some("exception.delayed")),
            (5, InTransit, None),
            (6, Exception, Some("exception.missorted")),
            (7, InTransit, None),
            (8, AttemptFailed, None),
            (11, Delivered, None),
            (12, AvailableForPickup, None),
            (13, PreTransit, Some("pre_transit.not_collected")),
            (15, Exception, Some("exception.collection_failed")),
            (22, InTransit, Some("in_transit.picked_up")),
            (80, Failure, Some("failure.undeliverable")),
            (91, InTransit, None),
            (92, OutForDelivery, None),
            (93, Delivered, Some("delivered.collected_by_recipient")),
            (94, Exception, Some("exception.cancellation_failed")),
            (999, PreTransit, None),
            (1000, PreTransit, None),
            (1001, PreTransit, None),
            (1002, Exception, Some("exception.announcement_failed")),
            (1337, Unknown, None),
            (1998, Cancelled, None),
            (1999, PreTransit, Some("pre_transit.cancellation_requested")),
            (2000, Cancelled, None),
            (2001, PreTransit, Some("pre_transit.cancellation_requested")),
            (62989, InTransit, Some("in_transit.at_customs")),
            (62990, InTransit, None),
            (62991, ReturnToSender, Some("return_to_sender.refused")),
            (62992, ReturnToSender, None),
            (62993, InTransit, Some("in_transit.rerouted")),
            (62994, InTransit, Some("in_transit.rescheduled")),
            (62995, InTransit, Some("in_transit.rerouted")),
            (62996, Exception, None),
            (62997, Exception, Some("exception.address_invalid")),
        ];
        assert_eq!(expected.len(), TABLE.len());
        for &(id, status, substatus) in expected {
            assert_eq!(by_id(id), Mapping { status, substatus }, "id {id}");
        }
    }

    #[test]
    fn every_v3_code_maps_like_its_id() {
        assert_eq!(TABLE.len(), 35);
        for e in TABLE {
            assert_eq!(
                map_status(None, Some(e.code), None),
                e.mapping,
                "{}",
                e.code
            );
            assert_eq!(
                map_status(None, Some(&e.code.to_lowercase()), None),
                e.mapping
            );
        }
    }

    #[test]
    fn messages_match_case_insensitively_and_without_trailing_period() {
        assert_eq!(
            map_status(Some(0), None, Some("ready to send")),
            by_id(1000)
        );
        assert_eq!(map_status(None, None, Some("At Customs")), by_id(62989));
        assert_eq!(
            map_status(None, None, Some("Parcel cancellation failed.")),
            by_id(94)
        );
        assert_eq!(
            map_status(None, None, Some("The package is in the sorting centre")),
            by_id(62990)
        );
    }

    #[test]
    fn id_wins_over_code_and_message() {
        assert_eq!(
            map_status(Some(11), Some("SORTED"), Some("Announced")),
            by_id(11)
        );
    }

    #[test]
    fn unknown_values_are_unmapped_not_guessed() {
        assert_eq!(
            map_status(Some(4242), None, Some("Teleported")),
            Mapping::unmapped()
        );
        assert_eq!(map_status(None, None, None), Mapping::unmapped());
    }
}

/// Event Subscriptions (`parcels.event.created`): `exception` refines or overrides `phase`.
/// Enums from the v3 event-subscriptions OpenAPI (FACTS.md §1.1); anything else is unmapped.
pub(crate) fn map_subscription_event(
    phase: Option<&str>,
    exception: Option<&str>,
    is_returned: bool,
) -> Mapping {
    let exception = exception.map(str::to_ascii_lowercase);
    if let Some(mapping) = exception.as_deref().and_then(map_exception) {
        return mapping;
    }
    if is_returned {
        return Mapping::status(ReturnToSender);
    }
    let Some(phase) = phase.map(str::to_ascii_lowercase) else {
        return Mapping::unmapped();
    };
    match phase.as_str() {
        "no_label" | "labelled" | "ready_to_send" | "announcing" | "announced" | "accepted" => {
            Mapping::status(PreTransit)
        }
        "dropped" => Mapping::sub(InTransit, "in_transit.dropped_off"),
        "sorted" | "in_transit" => Mapping::status(InTransit),
        "customs" => Mapping::sub(InTransit, "in_transit.at_customs"),
        "in_delivery" => Mapping::status(OutForDelivery),
        "attempted" => Mapping::status(AttemptFailed),
        "pup" => Mapping::status(AvailableForPickup),
        "delivered" => Mapping::status(Delivered),
        "delivery_forced" => Mapping::sub(Delivered, "delivered.forced"),
        "cancelled" => Mapping::status(Cancelled),
        "unknown" | "none" => Mapping::status(Unknown),
        _ => Mapping::unmapped(),
    }
}

/// `None` for `none` and absent exceptions: the phase decides.
fn map_exception(exception: &str) -> Option<Mapping> {
    Some(match exception {
        "none" | "" => return None,
        "address_error" => Mapping::sub(Exception, "exception.address_invalid"),
        "announcement_failed" => Mapping::sub(Exception, "exception.announcement_failed"),
        "cancellation_failed" => Mapping::sub(Exception, "exception.cancellation_failed"),
        "cancelled" | "cancelled_upstream" => Mapping::status(Cancelled),
        "cancelling" | "cancelling_upstream" => {
            Mapping::sub(PreTransit, "pre_transit.cancellation_requested")
        }
        "changed" => Mapping::sub(InTransit, "in_transit.rescheduled"),
        "relabelled" => Mapping::sub(InTransit, "in_transit.relabelled"),
        "claim" | "claimable" => Mapping::sub(Exception, "exception.claim"),
        "customer_rejected" | "refused" => Mapping::sub(ReturnToSender, "return_to_sender.refused"),
        "returned_sender" => Mapping::status(ReturnToSender),
        "customer_support" => Mapping::sub(Exception, "exception.customer_support"),
        "customs_issue" => Mapping::sub(Exception, "exception.customs"),
        "damaged" => Mapping::sub(Exception, "exception.damaged"),
        "delay_unknown" | "delivery_delay" | "handover_delay" | "sorting_delay" => {
            Mapping::sub(Exception, "exception.delayed")
        }
        "dropoff_expiration" => Mapping::sub(Exception, "exception.dropoff_expired"),
        "pup_expiration" => Mapping::sub(Exception, "exception.pickup_expired"),
        "hold" => Mapping::sub(Exception, "exception.held"),
        "missing" => Mapping::sub(Exception, "exception.missing"),
        "non_conformity" => Mapping::sub(Exception, "exception.non_conformity"),
        "off_radar" => Mapping::sub(Exception, "exception.no_updates"),
        "unknown" => Mapping::status(Exception),
        _ => Mapping::unmapped(),
    })
}

#[cfg(test)]
mod subscription_tests {
    use super::*;

    #[test]
    fn every_documented_phase_is_mapped() {
        let phases = [
            "accepted",
            "announced",
            "announcing",
            "attempted",
            "cancelled",
            "customs",
            "delivered",
            "delivery_forced",
            "dropped",
            "in_delivery",
            "in_transit",
            "labelled",
            "none",
            "no_label",
            "pup",
            "ready_to_send",
            "sorted",
            "unknown",
        ];
        for phase in phases {
            let m = map_subscription_event(Some(phase), Some("none"), false);
            assert_ne!(m, Mapping::unmapped(), "{phase}");
        }
        assert_eq!(
            map_subscription_event(Some("in_delivery"), None, false).status,
            OutForDelivery
        );
        assert_eq!(
            map_subscription_event(Some("teleported"), None, false),
            Mapping::unmapped()
        );
    }

    #[test]
    fn every_documented_exception_is_mapped_and_overrides_the_phase() {
        let exceptions = [
            "address_error",
            "announcement_failed",
            "cancellation_failed",
            "cancelled",
            "cancelled_upstream",
            "cancelling",
            "cancelling_upstream",
            "changed",
            "claim",
            "claimable",
            "customer_rejected",
            "customer_support",
            "customs_issue",
            "damaged",
            "delay_unknown",
            "delivery_delay",
            "dropoff_expiration",
            "handover_delay",
            "hold",
            "missing",
            "non_conformity",
            "off_radar",
            "pup_expiration",
            "refused",
            "relabelled",
            "returned_sender",
            "sorting_delay",
            "unknown",
        ];
        for exception in exceptions {
            let m = map_subscription_event(Some("in_transit"), Some(exception), false);
            assert_ne!(m, Mapping::unmapped(), "{exception}");
            assert_ne!(m, Mapping::status(InTransit), "{exception}");
        }
        assert_eq!(
            map_subscription_event(Some("in_transit"), Some("delivery_delay"), false).substatus,
            Some("exception.delayed")
        );
        assert_eq!(
            map_subscription_event(Some("in_transit"), None, true).status,
            ReturnToSender
        );
    }
}
