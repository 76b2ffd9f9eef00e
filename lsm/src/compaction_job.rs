//! The compaction executor beside the pure policy (`compaction::pick`): one job merges the tables
//! of a plan in bounded steps, writes its outputs, and finally edits a copy of the manifest state
//! that the engine stores atomically. The job owns its cursors, its open output and what it has
//! learned (output tables, value-log garbage); the installed state is touched only by
//! [`CompactionJob::apply`]. The [`Compactor`] runs one job at a time and installs its result.

use crate::compaction::{self, CompactionPlan};
use crate::config::LsmConfig;
use crate::entry::{Entry, ValuePointer};
use crate::error::LsmError;
use crate::faults::buggify;
use crate::fs::FileSystem;
use crate::manifest::{self, ManifestState};
use crate::outcome::CompactionProgress;
use crate::store::{RunCursor, TableStore};
use crate::table::{table_file_name, TableBuilder, TableMeta};
use bytes::Bytes;
use std::collections::BTreeSet;

/// Since when (wall-clock ms) a stored value has been dead for every reader, as its owner
/// decodes it: `None` while it may be read. Compaction drops an inline value at the last level
/// once it has been dead for `tombstone_grace_ms`, as it drops a tombstone. Values separated into
/// the value log are not decoded (it would cost a read each) and stay until overwritten.
pub type DeadSince = fn(&[u8]) -> Option<u64>;

/// What a step may drop: tombstones and values dead since before `now_ms - grace_ms`, at the
/// last level only.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropRule {
    pub(crate) now_ms: u64,
    pub(crate) grace_ms: u64,
    pub(crate) dead_since: Option<DeadSince>,
}

/// What one step of a job did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobStep {
    /// The budget ran out; merged this many entry bytes.
    InProgress { processed_bytes: u64 },
    /// Every input is merged and every output finished: ready to install.
    Merged,
}

/// A compaction under way.
#[derive(Debug)]
pub(crate) struct CompactionJob {
    plan: CompactionPlan,
    sources: Vec<RunCursor>,
    builder: Option<TableBuilder>,
    outputs: Vec<TableMeta>,
    garbage: Vec<ValuePointer>,
    /// Keys whose newest entry was a value its owner calls dead, dropped: once the job is
    /// installed they read as absent (the row cache must forget them).
    dropped_values: Vec<Bytes>,
}

impl CompactionJob {
    /// Opens cursors over the plan's inputs: each upper table on its own (level 0 tables
    /// overlap; newest first, so the newest version of a key wins), then the lower run.
    pub(crate) fn start<F: FileSystem>(
        plan: CompactionPlan,
        levels: &[Vec<TableMeta>],
        store: &mut TableStore<F>,
    ) -> Result<Self, LsmError> {
        let mut sources = Vec::new();
        let upper_level = &levels[plan.level];
        for id in &plan.upper {
            if let Some(t) = upper_level.iter().find(|t| t.id == *id) {
                sources.push(RunCursor::new(std::slice::from_ref(t), false));
            }
        }
        let lower: Vec<TableMeta> = levels[plan.level + 1]
            .iter()
            .filter(|t| plan.lower.contains(&t.id))
            .cloned()
            .collect();
        sources.push(RunCursor::new(&lower, false));
        for s in &mut sources {
            s.seek(store, None)?;
        }
        Ok(CompactionJob {
            plan,
            sources,
            builder: None,
            outputs: Vec::new(),
            garbage: Vec::new(),
            dropped_values: Vec::new(),
        })
    }

    /// The plan being run.
    pub(crate) fn plan(&self) -> &CompactionPlan {
        &self.plan
    }

    /// Merges about `budget_bytes` of entries. New output tables take ids from `next_file_id`.
    pub(crate) fn step<F: FileSystem>(
        &mut self,
        store: &mut TableStore<F>,
        budget_bytes: u64,
        rule: DropRule,
        config: &LsmConfig,
        next_file_id: &mut u64,
    ) -> Result<JobStep, LsmError> {
        let mut processed: u64 = 0;
        loop {
            if processed >= budget_bytes {
                return Ok(JobStep::InProgress {
                    processed_bytes: processed,
                });
            }
            let Some((key, entry)) = self.next_entry(store)? else {
                break;
            };
            let Some(entry) = entry else { continue };
            processed += (key.len() + entry.size_bytes()) as u64;
            if self.drops(&entry, rule) {
                if matches!(entry, Entry::Inline(_)) {
                    self.dropped_values.push(key);
                }
                continue;
            }
            self.add_output(store, &key, &entry, config, next_file_id)?;
        }
        if let Some(b) = self.builder.take() {
            if !b.is_empty() {
                self.outputs.push(b.finish(&mut store.fs)?);
            }
        }
        Ok(JobStep::Merged)
    }

