//! `sock:sock_send_length` / `sock:sock_recv_length` fire inside the socket
//! layer of the very syscall that the `syscalls` module is tracking, on the
//! same task. They are how we learn that an fd is an INET TCP socket (and
//! which `struct sock` it is) without kprobes.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    macros::tracepoint,
    programs::TracePointContext,
};
use wirespan_common::{
    config::SockOffsets,
    event::{AF_INET, AF_INET6, Tuple},
};

use crate::maps::INFLIGHT;

const IPPROTO_TCP: u16 = 6;
// Field offsets from /sys/kernel/tracing/events/sock/sock_send_length/format
// (identical for sock_recv_length). Tracepoint formats are a stable ABI.
const SK_OFF: usize = 8;
const FAMILY_OFF: usize = 16;
const PROTOCOL_OFF: usize = 18;

#[tracepoint(category = "sock", name = "sock_send_length")]
pub fn sock_send_len(ctx: TracePointContext) -> u32 {
    mark_socket(&ctx);
    0
}

#[tracepoint(category = "sock", name = "sock_recv_length")]
pub fn sock_recv_len(ctx: TracePointContext) -> u32 {
    mark_socket(&ctx);
    0
}

#[inline(always)]
fn mark_socket(ctx: &TracePointContext) {
    let id = bpf_get_current_pid_tgid();
    let Some(inf) = INFLIGHT.get_ptr_mut(id) else {
        return;
    };
    // SAFETY: this thread's own entry; only this thread writes it.
    if unsafe { (*inf).sys.live } == 0 {
        return; // a syscall the agent does not track (a thread's last one stays in the map)
    }
    // SAFETY: offsets come from the tracepoint's format file.
    let (family, protocol, sk) = unsafe {
        (
            ctx.read_at::<u16>(FAMILY_OFF).unwrap_or(0),
            ctx.read_at::<u16>(PROTOCOL_OFF).unwrap_or(0),
            ctx.read_at::<u64>(SK_OFF).unwrap_or(0),
        )
    };
    if (family == AF_INET || family == AF_INET6) && protocol == IPPROTO_TCP {
        // SAFETY: the pointer is a live map value for this thread's key.
        unsafe { (*inf).sys.sk = sk };
    }
}

/// Fills `t` from `struct sock_common` at `sk`, using offsets that the
/// agent read from kernel BTF. Leaves `t.family == 0` when it cannot.
#[inline(always)]
pub fn read_tuple(sk: u64, o: &SockOffsets, t: &mut Tuple) {
    t.family = 0;
    if sk == 0 || o.skc_family == u32::MAX || o.skc_dport == u32::MAX || o.skc_num == u32::MAX {
        return;
    }
    let base = sk as *const u8;
    // SAFETY: bpf_probe_read_kernel tolerates bad addresses (returns an error).
    unsafe {
        let family: u16 =
            bpf_probe_read_kernel(base.add(o.skc_family as usize).cast()).unwrap_or(0);
        let dport: u16 = bpf_probe_read_kernel(base.add(o.skc_dport as usize).cast()).unwrap_or(0);
        let sport: u16 = bpf_probe_read_kernel(base.add(o.skc_num as usize).cast()).unwrap_or(0);
        t.sport = sport;
        t.dport = u16::from_be(dport);
        let ok = if family == AF_INET {
            o.skc_rcv_saddr != u32::MAX
                && o.skc_daddr != u32::MAX
                && bpf_probe_read_kernel_buf(base.add(o.skc_rcv_saddr as usize), &mut t.saddr[..4])
                    .is_ok()
                && bpf_probe_read_kernel_buf(base.add(o.skc_daddr as usize), &mut t.daddr[..4])
                    .is_ok()
        } else if family == AF_INET6 {
            o.skc_v6_rcv_saddr != u32::MAX
                && o.skc_v6_daddr != u32::MAX
                && bpf_probe_read_kernel_buf(base.add(o.skc_v6_rcv_saddr as usize), &mut t.saddr)
                    .is_ok()
                && bpf_probe_read_kernel_buf(base.add(o.skc_v6_daddr as usize), &mut t.daddr)
                    .is_ok()
        } else {
            false
        };
        if ok {
            t.family = family;
        }
    }
}
