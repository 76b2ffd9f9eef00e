//! A least-recently-used cache bounded in bytes, deterministic (a fixed hash, no random seed, no
//! clock), for data blocks, table indexes and filters, and separated values.
//!
//! Why a slab with an intrusive recency list: every point read touches this cache 3–5 times
//! (an index per candidate table, a block, a value), and a hit must be cheap. The first version
//! kept recency as a second ordered map keyed by a logical clock, so each hit removed and
//! re-inserted a node there: a third of a GET's engine instructions under callgrind (issue #15).
//! Now a hit is one map lookup plus relinking two slots.
//!
//! Why a hash index with a fixed integer hash and not an ordered map: every key is one or two
//! integers (a table id, a block number, a value's segment and offset), and the ordered map's
//! searches and rebalancing on insert and eviction cost about 1,500 instructions per value-log
//! read that missed (a third of such a read, callgrind, issue #15). The index is never iterated
//! where order could matter: [`LruCache::retain`] releases what it drops in slot order.

use ringkv_core::hash::IdHashing;
use std::collections::HashMap;

/// Marks "no slot" in the recency links.
const NIL: usize = usize::MAX;

/// What the caches are keyed by: small tuples of integers.
pub(crate) trait CacheKey: std::hash::Hash + Eq + Clone {}

impl<K: std::hash::Hash + Eq + Clone> CacheKey for K {}

#[derive(Debug)]
struct Slot<K, V> {
    key: K,
    value: V,
    charge_bytes: usize,
    /// Towards the least recently used end.
    older: usize,
    /// Towards the most recently used end.
    newer: usize,
}

/// LRU cache whose entries are charged a size in bytes; inserting past `capacity_bytes` evicts the
/// least recently used entries. An entry larger than the whole capacity is not kept.
#[derive(Debug)]
pub(crate) struct LruCache<K: CacheKey, V: Clone> {
    /// Key to its slot in `slots`.
    index: HashMap<K, usize, IdHashing>,
    /// `None`: a free slot, listed in `free`.
    slots: Vec<Option<Slot<K, V>>>,
    free: Vec<usize>,
    /// Most recently used slot (NIL when empty).
    newest: usize,
    /// Least recently used slot: the next to evict (NIL when empty).
    oldest: usize,
    used_bytes: usize,
    capacity_bytes: usize,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

impl<K: CacheKey, V: Clone> LruCache<K, V> {
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        LruCache {
            index: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            used_bytes: 0,
            capacity_bytes,
            hits: 0,
            misses: 0,
        }
    }

