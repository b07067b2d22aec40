//! A hasher for keys that are random already: session ids (random UUIDs this process made) and
//! SHA-256 digests of tokens. Hashing them again (SipHash) costs time on every request and buys
//! nothing: their bytes are uniformly distributed, and only ids and digests of tokens this
//! process issued or verified are ever inserted, so nobody can choose colliding keys.

use std::hash::{BuildHasherDefault, Hasher};

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
