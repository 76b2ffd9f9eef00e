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
//!
//! # Adding a site
//! 1. At the choice, write `crate::buggify!(self.faults, &mut self.rng, "area/what")` (in `sim`,
//!    `ringkv_core::buggify!`): a name of the form `area/what`, unique in the tree and never
//!    renamed (renaming moves every seed's choice of live sites).
//! 2. Add the name, one line, to the list of its crate below: [`SITES`] (core), [`LSM_SITES`]
//!    (lsm) or [`SIM_SITES`] (the simulator's driver). The test
//!    `every_site_in_the_source_is_registered_and_every_registered_site_is_in_the_source`
//!    reads the source of the three crates and fails until call sites and lists agree.
//! 3. Commit it on its own: a site changes the traces of the seeds where it is live, so the
//!    commit says that fingerprints change and why, and re-pins the snapshots.
//!
//! # Counting
//! Every site reached at a seed where it is live, and every time it fires, is counted in the
//! innermost [`record`] scope of the thread (the simulator runs each seed inside one), so a run
//! can report which sites it exercised and a sweep which registered sites never fired
//! (`tests/tests/buggify_sweep.rs`, `sim --buggify-report`). Counting draws no randomness and
//! feeds nothing back, so it changes no trace; with the points disabled, as in production, a site
//! returns before it is counted, as cheap as before counting existed. A thread-local table rather
//! than a field: sites live in many machines (each holding a copy of its [`FaultPoints`]) and in
//! other crates, and a run's counts must add them all up without every machine exposing its own.

use crate::hash::{hash_bytes, mix64};
use rand::Rng;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Every fault site in `core/src`, by name (see "Adding a site" above).
pub const SITES: &[&str] = &[
    "anti-entropy/partner",
    "anti-entropy/range-order",
    "coordinator/duplicate-write",
    "coordinator/forward-retry",
    "coordinator/hand-off-early",
    "coordinator/read-repair-targets",
    "gossip/peer-choice",
    "handover/page-size",
    "hints/replay-batch",
    "hints/replay-order",
    "membership/suspect-late",
    "paxos/commit-fanout-order",
    "paxos/retry-backoff",
    "scan/page-size",
    "storage/group-commit-ack-next-sync",
    "storage/group-commit-split-batch",
    "tree-rebuild/early",
];

/// Every fault site in `lsm/src`, by name. The engine's sites report through this module (its
/// facility calls [`FaultPoints::fire`] or [`note`]), so they are counted with the rest.
pub const LSM_SITES: &[&str] = &[
    "lsm/compaction-budget-tiny",
    "lsm/compaction-cut-output-early",
    "lsm/flush-budget-tiny",
    "lsm/flush-early",
    "lsm/vlog-gc-below-threshold",
    "lsm/vlog-gc-flush-between-values",
    "lsm/vlog-rotate-early",
    "lsm/wal-write-early",
];

/// Every fault site of the simulator's driver in `sim/src`: the choices a real driver could make
/// (when an fsync ends, what it covers, when a node is woken), which the simulator makes badly
/// on purpose.
pub const SIM_SITES: &[&str] = &["sim/fsync-slow", "sim/timer-early-wake"];

/// Every registered site name: core's, the engine's, then the simulator's.
pub fn registered_sites() -> impl Iterator<Item = &'static str> {
    SITES
        .iter()
        .chain(LSM_SITES.iter())
        .chain(SIM_SITES.iter())
        .copied()
}

/// How often one site was reached at a seed where it is live, and how often it fired then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteCount {
    /// Reached while live (each reach drew one number to decide whether to fire).
    pub reached: u64,
    /// Of those, fired.
    pub fired: u64,
}

impl SiteCount {
    /// Adds `other` into this count.
    pub fn add(&mut self, other: SiteCount) {
        self.reached += other.reached;
        self.fired += other.fired;
    }
}

/// Counts by site name, in name order (so a report built from them is deterministic).
pub type SiteCounts = BTreeMap<&'static str, SiteCount>;

