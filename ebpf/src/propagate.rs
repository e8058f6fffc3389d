//! Trace context for the TCP option path: ids are chosen here, in the
//! kernel, at the moment a request is written or read, because the option
//! leaves with the request's segments, long before the agent sees them.
//!
//! - A thread reads bytes that start an HTTP request: its trace is the one
//!   the peer's TCP option brought (RX_CONTEXT), or a new one. The agent is
//!   told with a ServerContext event, just before the data event.
//! - A thread writes bytes that start an HTTP request: a new span id, in the
//!   thread's trace if it is serving a request, else in a new trace. The
//!   ids go to TX_CONTEXT (for the sock_ops program to write into the
//!   option) and into the RequestIntent event (for the agent's span).
//! - The thread writes a response: it serves nothing any more.

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_probe_read_kernel},
    macros::map,
    maps::LruHashMap,
};
use wirespan_common::{
    config::{KernelConfig, PROPAGATE_HEADER, PROPAGATE_TCP_OPTION},
    event::{
        ContextEvent, ContextSource, Counter, Direction, EventHeader, EventKind, ThreadTrace,
        WireContext,
    },
    maps::{RX_CONTEXT_ENTRIES, THREAD_TRACE_ENTRIES, TX_CONTEXT_ENTRIES},
};

use crate::{
    counters::bump,
    inbound::Inbound,
    maps::{EVENTS, Scratch, batched_wakeup},
};

#[map(name = "TX_CONTEXT")]
pub static TX_CONTEXT: LruHashMap<u64, WireContext> =
    LruHashMap::with_max_entries(TX_CONTEXT_ENTRIES, 0);

#[map(name = "RX_CONTEXT")]
pub static RX_CONTEXT: LruHashMap<u64, WireContext> =
    LruHashMap::with_max_entries(RX_CONTEXT_ENTRIES, 0);

#[map(name = "THREAD_TRACE")]
pub static THREAD_TRACE: LruHashMap<u64, ThreadTrace> =
    LruHashMap::with_max_entries(THREAD_TRACE_ENTRIES, 0);

/// Any propagation on: the kernel chooses the ids of client requests.
#[inline(always)]
pub fn enabled(cfg: &KernelConfig) -> bool {
    cfg.propagation & (PROPAGATE_TCP_OPTION | PROPAGATE_HEADER) != 0
}

