//! `cargo xtask bench`: what the agent costs, measured on real processes.
//!
//! The default is the suite ([`suite`]: saturation, fixed-rate, hook-cost, bpf-stats,
//! scaling, chain and bodies, one report in `target/bench/report.{json,md}`); each
//! of its scenarios also runs alone (`--scenario chain`). The older
//! scenarios (all against nginx serving a small static file, one process,
//! driven by wrk with keep-alive for a fixed number of requests):
//! - `baseline`: nginx alone, the reference request rate;
//! - `otlp-100k`: the agent traces nginx (`--pid`) and exports every span
//!   over OTLP/gRPC to `tests/otlp/receiver.py` (PyPI opentelemetry-proto +
//!   grpcio); the bench waits until the receiver has accepted one span per
//!   request (or a timeout) and reports end-to-end spans/s, the agent's CPU
//!   seconds and peak RSS, its drop counters, and the request rate against
//!   the baseline;
//! - `print-off`: the agent traces nginx with `--print off` and no
//!   endpoint: capture, parsing and span assembly without any output;
//! - `https` (see [`https`]): nginx over TLS (self-signed certificate made
//!   at run time), wrk for a fixed time per run, runs alternating without
//!   and with the agent (`--print off`): requests/s, latency, the agent's
//!   cost and its spans per request;
//! - `soak` (see [`soak`]): ten minutes at 5,000 req/s with connection
//!   churn: the agent's RSS, connection table and kernel map occupancy
//!   over time. Not part of the default suite.
//!
//! The baseline always runs first (`https` has its own, alternating). Figures go to a table on stdout and to
//! `target/bench/<scenario>.json`. Everything the bench starts is stopped by
//! pid when it ends, also on error or Ctrl-C; the whole run is bounded by
//! `--max-seconds`.

mod agent;
mod bodies;
mod bpf_fds;
mod bpf_maps;
mod bpf_stats;
mod cgroup;
mod chain;
mod fixed_rate;
mod floor;
mod hook_cost;
mod https;
mod load;
mod loadgen;
mod netlink;
mod procs;
mod receiver;
mod report;
mod saturation;
mod scaling;
mod scrape;
mod soak;
mod suite;
mod timed;

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use serde_json::{Map, Value, json};

use self::{
    load::{Load, WrkRun},
    procs::Guard,
};
use crate::{
    build::{self, Profile},
    setup,
    util::{self, note, section},
};

