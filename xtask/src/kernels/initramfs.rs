//! The guest's initramfs: busybox, the kernel's 9p/virtio/overlay modules,
//! and an `/init` that reaches the host's root and runs the job script.
//!
//! `/init` (busybox sh) loads the modules in dependency order, mounts the
//! host's `/` read-only over 9p (tag `hostroot`), puts a tmpfs overlay on
//! top so the guest can write anywhere without touching the host, mounts the
//! writable job share (tag `job`) at the job directory's own host path (so
//! paths are the same in the guest and on the host), mounts proc, sys, dev,
//! tmp, run, cgroup2 and bpffs in the new root, brings `lo` up, chroots and
//! runs the job script with the host's bash. Then it powers off. Tracefs is
//! left for the agent to mount, as on a freshly booted machine.
//!
//! The archive is written in the cpio "newc" format by hand (no cpio tool).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// 9p message size: large enough that reading host files is not chatty,
/// small enough for the virtio ring of every kernel in the matrix.
const MSIZE: u32 = 262_144;

/// What `/init` needs to know.
pub struct InitSpec<'a> {
    /// Kernel modules, in load order.
    pub modules: &'a [PathBuf],
    /// The job directory (host path; shared writable as tag `job`).
    pub job_dir: &'a Path,
    /// The script to run in the chroot, inside `job_dir`.
    pub script: &'a Path,
}

/// Writes the initramfs for `spec` to `out`.
pub fn write(out: &Path, busybox: &Path, spec: &InitSpec) -> Result<()> {
    let mut cpio = Cpio::default();
    for dir in [
        "bin", "dev", "proc", "sys", "modules", "lower", "rw", "newroot", "tmp",
    ] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.file(
        "bin/busybox",
        0o755,
        &fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?,
    );
    let mut names = Vec::new();
    for m in spec.modules {
        let name = m
            .file_name()
            .context("module file name")?
            .to_string_lossy()
            .into_owned();
        cpio.file(
            &format!("modules/{name}"),
            0o644,
            &fs::read(m).with_context(|| format!("reading {}", m.display()))?,
        );
        names.push(name);
    }
    cpio.file("init", 0o755, init_script(&names, spec).as_bytes());
    fs::write(out, cpio.finish()).with_context(|| format!("writing {}", out.display()))
}

/// Single-quotes `s` for sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn init_script(modules: &[String], spec: &InitSpec) -> String {
    let job = sh_quote(&spec.job_dir.to_string_lossy());
    let script = sh_quote(&spec.script.to_string_lossy());
    let modules = modules.join(" ");
    format!(
        r#"#!/bin/busybox sh
# The guest's init, written by `cargo xtask test --kernels` (xtask/src/kernels/initramfs.rs).
/bin/busybox --install -s /bin
export PATH=/bin
say() {{ echo "wirespan-init: $*"; }}
die() {{ say "FAILED: $*"; sync; poweroff -f; sleep 10; }}
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in {modules}; do
    insmod /modules/$m || die "insmod $m"
done
P9="trans=virtio,version=9p2000.L,msize={MSIZE}"
mount -t 9p -o "$P9,ro,cache=loose" hostroot /lower || die "mount the host's root (9p tag hostroot)"
mount -t tmpfs -o mode=0755 tmpfs /rw || die "mount tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || die "mount the overlay"
R=/newroot
JOB={job}
mount -t 9p -o "$P9" job "$R$JOB" || die "mount the job share (9p tag job) at $JOB"
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
# No tmpfs on /tmp: the overlay already makes it writable, and a tmpfs
# would hide a workspace that lives under the host's /tmp.
mount -t tmpfs tmpfs $R/run
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || say "no cgroup2"
mount -t bpf bpf $R/sys/fs/bpf || say "no bpffs"
ip link set lo up || die "ip link set lo up"
hostname wirespan-guest
say "kernel $(uname -r) up; running $JOB"
chroot $R /bin/bash {script} </dev/console >/dev/console 2>&1
say "job script exited $?"
sync
poweroff -f
sleep 10
"#
    )
}

/// A cpio archive in the "newc" format (what the kernel unpacks).
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0, // mtime
            u32::try_from(data.len()).unwrap_or(u32::MAX),
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_aligned_and_terminated() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("init", 0o755, b"#!/bin/sh\n");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("bin\0") && text.contains("init\0"));
        let data = text.find("#!/bin/sh\n").expect("file data");
        assert_eq!(data % 4, 0, "file data starts 4-byte aligned");
        assert!(text.contains("TRAILER!!!\0"));
        // Header: magic + 13 fields of 8 hex digits.
        let header = &text[..110];
        assert_eq!(&header[14..22], "000041ed"); // mode of a 0755 directory
    }

    #[test]
    fn quotes_for_sh() {
        assert_eq!(sh_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
