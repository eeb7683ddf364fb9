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
