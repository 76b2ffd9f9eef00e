//! Our own bloom filter (so the on-disk format is ours): about `bits_per_key` bits per key,
//! `k = bits_per_key * ln 2` probes by double hashing over a stable 64-bit hash.
//!
//! ```text
//! filter = probes u8 | bit array (little-endian bit order within each byte)
//! ```

/// A stable 64-bit hash of a key (FNV-1a, then a murmur3 finalizer to spread the bits). Part of
/// the on-disk format: never change it without bumping the table format version.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Builds a filter from key hashes.
pub(crate) fn build(hashes: &[u64], bits_per_key: usize) -> Vec<u8> {
    let bits = (hashes.len() * bits_per_key).max(64);
    let bytes = bits.div_ceil(8);
    let bits = bytes * 8;
    // ln 2 ≈ 0.69; clamp so a filter stays cheap to probe.
    let probes = ((bits_per_key * 69) / 100).clamp(1, 30);
    let mut out = vec![0u8; 1 + bytes];
    out[0] = probes as u8;
    for &h in hashes {
        let (mut x, delta) = (h, h.rotate_right(17) | 1);
        for _ in 0..probes {
            let bit = (x % bits as u64) as usize;
            out[1 + bit / 8] |= 1 << (bit % 8);
            x = x.wrapping_add(delta);
        }
    }
    out
}

/// Whether the key with hash `h` may be in the set. A malformed filter answers "maybe" (never a
/// false negative on bad bytes; the block checksums catch corruption of the data itself).
pub(crate) fn may_contain(filter: &[u8], h: u64) -> bool {
    let Some((&probes, bits)) = filter.split_first() else {
        return true;
    };
    if bits.is_empty() || probes == 0 || probes > 30 {
        return true;
    }
    let nbits = bits.len() as u64 * 8;
    let (mut x, delta) = (h, h.rotate_right(17) | 1);
    for _ in 0..probes {
        let bit = (x % nbits) as usize;
        if bits[bit / 8] & (1 << (bit % 8)) == 0 {
            return false;
        }
        x = x.wrapping_add(delta);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys: Vec<Vec<u8>> = (0..10_000u32)
            .map(|i| format!("key{i}").into_bytes())
            .collect();
        let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
        let filter = build(&hashes, 10);
        assert!(hashes.iter().all(|&h| may_contain(&filter, h)));
        let false_positives = (0..10_000u32)
            .filter(|i| may_contain(&filter, key_hash(format!("other{i}").as_bytes())))
            .count();
        assert!(
            false_positives < 300,
            "{false_positives} false positives of 10000"
        );
    }
}