    /// The value of `key` without counting a hit or a miss or making it newer: for maintenance,
    /// which uses what foreground reads cached but must not steer what they keep.
    pub(crate) fn peek(&self, key: &K) -> Option<V> {
        let &at = self.index.get(key)?;
        self.slot(at).map(|slot| slot.value.clone())
    }

    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        let Some(&at) = self.index.get(key) else {
            self.misses += 1;
            return None;
        };
        self.hits += 1;
        self.unlink(at);
        self.link_newest(at);
        self.slot(at).map(|slot| slot.value.clone())
    }

    pub(crate) fn insert(&mut self, key: K, value: V, charge_bytes: usize) {
        self.remove(&key);
        if charge_bytes > self.capacity_bytes {
            return;
        }
        self.evict_down_to(self.capacity_bytes - charge_bytes);
        let slot = Slot {
            key: key.clone(),
            value,
            charge_bytes,
            older: NIL,
            newer: NIL,
        };
        let at = match self.free.pop() {
            Some(at) => {
                self.slots[at] = Some(slot);
                at
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.link_newest(at);
        self.index.insert(key, at);
        self.used_bytes += charge_bytes;
    }

    pub(crate) fn remove(&mut self, key: &K) {
        if let Some(&at) = self.index.get(key) {
            self.release(at);
        }
    }

    /// Changes the bound, evicting the least recently used entries down to it.
    pub(crate) fn set_capacity(&mut self, capacity_bytes: usize) {
        self.capacity_bytes = capacity_bytes;
        self.evict_down_to(capacity_bytes);
    }

    /// Evicts the least recently used entries until at most `bytes` are held.
    fn evict_down_to(&mut self, bytes: usize) {
        while self.used_bytes > bytes && self.oldest != NIL {
            let oldest = self.oldest;
            self.release(oldest);
        }
    }

    /// Drops every entry whose key matches.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        let mut gone: Vec<usize> = self
            .index
            .iter()
            .filter(|(k, _)| !keep(k))
            .map(|(_, &at)| at)
            .collect();
        // Hash order must not decide which slots are reused first.
        gone.sort_unstable();
        for at in gone {
            self.release(at);
        }
    }

    pub(crate) fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    #[cfg(test)]
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    fn slot(&self, at: usize) -> Option<&Slot<K, V>> {
        self.slots.get(at).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, at: usize) -> Option<&mut Slot<K, V>> {
        self.slots.get_mut(at).and_then(Option::as_mut)
    }

    /// Takes slot `at` out of the cache entirely: the list, the index, the byte count.
    fn release(&mut self, at: usize) {
        self.unlink(at);
        if let Some(slot) = self.slots.get_mut(at).and_then(Option::take) {
            self.index.remove(&slot.key);
            self.used_bytes -= slot.charge_bytes;
            self.free.push(at);
        }
    }

    /// Takes slot `at` out of the recency list (it stays in the slab and the index).
    fn unlink(&mut self, at: usize) {
        let Some((older, newer)) = self.slot(at).map(|s| (s.older, s.newer)) else {
            return;
        };
        match self.slot_mut(older) {
            Some(slot) => slot.newer = newer,
            None => self.oldest = newer,
        }
        match self.slot_mut(newer) {
            Some(slot) => slot.older = older,
            None => self.newest = older,
        }
        if let Some(slot) = self.slot_mut(at) {
            slot.older = NIL;
            slot.newer = NIL;
        }
    }

    /// Puts slot `at` (not in the list) at the most recently used end.
    fn link_newest(&mut self, at: usize) {
        let previous = self.newest;
        if let Some(slot) = self.slot_mut(at) {
            slot.older = previous;
            slot.newer = NIL;
        }
        match self.slot_mut(previous) {
            Some(slot) => slot.newer = at,
            None => self.oldest = at,
        }
        self.newest = at;
    }

    /// Panics if the list, the index and the byte count disagree (a bug).
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut walked = Vec::new();
        let mut at = self.oldest;
        let mut newer_expected = NIL;
        while at != NIL {
            let slot = self.slot(at).expect("listed slot is live");
            assert_eq!(slot.older, newer_expected, "back link");
            assert_eq!(
                self.index.get(&slot.key),
                Some(&at),
                "index points at the slot"
            );
            walked.push(slot.charge_bytes);
            newer_expected = at;
            at = slot.newer;
        }
        assert_eq!(self.newest, newer_expected, "newest end");
        assert_eq!(walked.len(), self.index.len(), "every entry listed once");
        assert_eq!(walked.iter().sum::<usize>(), self.used_bytes, "byte count");
        assert!(self.used_bytes <= self.capacity_bytes);
        assert_eq!(
            self.slots.iter().filter(|s| s.is_none()).count(),
            self.free.len(),
            "free slots listed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_the_byte_bound() {
        let mut cache = LruCache::new(10);
        cache.insert(1, "a", 4);
        cache.insert(2, "b", 4);
        assert_eq!(cache.get(&1), Some("a"));
        cache.insert(3, "c", 4);
        assert_eq!(cache.get(&2), None, "2 was least recently used");
        assert_eq!(cache.get(&1), Some("a"));
        assert!(cache.used_bytes() <= 10);
        cache.insert(4, "huge", 11);
        assert_eq!(cache.get(&4), None);
        cache.check_invariants();
    }

    /// The slab cache against a plain model (a list in recency order) over a seeded mix of
    /// gets, inserts (some replacing, some too large), removes and retains: same hits, same
    /// evictions, same byte count after every step.
    #[test]
    fn matches_a_recency_list_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let capacity = 64;
        let mut cache: LruCache<u8, u32> = LruCache::new(capacity);
        // Oldest first: (key, value, charge).
        let mut model: Vec<(u8, u32, usize)> = Vec::new();
        for step in 0..20_000u32 {
            let key = rng.gen_range(0..24u8);
            match rng.gen_range(0..10) {
                0..=4 => {
                    let expected = model.iter().position(|e| e.0 == key).map(|at| {
                        let entry = model.remove(at);
                        model.push(entry);
                        entry.1
                    });
                    assert_eq!(cache.get(&key), expected, "step {step}");
                }
                5..=7 => {
                    // Mostly small entries, so several fit; now and then one too large to keep.
                    let charge = if rng.gen_ratio(1, 20) {
                        capacity + 1
                    } else {
                        rng.gen_range(1..=12)
                    };
                    cache.insert(key, step, charge);
                    model.retain(|e| e.0 != key);
                    if charge <= capacity {
                        while model.iter().map(|e| e.2).sum::<usize>() + charge > capacity {
                            model.remove(0);
                        }
                        model.push((key, step, charge));
                    }
                }
                8 => {
                    cache.remove(&key);
                    model.retain(|e| e.0 != key);
                }
                _ => {
                    let modulus = rng.gen_range(2..5u8);
                    cache.retain(|k| k % modulus != 0);
                    model.retain(|e| e.0 % modulus != 0);
                }
            }
            cache.check_invariants();
            assert_eq!(
                cache.used_bytes(),
                model.iter().map(|e| e.2).sum::<usize>(),
                "step {step}"
            );
        }
        assert!(cache.hits > 1000 && cache.misses > 1000, "both paths ran");
    }
}