    /// The smallest key under any cursor with its newest entry (`None` if no source holds it,
    /// which cannot happen), advancing every cursor past it; older versions of a separated value
    /// become value-log garbage. `None` once every source is exhausted.
    fn next_entry<F: FileSystem>(
        &mut self,
        store: &mut TableStore<F>,
    ) -> Result<Option<(Bytes, Option<Entry>)>, LsmError> {
        let mut min: Option<(&[u8], usize)> = None;
        for (i, s) in self.sources.iter().enumerate() {
            if let Some((k, _)) = s.current() {
                if min.is_none_or(|(m, _)| k < m) {
                    min = Some((k, i));
                }
            }
        }
        // The key as a slice of its block's buffer: made once per merged key, never copied.
        let key = min.and_then(|(_, i)| self.sources[i].current_key_bytes());
        let Some(key) = key else { return Ok(None) };
        let mut chosen: Option<Entry> = None;
        for s in &mut self.sources {
            if s.current().is_some_and(|(k, _)| k == key.as_ref()) {
                if let Some((_, e)) = s.current() {
                    if chosen.is_none() {
                        chosen = Some(e.clone());
                    } else if let Entry::Pointer(p) = e {
                        self.garbage.push(*p);
                    }
                }
                s.advance(store)?;
            }
        }
        Ok(Some((key, chosen)))
    }

    /// Whether `entry` may be dropped: a tombstone, or a value its owner calls dead (a record's
    /// tombstone or expired value), past the grace, at the last level only.
    fn drops(&self, entry: &Entry, rule: DropRule) -> bool {
        if !self.plan.bottommost {
            return false;
        }
        let old = |since_ms: u64| rule.now_ms.saturating_sub(since_ms) >= rule.grace_ms;
        match (entry, rule.dead_since) {
            (Entry::Tombstone { deleted_at_ms }, _) => old(*deleted_at_ms),
            (Entry::Inline(value), Some(dead_since)) => dead_since(value).is_some_and(old),
            _ => false,
        }
    }

    /// Adds an entry to the open output table (opening one if needed), finishing it once it
    /// reaches `table_bytes_target`.
    fn add_output<F: FileSystem>(
        &mut self,
        store: &mut TableStore<F>,
        key: &Bytes,
        entry: &Entry,
        config: &LsmConfig,
        next_file_id: &mut u64,
    ) -> Result<(), LsmError> {
        if self.builder.is_none() {
            let id = *next_file_id;
            *next_file_id += 1;
            self.builder = Some(TableBuilder::create(
                &mut store.fs,
                id,
                config.block_bytes,
                config.bloom_bits_per_key,
                config.compression,
            )?);
        }
        let Some(builder) = self.builder.as_mut() else {
            return Ok(());
        };
        builder.add(&mut store.fs, key, entry)?;
        // An output table may be cut after any entry: outputs stay disjoint (BUGGIFY).
        if builder.estimated_size_bytes() >= config.table_bytes_target
            || buggify!(&mut store.fs, "lsm/compaction-cut-output-early")
        {
            if let Some(b) = self.builder.take() {
                self.outputs.push(b.finish(&mut store.fs)?);
            }
        }
        Ok(())
    }

    /// Edits `state` to the result: the inputs out, the outputs in (in key order), the garbage
    /// counted against its segments. Returns the output tables and their bytes.
    pub(crate) fn apply(self, state: &mut ManifestState) -> (usize, u64) {
        let plan = self.plan;
        let level = plan.level;
        state.levels[level].retain(|t| !plan.upper.contains(&t.id));
        state.levels[level + 1].retain(|t| !plan.lower.contains(&t.id));
        let output_tables = self.outputs.len();
        let output_bytes: u64 = self.outputs.iter().map(|t| t.size_bytes).sum();
        state.levels[level + 1].extend(self.outputs);
        state.levels[level + 1].sort_by(|a, b| a.smallest.cmp(&b.smallest));
        for p in self.garbage {
            state.add_garbage(p);
        }
        (output_tables, output_bytes)
    }

