//! The agent under test, driven as a black box.
//!
//! [`Agent::start`] spawns the binary with `--print json` and the given
//! selectors. Two reader threads collect stdout (parsed into [`Span`]s) and
//! stderr (kept as lines, echoed to the test's stderr with a `[wirespan]`
//! prefix so failures show the agent's log). Waiting is done on a condition
//! variable with a deadline: no fixed sleeps.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::env;
use crate::span::{self, Span, SpanKind};

/// How long the agent may take to attach its probes: 60 s, or
/// `$WIRESPAN_READY_TIMEOUT_SECS` (the kernel-matrix guests, where the
/// verifier runs emulated).
pub fn ready_timeout() -> Duration {
    std::env::var("WIRESPAN_READY_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs)
}
/// How long spans may take to show up after the traffic that causes them:
/// 30 s, or `$WIRESPAN_SPAN_TIMEOUT_SECS`.
pub fn span_timeout() -> Duration {
    std::env::var("WIRESPAN_SPAN_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_secs)
}
/// How long the agent may take to flush and exit after SIGINT/SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

const READY_MARKER: &str = "wirespan: ready";
const COUNTERS_MARKER: &str = "wirespan: counters ";

#[derive(Default)]
struct State {
    spans: Vec<Span>,
    /// stdout lines that are not a valid ExportTraceServiceRequest, with the reason.
    bad_lines: Vec<String>,
    /// Every non-empty stdout line, verbatim.
    stdout_lines: Vec<String>,
    stderr: Vec<String>,
    ready: bool,
    stdout_eof: bool,
    stderr_eof: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    /// Waits until `done` holds or `timeout` passes; returns whether it held.
    fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if done(&state) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A running agent. Dropping it kills the process it started (by its pid).
pub struct Agent {
    child: Option<Child>,
    pid: u32,
    args: Vec<String>,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
}

/// What a stopped agent left behind.
pub struct Stopped {
    pub status: ExitStatus,
    pub spans: Vec<Span>,
    pub stderr: Vec<String>,
    /// Parsed from the `wirespan: counters {...}` stderr line, if any.
    pub counters: Option<Map<String, Value>>,
    pub bad_lines: Vec<String>,
    /// Every non-empty stdout line as printed (one OTLP/JSON request each),
    /// for decoders other than ours.
    pub stdout_lines: Vec<String>,
    pub args: Vec<String>,
}

/// The agent's variable for `--propagation`.
pub const PROPAGATION_ENV: &str = "WIRESPAN_PROPAGATION";

impl Agent {
    /// Spawns `wirespan --print json ARGS...` without waiting for readiness.
    pub fn start(args: &[&str]) -> Agent {
        let mut full: Vec<String> = vec!["--print".into(), "json".into()];
        full.extend(args.iter().map(|a| a.to_string()));
        Agent::spawn(full, None)
    }

    /// Spawns `wirespan ARGS...` (no implicit `--print`) with `envs` set and
    /// every `OTEL_*` variable of the test's own environment removed, so only
    /// the configuration the test chose reaches the agent. Does not wait for
    /// readiness.
    pub fn start_with_env<K: AsRef<str>, V: AsRef<str>>(args: &[&str], envs: &[(K, V)]) -> Agent {
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        Agent::spawn(args.iter().map(|a| a.to_string()).collect(), Some(&envs))
    }

    /// `envs`: `None` inherits the environment as is; `Some` drops every
    /// inherited `OTEL_*` variable and sets these.
    fn spawn(full: Vec<String>, envs: Option<&[(String, String)]>) -> Agent {
        let bin = env::agent_bin();
        let mut cmd = Command::new(&bin);
        // Tests never attach sock_ops to the root cgroup: TCP option
        // propagation (on by default) is off unless the test gives its own
        // child cgroup (`--cgroup`) or chooses `--propagation` itself.
        if !full
            .iter()
            .any(|a| a == "--cgroup" || a.starts_with("--cgroup="))
        {
            cmd.env(PROPAGATION_ENV, "none");
        }
        if let Some(envs) = envs {
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("OTEL_") {
                    cmd.env_remove(k);
                }
            }
            cmd.envs(envs.iter().map(|(k, v)| (k, v)));
        }
        let mut child = cmd
            .args(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn the agent {}: {e}", bin.display()));
        let pid = child.id();
        eprintln!(
            "[harness] started agent pid {pid}: {}{} {}",
            envs.unwrap_or_default()
                .iter()
                .map(|(k, v)| format!("{k}={v:?} "))
                .collect::<String>(),
            bin.display(),
            full.join(" ")
        );
        let shared = Arc::new(Shared::default());
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let readers = vec![
            spawn_reader(
                "wirespan-stdout",
                stdout,
                Arc::clone(&shared),
                on_stdout_line,
                |s| s.stdout_eof = true,
            ),
            spawn_reader(
                "wirespan-stderr",
                stderr,
                Arc::clone(&shared),
                on_stderr_line,
                |s| s.stderr_eof = true,
            ),
        ];
        Agent {
            child: Some(child),
            pid,
            args: full,
            shared,
            readers,
        }
    }

    /// Spawns the agent and waits for `wirespan: ready` on its stderr.
    pub fn start_ready(args: &[&str]) -> Agent {
        let agent = Agent::start(args);
        agent.wait_ready();
        agent
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits up to [`ready_timeout`] for the readiness line. Panics, with the
    /// agent's stderr, if it exits first or never gets ready.
    pub fn wait_ready(&self) {
        let started = Instant::now();
        let ok = self
            .shared
            .wait_until(ready_timeout(), |s| s.ready || s.stderr_eof);
        let state = self.shared.lock();
        if !state.ready {
            panic!(
                "agent (pid {}, args {:?}) {} before printing {READY_MARKER:?}; stderr:\n{}",
                self.pid,
                self.args,
                if ok {
                    "closed stderr (exited?)"
                } else {
                    "timed out"
                },
                state.stderr.join("\n")
            );
        }
        eprintln!("[harness] agent ready after {:?}", started.elapsed());
    }

    /// A field of the agent's /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        crate::otlp::proc_status_kib(self.pid, field)
    }

    /// All spans printed so far.
    pub fn spans(&self) -> Vec<Span> {
        self.shared.lock().spans.clone()
    }

    /// All stderr lines so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.shared.lock().stderr.clone()
    }

    /// Waits until at least `count` spans satisfy `pred` (or `timeout`
    /// passes, or the agent closes stdout) and returns the matching spans.
    /// It does not panic on timeout: the caller asserts on what came back,
    /// so the failure message can show what was seen.
    pub fn wait_for_spans(
        &self,
        pred: impl Fn(&Span) -> bool,
        count: usize,
        timeout: Duration,
    ) -> Vec<Span> {
        self.shared.wait_until(timeout, |s| {
            s.stdout_eof || s.spans.iter().filter(|sp| pred(sp)).count() >= count
        });
        self.shared
            .lock()
            .spans
            .iter()
            .filter(|sp| pred(sp))
            .cloned()
            .collect()
    }

    /// How most tests end: waits for `count` spans of `kind` from process
    /// `pid`, stops the agent and checks that it exited cleanly. Returns
    /// what it left, and all of `pid`'s spans of that kind (for the caller
    /// to match: more than `count` is the caller's to judge).
    pub fn finish(self, pid: u32, kind: SpanKind, count: usize) -> (Stopped, Vec<Span>) {
        let wanted = |s: &Span| s.kind == kind && s.pid() == Some(pid);
        self.wait_for_spans(wanted, count, span_timeout());
        let stopped = self.stop();
        stopped.assert_clean_exit();
        let spans = stopped
            .spans
            .iter()
            .filter(|s| wanted(s))
            .cloned()
            .collect();
        (stopped, spans)
    }

    /// SIGINT, then wait for the flush and exit. See [`Agent::stop_with`].
    pub fn stop(self) -> Stopped {
        self.stop_with(libc::SIGINT)
    }

    /// Sends `signal` to the agent (by its pid), waits up to [`STOP_TIMEOUT`]
    /// for it to exit, and returns everything it printed. Panics if it does
    /// not exit in time (after killing it).
    pub fn stop_with(mut self, signal: libc::c_int) -> Stopped {
        let mut child = self.child.take().expect("agent already stopped");
        let pid = self.pid;
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe { libc::kill(pid as libc::pid_t, signal) };
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send(status);
        });
        let status = match rx.recv_timeout(STOP_TIMEOUT) {
            Ok(status) => status.expect("wait for the agent"),
            Err(_) => {
                // Still our unreaped child: the pid cannot have been reused.
                // SAFETY: as above.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                let _ = rx.recv();
                let _ = waiter.join();
                self.join_readers();
                panic!(
                    "agent pid {pid} did not exit within {STOP_TIMEOUT:?} after signal {signal}; \
                     killed it. stderr:\n{}",
                    self.shared.lock().stderr.join("\n")
                );
            }
        };
        let _ = waiter.join();
        self.join_readers();
        let state = std::mem::take(&mut *self.shared.lock());
        let counters = state
            .stderr
            .iter()
            .rev()
            .find_map(|l| l.split_once(COUNTERS_MARKER))
            .and_then(|(_, json)| serde_json::from_str::<Value>(json.trim()).ok())
            .and_then(|v| v.as_object().cloned());
        eprintln!(
            "[harness] agent pid {pid} exited with {status}; {} spans; counters {}",
            state.spans.len(),
            counters
                .as_ref()
                .map_or("(none)".to_string(), |c| Value::Object(c.clone())
                    .to_string())
        );
        // Every span, so a failure message can be read against all of them.
        const SHOW: usize = 500;
        for s in state.spans.iter().take(SHOW) {
            eprintln!("[harness] span: {s}");
        }
        if state.spans.len() > SHOW {
            eprintln!("[harness] ... {} more spans", state.spans.len() - SHOW);
        }
        Stopped {
            status,
            spans: state.spans,
            stderr: state.stderr,
            counters,
            bad_lines: state.bad_lines,
            stdout_lines: state.stdout_lines,
            args: std::mem::take(&mut self.args),
        }
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Kills exactly the process we spawned (std uses its pid).
            let _ = child.kill();
            let _ = child.wait();
            self.join_readers();
        }
    }
}

