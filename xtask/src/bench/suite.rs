//! The default bench: seven scenarios, one report; all but the chain and
//! bodies against one nginx, those two with their own services.
//!
//! - `saturation` ([`super::saturation`]): wrk at full speed, without and
//!   with the agent (exporting over OTLP), alternating, and with the floor
//!   (empty programs where the agent attaches its own);
//! - `fixed-rate` ([`super::fixed_rate`]): fixed request rates with the
//!   agent: its CPU, RSS and span completeness;
//! - `hook-cost` ([`super::hook_cost`]): nginx's CPU per request at a fixed
//!   rate with nothing attached, with the floor, and with the agent;
//! - `bpf-stats` ([`super::bpf_stats`]): the kernel's own run time of each
//!   of the agent's programs;
//! - `scaling` ([`super::scaling`]): 1 to 10,000 open connections: the
//!   agent's memory per connection;
//! - `chain` ([`super::chain`]): wrk → Java forwarder → nginx, requests/s
//!   without the agent and with it in each propagation mode (none, TCP
//!   option, header injection), in a child cgroup it creates and removes;
//! - `bodies` ([`super::bodies`]): 1 MiB responses without the agent, with
//!   it, and with it copying every body byte it may (no skipping).
//!
//! nginx (and the chain's forwarder) runs pinned to CPU 0 and the load
//! (wrk, or xtask's own client) to CPU 1 on a machine with at least two
//! CPUs (`--no-pin` to let the scheduler place them); the agent and the
//! OTLP receiver are not pinned: they share both CPUs with nginx and the
//! load, which is what the agent costs a busy node.
//!
//! The suite's nginx is born in a child cgroup of its own, removed at the
//! end, so that hook-cost can attach its cgroup_skb floor there and never
//! to the root cgroup.

use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use serde_json::json;

use super::{
    BenchArgs, Scenario, bodies, bpf_stats,
    cgroup::Cgroup,
    chain, fixed_rate, hook_cost, load, loadgen,
    procs::{self, Guard},
    receiver::{self, Receiver, Waited},
    report::{self, Section},
    saturation, scaling, soak, timed,
};
use crate::util::{note, section};

/// What every scenario of the suite works with.
pub struct Ctx<'a> {
    pub guard: &'a mut Guard,
    pub bin: &'a Path,
    pub args: &'a BenchArgs,
    pub nginx_pid: u32,
    pub port: u16,
    pub receiver: &'a Receiver,
    pub deadline: Instant,
    /// `taskset -c` list for wrk, and the CPU for xtask's load threads.
    pub load_cpu: Option<usize>,
    /// `taskset -c` list for nginx (and the chain's forwarder).
    pub nginx_cpus: Option<&'static str>,
    /// The machine's CPUs (what saturation's budget divides).
    pub cpus: usize,
    /// The child cgroup nginx was born in, where `hook-cost` attaches its
    /// cgroup_skb floor (never the root cgroup).
    pub nginx_cgroup: &'a Path,
}

impl Ctx<'_> {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/bench.json", self.port)
    }

    /// Fails when the scenario `what` would start past `--max-seconds`.
    pub fn check_time(&self, what: &str) -> Result<()> {
        procs::bail_if_interrupted()?;
        if Instant::now() >= self.deadline {
            bail!(
                "--max-seconds {} reached before {what}",
                self.args.max_seconds
            );
        }
        Ok(())
    }

    /// Waits until the receiver holds `expected` spans more than `before`,
    /// or its count stalls for [`SPAN_STALL`]. Returns what the wait saw,
    /// the spans accepted since `before`, and completeness: those over
    /// `expected` (none when nothing was expected).
    pub fn wait_spans(&self, before: u64, expected: u64) -> Result<(Waited, u64, Option<f64>)> {
        let waited = self.receiver.wait_for(
            before + expected,
            SPAN_STALL,
            self.deadline.max(Instant::now() + SPAN_STALL),
        )?;
        let accepted = waited.accepted.saturating_sub(before);
        let completeness = (expected > 0).then(|| accepted as f64 / expected as f64);
        Ok((waited, accepted, completeness))
    }

    /// xtask's open-loop client at `rate` for `length` against the suite's
    /// nginx, on `--connections` kept-alive connections, from the load CPU;
    /// `sample` runs every 200 ms.
    pub fn fixed_rate(
        &self,
        rate: u32,
        length: Duration,
        sample: &mut dyn FnMut(),
    ) -> Result<loadgen::RateRun> {
        loadgen::fixed_rate(
            self.port,
            rate,
            self.args.connections,
            length,
            self.load_cpu,
            None,
            sample,
        )
    }

    /// Length of a timed run: the full one, or a short one under `--short`.
    pub fn length(&self, full_secs: u64) -> Duration {
        Duration::from_secs(if self.args.short {
            full_secs.min(SHORT_SECS)
        } else {
            full_secs
        })
    }
}

/// Give up waiting for spans when the receiver's count has not moved for
/// this long (the batch delay is 200 ms; retries back off for longer).
const SPAN_STALL: Duration = Duration::from_secs(10);

/// Seconds per timed run under `--short`: enough to see every part work.
const SHORT_SECS: u64 = 2;

/// The scenarios of the suite that `scenario` selects.
pub fn selected(scenario: Scenario) -> Vec<Scenario> {
    match scenario {
        Scenario::Suite | Scenario::All => vec![
            Scenario::Saturation,
            Scenario::FixedRate,
            Scenario::HookCost,
            Scenario::BpfStats,
            Scenario::Scaling,
            Scenario::Chain,
            Scenario::Bodies,
        ],
        // The soak runs alone, on the suite's nginx and receiver.
        Scenario::Saturation
        | Scenario::FixedRate
        | Scenario::HookCost
        | Scenario::BpfStats
        | Scenario::Scaling
        | Scenario::Chain
        | Scenario::Bodies
        | Scenario::Soak => vec![scenario],
        _ => vec![],
    }
}

