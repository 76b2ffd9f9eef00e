//! The row cache: whole values by key, in front of the memtable and the tables, so that a read of
//! a hot key costs one hash lookup instead of a memtable probe, a filter and block search per
//! table and a value-log read (issue #15: those were most of a node's GET once its data left the
//! memtable).
//!
//! Its contract is that [`RowCache::get`] answers exactly what the engine's full lookup would;
//! the engine keeps it so:
//! - a user's write goes through (a put replaces the row, a delete forgets it): the recently
//!   written keys are the ones most likely to be read next (sessions, carts), and the old row
//!   would be wrong;
//! - a read that found a value adds it;
//! - compaction that drops a value its owner calls dead forgets that key once the job is
//!   installed (before then, the input tables still return the value);
//! - nothing else changes what a key reads: flushes, compactions and value-log collection only
//!   move values.
//!
//! Why rows are keyed by a hash of the key and hold the key: keys are chosen by clients, and a
//! map hashed with a fixed, public function could be flooded with colliding keys. Here the map
//! key is a 64-bit hash and the slot compares the whole key, so colliding keys only replace each
//! other's rows (a miss), never lengthen a probe.
//!
//! Why a written value is shared and a read one copied: the value handed to a put is the
//! memtable's too (one buffer for both until the flush, no second allocation and copy per
//! write), while a value found by a read may be a slice of a decoded block or of a value-log
//! frame, which holding would keep whole. Keys are copied (a key handed to the engine may be a
//! slice of a larger buffer too), inline in the row when short, so that a hit compares the key
//! without touching another allocation.
//!
//! What it costs: a written value stays alive past its memtable while its row is cached. A node
//! does not notice (its writes wait for fsyncs), a CPU-bound bulk load does (fresh memory for
//! every memtable); so the engine's default is off and the node turns it on
//! (benches/README.md, issue #15).

use bytes::Bytes;
use ringkv_core::hash::IdHashing;
use std::collections::HashMap;
use std::hash::BuildHasher;

/// Bytes charged per row beyond its key and value: the row in the index, its place on the clock
/// and the value's buffer header (an estimate; it keeps a cache of tiny rows from holding far
/// more than its bound).
const ROW_OVERHEAD_BYTES: usize = 96;

/// Written values up to this size are cached by the write; larger ones only when a read finds
/// them. Why: what a row saves a read is about constant (a table lookup and a value-log `pread`),
/// while what keeping a written value costs grows with its size (fresh memory for each memtable,
/// a cold value dropped per eviction). Measured on the node (issue #15): written through, 1 KiB
/// SETs cost no more CPU and GETs after them gained 10-20%, while 10 KiB SETs lost 13-16% of
/// their throughput (8-13 µs more CPU per SET).
const WRITE_THROUGH_VALUE_BYTES_MAX: usize = 4096;

/// Keys up to this long are held in the row itself.
const INLINE_KEY_BYTES: usize = 30;

/// A row's copy of its key.
#[derive(Debug)]
enum RowKey {
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY_BYTES],
    },
    Heap(Box<[u8]>),
}

impl RowKey {
    fn of(key: &[u8]) -> RowKey {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE_KEY_BYTES => {
                let mut bytes = [0; INLINE_KEY_BYTES];
                bytes[..key.len()].copy_from_slice(key);
                RowKey::Inline { len, bytes }
            }
            _ => RowKey::Heap(key.into()),
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            RowKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            RowKey::Heap(bytes) => bytes,
        }
    }
}

/// A row: the key, the value and its place on the clock.
#[derive(Debug)]
struct Row {
    key: RowKey,
    value: Bytes,
    slot: u32,
}

impl Row {
    fn key(&self) -> &[u8] {
        self.key.as_slice()
    }

    fn charge_bytes(&self) -> usize {
        self.key().len() + self.value.len() + ROW_OVERHEAD_BYTES
    }
}

/// The row hash of `key`: a word at a time (a byte-at-a-time hash was a visible share of a put
/// of a 100-byte key). Collisions cost only a miss (module doc), so speed is what matters.
fn row_hash(key: &[u8]) -> u64 {
    IdHashing::default().hash_one(key)
}

/// Marks a free place on the clock.
const FREE: u64 = u64::MAX;

