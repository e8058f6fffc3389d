//! A fast hasher for the agent's tables keyed by integers the kernel
//! hands out: tgids, tids and fds. std's SipHash resists keys chosen to
//! collide, which these are not (no peer picks its pid or fd), and it was
//! a measurable part of every event: the connection table is looked up
//! twice per data event, the linker's thread table three times per
//! request. This is the multiply-rotate scheme of rustc's FxHash.
//!
//! Not for keys a peer controls (addresses, ports, header bytes): those
//! keep std's hasher, so that a remote client cannot make one table slow.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

/// A `HashMap` keyed by kernel-assigned integers.
pub type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// Odd, with well spread bits (rustc-hash 2's constant).
const K: u64 = 0xf135_7aea_2e62_a9c5;

#[derive(Clone, Copy, Debug, Default)]
pub struct IntHasher(u64);

impl IntHasher {
    fn add(&mut self, word: u64) {
        self.0 = self.0.wrapping_add(word).wrapping_mul(K);
    }
}

impl Hasher for IntHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Integer keys never get here; anything else is hashed correctly,
        // a word at a time.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_i32(&mut self, i: i32) {
        self.add(u64::from(i as u32));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        // The product's high bits depend on every input bit, its low bits
        // only on the input's low bits; the table picks buckets with the
        // low bits, so bring the high ones down.
        self.0.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_differ_anywhere_spread_over_buckets() {
        let hash = |k: (u32, i32)| {
            let mut h = IntHasher::default();
            h.write_u32(k.0);
            h.write_i32(k.1);
            h.finish()
        };
        // One process's fds, and one fd in many processes: the low bits a
        // 1,024-bucket table uses must take many values in both.
        for keys in [
            (0..1024).map(|fd| (4242, fd)).collect::<Vec<_>>(),
            (0..1024).map(|pid| (pid << 12, 7)).collect(),
        ] {
            let mut buckets: Vec<u64> = keys.iter().map(|&k| hash(k) & 1023).collect();
            buckets.sort_unstable();
            buckets.dedup();
            assert!(buckets.len() > 600, "{} distinct buckets", buckets.len());
        }
        let mut m: IntMap<(u32, i32), u32> = IntMap::default();
        m.insert((1, 2), 3);
        assert_eq!(m.get(&(1, 2)), Some(&3));
    }
}