/// After the load, give up waiting for spans when the receiver's count has
/// not moved for this long (longer than the 5 s default batch delay).
const STALL: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// saturation, fixed-rate, hook-cost, bpf-stats, scaling, chain, bodies: one report
    Suite,
    /// wrk at full speed, alternating without and with the agent (OTLP)
    Saturation,
    /// fixed request rates with the agent: its CPU, RSS, span completeness
    FixedRate,
    /// nginx's CPU per request at 10k req/s: nothing attached, empty
    /// programs on the agent's hooks (the floor), on raw sys_enter/exit,
    /// allow-all cgroup_skb on nginx's cgroup, the agent capturing
    HookCost,
    /// per-program kernel run time (kernel.bpf_stats_enabled) under load
    BpfStats,
    /// 1 to 10,000 open connections: the agent's memory per connection
    Scaling,
    /// wrk -> Java forwarder -> nginx: requests/s without the agent, and
    /// with it without propagation, with the TCP option, with injection
    Chain,
    /// 1 MiB responses at full speed: without the agent, with it, and with
    /// it never skipping body middles (`--skip-bodies-from 0`)
    Bodies,
    /// nginx alone (also runs first in every other scenario)
    Baseline,
    /// the agent exports every span over OTLP/gRPC to a local receiver
    #[value(name = "otlp-100k")]
    Otlp100k,
    /// the agent traces with `--print off` and no exporter: capture cost
    PrintOff,
    /// nginx over HTTPS, runs alternating without and with the agent (print off)
    Https,
    /// a long fixed-rate run with connection churn: RSS, connections and
    /// kernel map occupancy over time (not in the suite)
    Soak,
    /// everything: baseline, otlp-100k, print-off, https, then the suite
    All,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Suite => "suite",
            Self::Saturation => "saturation",
            Self::FixedRate => "fixed-rate",
            Self::HookCost => "hook-cost",
            Self::BpfStats => "bpf-stats",
            Self::Scaling => "scaling",
            Self::Chain => "chain",
            Self::Bodies => "bodies",
            Self::Baseline => "baseline",
            Self::Otlp100k => "otlp-100k",
            Self::PrintOff => "print-off",
            Self::Https => "https",
            Self::Soak => "soak",
            Self::All => "all",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value = "suite")]
    pub scenario: Scenario,
    /// A few seconds per scenario: checks that each completes and that the
    /// report is well formed (what CI runs).
    #[arg(long)]
    pub short: bool,
    /// saturation: runs without and with the agent each (alternating).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub runs: u32,
    /// saturation: length of each wrk run, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub seconds: u64,
    /// fixed-rate: the request rates, in requests/s.
    #[arg(long, value_name = "RPS", value_delimiter = ',', default_values_t = [10_000, 1_000])]
    pub rates: Vec<u32>,
    /// fixed-rate: length of each rate's run, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub rate_seconds: u64,
    /// bpf-stats: length of the traced load, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub bpf_stats_seconds: u64,
    /// scaling: the connection counts.
    #[arg(long, value_name = "N", value_delimiter = ',', default_values_t = [1, 100, 10_000])]
    pub scaling_connections: Vec<u32>,
    /// Do not pin nginx to CPU 0 and the load to CPU 1.
    #[arg(long)]
    pub no_pin: bool,
    /// Requests per wrk run (one span each when traced).
    #[arg(long, default_value_t = 100_000)]
    pub requests: u64,
    /// wrk threads.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// wrk connections (keep-alive), spread over the threads.
    #[arg(long, default_value_t = 8)]
    pub connections: u32,
    /// chain: runs of each mode (alternating).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub chain_runs: u32,
    /// chain: length of each wrk run, in seconds (after a 5 s warm-up).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub chain_seconds: u64,
    /// Use this agent binary instead of running setup and building one.
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
    /// OTEL_BSP_MAX_QUEUE_SIZE for the agent (default: the agent's own).
    #[arg(long, value_name = "SPANS")]
    pub queue_size: Option<u64>,
    /// OTEL_BSP_SCHEDULE_DELAY for the agent, in ms. The agent's default
    /// (5000) only delays the last, partial batch, which would add up to 5 s
    /// to the end-to-end time of a 100k run; 200 keeps that tail small.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub schedule_delay_ms: u64,
    /// https: runs without and with the agent each (alternating).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub https_runs: u32,
    /// https: length of each wrk run, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub https_seconds: u64,
    /// soak: length of the run, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub soak_seconds: u64,
    /// soak: the request rate, in requests/s.
    #[arg(long, value_name = "RPS", default_value_t = 5_000)]
    pub soak_rate: u32,
    /// soak: requests per connection before it is closed and replaced.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub soak_conn_requests: u32,
    /// soak: seconds between samples of the agent.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub soak_sample_seconds: u64,
    /// Upper bound of the whole bench, in seconds (a soak longer than it
    /// raises it to its own length + 5 minutes).
    #[arg(long, default_value_t = 900)]
    pub max_seconds: u64,
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    if !util::is_root() {
        bail!(
            "`cargo xtask bench` must run as root: the agent loads eBPF programs \
             (try `sudo -E env PATH=\"$PATH\" cargo xtask bench`)"
        );
    }
    if args.requests == 0 || args.threads == 0 || args.connections < args.threads {
        bail!("--requests must be > 0, --threads > 0 and --connections >= --threads");
    }
    if args.https_runs == 0 || args.https_seconds == 0 {
        bail!("--https-runs and --https-seconds must be > 0");
    }
    if args.runs == 0
        || args.seconds == 0
        || args.rate_seconds == 0
        || args.bpf_stats_seconds == 0
        || args.chain_runs == 0
        || args.chain_seconds == 0
        || args.rates.contains(&0)
        || args.scaling_connections.contains(&0)
        || args.soak_seconds == 0
        || args.soak_rate == 0
        || args.soak_conn_requests == 0
        || args.soak_sample_seconds == 0
    {
        bail!(
            "--runs, --seconds, --rate-seconds, --bpf-stats-seconds, --chain-runs, \
             --chain-seconds, --rates, --scaling-connections and the --soak-* options \
             must be > 0"
        );
    }
    // Plain-HTTP scenarios (after their baseline), whether https runs, and
    // the suite's scenarios.
    let scenarios: Vec<Scenario> = match args.scenario {
        Scenario::All => vec![Scenario::Otlp100k, Scenario::PrintOff],
        Scenario::Otlp100k | Scenario::PrintOff => vec![args.scenario],
        _ => vec![],
    };
    let plain = matches!(
        args.scenario,
        Scenario::Baseline | Scenario::Otlp100k | Scenario::PrintOff | Scenario::All
    );
    let tls = matches!(args.scenario, Scenario::Https | Scenario::All);
    let suite = suite::selected(args.scenario);
    let bin = if scenarios.is_empty() && !tls && suite.is_empty() {
        None
    } else {
        Some(match &args.agent {
            Some(path) => fs::canonicalize(path)
                .with_context(|| format!("agent binary {} not found", path.display()))?,
            None => {
                setup::setup()?;
                build::build(Profile::Release)?
            }
        })
    };
    load::check_tools()?;
    if tls {
        https::check_tools()?;
    }
    if suite.contains(&Scenario::Chain) {
        chain::check_tools()?;
    }
    if scenarios.contains(&Scenario::Otlp100k) || !suite.is_empty() {
        receiver::check()?;
    }

    util::catch_interrupts();
    let max_seconds = if args.scenario == Scenario::Soak {
        args.max_seconds.max(args.soak_seconds + 300)
    } else {
        args.max_seconds
    };
    let deadline = Instant::now() + Duration::from_secs(max_seconds);
    let mut guard = Guard::new()?;
    let result = (|| {
        let mut problems = Vec::new();
        if plain {
            problems.extend(run(&mut guard, args, bin.as_deref(), &scenarios, deadline)?);
        }
        if tls {
            let bin = bin.as_deref().context("no agent binary")?;
            problems.extend(https::run(&mut guard, args, bin, deadline)?);
        }
        if !suite.is_empty() {
            let bin = bin.as_deref().context("no agent binary")?;
            problems.extend(suite::run(&mut guard, args, bin, &suite, deadline)?);
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        Ok(())
    })();
    section("bench: stopping everything it started");
    drop(guard);
    result
}

