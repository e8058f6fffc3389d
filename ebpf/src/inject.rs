//! `traceparent` header injection (off by default: `--inject-traceparent`).
//!
//! sock_ops puts client connections to allowlisted destination ports in a
//! SockHash; the sk_msg program attached to it sees every send on them.
//! When the send is the start of a request whose ids the kernel chose a
//! moment earlier on the same thread (the RequestIntent at syscall entry,
//! see `propagate`), it inserts `traceparent: 00-<trace>-<span>-01\r\n`
//! right after the request line. A request that already carries a
//! `traceparent` (an instrumented client) is left alone, and so is one
//! whose head is not complete within the first 1024 bytes of the send,
//! where a `traceparent` could be hiding beyond what we can scan.
//!
//! Hazard (KERNEL-NOTES): a socket in a SockHash reads through
//! `tcp_bpf_recvmsg`, under which a blocking `recv()` after a large send
//! and `shutdown(SHUT_WR)` sometimes fails with EAGAIN. That is why this is
//! off by default and scoped by port and cgroup.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, sk_action::SK_PASS},
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel_buf,
        generated::{bpf_msg_pop_data, bpf_msg_pull_data},
    },
    macros::{map, sk_msg},
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, SockHash, lpm_trie::Key},
    programs::{SkMsgContext, SockOpsContext},
};
use wirespan_common::{
    config::{KernelConfig, PROPAGATE_HEADER, PROPAGATE_HEADER_CIDRS},
    event::{Counter, WireContext},
    maps::{INJECT_CIDRS_ENTRIES, INJECT_PORTS_ENTRIES, INJECT_SOCKS_ENTRIES},
};

use crate::counters::bump;

#[map(name = "INJECT_PORTS")]
pub static INJECT_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(INJECT_PORTS_ENTRIES, 0);

/// `--inject-cidrs`: destination networks, 16-byte addresses with IPv4
/// mapped (`::ffff:a.b.c.d`), as a dual-stack socket reports an IPv4 peer.
#[map(name = "INJECT_CIDRS")]
static INJECT_CIDRS: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(INJECT_CIDRS_ENTRIES, 0);

#[map(name = "INJECT_SOCKS")]
pub static INJECT_SOCKS: SockHash<u64> = SockHash::with_max_entries(INJECT_SOCKS_ENTRIES, 0);

/// The ids of the request thread `pid_tgid` is sending right now, and the
/// local port of its connection (to be sure the send is that request's).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    ctx: WireContext,
    sport: u16,
    _pad: [u8; 6],
}

#[map(name = "INJECT_PENDING")]
static INJECT_PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16 * 1024, 0);

/// Bytes of the head scanned at most. 1024 byte-steps verify; 2048 fail
/// ("The sequence of 8193 jumps is too complex").
const SCAN: usize = 1024;
/// `traceparent: 00-` + 32 + `-` + 16 + `-01\r\n`.
const LINE: usize = 70;

/// Client sockets (by `struct sock` address) that read a `101 Switching
/// Protocols`: what they send from then on is another protocol, even when
/// it looks like a request, and is never injected.
#[map(name = "INJECT_UPGRADED")]
static INJECT_UPGRADED: LruHashMap<u64, u8> = LruHashMap::with_max_entries(16 * 1024, 0);

/// A read on `sk` returned bytes starting with an HTTP/1 status line
/// (`payload` holds at least its first 12 bytes): remember a 101. The
/// client reads the 101 before it sends anything after the upgrade, so
/// this is in place in time.
#[inline(always)]
pub fn response_read(cfg: &KernelConfig, sk: u64, payload: &[u8]) {
    if cfg.propagation & PROPAGATE_HEADER != 0 && payload.len() >= 12 && payload[9..12] == *b"101" {
        let _ = INJECT_UPGRADED.insert(sk, 1, 0);
    }
}

/// Called at a client request's syscall entry (see `propagate`).
#[inline(always)]
pub fn pending(id: u64, sk: u64, ctx: WireContext, sport: u16) {
    // SAFETY: presence test only.
    if unsafe { INJECT_UPGRADED.get(sk) }.is_some() {
        return;
    }
    let p = Pending {
        ctx,
        sport,
        _pad: [0; 6],
    };
    let _ = INJECT_PENDING.insert(id, p, 0);
}

