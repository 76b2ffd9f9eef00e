//! Reads: point lookups (memtable, then tables newest first) and range scans (a merge of the
//! memtable and every sorted run of tables, newest version first, tombstones left out), with
//! separated values read from the value log.

use crate::entry::{Entry, ValuePointer};
use crate::error::LsmError;
use crate::fs::FileSystem;
use crate::manifest::ManifestState;
use crate::memtable::{MemCursor, MemTable};
use crate::store::{RunCursor, TableStore};
use crate::table::TableMeta;
use crate::vlog::ValueLog;
use bytes::Bytes;

/// What reads look at, borrowed from the engine. Reads change only caches (and the simulated
/// disk's fault draws), never what is stored.
pub(crate) struct Reader<'a, F: FileSystem> {
    pub(crate) store: &'a mut TableStore<F>,
    pub(crate) state: &'a ManifestState,
    pub(crate) mem: &'a MemTable,
    pub(crate) vlog: &'a mut ValueLog,
    /// The largest value-log frame payload (a pointer from disk is bounded by it).
    pub(crate) payload_max: usize,
}

impl<F: FileSystem> Reader<'_, F> {
    /// The value of `key`, including staged writes.
    pub(crate) fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, LsmError> {
        let entry = match self.mem.get(key) {
            Some(mem) => Some(mem.to_resolved_entry()),
            None => self.store.lookup(&self.state.levels, key, true)?,
        };
        match entry {
            None | Some(Entry::Tombstone { .. }) => Ok(None),
            Some(Entry::Inline(v)) => Ok(Some(v)),
            Some(Entry::Pointer(p)) => self.read_value(key, p).map(Some),
        }
    }

    fn read_value(&mut self, key: &[u8], p: ValuePointer) -> Result<Bytes, LsmError> {
        let segments = &self.state.segments;
        self.vlog
            .read(&mut self.store.fs, segments, key, p, self.payload_max)
    }

    /// Up to `limit` live pairs with `start <= key < end` (no end if `None`), in key order.
    pub(crate) fn scan(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, LsmError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let levels = &self.state.levels;
        let entries = merge(self.store, levels, self.mem, start, end, limit)?;
        let mut out = Vec::with_capacity(entries.len());
        for (key, entry) in entries {
            match entry {
                Entry::Inline(v) => out.push((key, v)),
                Entry::Pointer(p) => {
                    let v = self.read_value(&key, p)?;
                    out.push((key, v));
                }
                Entry::Tombstone { .. } => {}
            }
        }
        Ok(out)
    }
}

/// Up to `limit` live entries with `start <= key < end` (no end if `None`), in key order.
fn merge<F: FileSystem>(
    store: &mut TableStore<F>,
    levels: &[Vec<TableMeta>],
    mem: &MemTable,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Bytes, Entry)>, LsmError> {
    let mut runs: Vec<RunCursor> = Vec::new();
    for (level, tables) in levels.iter().enumerate() {
        if level == 0 {
            for t in tables {
                runs.push(RunCursor::new(std::slice::from_ref(t), true));
            }
        } else if !tables.is_empty() {
            runs.push(RunCursor::new(tables, true));
        }
    }
    for run in &mut runs {
        run.seek(store, Some(start))?;
    }
    let mut mem_cursor = MemCursor::new(mem, start);
    let mut out: Vec<(Bytes, Entry)> = Vec::new();
    while out.len() < limit {
        // The smallest current key, the memtable's or a run's; a `Bytes` is made for it alone.
        let mut min: Option<&[u8]> = mem_cursor.current().map(|(k, _)| k.as_ref());
        let mut min_run: Option<usize> = None;
        for (r, run) in runs.iter().enumerate() {
            if let Some((k, _)) = run.current() {
                if min.is_none_or(|m| k < m) {
                    min = Some(k);
                    min_run = Some(r);
                }
            }
        }
        let key = match min_run {
            Some(r) => runs[r].current_key_bytes(),
            None => mem_cursor.current().map(|(k, _)| k.clone()),
        };
        let Some(key) = key else { break };
        if end.is_some_and(|e| key.as_ref() >= e) {
            break;
        }
        let mut chosen: Option<Entry> = None;
        if mem_cursor.current().is_some_and(|(k, _)| *k == key) {
            chosen = mem_cursor.current().map(|(_, e)| e.clone());
            mem_cursor.advance(mem);
        }
        for run in &mut runs {
            if run.current().is_some_and(|(k, _)| k == key.as_ref()) {
                if chosen.is_none() {
                    chosen = run.current().map(|(_, e)| e.clone());
                }
                run.advance(store)?;
            }
        }
        match chosen {
            Some(Entry::Tombstone { .. }) | None => {}
            Some(entry) => out.push((key, entry)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::SimFs;
    use crate::memtable::MemEntry;
    use crate::table::{DecodeLimits, TableBuilder};

    #[test]
    fn the_memtable_hides_older_table_versions_and_tombstones_hide_keys() {
        let limits = DecodeLimits {
            key_bytes_max: 64,
            value_bytes_max: 1024,
            block_bytes_max: 1 << 20,
        };
        let mut store = TableStore::new(SimFs::seeded(5), limits, 1 << 16, 1 << 16);
        let mut b = TableBuilder::create(&mut store.fs, 7, 256, 10, false).expect("create");
        for k in ["a", "b", "c", "d"] {
            b.add(
                &mut store.fs,
                k.as_bytes(),
                &Entry::Inline(Bytes::from_static(b"t")),
            )
            .expect("add");
        }
        let levels = vec![vec![b.finish(&mut store.fs).expect("finish")], vec![]];
        let mut mem = MemTable::default();
        mem.insert(
            Bytes::from_static(b"b"),
            MemEntry::Inline(Bytes::from_static(b"m")),
        );
        mem.insert(Bytes::from_static(b"c"), MemEntry::Tombstone(0));
        let got = merge(&mut store, &levels, &mem, b"a", Some(b"d"), 10).expect("scan");
        let keys: Vec<(&[u8], Entry)> = got.iter().map(|(k, e)| (k.as_ref(), e.clone())).collect();
        assert_eq!(
            keys,
            vec![
                (&b"a"[..], Entry::Inline(Bytes::from_static(b"t"))),
                (&b"b"[..], Entry::Inline(Bytes::from_static(b"m")))
            ]
        );
        assert_eq!(
            merge(&mut store, &levels, &mem, b"", None, 1)
                .expect("scan")
                .len(),
            1
        );
    }
}
