//! A stable 64-bit hash for ring placement and fingerprints. It must give the same answer on every
//! machine and every build forever, because ring tokens are derived from it; `std`'s hashers make no
//! such promise. FNV-1a over the bytes, finished with the SplitMix64 mixer to spread similar keys.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The SplitMix64 finaliser: a bijective mixer with full avalanche.
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Stable hash of a byte string. A `const fn`, so a fixed name (a fault site's) is hashed
/// once, at compile time.
pub const fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET_BASIS;
    let mut i = 0;
    while i < bytes.len() {
        // `as`: `u64::from` is not callable in a const fn (the cast is lossless).
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    mix64(h ^ bytes.len() as u64)
}

/// Feeds `bytes` to `fold` as little-endian 64-bit words, the last one zero-padded: how the
/// byte-string hashers here (and the simulator's fingerprint) read bytes. Whole words are read
/// in place; only a partial last one is copied (a copy per word was a visible share of a
/// row-cache key's hash, issue #15). A loop, not an iterator: the chained iterator cost the
/// fingerprint 0.5% of gossip-100's instructions.
pub fn fold_le_words(bytes: &[u8], mut fold: impl FnMut(u64)) {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut whole = [0u8; 8];
        whole.copy_from_slice(word);
        fold(u64::from_le_bytes(whole));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        fold(u64::from_le_bytes(word));
    }
}

/// Stable hash of a pair of integers (for example a node id and a vnode index).
pub const fn hash_pair(a: u64, b: u64) -> u64 {
    mix64(mix64(a) ^ b.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15)
}

/// A [`Hasher`](std::hash::Hasher) for maps keyed by ids a node allocates itself (operation and
/// request ids, the storage engine's cache keys of file ids and offsets: never chosen by a peer or
/// a client, so SipHash's resistance to chosen collisions buys nothing): one mixer round per
/// word. Stable like everything here, so a map's
/// layout is the same on every run; still, iterate such a map only where order cannot reach an
/// output.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        fold_le_words(bytes, |word| self.write_u64(word));
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = mix64(self.0.rotate_left(29) ^ word);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`IdHasher`]s, for `HashMap<Id, _, IdHashing>`.
pub type IdHashing = std::hash::BuildHasherDefault<IdHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_spread_over_the_whole_hash() {
        use std::hash::{BuildHasher, Hash};
        let hash = |id: u64| {
            let mut hasher = IdHashing::default().build_hasher();
            id.hash(&mut hasher);
            std::hash::Hasher::finish(&hasher)
        };
        // hashbrown picks buckets with the low bits and tags entries with the top seven.
        let low: std::collections::BTreeSet<u64> = (1..=1024).map(|id| hash(id) & 1023).collect();
        let top: std::collections::BTreeSet<u64> = (1..=1024).map(|id| hash(id) >> 57).collect();
        assert!(low.len() > 500, "{} distinct low words", low.len());
        assert_eq!(top.len(), 128, "every tag is used");
        let mut map: std::collections::HashMap<u64, u64, IdHashing> = Default::default();
        for id in 1..=10_000 {
            map.insert(id, id * 3);
        }
        for id in (1..=10_000).step_by(7) {
            assert_eq!(map.remove(&id), Some(id * 3));
        }
        assert_eq!(map.len(), 10_000 - (1..=10_000).step_by(7).count());
    }

    #[test]
    fn bytes_hash_as_zero_padded_little_endian_words() {
        use std::hash::Hasher;
        let bytes: Vec<u8> = (1..=25).collect();
        for len in 0..=bytes.len() {
            let mut hasher = IdHasher::default();
            hasher.write(&bytes[..len]);
            let mut by_word = IdHasher::default();
            for chunk in bytes[..len].chunks(8) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                by_word.write_u64(u64::from_le_bytes(word));
            }
            assert_eq!(hasher.finish(), by_word.finish(), "{len} bytes");
        }
        let mut empty = IdHasher::default();
        empty.write(&[]);
        assert_eq!(
            empty.finish(),
            IdHasher::default().finish(),
            "no bytes, no word"
        );
    }

    #[test]
    fn stable_values_never_change() {
        // Ring tokens are derived from these: a change here reshuffles every cluster's data.
        assert_eq!(hash_bytes(b""), mix64(FNV_OFFSET_BASIS));
        assert_ne!(hash_bytes(b"key-1"), hash_bytes(b"key-2"));
        assert_ne!(hash_pair(1, 2), hash_pair(2, 1));
    }
}
