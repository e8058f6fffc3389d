//! The span identities of one connection's requests in flight, by the
//! parser's sequence number. Requests leave in the order they came (HTTP/1
//! pairs FIFO), so a short vector searched from the front does what a map
//! would, and unlike a map it is given back once empty: an idle keep-alive
//! connection holds nothing here.

use crate::link::ReqCtx;

#[derive(Default)]
pub(super) struct Started(Vec<(u64, ReqCtx, u32)>);

impl Started {
    pub(super) fn contains(&self, seq: u64) -> bool {
        self.0.iter().any(|e| e.0 == seq)
    }

    /// Adds the identity of request `seq`, decided on thread `tid`. Bounded
    /// by the parser's pending limit: every request leaves as an exchange.
    pub(super) fn insert(&mut self, seq: u64, ctx: ReqCtx, tid: u32) {
        if self.0.capacity() == 0 {
            // One request at a time without pipelining (Vec would start at
            // four); pipelining grows it.
            self.0.reserve_exact(1);
        }
        self.0.push((seq, ctx, tid));
    }

    /// Takes the identity of request `seq` out, if it has one.
    pub(super) fn take(&mut self, seq: u64) -> Option<(ReqCtx, u32)> {
        let i = self.0.iter().position(|e| e.0 == seq)?;
        let (_, ctx, tid) = self.0.remove(i);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some((ctx, tid))
    }

    /// Every identity still held, with its thread.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&ReqCtx, u32)> {
        self.0.iter().map(|(_, ctx, tid)| (ctx, *tid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_come_out_by_sequence_and_the_memory_goes_with_the_last() {
        let mut s = Started::default();
        let (a, b) = (ReqCtx::root(), ReqCtx::root());
        s.insert(3, a.clone(), 7);
        s.insert(4, b.clone(), 8);
        assert!(s.contains(3) && s.contains(4) && !s.contains(5));
        assert_eq!(s.take(4), Some((b, 8)));
        assert_eq!(s.take(4), None);
        assert_eq!(s.iter().count(), 1);
        assert_eq!(s.take(3), Some((a, 7)));
        assert_eq!(s.0.capacity(), 0);
    }
}
