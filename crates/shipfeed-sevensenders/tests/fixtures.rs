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
