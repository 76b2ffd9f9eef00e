//! Sim-only fault points (FoundationDB's BUGGIFY): `buggify!(points, rng, "site")` is `false` in
//! real builds; with the `sim` feature each site is switched on for a quarter of seeds and then
//! fires with a small probability, so dangerous-but-legal choices get exercised.
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

    /// Whether the site named `site` fires now. Consumes randomness only at enabled sites.
    pub fn fire(&self, site: &str, rng: &mut impl Rng) -> bool {
        self.enabled
            && mix64(self.seed ^ hash_bytes(site.as_bytes())).is_multiple_of(4)
            && rng.gen_bool(0.05)
    }
}

/// `true` at the sim-only fault point named `$site` when it fires now; always `false` without
/// the `sim` feature. Names must be unique per site and never change.
#[macro_export]
macro_rules! buggify {
    ($points:expr, $rng:expr, $site:literal) => {{
        #[cfg(feature = "sim")]
        let fired = $points.fire($site, $rng);
        #[cfg(not(feature = "sim"))]
        let fired = {
            let _ = (&$points, &$rng);
            false
        };
        fired
    }};
}

#[cfg(all(test, feature = "sim"))]
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
}
