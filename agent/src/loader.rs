//! Loads the embedded eBPF object, hands it its configuration and attaches
//! every program. Optional hooks that fail to attach cost a warning that
//! names what is lost; the agent carries on with the rest.

use std::path::Path;

use anyhow::{Context, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::HashMap,
    programs::{Program, TracePoint},
};
use log::{info, warn};
use wirespan_common::{
    config::{Classifier, FdTableOffsets, KernelConfig},
    hooks::{HOOKS, Hook, SOCK_HOOKS},
};

use crate::config::ClassifierChoice;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/wirespan.bpf.o"));

fn tracefs_root() -> &'static Path {
    if Path::new("/sys/kernel/tracing/events").exists() {
        Path::new("/sys/kernel/tracing")
    } else {
        Path::new("/sys/kernel/debug/tracing")
    }
}

/// Whether the running kernel has a tracepoint (tracefs must be mounted).
pub fn has_tracepoint(category: &str, name: &str) -> bool {
    tracefs_root()
        .join("events")
        .join(category)
        .join(name)
        .exists()
}

/// Picks the socket classifier. `auto` prefers the tracepoints; the
/// file-table walk needs every `FdTableOffsets` field from BTF.
pub fn choose_classifier(
    choice: ClassifierChoice,
    fdtable: &FdTableOffsets,
) -> anyhow::Result<Classifier> {
    let tracepoints =
        has_tracepoint("sock", "sock_send_length") && has_tracepoint("sock", "sock_recv_length");
    let walk = fdtable.complete();
    match choice {
        ClassifierChoice::SockTracepoints if !tracepoints => {
            bail!(
                "--socket-classifier sock-tracepoints: this kernel lacks sock:sock_send_length/sock_recv_length (Linux 6.2+); use fd-table"
            )
        }
        ClassifierChoice::FdTable if !walk => {
            bail!("--socket-classifier fd-table: kernel BTF lacks the file-table offsets it needs")
        }
        ClassifierChoice::SockTracepoints => Ok(Classifier::SockTracepoints),
        ClassifierChoice::FdTable => Ok(Classifier::FdTable),
        ClassifierChoice::Auto if tracepoints => Ok(Classifier::SockTracepoints),
        ClassifierChoice::Auto if walk => Ok(Classifier::FdTable),
        ClassifierChoice::Auto => bail!(
            "cannot tell sockets from files on this kernel: no sock:sock_*_length tracepoints \
             (Linux 6.2+) and no kernel BTF for the file-table walk"
        ),
    }
}

/// aya finds tracepoint ids through tracefs, which a fresh machine (or a
/// container without the host's) may not have mounted.
pub fn ensure_tracefs() -> anyhow::Result<()> {
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

/// Loads and attaches everything, with a ring buffer of `ring_bytes`
/// (validated by the flag's parser); returns the live object (dropping it
/// detaches every program).
pub fn load(cfg: &KernelConfig, pids: &[u32], ring_bytes: u32) -> anyhow::Result<Ebpf> {
    if OBJECT.is_empty() {
        bail!(
            "this wirespan was built without eBPF probes (WIRESPAN_EBPF_OBJ=none); build it with `cargo xtask build`"
        );
    }
    ensure_tracefs()?;
    let classifier = if cfg.classifier == Classifier::FdTable as u32 {
        Classifier::FdTable
    } else {
        Classifier::SockTracepoints
    };
    let mut loader = EbpfLoader::new();
    loader
        .override_global(wirespan_common::maps::CONFIG, cfg, true)
        .map_max_entries(wirespan_common::maps::EVENTS, ring_bytes);
    if cfg.propagation & wirespan_common::config::PROPAGATE_HEADER == 0 {
        // Only injection uses it; preallocated, it would cost ~9 MB of
        // kernel memory for nothing.
        loader.map_max_entries(wirespan_common::maps::THREAD_STATE, 1);
    }
    let mut ebpf = loader
        .load(OBJECT)
        .context("loading the eBPF object into the kernel")?;
    // The kernel-side `--pid` filter, filled before anything is attached.
    if cfg.pid_filter != 0 {
        let mut selected: HashMap<_, u32, u8> = HashMap::try_from(
            ebpf.map_mut(wirespan_common::maps::SELECTED_PIDS)
                .context("map SELECTED_PIDS missing")?,
        )?;
        for &pid in pids {
            selected
                .insert(pid, 1, 0)
                .with_context(|| format!("selecting pid {pid} in the kernel"))?;
        }
    }
    let mut attached = 0usize;
    let sock_hooks = if classifier == Classifier::SockTracepoints {
        SOCK_HOOKS
    } else {
        &[]
    };
    for h in sock_hooks.iter().chain(HOOKS) {
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
    match classifier {
        Classifier::SockTracepoints => {
            info!("socket classification: sock:sock_send_length/sock_recv_length tracepoints")
        }
        Classifier::FdTable => info!("socket classification: file-table walk with BTF offsets"),
    }
    info!(
        "{attached} of {} programs attached",
        sock_hooks.len() + HOOKS.len()
    );
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

/// Detaches and unloads every program. Each tracepoint link costs an RCU
/// grace period to tear down (about 70 ms on 6.18), so they go in parallel:
/// shutdown then takes one grace period, not one per program.
pub fn detach_all(mut ebpf: Ebpf) {
    std::thread::scope(|scope| {
        for (name, prog) in ebpf.programs_mut() {
            scope.spawn(move || {
                let done = match prog {
                    Program::TracePoint(p) => p.unload(),
                    Program::UProbe(p) => p.unload(),
                    Program::SockOps(p) => p.unload(),
                    Program::SkMsg(p) => p.unload(),
                    _ => Ok(()),
                };
                match done {
                    // Programs this kernel's strategy never loaded (e.g. the
                    // sock_*_length ones under the file-table walk).
                    Ok(()) | Err(aya::programs::ProgramError::NotLoaded) => {}
                    Err(e) => warn!("detaching {name}: {e}"),
                }
            });
        }
    });
    drop(ebpf);
}
