//! Process lifecycle: the agent drops a process's connections when it exits
//! and refreshes its metadata when it execs.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use wirespan_common::event::EventKind;

use crate::lifecycle::emit_control;

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn proc_exit(_ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((id >> 32) as u32, id as u32);
    // Threads exit too; only the group leader's exit ends the process.
    if tgid == tid && !crate::config::ignored(tgid) {
        emit_control(EventKind::ProcessExit, tgid, tid, -1, 0);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn proc_exec(_ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((id >> 32) as u32, id as u32);
    if !crate::config::ignored(tgid) {
        emit_control(EventKind::ProcessExec, tgid, tid, -1, 0);
    }
    0
}
