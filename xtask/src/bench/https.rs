//! `--scenario https`: HTTPS requests/s against nginx without and with the
//! agent.
//!
//! nginx (one process, the same static file as the other scenarios) listens
//! with TLS on a self-signed certificate made at run time (`openssl req
//! -x509`); wrk drives it over https with keep-alive connections for a fixed
//! time per run (`--https-seconds`). After a short warm-up (not reported),
//! runs alternate: baseline, agent, baseline, agent, ... (`--https-runs`
//! each), so drift on a shared machine hits both sides alike.
//!
//! The agent runs with `--pid <nginx> --print off` and no exporter: these
//! figures are the cost of capture (the OpenSSL uprobes, the parser, span
//! assembly), not of export (otlp-100k measures that). Each agent run is a
//! fresh agent, so its exit counters belong to that run: spans emitted
//! against wrk's requests (completeness), and `tls_connections` against
//! wrk's connections.

use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use super::{
    BenchArgs, agent,
    load::{self, Tls, WrkRun},
    procs::{self, Guard},
    timed::{self, Latency, Wrk, load_average, median, other_agents},
};
use crate::util::{self, note, section};

/// A first wrk run whose figures are thrown away (nginx and the machine
/// settle; the first TLS handshakes load the key).
const WARMUP: Duration = Duration::from_secs(2);
/// The certificate, as the brief of the scenario says: made at run time.
const OPENSSL_REQ: [&str; 9] = [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-subj",
    "/CN=localhost",
    "-days",
    "1",
];

pub fn check_tools() -> Result<()> {
    if !util::succeeds("sh", &["-c", "command -v openssl"]) {
        bail!("openssl not found: the https scenario makes its certificate with it");
    }
    Ok(())
}

/// What the agent did during one run.
struct AgentRun {
    cpu: f64,
    peak_rss_kib: u64,
    exit: String,
    success: bool,
    counters: Map<String, Value>,
}

impl AgentRun {
    fn counter(&self, k: &str) -> u64 {
        self.counters.get(k).and_then(Value::as_u64).unwrap_or(0)
    }
}

/// One timed wrk run, without (`agent: None`) or with the agent.
struct Run {
    index: u32,
    wrk: WrkRun,
    latency: Latency,
    agent: Option<AgentRun>,
    /// Other wirespan processes seen when the run started or ended (not the
    /// bench's): the agent attaches its OpenSSL uprobes for all processes
    /// (filtering by pid in the probe), so any agent on the machine makes
    /// this nginx take the uprobe traps too, baseline included.
    others: Vec<String>,
}

impl Run {
    fn completeness(&self) -> Option<f64> {
        let a = self.agent.as_ref()?;
        (self.wrk.requests > 0)
            .then(|| a.counter("spans_emitted") as f64 / self.wrk.requests as f64)
    }
}

