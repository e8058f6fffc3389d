//! The read/write family of syscalls. sys_enter_* remembers the buffer;
//! sock:sock_*_length (see `sock`) marks the syscall as INET TCP socket
//! I/O; sys_exit_* then copies the first bytes that really moved and sends
//! a data event. Syscalls on files, pipes and unix sockets end at a map
//! delete.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::bpf_probe_read_user as raw_probe_read_user,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use wirespan_common::{
    config::{Classifier, MAX_CAPTURE, PROPAGATE_HEADER, SockOffsets},
    event::{
        Counter, DATA_PREFIX, Direction, EventHeader, EventKind, FLAG_LENGTH_ONLY, FLAG_SEQ,
        FLAG_TLS, IntentEvent, Syscall, Tuple,
    },
    maps::{SOCKET_MUTE_BITS, SOCKET_MUTED, SOCKET_MUTED_TLS, SocketEntry},
};

use crate::{
    counters::bump,
    fdtable::tcp_sock_of_fd,
    maps::{
        EVENTS, INFLIGHT, Inflight, SCRATCH, SOCKET_FDS, START_NONE, START_REQUEST, START_RESPONSE,
        START_UNKNOWN, Scratch, batched_wakeup, put_inflight, take_inflight, urgent_wakeup,
    },
    sock::read_tuple,
};

// syscalls:* tracepoint formats: args at 16, 24, 32, 40; sys_exit ret at 16.
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const ARG3: usize = 40;
const RET: usize = 16;
/// recv flag: read without consuming (include/linux/socket.h).
const MSG_PEEK: u64 = 2;

/// `MAX_CAPTURE - 1`: masks that the verifier turns into value bounds.
const MASK: usize = MAX_CAPTURE - 1;
/// iovecs copied from at most, for readv/writev/sendmsg/recvmsg.
const MAX_IOV: u64 = 8;

#[inline(always)]
fn on_enter(ctx: &TracePointContext, syscall: Syscall, buf_arg: usize, cnt_arg: usize) {
    let id = bpf_get_current_pid_tgid();
    if crate::config::ignored((id >> 32) as u32) {
        return;
    }
    // SAFETY: offsets from the tracepoint format files.
    let (fd, buf, cnt) = unsafe {
        (
            ctx.read_at::<u64>(ARG0).unwrap_or(u64::MAX),
            ctx.read_at::<u64>(buf_arg).unwrap_or(0),
            ctx.read_at::<u64>(cnt_arg).unwrap_or(0),
        )
    };
    if peeks(ctx, syscall, cnt) {
        // Its sys_exit must not take a syscall still marked in flight.
        if let Some(t) = INFLIGHT.get_ptr_mut(id) {
            // SAFETY: this thread's own entry; only this thread writes it.
            unsafe { (*t).sys.live = 0 };
        }
        return;
    }
    let egress = syscall.direction() == Direction::Egress;
    let mut inf = Inflight {
        ts_enter: 0, // see below
        buf,
        iovcnt: cnt,
        sk: 0,
        fd: fd as i32,
        syscall: syscall as u8,
        is_connect: 0,
        live: 1,
        start: START_UNKNOWN,
    };
    // A send on a socket known to be TCP (it moved TCP bytes before, or
    // was connect()ed): what it starts is read now, once, for the request
    // intent below and for the data event at sys_exit.
    let mut known = None;
    if egress {
        let key = ((id >> 32) << 32) | (fd as u32 as u64);
        // SAFETY: plain value, its sk copied out at once.
        known = unsafe { SOCKET_FDS.get(key) }.map(|v| v.sk);
        if matches!(known, Some(v) if v & SOCKET_MUTED != 0) {
            known = None; // muted by the agent: no intent, no payload
        }
        if known.is_some() {
            inf.start = start_code(http_start(syscall, &inf));
        }
        // A request's first byte leaves when its write starts: a client
        // span starts then. A read's first byte arrives when it returns,
        // so its entry time (the wait for data) is of no use; nor is a
        // response head's (the agent ends a server span at the write's
        // exit). Those events carry their exit time as their entry time:
        // the clock is not cheap to read (~100 ns here; perf: `read_tsc`),
        // and a server skips it for every response it sends.
        if inf.start != START_RESPONSE {
            inf.ts_enter = unsafe { bpf_ktime_get_ns() };
        }
    }
    if !put_inflight(id, &inf) {
        bump(Counter::InflightFull);
        return;
    }
    if let Some(known) = known
        && inf.start == START_REQUEST
    {
        request_intent(id, &inf, known);
    }
}

