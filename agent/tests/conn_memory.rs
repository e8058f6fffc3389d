//! Heap kept per idle keep-alive connection by the connection table: most
//! of the bench's `scaling` bytes per connection. A counting
//! allocator (this test binary's own, hence a separate test file) measures
//! the live heap before and after 10,000 server connections that each
//! carried one request and its response and stay open.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering::Relaxed},
    },
};

use wirespan::{clock::BootClock, conn::ConnTable, select::Selector, stats::Stats};
use wirespan_common::event::{Direction, EventHeader, Tuple, user::Event};

struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_BLOCKS: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(l.size() as i64, Relaxed);
        LIVE_BLOCKS.fetch_add(1, Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE_BYTES.fetch_sub(l.size() as i64, Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Relaxed);
        // SAFETY: the caller's pointer and layout, passed on.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new as i64 - l.size() as i64, Relaxed);
        // SAFETY: the caller's pointer, layout and size, passed on.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CONNS: i32 = 10_000;
/// What xtask's load client sends, and nginx's answer to it (head and the
/// 312-byte body).
const REQUEST: &[u8] =
    b"GET /bench.json HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: wirespan-bench\r\n\r\n";
const RESPONSE_HEAD: &str = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 \
     16:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 312\r\nLast-Modified: \
     Sat, 21 Nov 2026 15:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"6720d8a0-138\"\r\n\
     Accept-Ranges: bytes\r\n\r\n";

fn data(
    t: &mut ConnTable,
    fd: i32,
    dir: Direction,
    ts: u64,
    bytes: &[u8],
    out: &mut Vec<wirespan::span::Span>,
) {
    let tuple = Tuple::v4(
        [127, 0, 0, 1],
        8080,
        [127, 0, 0, 1],
        40_000u16.wrapping_add(fd as u16),
    );
    let hdr = EventHeader {
        tgid: std::process::id(),
        tid: std::process::id(),
        fd,
        ts_enter_ns: ts,
        ts_exit_ns: ts + 10,
        sk: 0x1000 + fd as u64,
        ret: bytes.len() as i64,
        captured: bytes.len() as u32,
        ..Default::default()
    };
    t.on_event(&Event::data(hdr, dir, tuple, bytes), out);
}

#[test]
fn heap_per_idle_keep_alive_connection() {
    let mut t = ConnTable::new(
        Selector {
            pids: vec![std::process::id()],
            ..Default::default()
        },
        BootClock::measure(),
        16_384,
        Arc::new(Stats::default()),
    );
    let mut response = RESPONSE_HEAD.as_bytes().to_vec();
    response.extend(std::iter::repeat_n(b'x', 312));
    let mut out = Vec::new();
    // Warm the process cache and the table's scratch buffers.
    data(&mut t, 100_000, Direction::Ingress, 1, REQUEST, &mut out);
    data(&mut t, 100_000, Direction::Egress, 2, &response, &mut out);
    out.clear();
    out.shrink_to_fit();
    let (b0, n0) = (LIVE_BYTES.load(Relaxed), LIVE_BLOCKS.load(Relaxed));
    for round in 0..2u64 {
        for fd in 0..CONNS {
            let ts = 1_000 + round * 1_000_000 + fd as u64 * 10;
            data(&mut t, fd, Direction::Ingress, ts, REQUEST, &mut out);
            data(&mut t, fd, Direction::Egress, ts + 5, &response, &mut out);
            out.clear();
        }
    }
    out.shrink_to_fit();
    let bytes = (LIVE_BYTES.load(Relaxed) - b0) as f64 / f64::from(CONNS);
    let blocks = (LIVE_BLOCKS.load(Relaxed) - n0) as f64 / f64::from(CONNS);
    println!("per idle keep-alive connection: {bytes:.0} bytes in {blocks:.1} heap blocks");
    assert_eq!(t.len(), CONNS as usize + 1);
    // The boxed `Conn` and its slot in the table, nothing else: no head
    // buffer, request queue or identity list is kept between exchanges
    // (2,616 bytes in 4 blocks before that was so).
    assert!(blocks <= 1.0, "{blocks} heap blocks per idle connection");
    assert!(bytes < 1024.0, "{bytes} bytes per idle connection");
}