/// Runs the https scenario; returns what went wrong without stopping it
/// (reported, then exit 1).
pub fn run(
    guard: &mut Guard,
    args: &BenchArgs,
    bin: &Path,
    deadline: Instant,
) -> Result<Vec<String>> {
    let load_at_start = load_average();
    section(&format!(
        "bench: https, {} x {} s without and with the agent (alternating), load average {}",
        args.https_runs,
        args.https_seconds,
        load_at_start.as_deref().unwrap_or("?")
    ));
    let (cert, key) = make_cert(guard)?;
    let port = procs::free_port()?;
    let nginx_pid = load::start_nginx(
        guard,
        port,
        Some(&Tls {
            cert: &cert,
            key: &key,
        }),
        None,
    )?;
    let url = format!("https://127.0.0.1:{port}/bench.json");
    note(format!("nginx pid {nginx_pid}  {url}"));
    let run_len = Duration::from_secs(args.https_seconds);

    section(&format!(
        "bench: https warm-up, {} s (not reported)",
        WARMUP.as_secs()
    ));
    let (warm, _) = timed::wrk_for(guard, nginx_pid, &url, &wrk_shape(args), WARMUP)?;
    note(format!("{} requests, {:.0} req/s", warm.requests, warm.rps));
    if warm.requests == 0 || warm.non_2xx > 0 {
        bail!(
            "https warm-up: {} requests, {} non-2xx: nginx does not serve {url}",
            warm.requests,
            warm.non_2xx
        );
    }

    let mut runs: Vec<Run> = Vec::new();
    let mut problems = Vec::new();
    for index in 1..=args.https_runs {
        for with_agent in [false, true] {
            procs::bail_if_interrupted()?;
            if deadline.saturating_duration_since(Instant::now())
                < run_len + Duration::from_secs(10)
            {
                bail!(
                    "--max-seconds {} reached before https run {index} ({})",
                    args.max_seconds,
                    if with_agent { "agent" } else { "baseline" }
                );
            }
            section(&format!(
                "bench: https run {index}/{}, {}",
                args.https_runs,
                if with_agent {
                    "with the agent (--print off)"
                } else {
                    "baseline (no agent)"
                }
            ));
            let others_before = other_agents(&[]);
            let mut run = if with_agent {
                agent_run(guard, bin, nginx_pid, &url, args, run_len, index)?
            } else {
                let (wrk, latency) =
                    timed::wrk_for(guard, nginx_pid, &url, &wrk_shape(args), run_len)?;
                Run {
                    index,
                    wrk,
                    latency,
                    agent: None,
                    others: Vec::new(),
                }
            };
            if !with_agent {
                run.others = other_agents(&[]);
            }
            for o in others_before {
                if !run.others.contains(&o) {
                    run.others.push(o);
                }
            }
            report_run(&run);
            problems.extend(problem(&run));
            runs.push(run);
        }
    }
    let load_at_end = load_average();
    guard.stop(nginx_pid, Duration::from_secs(5))?;

    section("bench: https results");
    let summary = summarize(&runs);
    print_table(
        &runs,
        &summary,
        load_at_start.as_deref(),
        load_at_end.as_deref(),
    );
    let figures = json!({
        "scenario": "https",
        "load": {
            "url": "https://127.0.0.1:PORT/bench.json",
            "server": "nginx (Debian), master_process off, 1 worker, access_log off, \
                       static file, TLS (self-signed RSA 2048), keepalive_requests 100000",
            "certificate": format!("openssl {}", OPENSSL_REQ.join(" ")),
            "openssl": util::output_of("openssl", &["version"]).map(|v| v.trim().to_string()),
            "client": "wrk --latency, keep-alive",
            "wrk_threads": args.threads,
            "wrk_connections": args.connections,
            "seconds_per_run": args.https_seconds,
            "runs_per_side": args.https_runs,
            "order": "alternating, baseline first",
            "warmup_seconds": WARMUP.as_secs(),
            "warmup_requests_per_sec": warm.rps,
            "agent": "--pid <nginx> --print off, no exporter: capture cost only",
        },
        "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
        "summary": summary.json(),
        "load_average_start": load_at_start,
        "load_average_end": load_at_end,
        "agent_version": super::agent_version(bin),
        "machine": super::machine_json(),
    });
    super::write_json("https", &figures)?;
    Ok(problems)
}

/// wrk as `--threads`/`--connections` say, not pinned (this scenario
/// predates pinning; its figures stay comparable with earlier runs).
fn wrk_shape(args: &BenchArgs) -> Wrk<'static> {
    Wrk {
        threads: args.threads,
        connections: args.connections,
        cpus: None,
        cgroup: None,
        link: None,
    }
}

/// Makes the self-signed certificate and key in the bench's temp dir.
fn make_cert(guard: &mut Guard) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (guard.path("cert.pem"), guard.path("key.pem"));
    let log_path = guard.path("openssl.log");
    let log = fs::File::create(&log_path).context("openssl log")?;
    let mut cmd = Command::new("openssl");
    cmd.args(OPENSSL_REQ)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(log.try_clone().context("dup log")?)
        .stderr(log);
    let pid = guard.spawn("openssl", cmd, libc::SIGTERM)?;
    let exited = util::wait_timeout(guard.child(pid)?, Duration::from_secs(60))?;
    let status = guard.stop(pid, Duration::from_secs(2))?;
    if exited.is_none() || !status.success() || !cert.is_file() || !key.is_file() {
        bail!(
            "openssl req did not make a certificate ({status}):\n{}",
            procs::read_log(&log_path)
        );
    }
    Ok((cert, key))
}