fn run(
    guard: &mut Guard,
    args: &BenchArgs,
    bin: Option<&Path>,
    scenarios: &[Scenario],
    deadline: Instant,
) -> Result<Vec<String>> {
    section(&format!("bench: nginx in {}", guard.dir.display()));
    let port = procs::free_port()?;
    let nginx_pid = load::start_nginx(guard, port, None, None)?;
    note(format!(
        "nginx pid {nginx_pid}  http://127.0.0.1:{port}/bench.json"
    ));

    let wrk_bound = |deadline: Instant| {
        deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(120))
    };
    let load_of = |deadline: Instant| Load {
        requests: args.requests,
        threads: args.threads,
        connections: args.connections,
        max_duration: wrk_bound(deadline),
    };

    section(&format!(
        "bench: baseline, {} requests without the agent",
        args.requests
    ));
    let baseline = load::run_wrk(guard, nginx_pid, port, &load_of(deadline))?;
    note(format!(
        "{} requests in {:.2} s: {:.0} req/s (nginx CPU {:.2} s)",
        baseline.requests, baseline.seconds, baseline.rps, baseline.nginx_cpu
    ));
    let mut results = vec![Outcome::baseline(&baseline)];
    write_json(
        "baseline",
        &json!({"scenario": "baseline", "load": load_json(args), "baseline": wrk_json(&baseline),
                "machine": machine_json()}),
    )?;

    for &scenario in scenarios {
        procs::bail_if_interrupted()?;
        if Instant::now() >= deadline {
            bail!(
                "--max-seconds {} reached before {}",
                args.max_seconds,
                scenario.name()
            );
        }
        let bin = bin.context("no agent binary")?;
        section(&format!("bench: {}", scenario.name()));
        let outcome = with_agent(
            guard,
            bin,
            args,
            scenario,
            nginx_pid,
            port,
            &load_of(deadline),
            &baseline,
            deadline,
        )?;
        results.push(outcome);
    }

    section("bench: results");
    print_table(&results);
    let out_dir = util::target_dir().join("bench");
    note(format!(
        "JSON: {}/<scenario>.json",
        util::display_path(&out_dir)
    ));
    // Idle from here on; stopped so that it does not sit next to `https`.
    guard.stop(nginx_pid, Duration::from_secs(5))?;
    Ok(results.iter().filter_map(|r| r.problem.clone()).collect())
}

