//! Issue #13 item 1 (TTL): the ttl scenario passes on 150 seeds and its broken twin (coordinators
//! ignoring expiry on read) is caught on every one of 150 (1,000 of each measured; see the
//! scenarios' descriptions and README.md).

use ringkv_tests::assert_seeds_as_expected as sweep;

#[test]
fn ttl_passes_150_seeds() {
    sweep("ttl", 0..150);
}

#[test]
fn a_replica_ignoring_expiry_is_caught_on_150_seeds() {
    sweep("broken-ttl-ignore-expiry", 0..150);
}