    /// Panics if the job is inconsistent (a bug): outputs are disjoint and in key order.
    pub(crate) fn check_invariants(&self) {
        for pair in self.outputs.windows(2) {
            assert!(
                pair[0].largest < pair[1].smallest,
                "compaction outputs {} and {} overlap or are out of order",
                pair[0].id,
                pair[1].id
            );
        }
    }
}

/// The compaction side of the engine: the job under way and where each level's round-robin
/// stopped. It edits the installed state only through a stored manifest.
#[derive(Debug)]
pub(crate) struct Compactor {
    job: Option<CompactionJob>,
    /// Per level, the key after which its last compaction stopped (round-robin through the keys).
    cursors: Vec<Bytes>,
    /// Bytes of tables written by compactions.
    output_bytes: u64,
    /// Compactions finished (trivial moves included).
    finished: u64,
    /// Keys an installed job dropped as dead values, until the engine takes them
    /// ([`Compactor::take_forgotten`]).
    forgotten: Vec<Bytes>,
}

impl Compactor {
    /// No job, every level's round-robin at its start.
    pub(crate) fn new(levels: usize) -> Self {
        Compactor {
            job: None,
            cursors: vec![Bytes::new(); levels],
            output_bytes: 0,
            finished: 0,
            forgotten: Vec::new(),
        }
    }

    /// Bytes of tables written by compactions.
    pub(crate) fn output_bytes(&self) -> u64 {
        self.output_bytes
    }

    /// Compactions finished.
    pub(crate) fn finished(&self) -> u64 {
        self.finished
    }

