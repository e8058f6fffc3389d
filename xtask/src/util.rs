//! Small helpers shared by the tasks: paths, printing, running commands,
//! signals and child processes.

use std::{
    env,
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicI32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Environment variables that the outer `cargo xtask` (cargo, rustup) leaks
/// into its children. They must not reach the nightly eBPF build or
/// `cargo install`, which would otherwise use the wrong compiler or flags.
pub const LEAKY_ENV: &[&str] = &[
    "RUSTUP_TOOLCHAIN",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
];

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` when set, else `<root>/target`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                env::current_dir().map(|cwd| cwd.join(&dir)).unwrap_or(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// `path` relative to the workspace root when it lies inside it, for messages.
pub fn display_path(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Starts the clock used by [`section`]; call once at the top of `main`.
pub fn start_clock() {
    started();
}

/// Prints a section header with the time elapsed since xtask started.
pub fn section(title: &str) {
    let elapsed = started().elapsed().as_secs_f64();
    println!("\n==> {title}  [{elapsed:.1}s]");
}

/// Prints an indented note under the current section.
pub fn note(msg: impl AsRef<str>) {
    println!("    {}", msg.as_ref());
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A shell-like rendering of `cmd`: explicitly set variables, program, args.
pub fn render(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), quote(v))))
        .collect();
    // `$CARGO` is an absolute path into the toolchain; show it as `cargo`.
    let program = cmd.get_program();
    if env::var_os("CARGO").is_some_and(|c| c == program) {
        parts.push("cargo".to_string());
    } else {
        parts.push(quote(program));
    }
    parts.extend(cmd.get_args().map(quote));
    let line = parts.join(" ");
    match cmd.get_current_dir() {
        Some(dir) if dir != workspace_root() => format!("(cd {} && {line})", display_path(dir)),
        _ => line,
    }
}

/// Runs `cmd` to completion with inherited stdio, printing it first.
/// Returns its exit status; fails only when it cannot be started.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    println!("    $ {}", render(cmd));
    cmd.status()
        .with_context(|| format!("cannot start `{}`", render(cmd)))
}

/// Runs `cmd` like [`status`] and fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let st = status(cmd)?;
    if !st.success() {
        bail!("`{}` failed ({st})", render(cmd));
    }
    Ok(())
}

/// True when `program args...` starts and exits 0 (output discarded).
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stdout of `program args...` when it exits 0.
pub fn output_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `cargo` command for the workspace's own (stable) toolchain, run from
/// the workspace root. Uses `$CARGO`, which the outer cargo sets.
pub fn cargo() -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root());
    cmd
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The exit code a shell would report for `status` (128 + signal if killed).
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

static CAUGHT: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    CAUGHT.store(sig, Ordering::SeqCst);
}

/// Replaces the default (fatal) action of SIGINT and SIGTERM with a handler
/// that only records the signal, so xtask survives Ctrl-C, waits for its
/// children and cleans up. A handler (unlike SIG_IGN) is reset to the default
/// in children on exec, so they still react to Ctrl-C themselves.
pub fn catch_interrupts() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// The signal (SIGINT or SIGTERM) caught since [`catch_interrupts`], if any.
pub fn caught_signal() -> Option<libc::c_int> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Forgets a caught signal once it has been handled.
pub fn clear_caught_signal() {
    CAUGHT.store(0, Ordering::SeqCst);
}

/// Sends `sig` to process `pid`. A process that is already gone is not an error.
pub fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err).with_context(|| format!("kill({pid}, {sig})"));
        }
    }
    Ok(())
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().context("waiting for child")? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Stops `child` by pid: sends `sig`, waits up to `grace`, then SIGKILL.
pub fn stop_child(child: &mut Child, sig: libc::c_int, grace: Duration) -> Result<ExitStatus> {
    if let Some(st) = child.try_wait().context("waiting for child")? {
        return Ok(st);
    }
    signal(child.id(), sig)?;
    if let Some(st) = wait_timeout(child, grace)? {
        return Ok(st);
    }
    eprintln!(
        "    pid {} did not exit within {grace:?}; sending SIGKILL",
        child.id()
    );
    signal(child.id(), libc::SIGKILL)?;
    child.wait().context("waiting for killed child")
}
