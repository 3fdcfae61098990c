//! A cheap, deterministic hash for small integer keys (lattice coordinates, edge ids).
//!
//! std's default SipHash resists hash flooding, which these maps do not need: their keys
//! are lattice coordinates the program computes itself, never input from a file or the
//! network. On the implicit head's surface search SipHash was 12 % of the decode time
//! (`perf`, session 5). The mixing is a multiply then a xor-shift fold (splitmix64's
//! finaliser), so that the low bits hashbrown uses for the bucket index depend on every
//! key bit.

use std::hash::{BuildHasherDefault, Hasher};

/// Hasher state; use through [`FastMap`] / [`FastSet`].
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(23) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }

    #[inline]
    fn write_u8(&mut self, x: u8) {
        self.add(u64::from(x));
    }

    #[inline]
    fn write_u32(&mut self, x: u32) {
        self.add(u64::from(x));
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.add(x);
    }

    #[inline]
    fn write_usize(&mut self, x: usize) {
        self.add(x as u64);
    }
}

/// `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FastHasher>>;
/// `HashSet` with [`FastHasher`].
pub type FastSet<K> = std::collections::HashSet<K, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn h<T: Hash>(x: T) -> u64 {
        BuildHasherDefault::<FastHasher>::default().hash_one(x)
    }

    #[test]
    fn lattice_keys_spread_over_low_bits() {
        // the keys of a 32^3 block must fill a 2^15-bucket table about evenly
        let mut buckets = vec![0u32; 1 << 15];
        for z in 0..32u32 {
            for y in 0..32u32 {
                for x in 0..32u32 {
                    buckets[(h([x, y, z]) & 0x7FFF) as usize] += 1;
                }
            }
        }
        let max = buckets.iter().copied().max().unwrap_or(0);
        let empty = buckets.iter().filter(|b| **b == 0).count();
        // a uniform hash: ~37 % empty buckets, max load ~8
        assert!(max <= 10, "max bucket load {max}");
        assert!(empty < 14_000, "{empty} empty buckets");
    }

    #[test]
    fn maps_work_and_hash_is_deterministic() {
        let mut m: FastMap<([u32; 3], u8), u32> = FastMap::default();
        for i in 0..1000u32 {
            m.insert(([i, i / 2, 7], (i % 3) as u8), i);
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m.get(&([500, 250, 7], 2)), Some(&500));
        assert_eq!(h([1u32, 2, 3]), h([1u32, 2, 3]));
        assert_ne!(h([1u32, 2, 3]), h([1u32, 2, 4]));
    }
}