/// The socket cookie of `sk`, or 0 when the socket has none (no sock_ops
/// program ever asked for it: opened before the agent, or outside its
/// cgroup) or the offset is unknown.
#[inline(always)]
fn cookie(cfg: &KernelConfig, sk: u64) -> u64 {
    let off = cfg.sock.skc_cookie;
    if sk == 0 || off == u32::MAX {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel tolerates bad addresses.
    unsafe { bpf_probe_read_kernel((sk as *const u8).add(off as usize).cast::<u64>()) }.unwrap_or(0)
}

#[inline(always)]
fn random_words(out: &mut [u8]) {
    let mut i = 0;
    while i + 4 <= out.len() {
        // SAFETY: helper without arguments.
        let r = unsafe { bpf_get_prandom_u32() }.to_ne_bytes();
        out[i..i + 4].copy_from_slice(&r);
        i += 4;
    }
}

/// Ids for a client request about to be written by thread `id` on `sk`
/// (local port `sport`). All zero when propagation is off or the socket
/// has no cookie (the agent then chooses the ids itself, as before).
#[inline(always)]
pub fn client_request(cfg: &KernelConfig, id: u64, sk: u64, sport: u16) -> WireContext {
    let mut ctx = WireContext::default();
    if !enabled(cfg) {
        return ctx;
    }
    let c = cookie(cfg, sk);
    if c == 0 {
        return ctx;
    }
    // SAFETY: plain value, copied out at once.
    match unsafe { THREAD_TRACE.get(id) } {
        Some(t) if t.in_flight != 0 && t.ambiguous == 0 => ctx.trace_id = t.trace_id,
        _ => random_words(&mut ctx.trace_id),
    }
    random_words(&mut ctx.span_id);
    if cfg.propagation & PROPAGATE_TCP_OPTION != 0 {
        let _ = TX_CONTEXT.insert(c, ctx, 0);
    }
    if cfg.propagation & PROPAGATE_HEADER != 0 {
        crate::inject::pending(id, sk, ctx, sport);
    }
    ctx
}

/// Thread `id` read bytes starting an HTTP request on `sk`: decide its
/// trace and tell the agent. True when the request carried a valid
/// `traceparent` (its ids are in `s.inbound`).
#[inline(always)]
pub fn server_request(
    cfg: &KernelConfig,
    id: u64,
    fd: i32,
    sk: u64,
    s: &mut Scratch,
    got: usize,
) -> bool {
    if !enabled(cfg) {
        return false;
    }
    // The request's own traceparent decides the thread's trace, as it
    // decides the server span's in the agent.
    let inbound = crate::inbound::traceparent(s, got) == Inbound::Found;
    let mut ctx = WireContext::default();
    let mut source = ContextSource::New;
    let c = cookie(cfg, sk);
    if c == 0 {
        bump(Counter::TcpOptNoCookie);
    // SAFETY: plain value, copied out at once.
    } else if let Some(rx) = unsafe { RX_CONTEXT.get(c) } {
        ctx = *rx;
        source = ContextSource::TcpOption;
        // One option, one request: a later request on this connection whose
        // segment carried none must not inherit it.
        let _ = RX_CONTEXT.remove(c);
    }
    if source == ContextSource::New {
        random_words(&mut ctx.trace_id);
    }
    let thread_trace = if inbound {
        s.inbound.trace_id
    } else {
        ctx.trace_id
    };
    if source == ContextSource::New {
        // What the agent will choose too: no correction needed.
        ctx.trace_id = thread_trace;
    }
    serving(id, thread_trace);

    let Some(mut entry) = EVENTS.reserve::<ContextEvent>(0) else {
        bump(Counter::RingbufFull);
        return inbound;
    };
    let ev = entry.as_mut_ptr();
    // The data event's own time (emit_data read the clock already).
    let now = s.ev.hdr.ts_exit_ns;
    // SAFETY: reserved ring-buffer memory of ContextEvent size; every field
    // is written before submit.
    unsafe {
        (*ev).hdr = EventHeader {
            kind: EventKind::ServerContext as u8,
            direction: Direction::Ingress as u8,
            syscall: 0,
            flags: 0,
            tgid: (id >> 32) as u32,
            tid: id as u32,
            fd,
            ts_enter_ns: now,
            ts_exit_ns: now,
            sk,
            ret: 0,
            captured: 0,
            seq: 0,
        };
        (*ev).ctx = ctx;
        (*ev).source = source as u8;
        (*ev)._pad = [0; 7];
    }
    entry.submit(batched_wakeup(core::mem::size_of::<ContextEvent>() as u64));
    bump(Counter::ControlEvents);
    inbound
}

/// Thread `id` read a request of trace `trace_id`: one more in flight.
///
/// A thread's entry stays in THREAD_TRACE between its requests, idle
/// (`in_flight` 0), and is rewritten in place, as INFLIGHT's is: an LRU
/// insert and delete per request were ~7% of the kernel time per request
/// (perf, nginx at saturation). It leaves with its thread (`proc_exit`) or
/// by LRU eviction.
#[inline(always)]
fn serving(id: u64, trace_id: [u8; 16]) {
    if let Some(t) = THREAD_TRACE.get_ptr_mut(id) {
        // SAFETY: live map value of this thread; only this thread updates
        // it from the kernel (the agent's corrections write the value back
        // with only trace_id changed, and only while it is in flight).
        unsafe {
            if (*t).in_flight == 0 {
                (*t).trace_id = trace_id;
                (*t).in_flight = 1;
                (*t).ambiguous = 0;
            } else {
                (*t).in_flight = (*t).in_flight.saturating_add(1);
                (*t).ambiguous = 1;
            }
        }
        return;
    }
    let t = ThreadTrace {
        trace_id,
        in_flight: 1,
        ambiguous: 0,
    };
    let _ = THREAD_TRACE.insert(id, t, 0);
}

/// Thread `id` wrote bytes starting an HTTP response: one request fewer in
/// flight; with none left, its next client call starts a new trace.
#[inline(always)]
pub fn server_response(cfg: &KernelConfig, id: u64) {
    if !enabled(cfg) {
        return;
    }
    let Some(t) = THREAD_TRACE.get_ptr_mut(id) else {
        return;
    };
    // SAFETY: live map value of this thread; only this thread updates it
    // from the kernel. Left idle in place (see `serving`).
    unsafe { (*t).in_flight = (*t).in_flight.saturating_sub(1) };
}

/// Thread `id` exits: its entry leaves with it (see `serving`).
#[inline(always)]
pub fn thread_exit(id: u64) {
    if enabled(&crate::config::get()) {
        let _ = THREAD_TRACE.remove(id);
    }
}
