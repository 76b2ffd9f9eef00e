//! An oversized value through the simulator: every put past the cluster's value limit is
//! refused with a typed `ValueTooLarge`, and no replica ever stores a value past the limit
//! (the refusal comes before any message or write, never as an empty frame or a panic).

use ringkv_core::Record;
use sim::world::World;

#[test]
fn oversized_puts_are_typed_rejections_and_never_stored() {
    let scenario = ringkv_tests::load("oversized-values");
    let limit = scenario
        .cluster_config()
        .expect("valid cluster")
        .value_bytes_max;
    assert!(scenario.workload.oversized_fraction > 0.0);
    for seed in 0..4 {
        let mut world = World::new(&scenario, seed, false).expect("world");
        world.run();
        let refused = world
            .counters
            .rejections
            .get("value-too-large")
            .copied()
            .unwrap_or(0);
        assert!(refused > 0, "seed {seed}: no oversized put was refused");
        let mut values = 0;
        for (node, contents) in world.durable_contents().iter().enumerate() {
            for (key, record) in contents {
                let Record::Lww(record) = record else {
                    panic!("seed {seed}: the scenario is last-write-wins");
                };
                if let Some(value) = &record.value {
                    values += 1;
                    assert!(
                        value.len() <= limit,
                        "seed {seed}: n{node} stores {} bytes under {key:?}, over {limit}",
                        value.len()
                    );
                }
            }
        }
        assert!(values > 0, "seed {seed}: the normal puts were stored");
    }
}
