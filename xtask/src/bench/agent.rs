//! The agent as the bench runs it: started on nginx's pid, stopped with
//! SIGINT, its exit counters read from stderr.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use super::{
    BenchArgs,
    cgroup::Cgroup,
    procs::{self, Guard, Lines},
    receiver::Receiver,
    timed,
};

const READY_MARKER: &str = "wirespan: ready";
const COUNTERS_MARKER: &str = "wirespan: counters ";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// SIGINT to exit: the agent's shutdown deadline (5 s by default) + slack.
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// Counter names that count something lost (kernel and userspace): the
/// agent's drop counters, reported with every scenario. Matched by part of
/// the name so that a new counter of the same kind is not missed.
const DROP_WORDS: [&str; 7] = [
    "dropped", "_full", "lost", "evicted", "failed", "overflow", "errors",
];

/// The agent command without inherited `OTEL_*` or `WIRESPAN_*` settings,
/// and without TCP option propagation: that attaches sock_ops to a cgroup
/// (by default the root one), which the bench, run in CI too, must never
/// do; nginx serving wrk makes no outgoing requests for the option to
/// matter anyway. An inherited `WIRESPAN_INJECT_TRACEPARENT` or
/// `WIRESPAN_CGROUP` would attach it too, hence no `WIRESPAN_*` at all.
/// Only [`propagating`] turns propagation on, in a child cgroup.
pub fn command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        let k_str = k.to_string_lossy();
        if k_str.starts_with("OTEL_") || k_str.starts_with("WIRESPAN_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("WIRESPAN_PROPAGATION", "none");
    cmd
}

/// How trace context crosses the wire in an agent run of the chain
/// scenario. Both ways that write to the wire attach sock_ops (and sk_msg)
/// to a cgroup: always a child [`Cgroup`] the bench made, never the root.
#[derive(Clone, Copy)]
pub enum Propagation<'a> {
    /// `--propagation none`: links only what the agent sees itself.
    None,
    /// `--propagation tcp-option --cgroup <child>`.
    TcpOption(&'a Cgroup),
    /// `--propagation none --inject-traceparent <ports> --cgroup <child>`.
    Inject(&'a Cgroup, &'a [u16]),
}

/// The agent tracing `pids` only, with `--print off` (capture, parsing,
/// linking and span assembly, no output) and `propagation`.
pub fn propagating(bin: &Path, pids: &[u32], propagation: Propagation) -> Command {
    let list = |v: Vec<String>| v.join(",");
    let mut cmd = command(bin);
    cmd.arg("--pid")
        .arg(list(pids.iter().map(u32::to_string).collect()))
        .args(["--print", "off"]);
    match propagation {
        Propagation::None => {}
        Propagation::TcpOption(cg) => {
            cmd.args(["--propagation", "tcp-option", "--cgroup"])
                .arg(cg.path());
        }
        Propagation::Inject(cg, ports) => {
            cmd.args(["--propagation", "none", "--inject-traceparent"])
                .arg(list(ports.iter().map(u16::to_string).collect()))
                .arg("--cgroup")
                .arg(cg.path());
        }
    }
    cmd
}

/// The agent tracing `pid` only (other processes on a shared machine cost
/// it nothing), exporting over OTLP/gRPC to `receiver` when given (batch
/// delay `--schedule-delay-ms`, queue `--queue-size`), else `--print off`.
pub fn traced(bin: &Path, pid: u32, receiver: Option<&Receiver>, args: &BenchArgs) -> Command {
    let mut cmd = command(bin);
    cmd.args(["--pid", &pid.to_string()]);
    match receiver {
        Some(r) => {
            cmd.env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{}", r.grpc_port),
            )
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            .env(
                "OTEL_BSP_SCHEDULE_DELAY",
                args.schedule_delay_ms.to_string(),
            );
            if let Some(q) = args.queue_size {
                cmd.env("OTEL_BSP_MAX_QUEUE_SIZE", q.to_string());
            }
        }
        None => {
            cmd.args(["--print", "off"]);
        }
    }
    cmd
}

