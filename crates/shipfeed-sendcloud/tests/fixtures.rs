//! Every Sendcloud fixture (generated, captured, invalid) normalizes to its committed snapshot.

use shipfeed_core::{Credentials, Secret};
use shipfeed_sendcloud::SendcloudAdapter;

#[test]
fn fixtures_normalize_to_their_snapshots() {
    let adapter = SendcloudAdapter::new();
    let credentials = Credentials::Hmac(Secret::new(shipfeed_testkit::FIXTURE_SECRET));
    insta::glob!("../../../fixtures/sendcloud", "*/*.json", |path| {
        insta::assert_json_snapshot!(shipfeed_testkit::snapshot_value(
            &adapter,
            &credentials,
            path
        ));
    });
}

/// Unknown fields are contract drift; the documented ones the adapter does not read are not:
/// Sendcloud documents every field of its fixtures.
#[test]
fn only_undocumented_fields_of_the_fixtures_are_drift() {
    let adapter = shipfeed_sendcloud::SendcloudAdapter::new();
    assert_eq!(
        shipfeed_testkit::unknown_fields(&adapter, "sendcloud"),
        [] as [&str; 0]
    );
}
