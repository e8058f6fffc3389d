//! The agent's configuration, a read-only global patched in at load time.

use aya_ebpf::Global;
use wirespan_common::config::{FdTableOffsets, KernelConfig, SockOffsets};

use crate::maps::{SELECTED_PIDS, UNTRACED_PIDS};

#[unsafe(no_mangle)]
static CONFIG: Global<KernelConfig> = Global::new(KernelConfig {
    agent_tgid: 0,
    capture_bytes: 512,
    pid_filter: 0,
    head_capture_bytes: 4096,
    sock: SockOffsets::UNKNOWN,
    fdtable: FdTableOffsets::UNKNOWN,
    classifier: 0,
    propagation: 0,
    untraced_filter: 0,
    _pad: 0,
});

#[inline(always)]
pub fn get() -> KernelConfig {
    CONFIG.load()
}

/// True when the calling process must not be traced: the agent itself, a
/// process outside `--pid` when that was given (see [`unselected`]), or one
/// the agent judged untraced (UNTRACED_PIDS, with `--exe-path`).
#[inline(always)]
pub fn ignored(tgid: u32) -> bool {
    let cfg = get();
    // SAFETY: presence test only.
    unselected(tgid) || (cfg.untraced_filter != 0 && unsafe { UNTRACED_PIDS.get(tgid) }.is_some())
}

/// [`ignored`] without the agent's own judgements: the processes whose exec
/// and exit the agent must still hear of, since it judged them by their
/// image and their pid may come back as another process.
#[inline(always)]
pub fn unselected(tgid: u32) -> bool {
    let cfg = get();
    // SAFETY: presence test only.
    tgid == cfg.agent_tgid || (cfg.pid_filter != 0 && unsafe { SELECTED_PIDS.get(tgid) }.is_none())
}

/// The process `tgid` execs or exits: a judgement of it is void.
#[inline(always)]
pub fn forget_judgement(tgid: u32) {
    if get().untraced_filter != 0 {
        let _ = UNTRACED_PIDS.remove(tgid);
    }
}
