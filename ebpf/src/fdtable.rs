//! The fallback socket classifier: from an fd to its `struct sock` through
//! the task's file table, for kernels without `sock:sock_*_length` (before
//! 6.2). Offsets come from kernel BTF at start (see `SockOffsets` and
//! `FdTableOffsets`); a missing one disables the walk.

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated::bpf_get_current_task};
use wirespan_common::{
    config::KernelConfig,
    event::{AF_INET, AF_INET6},
};

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const SOCK_STREAM: u16 = 1;

#[inline(always)]
fn read<T: Copy>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == u32::MAX {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel tolerates any address (it returns an
    // error on a fault).
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.ok()
}

/// The `struct sock *` behind `fd` of the current task when it is an INET
/// stream (TCP) socket, else 0.
#[inline(always)]
pub fn tcp_sock_of_fd(cfg: &KernelConfig, fd: i32) -> u64 {
    walk(cfg, fd).unwrap_or(0)
}

#[inline(always)]
fn walk(cfg: &KernelConfig, fd: i32) -> Option<u64> {
    if fd < 0 {
        return None;
    }
    let o = &cfg.fdtable;
    // SAFETY: the helper only returns the current task's address.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, o.task_files)?;
    let fdt: u64 = read(files, o.files_fdt)?;
    let max_fds: u32 = read(fdt, o.fdtable_max_fds)?;
    if fd as u32 >= max_fds {
        return None;
    }
    let fd_array: u64 = read(fdt, o.fdtable_fd)?;
    let file: u64 = read(fd_array, (fd as u32).checked_mul(8)?)?;
    let inode: u64 = read(file, o.file_f_inode)?;
    let mode: u16 = read(inode, o.inode_i_mode)?;
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    let socket: u64 = read(file, o.file_private_data)?;
    let kind: u16 = read(socket, o.socket_type)?;
    if kind != SOCK_STREAM {
        return None;
    }
    let sk: u64 = read(socket, o.socket_sk)?;
    let family: u16 = read(sk, cfg.sock.skc_family)?;
    (family == AF_INET || family == AF_INET6).then_some(sk)
}