/// One row of the results table.
struct Outcome {
    name: &'static str,
    wrk: WrkRun,
    overhead_pct: Option<f64>,
    spans_received: Option<u64>,
    spans_per_sec: Option<f64>,
    agent_cpu: Option<f64>,
    peak_rss_kib: Option<u64>,
    dropped: Option<u64>,
    /// Why this scenario did not fully succeed (reported, then exit 1).
    problem: Option<String>,
}

impl Outcome {
    fn baseline(wrk: &WrkRun) -> Self {
        Self {
            name: "baseline",
            wrk: wrk.clone(),
            overhead_pct: None,
            spans_received: None,
            spans_per_sec: None,
            agent_cpu: None,
            peak_rss_kib: None,
            dropped: None,
            problem: None,
        }
    }
}

fn print_table(rows: &[Outcome]) {
    let dash = || "-".to_string();
    println!(
        "\n    {:<10} {:>9} {:>10} {:>9} {:>10} {:>10} {:>9} {:>10} {:>8}",
        "scenario",
        "requests",
        "req/s",
        "vs base",
        "spans",
        "spans/s",
        "agent CPU",
        "peak RSS",
        "dropped"
    );
    for r in rows {
        println!(
            "    {:<10} {:>9} {:>10.0} {:>9} {:>10} {:>10} {:>9} {:>10} {:>8}",
            r.name,
            r.wrk.requests,
            r.wrk.rps,
            r.overhead_pct.map_or_else(dash, |p| format!("{p:+.1}%")),
            r.spans_received.map_or_else(dash, |n| n.to_string()),
            r.spans_per_sec.map_or_else(dash, |n| format!("{n:.0}")),
            r.agent_cpu.map_or_else(dash, |c| format!("{c:.2} s")),
            r.peak_rss_kib
                .map_or_else(dash, |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            r.dropped.map_or_else(dash, |n| n.to_string()),
        );
    }
    println!();
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
fn with_agent(
    guard: &mut Guard,
    bin: &Path,
    args: &BenchArgs,
    scenario: Scenario,
    nginx_pid: u32,
    port: u16,
    load: &Load,
    baseline: &WrkRun,
    deadline: Instant,
) -> Result<Outcome> {
    let otlp = scenario == Scenario::Otlp100k;
    let receiver = if otlp {
        let r = receiver::start(guard)?;
        note(format!(
            "receiver pid {}: OTLP/gRPC 127.0.0.1:{} ({})",
            r.pid, r.grpc_port, r.versions
        ));
        Some(r)
    } else {
        None
    };

    let cmd = agent::traced(bin, nginx_pid, receiver.as_ref(), args);
    let (agent_pid, lines) = agent::start(guard, cmd)?;

    let cpu_before = procs::cpu_seconds(agent_pid).unwrap_or(0.0);
    let receiver_cpu_before = receiver
        .as_ref()
        .and_then(|r| procs::cpu_seconds(r.pid))
        .unwrap_or(0.0);
    let wrk_start_ns = unix_ns();
    let wrk = load::run_wrk(guard, nginx_pid, port, load)?;
    let wrk_end_ns = unix_ns();
    // What the receiver had when the load ended: the pipeline's throughput
    // while it ran.
    let accepted_at_load_end = match &receiver {
        Some(r) => Some(r.spans_accepted()?),
        None => None,
    };
    let overhead = (baseline.rps - wrk.rps) / baseline.rps * 100.0;
    note(format!(
        "{} requests in {:.2} s: {:.0} req/s ({:+.1}% vs baseline; nginx CPU {:.2} s, baseline {:.2} s)",
        wrk.requests, wrk.seconds, wrk.rps, -overhead, wrk.nginx_cpu, baseline.nginx_cpu
    ));

    // Spans: wait for one per completed request at the receiver.
    let mut accepted_at_stop = None;
    let mut last_accepted_ns = 0;
    let mut timed_out = false;
    if let Some(r) = &receiver {
        let target = wrk.requests;
        note(format!("waiting for {target} spans at the receiver"));
        let w = r.wait_for(target, STALL, deadline)?;
        last_accepted_ns = w.last_accepted_ns;
        if w.timed_out {
            timed_out = true;
            note(format!(
                "only {} of {target} spans arrived (no progress for {:?} or --max-seconds \
                 reached); stopping the agent",
                w.accepted, w.stalled_for
            ));
        }
        accepted_at_stop = Some(w.accepted);
    }
    let cpu = procs::cpu_seconds(agent_pid).unwrap_or(0.0) - cpu_before;
    // The receiver is Python: when spans are dropped, its CPU tells whether
    // it, rather than the agent, was the bottleneck.
    let receiver_cpu = receiver
        .as_ref()
        .and_then(|r| procs::cpu_seconds(r.pid))
        .map(|c| c - receiver_cpu_before);
    let peak_kib = procs::status_kib(agent_pid, "VmHWM").unwrap_or(0);
    let rss_kib = procs::status_kib(agent_pid, "VmRSS").unwrap_or(0);

    let exit = agent::stop(guard, agent_pid, &lines)?;
    let counters = exit.counters.clone();
    let final_accepted = match &receiver {
        Some(r) => {
            let n = r.spans_accepted()?;
            guard.stop(r.pid, Duration::from_secs(5))?;
            Some(n)
        }
        None => None,
    };
    let counter = |k: &str| counters.get(k).and_then(Value::as_u64).unwrap_or(0);
    let dropped_by_reason: Map<String, Value> = counters
        .iter()
        .filter(|(k, v)| k.starts_with("spans_dropped") && v.as_u64().unwrap_or(0) > 0)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let dropped: u64 = dropped_by_reason.values().filter_map(Value::as_u64).sum();

    let e2e_secs =
        (last_accepted_ns > wrk_start_ns).then(|| (last_accepted_ns - wrk_start_ns) as f64 / 1e9);
    let spans_per_sec = match (accepted_at_stop, e2e_secs) {
        (Some(n), Some(s)) if s > 0.0 => Some(n as f64 / s),
        _ => None,
    };
    let spans_per_sec_during_load = accepted_at_load_end
        .filter(|_| wrk.seconds > 0.0)
        .map(|n| n as f64 / wrk.seconds);
    let export_lag_secs =
        (last_accepted_ns > wrk_end_ns).then(|| (last_accepted_ns - wrk_end_ns) as f64 / 1e9);

    let mut problem = None;
    if let Some(p) = exit.problem(scenario.name()) {
        problem = Some(p);
    } else if otlp && counter("spans_exported") + dropped != counter("spans_emitted") {
        // Drops are a result (reported); spans lost without a count are not.
        problem = Some(format!(
            "{}: spans_emitted {} != spans_exported {} + dropped {dropped}",
            scenario.name(),
            counter("spans_emitted"),
            counter("spans_exported")
        ));
    } else if final_accepted.is_some_and(|n| n != counter("spans_exported")) {
        problem = Some(format!(
            "{}: the receiver accepted {} spans, the agent counted {} exported",
            scenario.name(),
            final_accepted.unwrap_or(0),
            counter("spans_exported")
        ));
    }
    if timed_out {
        note(format!(
            "{} of {} spans arrived before the count stalled; the rest: {}",
            accepted_at_stop.unwrap_or(0),
            wrk.requests,
            if dropped > 0 {
                format!("{dropped} dropped and counted ({dropped_by_reason:?})")
            } else {
                "flushed at shutdown, or not counted (see the counters)".to_string()
            }
        ));
    }

    let figures = json!({
        "scenario": scenario.name(),
        "load": load_json(args),
        "baseline": wrk_json(baseline),
        "with_agent": wrk_json(&wrk),
        // Positive: slower with the agent than without.
        "overhead_pct": overhead,
        "spans": {
            "expected_at_least": wrk.requests,
            "received_at_load_end": accepted_at_load_end,
            "received_before_stop": accepted_at_stop,
            "received_total": final_accepted,
            "emitted": counter("spans_emitted"),
            "exported": counter("spans_exported"),
            "dropped_total": dropped,
            "dropped_by_reason": dropped_by_reason,
            "export_retries": counter("export_retries"),
            "timed_out": timed_out,
        },
        // Spans accepted by the receiver / (last accepted - load start).
        "spans_per_sec_end_to_end": spans_per_sec,
        // Spans the receiver had when the load ended / load duration.
        "spans_per_sec_during_load": spans_per_sec_during_load,
        "end_to_end_secs": e2e_secs,
        "export_lag_after_load_secs": export_lag_secs,
        "agent": {
            "cpu_seconds": cpu,
            "cpu_seconds_per_1k_spans": (counter("spans_emitted") > 0)
                .then(|| cpu / counter("spans_emitted") as f64 * 1000.0),
            "peak_rss_kib": peak_kib,
            "rss_kib_at_end": rss_kib,
            "exit": exit.status,
            "counters": Value::Object(counters.clone()),
            "version": agent_version(bin),
            "queue_size": args.queue_size,
            "schedule_delay_ms": otlp.then_some(args.schedule_delay_ms),
        },
        "receiver_versions": receiver.as_ref().map(|r| r.versions.clone()),
        "receiver_cpu_seconds": receiver_cpu,
        "machine": machine_json(),
    });
    write_json(scenario.name(), &figures)?;
    note(format!(
        "agent: CPU {cpu:.2} s, peak RSS {:.1} MiB; spans emitted {}, exported {}, dropped {dropped}{}",
        peak_kib as f64 / 1024.0,
        counter("spans_emitted"),
        counter("spans_exported"),
        match (spans_per_sec, spans_per_sec_during_load) {
            (Some(e2e), Some(during)) => format!(
                "; {e2e:.0} spans/s end to end ({during:.0} spans/s accepted while the load ran)"
            ),
            (Some(e2e), None) => format!("; {e2e:.0} spans/s end to end"),
            _ => String::new(),
        }
    ));

    Ok(Outcome {
        name: scenario.name(),
        wrk,
        overhead_pct: Some(-overhead),
        spans_received: accepted_at_stop.or(Some(counter("spans_emitted"))),
        spans_per_sec,
        agent_cpu: Some(cpu),
        peak_rss_kib: Some(peak_kib),
        dropped: Some(dropped),
        problem,
    })
}

fn load_json(args: &BenchArgs) -> Value {
    json!({
        "requests": args.requests,
        "wrk_threads": args.threads,
        "wrk_connections": args.connections,
        "server": "nginx (Debian), master_process off, 1 worker, access_log off, static file",
    })
}

fn wrk_json(w: &WrkRun) -> Value {
    json!({
        "requests": w.requests,
        "seconds": w.seconds,
        "requests_per_sec": w.rps,
        "non_2xx": w.non_2xx,
        "socket_errors": w.socket_errors,
        "nginx_cpu_seconds": w.nginx_cpu,
    })
}

fn machine_json() -> Value {
    let read = |p: &str| {
        fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    json!({
        "kernel": read("/proc/sys/kernel/osrelease"),
        "cpus": thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "unix_time": unix_ns() / 1_000_000_000,
    })
}

fn agent_version(bin: &Path) -> String {
    util::output_of(&bin.to_string_lossy(), &["--version"])
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

fn write_json(name: &str, value: &Value) -> Result<()> {
    let dir = util::target_dir().join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(value).context("encoding figures")?;
    fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    note(format!("wrote {}", util::display_path(&path)));
    Ok(())
}