/// Whole values by key, bounded in bytes; `capacity_bytes == 0` turns it off.
///
/// Why CLOCK (second chance) and not the LRU list of the other caches: with a node's hot set
/// cached, a hit relinking its slot and two neighbours touched three random cache lines besides
/// the row, and the lookup was 7% of a GET's cycles (perf, issue #15). Here the row lives in the
/// index itself, and a hit sets one flag in a dense array; eviction sweeps a hand over the clock.
#[derive(Debug)]
pub(crate) struct RowCache {
    /// Hash of the key to its row.
    index: HashMap<u64, Row, IdHashing>,
    /// The clock: the hash of the row at each place (`FREE`: none, listed in `free`).
    clock: Vec<u64>,
    /// Per place: read since the hand last passed (spared once: the second chance).
    referenced: Vec<bool>,
    free: Vec<u32>,
    /// The next place eviction looks at.
    hand: usize,
    used_bytes: usize,
    capacity_bytes: usize,
    hits: u64,
    misses: u64,
}

impl RowCache {
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        RowCache {
            index: HashMap::default(),
            clock: Vec::new(),
            referenced: Vec::new(),
            free: Vec::new(),
            hand: 0,
            used_bytes: 0,
            capacity_bytes,
            hits: 0,
            misses: 0,
        }
    }

    /// Whether rows are kept at all (`capacity_bytes > 0`): callers skip preparing them if not.
    pub(crate) fn enabled(&self) -> bool {
        self.capacity_bytes > 0
    }

    /// The cached value of `key`, if any.
    pub(crate) fn get(&mut self, key: &[u8]) -> Option<Bytes> {
        if !self.enabled() {
            return None;
        }
        let row = self
            .index
            .get(&row_hash(key))
            .filter(|row| row.key() == key);
        let Some(row) = row else {
            self.misses += 1;
            return None;
        };
        if let Some(flag) = self.referenced.get_mut(row.slot as usize) {
            *flag = true;
        }
        self.hits += 1;
        Some(row.value.clone())
    }

    /// Caches `key = value` as written: the row shares `value` (module doc). A value above
    /// [`WRITE_THROUGH_VALUE_BYTES_MAX`] only makes the cache forget the key.
    pub(crate) fn insert_written(&mut self, key: &[u8], value: &Bytes) {
        if value.len() > WRITE_THROUGH_VALUE_BYTES_MAX {
            self.remove(key);
            return;
        }
        self.insert(key, value.clone());
    }

    /// Caches `key = value` as a read found it: the row holds a copy of `value` (module doc).
    pub(crate) fn insert_read(&mut self, key: &[u8], value: &[u8]) {
        if self.enabled() {
            self.insert(key, Bytes::copy_from_slice(value));
        }
    }

    /// Caches `key = value`, replacing whatever row its hash held. A row larger than the whole
    /// bound is not kept.
    fn insert(&mut self, key: &[u8], value: Bytes) {
        let hash = row_hash(key);
        self.release(hash);
        let charge = key.len() + value.len() + ROW_OVERHEAD_BYTES;
        if charge > self.capacity_bytes {
            return;
        }
        self.evict_down_to(self.capacity_bytes - charge);
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let Ok(slot) = u32::try_from(self.clock.len()) else {
                    return;
                };
                self.clock.push(FREE);
                self.referenced.push(false);
                slot
            }
        };
        let row = Row {
            key: RowKey::of(key),
            value,
            slot,
        };
        self.used_bytes += row.charge_bytes();
        self.clock[slot as usize] = hash;
        self.referenced[slot as usize] = false;
        self.index.insert(hash, row);
    }

    /// Forgets `key` (a row of another key with the same hash stays: it is still right).
    pub(crate) fn remove(&mut self, key: &[u8]) {
        let hash = row_hash(key);
        if self.index.get(&hash).is_some_and(|row| row.key() == key) {
            self.release(hash);
        }
    }

    /// Sweeps the hand until at most `bytes` are held: a referenced row loses its flag and
    /// stays, the first one without is evicted. Two turns at most.
    fn evict_down_to(&mut self, bytes: usize) {
        while self.used_bytes > bytes && !self.clock.is_empty() {
            let at = self.hand % self.clock.len();
            self.hand = at + 1;
            let hash = self.clock[at];
            if hash != FREE && !std::mem::replace(&mut self.referenced[at], false) {
                self.release(hash);
            }
        }
    }

    /// Takes the row of `hash` out of the cache: the index, the clock, the byte count.
    fn release(&mut self, hash: u64) {
        if let Some(row) = self.index.remove(&hash) {
            self.used_bytes -= row.charge_bytes();
            self.clock[row.slot as usize] = FREE;
            self.free.push(row.slot);
        }
    }

    pub(crate) fn hits(&self) -> u64 {
        self.hits
    }

    pub(crate) fn misses(&self) -> u64 {
        self.misses
    }

    pub(crate) fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// Panics if the index, the clock and the byte count disagree (a bug).
    pub(crate) fn check_invariants(&self) {
        assert_eq!(self.clock.len(), self.referenced.len(), "a flag per place");
        let taken = self.clock.iter().filter(|&&hash| hash != FREE).count();
        assert_eq!(taken, self.index.len(), "every row on the clock once");
        assert_eq!(
            taken + self.free.len(),
            self.clock.len(),
            "free places listed"
        );
        let mut used = 0;
        for (&hash, row) in &self.index {
            assert_eq!(
                self.clock[row.slot as usize], hash,
                "its place holds its hash"
            );
            assert_eq!(hash, row_hash(row.key()), "hash of its key");
            used += row.charge_bytes();
        }
        assert_eq!(used, self.used_bytes, "byte count");
        assert!(self.used_bytes <= self.capacity_bytes, "within the bound");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_charge(key: &[u8], value: &[u8]) -> usize {
        key.len() + value.len() + ROW_OVERHEAD_BYTES
    }

    #[test]
    fn a_row_reads_back_until_replaced_or_removed() {
        let mut rows = RowCache::new(4096);
        assert_eq!(rows.get(b"a"), None);
        rows.insert_read(b"a", b"one");
        assert_eq!(rows.get(b"a").as_deref(), Some(&b"one"[..]));
        rows.insert_read(b"a", b"two");
        assert_eq!(rows.get(b"a").as_deref(), Some(&b"two"[..]));
        assert_eq!(
            rows.used_bytes(),
            row_charge(b"a", b"two"),
            "replaced, not added"
        );
        rows.remove(b"b");
        assert_eq!(
            rows.get(b"a").as_deref(),
            Some(&b"two"[..]),
            "another key's remove"
        );
        rows.remove(b"a");
        assert_eq!(rows.get(b"a"), None);
        assert_eq!((rows.hits(), rows.misses()), (3, 2));
        rows.check_invariants();
    }

    #[test]
    fn off_and_oversized_rows_keep_nothing() {
        let mut off = RowCache::new(0);
        off.insert_read(b"a", b"one");
        assert_eq!(off.get(b"a"), None);
        assert_eq!(off.used_bytes(), 0);
        let mut small = RowCache::new(row_charge(b"a", b"12345") - 1);
        small.insert_read(b"a", b"12345");
        assert_eq!(small.get(b"a"), None, "larger than the whole bound");
        small.check_invariants();
    }

    #[test]
    fn a_large_written_value_is_not_cached_and_forgets_the_old_row() {
        let mut rows = RowCache::new(1 << 20);
        rows.insert_written(b"k", &Bytes::from_static(b"small"));
        assert_eq!(rows.get(b"k").as_deref(), Some(&b"small"[..]));
        let large = Bytes::from(vec![b'x'; WRITE_THROUGH_VALUE_BYTES_MAX + 1]);
        rows.insert_written(b"k", &large);
        assert_eq!(
            rows.get(b"k"),
            None,
            "the old row is gone, the new one not cached"
        );
        rows.insert_read(b"k", &large);
        assert_eq!(rows.get(b"k"), Some(large), "a read caches it");
        rows.check_invariants();
    }

    /// The hand spares a row read since it last passed, and evicts the first one that was not.
    #[test]
    fn a_row_read_since_the_hand_passed_gets_a_second_chance() {
        let charge = row_charge(b"k0", b"v");
        let mut rows = RowCache::new(3 * charge);
        for key in [b"k0", b"k1", b"k2"] {
            rows.insert_read(key, b"v");
        }
        assert!(rows.get(b"k0").is_some());
        rows.insert_read(b"k3", b"v");
        assert!(rows.get(b"k0").is_some(), "read, so spared");
        assert_eq!(rows.get(b"k1"), None, "the first unread row goes");
        assert!(rows.get(b"k2").is_some());
        assert!(rows.get(b"k3").is_some());
        rows.check_invariants();
    }

    /// Against a map of everything inserted: a cached answer is always the latest value, and
    /// the bound always holds.
    #[test]
    fn random_use_stays_within_the_bound_and_never_answers_stale() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut rows = RowCache::new(2000);
        let mut model = std::collections::BTreeMap::new();
        for n in 0..20_000u32 {
            let key = format!("key{}", rng.gen_range(0..64u32)).into_bytes();
            match rng.gen_range(0..10) {
                0..=3 => {
                    let value = vec![b'x'; rng.gen_range(0..200)];
                    rows.insert_read(&key, &value);
                    model.insert(key, value);
                }
                4 => {
                    rows.remove(&key);
                    model.remove(&key);
                }
                _ => {
                    if let Some(got) = rows.get(&key) {
                        assert_eq!(Some(&got.to_vec()), model.get(&key), "operation {n}");
                    }
                }
            }
            assert!(rows.used_bytes() <= 2000);
        }
        rows.check_invariants();
        assert!(rows.hits() > 1000 && rows.misses() > 1000, "both paths ran");
    }
}
