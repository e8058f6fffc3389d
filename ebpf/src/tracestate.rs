//! The inbound `tracestate`, carried to the thread's outgoing requests
//! next to the injected `traceparent` (W3C: a vendor passes on the
//! `tracestate` of the request it continues).
//!
//! Capture: a read program whose server request carried a valid
//! `traceparent` tail-calls [`wirespan_tracestate`], which finds the
//! request's `tracestate` in the same scratch payload and keeps it for the
//! thread, with the trace it belongs to, in THREAD_STATE. The search has a
//! program of its own because the read programs have no verifier budget
//! left for it ("BPF program is too large").
//!
//! Injection: when the sk_msg program has inserted a `traceparent` whose
//! trace is the one kept for the sending thread, it inserts
//! `tracestate: <value>` after it (see [`inject`]).
//!
//! Not propagated, and counted (`tracestate_dropped`): values over 512
//! bytes (the spec's minimum to pass on), bytes outside printable ASCII,
//! and a `tracestate` in several header lines (which the spec combines;
//! the kernel would pass on only a part). A value split from its request
//! line across reads is not seen (as for `traceparent`, see `inbound`).

use aya_ebpf::{
    helpers::generated::{bpf_msg_pop_data, bpf_msg_pull_data},
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray, ProgramArray},
    programs::{SkMsgContext, TracePointContext},
};
use wirespan_common::{
    event::{Counter, WireContext},
    maps::{TAIL_TRACESTATE, THREAD_TRACE_ENTRIES},
};

use crate::{counters::bump, inbound, maps::SCRATCH};

#[map(name = "TAIL_CALLS")]
static TAIL_CALLS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Longest value passed on: the spec's minimum for propagators.
const MAX: usize = 512;
/// `tracestate: `.
const PREFIX: usize = 12;
/// The longest line: prefix, value, `\r\n`.
const LINE_MAX: usize = PREFIX + MAX + 2;

#[repr(C)]
pub struct State {
    trace_id: [u8; 16],
    len: u64,
    value: [u8; MAX],
}

/// A thread's inbound `tracestate`, with the trace it came with.
#[map(name = "THREAD_STATE")]
static THREAD_STATE: LruHashMap<u64, State> = LruHashMap::with_max_entries(THREAD_TRACE_ENTRIES, 0);

/// Where a State is built before it is inserted (too big for the stack).
#[map(name = "STATE_STAGE")]
static STATE_STAGE: PerCpuArray<State> = PerCpuArray::with_max_entries(1, 0);

/// Where an injected line is built. 8 bytes of slack for the last word.
#[map(name = "STATE_LINE")]
static STATE_LINE: PerCpuArray<[u8; LINE_MAX + 8]> = PerCpuArray::with_max_entries(1, 0);

/// The end of a read program whose request carried a valid `traceparent`
/// (the scratch's `tail` is filled): jumps to [`wirespan_tracestate`].
/// Without the program in its slot (its load failed, logged by the agent)
/// this returns and the read program ends as before.
#[inline(always)]
pub fn capture(ctx: &TracePointContext) {
    // SAFETY: a tail call replaces this program or returns; nothing of
    // this program's state is used after it.
    unsafe { TAIL_CALLS.tail_call(ctx, TAIL_TRACESTATE) };
}

/// Tail-called by the read programs, never attached.
#[tracepoint]
pub fn wirespan_tracestate(_ctx: TracePointContext) -> u32 {
    keep();
    0
}