impl Stopped {
    /// One value of the final counters line (None: no line, or no such
    /// counter).
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.counters.as_ref()?.get(name)?.as_u64()
    }

    /// Spans satisfying `pred`.
    pub fn spans_where(&self, pred: impl Fn(&Span) -> bool) -> Vec<Span> {
        self.spans.iter().filter(|s| pred(s)).cloned().collect()
    }

    /// Stderr lines logged at level ERROR.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .iter()
            .filter(|l| is_error_log(l))
            .map(String::as_str)
            .collect()
    }

    /// Exit code 0 after the signal, a counters line, and only valid
    /// OTLP/JSON on stdout.
    pub fn assert_clean_exit(&self) {
        assert!(
            self.status.success(),
            "agent {:?} exited with {} after the stop signal (want 0); stderr:\n{}",
            self.args,
            self.status,
            self.stderr.join("\n")
        );
        assert!(
            self.counters.is_some(),
            "agent printed no parsable `{COUNTERS_MARKER}{{...}}` line on stderr:\n{}",
            self.stderr.join("\n")
        );
        assert!(
            self.bad_lines.is_empty(),
            "agent printed stdout lines that are not OTLP/JSON ExportTraceServiceRequests:\n{}",
            self.bad_lines.join("\n")
        );
    }

    /// No stderr line at level ERROR.
    pub fn assert_no_error_logs(&self) {
        let errors = self.error_lines();
        assert!(
            errors.is_empty(),
            "agent logged errors:\n{}\nfull stderr:\n{}",
            errors.join("\n"),
            self.stderr.join("\n")
        );
    }

    /// Renders spans for assertion messages.
    pub fn describe(&self, spans: &[Span]) -> String {
        span::describe(spans)
    }
}