/// A site in an open scope's table: its name's hash (computed at compile time by [`buggify!`])
/// picks the slot, its name decides equality, so two names that share a hash stay apart.
#[derive(Clone, Copy, Debug)]
struct SiteKey {
    hash: u64,
    name: &'static str,
}

impl PartialEq for SiteKey {
    fn eq(&self, other: &Self) -> bool {
        // A site's name is one static string, so the same address settles it without reading
        // the bytes (this runs on every reach); equal text at two addresses is still equal.
        self.hash == other.hash && (std::ptr::eq(self.name, other.name) || self.name == other.name)
    }
}

impl Eq for SiteKey {}

impl std::hash::Hash for SiteKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// One open scope's counts. A hash table, not the name-ordered [`SiteCounts`] the scope returns:
/// a site is reached on most inputs of a simulated node, and a search of a map keyed by names
/// (string comparisons down a tree) on each reach was 3% of a 100-node run. Its order never
/// reaches an output: [`record`] returns the counts in name order.
type OpenCounts = std::collections::HashMap<SiteKey, SiteCount, crate::hash::IdHashing>;

thread_local! {
    /// The open [`record`] scopes of this thread, innermost last.
    static RECORDINGS: RefCell<Vec<OpenCounts>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` and returns what it returned with the counts of every site reached while live during
/// it on this thread. Scopes nest: a site is counted in the innermost one only. A panic inside
/// `f` closes the scope on the way out.
pub fn record<R>(f: impl FnOnce() -> R) -> (R, SiteCounts) {
    /// Closes the scope it opened, also when `f` unwinds, so a caught panic (the simulator turns
    /// a panicking seed into a report line) leaves no stale scope to count the next seed.
    struct Scope {
        depth: usize,
    }
    impl Drop for Scope {
        fn drop(&mut self) {
            RECORDINGS.with(|r| r.borrow_mut().truncate(self.depth));
        }
    }
    let depth = RECORDINGS.with(|r| {
        let mut r = r.borrow_mut();
        r.push(OpenCounts::default());
        r.len() - 1
    });
    let scope = Scope { depth };
    let result = f();
    let counts: SiteCounts = RECORDINGS
        .with(|r| r.borrow_mut().pop())
        .unwrap_or_default()
        .into_iter()
        .map(|(site, count)| (site.name, count))
        .collect();
    debug_assert_eq!(
        RECORDINGS.with(|r| r.borrow().len()),
        scope.depth,
        "a record scope closes the one it opened"
    );
    drop(scope);
    (result, counts)
}

/// Counts one reach of the live site `site`, and whether it fired, in the innermost [`record`]
/// scope (nowhere when none is open). [`FaultPoints::fire`] calls it; a fault facility of another
/// crate calls it for its own sites.
pub fn note(site: &'static str, fired: bool) {
    note_hashed(site, hash_bytes(site.as_bytes()), fired);
}

/// [`note`] with the name's hash given (`hash_bytes(site)`).
fn note_hashed(site: &'static str, site_hash: u64, fired: bool) {
    RECORDINGS.with(|r| {
        if let Some(counts) = r.borrow_mut().last_mut() {
            let key = SiteKey {
                hash: site_hash,
                name: site,
            };
            let count = counts.entry(key).or_default();
            count.reached += 1;
            count.fired += u64::from(fired);
        }
    });
}

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

    /// Whether the site named `site` is switched on for this machine's seed (a quarter of seeds
    /// per site, independently).
    pub fn is_live(&self, site: &str) -> bool {
        self.is_live_hashed(hash_bytes(site.as_bytes()))
    }

    /// [`FaultPoints::is_live`] for the site whose name hashes to `site_hash`
    /// (`hash_bytes(name)`).
    fn is_live_hashed(&self, site_hash: u64) -> bool {
        self.enabled && mix64(self.seed ^ site_hash).is_multiple_of(4)
    }

    /// Whether the site named `site` fires now. Consumes randomness only at live sites, so a
    /// disabled machine draws exactly the numbers it would draw with no fault points at all.
    /// Each reach of a live site is counted (see [`record`]).
    pub fn fire(&self, site: &'static str, rng: &mut impl Rng) -> bool {
        self.fire_hashed(site, hash_bytes(site.as_bytes()), rng)
    }

    /// [`FaultPoints::fire`] with the name's hash given (`hash_bytes(site)`): [`buggify!`]
    /// computes it at compile time, where hashing the name on every reach was 2% of a
    /// 100-node run.
    pub fn fire_hashed(&self, site: &'static str, site_hash: u64, rng: &mut impl Rng) -> bool {
        if !self.is_live_hashed(site_hash) {
            return false;
        }
        let fired = rng.gen_bool(0.05);
        note_hashed(site, site_hash, fired);
        fired
    }
}

/// `true` at the sim-only fault point named `$site` when it fires now; always `false` when the
/// points are disabled. Names must be unique per site and never change; each one is listed in
/// [`SITES`], [`LSM_SITES`] or [`SIM_SITES`].
#[macro_export]
macro_rules! buggify {
    ($points:expr, $rng:expr, $site:literal) => {
        $points.fire_hashed(
            $site,
            const { $crate::hash::hash_bytes($site.as_bytes()) },
            $rng,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::path::{Path, PathBuf};

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

    /// A seed at which `site` is live, and one at which it is not.
    fn live_and_dead_seeds(site: &str) -> (u64, u64) {
        let live = (0..).find(|&s| FaultPoints::new(s, true).is_live(site));
        let dead = (0..).find(|&s| !FaultPoints::new(s, true).is_live(site));
        (live.unwrap_or(0), dead.unwrap_or(0))
    }

    #[test]
    fn a_live_site_counts_every_reach_and_every_firing_and_draws_as_before() {
        let (live, dead) = live_and_dead_seeds("test/counted");
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (fired, counts) = record(|| {
            let points = FaultPoints::new(live, true);
            (0..1000)
                .filter(|_| crate::buggify!(points, &mut rng, "test/counted"))
                .count() as u64
        });
        let count = counts.get("test/counted").copied().unwrap_or_default();
        assert_eq!(count.reached, 1000);
        assert_eq!(count.fired, fired);
        assert!((20..=90).contains(&fired), "{fired} of 1000 at 5%");
        // Counting feeds nothing back: the same draws, without a scope, fire at the same calls.
        let mut again = ChaCha8Rng::seed_from_u64(9);
        let points = FaultPoints::new(live, true);
        let uncounted = (0..1000)
            .filter(|_| crate::buggify!(points, &mut again, "test/counted"))
            .count() as u64;
        assert_eq!(uncounted, fired);
        assert_eq!(rng.gen::<u64>(), again.gen::<u64>());
        // A site that is not live for the seed, or disabled points, are not counted at all.
        let ((), counts) = record(|| {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            for _ in 0..100 {
                crate::buggify!(FaultPoints::new(dead, true), &mut rng, "test/counted");
                crate::buggify!(FaultPoints::new(live, false), &mut rng, "test/counted");
            }
        });
        assert!(counts.is_empty(), "{counts:?}");
    }

    #[test]
    fn scopes_nest_and_a_panic_closes_its_scope() {
        let ((inner, outer_reached), outer) = record(|| {
            note("test/outer", false);
            let ((), inner) = record(|| note("test/inner", true));
            note("test/outer", true);
            (inner, RECORDINGS.with(|r| r.borrow().len()))
        });
        assert_eq!(outer_reached, 1, "the inner scope was closed");
        let count = |counts: &SiteCounts, site| counts.get(site).copied().unwrap_or_default();
        assert_eq!(
            count(&inner, "test/inner"),
            SiteCount {
                reached: 1,
                fired: 1
            }
        );
        assert_eq!(count(&inner, "test/outer"), SiteCount::default());
        assert_eq!(
            count(&outer, "test/outer"),
            SiteCount {
                reached: 2,
                fired: 1
            }
        );
        assert_eq!(count(&outer, "test/inner"), SiteCount::default());
        let caught = std::panic::catch_unwind(|| record(|| panic!("a seed broke")));
        assert!(caught.is_err());
        assert_eq!(RECORDINGS.with(|r| r.borrow().len()), 0, "no stale scope");
        note("test/nowhere", true); // no scope open: counted nowhere, and no panic
    }

    /// The names of the `buggify!(` calls in the Rust files under `dir`, with where each is. A
    /// call's name is the first string literal after `buggify!(` (the two arguments before it
    /// hold none); calls in comments and names starting with `test/` (this module's own tests)
    /// are left out.
    fn call_sites(root: &Path, dir: &str) -> Vec<(String, String)> {
        let needle = concat!("buggify", "!(");
        let mut found = Vec::new();
        let mut dirs = vec![root.join(dir)];
        while let Some(dir) = dirs.pop() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for path in entries {
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|ext| ext != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                for (at, _) in text.match_indices(needle) {
                    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                    if text[line_start..at].contains("//") {
                        continue;
                    }
                    let rest = &text[at + needle.len()..];
                    let name = rest
                        .split_once('"')
                        .and_then(|(_, after)| after.split_once('"'))
                        .map(|(name, _)| name.to_string())
                        .unwrap_or_default();
                    if name.starts_with("test/") {
                        continue;
                    }
                    let line = text[..at].lines().count().max(1);
                    let shown = path.strip_prefix(root).unwrap_or(&path);
                    found.push((name, format!("{}:{line}", shown.display())));
                }
            }
        }
        found
    }

    #[test]
    fn every_site_in_the_source_is_registered_and_every_registered_site_is_in_the_source() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut problems = Vec::new();
        for (dir, list, name) in [
            ("core/src", SITES, "SITES"),
            ("lsm/src", LSM_SITES, "LSM_SITES"),
            ("sim/src", SIM_SITES, "SIM_SITES"),
        ] {
            let calls = call_sites(&root, dir);
            for (site, at) in &calls {
                if !list.contains(&site.as_str()) {
                    problems.push(format!(
                        "{at}: site \"{site}\" is not in {name} (core/src/buggify.rs)"
                    ));
                }
                if calls.iter().filter(|(other, _)| other == site).count() > 1 {
                    problems.push(format!(
                        "{at}: site \"{site}\" is used at more than one call"
                    ));
                }
            }
            for site in list {
                if !calls.iter().any(|(call, _)| call == site) {
                    problems.push(format!(
                        "\"{site}\" is in {name} but no call in {dir} uses it"
                    ));
                }
            }
        }
        let all: Vec<&str> = registered_sites().collect();
        for (i, site) in all.iter().enumerate() {
            if all[..i].contains(site) {
                problems.push(format!("\"{site}\" is registered twice"));
            }
            let well_formed = site
                .split_once('/')
                .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
                && site
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '/');
            if !well_formed {
                problems.push(format!(
                    "\"{site}\" is not of the form area/what in lowercase"
                ));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// The scanner itself: a call over several lines is found, a mention in a comment is not.
    #[test]
    fn the_source_scan_finds_calls_over_several_lines_and_skips_comments() {
        let root = std::env::temp_dir().join(format!("ringkv-buggify-{}", std::process::id()));
        let dir = root.join("scan");
        std::fs::create_dir_all(dir.join("inner")).expect("a temporary directory");
        let call = concat!("buggify", "!(");
        let text = format!(
            "fn f() {{\n    // {call}points, rng, \"in/comment\")\n    if {call}\n        self.faults,\n        &mut self.rng,\n        \"area/multi-line\"\n    ) {{}}\n}}\n"
        );
        std::fs::write(dir.join("inner/a.rs"), text).expect("written");
        std::fs::write(dir.join("b.txt"), format!("{call}p, r, \"not/rust\")")).expect("written");
        let found = call_sites(&root, "scan");
        let _ = std::fs::remove_dir_all(&root);
        let names: Vec<&str> = found.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["area/multi-line"]);
        let at = Path::new("scan").join("inner").join("a.rs");
        assert_eq!(found[0].1, format!("{}:3", at.display()));
    }
}
