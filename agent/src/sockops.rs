//! The sock_ops program that carries trace context in a TCP option: which
//! cgroup it serves, and attaching it there.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, ProgramArray, SockHash, lpm_trie::Key},
    programs::{CgroupAttachMode, SkMsg, SockOps, TracePoint},
};
use log::warn;
use wirespan_common::maps::{
    INJECT_CIDRS, INJECT_CIDRS_ENTRIES, INJECT_PORTS, INJECT_PORTS_ENTRIES, INJECT_SOCKS,
    SKMSG_PROGRAM, SOCKOPS_PROGRAM, TAIL_CALLS, TAIL_TRACESTATE, TRACESTATE_PROGRAM,
};

use crate::{cidr::CidrList, config::PortList};

/// The mount point of the cgroup v2 hierarchy (the node's root cgroup),
/// from /proc/self/mounts: `/sys/fs/cgroup` on unified systems,
/// `/sys/fs/cgroup/unified` on hybrid ones.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    cgroup2_mount(&mounts)
}

fn cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_src, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir.replace("\\040", " ")))
    })
}

/// The cgroup to serve: `--cgroup` (checked to be a cgroup v2 directory)
/// or the hierarchy's root.
pub fn choose_cgroup(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    match given {
        Some(dir) => {
            if !dir.join("cgroup.procs").exists() {
                bail!(
                    "--cgroup {}: not a cgroup v2 directory (no cgroup.procs in it)",
                    dir.display()
                );
            }
            Ok(dir.to_path_buf())
        }
        None => cgroup2_root().context("no cgroup v2 hierarchy is mounted (see /proc/mounts)"),
    }
}

/// Loads the sock_ops program and attaches it to `cgroup`. The link lives
/// as long as the `Ebpf` object; dropping it (or the agent dying) detaches.
pub fn attach(ebpf: &mut Ebpf, cgroup: &Path) -> anyhow::Result<()> {
    let prog: &mut SockOps = ebpf
        .program_mut(SOCKOPS_PROGRAM)
        .with_context(|| format!("program {SOCKOPS_PROGRAM} missing from the object"))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("verifier rejected {SOCKOPS_PROGRAM}"))?;
    let dir = File::open(cgroup).with_context(|| format!("opening {}", cgroup.display()))?;
    // A bpf_link (5.7+) always coexists with other programs on the
    // cgroup; link_create refuses the BPF_F_ALLOW_MULTI flag that
    // `AllowMultiple` would pass ("Invalid argument"), so: `Single`.
    prog.attach(dir, CgroupAttachMode::Single)
        .with_context(|| format!("attaching sock_ops to {}", cgroup.display()))?;
    Ok(())
}

/// Header injection: the allowlisted destination ports go in INJECT_PORTS
/// and the networks (if any) in INJECT_CIDRS (read by the sock_ops
/// program, which checks the networks only when the kernel config says
/// so), and the sk_msg program is attached to the INJECT_SOCKS SockHash.
/// Call before [`attach`], so that no connection is established before
/// the scope is known.
pub fn attach_injection(
    ebpf: &mut Ebpf,
    ports: &PortList,
    cidrs: Option<&CidrList>,
) -> anyhow::Result<()> {
    if let Some(cidrs) = cidrs {
        fill_cidrs(ebpf, cidrs)?;
    }
    let n = ports.ports().count();
    if n > INJECT_PORTS_ENTRIES as usize {
        bail!(
            "--inject-traceparent: {n} ports given, at most {INJECT_PORTS_ENTRIES} are supported"
        );
    }
    let mut map: HashMap<_, u16, u8> = HashMap::try_from(
        ebpf.map_mut(INJECT_PORTS)
            .context("map INJECT_PORTS missing")?,
    )?;
    for port in ports.ports() {
        map.insert(port, 1, 0)
            .with_context(|| format!("allowing port {port} for injection"))?;
    }
    let socks: SockHash<_, u64> =
        SockHash::try_from(ebpf.map(INJECT_SOCKS).context("map INJECT_SOCKS missing")?)?;
    let fd = socks
        .fd()
        .try_clone()
        .context("duplicating the SockHash fd")?;
    let prog: &mut SkMsg = ebpf
        .program_mut(SKMSG_PROGRAM)
        .with_context(|| format!("program {SKMSG_PROGRAM} missing from the object"))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("verifier rejected {SKMSG_PROGRAM}"))?;
    prog.attach(&fd)
        .context("attaching sk_msg to the injection SockHash")?;
    if let Err(e) = enable_tracestate(ebpf) {
        warn!(
            "tracestate capture unavailable ({e:#}); lost: tracestate next to injected traceparent"
        );
    }
    Ok(())
}

/// Puts the `tracestate` capture in the read programs' tail-call slot.
/// Until it is there (or if it never is), their tail call falls through.
fn enable_tracestate(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let prog: &mut TracePoint = ebpf
        .program_mut(TRACESTATE_PROGRAM)
        .with_context(|| format!("program {TRACESTATE_PROGRAM} missing from the object"))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("verifier rejected {TRACESTATE_PROGRAM}"))?;
    let fd = prog
        .fd()?
        .try_clone()
        .context("duplicating the program fd")?;
    let mut slots =
        ProgramArray::try_from(ebpf.map_mut(TAIL_CALLS).context("map TAIL_CALLS missing")?)?;
    slots
        .set(TAIL_TRACESTATE, &fd, 0)
        .context("filling the tail-call slot")?;
    Ok(())
}

fn fill_cidrs(ebpf: &mut Ebpf, cidrs: &CidrList) -> anyhow::Result<()> {
    if cidrs.len() > INJECT_CIDRS_ENTRIES as usize {
        bail!(
            "--inject-cidrs: {} networks given, at most {INJECT_CIDRS_ENTRIES} are supported",
            cidrs.len()
        );
    }
    let mut map: LpmTrie<_, [u8; 16], u8> = LpmTrie::try_from(
        ebpf.map_mut(INJECT_CIDRS)
            .context("map INJECT_CIDRS missing")?,
    )?;
    for c in cidrs.iter() {
        map.insert(&Key::new(u32::from(c.prefix), c.addr), 1, 0)
            .with_context(|| format!("allowing network {c} for injection"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_in_hybrid_and_unified_layouts() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }
}