/// Whether a read only peeks (`MSG_PEEK`): its bytes stay queued and the
/// next read returns them again, so it is not tracked at all (the parser
/// would see them twice; the stream position, which a peek does not move,
/// would be wrong). `cnt` is recvmsg's flags argument; recvfrom has its own
/// after the length. read() and readv() cannot peek.
#[inline(always)]
fn peeks(ctx: &TracePointContext, syscall: Syscall, cnt: u64) -> bool {
    let flags = match syscall {
        // SAFETY: offset from the tracepoint format file.
        Syscall::Recvfrom => unsafe { ctx.read_at::<u64>(ARG3) }.unwrap_or(0),
        Syscall::Recvmsg => cnt,
        _ => return false,
    };
    flags & MSG_PEEK != 0
}

/// `http_start`'s answer as an `Inflight::start` value.
#[inline(always)]
fn start_code(start: Option<bool>) -> u8 {
    match start {
        Some(true) => START_REQUEST,
        Some(false) => START_RESPONSE,
        None => START_NONE,
    }
}

/// A send whose bytes start an HTTP request, on a socket known to be TCP
/// (`known`: its sock, or 0 when connect()ed and not yet resolved): tell
/// the agent now, at entry, with the 4-tuple. See
/// `EventKind::RequestIntent`.
#[inline(always)]
fn request_intent(id: u64, inf: &Inflight, known: u64) {
    let cfg = crate::config::get();
    // A connect()ed socket's first request: resolve its sock now.
    let sk = if known != 0 {
        known
    } else {
        tcp_sock_of_fd(&cfg, inf.fd)
    };
    emit_intent(id, inf.fd, sk, inf.syscall);
}

