//! What the bench starts, and how it looks at and stops it: every child is
//! recorded with its pid and stopped by that pid when the guard drops, also
//! on error or Ctrl-C.

use std::{
    fs,
    io::{BufRead, BufReader, Read},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::util::{self, note};

const STOP_GRACE: Duration = Duration::from_secs(5);

/// Puts a child in its own process group (the terminal's Ctrl-C reaches
/// only xtask, which then stops children in order) and makes the kernel
/// send it `sig` if xtask dies without cleaning up.
pub fn supervise(cmd: &mut Command, sig: libc::c_int) {
    cmd.process_group(0).stdin(Stdio::null());
    // SAFETY: the closure calls only prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::c_ulong::try_from(sig).unwrap_or(9),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub fn bail_if_interrupted() -> Result<()> {
    if let Some(sig) = util::caught_signal() {
        bail!("interrupted (signal {sig})");
    }
    Ok(())
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr().context("local_addr")?.port())
}

/// Polls until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_listening(child: &mut Child, name: &str, port: u16, timeout: Duration) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        bail_if_interrupted()?;
        if let Some(st) = child.try_wait().context("waiting for child")? {
            bail!("{name} exited at start ({st})");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{name} did not listen on {addr} within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// CPU seconds (user + system) a process has used so far, from
/// /proc/PID/stat fields 14 and 15.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) as f64 / ticks)
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Lines a child printed on one pipe, shared with a reader thread.
#[derive(Default)]
pub struct Lines {
    state: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Lines {
    fn lock(&self) -> MutexGuard<'_, (Vec<String>, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.lock().0.clone()
    }

    /// Waits until a line contains `needle` (true), the pipe closes or
    /// `timeout` passes (false).
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if st.0.iter().any(|l| l.contains(needle)) {
                return Ok(true);
            }
            if st.1 {
                return Ok(false);
            }
            drop(st);
            bail_if_interrupted()?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            st = self.lock();
            st = self
                .changed
                .wait_timeout(st, (deadline - now).min(Duration::from_millis(200)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Reads `pipe` into `lines`, optionally echoing each line with a prefix.
pub fn read_lines(
    pipe: impl Read + Send + 'static,
    lines: Arc<Lines>,
    echo: Option<&'static str>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    if let Some(prefix) = echo {
                        eprintln!("    {prefix} {line}");
                    }
                    lines.lock().0.push(line);
                    lines.changed.notify_all();
                }
            }
        }
        lines.lock().1 = true;
        lines.changed.notify_all();
    })
}

/// One started child: its name, the signal that stops it, the process.
struct Started {
    name: String,
    stop_signal: libc::c_int,
    child: Child,
}

/// Everything the bench started; `Drop` stops it all (by pid, newest first)
/// and removes the temp dir.
pub struct Guard {
    pub dir: PathBuf,
    started: Vec<Started>,
    readers: Vec<JoinHandle<()>>,
}

impl Guard {
    pub fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "wirespan-bench-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir,
            started: Vec::new(),
            readers: Vec::new(),
        })
    }

    /// Spawns `cmd` supervised (own process group, death signal), records
    /// it, and returns its pid. `stop_signal` is what [`Guard::stop`] and
    /// `Drop` send first.
    pub fn spawn(&mut self, name: &str, mut cmd: Command, stop_signal: libc::c_int) -> Result<u32> {
        supervise(&mut cmd, stop_signal);
        println!("    $ {}", util::render(&cmd));
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let pid = child.id();
        self.started.push(Started {
            name: name.to_string(),
            stop_signal,
            child,
        });
        Ok(pid)
    }

    /// The child started as `pid`.
    pub fn child(&mut self, pid: u32) -> Result<&mut Child> {
        self.started
            .iter_mut()
            .find(|s| s.child.id() == pid)
            .map(|s| &mut s.child)
            .with_context(|| format!("no child with pid {pid}"))
    }

    pub fn add_reader(&mut self, reader: JoinHandle<()>) {
        self.readers.push(reader);
    }

    /// Stops the child `pid` with its stop signal, waits up to `grace`,
    /// then SIGKILL; forgets it. Returns its exit status.
    pub fn stop(&mut self, pid: u32, grace: Duration) -> Result<ExitStatus> {
        let idx = self
            .started
            .iter()
            .position(|s| s.child.id() == pid)
            .with_context(|| format!("no child with pid {pid}"))?;
        let mut s = self.started.remove(idx);
        util::stop_child(&mut s.child, s.stop_signal, grace)
    }

    /// The pids of the children it holds, oldest first.
    pub fn pids(&self) -> Vec<u32> {
        self.started.iter().map(|s| s.child.id()).collect()
    }

    /// Stops the children whose pid is in `pids`, newest first (each with
    /// its stop signal, then SIGKILL after a grace period); leaves the
    /// others, and pids that are not its children, alone.
    pub fn stop_among(&mut self, pids: &[u32]) {
        let ours: Vec<u32> = self
            .started
            .iter()
            .rev()
            .map(|s| s.child.id())
            .filter(|p| pids.contains(p))
            .collect();
        for pid in ours {
            match self.stop(pid, STOP_GRACE) {
                Ok(st) => note(format!("pid {pid} stopped ({st})")),
                Err(e) => eprintln!("    warning: stopping pid {pid}: {e:#}"),
            }
        }
    }

    /// Joins the pipe readers (after the children that feed them exited).
    pub fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        while let Some(mut s) = self.started.pop() {
            let pid = s.child.id();
            match util::stop_child(&mut s.child, s.stop_signal, STOP_GRACE) {
                Ok(st) => note(format!("{} (pid {pid}) stopped ({st})", s.name)),
                Err(e) => eprintln!("    warning: stopping {} (pid {pid}): {e:#}", s.name),
            }
        }
        self.join_readers();
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("    warning: removing {}: {e}", self.dir.display());
        }
    }
}

/// Reads a whole small file, for error messages.
pub fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Raises this process's open-file limit (soft and hard) to at least `want`;
/// children inherit it.
pub fn raise_nofile(want: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    let new = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit reads the struct we own; raising the hard limit
    // needs root, which the bench has.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setrlimit(RLIMIT_NOFILE, {want})"));
    }
    note(format!("open-file limit raised to {want}"));
    Ok(())
}