/// sock_ops, a client connection is established: add it to the SockHash
/// when its destination port is allowlisted.
#[inline(always)]
pub fn maybe_add(ctx: &SockOpsContext, cookie: u64) {
    // bpf_sock_ops.remote_port: the port in network order, in the upper 16
    // bits on little-endian (the kernel's ctx rewrite shifts it).
    let port = u16::from_be((ctx.remote_port() >> 16) as u16);
    // SAFETY: presence test only.
    if unsafe { INJECT_PORTS.get(port) }.is_none() {
        return;
    }
    if crate::config::get().propagation & PROPAGATE_HEADER_CIDRS != 0 && !cidr_allowed(ctx) {
        return;
    }
    let mut key = cookie;
    // SAFETY: the sock_ops context is valid for the whole program run.
    if INJECT_SOCKS
        .update(&mut key, unsafe { &mut *ctx.ops }, BPF_NOEXIST as u64)
        .is_err()
    {
        bump(Counter::HeaderSockhashFull);
    }
}

/// Whether the peer's address is in INJECT_CIDRS.
#[inline(always)]
fn cidr_allowed(ctx: &SockOpsContext) -> bool {
    const AF_INET: u32 = 2;
    let mut addr = [0u8; 16];
    if ctx.family() == AF_INET {
        addr[10] = 0xff;
        addr[11] = 0xff;
        // Network order in memory: its bytes are the address's.
        addr[12..].copy_from_slice(&ctx.remote_ip4().to_ne_bytes());
    } else {
        // One load per word at a constant offset: as a loop, LLVM walks a
        // pointer through the context ("dereference of modified ctx ptr R4
        // off=24 disallowed").
        // SAFETY: fields of the context the kernel passed.
        let w = unsafe {
            let ip6 = &(*ctx.ops).remote_ip6;
            [
                core::ptr::read_volatile(&ip6[0]),
                core::ptr::read_volatile(&ip6[1]),
                core::ptr::read_volatile(&ip6[2]),
                core::ptr::read_volatile(&ip6[3]),
            ]
        };
        addr[..4].copy_from_slice(&w[0].to_ne_bytes());
        addr[4..8].copy_from_slice(&w[1].to_ne_bytes());
        addr[8..12].copy_from_slice(&w[2].to_ne_bytes());
        addr[12..].copy_from_slice(&w[3].to_ne_bytes());
    }
    INJECT_CIDRS.get(Key::new(128, addr)).is_some()
}

#[sk_msg]
pub fn wirespan_skmsg(ctx: SkMsgContext) -> u32 {
    inject(&ctx);
    SK_PASS
}

#[inline(always)]
fn inject(ctx: &SkMsgContext) {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: plain value, copied out at once.
    let Some(p) = (unsafe { INJECT_PENDING.get(id) }).copied() else {
        return;
    };
    // One intent, one send: whatever happens below, it is used up.
    let _ = INJECT_PENDING.remove(id);
    // SAFETY: reading a field of the context the kernel passed.
    if unsafe { (*ctx.msg).local_port } != u32::from(p.sport) || !p.ctx.is_valid() {
        return;
    }
    let size = ctx.size() as usize;
    let n = if size < SCAN { size } else { SCAN };
    // SAFETY: valid context; a range within the message.
    if unsafe { bpf_msg_pull_data(ctx.msg, 0, n as u32, 0) } != 0 {
        return;
    }
    let Some(line_end) = scan(ctx).and_then(launder) else {
        return;
    };
    if ctx.push_data(line_end as u32, LINE as u32, 0).is_err() {
        bump(Counter::HeaderInjectFailed);
        return;
    }
    let end = line_end + LINE;
    // SAFETY: valid context; the range was just pushed.
    let pulled = unsafe { bpf_msg_pull_data(ctx.msg, line_end as u32, end as u32, 0) } == 0;
    if !pulled || !write_line(ctx, &p.ctx) {
        // Never send the uninitialised gap: take it out again.
        // SAFETY: valid context; the range was just pushed.
        unsafe { bpf_msg_pop_data(ctx.msg, line_end as u32, LINE as u32, 0) };
        bump(Counter::HeaderInjectFailed);
        return;
    }
    // The push left the head in three scatterlist elements, and tcp_bpf
    // sends each element as its own TCP segment: a fast server then read
    // the request line alone and the `traceparent` line in a later read,
    // after the kernel had decided the thread's trace without it (one
    // chained request in ten under 16 keep-alive clients). One element for
    // the whole head (the scan proved it ends within `n`) makes it one
    // segment. Failing this costs only that, so it is not counted.
    bump(Counter::HeaderInjected);
    let state = crate::tracestate::inject(ctx, id, &p.ctx, end);
    // SAFETY: valid context; n + LINE + state <= the message's size after
    // the pushes.
    unsafe { bpf_msg_pull_data(ctx.msg, 0, (n + LINE + state) as u32, 0) };
}