#[inline(always)]
fn keep() -> Option<()> {
    let s = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, filled by the read program that jumped here
    // on this CPU a moment ago.
    let s = unsafe { &mut *s };
    let id = s.tail.id;
    let got = s.tail.got as usize;
    inbound::count(s, got, &inbound::TRACESTATE);
    // SAFETY: plain reads of our own map value; volatile so that they are
    // loads the verifier knows nothing of (one state from here on,
    // whichever step of the count wrote them).
    let (lines, at) = unsafe {
        (
            core::ptr::read_volatile(&s.tail.lines),
            core::ptr::read_volatile(&s.tail.first) as usize,
        )
    };
    if lines == 0 {
        // None now: an older value must not travel with this trace.
        let _ = THREAD_STATE.remove(id);
        return None;
    }
    // Several lines: the spec joins them into one list; passing on the
    // first alone would cut it.
    if lines > 1 {
        return dropped(id);
    }
    // What each exit of the count learned of `got`, forgotten likewise
    // ("BPF program is too large. Processed 1000001 insn").
    let got = inbound::launder(s, got);
    let at = inbound::skip_ows(s, at);
    let stage = STATE_STAGE.get_ptr_mut(0)?;
    // SAFETY: per-CPU value, ours while this program runs.
    let stage = unsafe { &mut *stage };
    // Spaces past the value: the injecting side copies all MAX bytes (a
    // size the verifier knows) and they become the line's padding.
    stage.value.fill(b' ');
    let mut k = 0usize;
    while k < MAX {
        if at + k >= got {
            return dropped(id); // the line goes on in a later read
        }
        let c = inbound::byte(s, at + k);
        if c == b'\r' {
            break;
        }
        if !(0x20..=0x7e).contains(&c) {
            return dropped(id);
        }
        stage.value[k & (MAX - 1)] = c;
        k += 1;
    }
    if k == MAX && inbound::byte(s, at + k) != b'\r' {
        return dropped(id);
    }
    if k == 0 {
        let _ = THREAD_STATE.remove(id);
        return None;
    }
    stage.len = k as u64;
    stage.trace_id = s.inbound.trace_id;
    let _ = THREAD_STATE.insert(id, stage, 0);
    None
}

#[inline(always)]
fn dropped(id: u64) -> Option<()> {
    let _ = THREAD_STATE.remove(id);
    bump(Counter::TracestateDropped);
    None
}

/// sk_msg: the `traceparent` line `w` was inserted for thread `id` and
/// ends at `at`. Inserts the thread's `tracestate` line there when it
/// belongs to the same trace. Returns the bytes inserted.
///
/// The line is padded with spaces before its `\r\n` to one of five sizes:
/// what the program writes into the message must have a size the verifier
/// knows, and trailing whitespace is not part of a header's value (RFC 9110
/// 5.5), nor of a `tracestate` list member (W3C: OWS).
#[inline(always)]
pub fn inject(ctx: &SkMsgContext, id: u64, w: &WireContext, at: usize) -> usize {
    // SAFETY: plain value; read at once, and only by this thread's sends.
    let Some(st) = (unsafe { THREAD_STATE.get(id) }) else {
        return 0;
    };
    if st.trace_id != w.trace_id {
        return 0;
    }
    let len = st.len as usize;
    if len == 0 || len > MAX {
        return 0;
    }
    let Some(line) = STATE_LINE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU value, ours while this program runs.
    let line = unsafe { &mut *line };
    line[..PREFIX].copy_from_slice(b"tracestate: ");
    // All of it, spaces past `len` included: a loop that stopped at `len`
    // left with one verifier state per length, each verifying the rest
    // (5.10: "BPF program is too large. Processed 1000001 insn").
    line[PREFIX..PREFIX + MAX].copy_from_slice(&st.value);
    let need = PREFIX + len + 2;
    let put = if need <= 32 {
        put::<32>(ctx, line, at)
    } else if need <= 64 {
        put::<64>(ctx, line, at)
    } else if need <= 128 {
        put::<128>(ctx, line, at)
    } else if need <= 256 {
        put::<256>(ctx, line, at)
    } else {
        put::<LINE_MAX>(ctx, line, at)
    };
    if put == 0 {
        bump(Counter::TracestateDropped);
    } else {
        bump(Counter::TracestateInjected);
    }
    put
}

/// Inserts the first `B` bytes of `line`, ended by `\r\n`, at `at`.
#[inline(always)]
fn put<const B: usize>(ctx: &SkMsgContext, line: &mut [u8; LINE_MAX + 8], at: usize) -> usize {
    line[B - 2] = b'\r';
    line[B - 1] = b'\n';
    if ctx.push_data(at as u32, B as u32, 0).is_err() {
        return 0;
    }
    // SAFETY: valid context; the range was just pushed.
    let pulled = unsafe { bpf_msg_pull_data(ctx.msg, at as u32, (at + B) as u32, 0) } == 0;
    let data = ctx.data();
    if !pulled || data + B > ctx.data_end() {
        // Never send the uninitialised gap.
        // SAFETY: valid context; the range was just pushed.
        unsafe { bpf_msg_pop_data(ctx.msg, at as u32, B as u32, 0) };
        return 0;
    }
    // SAFETY: B bytes at `data` are inside the message (checked above).
    unsafe { core::ptr::copy_nonoverlapping(line.as_ptr(), data as *mut u8, B) };
    B
}
