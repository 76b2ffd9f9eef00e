//! The throttled full rebuild of the hash trees.
//!
//! Trees are updated on every staged write, so they only ever see what the node itself wrote.
//! Data that changes or vanishes on disk behind the engine's back (bit rot, a lost file, a bug)
//! would stay invisible to anti-entropy forever. So every `tree_rebuild_interval_ms` the node
//! rebuilds its trees from storage, `tree_rebuild_keys_per_step` keys per anti-entropy round (a
//! scan in key order, never a stall), into shadow trees. Writes staged meanwhile for keys the scan
//! has passed go into the shadow as well; keys ahead of it are read by the scan with their newest
//! record. When the scan ends, the shadow replaces the live trees, and ranges whose roots differed
//! are counted and reported: anti-entropy then compares the truth with the peers and repairs.

use super::context::Context;
use super::{NodeEvent, Output};
use crate::antientropy::RangeTree;
use crate::ring::Ring;
use crate::storage::Storage;
use crate::time::{Instant, Now};
use crate::version::Record;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The full tree rebuild in progress, if any, and when the next one starts.
#[derive(Default)]
pub(super) struct TreeRebuilds {
    current: Option<TreeRebuild>,
    /// When the next pass starts; `None` until the first round schedules it.
    next: Option<Instant>,
    stats: TreeRebuildStats,
}

/// A rebuild in progress.
#[derive(Debug, Default)]
struct TreeRebuild {
    /// The scan resumes at this key; every key below it has been folded into `shadow`.
    next_key: Vec<u8>,
    shadow: BTreeMap<u32, RangeTree>,
}

/// Rebuild counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeRebuildStats {
    /// Full rebuilds finished.
    pub passes: u64,
    /// Ranges whose rebuilt tree differed from the tree kept up to date by writes.
    pub ranges_mismatched: u64,
    /// Keys read by rebuild scans.
    pub keys_scanned: u64,
}

impl TreeRebuilds {
    /// One step of the rebuild (called once per anti-entropy round): starts a pass when one is
    /// due, scans the next slice of keys, and swaps the trees in when the scan is complete. An
    /// associated function: the rebuild lives in the context beside the trees it replaces.
    pub(super) fn step<S: Storage>(ctx: &mut Context<S>, now: Now) {
        let interval = ctx.config.cluster.tree_rebuild_interval_ms;
        if interval == 0 {
            return;
        }
        let every = Duration::from_millis(interval);
        if ctx.tree_rebuild.current.is_none()
            && ctx.tree_rebuild.next.is_some()
            && crate::buggify!(ctx.faults, &mut ctx.rng, "tree-rebuild/early")
        {
            // Start a pass now rather than on schedule: the trees are swapped while writes and
            // exchanges go on, which must never lose or hide a difference.
            ctx.tree_rebuild.next = Some(now.monotonic);
        }
        if !ctx.tree_rebuild.start_if_due(now.monotonic, every) {
            return;
        }
        let limit = ctx.config.cluster.tree_rebuild_keys_per_step;
        let start = ctx
            .tree_rebuild
            .current
            .as_ref()
            .map(|r| r.next_key.clone())
            .unwrap_or_default();
        let batch = match ctx.storage.scan(&start, limit) {
            Ok(batch) => batch,
            Err(e) => {
                // Abandon this pass (the next one starts on schedule); the live trees stay.
                ctx.tree_rebuild.cancel();
                ctx.outputs
                    .push_back(Output::Event(NodeEvent::StorageError {
                        reason: e.to_string(),
                    }));
                return;
            }
        };
        ctx.tree_rebuild.stats.keys_scanned += batch.len() as u64;
        let done = batch.len() < limit;
        let next = batch.last().map(|(last, _)| {
            let mut next = last.to_vec();
            next.push(0);
            next
        });
        for (key, record) in &batch {
            ctx.tree_rebuild.shadow_update(&ctx.ring, key, record);
        }
        match (done, next) {
            (false, Some(next)) => {
                if let Some(rebuild) = ctx.tree_rebuild.current.as_mut() {
                    rebuild.next_key = next;
                }
            }
            _ => Self::finish(ctx),
        }
    }

    /// Whether a pass is in progress, starting one if it is due at `now` (every `every`). The
    /// first call only schedules: the trees were just built from storage at start-up, so the
    /// first pass is due one interval later.
    fn start_if_due(&mut self, now: Instant, every: Duration) -> bool {
        if self.current.is_some() {
            return true;
        }
        match self.next {
            None => {
                self.next = Some(now.saturating_add(every));
                false
            }
            Some(at) if at > now => false,
            Some(_) => {
                self.next = Some(now.saturating_add(every));
                self.current = Some(TreeRebuild::default());
                true
            }
        }
    }

    /// A write was staged: if the scan has already passed its key, the shadow learns it too
    /// (a key ahead of the scan is read by the scan with its newest record).
    pub(super) fn track(&mut self, ring: &Ring, key: &Bytes, record: &Record) {
        let passed = self
            .current
            .as_ref()
            .is_some_and(|r| key.as_ref() < r.next_key.as_slice());
        if passed {
            self.shadow_update(ring, key, record);
        }
    }

    fn shadow_update(&mut self, ring: &Ring, key: &Bytes, record: &Record) {
        if key.starts_with(super::hints::RESERVED_PREFIX) {
            return;
        }
        let Some(range) = ring.range_index_for_hash(Ring::key_hash(key)) else {
            return;
        };
        if let Some(rebuild) = self.current.as_mut() {
            rebuild.shadow.entry(range).or_default().update(key, record);
        }
    }

