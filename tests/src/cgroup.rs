//! A child cgroup (v2) for one test, so that sock_ops programs are never
//! attached to the node's root cgroup. The test process moves itself in
//! (its children, started after, are born there) and out again; dropping
//! the value moves it out and removes the directory once the processes the
//! test started inside have exited.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long Drop waits for the test's processes to leave the cgroup.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TestCgroup {
    dir: PathBuf,
    /// Where the test process was before (to go back to).
    home: PathBuf,
}

/// The cgroup v2 mount point, from /proc/self/mounts.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
    })
}

impl TestCgroup {
    /// Creates `<cgroup2 root>/wirespan-test-<pid>-<name>` (panics when
    /// cgroup v2 is not mounted: the callers' `require_ebpf` ran first).
    pub fn create(name: &str) -> TestCgroup {
        let root = cgroup2_root().expect("cgroup v2 is mounted (see /proc/mounts)");
        let dir = root.join(format!("wirespan-test-{}-{name}", std::process::id()));
        if !dir.exists() {
            fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        let rel = fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string()))
            })
            .unwrap_or_else(|| "/".to_string());
        let home = root.join(rel.trim_start_matches('/'));
        eprintln!(
            "[harness] cgroup {} (home {})",
            dir.display(),
            home.display()
        );
        TestCgroup { dir, home }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The path as an agent argument.
    pub fn arg(&self) -> String {
        self.dir.display().to_string()
    }

    /// Moves the test process in: what it starts from now on is born there.
    pub fn enter(&self) {
        move_self(&self.dir);
    }

    /// Moves the test process back where it was.
    pub fn leave(&self) {
        move_self(&self.home);
    }

    fn procs(&self) -> String {
        fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default()
    }
}

fn move_self(dir: &Path) {
    let pid = std::process::id().to_string();
    fs::write(dir.join("cgroup.procs"), &pid)
        .unwrap_or_else(|e| panic!("moving pid {pid} into {}: {e}", dir.display()));
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if self.procs().contains(&std::process::id().to_string()) {
            move_self(&self.home);
        }
        let deadline = Instant::now() + EMPTY_TIMEOUT;
        while !self.procs().trim().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Err(e) = fs::remove_dir(&self.dir) {
            eprintln!(
                "[harness] cannot remove {} ({e}); still in it: {:?}",
                self.dir.display(),
                self.procs()
            );
        }
    }
}