/// A fresh agent on nginx (`--print off`), one wrk run, then the agent is
/// stopped (SIGINT) and its exit counters read.
fn agent_run(
    guard: &mut Guard,
    bin: &Path,
    nginx_pid: u32,
    url: &str,
    args: &BenchArgs,
    length: Duration,
    index: u32,
) -> Result<Run> {
    let mut cmd = agent::command(bin);
    cmd.args(["--pid", &nginx_pid.to_string(), "--print", "off"]);
    let (agent_pid, lines) = agent::start(guard, cmd)?;
    let cpu_before = procs::cpu_seconds(agent_pid).unwrap_or(0.0);
    let (wrk, latency) = timed::wrk_for(guard, nginx_pid, url, &wrk_shape(args), length)?;
    // The agent may still be reading its ring buffer: wait until its CPU
    // time stops growing before reading it.
    let cpu_after = timed::cpu_when_settled(agent_pid, timed::SETTLE_MAX);
    let peak_rss_kib = procs::status_kib(agent_pid, "VmHWM").unwrap_or(0);
    let others = other_agents(&[agent_pid]);
    let exit = agent::stop(guard, agent_pid, &lines)?;
    Ok(Run {
        index,
        wrk,
        latency,
        agent: Some(AgentRun {
            cpu: cpu_after - cpu_before,
            peak_rss_kib,
            exit: exit.status,
            success: exit.success,
            counters: exit.counters,
        }),
        others,
    })
}

fn report_run(r: &Run) {
    let ms = |s: Option<f64>| s.map_or_else(|| "?".to_string(), |s| format!("{:.2} ms", s * 1e3));
    note(format!(
        "{} requests in {:.2} s: {:.0} req/s, p50 {}, p99 {}; nginx CPU {:.2} s{}",
        r.wrk.requests,
        r.wrk.seconds,
        r.wrk.rps,
        ms(r.latency.p50),
        ms(r.latency.p99),
        r.wrk.nginx_cpu,
        if r.wrk.non_2xx > 0 || !clean_sockets(&r.wrk.socket_errors) {
            format!(
                "; non-2xx {}, socket errors: {}",
                r.wrk.non_2xx, r.wrk.socket_errors
            )
        } else {
            String::new()
        }
    ));
    if !r.others.is_empty() {
        note(format!(
            "warning: other wirespan processes ran (their OpenSSL uprobes are attached for all \
             processes, so this nginx paid for them too): {}",
            r.others.join("; ")
        ));
    }
    if let Some(a) = &r.agent {
        note(format!(
            "agent: CPU {:.2} s, peak RSS {:.1} MiB, {}; spans emitted {} ({:.2}% of requests), \
             tls_connections {}",
            a.cpu,
            a.peak_rss_kib as f64 / 1024.0,
            a.exit,
            a.counter("spans_emitted"),
            r.completeness().unwrap_or(0.0) * 100.0,
            a.counter("tls_connections"),
        ));
    }
}

fn clean_sockets(errors: &str) -> bool {
    errors.is_empty() || errors == "connect 0, read 0, write 0, timeout 0"
}

/// What makes a run a failure (the agent misbehaved or nginx did not
/// answer properly); low completeness is a result, not a failure.
fn problem(r: &Run) -> Option<String> {
    let side = if r.agent.is_some() {
        "agent"
    } else {
        "baseline"
    };
    if r.wrk.non_2xx > 0 {
        return Some(format!(
            "https run {} ({side}): {} non-2xx responses",
            r.index, r.wrk.non_2xx
        ));
    }
    let a = r.agent.as_ref()?;
    if !a.success {
        Some(format!(
            "https run {}: the agent exited with {}",
            r.index, a.exit
        ))
    } else if a.counters.is_empty() {
        Some(format!(
            "https run {}: the agent printed no counters",
            r.index
        ))
    } else {
        None
    }
}

