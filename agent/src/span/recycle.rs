//! Attribute lists travel back from the export threads to capture.
//!
//! Every span carries a list of about a dozen attributes, made on the
//! capture thread and dropped on an export thread. glibc's allocator
//! serves a thread from what that thread freed, so capture never got these
//! blocks back: each new list took the allocator's slow path (`_int_malloc`
//! was the largest allocator cost in a profile of the agent at 10k req/s),
//! and each free another one on the export side. Instead, the export
//! threads hand the emptied lists to a pool after each batch, and capture
//! takes them from there in bulk.
//!
//! Bounded: at most [`MAX_POOLED`] lists wait in the pool and
//! [`MAX_SPARE`] on the capture side; beyond that they are freed as before.
//! Capture only ever `try_lock`s the pool, so it never waits for an
//! exporter.

use std::sync::Mutex;

use super::{AttrValue, Span};

pub type Attrs = Vec<(&'static str, AttrValue)>;

/// Lists waiting in the pool at most (each about 480 bytes).
pub const MAX_POOLED: usize = 1024;
/// Lists capture takes from the pool at once, and keeps at most.
pub const MAX_SPARE: usize = 256;
/// What a new list starts with: the attributes of a server span.
const ATTRS: usize = 12;

static POOL: Mutex<Vec<Attrs>> = Mutex::new(Vec::new());

/// Export side: the batch is done with; its spans are dropped and their
/// attribute lists, emptied, go to the pool (while there is room).
pub fn give_back(batch: &mut Vec<Span>) {
    let Ok(mut pool) = POOL.lock() else {
        batch.clear();
        return;
    };
    for mut span in batch.drain(..) {
        if pool.len() >= MAX_POOLED {
            break;
        }
        let mut attrs = std::mem::take(&mut span.attributes);
        attrs.clear();
        if attrs.capacity() >= ATTRS {
            pool.push(attrs);
        }
    }
}

/// After finding the pool empty, lists made new before looking again:
/// with no exporter giving back (`--print off`), a lock per span would be
/// all this did.
const EMPTY_BACKOFF: u32 = 64;

/// Capture side: empty attribute lists, from the pool when it has some.
#[derive(Default)]
pub struct Spare {
    lists: Vec<Attrs>,
    backoff: u32,
}

impl Spare {
    pub fn take(&mut self) -> Attrs {
        if let Some(list) = self.lists.pop() {
            return list;
        }
        if self.backoff > 0 {
            self.backoff -= 1;
        } else if let Ok(mut pool) = POOL.try_lock() {
            let n = pool.len().min(MAX_SPARE);
            let from = pool.len() - n;
            self.lists.extend(pool.drain(from..));
            if n == 0 {
                self.backoff = EMPTY_BACKOFF;
            }
        }
        self.lists
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(ATTRS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_come_back_empty_and_the_pool_stays_bounded() {
        let mut spare = Spare::default();
        let mut list = spare.take();
        assert!(list.is_empty() && list.capacity() >= ATTRS);
        list.push(("k", AttrValue::Int(1)));
        let span = |attributes: Attrs| Span {
            trace_id: [1; 16],
            span_id: [1; 8],
            parent_span_id: None,
            trace_state: String::new(),
            name: "GET /".into(),
            kind: super::super::SpanKind::Server,
            start_unix_ns: 0,
            end_unix_ns: 0,
            attributes,
            status: super::super::Status::Unset,
            process: Default::default(),
        };
        let mut batch: Vec<Span> = (0..MAX_POOLED + 10).map(|_| span(list.clone())).collect();
        give_back(&mut batch);
        assert!(batch.is_empty());
        // Other tests may use the pool at the same time: only bounds hold.
        let pooled = POOL.lock().map(|p| p.len()).unwrap_or(0);
        assert!(pooled <= MAX_POOLED);
        let again = spare.take();
        assert!(again.is_empty());
        assert!(spare.lists.len() < MAX_SPARE);
    }
}
