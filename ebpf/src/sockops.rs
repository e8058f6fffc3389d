//! sock_ops: trace context in an experimental TCP header option (RFC 6994,
//! kind 254, ExID "WS"), written on the data segments of traced client
//! requests and read on the receiving side. No payload byte changes, so it
//! works for any protocol, TLS included; a receiver without the agent
//! ignores an unknown option, as TCP requires.
//!
//! Attached to one cgroup (`--cgroup`): only sockets of processes inside it
//! get the callbacks below.

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_HDR_OPT_LEN_CB,
        BPF_SOCK_OPS_PARSE_HDR_OPT_CB, BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG,
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_WRITE_HDR_OPT_CB,
        BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG,
    },
    helpers::generated::{
        bpf_get_socket_cookie, bpf_load_hdr_opt, bpf_reserve_hdr_opt, bpf_store_hdr_opt,
    },
    macros::sock_ops,
    programs::SockOpsContext,
};
use wirespan_common::{
    config::{PROPAGATE_HEADER, PROPAGATE_TCP_OPTION, TCP_OPT_EXID, TCP_OPT_KIND, TCP_OPT_LEN},
    event::{Counter, WireContext},
};

use crate::{
    counters::bump,
    propagate::{RX_CONTEXT, TX_CONTEXT},
};

/// `args[0]` of HDR_OPT_LEN when the kernel computes the MSS (no skb):
/// BPF_WRITE_HDR_TCP_CURRENT_MSS in linux/bpf.h.
const CURRENT_MSS: u32 = 1;

#[sock_ops]
pub fn wirespan_sockops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            // The cookie is made now, before any data: the syscall
            // tracepoints read it from the socket to key TX_CONTEXT.
            let c = cookie(&ctx);
            let cfg = crate::config::get();
            if cfg.propagation & PROPAGATE_TCP_OPTION != 0 {
                let _ =
                    ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG) as i32);
            }
            if cfg.propagation & PROPAGATE_HEADER != 0 {
                crate::inject::maybe_add(&ctx, c);
            }
        }
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            let _ = cookie(&ctx);
            // Called only for segments with options the kernel does not
            // know, so ordinary traffic costs nothing.
            if crate::config::get().propagation & PROPAGATE_TCP_OPTION != 0 {
                let _ = ctx.set_cb_flags(
                    (ctx.cb_flags() | BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG) as i32,
                );
            }
        }
        BPF_SOCK_OPS_HDR_OPT_LEN_CB => reserve(&ctx),
        BPF_SOCK_OPS_WRITE_HDR_OPT_CB => write(&ctx),
        BPF_SOCK_OPS_PARSE_HDR_OPT_CB => parse(&ctx),
        _ => {}
    }
    1
}

#[inline(always)]
fn cookie(ctx: &SockOpsContext) -> u64 {
    // SAFETY: the sock_ops context is a valid argument for this helper.
    unsafe { bpf_get_socket_cookie(ctx.ops.cast()) }
}

/// Space for the option. In the MSS computation always, for every client
/// socket in the cgroup: segments are sized before we know whether a
/// traced request will be in them, and a segment that grows past the MSS
/// by our option would exceed the path MTU. On a real segment, only when it
/// carries data of a traced request (pure ACKs stay as they are).
#[inline(always)]
fn reserve(ctx: &SockOpsContext) {
    let mss_calc = ctx.arg(0) == CURRENT_MSS;
    // SAFETY: reading fields of the context the kernel passed.
    let skb_len = unsafe { (*ctx.ops).skb_len };
    if !mss_calc {
        if skb_len == 0 {
            return;
        }
        // SAFETY: presence test only.
        if unsafe { TX_CONTEXT.get(cookie(ctx)) }.is_none() {
            return;
        }
    }
    // SAFETY: valid context; the length is a constant.
    let rc = unsafe { bpf_reserve_hdr_opt(ctx.ops, TCP_OPT_LEN as u32, 0) };
    if rc != 0 && !mss_calc {
        bump(Counter::TcpOptNoRoom);
    }
}

#[inline(always)]
fn write(ctx: &SockOpsContext) {
    // SAFETY: plain value, copied out at once.
    let Some(wc) = (unsafe { TX_CONTEXT.get(cookie(ctx)) }).copied() else {
        return;
    };
    let mut opt = [0u8; TCP_OPT_LEN];
    opt[0] = TCP_OPT_KIND;
    opt[1] = TCP_OPT_LEN as u8;
    opt[2] = TCP_OPT_EXID[0];
    opt[3] = TCP_OPT_EXID[1];
    opt[4..20].copy_from_slice(&wc.trace_id);
    opt[20..28].copy_from_slice(&wc.span_id);
    // SAFETY: `opt` is TCP_OPT_LEN bytes on our stack.
    let rc = unsafe { bpf_store_hdr_opt(ctx.ops, opt.as_ptr().cast(), TCP_OPT_LEN as u32, 0) };
    if rc == 0 {
        bump(Counter::TcpOptWritten);
    }
}

#[inline(always)]
fn parse(ctx: &SockOpsContext) {
    // Search by kind 254 and our ExID (a 4-byte "kind-length" key); the
    // helper copies the whole option over the key when it finds it.
    let mut opt = [0u8; TCP_OPT_LEN];
    opt[0] = TCP_OPT_KIND;
    opt[1] = 4;
    opt[2] = TCP_OPT_EXID[0];
    opt[3] = TCP_OPT_EXID[1];
    // SAFETY: `opt` is TCP_OPT_LEN bytes on our stack.
    let rc = unsafe { bpf_load_hdr_opt(ctx.ops, opt.as_mut_ptr().cast(), TCP_OPT_LEN as u32, 0) };
    if rc != TCP_OPT_LEN as i64 || opt[1] != TCP_OPT_LEN as u8 {
        return;
    }
    let mut wc = WireContext::default();
    wc.trace_id.copy_from_slice(&opt[4..20]);
    wc.span_id.copy_from_slice(&opt[20..28]);
    if !wc.is_valid() {
        return;
    }
    let _ = RX_CONTEXT.insert(cookie(ctx), wc, 0);
    bump(Counter::TcpOptRead);
}
