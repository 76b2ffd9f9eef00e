//! Sim-only fault points (FoundationDB's BUGGIFY): `buggify!(points, rng, "site")` is `false`
//! unless the machine's [`FaultPoints`] are enabled, which only the simulator does (through
//! `ClusterConfig::simulation`). Enabled, each site is switched on for a quarter of seeds and
//! then fires with a small probability, so dangerous-but-legal choices get exercised.
//!
//! The switch is a runtime value, not a cargo feature: a feature is unified across a workspace
//! build, so `cargo build --workspace` used to compile the node with fault points live.
//!
//! Sites are named explicitly, not by `file!():line!()`: with line numbers, any edit that moved a
//! site (even a pure refactor above it) switched sites on and off for every seed and so changed
//! every simulation trace. A name keeps the traces of unrelated changes identical.

use crate::hash::{hash_bytes, mix64};
use rand::Rng;

/// Which fault sites are live for one machine, decided from its seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultPoints {
    seed: u64,
    enabled: bool,
}

impl FaultPoints {
    /// Fault points for a machine seeded with `seed`; `enabled` is false outside simulation.
    pub fn new(seed: u64, enabled: bool) -> Self {
        FaultPoints { seed, enabled }
    }

    /// Whether any site can fire (false in every production driver).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the site named `site` fires now. Consumes randomness only at enabled sites, so a
    /// disabled machine draws exactly the numbers it would draw with no fault points at all.
    pub fn fire(&self, site: &str, rng: &mut impl Rng) -> bool {
        self.enabled
            && mix64(self.seed ^ hash_bytes(site.as_bytes())).is_multiple_of(4)
            && rng.gen_bool(0.05)
    }
}

/// `true` at the sim-only fault point named `$site` when it fires now; always `false` when the
/// points are disabled. Names must be unique per site and never change.
#[macro_export]
macro_rules! buggify {
    ($points:expr, $rng:expr, $site:literal) => {
        $points.fire($site, $rng)
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn a_site_is_decided_by_its_name_not_by_where_it_is_written() {
        for seed in 0..64 {
            let points = FaultPoints::new(seed, true);
            let (mut a, mut b) = (ChaCha8Rng::seed_from_u64(1), ChaCha8Rng::seed_from_u64(1));
            let here: Vec<bool> = (0..200)
                .map(|_| crate::buggify!(points, &mut a, "test/site"))
                .collect();
            // The same name on another line must fire at exactly the same calls.
            let there: Vec<bool> = (0..200)
                .map(|_| crate::buggify!(points, &mut b, "test/site"))
                .collect();
            assert_eq!(here, there, "seed {seed}");
        }
        let live = (0..400)
            .filter(|&seed| mix64(seed ^ hash_bytes(b"test/site")).is_multiple_of(4))
            .count();
        assert!(
            (60..=140).contains(&live),
            "{live} of 400 seeds enable the site"
        );
    }

    #[test]
    fn disabled_points_never_fire_and_draw_no_randomness() {
        for seed in 0..64 {
            let points = FaultPoints::new(seed, false);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut untouched = ChaCha8Rng::seed_from_u64(seed);
            assert!(!points.enabled());
            assert!((0..200).all(|_| !crate::buggify!(points, &mut rng, "test/site")));
            assert_eq!(rng.gen::<u64>(), untouched.gen::<u64>(), "seed {seed}");
        }
    }
}
