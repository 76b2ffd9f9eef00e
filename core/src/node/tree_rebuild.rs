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

use super::{Node, NodeEvent, Output};
use crate::antientropy::RangeTree;
use crate::storage::Storage;
use crate::time::Now;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The full tree rebuild in progress, if any, and when the next one starts.
#[derive(Default)]
pub(super) struct TreeRebuilds {
    pub(super) current: Option<TreeRebuild>,
    pub(super) next: Option<crate::time::Instant>,
    pub(super) stats: TreeRebuildStats,
}

/// A rebuild in progress.
#[derive(Debug, Default)]
pub(super) struct TreeRebuild {
    /// The scan resumes at this key; every key below it has been folded into `shadow`.
    pub(super) next_key: Vec<u8>,
    pub(super) shadow: BTreeMap<u32, RangeTree>,
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

impl<S: Storage> Node<S> {
    /// One step of the rebuild (called once per anti-entropy round): starts a pass when one is
    /// due, scans the next slice of keys, and swaps the trees in when the scan is complete.
    pub(super) fn tree_rebuild_step(&mut self, now: Now) {
        let interval = self.ctx.config.cluster.tree_rebuild_interval_ms;
        if interval == 0 {
            return;
        }
        if self.ctx.tree_rebuild.current.is_none() {
            let every = Duration::from_millis(interval);
            match self.ctx.tree_rebuild.next {
                // The trees were just built from storage at start-up: the first pass is due
                // one interval later.
                None => {
                    self.ctx.tree_rebuild.next = Some(now.monotonic.saturating_add(every));
                    return;
                }
                Some(at) if at > now.monotonic => return,
                Some(_) => {
                    self.ctx.tree_rebuild.next = Some(now.monotonic.saturating_add(every));
                    self.ctx.tree_rebuild.current = Some(TreeRebuild::default());
                }
            }
        }
        let limit = self.ctx.config.cluster.tree_rebuild_keys_per_step;
        let start = self
            .ctx
            .tree_rebuild
            .current
            .as_ref()
            .map(|r| r.next_key.clone())
            .unwrap_or_default();
        let batch = match self.ctx.storage.scan(&start, limit) {
            Ok(batch) => batch,
            Err(e) => {
                // Abandon this pass (the next one starts on schedule); the live trees stay.
                self.ctx.tree_rebuild.current = None;
                self.ctx
                    .outputs
                    .push_back(Output::Event(NodeEvent::StorageError {
                        reason: e.to_string(),
                    }));
                return;
            }
        };
        self.ctx.tree_rebuild.stats.keys_scanned += batch.len() as u64;
        let done = batch.len() < limit;
        let next = batch.last().map(|(last, _)| {
            let mut next = last.to_vec();
            next.push(0);
            next
        });
        for (key, record) in &batch {
            self.ctx.shadow_update(key, record);
        }
        match (done, next) {
            (false, Some(next)) => {
                if let Some(rebuild) = self.ctx.tree_rebuild.current.as_mut() {
                    rebuild.next_key = next;
                }
            }
            _ => self.finish_tree_rebuild(),
        }
    }

    /// Abandons a pass in progress (the ranges changed; trees are rebuilt whole anyway).
    pub(super) fn cancel_tree_rebuild(&mut self) {
        self.ctx.tree_rebuild.current = None;
    }

    /// Rebuild counters.
    pub fn tree_rebuild_stats(&self) -> &TreeRebuildStats {
        &self.ctx.tree_rebuild.stats
    }

    fn finish_tree_rebuild(&mut self) {
        let Some(rebuild) = self.ctx.tree_rebuild.current.take() else {
            return;
        };
        let mut shadow = rebuild.shadow;
        let ranges: BTreeSet<u32> = self
            .ctx
            .trees
            .keys()
            .chain(shadow.keys())
            .copied()
            .collect();
        let mut mismatched = 0u64;
        for range in ranges {
            let live = self.ctx.trees.entry(range).or_default().root();
            let truth = shadow.entry(range).or_default().root();
            if live != truth {
                mismatched += 1;
            }
        }
        shadow.retain(|_, tree| !tree.is_empty());
        self.ctx.trees = shadow;
        self.ctx.tree_rebuild.stats.passes += 1;
        self.ctx.tree_rebuild.stats.ranges_mismatched += mismatched;
        if mismatched > 0 {
            self.ctx
                .outputs
                .push_back(Output::Event(NodeEvent::TreeRebuildMismatch {
                    ranges: mismatched,
                }));
        }
    }
}
