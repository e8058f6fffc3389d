//! The agent's configuration, a read-only global patched in at load time.

use aya_ebpf::Global;
use wirespan_common::config::{FdTableOffsets, KernelConfig, SockOffsets};

use crate::maps::SELECTED_PIDS;

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
});

#[inline(always)]
pub fn get() -> KernelConfig {
    CONFIG.load()
}

/// True when the calling process must not be traced: the agent itself, or
/// a process outside `--pid` when that was given.
#[inline(always)]
pub fn ignored(tgid: u32) -> bool {
    let cfg = get();
    // SAFETY: presence test only.
    tgid == cfg.agent_tgid || (cfg.pid_filter != 0 && unsafe { SELECTED_PIDS.get(tgid) }.is_none())
}
