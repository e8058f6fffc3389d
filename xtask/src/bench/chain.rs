//! `chain`: keep-alive requests/s through a traced two-hop chain of
//! unmodified services, wrk → forwarder → nginx, in four modes:
//! no agent; the agent with `--propagation none` (same-node linking only);
//! with the TCP option (`--propagation tcp-option --cgroup <child>`); with
//! header injection only (`--propagation none --inject-traceparent
//! <forwarder port>,<nginx port> --cgroup <child>`).
//!
//! The forwarder is `tests/servers/Forwarder.java` (JDK `HttpServer` with a
//! 16-thread pool, `HttpURLConnection` upstream), compiled with `javac` into
//! the bench's temp dir; not `py_forwarder.py`, whose interpreter would cap
//! the chain at a few hundred requests/s and hide what the agent costs. Two
//! standard JDK properties, no code change: `sun.net.httpserver.nodelay`
//! (the JDK server writes the head and the body in two sends, and with
//! Nagle on, the body waits for the client's delayed ACK: 40 ms a request,
//! about 150 req/s over 8 connections) and `http.maxConnections=16` (the
//! JDK keeps 5 idle upstream connections by default; with 8 requests in
//! flight, the rest would open a new connection for each request).
//! nginx is the bench's (same static file), its own instance.
//!
//! Why a fresh forwarder for every run: sock_ops sees a connection only
//! when it is established, so a kept-alive upstream connection from an
//! earlier run would carry no option and get no header. Each run starts
//! the forwarder, then the agent, then wrk: every connection of the run is
//! opened under that run's agent, and every mode gets the same fresh JVM
//! and the same warm-up (JIT), which is not reported. The order of the
//! modes rotates each round.
//!
//! The agent traces the forwarder and nginx by pid (`--pid`: the kernel
//! filters, so the other processes of a shared machine neither cost it
//! anything nor pay for its probes; `--open-ports` would trace them all).
//! wrk stands for an untraced outside client, so the context crosses the
//! wire on the forwarder → nginx hop; wrk's connections still run the
//! cgroup's sock_ops (and, on the injected port, sk_msg) programs. The
//! agent runs with `--print off`: the modes differ in propagation, not in
//! export, which is the same in each and is measured by `saturation`; the
//! Python OTLP receiver, at three spans per request, would compete for the
//! same two CPUs.
//!
//! Safety: sock_ops and sk_msg are attached to a child cgroup that this
//! scenario creates and removes ([`Cgroup`]), never to the root. nginx, the
//! forwarder and wrk are born in it (all runs, for the same conditions in
//! every mode); it is removed at the end, also on error, after the
//! processes the bench started in it are stopped (by pid).
//!
//! Each agent run proves its mode from its exit counters: with the TCP
//! option `tcp_options_written` and `tcp_options_read` > 0; with injection
//! `traceparent_injected` > 0 and no option written; without propagation
//! neither. A run where that fails is a problem of the scenario.
//!
//! Reported per mode: requests/s (each run, median), the ratio to no agent
//! (of the medians, and per round), wrk's p50/p99, CPU per request of the
//! forwarder + nginx (where sock_ops and sk_msg run) and of the agent, and
//! the proving counters per request.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use super::{
    agent::{self, Propagation},
    cgroup::Cgroup,
    load, procs,
    report::{Row, Section, fmt},
    suite::Ctx,
    timed::{self, Latency, Wrk, median},
};
use crate::util::{self, note, section};

const NAME: &str = "chain";
/// Unreported wrk run after the agent is ready: the JVM compiles its hot
/// paths meanwhile.
const WARMUP_SECS: u64 = 5;
const SHORT_WARMUP_SECS: u64 = 1;
/// The forwarder's thread pool, and its idle upstream connections.
const FORWARDER_THREADS: u32 = 16;
/// The counters that prove a mode, reported with every agent run.
const MODE_COUNTERS: [&str; 6] = [
    "tcp_options_written",
    "tcp_options_read",
    "tcp_options_no_room",
    "traceparent_injected",
    "trace_option_mismatches",
    "spans_emitted",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    NoAgent,
    NoPropagation,
    TcpOption,
    Injection,
}

