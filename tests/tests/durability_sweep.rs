//! The durability check can fail for the reason its broken scenario claims: the same faults with
//! acknowledgements that wait for fsync lose nothing. (The broken scenario being caught on every
//! seed, and the shipped scenarios passing, are their `[ci]` contracts, run by
//! `scenario_contracts.rs`.)

use ringkv_tests::load;
use sim::RunOptions;

#[test]
fn the_same_broken_scenario_passes_when_acks_wait_for_fsync() {
    // Control: identical faults with the safe configuration lose nothing, so the broken
    // scenario's failures come from acknowledging early and not from the faults themselves.
    let mut scenario = load("broken-ack-before-persist");
    assert!(scenario.cluster.unsafe_ack_before_persist);
    scenario.cluster.unsafe_ack_before_persist = false;
    for seed in 0..50 {
        let run = sim::run_seed(&scenario, "control", seed, RunOptions::default()).expect("runs");
        assert!(run.report.ok(), "seed {seed}: {:?}", run.report.checks);
    }
}
