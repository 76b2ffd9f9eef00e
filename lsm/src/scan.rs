//! Range scans: a merge of the memtable and every sorted run of tables, newest version first,
//! tombstones left out. Separated values stay pointers here; the engine resolves them.

use crate::entry::Entry;
use crate::error::LsmError;
use crate::fs::FileSystem;
use crate::memtable::{MemCursor, MemTable};
use crate::store::{RunCursor, TableStore};
use crate::table::TableMeta;
use bytes::Bytes;

/// Up to `limit` live entries with `start <= key < end` (no end if `None`), in key order.
pub(crate) fn merge<F: FileSystem>(
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
        let mut min: Option<Bytes> = mem_cursor.current().map(|(k, _)| k.clone());
        for run in &runs {
            if let Some((k, _)) = run.current() {
                if min.as_ref().is_none_or(|m| k < m) {
                    min = Some(k.clone());
                }
            }
        }
        let Some(key) = min else { break };
        if end.is_some_and(|e| key.as_ref() >= e) {
            break;
        }
        let mut chosen: Option<Entry> = None;
        if mem_cursor.current().is_some_and(|(k, _)| *k == key) {
            chosen = mem_cursor.current().map(|(_, e)| e.clone());
            mem_cursor.advance(mem);
        }
        for run in &mut runs {
            if run.current().is_some_and(|(k, _)| *k == key) {
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
