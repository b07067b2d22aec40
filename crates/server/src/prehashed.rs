//! Hashers of the server's maps. For keys that are random already (session ids: random UUIDs
//! this process made; SHA-256 digests of tokens), [`RandomKeys`]: hashing them again (SipHash)
//! costs time on every request and buys nothing, since their bytes are uniformly distributed and
//! only ids and digests of tokens this process issued or verified are ever inserted, so nobody
//! can choose colliding keys. For text a request may choose (segment tokens, `items` filters),
//! [`TextKeys`] in the bounded caches of [`text_cache`]: SipHash of a 340-byte segment token is
//! ~1,000 instructions.

use std::hash::{BuildHasherDefault, Hash, Hasher};

use quick_cache::sync::Cache;
use quick_cache::UnitWeighter;

/// Folds the first eight bytes of every write into the hash.
#[derive(Default, Clone, Copy)]
pub struct RandomKeyHasher(u64);

impl Hasher for RandomKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(17) ^ u64::from_le_bytes(word);
    }
}

/// The [`std::hash::BuildHasher`] of [`RandomKeyHasher`].
pub type RandomKeys = BuildHasherDefault<RandomKeyHasher>;

/// The hasher of keys that are text: foldhash, seeded anew for every map. Every map keyed by text
/// is a cache of a few thousand entries, so colliding keys could only ever lengthen a bounded
/// probe.
pub type TextKeys = foldhash::fast::RandomState;

/// A cache of at most a given number of values keyed by text.
pub type TextCache<K, V> = Cache<K, V, UnitWeighter, TextKeys>;

/// A [`TextCache`] of at most `capacity` values.
pub fn text_cache<K: Eq + Hash, V: Clone>(capacity: usize) -> TextCache<K, V> {
    Cache::with(
        capacity,
        capacity as u64,
        UnitWeighter,
        TextKeys::default(),
        Default::default(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::BuildHasher;

    use sessiond_core::SessionId;

    use super::*;

    #[test]
    fn random_ids_spread_over_the_buckets() {
        let build = RandomKeys::default();
        let mut low_bits = HashMap::new();
        for _ in 0..4096 {
            *low_bits
                .entry(build.hash_one(SessionId::random()) % 64)
                .or_insert(0) += 1;
        }
        assert_eq!(low_bits.len(), 64);
        assert!(low_bits.values().all(|&n| n > 20), "{low_bits:?}");
        let mut top_bits = std::collections::HashSet::new();
        for _ in 0..256 {
            top_bits.insert(build.hash_one(SessionId::random()) >> 57);
        }
        assert!(top_bits.len() > 64, "hashbrown's tag bits vary");
    }
}