/// The order of the runs within each round.
const MODES: [Mode; 4] = [
    Mode::NoAgent,
    Mode::NoPropagation,
    Mode::TcpOption,
    Mode::Injection,
];

impl Mode {
    fn key(self) -> &'static str {
        match self {
            Self::NoAgent => "none",
            Self::NoPropagation => "no-propagation",
            Self::TcpOption => "tcp-option",
            Self::Injection => "injection",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::NoAgent => "no agent",
            Self::NoPropagation => "agent, --propagation none",
            Self::TcpOption => "agent, TCP option",
            Self::Injection => "agent, traceparent injection",
        }
    }

    fn propagation<'a>(self, cg: &'a Cgroup, ports: &'a [u16]) -> Option<Propagation<'a>> {
        match self {
            Self::NoAgent => None,
            Self::NoPropagation => Some(Propagation::None),
            Self::TcpOption => Some(Propagation::TcpOption(cg)),
            Self::Injection => Some(Propagation::Inject(cg, ports)),
        }
    }

    /// Why `exit`'s counters do not show this mode at work, if they do not.
    fn unproven(self, exit: &agent::Exit) -> Option<String> {
        let c = |k| exit.counter(k);
        let (written, read, injected) = (
            c("tcp_options_written"),
            c("tcp_options_read"),
            c("traceparent_injected"),
        );
        let ok = match self {
            Self::NoAgent => true,
            Self::NoPropagation => written == 0 && read == 0 && injected == 0,
            Self::TcpOption => written > 0 && read > 0,
            Self::Injection => injected > 0 && written == 0,
        };
        (!ok).then(|| {
            format!(
                "counters do not show {}: tcp_options_written {written}, tcp_options_read \
                 {read}, traceparent_injected {injected}",
                self.label()
            )
        })
    }
}

struct Run {
    index: u32,
    mode: Mode,
    warmup_requests: u64,
    requests: u64,
    rps: f64,
    latency: Latency,
    non_2xx: u64,
    socket_errors: String,
    /// CPU seconds of the forwarder and nginx over the timed run.
    services_cpu: Option<f64>,
    /// The agent's CPU seconds over the timed run (until it settled).
    agent_cpu: Option<f64>,
    exit: Option<agent::Exit>,
}

impl Run {
    fn counter(&self, k: &str) -> Option<u64> {
        self.exit.as_ref().map(|e| e.counter(k))
    }

    /// `cpu` seconds per request of the timed run, in µs.
    fn us_per_request(&self, cpu: Option<f64>) -> Option<f64> {
        (self.requests > 0).then(|| cpu.map(|c| c * 1e6 / self.requests as f64))?
    }
}

/// The chain needs a JDK (the tests need one too).
pub fn check_tools() -> Result<()> {
    for tool in ["java", "javac"] {
        if !util::succeeds("sh", &["-c", &format!("command -v {tool}")]) {
            bail!(
                "{tool} not found: the chain scenario runs tests/servers/Forwarder.java (JDK 11+)"
            );
        }
    }
    Ok(())
}

pub fn run(cx: &mut Ctx) -> Result<Section> {
    let cgroup = Cgroup::create(NAME)?;
    let before = cx.guard.pids();
    let result = measure(cx, &cgroup);
    // On error, what this scenario started is still running (nginx, a
    // forwarder, wrk in the cgroup; an agent attached to it): stopped by
    // pid, so that the cgroup empties and goes.
    let ours: Vec<u32> = cx
        .guard
        .pids()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    cx.guard.stop_among(&ours);
    drop(cgroup);
    result
}

