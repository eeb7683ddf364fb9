//! Every Shipup fixture normalizes to its committed snapshot (the canonical JSON is the wire
//! contract); errors are snapshotted too.

#[test]
fn fixtures_normalize_to_their_snapshots() {
    let adapter = shipfeed_shipup::ShipupAdapter::new();
    let credentials = shipfeed_core::Credentials::Basic {
        username: "shipup".into(),
        password: shipfeed_core::Secret::new(shipfeed_testkit::FIXTURE_SECRET),
    };
    insta::glob!("../../../fixtures/shipup", "*/*.json", |path| {
        insta::assert_json_snapshot!(shipfeed_testkit::snapshot_value(
            &adapter,
            &credentials,
            path
        ));
    });
}

/// Unknown fields are contract drift; the documented ones the adapter does not read are not:
/// Shipup documents every field of its fixtures.
#[test]
fn only_undocumented_fields_of_the_fixtures_are_drift() {
    let adapter = shipfeed_shipup::ShipupAdapter::new();
    assert_eq!(
        shipfeed_testkit::unknown_fields(&adapter, "shipup"),
        [] as [&str; 0]
    );
}
