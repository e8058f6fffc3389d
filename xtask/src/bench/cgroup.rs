//! A child cgroup (v2) for the bench's own processes, so that the agent's
//! sock_ops and sk_msg programs (TCP option, header injection) are attached
//! there and never to the node's root cgroup, which would touch every
//! connection on a shared machine.
//!
//! The processes are born inside it: [`Cgroup::place`] makes a command's
//! child write its own pid into `cgroup.procs` between fork and exec, so
//! the process, its threads and anything it starts later belong to the
//! cgroup before it opens a socket. xtask itself never moves. Dropping the
//! value waits for the cgroup to empty (the caller stops what it started
//! first) and removes the directory.

use std::{
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::util::note;

/// How long Drop waits for the processes to leave before giving up.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    /// `<dir>/cgroup.procs`, ready for the child between fork and exec
    /// (no allocation there).
    procs: CString,
}

/// The mount point of the cgroup v2 hierarchy, from /proc/self/mounts:
/// `/sys/fs/cgroup` on unified systems, `/sys/fs/cgroup/unified` on hybrid
/// ones.
fn cgroup2_root() -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_src, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir.replace("\\040", " ")))
        })
        .context("no cgroup v2 hierarchy is mounted (see /proc/mounts)")
}

impl Cgroup {
    /// Creates `<cgroup2 root>/wirespan-bench-<name>-<xtask pid>`: always a
    /// direct child of the root, never the root itself.
    pub fn create(name: &str) -> Result<Self> {
        if name.is_empty() || name.contains('/') {
            bail!("bad cgroup name {name:?}");
        }
        let root = cgroup2_root()?;
        let dir = root.join(format!("wirespan-bench-{name}-{}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
            .context("cgroup path holds a NUL byte")?;
        note(format!("child cgroup {}", dir.display()));
        Ok(Self { dir, procs })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Makes the child of `cmd` join this cgroup before it execs.
    pub fn place(&self, cmd: &mut Command) {
        let procs = self.procs.clone();
        // SAFETY: the closure calls only open, getpid, write and close
        // (async-signal-safe) and formats the pid on the stack.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut buf = [0u8; 20];
                let digits = decimal(u64::try_from(libc::getpid()).unwrap_or(0), &mut buf);
                let written = libc::write(fd, digits.as_ptr().cast(), digits.len());
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if written < 0 {
                    return Err(err);
                }
                Ok(())
            });
        }
    }

    /// The processes in the cgroup now.
    pub fn pids(&self) -> Vec<u32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

/// `n` in decimal, in the tail of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + EMPTY_TIMEOUT;
        while !self.pids().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        match fs::remove_dir(&self.dir) {
            Ok(()) => note(format!("removed cgroup {}", self.dir.display())),
            Err(e) => eprintln!(
                "    warning: cannot remove cgroup {} ({e}); still in it: {:?}",
                self.dir.display(),
                self.pids()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_in_decimal() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(4_194_304, &mut buf), b"4194304");
        assert_eq!(decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }
}