fn measure(cx: &mut Ctx, cg: &Cgroup) -> Result<Section> {
    let dir = cx.guard.path(NAME);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let classes = compile_forwarder(&dir)?;
    let nginx_port = procs::free_port()?;
    let nginx_pid = load::start_nginx_in(
        cx.guard,
        &dir,
        nginx_port,
        None,
        cx.nginx_cpus,
        Some(cg),
        None,
    )?;
    note(format!(
        "nginx pid {nginx_pid} on port {nginx_port} in {}",
        cg.path().display()
    ));
    let runs = if cx.args.short { 1 } else { cx.args.chain_runs };
    let length = cx.length(cx.args.chain_seconds);
    let warmup = Duration::from_secs(if cx.args.short {
        SHORT_WARMUP_SECS
    } else {
        WARMUP_SECS
    });
    let load_cpu = cx.load_cpu.map(|c| c.to_string());
    let setup = Setup {
        cg,
        classes,
        dir,
        nginx_pid,
        nginx_port,
        shape: Wrk {
            threads: cx.args.threads,
            connections: cx.args.connections,
            cpus: load_cpu.as_deref(),
            cgroup: Some(cg),
            link: None,
        },
        warmup,
        length,
    };

    let mut all = Vec::new();
    let mut problems = Vec::new();
    for index in 1..=runs {
        // Rotated each round, so that no mode always runs right after the
        // same one (or first, on a JVM that just compiled nginx's twin).
        let mut order = MODES;
        order.rotate_left((index as usize - 1) % MODES.len());
        for mode in order {
            let what = format!("{NAME} run {index}/{runs}, {}", mode.label());
            cx.check_time(&what)?;
            section(&format!("bench: {what}, {} s", length.as_secs()));
            let run = one_run(cx, &setup, mode, index)?;
            problems.extend(run_problem(&run).map(|p| format!("{NAME} run {index}, {p}")));
            all.push(run);
        }
    }
    cx.guard.stop(nginx_pid, Duration::from_secs(5))?;
    Ok(section_of(cx, &all, problems, length, warmup, runs))
}

/// What every run of the scenario shares.
struct Setup<'a> {
    cg: &'a Cgroup,
    /// Where `Forwarder.class` is.
    classes: PathBuf,
    /// The scenario's files: nginx's, the forwarders' logs.
    dir: PathBuf,
    nginx_pid: u32,
    nginx_port: u16,
    shape: Wrk<'a>,
    warmup: Duration,
    length: Duration,
}

/// One run: a fresh forwarder, the agent in `mode`, a warm-up, the timed
/// wrk run, the agent's exit counters.
fn one_run(cx: &mut Ctx, s: &Setup, mode: Mode, index: u32) -> Result<Run> {
    let (nginx_pid, shape) = (s.nginx_pid, &s.shape);
    let fwd_port = procs::free_port()?;
    let fwd_pid = start_forwarder(cx, s, fwd_port)?;
    let ports = [fwd_port, s.nginx_port];
    let mut started = match mode.propagation(s.cg, &ports) {
        Some(p) => {
            let cmd = agent::propagating(cx.bin, &[fwd_pid, nginx_pid], p);
            Some(agent::Timed::start(cx.guard, cmd)?)
        }
        None => None,
    };
    // The warm-up starts once the fresh JVM has finished starting (its CPU
    // time stops growing): without an agent to wait for, it would
    // otherwise still be starting in the no-agent runs only.
    timed::cpu_when_settled(fwd_pid, timed::SETTLE_MAX);
    let url = format!("http://127.0.0.1:{fwd_port}/bench.json");
    let (warm, _) = timed::wrk_for(cx.guard, nginx_pid, &url, shape, s.warmup)?;
    if warm.requests == 0 || warm.non_2xx > 0 {
        bail!(
            "{NAME} warm-up: {} requests, {} non-2xx: the chain does not answer {url}",
            warm.requests,
            warm.non_2xx
        );
    }
    if let Some(agent) = &mut started {
        agent.measure_from_now();
    }
    let fwd_cpu_before = procs::cpu_seconds(fwd_pid);
    let (wrk, latency) = timed::wrk_for(cx.guard, nginx_pid, &url, shape, s.length)?;
    // Most of what the in-kernel part of propagation costs lands here:
    // sock_ops and sk_msg run in the services' sends and receives (on
    // loopback a segment's receive path runs in its sender's context, so
    // wrk, not measured, pays for the forwarder's receives of its requests).
    let services_cpu = match (fwd_cpu_before, procs::cpu_seconds(fwd_pid)) {
        (Some(b), Some(a)) => Some(a - b + wrk.nginx_cpu),
        _ => None,
    };
    let (mut exit, mut agent_cpu) = (None, None);
    if let Some(agent) = started {
        let done = agent.finish(cx.guard)?;
        (exit, agent_cpu) = (Some(done.exit), done.cpu);
    }
    cx.guard.stop(fwd_pid, Duration::from_secs(5))?;
    let run = Run {
        index,
        mode,
        warmup_requests: warm.requests,
        requests: wrk.requests,
        rps: wrk.rps,
        latency,
        non_2xx: wrk.non_2xx,
        socket_errors: wrk.socket_errors,
        services_cpu,
        agent_cpu,
        exit,
    };
    note(format!(
        "{} requests, {:.0} req/s, {}{}{}",
        run.requests,
        run.rps,
        latency.text(),
        if run.non_2xx > 0 {
            format!(", {} non-2xx", run.non_2xx)
        } else {
            String::new()
        },
        counters_text(&run.exit)
    ));
    Ok(run)
}

