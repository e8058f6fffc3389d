//! Loads the embedded eBPF object, hands it its configuration and attaches
//! every program. Optional hooks that fail to attach cost a warning that
//! names what is lost; the agent carries on with the rest.

use std::path::Path;

use anyhow::{Context, bail};
use aya::{Ebpf, EbpfLoader, programs::TracePoint};
use log::{info, warn};
use wirespan_common::config::KernelConfig;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/wirespan.bpf.o"));

/// A tracepoint program and what is lost when it cannot be attached.
struct Hook {
    program: &'static str,
    category: &'static str,
    name: &'static str,
    /// None: required, the agent cannot work without it.
    lost: Option<&'static str>,
}

const fn hook(
    program: &'static str,
    category: &'static str,
    name: &'static str,
    lost: Option<&'static str>,
) -> Hook {
    Hook {
        program,
        category,
        name,
        lost,
    }
}

const HOOKS: &[Hook] = &[
    // Without these, socket fds cannot be told from files and pipes (the
    // file-table walk fallback for kernels before 6.2 is not built yet).
    hook("sock_send_len", "sock", "sock_send_length", None),
    hook("sock_recv_len", "sock", "sock_recv_length", None),
    hook(
        "enter_read",
        "syscalls",
        "sys_enter_read",
        Some("bytes read with read()"),
    ),
    hook(
        "exit_read",
        "syscalls",
        "sys_exit_read",
        Some("bytes read with read()"),
    ),
    hook(
        "enter_write",
        "syscalls",
        "sys_enter_write",
        Some("bytes written with write()"),
    ),
    hook(
        "exit_write",
        "syscalls",
        "sys_exit_write",
        Some("bytes written with write()"),
    ),
    hook(
        "enter_readv",
        "syscalls",
        "sys_enter_readv",
        Some("bytes read with readv()"),
    ),
    hook(
        "exit_readv",
        "syscalls",
        "sys_exit_readv",
        Some("bytes read with readv()"),
    ),
    hook(
        "enter_writev",
        "syscalls",
        "sys_enter_writev",
        Some("bytes written with writev()"),
    ),
    hook(
        "exit_writev",
        "syscalls",
        "sys_exit_writev",
        Some("bytes written with writev()"),
    ),
    hook(
        "enter_sendto",
        "syscalls",
        "sys_enter_sendto",
        Some("bytes sent with send()/sendto()"),
    ),
    hook(
        "exit_sendto",
        "syscalls",
        "sys_exit_sendto",
        Some("bytes sent with send()/sendto()"),
    ),
    hook(
        "enter_recvfrom",
        "syscalls",
        "sys_enter_recvfrom",
        Some("bytes received with recv()/recvfrom()"),
    ),
    hook(
        "exit_recvfrom",
        "syscalls",
        "sys_exit_recvfrom",
        Some("bytes received with recv()/recvfrom()"),
    ),
    hook(
        "enter_sendmsg",
        "syscalls",
        "sys_enter_sendmsg",
        Some("bytes sent with sendmsg()"),
    ),
    hook(
        "exit_sendmsg",
        "syscalls",
        "sys_exit_sendmsg",
        Some("bytes sent with sendmsg()"),
    ),
    hook(
        "enter_recvmsg",
        "syscalls",
        "sys_enter_recvmsg",
        Some("bytes received with recvmsg()"),
    ),
    hook(
        "exit_recvmsg",
        "syscalls",
        "sys_exit_recvmsg",
        Some("bytes received with recvmsg()"),
    ),
    hook(
        "enter_sendfile",
        "syscalls",
        "sys_enter_sendfile64",
        Some("response bodies sent with sendfile()"),
    ),
    hook(
        "exit_sendfile",
        "syscalls",
        "sys_exit_sendfile64",
        Some("response bodies sent with sendfile()"),
    ),
    hook(
        "exit_accept",
        "syscalls",
        "sys_exit_accept",
        Some("accept() boundaries (fd reuse detection)"),
    ),
    hook(
        "exit_accept4",
        "syscalls",
        "sys_exit_accept4",
        Some("accept4() boundaries (fd reuse detection)"),
    ),
    hook(
        "enter_connect",
        "syscalls",
        "sys_enter_connect",
        Some("connect() boundaries (fd reuse detection)"),
    ),
    hook(
        "exit_connect",
        "syscalls",
        "sys_exit_connect",
        Some("connect() boundaries (fd reuse detection)"),
    ),
    hook(
        "enter_close",
        "syscalls",
        "sys_enter_close",
        Some("close(): in-flight requests are flushed at process exit instead"),
    ),
    hook(
        "proc_exit",
        "sched",
        "sched_process_exit",
        Some("process exit: connections linger until evicted"),
    ),
    hook(
        "proc_exec",
        "sched",
        "sched_process_exec",
        Some("exec: process names may be stale"),
    ),
];

/// aya finds tracepoint ids through tracefs, which a fresh machine (or a
/// container without the host's) may not have mounted.
fn ensure_tracefs() -> anyhow::Result<()> {
    let root = Path::new("/sys/kernel/tracing");
    if root.join("events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    info!("mounting tracefs at /sys/kernel/tracing (tracepoint attach needs it)");
    let src = c"tracefs";
    let dst = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "tracefs is not mounted and mounting it failed ({}); mount it with \
             `mount -t tracefs tracefs /sys/kernel/tracing`",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Loads and attaches everything; returns the live object (dropping it
/// detaches every program).
pub fn load(cfg: &KernelConfig) -> anyhow::Result<Ebpf> {
    if OBJECT.is_empty() {
        bail!(
            "this wirespan was built without eBPF probes (WIRESPAN_EBPF_OBJ=none); build it with `cargo xtask build`"
        );
    }
    ensure_tracefs()?;
    let mut ebpf = EbpfLoader::new()
        .override_global(wirespan_common::maps::CONFIG, cfg, true)
        .load(OBJECT)
        .context("loading the eBPF object into the kernel")?;
    let mut attached = 0usize;
    for h in HOOKS {
        match attach(&mut ebpf, h) {
            Ok(()) => attached += 1,
            Err(e) => match h.lost {
                None => {
                    return Err(
                        e.context(format!("required hook {}:{} failed", h.category, h.name))
                    );
                }
                Some(lost) => warn!(
                    "hook {}:{} unavailable ({e:#}); lost: {lost}",
                    h.category, h.name
                ),
            },
        }
    }
    info!("socket classification: sock:sock_send_length/sock_recv_length tracepoints");
    info!("{attached} of {} programs attached", HOOKS.len());
    Ok(ebpf)
}

fn attach(ebpf: &mut Ebpf, h: &Hook) -> anyhow::Result<()> {
    let prog: &mut TracePoint = ebpf
        .program_mut(h.program)
        .with_context(|| format!("program {} missing from the object", h.program))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("verifier rejected {}", h.program))?;
    prog.attach(h.category, h.name)?;
    Ok(())
}
