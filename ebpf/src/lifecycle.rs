//! accept/connect/close: connection boundaries. They let the agent reset a
//! reused fd's state and flush requests still in flight when a socket closes.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use wirespan_common::{
    event::{AF_INET, AF_INET6, Counter, EventHeader, EventKind},
    maps::SocketEntry,
};

use crate::{
    counters::bump,
    maps::{
        EVENTS, Inflight, SOCKET_FDS, START_UNKNOWN, batched_wakeup, put_inflight, take_inflight,
    },
};

// Offsets from the syscalls:* tracepoint format files: args start at 16,
// the return value of sys_exit_* is at 16.
const ARG0: usize = 16;
const ARG1: usize = 24;
const RET: usize = 16;
const EINPROGRESS: i64 = 115;

/// Sends a header-only event. A full ring buffer is counted, never silent.
#[inline(always)]
pub fn emit_control(kind: EventKind, tgid: u32, tid: u32, fd: i32, ret: i64) {
    emit_header(kind, tgid, tid, fd, ret, 0);
}

/// [`emit_control`] with the socket's `struct sock` address.
#[inline(always)]
pub fn emit_header(kind: EventKind, tgid: u32, tid: u32, fd: i32, ret: i64, sk: u64) {
    let Some(mut entry) = EVENTS.reserve::<EventHeader>(0) else {
        bump(Counter::RingbufFull);
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    entry.write(EventHeader {
        kind: kind as u8,
        direction: 0,
        syscall: 0,
        flags: 0,
        tgid,
        tid,
        fd,
        ts_enter_ns: now,
        ts_exit_ns: now,
        sk,
        ret,
        captured: 0,
        seq: 0,
    });
    entry.submit(batched_wakeup(core::mem::size_of::<EventHeader>() as u64));
    bump(Counter::ControlEvents);
}

#[inline(always)]
fn ids() -> (u64, u32, u32) {
    let id = bpf_get_current_pid_tgid();
    (id, (id >> 32) as u32, id as u32)
}

#[inline(always)]
fn on_accept_exit(ctx: &TracePointContext) {
    let (_, tgid, tid) = ids();
    if crate::config::ignored(tgid) {
        return;
    }
    // SAFETY: offset from the tracepoint format.
    let ret = unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(-1);
    if ret >= 0 {
        emit_control(EventKind::Accept, tgid, tid, ret as i32, ret);
    }
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn exit_accept(ctx: TracePointContext) -> u32 {
    on_accept_exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn exit_accept4(ctx: TracePointContext) -> u32 {
    on_accept_exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn enter_connect(ctx: TracePointContext) -> u32 {
    let (id, tgid, _) = ids();
    if crate::config::ignored(tgid) {
        return 0;
    }
    // SAFETY: offsets from the tracepoint format; user memory is read with
    // the faulting-safe helper.
    let (fd, addr) = unsafe {
        (
            ctx.read_at::<u64>(ARG0).unwrap_or(0),
            ctx.read_at::<u64>(ARG1).unwrap_or(0),
        )
    };
    let family: u16 = unsafe { bpf_probe_read_user(addr as *const u16) }.unwrap_or(0);
    if family != AF_INET && family != AF_INET6 {
        return 0;
    }
    let inf = Inflight {
        ts_enter: unsafe { bpf_ktime_get_ns() },
        buf: 0,
        iovcnt: 0,
        sk: 0,
        fd: fd as i32,
        syscall: 0,
        is_connect: 1,
        live: 1,
        start: START_UNKNOWN,
    };
    if !put_inflight(id, &inf) {
        bump(Counter::InflightFull);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn exit_connect(ctx: TracePointContext) -> u32 {
    let (id, tgid, tid) = ids();
    let Some((inf, _)) = take_inflight(id) else {
        return 0;
    };
    if inf.is_connect != 1 {
        return 0;
    }
    let ret = unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(-1);
    if ret == 0 || ret == -EINPROGRESS {
        // Known TCP from now on, socket not yet resolved (0): the first
        // request written on it resolves it for a RequestIntent.
        let key = ((tgid as u64) << 32) | (inf.fd as u32 as u64);
        if SOCKET_FDS.insert(key, SocketEntry::default(), 0).is_err() {
            bump(Counter::SocketFdsFull);
        }
        emit_control(EventKind::Connect, tgid, tid, inf.fd, ret);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_close")]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    let (_, tgid, tid) = ids();
    let fd = unsafe { ctx.read_at::<u64>(ARG0) }.unwrap_or(u64::MAX) as u32;
    let key = ((tgid as u64) << 32) | fd as u64;
    // Only fds that moved TCP bytes are in SOCKET_FDS; every other close()
    // on the node costs one lookup and nothing else.
    // SAFETY: the value is only tested for presence.
    if unsafe { SOCKET_FDS.get(key) }.is_some() {
        let _ = SOCKET_FDS.remove(key);
        emit_control(EventKind::Close, tgid, tid, fd as i32, 0);
    }
    0
}
