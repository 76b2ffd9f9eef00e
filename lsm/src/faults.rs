//! Sim-only fault points in the engine (FoundationDB's BUGGIFY): at a dangerous-but-legal choice
//! (flush timing, compaction step size and output cuts, value-log rotation and collection timing,
//! WAL write timing) the engine asks its file system whether the named site fires now
//! ([`crate::fs::FileSystem::fault_point`]), and takes the unusual branch if it does.
//!
//! Only the simulated disk with fault points switched on ever says yes; every real file system
//! keeps the trait's default (never), so the points cannot be live in production. The engine
//! does not depend on `ringkv-core`'s `FaultPoints` for this: the crash oracle runs the engine
//! alone, and the state (seed, draws, counts) lives with the simulated disk, which survives the
//! engine's crashes and reopens within one run.
//!
//! As in core, each site is switched on for about a quarter of seeds (decided by the seed and the
//! site's name, never by where it is written, so moving code does not change traces) and then
//! fires with a small probability. Draws come from their own seeded stream, so a run without
//! fault points draws exactly what it drew before they existed. Every firing is counted per
//! run, so a sweep can report the sites that never fired ([`FaultPoints::never_fired`]).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Every fault site of the engine, by its stable name.
pub const SITES: [&str; 8] = [
    "lsm/flush-early",
    "lsm/flush-budget-tiny",
    "lsm/compaction-budget-tiny",
    "lsm/compaction-cut-output-early",
    "lsm/vlog-rotate-early",
    "lsm/vlog-gc-below-threshold",
    "lsm/vlog-gc-flush-between-values",
    "lsm/wal-write-early",
];

/// How often a live site fires when reached.
const FIRE_PROBABILITY: f64 = 0.05;

/// The fault points of one run: which sites are live for its seed, the draws, and how often
/// each site fired.
#[derive(Clone, Debug)]
pub struct FaultPoints {
    seed: u64,
    rng: ChaCha8Rng,
    fired: BTreeMap<&'static str, u64>,
}

impl FaultPoints {
    /// The fault points of a run seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        FaultPoints {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6275_6767_6966_7921),
            fired: BTreeMap::new(),
        }
    }

    /// Whether `site` is live for this run's seed (about a quarter of seeds per site).
    pub fn live(&self, site: &str) -> bool {
        mix64(self.seed ^ name_hash(site)).is_multiple_of(4)
    }

    /// Whether `site` fires now; counted when it does. Draws only at live sites.
    pub fn fire(&mut self, site: &'static str) -> bool {
        assert!(SITES.contains(&site), "undeclared fault site {site}");
        if !self.live(site) {
            return false;
        }
        let fired = self.rng.gen_bool(FIRE_PROBABILITY);
        // Counted with core's sites too, so the simulator's sweep reports engine sites that
        // never fired (no draw is added: the count is taken after the decision).
        ringkv_core::buggify::note(site, fired);
        if fired {
            *self.fired.entry(site).or_default() += 1;
        }
        fired
    }

    /// How often each site fired in this run (sites that never fired are absent).
    pub fn fired(&self) -> &BTreeMap<&'static str, u64> {
        &self.fired
    }

    /// The declared sites that never fired in this run, in declaration order.
    pub fn never_fired(&self) -> Vec<&'static str> {
        SITES
            .iter()
            .copied()
            .filter(|site| !self.fired.contains_key(site))
            .collect()
    }
}

/// FNV-1a over the name: stable across builds and platforms.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A 64-bit finalizer (splitmix64): neighbouring seeds switch on unrelated sites.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `true` when the engine's fault site `$site` fires now on the file system `$fs` (always
/// `false` on a real disk). Names are declared in [`SITES`], unique and never changed.
macro_rules! buggify {
    ($fs:expr, $site:literal) => {
        $crate::fs::FileSystem::fault_point(&mut *$fs, $site)
    };
}
pub(crate) use buggify;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_site_is_live_for_about_a_quarter_of_seeds_and_names_are_unique() {
        for site in SITES {
            let live = (0..400).filter(|&s| FaultPoints::new(s).live(site)).count();
            assert!((60..=140).contains(&live), "{site}: live for {live} of 400");
        }
        let mut names = SITES.to_vec();
        names.dedup();
        assert_eq!(names.len(), SITES.len());
    }

    #[test]
    fn firings_are_counted_and_the_rest_reported_never_fired() {
        let seed = (0..100)
            .find(|&s| FaultPoints::new(s).live("lsm/flush-early"))
            .expect("a live seed");
        let mut points = FaultPoints::new(seed);
        let fired = (0..1000).filter(|_| points.fire("lsm/flush-early")).count();
        assert!(fired > 0);
        assert_eq!(points.fired().get("lsm/flush-early"), Some(&(fired as u64)));
        assert!(!points.never_fired().contains(&"lsm/flush-early"));
        let mut again = FaultPoints::new(seed);
        let replay = (0..1000).filter(|_| again.fire("lsm/flush-early")).count();
        assert_eq!(replay, fired, "the same seed fires at the same calls");
    }

    #[test]
    fn a_site_that_is_not_live_never_fires_and_draws_nothing() {
        let seed = (0..100)
            .find(|&s| !FaultPoints::new(s).live("lsm/wal-write-early"))
            .expect("a seed where the site is off");
        let mut points = FaultPoints::new(seed);
        let before = points.rng.clone();
        assert!((0..1000).all(|_| !points.fire("lsm/wal-write-early")));
        assert_eq!(points.rng, before);
    }
}
