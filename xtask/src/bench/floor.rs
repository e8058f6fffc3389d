//! The floor under any syscall-tracing agent: empty eBPF programs (`r0 = 0;
//! exit`, two instructions) attached where the agent attaches its own, and
//! nothing else running. What nginx loses to them is what the hooks cost
//! before a program does any work: the syscall slow path the tracepoints
//! switch on, and the dispatch into a program.
//!
//! Two sets:
//! - [`Floor::agent_tracepoints`]: the agent's own hooks
//!   (`wirespan_common::hooks`), as perf-event tracepoint programs, the way
//!   the agent attaches them.
//! - [`Floor::raw_syscalls`]: `raw_syscalls:sys_enter` and `sys_exit` as raw
//!   tracepoints, one program for every syscall of every process: the
//!   cheaper-looking alternative (no trace record is built for a raw
//!   tracepoint), and the least any capture of syscall payloads attaches.
//!
//! - [`Floor::cgroup_skb`]: an allow-all `cgroup_skb` program on the
//!   ingress and on the egress of a cgroup (the bench's nginx's): the
//!   cheapest hook this kernel offers that sees a socket's payload, per
//!   packet and outside the syscall path. No design here captures that way
//!   (a packet has no thread, so no trace context); it measures what such a
//!   design would start from.
//!
//! And one on a single hook ([`Floor::on_hook`]), whose run statistics
//! ([`Floor::run_stats`]) measure what `kernel.bpf_stats_enabled` itself
//! adds to each run of a program (`bpf-stats`).
//!
//! Loaded with the bpf(2) and perf_event_open(2) syscalls directly (no
//! loader library: there is nothing to relocate), and detached by closing
//! the fds when the [`Floor`] is dropped, also when the bench fails.