/// The first SCAN bytes of the send, copied out of the message: loops over
/// a map value with a masked index verify linearly, whereas loops over
/// packet memory fork a state at every bounds check (each with its own
/// proven range), which grows quadratically ("BPF program is too large.
/// Processed 1000001 insn"). 16 bytes of slack keep 13-byte reads at any
/// masked index inside the value.
#[repr(C)]
pub struct HeadBuf {
    b: [u8; SCAN + 16],
    /// See [`launder`].
    stash: u64,
}

/// [`crate::maps::forget`] through the head buffer's stash. Without it
/// the 5.10 verifier ran out of budget after the scans, one path per
/// offset where a scan stopped.
#[inline(always)]
fn launder(v: usize) -> Option<usize> {
    let buf = INJECT_HEAD.get_ptr_mut(0)?;
    // SAFETY: per-CPU value, ours while this program runs.
    Some(crate::maps::forget(unsafe { &mut (*buf).stash }, v))
}

#[map(name = "INJECT_HEAD")]
static INJECT_HEAD: PerCpuArray<HeadBuf> = PerCpuArray::with_max_entries(1, 0);

/// Scans the pulled head: it must start with a method, its head must end
/// (`\r\n\r\n`) within the scan, and it must hold no `traceparent` line.
/// Returns the offset just past the request line.
///
/// Each loop's only state is its index and it leaves on a match with a
/// value that dies at once; the one offset we keep, the request line's
/// end, is found last (a live loop result would re-verify the next loop
/// once per possible value).
#[inline(always)]
fn scan(ctx: &SkMsgContext) -> Option<usize> {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + 4 > end {
        return None;
    }
    // SAFETY: bounds checked above.
    let w = unsafe { *(data as *const [u8; 4]) };
    match &w {
        b"GET " | b"POST" | b"PUT " | b"HEAD" | b"DELE" | b"PATC" | b"OPTI" => {}
        _ => return None,
    }
    let avail = end - data;
    let n = if avail < SCAN { avail } else { SCAN };
    let buf = INJECT_HEAD.get_ptr_mut(0)?;
    // SAFETY: per-CPU value, ours while this program runs; the length is
    // masked into [1, SCAN] and the source is the pulled message data.
    let copied = unsafe {
        let len = ((n - 1) & (SCAN - 1)) + 1;
        let dst = &mut (*buf).b;
        bpf_probe_read_kernel_buf(data as *const u8, &mut dst[..len]).is_ok()
    };
    if !copied {
        return None;
    }
    // Zeros past the copy: the scan reads up to 13 bytes ahead, and stale
    // bytes of an earlier message must not look like a `traceparent`.
    // SAFETY: as above; the offset is masked into [1, SCAN] (n >= 4), so
    // 16 bytes from it are inside the value.
    unsafe {
        let z = (*buf).b.as_mut_ptr().add(((n - 1) & (SCAN - 1)) + 1);
        core::ptr::write_unaligned(z.cast::<u64>(), 0);
        core::ptr::write_unaligned(z.add(8).cast::<u64>(), 0);
    }
    // SAFETY: as above.
    let b = unsafe { &(*buf).b };
    match head(b, n) {
        Head::Clean => {}
        Head::HasTraceparent => {
            bump(Counter::HeaderAlreadyPresent);
            return None;
        }
        Head::TooLong => {
            bump(Counter::HeaderHeadTooLong);
            return None;
        }
    }
    // What each exit of `head` learned of `n` forgotten, so that what
    // follows is verified once, not once per exit (5.10: "BPF program is
    // too large. Processed 1000001 insn").
    let n = launder(n)?;
    find_line_end(b, n)
}