/// Figures over all runs.
struct Summary {
    base_rps: Option<f64>,
    agent_rps: Option<f64>,
    pair_ratios: Vec<f64>,
    base_p50: Option<f64>,
    base_p99: Option<f64>,
    agent_p50: Option<f64>,
    agent_p99: Option<f64>,
    base_nginx_us_per_req: Option<f64>,
    agent_nginx_us_per_req: Option<f64>,
    agent_cpu: Vec<f64>,
    agent_us_per_req: Option<f64>,
    peak_rss_kib: Option<u64>,
    requests: u64,
    spans: u64,
}

impl Summary {
    fn ratio(&self) -> Option<f64> {
        Some(self.agent_rps? / self.base_rps?)
    }

    fn completeness(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.spans as f64 / self.requests as f64)
    }

    fn json(&self) -> Value {
        let ms = |s: Option<f64>| s.map(|s| s * 1e3);
        json!({
            "baseline_requests_per_sec_median": self.base_rps,
            "agent_requests_per_sec_median": self.agent_rps,
            // agent median / baseline median; below 1: slower with the agent.
            "ratio": self.ratio(),
            // agent run i / baseline run i (the baseline just before it).
            "pair_ratios": self.pair_ratios,
            "baseline_latency_p50_ms_median": ms(self.base_p50),
            "baseline_latency_p99_ms_median": ms(self.base_p99),
            "agent_latency_p50_ms_median": ms(self.agent_p50),
            "agent_latency_p99_ms_median": ms(self.agent_p99),
            "baseline_nginx_cpu_us_per_request": self.base_nginx_us_per_req,
            "agent_nginx_cpu_us_per_request": self.agent_nginx_us_per_req,
            "agent_cpu_seconds": self.agent_cpu,
            "agent_cpu_us_per_request": self.agent_us_per_req,
            "agent_peak_rss_kib_max": self.peak_rss_kib,
            "agent_runs_requests": self.requests,
            "agent_runs_spans_emitted": self.spans,
            // spans emitted / wrk's completed requests, over the agent runs;
            // slightly above 1 is the in-flight requests wrk does not count.
            "completeness": self.completeness(),
        })
    }
}

fn summarize(runs: &[Run]) -> Summary {
    let side = |agent: bool| runs.iter().filter(move |r| r.agent.is_some() == agent);
    let med =
        |agent: bool, f: &dyn Fn(&Run) -> Option<f64>| median(side(agent).filter_map(f).collect());
    let nginx_us = |agent: bool| {
        let (cpu, req) = side(agent).fold((0.0, 0u64), |(c, n), r| {
            (c + r.wrk.nginx_cpu, n + r.wrk.requests)
        });
        (req > 0).then(|| cpu / req as f64 * 1e6)
    };
    let pair_ratios = runs
        .iter()
        .filter(|r| r.agent.is_some())
        .filter_map(|a| {
            let b = runs
                .iter()
                .find(|b| b.agent.is_none() && b.index == a.index)?;
            (b.wrk.rps > 0.0).then(|| a.wrk.rps / b.wrk.rps)
        })
        .collect();
    let agents: Vec<(&Run, &AgentRun)> = runs
        .iter()
        .filter_map(|r| r.agent.as_ref().map(|a| (r, a)))
        .collect();
    let requests: u64 = agents.iter().map(|(r, _)| r.wrk.requests).sum();
    let spans: u64 = agents.iter().map(|(_, a)| a.counter("spans_emitted")).sum();
    let cpu_total: f64 = agents.iter().map(|(_, a)| a.cpu).sum();
    Summary {
        base_rps: med(false, &|r| Some(r.wrk.rps)),
        agent_rps: med(true, &|r| Some(r.wrk.rps)),
        pair_ratios,
        base_p50: med(false, &|r| r.latency.p50),
        base_p99: med(false, &|r| r.latency.p99),
        agent_p50: med(true, &|r| r.latency.p50),
        agent_p99: med(true, &|r| r.latency.p99),
        base_nginx_us_per_req: nginx_us(false),
        agent_nginx_us_per_req: nginx_us(true),
        agent_cpu: agents.iter().map(|(_, a)| a.cpu).collect(),
        agent_us_per_req: (requests > 0).then(|| cpu_total / requests as f64 * 1e6),
        peak_rss_kib: agents.iter().map(|(_, a)| a.peak_rss_kib).max(),
        requests,
        spans,
    }
}