/// Why a run does not count: non-2xx answers through the chain, the agent
/// exited badly or printed no counters, or the counters do not show its
/// mode.
fn run_problem(run: &Run) -> Option<String> {
    if run.non_2xx > 0 {
        return Some(format!(
            "{}: {} non-2xx responses through the chain",
            run.mode.label(),
            run.non_2xx
        ));
    }
    let exit = run.exit.as_ref()?;
    exit.problem(run.mode.label())
        .or_else(|| run.mode.unproven(exit))
}

fn counters_text(exit: &Option<agent::Exit>) -> String {
    let Some(e) = exit else {
        return String::new();
    };
    let shown: Vec<String> = MODE_COUNTERS
        .iter()
        .map(|k| format!("{k} {}", e.counter(k)))
        .collect();
    format!("; {}", shown.join(", "))
}

/// Compiles `tests/servers/Forwarder.java` into `<dir>/java`.
fn compile_forwarder(dir: &Path) -> Result<PathBuf> {
    let src = util::workspace_root().join("tests/servers/Forwarder.java");
    let out = dir.join("java");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    util::run(Command::new("javac").arg("-d").arg(&out).arg(&src))?;
    Ok(out)
}

/// Starts the forwarder on `port`, in the cgroup, pinned with nginx when
/// pinning is on; waits until it accepts connections.
fn start_forwarder(cx: &mut Ctx, s: &Setup, port: u16) -> Result<u32> {
    let log_path = s.dir.join(format!("forwarder-{port}.log"));
    let log = fs::File::create(&log_path).context("forwarder log")?;
    let mut cmd = load::pinned(cx.nginx_cpus, "java");
    cmd.args([
        "-Xmx256m",
        "-XX:+UseSerialGC",
        "-Dsun.net.httpserver.nodelay=true",
    ])
    .arg(format!("-Dhttp.maxConnections={FORWARDER_THREADS}"))
    .arg("-cp")
    .arg(&s.classes)
    .arg("Forwarder")
    .arg(port.to_string())
    .arg(format!("http://127.0.0.1:{}", s.nginx_port))
    .arg(FORWARDER_THREADS.to_string())
    .stdout(log.try_clone().context("dup log")?)
    .stderr(log);
    s.cg.place(&mut cmd);
    let pid = cx.guard.spawn("forwarder", cmd, libc::SIGTERM)?;
    let child = cx.guard.child(pid)?;
    if let Err(e) = procs::wait_listening(child, "forwarder", port, Duration::from_secs(30)) {
        bail!("{e:#}; forwarder log:\n{}", procs::read_log(&log_path));
    }
    Ok(pid)
}