use std::{
    ffi::CString,
    fs,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

use anyhow::{Context, Result};
use wirespan_common::hooks::{HOOKS, Hook, SOCK_HOOKS};

use super::bpf_fds::field;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
/// `enum bpf_attach_type`.
const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_CGROUP_INET_EGRESS: u32 = 1;
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const PERF_TYPE_TRACEPOINT: u32 = 2;
/// `_IOW('$', 8, __u32)` and `_IO('$', 0)` from linux/perf_event.h.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `mov64 r0, 0; exit`: opcode, registers, offset, immediate per instruction.
const EMPTY_PROGRAM: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
/// `mov64 r0, 1; exit`: a cgroup_skb program that lets every packet pass
/// (0 would drop them all).
const ALLOW_PROGRAM: [u64; 2] = [0x0000_0001_0000_00b7, 0x0000_0000_0000_0095];
/// Shown by `bpftool prog show`, so that a leftover is recognisable.
const PROG_NAME: &[u8] = b"wirespan_floor";

/// Empty programs attached until dropped.
pub struct Floor {
    /// What was attached, for the report.
    pub what: String,
    /// How many attach points.
    pub points: usize,
    /// The perf event or raw tracepoint fds that hold the attachments
    /// (closing one detaches), each before its program's fd: a Vec drops
    /// in order, so nothing is left attached to a closed program.
    _fds: Vec<OwnedFd>,
    /// The programs' fds (owned by `_fds`), for [`Floor::run_stats`].
    programs: Vec<RawFd>,
}

impl Floor {
    /// An empty program on each tracepoint the agent attaches to on this
    /// kernel: the socket classifier's two when the kernel has them (the
    /// agent's `auto` choice), and every other hook the kernel has.
    pub fn agent_tracepoints() -> Result<Self> {
        let prog = load(BPF_PROG_TYPE_TRACEPOINT)?;
        let sock: &[Hook] = if SOCK_HOOKS.iter().all(has_tracepoint) {
            SOCK_HOOKS
        } else {
            &[]
        };
        let mut fds = Vec::new();
        for h in sock.iter().chain(HOOKS).filter(|h| has_tracepoint(h)) {
            fds.push(
                attach_tracepoint(&prog, h)
                    .with_context(|| format!("floor: attaching {}:{}", h.category, h.name))?,
            );
        }
        let points = fds.len();
        let programs = vec![prog.as_raw_fd()];
        fds.push(prog);
        Ok(Self {
            what: format!("empty programs on the agent's {points} tracepoints"),
            points,
            _fds: fds,
            programs,
        })
    }

    /// An empty program on the one tracepoint `h`.
    pub fn on_hook(h: &Hook) -> Result<Self> {
        let prog = load(BPF_PROG_TYPE_TRACEPOINT)?;
        let event = attach_tracepoint(&prog, h)
            .with_context(|| format!("floor: attaching {}:{}", h.category, h.name))?;
        let programs = vec![prog.as_raw_fd()];
        Ok(Self {
            what: format!("an empty program on {}:{}", h.category, h.name),
            points: 1,
            _fds: vec![event, prog],
            programs,
        })
    }

    /// `(run_cnt, run_time_ns)` summed over the programs, from this
    /// process's fdinfo: counted only while `kernel.bpf_stats_enabled` is 1.
    pub fn run_stats(&self) -> Result<(u64, u64)> {
        let (mut cnt, mut ns) = (0, 0);
        for fd in &self.programs {
            let path = format!("/proc/self/fdinfo/{fd}");
            let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            cnt += field(&text, "run_cnt").unwrap_or(0);
            ns += field(&text, "run_time_ns").unwrap_or(0);
        }
        Ok((cnt, ns))
    }

    /// An allow-all cgroup_skb program on the ingress and one on the egress
    /// of the cgroup v2 directory `cgroup`, attached with bpf links (closing
    /// the link's fd detaches). Only sockets created by processes in that
    /// cgroup (and the connections they accept) run them.
    pub fn cgroup_skb(cgroup: &Path) -> Result<Self> {
        let dir = fs::File::open(cgroup)
            .with_context(|| format!("floor: opening cgroup {}", cgroup.display()))?;
        let attached = [
            (BPF_CGROUP_INET_INGRESS, "ingress"),
            (BPF_CGROUP_INET_EGRESS, "egress"),
        ]
        .into_iter()
        .map(|(attach, name)| {
            let prog = load_program(BPF_PROG_TYPE_CGROUP_SKB, attach, &ALLOW_PROGRAM)?;
            let link = link_create(&prog, dir.as_raw_fd(), attach).with_context(|| {
                format!("floor: attaching cgroup_skb {name} to {}", cgroup.display())
            })?;
            Ok((link, prog))
        })
        .collect::<Result<Vec<_>>>()?;
        Ok(Self::linked(
            "allow-all cgroup_skb programs on nginx's cgroup, ingress and egress",
            attached,
        ))
    }

    /// An empty raw-tracepoint program on `sys_enter` and one on `sys_exit`.
    pub fn raw_syscalls() -> Result<Self> {
        let attached = ["sys_enter", "sys_exit"]
            .into_iter()
            .map(|name| {
                let prog = load(BPF_PROG_TYPE_RAW_TRACEPOINT)?;
                let link = raw_tracepoint_open(name, &prog)
                    .with_context(|| format!("floor: attaching raw tracepoint {name}"))?;
                Ok((link, prog))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::linked(
            "empty raw tracepoint programs on sys_enter and sys_exit",
            attached,
        ))
    }

    /// Programs each held by an attachment fd of its own (a bpf link or a
    /// raw tracepoint), as `(attachment, program)` pairs: one point each.
    fn linked(what: &str, attached: Vec<(OwnedFd, OwnedFd)>) -> Self {
        let programs = attached.iter().map(|(_, p)| p.as_raw_fd()).collect();
        let points = attached.len();
        Self {
            what: what.to_string(),
            points,
            // Each attachment before its program (see `_fds`).
            _fds: attached.into_iter().flat_map(|(a, p)| [a, p]).collect(),
            programs,
        }
    }
}

fn tracefs_events() -> &'static Path {
    if Path::new("/sys/kernel/tracing/events").exists() {
        Path::new("/sys/kernel/tracing/events")
    } else {
        Path::new("/sys/kernel/debug/tracing/events")
    }
}

fn has_tracepoint(h: &Hook) -> bool {
    tracefs_events().join(h.category).join(h.name).exists()
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> Result<OwnedFd> {
    // SAFETY: `attr` is a zeroed 128-byte `union bpf_attr` with the fields
    // of `cmd` filled in; the kernel reads at most the size passed.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size_of_val(attr)) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("bpf({cmd})"));
    }
    // SAFETY: a new fd the kernel handed us, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

/// `BPF_PROG_LOAD` of [`EMPTY_PROGRAM`], with the verifier's log on refusal.
fn load(prog_type: u32) -> Result<OwnedFd> {
    load_program(prog_type, 0, &EMPTY_PROGRAM)
}

/// `BPF_PROG_LOAD` of `insns` as `prog_type`, for `expected_attach_type`
/// where the type needs one, with the verifier's log on refusal.
fn load_program(prog_type: u32, expected_attach_type: u32, insns: &[u64]) -> Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut attr = [0u64; 16];
    // prog_type, insn_cnt | insns | license | log_level, log_size | log_buf
    attr[0] = u64::from(prog_type) | (insns.len() as u64) << 32;
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    attr[3] = 1 | (log.len() as u64) << 32;
    attr[4] = log.as_mut_ptr() as u64;
    // kern_version, prog_flags | prog_name[16] at byte 48
    let mut name = [0u8; 16];
    name[..PROG_NAME.len()].copy_from_slice(PROG_NAME);
    attr[6] = u64::from_ne_bytes(name[..8].try_into()?);
    attr[7] = u64::from_ne_bytes(name[8..].try_into()?);
    // prog_ifindex, expected_attach_type at byte 64
    attr[8] = u64::from(expected_attach_type) << 32;
    bpf(BPF_PROG_LOAD, &mut attr).with_context(|| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        format!(
            "loading a floor program (type {prog_type}, attach type \
             {expected_attach_type}); verifier: {}",
            String::from_utf8_lossy(&log[..end]).trim()
        )
    })
}