/// Runs the `which` scenarios, writes the report (and checks it under
/// `--short`). Returns what went wrong without stopping the bench.
pub fn run(
    guard: &mut Guard,
    args: &BenchArgs,
    bin: &Path,
    which: &[Scenario],
    deadline: Instant,
) -> Result<Vec<String>> {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let pin = !args.no_pin && cpus >= 2;
    let (nginx_cpus, load_cpu) = if pin {
        (Some("0"), Some(1))
    } else {
        (None, None)
    };
    let load_start = timed::load_average();
    // 10,000 connections need 10,000 fds here (nginx raises its own).
    procs::raise_nofile(u64::from(load::NGINX_CONNECTIONS) + 1024)?;

    section(&format!(
        "bench suite: nginx and the OTLP receiver in {}",
        guard.dir.display()
    ));
    let port = procs::free_port()?;
    // Declared before what it holds is started: dropped (waiting for the
    // cgroup to empty, then removing it) only after nginx is stopped.
    let nginx_cgroup = Cgroup::create("nginx")?;
    let dir = guard.dir.clone();
    let nginx_pid = load::start_nginx_in(
        guard,
        &dir,
        port,
        None,
        nginx_cpus,
        Some(&nginx_cgroup),
        None,
    )?;
    let receiver = match receiver::start(guard) {
        Ok(r) => r,
        Err(e) => {
            // nginx leaves its cgroup before the cgroup is removed.
            let _ = guard.stop(nginx_pid, Duration::from_secs(5));
            return Err(e);
        }
    };
    note(format!(
        "nginx pid {nginx_pid} (CPUs {}), http://127.0.0.1:{port}/bench.json; receiver pid {} \
         (OTLP/gRPC 127.0.0.1:{}); load on CPU {}; load average {}",
        nginx_cpus.unwrap_or("any"),
        receiver.pid,
        receiver.grpc_port,
        load_cpu.map_or_else(|| "any".to_string(), |c| c.to_string()),
        load_start.as_deref().unwrap_or("?")
    ));
    let mut cx = Ctx {
        guard,
        bin,
        args,
        nginx_pid,
        port,
        receiver: &receiver,
        deadline,
        load_cpu,
        nginx_cpus,
        cpus,
        nginx_cgroup: nginx_cgroup.path(),
    };
    let sections = scenarios(&mut cx, which);
    let load_end = timed::load_average();
    let others = timed::other_agents(&[]);
    // Stopped also when a scenario failed, so that nginx's cgroup empties
    // before it is dropped (and removed) on the way out.
    let stopped = guard_stop(cx.guard, nginx_pid, receiver.pid);
    let sections = sections?;
    stopped?;

    section("bench: report");
    let header = format!(
        "{}; {} CPUs, kernel {}; load average {} at start, {} at end{}. nginx {}, \
         load {}; the agent and the receiver float. {}",
        if args.short {
            "Short run (--short): the figures only show that every scenario works"
        } else {
            "Full run"
        },
        cpus,
        super::machine_json()["kernel"].as_str().unwrap_or("?"),
        load_start.as_deref().unwrap_or("?"),
        load_end.as_deref().unwrap_or("?"),
        if others.is_empty() {
            String::new()
        } else {
            format!("; other wirespan processes ran: {}", others.join("; "))
        },
        nginx_cpus.map_or("unpinned".to_string(), |c| format!("pinned to CPU {c}")),
        load_cpu.map_or("unpinned".to_string(), |c| format!("pinned to CPU {c}")),
        "Targets are reported, not asserted."
    );
    let meta = json!({
        "short": args.short,
        "machine": super::machine_json(),
        "agent_version": super::agent_version(bin),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "other_wirespan_processes": others,
        "nginx_cpus": nginx_cpus,
        "load_cpu": load_cpu,
        "server": "nginx (Debian), master_process off, 1 worker, access_log off, keep-alive, \
                   static file /bench.json (312 bytes)",
        "receiver_versions": receiver.versions,
    });
    let (json_path, md_path) = report::write(&sections, meta, &header)?;
    if args.short {
        report::validate(&sections, &json_path, &md_path)?;
    }
    Ok(sections.into_iter().flat_map(|s| s.problems).collect())
}

/// Each of `which` in turn, against the suite's nginx.
fn scenarios(cx: &mut Ctx, which: &[Scenario]) -> Result<Vec<Section>> {
    let mut sections = Vec::new();
    for &s in which {
        cx.check_time(s.name())?;
        section(&format!("bench: {}", s.name()));
        sections.push(match s {
            Scenario::Saturation => saturation::run(cx)?,
            Scenario::FixedRate => fixed_rate::run(cx)?,
            Scenario::HookCost => hook_cost::run(cx)?,
            Scenario::BpfStats => bpf_stats::run(cx)?,
            Scenario::Scaling => scaling::run(cx)?,
            Scenario::Chain => chain::run(cx)?,
            Scenario::Bodies => bodies::run(cx)?,
            Scenario::Soak => soak::run(cx)?,
            _ => bail!("{} is not part of the suite", s.name()),
        });
    }
    Ok(sections)
}

fn guard_stop(guard: &mut Guard, nginx: u32, receiver: u32) -> Result<()> {
    guard.stop(receiver, Duration::from_secs(5))?;
    guard.stop(nginx, Duration::from_secs(5))?;
    Ok(())
}