/// `java -version`'s first line (it prints on stderr).
fn java_version() -> String {
    Command::new("java")
        .arg("-version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn section_of(
    cx: &Ctx,
    all: &[Run],
    problems: Vec<String>,
    length: Duration,
    warmup: Duration,
    runs: u32,
) -> Section {
    let of = |mode: Mode| all.iter().filter(move |r| r.mode == mode);
    let med =
        |mode: Mode, f: &dyn Fn(&Run) -> Option<f64>| median(of(mode).filter_map(f).collect());
    let rps = |r: &Run| Some(r.rps);
    let p50_ms = |r: &Run| r.latency.p50_ms();
    let p99_ms = |r: &Run| r.latency.p99_ms();
    let base = med(Mode::NoAgent, &rps);

    let mut modes = Map::new();
    let mut rows = Vec::new();
    let mut required = Vec::new();
    for mode in MODES {
        let k = mode.key();
        let ratio = match (med(mode, &rps), base) {
            (Some(m), Some(b)) if mode != Mode::NoAgent && b > 0.0 => Some(m / b),
            _ => None,
        };
        // Each agent run against the no-agent run of its round.
        let pairs: Vec<f64> = of(mode)
            .filter(|_| mode != Mode::NoAgent)
            .filter_map(|r| {
                let b = of(Mode::NoAgent).find(|b| b.index == r.index)?;
                (b.rps > 0.0).then(|| r.rps / b.rps)
            })
            .collect();
        let totals: Map<String, Value> = MODE_COUNTERS
            .iter()
            .filter(|_| mode != Mode::NoAgent)
            .map(|c| {
                let sum: u64 = of(mode).filter_map(|r| r.counter(c)).sum();
                (c.to_string(), json!(sum))
            })
            .collect();
        let requests_all: u64 = of(mode).map(|r| r.requests + r.warmup_requests).sum();
        let per_request: Map<String, Value> = totals
            .iter()
            .filter(|_| requests_all > 0)
            .filter_map(|(k, v)| Some((k.clone(), json!(v.as_u64()? as f64 / requests_all as f64))))
            .collect();
        modes.insert(
            k.to_string(),
            json!({
                "label": mode.label(),
                "requests_per_sec_median": med(mode, &rps),
                "requests_per_sec_runs": of(mode).map(|r| r.rps).collect::<Vec<_>>(),
                "throughput_ratio": ratio,
                "pair_throughput_ratios": pairs,
                "latency_p50_ms_median": med(mode, &p50_ms),
                "latency_p99_ms_median": med(mode, &p99_ms),
                "services_cpu_us_per_request_median":
                    med(mode, &|r| r.us_per_request(r.services_cpu)),
                "agent_cpu_us_per_request_median": med(mode, &|r| r.us_per_request(r.agent_cpu)),
                // Summed over the runs; warm-ups included (same agent).
                "counters": totals,
                "requests_with_warmups": requests_all,
                "counters_per_request": per_request,
                "runs": of(mode).map(run_json).collect::<Vec<_>>(),
            }),
        );
        for key in [
            "requests_per_sec_median",
            "latency_p50_ms_median",
            "latency_p99_ms_median",
        ] {
            required.push(format!("/modes/{k}/{key}"));
        }
        if mode != Mode::NoAgent {
            required.push(format!("/modes/{k}/throughput_ratio"));
        }
        rows.push(mode_row(
            mode,
            &of(mode).collect::<Vec<_>>(),
            ratio,
            &pairs,
            &per_request,
        ));
    }
    let figures = json!({
        "shape": "wrk -> forwarder (tests/servers/Forwarder.java) -> nginx, keep-alive",
        "seconds_per_run": length.as_secs(),
        "warmup_seconds": warmup.as_secs(),
        "runs_per_mode": runs,
        "order": format!(
            "{}, rotated by one each round",
            MODES.map(Mode::key).join(", ")
        ),
        "wrk_threads": cx.args.threads,
        "wrk_connections": cx.args.connections,
        "forwarder_threads": FORWARDER_THREADS,
        "java": java_version(),
        "agent": "--pid <forwarder>,<nginx> --print off, plus each mode's propagation flags; \
                  a fresh forwarder and agent per run",
        "services_cpus": cx.nginx_cpus,
        "load_cpu": cx.load_cpu,
        "modes": modes,
    });
    Section {
        name: NAME,
        figures,
        rows,
        required,
        problems,
    }
}

fn run_json(r: &Run) -> Value {
    json!({
        "run": r.index,
        "requests": r.requests,
        "warmup_requests": r.warmup_requests,
        "requests_per_sec": r.rps,
        "latency_p50_ms": r.latency.p50_ms(),
        "latency_p99_ms": r.latency.p99_ms(),
        "non_2xx": r.non_2xx,
        "socket_errors": r.socket_errors,
        "services_cpu_seconds": r.services_cpu,
        "services_cpu_us_per_request": r.us_per_request(r.services_cpu),
        "agent_cpu_seconds": r.agent_cpu,
        "agent_cpu_us_per_request": r.us_per_request(r.agent_cpu),
        "agent_exit": r.exit.as_ref().map(|e| e.status.clone()),
        "counters": r.exit.as_ref().map(|e| {
            MODE_COUNTERS
                .iter()
                .map(|k| (k.to_string(), json!(e.counter(k))))
                .collect::<Map<_, _>>()
        }),
        "drops": r.exit.as_ref().map(|e| Value::Object(e.drops())),
    })
}

/// One table row: requests/s (the no-agent row) or the ratio to no agent,
/// with the runs, latencies and proving counters (per request) beside.
fn mode_row(
    mode: Mode,
    runs: &[&Run],
    ratio: Option<f64>,
    pairs: &[f64],
    per_request: &Map<String, Value>,
) -> Row {
    let num = |v: f64| format!("{v:.0}");
    let med = |f: &dyn Fn(&Run) -> Option<f64>| median(runs.iter().filter_map(|r| f(r)).collect());
    let list = |v: Vec<String>| v.join(", ");
    let each = list(runs.iter().map(|r| num(r.rps)).collect());
    let latency = Latency {
        p50: med(&|r| r.latency.p50),
        p99: med(&|r| r.latency.p99),
    }
    .text();
    let median_rps = fmt(med(&|r| Some(r.rps)), num);
    let us = |v: Option<f64>| fmt(v, |v| format!("{v:.0} µs"));
    let services = us(med(&|r| r.us_per_request(r.services_cpu)));
    if mode == Mode::NoAgent {
        return Row::new(
            NAME,
            format!(
                "{}: requests/s, median (runs {each}); {latency}; forwarder + nginx CPU \
                 {services} per request",
                mode.label()
            ),
            format!("{median_rps} req/s"),
            "—",
        );
    }
    let counter = |k: &str| {
        fmt(per_request.get(k).and_then(Value::as_f64), |v| {
            format!("{v:.2}")
        })
    };
    Row::new(
        NAME,
        format!(
            "{}: requests/s vs no agent (median {median_rps}; runs {each}; per round {}); \
             {latency}; CPU per request: forwarder + nginx {services}, agent {}; per request \
             (warm-ups included): TCP options written {}, read {}, traceparent injected {}, \
             spans {}",
            mode.label(),
            list(pairs.iter().map(|p| format!("{p:.3}")).collect()),
            us(med(&|r| r.us_per_request(r.agent_cpu))),
            counter("tcp_options_written"),
            counter("tcp_options_read"),
            counter("traceparent_injected"),
            counter("spans_emitted"),
        ),
        fmt(ratio, |v| format!("{v:.3}")),
        "—",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(written: u64, read: u64, injected: u64) -> agent::Exit {
        let counters = json!({
            "tcp_options_written": written,
            "tcp_options_read": read,
            "traceparent_injected": injected,
        });
        agent::Exit {
            status: "exit status: 0".to_string(),
            success: true,
            counters: counters.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn each_mode_is_proven_by_its_counters_only() {
        let none = exit(0, 0, 0);
        let options = exit(10, 10, 0);
        let injected = exit(0, 0, 10);
        assert!(Mode::NoPropagation.unproven(&none).is_none());
        assert!(Mode::NoPropagation.unproven(&options).is_some());
        assert!(Mode::NoPropagation.unproven(&injected).is_some());
        assert!(Mode::TcpOption.unproven(&options).is_none());
        assert!(Mode::TcpOption.unproven(&none).is_some());
        // Written but never read: the receiving side did not see it.
        assert!(Mode::TcpOption.unproven(&exit(10, 0, 0)).is_some());
        assert!(Mode::Injection.unproven(&injected).is_none());
        assert!(Mode::Injection.unproven(&none).is_some());
        assert!(Mode::Injection.unproven(&exit(10, 10, 10)).is_some());
    }
}
