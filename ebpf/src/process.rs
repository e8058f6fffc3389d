//! Process lifecycle: the agent drops a process's connections when it exits
//! and refreshes its metadata when it execs. The exec event carries the
//! file name, so a short-lived process (a curl that is gone before the
//! agent reads /proc) still gets its name.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use wirespan_common::event::{Counter, EventHeader, EventKind, ExecEvent};

use crate::{
    counters::bump,
    lifecycle::emit_control,
    maps::{EVENTS, INFLIGHT},
};

/// `__data_loc char[] filename` at offset 8 of sched_process_exec's format:
/// the low 16 bits are the offset of the string in the record, the high 16
/// its length.
const FILENAME_LOC: usize = 8;

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn proc_exit(_ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((id >> 32) as u32, id as u32);
    // Every thread's per-thread entries leave with it (they stay in their
    // maps between syscalls; see `maps::put_inflight`).
    let _ = INFLIGHT.remove(id);
    crate::propagate::thread_exit(id);
    // Threads exit too; only the group leader's exit ends the process.
    if tgid == tid {
        crate::config::forget_judgement(tgid);
    }
    if tgid == tid && !crate::config::unselected(tgid) {
        emit_control(EventKind::ProcessExit, tgid, tid, -1, 0);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn proc_exec(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((id >> 32) as u32, id as u32);
    crate::config::forget_judgement(tgid);
    if crate::config::unselected(tgid) {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        bump(Counter::RingbufFull);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: `ev` points at reserved ring-buffer memory of ExecEvent size;
    // every field is written before submit.
    unsafe {
        (*ev).hdr = EventHeader {
            kind: EventKind::ProcessExec as u8,
            direction: 0,
            syscall: 0,
            flags: 0,
            tgid,
            tid,
            fd: -1,
            ts_enter_ns: now,
            ts_exit_ns: now,
            sk: 0,
            ret: 0,
            captured: 0,
            seq: 0,
        };
        (*ev).filename[0] = 0;
        let loc = ctx.read_at::<u32>(FILENAME_LOC).unwrap_or(0);
        let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        let _ = bpf_probe_read_kernel_str_bytes(src, &mut (*ev).filename);
    }
    // Woken at once, unlike the batched records (see `batched_wakeup`): the
    // agent probes a new program's OpenSSL on exec, and must be done before
    // the program's first TLS call. Execs are rare enough for the IPI.
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
    bump(Counter::ControlEvents);
    0
}
