//! The agent's configuration, a read-only global patched in at load time.

use aya_ebpf::Global;
use wirespan_common::config::KernelConfig;

use crate::maps::SELECTED_PIDS;

#[unsafe(no_mangle)]
static CONFIG: Global<KernelConfig> = Global::new(KernelConfig {
    agent_tgid: 0,
    capture_bytes: 512,
    pid_filter: 0,
    head_capture_bytes: 4096,
    sock: wirespan_common::config::SockOffsets {
        skc_family: u32::MAX,
        skc_daddr: u32::MAX,
        skc_rcv_saddr: u32::MAX,
        skc_dport: u32::MAX,
        skc_num: u32::MAX,
        skc_v6_daddr: u32::MAX,
        skc_v6_rcv_saddr: u32::MAX,
        _pad: 0,
    },
    fdtable: wirespan_common::config::FdTableOffsets {
        task_files: u32::MAX,
        files_fdt: u32::MAX,
        fdtable_max_fds: u32::MAX,
        fdtable_fd: u32::MAX,
        file_private_data: u32::MAX,
        file_f_inode: u32::MAX,
        inode_i_mode: u32::MAX,
        socket_sk: u32::MAX,
        socket_type: u32::MAX,
        _pad: 0,
    },
    classifier: 0,
    _pad: 0,
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