/// A perf event on the tracepoint's id, with `prog` attached and enabled.
fn attach_tracepoint(prog: &OwnedFd, h: &Hook) -> Result<OwnedFd> {
    let id_path = tracefs_events().join(h.category).join(h.name).join("id");
    let id: u64 = fs::read_to_string(&id_path)
        .with_context(|| format!("reading {}", id_path.display()))?
        .trim()
        .parse()
        .with_context(|| format!("parsing {}", id_path.display()))?;
    let mut attr = [0u64; 16];
    // type, size | config | sample_period | sample_type | read_format |
    // flags (0: enabled) | wakeup_events, bp_type
    attr[0] = u64::from(PERF_TYPE_TRACEPOINT) | (size_of_val(&attr) as u64) << 32;
    attr[1] = id;
    attr[2] = 1;
    attr[6] = 1;
    // SAFETY: a zeroed 128-byte perf_event_attr with the fields above; all
    // CPUs (-1 pid, CPU 0: a tracepoint program runs wherever it fires).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_mut_ptr(),
            -1,
            0,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("perf_event_open");
    }
    // SAFETY: a new fd the kernel handed us.
    let event = unsafe { OwnedFd::from_raw_fd(rc as RawFd) };
    for (req, arg) in [
        (PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()),
        (PERF_EVENT_IOC_ENABLE, 0),
    ] {
        // SAFETY: ioctls on our own perf event fd with an integer argument.
        if unsafe { libc::ioctl(event.as_raw_fd(), req, arg) } < 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("ioctl {req:#x}"));
        }
    }
    Ok(event)
}

/// `BPF_RAW_TRACEPOINT_OPEN`: the returned fd holds the attachment.
fn raw_tracepoint_open(name: &str, prog: &OwnedFd) -> Result<OwnedFd> {
    let name = CString::new(name)?;
    let mut attr = [0u64; 16];
    attr[0] = name.as_ptr() as u64;
    attr[1] = prog.as_raw_fd() as u64;
    bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
}

/// `BPF_LINK_CREATE` of `prog` on `target_fd` (a cgroup directory) as
/// `attach_type`: the returned fd holds the attachment.
fn link_create(prog: &OwnedFd, target_fd: RawFd, attach_type: u32) -> Result<OwnedFd> {
    let mut attr = [0u64; 16];
    // prog_fd, target_fd | attach_type, flags
    attr[0] = u64::from(prog.as_raw_fd() as u32) | u64::from(target_fd as u32) << 32;
    attr[1] = u64::from(attach_type);
    bpf(BPF_LINK_CREATE, &mut attr)
}