fn print_table(runs: &[Run], s: &Summary, load_start: Option<&str>, load_end: Option<&str>) {
    let dash = || "-".to_string();
    let ms = |v: Option<f64>| v.map_or_else(dash, |v| format!("{:.2} ms", v * 1e3));
    println!(
        "\n    {:<4} {:<9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "run",
        "side",
        "requests",
        "req/s",
        "p50",
        "p99",
        "nginx CPU",
        "agent CPU",
        "peak RSS",
        "spans",
        "complete"
    );
    for r in runs {
        let a = r.agent.as_ref();
        println!(
            "    {:<4} {:<9} {:>9} {:>9.0} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9} {:>9}",
            r.index,
            if a.is_some() { "agent" } else { "baseline" },
            r.wrk.requests,
            r.wrk.rps,
            ms(r.latency.p50),
            ms(r.latency.p99),
            format!("{:.2} s", r.wrk.nginx_cpu),
            a.map_or_else(dash, |a| format!("{:.2} s", a.cpu)),
            a.map_or_else(dash, |a| format!(
                "{:.1} MiB",
                a.peak_rss_kib as f64 / 1024.0
            )),
            a.map_or_else(dash, |a| a.counter("spans_emitted").to_string()),
            r.completeness()
                .map_or_else(dash, |c| format!("{:.2}%", c * 100.0)),
        );
    }
    let num = |v: Option<f64>| v.map_or_else(dash, |v| format!("{v:.0}"));
    println!();
    println!(
        "    median req/s: baseline {}, agent {}; agent/baseline {} (per pair: {})",
        num(s.base_rps),
        num(s.agent_rps),
        s.ratio().map_or_else(dash, |r| format!("{r:.3}")),
        s.pair_ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "    median latency: baseline p50 {} p99 {}; agent p50 {} p99 {}",
        ms(s.base_p50),
        ms(s.base_p99),
        ms(s.agent_p50),
        ms(s.agent_p99)
    );
    println!(
        "    nginx CPU per request: baseline {} µs, agent {} µs; agent CPU per request {} µs, \
         peak RSS {}",
        s.base_nginx_us_per_req
            .map_or_else(dash, |v| format!("{v:.1}")),
        s.agent_nginx_us_per_req
            .map_or_else(dash, |v| format!("{v:.1}")),
        s.agent_us_per_req.map_or_else(dash, |v| format!("{v:.1}")),
        s.peak_rss_kib
            .map_or_else(dash, |k| format!("{:.1} MiB", k as f64 / 1024.0)),
    );
    println!(
        "    spans emitted / requests (agent runs): {} / {} = {}",
        s.spans,
        s.requests,
        s.completeness()
            .map_or_else(dash, |c| format!("{:.2}%", c * 100.0))
    );
    println!(
        "    load average (1, 5, 15 min): {} at start, {} at end\n",
        load_start.unwrap_or("?"),
        load_end.unwrap_or("?")
    );
}

fn run_json(r: &Run) -> Value {
    let ms = |s: Option<f64>| s.map(|s| s * 1e3);
    json!({
        "run": r.index,
        "side": if r.agent.is_some() { "agent" } else { "baseline" },
        "requests": r.wrk.requests,
        "seconds": r.wrk.seconds,
        "requests_per_sec": r.wrk.rps,
        "latency_p50_ms": ms(r.latency.p50),
        "latency_p99_ms": ms(r.latency.p99),
        "non_2xx": r.wrk.non_2xx,
        "socket_errors": r.wrk.socket_errors,
        "nginx_cpu_seconds": r.wrk.nginx_cpu,
        "completeness": r.completeness(),
        "other_wirespan_processes": r.others,
        "agent": r.agent.as_ref().map(|a| json!({
            "cpu_seconds": a.cpu,
            "peak_rss_kib": a.peak_rss_kib,
            "exit": a.exit,
            "spans_emitted": a.counter("spans_emitted"),
            "tls_connections": a.counter("tls_connections"),
            "counters": Value::Object(a.counters.clone()),
        })),
    })
}
