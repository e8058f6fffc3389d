//! A fast hasher for the agent's tables keyed by integers the kernel
//! hands out: tgids, tids and fds. std's SipHash resists keys chosen to
//! collide, which these are not (no peer picks its pid or fd), and it was
//! a measurable part of every event: the connection table is looked up
//! twice per data event, the linker's thread table three times per
//! request. rustc's FxHash (the `rustc-hash` crate) is a multiply and a
//! rotate per word.
//!
//! Not for keys a peer controls (addresses, ports, header bytes): those
//! keep std's hasher, so that a remote client cannot make one table slow.

use std::collections::HashMap;

/// A `HashMap` keyed by kernel-assigned integers.
pub type IntMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hasher};

    use super::*;

    #[test]
    fn keys_that_differ_anywhere_spread_over_buckets() {
        let hash = |k: (u32, i32)| {
            let mut h = rustc_hash::FxBuildHasher.build_hasher();
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
