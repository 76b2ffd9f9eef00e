//! A least-recently-used cache bounded in bytes, deterministic (ordered maps, a logical clock), for
//! data blocks and for table indexes and filters.

use std::collections::BTreeMap;

/// LRU cache whose entries are charged a size in bytes; inserting past `capacity_bytes` evicts the
/// least recently used entries. An entry larger than the whole capacity is not kept.
#[derive(Debug)]
pub(crate) struct LruCache<K: Ord + Clone, V: Clone> {
    entries: BTreeMap<K, (V, usize, u64)>,
    order: BTreeMap<u64, K>,
    used_bytes: usize,
    capacity_bytes: usize,
    tick: u64,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

impl<K: Ord + Clone, V: Clone> LruCache<K, V> {
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        LruCache {
            entries: BTreeMap::new(),
            order: BTreeMap::new(),
            used_bytes: 0,
            capacity_bytes,
            tick: 0,
            hits: 0,
            misses: 0,
        }
    }

    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        match self.entries.get_mut(key) {
            Some((value, _, last)) => {
                self.order.remove(last);
                *last = tick;
                self.order.insert(tick, key.clone());
                self.hits += 1;
                Some(value.clone())
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    pub(crate) fn insert(&mut self, key: K, value: V, charge_bytes: usize) {
        self.remove(&key);
        if charge_bytes > self.capacity_bytes {
            return;
        }
        while self.used_bytes + charge_bytes > self.capacity_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, charge, _)) = self.entries.remove(&oldest) {
                self.used_bytes -= charge;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, (value, charge_bytes, self.tick));
        self.used_bytes += charge_bytes;
    }

    pub(crate) fn remove(&mut self, key: &K) {
        if let Some((_, charge, tick)) = self.entries.remove(key) {
            self.order.remove(&tick);
            self.used_bytes -= charge;
        }
    }

    /// Drops every entry whose key matches.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        let gone: Vec<K> = self.entries.keys().filter(|k| !keep(k)).cloned().collect();
        for k in gone {
            self.remove(&k);
        }
    }

    pub(crate) fn used_bytes(&self) -> usize {
        self.used_bytes
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
    }
}