enum Head {
    /// Ends within the scan, no `traceparent`.
    Clean,
    HasTraceparent,
    /// Does not end within the scan (or the message).
    TooLong,
}

#[inline(always)]
fn read_u32(b: &[u8; SCAN + 16], i: usize) -> u32 {
    let i = i & (SCAN - 1);
    // SAFETY: i < SCAN, so i + 4 is inside the value.
    unsafe { core::ptr::read_unaligned(b.as_ptr().add(i).cast::<u32>()) }
}

#[inline(always)]
fn read_u64(b: &[u8; SCAN + 16], i: usize) -> u64 {
    let i = i & (SCAN - 1);
    // SAFETY: i < SCAN, so i + 8 is inside the value.
    unsafe { core::ptr::read_unaligned(b.as_ptr().add(i).cast::<u64>()) }
}

/// Walks the first `n` bytes up to the `\r\n\r\n` that ends the head,
/// looking for a line that starts with `traceparent:` (any case).
#[inline(always)]
fn head(b: &[u8; SCAN + 16], n: usize) -> Head {
    // OR-ing 0x20 lower-cases letters and leaves ':' as it is.
    const LOW8: u64 = 0x2020_2020_2020_2020;
    const LOW4: u32 = 0x2020_2020;
    let tracepar = u64::from_le_bytes(*b"tracepar");
    let ent = u32::from_le_bytes(*b"ent:");
    let crlfcrlf = u32::from_le_bytes(*b"\r\n\r\n");
    let mut i = 0usize;
    while i < SCAN {
        if i + 4 > n {
            return Head::TooLong;
        }
        let four = read_u32(b, i);
        if four == crlfcrlf {
            return Head::Clean;
        }
        // Past `n` the bytes are zeros (see `scan`), which match nothing.
        // One branch per step, not one per compared part: a path that
        // matched a part and failed the next would leave the loop with
        // different knowledge than the main path and go on alone (5.10:
        // "BPF program is too large").
        let miss = ((read_u64(b, i + 1) | LOW8) ^ tracepar)
            | u64::from((read_u32(b, i + 9) | LOW4) ^ ent)
            | u64::from((four & 0xff) ^ u32::from(b'\n'));
        if miss == 0 {
            return Head::HasTraceparent;
        }
        i += 1;
    }
    Head::TooLong
}

/// Offset just past the first `\n` within the first `n` bytes.
#[inline(always)]
fn find_line_end(b: &[u8; SCAN + 16], n: usize) -> Option<usize> {
    let mut i = 0usize;
    while i < SCAN {
        if i >= n {
            return None;
        }
        if b[i & (SCAN - 1)] == b'\n' {
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes the header line into the pulled gap at the start of the data.
#[inline(always)]
fn write_line(ctx: &SkMsgContext, w: &WireContext) -> bool {
    let mut line = [0u8; LINE];
    line[..16].copy_from_slice(b"traceparent: 00-");
    let mut o = 16;
    for b in w.trace_id {
        line[o] = HEX[(b >> 4) as usize];
        line[o + 1] = HEX[(b & 15) as usize];
        o += 2;
    }
    line[o] = b'-';
    o += 1;
    for b in w.span_id {
        line[o] = HEX[(b >> 4) as usize];
        line[o + 1] = HEX[(b & 15) as usize];
        o += 2;
    }
    line[o..o + 5].copy_from_slice(b"-01\r\n");
    let data = ctx.data();
    if data + LINE > ctx.data_end() {
        return false;
    }
    // SAFETY: LINE bytes at `data` are inside the message (checked above).
    unsafe { core::ptr::copy_nonoverlapping(line.as_ptr(), data as *mut u8, LINE) };
    true
}
