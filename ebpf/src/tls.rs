//! TLS plaintext at the library: uprobes on OpenSSL's SSL_read, SSL_write
//! and their `_ex` forms (libssl.so.3 / .so.1.1, or any binary that links
//! OpenSSL statically and exports them, like node).
//!
//! Entry remembers the buffer; the return sends a data event flagged
//! `FLAG_TLS` with the plaintext. The socket comes from the syscall nested
//! in the call on the same thread (which is then not reported, so bytes are
//! never counted twice), else from what an earlier call on the same `SSL*`
//! learned, else, for libraries that do their own I/O through memory BIOs
//! (node), from the socket this thread read last.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use wirespan_common::event::{Counter, Syscall};

use crate::{
    counters::bump,
    maps::Inflight,
    syscalls::{emit_data, emit_intent, http_start},
};

/// One SSL_* call in flight on a thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsCall {
    ssl: u64,
    buf: u64,
    /// `size_t *` of the `_ex` forms (bytes moved), 0 for the plain ones.
    len_ptr: u64,
    ts_enter: u64,
    /// Socket of the nested syscall, when there was one.
    sk: u64,
    fd: i32,
    syscall: u8,
    _pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslKey {
    tgid: u32,
    _pad: u32,
    ssl: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockRef {
    sk: u64,
    fd: i32,
    _pad: u32,
}

#[map(name = "TLS_CALLS")]
static TLS_CALLS: LruHashMap<u64, TlsCall> = LruHashMap::with_max_entries(16 * 1024, 0);

/// (tgid, SSL*) -> its socket, learned from a nested syscall.
#[map(name = "SSL_SOCKS")]
static SSL_SOCKS: LruHashMap<SslKey, SockRef> = LruHashMap::with_max_entries(64 * 1024, 0);

/// Thread -> the TCP socket it read last (for memory-BIO TLS stacks).
#[map(name = "LAST_READ")]
static LAST_READ: LruHashMap<u64, SockRef> = LruHashMap::with_max_entries(16 * 1024, 0);

/// Called from a socket syscall's exit: if it ran inside an SSL_* call on
/// this thread, record its socket for the call and say so (the caller then
/// sends nothing: those bytes are ciphertext).
#[inline(always)]
pub fn inside_tls_call(id: u64, inf: &Inflight) -> bool {
    let Some(call) = TLS_CALLS.get_ptr_mut(id) else {
        return false;
    };
    // SAFETY: live map value for this thread's key.
    unsafe {
        (*call).sk = inf.sk;
        (*call).fd = inf.fd;
    }
    true
}

/// Remembers the last TCP socket this thread read, for TLS stacks whose
/// SSL_read never touches the socket itself.
#[inline(always)]
pub fn note_socket_read(id: u64, inf: &Inflight) {
    let r = SockRef {
        sk: inf.sk,
        fd: inf.fd,
        _pad: 0,
    };
    let _ = LAST_READ.insert(id, r, 0);
}

#[inline(always)]
fn enter(ctx: &ProbeContext, syscall: Syscall, ex: bool) {
    let id = bpf_get_current_pid_tgid();
    if crate::config::ignored((id >> 32) as u32) {
        return;
    }
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    let len_ptr: u64 = if ex { ctx.arg(3).unwrap_or(0) } else { 0 };
    let call = TlsCall {
        ssl,
        buf,
        len_ptr,
        ts_enter: unsafe { bpf_ktime_get_ns() },
        sk: 0,
        fd: -1,
        syscall: syscall as u8,
        _pad: [0; 3],
    };
    if TLS_CALLS.insert(id, call, 0).is_err() {
        bump(Counter::InflightFull);
        return;
    }
    // A request about to be encrypted: announce it before its ciphertext
    // can reach a same-node server (see `EventKind::RequestIntent`).
    if syscall == Syscall::SslWrite {
        let probe = Inflight {
            ts_enter: call.ts_enter,
            buf,
            iovcnt: 0,
            sk: 0,
            fd: -1,
            syscall: syscall as u8,
            is_connect: 0,
            _pad: [0; 2],
        };
        if http_start(syscall, &probe) == Some(true)
            && let Some(sock) = socket_of(id, ssl)
        {
            emit_intent(id, sock.fd, sock.sk, syscall as u8);
        }
    }
}

/// The socket behind an `SSL*`: learned from an earlier call, else the
/// socket this thread read last (the handshake's reply).
#[inline(always)]
fn socket_of(id: u64, ssl: u64) -> Option<SockRef> {
    let key = SslKey {
        tgid: (id >> 32) as u32,
        _pad: 0,
        ssl,
    };
    // SAFETY: plain-old-data map values, copied out.
    unsafe { SSL_SOCKS.get(key).or_else(|| LAST_READ.get(id)).copied() }
}

#[inline(always)]
fn exit(ret: i64) {
    let id = bpf_get_current_pid_tgid();
    let Some(p) = TLS_CALLS.get_ptr(id) else {
        return;
    };
    // SAFETY: map value valid until the remove below.
    let call = unsafe { *p };
    let _ = TLS_CALLS.remove(id);
    // Plain forms return the byte count; `_ex` forms return 1 and store it.
    let moved = if call.len_ptr == 0 {
        ret
    } else if ret == 1 {
        unsafe { bpf_probe_read_user(call.len_ptr as *const u64) }.unwrap_or(0) as i64
    } else {
        0
    };
    if moved <= 0 {
        return;
    }
    let key = SslKey {
        tgid: (id >> 32) as u32,
        _pad: 0,
        ssl: call.ssl,
    };
    let sock = if call.sk != 0 {
        let learned = SockRef {
            sk: call.sk,
            fd: call.fd,
            _pad: 0,
        };
        let _ = SSL_SOCKS.insert(key, learned, 0);
        learned
    } else if let Some(known) = unsafe { SSL_SOCKS.get(key) } {
        *known
    } else if let Some(last) = unsafe { LAST_READ.get(id) } {
        // A memory-BIO stack: this SSL* belongs to the socket just read.
        let guess = *last;
        let _ = SSL_SOCKS.insert(key, guess, 0);
        guess
    } else {
        return;
    };
    let inf = Inflight {
        ts_enter: call.ts_enter,
        buf: call.buf,
        iovcnt: 0,
        sk: sock.sk,
        fd: sock.fd,
        syscall: call.syscall,
        is_connect: 0,
        _pad: [0; 2],
    };
    emit_data(&inf, id, moved);
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, Syscall::SslRead, false);
    0
}

#[uretprobe]
pub fn ssl_read_ret(ctx: RetProbeContext) -> u32 {
    exit(ctx.ret::<i64>());
    0
}

#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, Syscall::SslWrite, false);
    0
}

#[uretprobe]
pub fn ssl_write_ret(ctx: RetProbeContext) -> u32 {
    exit(ctx.ret::<i64>());
    0
}

#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, Syscall::SslRead, true);
    0
}

#[uretprobe]
pub fn ssl_read_ex_ret(ctx: RetProbeContext) -> u32 {
    exit(ctx.ret::<i64>());
    0
}

#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, Syscall::SslWrite, true);
    0
}

#[uretprobe]
pub fn ssl_write_ex_ret(ctx: RetProbeContext) -> u32 {
    exit(ctx.ret::<i64>());
    0
}