/// A log line at level ERROR: the token `ERROR` (as env_logger and most
/// loggers print the level), not merely the substring.
fn is_error_log(line: &str) -> bool {
    line.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|tok| tok == "ERROR")
}

fn on_stdout_line(state: &mut State, line: String) {
    if line.trim().is_empty() {
        return;
    }
    match span::parse_export_line(&line) {
        Ok(spans) => state.spans.extend(spans),
        Err(e) => state.bad_lines.push(format!("{e:#}: {line}")),
    }
    state.stdout_lines.push(line);
}

fn on_stderr_line(state: &mut State, line: String) {
    eprintln!("[wirespan] {line}");
    if line.contains(READY_MARKER) {
        state.ready = true;
    }
    state.stderr.push(line);
}

fn spawn_reader(
    name: &str,
    pipe: impl Read + Send + 'static,
    shared: Arc<Shared>,
    on_line: fn(&mut State, String),
    on_eof: fn(&mut State),
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
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
                        shared.update(|s| on_line(s, line));
                    }
                }
            }
            shared.update(on_eof);
        })
        .expect("spawn reader thread")
}

#[cfg(test)]
mod tests {
    use super::is_error_log;

    #[test]
    fn error_level_detection() {
        assert!(is_error_log(
            "[2024-01-01T00:00:00Z ERROR wirespan::capture] boom"
        ));
        assert!(is_error_log("ERROR: boom"));
        assert!(!is_error_log(
            "[2024 WARN wirespan] probe x: ERRORS_total lost"
        ));
        assert!(!is_error_log("wirespan: counters {\"parse_errors\":0}"));
    }
}