    /// The keys installed jobs dropped as dead values since the last call: they read as
    /// absent now.
    pub(crate) fn take_forgotten(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.forgotten)
    }

    /// Runs about `budget_bytes` of the current job (picking one if none runs). A failure
    /// abandons the job: its inputs are untouched (the state changes only once the manifest is
    /// stored), and its partial outputs are orphans ([`Compactor::remove_unreferenced_tables`]).
    pub(crate) fn step<F: FileSystem>(
        &mut self,
        store: &mut TableStore<F>,
        state: &mut ManifestState,
        config: &LsmConfig,
        rule: DropRule,
        budget_bytes: u64,
    ) -> Result<CompactionProgress, LsmError> {
        if self.job.is_none() {
            let Some(plan) = compaction::pick(&state.levels, &self.cursors, config) else {
                return Ok(CompactionProgress::Idle);
            };
            if plan.trivial_move {
                return self.trivial_move(store, state, &plan);
            }
            self.job = Some(CompactionJob::start(plan, &state.levels, store)?);
        }
        let Some(mut job) = self.job.take() else {
            return Ok(CompactionProgress::Idle);
        };
        match job.step(store, budget_bytes, rule, config, &mut state.next_file_id)? {
            JobStep::InProgress { processed_bytes } => {
                self.job = Some(job);
                Ok(CompactionProgress::InProgress { processed_bytes })
            }
            JobStep::Merged => self.install(store, state, job),
        }
    }

    fn install<F: FileSystem>(
        &mut self,
        store: &mut TableStore<F>,
        state: &mut ManifestState,
        mut job: CompactionJob,
    ) -> Result<CompactionProgress, LsmError> {
        let plan = job.plan().clone();
        let dropped_values = std::mem::take(&mut job.dropped_values);
        store.fs.fsync_dir()?;
        let level = plan.level;
        if let Some(last) = state.levels[level]
            .iter()
            .filter(|t| plan.upper.contains(&t.id))
            .map(|t| t.largest.clone())
            .max()
        {
            self.cursors[level] = last;
        }
        // Changed on a copy that replaces the state only once stored (a full disk while
        // storing leaves the inputs installed and the job abandoned).
        let mut next = state.clone();
        let (output_tables, output_bytes) = job.apply(&mut next);
        manifest::store(&mut store.fs, &next)?;
        *state = next;
        self.forgotten.extend(dropped_values);
        self.output_bytes += output_bytes;
        for id in plan.upper.iter().chain(plan.lower.iter()) {
            store.evict_table(*id);
            store.fs.remove(&table_file_name(*id))?;
        }
        self.finished += 1;
        state.check_invariants();
        Ok(CompactionProgress::Finished {
            level,
            output_tables,
        })
    }

    fn trivial_move<F: FileSystem>(
        &mut self,
        store: &mut TableStore<F>,
        state: &mut ManifestState,
        plan: &CompactionPlan,
    ) -> Result<CompactionProgress, LsmError> {
        let level = plan.level;
        let Some(pos) = state.levels[level]
            .iter()
            .position(|t| plan.upper.contains(&t.id))
        else {
            return Ok(CompactionProgress::Idle);
        };
        let mut next = state.clone();
        let table = next.levels[level].remove(pos);
        let largest = table.largest.clone();
        next.levels[level + 1].push(table);
        next.levels[level + 1].sort_by(|a, b| a.smallest.cmp(&b.smallest));
        manifest::store(&mut store.fs, &next)?;
        *state = next;
        self.cursors[level] = largest;
        self.finished += 1;
        state.check_invariants();
        Ok(CompactionProgress::Moved { level })
    }

    /// Removes table files the state does not reference, but for `flush_table` (the table a flush
    /// job is writing): between steps, only the outputs of an abandoned compaction.
    pub(crate) fn remove_unreferenced_tables<F: FileSystem>(
        fs: &mut F,
        state: &ManifestState,
        flush_table: Option<u64>,
    ) -> Result<(), LsmError> {
        let live: BTreeSet<String> = (state.levels.iter().flatten().map(|t| t.id))
            .chain(flush_table)
            .map(table_file_name)
            .collect();
        for name in fs.list()? {
            if name.ends_with(".sst") && !live.contains(&name) {
                fs.remove(&name)?;
            }
        }
        Ok(())
    }

    /// Panics if the compactor is inconsistent with the installed `levels` (a bug).
    pub(crate) fn check_invariants(&self, levels: &[Vec<TableMeta>]) {
        assert_eq!(
            self.cursors.len(),
            levels.len(),
            "one round-robin cursor per level"
        );
        if let Some(job) = &self.job {
            job.check_invariants();
            let plan = job.plan();
            assert!(
                plan.level + 1 < levels.len(),
                "a job compacts into an existing level"
            );
            assert!(
                plan.upper
                    .iter()
                    .all(|id| levels[plan.level].iter().any(|t| t.id == *id)),
                "a job's inputs stay installed until it is"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::SimFs;
    use crate::table::DecodeLimits;

    fn table_of(store: &mut TableStore<SimFs>, id: u64, entries: &[(&str, Entry)]) -> TableMeta {
        let mut b = TableBuilder::create(&mut store.fs, id, 256, 10, false).expect("create");
        for (k, e) in entries {
            b.add(&mut store.fs, k.as_bytes(), e).expect("add");
        }
        b.finish(&mut store.fs).expect("finish")
    }

    fn inline(s: &str) -> Entry {
        Entry::Inline(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn the_newest_version_wins_and_old_tombstones_go_at_the_last_level() {
        let limits = DecodeLimits {
            key_bytes_max: 64,
            value_bytes_max: 1024,
            block_bytes_max: 1 << 20,
        };
        let mut store = TableStore::new(SimFs::seeded(3), limits, 1 << 16, 1 << 16);
        let tomb = Entry::Tombstone { deleted_at_ms: 0 };
        let newer = table_of(&mut store, 10, &[("a", inline("new")), ("b", tomb)]);
        let older = table_of(&mut store, 11, &[("a", inline("old")), ("b", inline("x"))]);
        let levels = vec![vec![newer], vec![older], vec![]];
        let plan = CompactionPlan {
            level: 0,
            upper: vec![10],
            lower: vec![11],
            bottommost: true,
            trivial_move: false,
        };
        let mut job = CompactionJob::start(plan, &levels, &mut store).expect("start");
        let rule = DropRule {
            now_ms: 5000,
            grace_ms: 1000,
            dead_since: None,
        };
        let config = LsmConfig::tiny_for_tests();
        let mut next_id = 20;
        let first = job.step(&mut store, 1, rule, &config, &mut next_id);
        assert!(matches!(first, Ok(JobStep::InProgress { .. })));
        let rest = job.step(&mut store, u64::MAX, rule, &config, &mut next_id);
        assert_eq!(rest.expect("step"), JobStep::Merged);
        job.check_invariants();
        let mut state = ManifestState {
            levels,
            ..ManifestState::default()
        };
        assert_eq!(job.apply(&mut state).0, 1);
        assert!(state.levels[0].is_empty());
        assert_eq!(state.levels[1].len(), 1);
        assert_eq!(state.levels[1][0].id, 20);
        assert_eq!(
            state.levels[1][0].entry_count, 1,
            "b's tombstone was dropped"
        );
    }
}
