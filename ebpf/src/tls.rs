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
    fdtable::tcp_sock_of_fd,
    maps::{INFLIGHT, Inflight, START_UNKNOWN, thread_entry},
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

/// Thread `id` is inside an SSL_* call (or no longer): its syscalls' exits
/// look for the call (`inside_tls_call`) only while it is.
#[inline(always)]
fn mark_in_tls(id: u64, inside: u8) {
    if let Some(t) = thread_entry(id) {
        // SAFETY: this thread's own entry; only this thread writes it.
        unsafe { (*t).in_tls = inside };
    }
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
    mark_in_tls(id, 1);
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
            live: 1,
            start: START_UNKNOWN,
        };
        if http_start(syscall, &probe) == Some(true)
            && let Some(sock) = resolve_socket(id, ssl, 0, -1)
        {
            emit_intent(id, sock.fd, sock.sk, syscall as u8);
        }
    }
}

/// The socket behind an `SSL*`, in order of trust: the syscall nested in
/// this call; SSL_set_fd (its sock resolved once through the file table);
/// and only for an `SSL*` never given an fd (a memory-BIO stack such as
/// node), the socket this thread read last.
#[inline(always)]
fn resolve_socket(id: u64, ssl: u64, nested_sk: u64, nested_fd: i32) -> Option<SockRef> {
    let key = SslKey {
        tgid: (id >> 32) as u32,
        _pad: 0,
        ssl,
    };
    if nested_sk != 0 {
        let learned = SockRef {
            sk: nested_sk,
            fd: nested_fd,
            _pad: 0,
        };
        let _ = SSL_SOCKS.insert(key, learned, 0);
        return Some(learned);
    }
    // SAFETY: plain-old-data map values, copied out.
    if let Some(known) = unsafe { SSL_SOCKS.get(key) }.copied() {
        if known.sk != 0 {
            return Some(known);
        }
        let sk = tcp_sock_of_fd(&crate::config::get(), known.fd);
        if sk == 0 {
            return None;
        }
        let found = SockRef {
            sk,
            fd: known.fd,
            _pad: 0,
        };
        let _ = SSL_SOCKS.insert(key, found, 0);
        return Some(found);
    }
    // SAFETY: plain-old-data map value, copied out.
    let t = unsafe { INFLIGHT.get(id) }.copied()?;
    if t.last_read_sk == 0 {
        return None;
    }
    let guess = SockRef {
        sk: t.last_read_sk,
        fd: t.last_read_fd,
        _pad: 0,
    };
    let _ = SSL_SOCKS.insert(key, guess, 0);
    Some(guess)
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
    mark_in_tls(id, 0);
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
    let Some(sock) = resolve_socket(id, call.ssl, call.sk, call.fd) else {
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
        live: 1,
        start: START_UNKNOWN,
    };
    emit_data::<true>(&inf, id, moved);
}

/// SSL_set_fd(ssl, fd): the authoritative link from an `SSL*` to its
/// socket, for every stack that uses a socket BIO (nginx, curl, CPython).
/// The `struct sock` is resolved at the first call that needs it.
#[uprobe]
pub fn ssl_set_fd(ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if crate::config::ignored((id >> 32) as u32) {
        return 0;
    }
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let fd: i64 = ctx.arg(1).unwrap_or(-1);
    if ssl != 0 && fd >= 0 {
        let key = SslKey {
            tgid: (id >> 32) as u32,
            _pad: 0,
            ssl,
        };
        let _ = SSL_SOCKS.insert(
            key,
            SockRef {
                sk: 0,
                fd: fd as i32,
                _pad: 0,
            },
            0,
        );
    }
    0
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, Syscall::SslRead, false);
    0
}

#[uretprobe]
pub fn ssl_read_ret(ctx: RetProbeContext) -> u32 {
    // The SSL_* functions return a C int: read 32 bits and sign-extend,
    // or -1 (WANT_READ) would look like 4 GiB moved.
    exit(ctx.ret::<i32>() as i64);
    0
}

#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, Syscall::SslWrite, false);
    0
}

#[uretprobe]
pub fn ssl_write_ret(ctx: RetProbeContext) -> u32 {
    // The SSL_* functions return a C int: read 32 bits and sign-extend,
    // or -1 (WANT_READ) would look like 4 GiB moved.
    exit(ctx.ret::<i32>() as i64);
    0
}

#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, Syscall::SslRead, true);
    0
}

#[uretprobe]
pub fn ssl_read_ex_ret(ctx: RetProbeContext) -> u32 {
    // The SSL_* functions return a C int: read 32 bits and sign-extend,
    // or -1 (WANT_READ) would look like 4 GiB moved.
    exit(ctx.ret::<i32>() as i64);
    0
}

#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, Syscall::SslWrite, true);
    0
}

#[uretprobe]
pub fn ssl_write_ex_ret(ctx: RetProbeContext) -> u32 {
    // The SSL_* functions return a C int: read 32 bits and sign-extend,
    // or -1 (WANT_READ) would look like 4 GiB moved.
    exit(ctx.ret::<i32>() as i64);
    0
}