/// Sends a RequestIntent for the socket `sk` behind `fd`, with its 4-tuple.
#[inline(always)]
pub fn emit_intent(id: u64, fd: i32, sk: u64, syscall: u8) {
    if sk == 0 {
        return;
    }
    let cfg = crate::config::get();
    let Some(mut entry) = EVENTS.reserve::<IntentEvent>(0) else {
        bump(Counter::RingbufFull);
        return;
    };
    let ev = entry.as_mut_ptr();
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: reserved ring-buffer memory of IntentEvent size; every field
    // is written before submit.
    unsafe {
        (*ev).hdr = EventHeader {
            kind: EventKind::RequestIntent as u8,
            direction: Direction::Egress as u8,
            syscall,
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
        (*ev).tuple = Tuple::default();
        read_tuple(sk, &cfg.sock, &mut (*ev).tuple);
        let sport = (*ev).tuple.sport;
        (*ev).ctx = crate::propagate::client_request(&cfg, id, sk, sport);
    }
    entry.submit(batched_wakeup(core::mem::size_of::<IntentEvent>() as u64));
    bump(Counter::ControlEvents);
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext) {
    let id = bpf_get_current_pid_tgid();
    let Some((inf, thread)) = take_inflight(id) else {
        return;
    };
    if inf.is_connect != 0 {
        return;
    }
    let ret = unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(-1);
    if ret <= 0 {
        return;
    }
    let mut inf = inf;
    if inf.sk == 0 {
        let cfg = crate::config::get();
        if cfg.classifier != Classifier::FdTable as u32 {
            return; // sock_*_length did not fire: not INET TCP socket I/O
        }
        inf.sk = tcp_sock_of_fd(&cfg, inf.fd);
        if inf.sk == 0 {
            return;
        }
    }
    // Ciphertext moved inside SSL_read/SSL_write on this thread: remember
    // the socket for the TLS call, and send nothing (the plaintext goes at
    // the call's return).
    // SAFETY: this thread's own entry; only this thread writes it.
    if unsafe { (*thread).in_tls } != 0 && crate::tls::inside_tls_call(id, &inf) {
        return;
    }
    if inf.syscall == Syscall::Read as u8 || inf.syscall == Syscall::Recvfrom as u8 {
        // SAFETY: as above.
        unsafe {
            (*thread).last_read_sk = inf.sk;
            (*thread).last_read_fd = inf.fd;
        }
    }
    if emit_data::<false>(&inf, id, ret) {
        crate::tracestate::capture(ctx);
    }
}

/// Sends the data event of a syscall (`TLS`: of an SSL_read/SSL_write
/// call, whose plaintext has no stream position). True when it read a
/// server request with a valid `traceparent` while header injection is
/// on: the caller (a tracepoint) then has its `tracestate` kept (see
/// `tracestate`).
///
/// `TLS` is a constant so that the TLS uprobes are built without the
/// stream-position code: with it, their verification (which also walks the
/// inbound `traceparent` scan) exceeded the limit once TCP option
/// propagation was on ("BPF_PROG_LOAD ... Argument list too long").
#[inline(always)]
pub fn emit_data<const TLS: bool>(inf: &Inflight, id: u64, ret: i64) -> bool {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU scratch, exclusively ours while this program runs.
    let s: &mut Scratch = unsafe { &mut *s };
    let tgid = (id >> 32) as u32;
    let cfg = crate::config::get();
    let Ok(syscall) = Syscall::try_from(inf.syscall) else {
        return false;
    };
    let tls = TLS;

    // The 4-tuple is read once per (tgid, fd, sk); later events leave it
    // empty and the agent keeps what it learned. A connection the agent
    // muted sends nothing more.
    let key = ((tgid as u64) << 32) | (inf.fd as u32 as u64);
    let entry = SOCKET_FDS.get_ptr_mut(key);
    // SAFETY: a live map value; its fields are copied out at once.
    let value = entry.map(|p| unsafe { *p });
    let known = matches!(value, Some(v) if v.sk & !SOCKET_MUTE_BITS == inf.sk);
    let mute = if tls { SOCKET_MUTED_TLS } else { SOCKET_MUTED };
    if known && value.map_or(0, |v| v.sk) & mute != 0 {
        bump(Counter::PayloadsMuted);
        return false;
    }
    let dir = syscall.direction();

    s.ev.hdr.kind = EventKind::Data as u8;
    s.ev.hdr.direction = dir as u8;
    s.ev.hdr.syscall = inf.syscall;
    s.ev.hdr.flags = if tls { FLAG_TLS } else { 0 };
    s.ev.hdr.tgid = tgid;
    s.ev.hdr.tid = id as u32;
    s.ev.hdr.fd = inf.fd;
    s.ev.hdr.ts_exit_ns = unsafe { bpf_ktime_get_ns() };
    s.ev.hdr.ts_enter_ns = if inf.ts_enter != 0 {
        inf.ts_enter
    } else {
        s.ev.hdr.ts_exit_ns // a read (see `on_enter`)
    };
    s.ev.hdr.sk = inf.sk;
    s.ev.hdr.ret = ret;
    s.ev.hdr.seq = 0;
    s.ev.hdr.captured = 0;

    if known {
        s.ev.tuple.family = 0;
    } else {
        let fresh = SocketEntry {
            sk: inf.sk,
            body_end: [0; 2],
        };
        if SOCKET_FDS.insert(key, fresh, 0).is_err() {
            bump(Counter::SocketFdsFull);
        }
        read_tuple(inf.sk, &cfg.sock, &mut s.ev.tuple);
    }

    // Where the bytes sit in the TCP stream (the TLS library's plaintext
    // has no such position), and whether they all lie inside a body the
    // agent skips: then the event says how many, and no more.
    if !TLS && let Some(end) = stream_end(&cfg.sock, inf.sk, dir) {
        let seq = end.wrapping_sub(ret as u32);
        s.ev.hdr.seq = seq;
        s.ev.hdr.flags |= FLAG_SEQ;
        if known
            && let (Some(p), Some(v)) = (entry, value)
            && length_only(p, &v, dir, seq, ret)
        {
            s.ev.hdr.flags |= FLAG_LENGTH_ONLY;
            send(s, DATA_PREFIX, false);
            bump(Counter::PayloadsLengthOnly);
            return false;
        }
    }

    // Egress buffers were read at sys_enter (unchanged since: the syscall
    // only reads them); ingress ones hold their bytes only now.
    let start = match inf.start {
        START_REQUEST => Some(true),
        START_RESPONSE => Some(false),
        START_NONE => None,
        _ => http_start(syscall, inf),
    };
    // Computed before the copy below splits the paths by syscall, so that
    // what follows the copy does not depend on which path it took.
    let ingress = dir == Direction::Ingress;
    let mut cap = if start.is_some() {
        cfg.head_capture_bytes
    } else {
        cfg.capture_bytes
    } as u64;
    if cap > MAX_CAPTURE as u64 {
        cap = MAX_CAPTURE as u64;
    }
    let want = if (ret as u64) < cap { ret as u64 } else { cap } as usize;
    let got = match syscall {
        Syscall::Read
        | Syscall::Write
        | Syscall::Sendto
        | Syscall::Recvfrom
        | Syscall::SslRead
        | Syscall::SslWrite => copy_at(s, 0, inf.buf, want),
        Syscall::Readv | Syscall::Writev => copy_iov(s, inf.buf, inf.iovcnt, want),
        Syscall::Sendmsg | Syscall::Recvmsg => copy_msghdr(s, inf.buf, want),
        Syscall::Sendfile => 0,
    };
    // Each copy path leaves its own knowledge of `got`; made one unknown
    // here, the head scans below are verified once, not once per path
    // ("BPF program is too large. Processed 1000001 insn").
    let got = crate::inbound::launder(s, got);
    s.ev.hdr.captured = got as u32;
    let mut traceparent = false;
    match (ingress, start) {
        (true, Some(true)) => {
            traceparent = crate::propagate::server_request(&cfg, id, inf.fd, inf.sk, s, got)
        }
        (true, Some(false)) if got >= 12 => {
            crate::inject::response_read(&cfg, inf.sk, &s.ev.payload[..12])
        }
        (false, Some(false)) => crate::propagate::server_response(&cfg, id),
        _ => {}
    }

    // Bound the record size for the verifier: DATA_PREFIX plus at most
    // 2 * MAX_CAPTURE - 1, which is inside the Scratch value.
    // A message whose first syscall moved more than was captured is long:
    // the agent hears of it soon, so that it can tell where the body ends
    // (see `length_only`) while most of it is still to come.
    let long_start = !TLS && start.is_some() && ret as u64 > got as u64;
    send(s, DATA_PREFIX + (got & (2 * MAX_CAPTURE - 1)), long_start);
    if traceparent && cfg.propagation & PROPAGATE_HEADER != 0 {
        s.tail.id = id;
        s.tail.got = got as u64;
        return true;
    }
    false
}

/// Sends the first `len` bytes of the scratch event (at most its size),
/// waking the agent as `urgent_wakeup` decides when `urgent`, else as
/// `batched_wakeup` does.
#[inline(always)]
fn send(s: &Scratch, len: usize, urgent: bool) {
    // SAFETY: callers bound len by the Scratch value's size.
    let bytes = unsafe { core::slice::from_raw_parts((s as *const Scratch).cast::<u8>(), len) };
    let flags = if urgent {
        urgent_wakeup(len as u64, s.ev.hdr.ts_exit_ns)
    } else {
        batched_wakeup(len as u64)
    };
    if EVENTS.output::<[u8]>(bytes, flags).is_err() {
        bump(Counter::RingbufFull);
    } else {
        bump(Counter::DataEvents);
    }
}

/// The socket's stream position after this syscall's bytes, in `dir`:
/// `tcp_sock.write_seq` after a send, `copied_seq` after a read (each
/// advances by exactly the bytes the syscall moved). None when BTF lacked
/// the offsets.
#[inline(always)]
fn stream_end(o: &SockOffsets, sk: u64, dir: Direction) -> Option<u32> {
    let off = match dir {
        Direction::Egress => o.tcp_write_seq,
        Direction::Ingress => o.tcp_copied_seq,
    };
    if sk == 0 || off == u32::MAX {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel tolerates a bad address (an error).
    unsafe { bpf_probe_read_kernel((sk + off as u64) as *const u32) }.ok()
}

/// Whether all `ret` bytes from stream position `seq` lie before the end
/// of the body the agent skips in `dir` (`v.body_end`). An end already
/// reached is cleared, so that an old position can never come round again
/// when the 32-bit sequence wraps. Only that one field is written: the
/// agent owns the rest of the value.
#[inline(always)]
fn length_only(p: *mut SocketEntry, v: &SocketEntry, dir: Direction, seq: u32, ret: i64) -> bool {
    let i = dir as usize & 1;
    let end = v.body_end[i];
    if end == 0 {
        return false;
    }
    let ahead = end.wrapping_sub(seq) as i32;
    if ahead <= 0 {
        // SAFETY: a live map value (or, if the agent replaced the entry
        // meanwhile, a recycled one: clearing a skip only sends bytes).
        unsafe { (*p).body_end[i] = 0 };
        return false;
    }
    ahead as i64 >= ret
}

/// Copies `len` user bytes from `src` into the payload at `off`. Returns
/// the bytes copied (0 on a fault, which is counted).
#[inline(always)]
fn copy_at(s: &mut Scratch, off: usize, src: u64, len: usize) -> usize {
    if len == 0 || src == 0 {
        return 0;
    }
    // Masks give the verifier off in [0, 4095] and n in [1, 4096], so
    // off + n stays inside payload + overflow (8192 bytes). Without them:
    // "invalid access to map value, value_size=... off=... size=...".
    let off = off & MASK;
    let n = ((len - 1) & MASK) + 1;
    let dst = unsafe { (s.ev.payload.as_mut_ptr()).add(off) };
    let rc = unsafe { raw_probe_read_user(dst.cast(), n as u32, src as *const _) };
    if rc < 0 {
        bump(Counter::PayloadReadFailed);
        return 0;
    }
    n
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// Copies up to `want` bytes from an iovec array, in order.
#[inline(always)]
fn copy_iov(s: &mut Scratch, iov: u64, iovcnt: u64, want: usize) -> usize {
    let mut got = 0usize;
    let mut i = 0u64;
    while i < MAX_IOV {
        if i >= iovcnt || got >= want || got >= MAX_CAPTURE {
            break;
        }
        let Ok(v) =
            (unsafe { bpf_probe_read_user((iov as *const Iovec).wrapping_add(i as usize)) })
        else {
            bump(Counter::PayloadReadFailed);
            break;
        };
        let room = want - got;
        let n = if (v.len as usize) < room {
            v.len as usize
        } else {
            room
        };
        let copied = copy_at(s, got, v.base, n);
        if copied == 0 && n != 0 {
            break;
        }
        got += copied;
        i += 1;
    }
    got
}

/// sendmsg/recvmsg: `struct user_msghdr` is userspace ABI (msg_iov at 16,
/// msg_iovlen at 24 on 64-bit), not a kernel-internal layout.
#[inline(always)]
fn copy_msghdr(s: &mut Scratch, msg: u64, want: usize) -> usize {
    let p = msg as *const u64;
    let iov = unsafe { bpf_probe_read_user(p.wrapping_add(2)) }.unwrap_or(0);
    let iovlen = unsafe { bpf_probe_read_user(p.wrapping_add(3)) }.unwrap_or(0);
    copy_iov(s, iov, iovlen, want)
}

/// The first user buffer the syscall moved bytes through.
#[inline(always)]
fn first_buffer(syscall: Syscall, inf: &Inflight) -> u64 {
    let first_iov_base = |iov: u64| unsafe { bpf_probe_read_user(iov as *const u64) }.unwrap_or(0);
    match syscall {
        Syscall::Read
        | Syscall::Write
        | Syscall::Sendto
        | Syscall::Recvfrom
        | Syscall::SslRead
        | Syscall::SslWrite => inf.buf,
        Syscall::Readv | Syscall::Writev if inf.iovcnt > 0 => first_iov_base(inf.buf),
        Syscall::Sendmsg | Syscall::Recvmsg => {
            let iov = unsafe { bpf_probe_read_user((inf.buf as *const u64).wrapping_add(2)) }
                .unwrap_or(0);
            if iov == 0 { 0 } else { first_iov_base(iov) }
        }
        _ => 0,
    }
}

/// Whether the bytes start like an HTTP/1 message: `Some(true)` for a
/// request (a method), `Some(false)` for a response (`HTTP`). Only a hint:
/// the agent's parser decides what is HTTP.
#[inline(always)]
pub fn http_start(syscall: Syscall, inf: &Inflight) -> Option<bool> {
    let p = first_buffer(syscall, inf);
    if p == 0 {
        return None;
    }
    let w = unsafe { bpf_probe_read_user(p as *const [u8; 4]) }.ok()?;
    match &w {
        b"GET " | b"POST" | b"PUT " | b"HEAD" | b"DELE" | b"PATC" | b"OPTI" | b"CONN" | b"TRAC" => {
            Some(true)
        }
        b"HTTP" => Some(false),
        _ => None,
    }
}

/// One enter/exit pair per syscall. The buffer argument is ARG1 for all of
/// them; the count argument (iovcnt for the vector forms) is ARG2.
macro_rules! syscall_pair {
    ($enter:ident, $exit:ident, $enter_tp:literal, $exit_tp:literal, $sc:expr) => {
        #[tracepoint(category = "syscalls", name = $enter_tp)]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            on_enter(&ctx, $sc, ARG1, ARG2);
            0
        }

        #[tracepoint(category = "syscalls", name = $exit_tp)]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            on_exit(&ctx);
            0
        }
    };
}

syscall_pair!(
    enter_read,
    exit_read,
    "sys_enter_read",
    "sys_exit_read",
    Syscall::Read
);
syscall_pair!(
    enter_write,
    exit_write,
    "sys_enter_write",
    "sys_exit_write",
    Syscall::Write
);
syscall_pair!(
    enter_readv,
    exit_readv,
    "sys_enter_readv",
    "sys_exit_readv",
    Syscall::Readv
);
syscall_pair!(
    enter_writev,
    exit_writev,
    "sys_enter_writev",
    "sys_exit_writev",
    Syscall::Writev
);
syscall_pair!(
    enter_sendto,
    exit_sendto,
    "sys_enter_sendto",
    "sys_exit_sendto",
    Syscall::Sendto
);
syscall_pair!(
    enter_recvfrom,
    exit_recvfrom,
    "sys_enter_recvfrom",
    "sys_exit_recvfrom",
    Syscall::Recvfrom
);
syscall_pair!(
    enter_sendmsg,
    exit_sendmsg,
    "sys_enter_sendmsg",
    "sys_exit_sendmsg",
    Syscall::Sendmsg
);
syscall_pair!(
    enter_recvmsg,
    exit_recvmsg,
    "sys_enter_recvmsg",
    "sys_exit_recvmsg",
    Syscall::Recvmsg
);
syscall_pair!(
    enter_sendfile,
    exit_sendfile,
    "sys_enter_sendfile64",
    "sys_exit_sendfile64",
    Syscall::Sendfile
);
