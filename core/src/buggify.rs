//! Sim-only fault points (FoundationDB's BUGGIFY): `buggify!(points, rng)` is `false` in real
//! builds; with the `sim` feature each site is switched on for a quarter of seeds and then fires
//! with a small probability, so dangerous-but-legal choices get exercised.

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

/// `true` at a sim-only fault point that fires now; always `false` without the `sim` feature.
#[macro_export]
macro_rules! buggify {
    ($points:expr, $rng:expr) => {{
        #[cfg(feature = "sim")]
        let fired = $points.fire(concat!(file!(), ":", line!()), $rng);
        #[cfg(not(feature = "sim"))]
        let fired = {
            let _ = (&$points, &$rng);
            false
        };
        fired
    }};
}
