//! Every HappyColis fixture (generated, captured, invalid) normalized and snapshotted as the
//! canonical JSON, errors included.

#[test]
fn fixtures_normalize_to_their_snapshots() {
    let adapter = shipfeed_happycolis::HappyColisAdapter::new();
    let credentials = shipfeed_core::Credentials::Hmac(shipfeed_core::Secret::new(
        shipfeed_testkit::FIXTURE_SECRET,
    ));
    insta::glob!("../../../fixtures/happycolis", "*/*.json", |path| {
        insta::assert_json_snapshot!(shipfeed_testkit::snapshot_value(
            &adapter,
            &credentials,
            path
        ));
    });
}

/// Unknown fields are contract drift; the documented ones the adapter does not read are not:
/// the fixture with extra fields shows them, and nothing else does.
#[test]
fn only_undocumented_fields_of_the_fixtures_are_drift() {
    let adapter = shipfeed_happycolis::HappyColisAdapter::new();
    assert_eq!(
        shipfeed_testkit::unknown_fields(&adapter, "happycolis"),
        ["body.carrierMeta", "body.events[].source", "header.version"]
    );
}
