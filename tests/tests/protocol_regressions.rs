//! The scenarios of issue #11, items 2 to 5 (each failed on most seeds before its fix; see the
//! scenario descriptions and the commit history): kept in CI on 100 seeds each.

use ringkv_tests::{describe, unexpected_seeds};
use sim::RunOptions;

fn passes(name: &str) {
    let bad = unexpected_seeds(name, 0..100, RunOptions::default());
    assert!(bad.is_empty(), "{name}:\n{}", describe(&bad));
}

#[test]
fn late_replies_to_a_previous_incarnation_never_answer_another_key() {
    passes("linearizable-coordinator-restarts");
}

#[test]
fn aged_hints_are_kept_until_their_owner_holds_them() {
    passes("sloppy-hint-expiry");
}

#[test]
fn a_wall_clock_step_on_the_fallbacks_ages_no_hint() {
    passes("sloppy-hint-clock-step");
}

#[test]
fn datacenter_level_reads_keep_their_groups_under_sloppy_quorum() {
    passes("dc-sloppy-local-quorum");
}