/// Starts the agent (stdout to /dev/null, stderr echoed and kept) and waits
/// until it says it is ready. Returns its pid and its stderr lines.
pub fn start(guard: &mut Guard, mut cmd: Command) -> Result<(u32, Arc<Lines>)> {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    // SIGINT: the agent detaches and flushes; also if xtask dies.
    let agent_pid = guard.spawn("agent", cmd, libc::SIGINT)?;
    let stderr = guard
        .child(agent_pid)?
        .stderr
        .take()
        .context("agent stderr")?;
    let lines = Arc::new(Lines::default());
    guard.add_reader(procs::read_lines(
        stderr,
        Arc::clone(&lines),
        Some("[agent]"),
    ));
    if !lines.wait_for(READY_MARKER, READY_TIMEOUT)? {
        bail!(
            "the agent did not get ready within {READY_TIMEOUT:?}; its stderr:\n{}",
            lines.snapshot().join("\n")
        );
    }
    Ok((agent_pid, lines))
}

/// How an agent run ended.
pub struct Exit {
    pub status: String,
    pub success: bool,
    pub counters: Map<String, Value>,
}

impl Exit {
    pub fn counter(&self, k: &str) -> u64 {
        self.counters.get(k).and_then(Value::as_u64).unwrap_or(0)
    }

    /// The counters of things lost, zeros included.
    pub fn drops(&self) -> Map<String, Value> {
        self.counters
            .iter()
            .filter(|(k, _)| DROP_WORDS.iter().any(|w| k.contains(w)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Why the run does not count: a bad exit or no counters.
    pub fn problem(&self, what: &str) -> Option<String> {
        if !self.success {
            Some(format!("{what}: the agent exited with {}", self.status))
        } else if self.counters.is_empty() {
            Some(format!("{what}: the agent printed no counters"))
        } else {
            None
        }
    }
}

/// An agent for one timed run: its CPU time counted from when it was
/// started, or from [`Timed::measure_from_now`].
pub struct Timed {
    pid: u32,
    lines: Arc<Lines>,
    cpu_from: Option<f64>,
}

/// What a [`Timed`] agent cost, and how it exited.
pub struct Finished {
    pub exit: Exit,
    /// CPU seconds over what was measured, until its CPU time settled
    /// (what it drained after the load included).
    pub cpu: Option<f64>,
    /// Peak RSS (VmHWM), KiB.
    pub peak_rss_kib: Option<u64>,
}

impl Timed {
    /// [`start`], and the CPU clock.
    pub fn start(guard: &mut Guard, cmd: Command) -> Result<Self> {
        let (pid, lines) = start(guard, cmd)?;
        Ok(Self {
            pid,
            lines,
            cpu_from: procs::cpu_seconds(pid),
        })
    }

    /// Counts CPU time from now (after a warm-up, say).
    pub fn measure_from_now(&mut self) {
        self.cpu_from = procs::cpu_seconds(self.pid);
    }

    /// Waits until its CPU time settles, then [`stop`]s it.
    pub fn finish(self, guard: &mut Guard) -> Result<Finished> {
        let cpu = timed::cpu_when_settled(self.pid, timed::SETTLE_MAX);
        let peak_rss_kib = procs::status_kib(self.pid, "VmHWM");
        let exit = stop(guard, self.pid, &self.lines)?;
        Ok(Finished {
            exit,
            cpu: self.cpu_from.map(|b| cpu - b),
            peak_rss_kib,
        })
    }
}

/// Stops the agent (SIGINT: it detaches, flushes and prints its counters).
pub fn stop(guard: &mut Guard, pid: u32, lines: &Lines) -> Result<Exit> {
    let status = guard.stop(pid, STOP_GRACE)?;
    guard.join_readers();
    Ok(Exit {
        status: status.to_string(),
        success: status.success(),
        counters: exit_counters(lines),
    })
}

/// The counters the agent printed when it exited (empty if none).
pub fn exit_counters(lines: &Lines) -> Map<String, Value> {
    lines
        .snapshot()
        .iter()
        .rev()
        .find_map(|l| l.split_once(COUNTERS_MARKER))
        .and_then(|(_, j)| serde_json::from_str::<Value>(j.trim()).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}
