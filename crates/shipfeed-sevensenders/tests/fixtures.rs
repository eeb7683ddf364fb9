//! Every fixture under `fixtures/sevensenders/` normalizes to its committed snapshot.

#[test]
fn fixtures_normalize_to_their_snapshots() {
    let adapter = shipfeed_sevensenders::SevenSendersAdapter::new(chrono_tz::UTC);
    insta::glob!("../../../fixtures/sevensenders", "*/*.json", |path| {
        insta::assert_json_snapshot!(shipfeed_testkit::snapshot_value(
            &adapter,
            &shipfeed_core::Credentials::None,
            path
        ));
    });
}

/// Unknown fields are contract drift; the documented ones the adapter does not read are not:
/// the one fixture with extra fields shows them, and nothing else does.
#[test]
fn only_undocumented_fields_of_the_fixtures_are_drift() {
    let adapter = shipfeed_sevensenders::SevenSendersAdapter::new(chrono_tz::UTC);
    assert_eq!(
        shipfeed_testkit::unknown_fields(&adapter, "sevensenders"),
        ["future_field", "shop_id"]
    );
}