    /// Abandons a pass in progress (the ranges changed; trees are rebuilt whole anyway).
    pub(super) fn cancel(&mut self) {
        self.current = None;
    }

    /// Rebuild counters.
    pub(super) fn stats(&self) -> &TreeRebuildStats {
        &self.stats
    }

    /// The scan is complete: the shadow replaces the live trees; ranges whose roots differed are
    /// counted and reported.
    fn finish<S>(ctx: &mut Context<S>) {
        let Some(rebuild) = ctx.tree_rebuild.current.take() else {
            return;
        };
        let mut shadow = rebuild.shadow;
        let ranges: BTreeSet<u32> = ctx
            .trees
            .ranges()
            .iter()
            .chain(shadow.keys())
            .copied()
            .collect();
        let mut mismatched = 0u64;
        for range in ranges {
            let live = ctx.trees.read(range).root();
            let truth = shadow.entry(range).or_default().root();
            if live != truth {
                mismatched += 1;
            }
        }
        shadow.retain(|_, tree| !tree.is_empty());
        ctx.trees.replace(shadow);
        ctx.tree_rebuild.stats.passes += 1;
        ctx.tree_rebuild.stats.ranges_mismatched += mismatched;
        if mismatched > 0 {
            ctx.outputs
                .push_back(Output::Event(NodeEvent::TreeRebuildMismatch {
                    ranges: mismatched,
                }));
        }
    }

    /// Internal consistency; panics only on a bug in this crate. A pass in progress always has
    /// its successor scheduled (so a pass abandoned or finished never stops the cycle), and its
    /// shadow holds only ranges of the current ring (a ring change cancels the pass).
    pub(super) fn check_invariants(&self, ring: &Ring) {
        if let Some(rebuild) = &self.current {
            assert!(self.next.is_some(), "a pass in progress with no next one");
            for &range in rebuild.shadow.keys() {
                assert!(
                    usize::try_from(range).is_ok_and(|r| r < ring.range_count()),
                    "a shadow tree for range {range}, which the ring does not have"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;
    use crate::node::durability::AfterPersist;
    use crate::node::store::test_context;

    use crate::node::store::test_record as record;

    use crate::node::store::test_now as at;

    #[test]
    fn the_first_pass_is_due_one_interval_after_the_first_round_and_then_every_interval() {
        let every = Duration::from_millis(1_000);
        let mut rebuilds = TreeRebuilds::default();
        assert!(
            !rebuilds.start_if_due(at(5).monotonic, every),
            "only scheduled"
        );
        assert!(!rebuilds.start_if_due(at(1_004).monotonic, every));
        assert!(
            rebuilds.start_if_due(at(1_005).monotonic, every),
            "due: starts"
        );
        assert!(
            rebuilds.start_if_due(at(1_006).monotonic, every),
            "in progress"
        );
        rebuilds.cancel();
        assert!(
            !rebuilds.start_if_due(at(2_004).monotonic, every),
            "next on schedule"
        );
        assert!(rebuilds.start_if_due(at(2_005).monotonic, every));
    }

    /// A pass finds what changed behind the engine's back, and keeps what was written while it
    /// ran (a key the scan had passed reaches the shadow through `track`).
    #[test]
    fn a_pass_finds_data_changed_behind_the_engine_and_keeps_writes_made_meanwhile() {
        let cluster = ClusterConfig {
            tree_rebuild_interval_ms: 1_000,
            tree_rebuild_keys_per_step: 2,
            ..ClusterConfig::default()
        };
        let mut ctx = test_context(0, 1, cluster);
        for i in 0..6 {
            let key = Bytes::from(format!("k{i}"));
            assert!(ctx.apply(key, &record(1), AfterPersist::Nothing).is_ok());
        }
        let hidden = Bytes::from_static(b"k9");
        ctx.storage
            .put(hidden.clone(), record(1))
            .expect("behind the engine");
        let digest = |ctx: &Context<_>, key: &Bytes| {
            let range = ctx.ring.range_index_for_hash(Ring::key_hash(key));
            range
                .and_then(|r| ctx.trees.get(&r))
                .and_then(|t| t.digest_of(key))
        };
        assert_eq!(digest(&ctx, &hidden), None, "the trees never saw it");
        TreeRebuilds::step(&mut ctx, at(0));
        TreeRebuilds::step(&mut ctx, at(1_000));
        assert_eq!(ctx.tree_rebuild.stats().keys_scanned, 2, "k0 and k1");
        let early = Bytes::from_static(b"a");
        assert!(ctx
            .apply(early.clone(), &record(1), AfterPersist::Nothing)
            .is_ok());
        ctx.tree_rebuild.check_invariants(&ctx.ring);
        let mut steps = 0;
        while ctx.tree_rebuild.stats().passes == 0 {
            TreeRebuilds::step(&mut ctx, at(1_001 + steps));
            steps += 1;
            assert!(steps < 100, "the pass ends");
        }
        assert_eq!(ctx.tree_rebuild.stats().ranges_mismatched, 1);
        assert!(digest(&ctx, &hidden).is_some(), "found by the pass");
        assert!(
            digest(&ctx, &early).is_some(),
            "written during the pass, kept"
        );
        let reported = ctx.outputs.iter().any(|o| {
            matches!(
                o,
                Output::Event(NodeEvent::TreeRebuildMismatch { ranges: 1 })
            )
        });
        assert!(reported);
        ctx.tree_rebuild.check_invariants(&ctx.ring);
    }
}
