//! `bpf-stats`: what each of the agent's eBPF programs costs in the kernel.
//! With `kernel.bpf_stats_enabled=1` (the previous value is restored after,
//! also on error) the kernel counts each program's runs and run time;
//! the agent's open program fds (`/proc/PID/fdinfo`) show them, so another
//! agent on the machine is not counted. The counts are taken before and after a fixed-rate load
//! traced by a fresh agent (`--print off`: the kernel side does not depend
//! on the output), so start-up is left out. The tracepoint programs run on
//! every syscall of every process and filter by pid inside, so on a shared
//! machine other processes' syscalls add runs (cheap, filtered ones).
//!
//! With stats on, the kernel reads the clock around every run, and that is
//! counted in the run's time. An empty program ([`Floor::on_hook`]) on
//! [`CALIBRATION_HOOK`], beside the agent's own program there, measures
//! that cost per run; it is reported, and subtracted per run in a second
//! per-request figure.

use std::{collections::BTreeMap, fs, process::Command};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use wirespan_common::hooks::{HOOKS, Hook};

use super::{
    agent, bpf_fds,
    floor::Floor,
    report::{Row, Section, fmt},
    suite::Ctx,
};
use crate::util::{self, note};

const NAME: &str = "bpf-stats";
/// The agent's program whose tracepoint carries the calibration: one the
/// load hits twice per request (nginx's reads), in every kernel's hooks.
const CALIBRATION_HOOK: &str = "enter_recvfrom";
const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// The load: the rate the targets are stated at.
const RATE: u32 = 10_000;

/// Sets `kernel.bpf_stats_enabled` to 1 and puts the old value back when
/// dropped.
struct StatsEnabled {
    previous: String,
}

impl StatsEnabled {
    fn new() -> Result<Self> {
        let previous = fs::read_to_string(SYSCTL)
            .with_context(|| format!("reading {SYSCTL}"))?
            .trim()
            .to_string();
        fs::write(SYSCTL, "1").with_context(|| format!("writing 1 to {SYSCTL}"))?;
        note(format!("kernel.bpf_stats_enabled=1 (was {previous})"));
        Ok(Self { previous })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        match fs::write(SYSCTL, &self.previous) {
            Ok(()) => note(format!(
                "kernel.bpf_stats_enabled={} restored",
                self.previous
            )),
            Err(e) => eprintln!("    warning: restoring {SYSCTL} to {}: {e}", self.previous),
        }
    }
}

/// One program's counters.
#[derive(Debug, Clone, Default)]
struct Prog {
    name: String,
    kind: String,
    run_cnt: u64,
    run_time_ns: u64,
}

/// The programs `pid` holds, by id: each open BPF program fd's
/// `/proc/PID/fdinfo` gives its id and, with stats enabled, `run_cnt` and
/// `run_time_ns` (exactly this process's programs, whatever else is loaded;
/// bpftool's own `pids` need a bpftool built with BPF skeletons). Names and
/// types come from `bpftool prog show --json`.
fn programs_of(pid: u32) -> Result<BTreeMap<u64, Prog>> {
    let names = bpftool_names()?;
    let mut progs = BTreeMap::new();
    for text in bpf_fds::fdinfos(pid, bpf_fds::Kind::Prog)? {
        if let Some((id, mut prog)) = parse_fdinfo(&text) {
            if let Some((name, kind)) = names.get(&id) {
                prog.name.clone_from(name);
                prog.kind.clone_from(kind);
            }
            progs.insert(id, prog);
        }
    }
    Ok(progs)
}

/// `prog_id`, `run_cnt` and `run_time_ns` of a BPF program fd's fdinfo.
fn parse_fdinfo(text: &str) -> Option<(u64, Prog)> {
    let field = |k: &str| bpf_fds::field(text, k);
    Some((
        field("prog_id")?,
        Prog {
            name: "?".to_string(),
            kind: "?".to_string(),
            run_cnt: field("run_cnt").unwrap_or(0),
            run_time_ns: field("run_time_ns").unwrap_or(0),
        },
    ))
}

/// Program id -> (name, type), from `bpftool prog show --json`.
fn bpftool_names() -> Result<BTreeMap<u64, (String, String)>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .context("cannot run bpftool (run `cargo xtask setup`)")?;
    if !out.status.success() {
        bail!(
            "bpftool prog show failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all: Value = serde_json::from_slice(&out.stdout).context("bpftool's JSON")?;
    Ok(all
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["id"].as_u64()?,
                (
                    p["name"].as_str().unwrap_or("?").to_string(),
                    p["type"].as_str().unwrap_or("?").to_string(),
                ),
            ))
        })
        .collect())
}

pub fn run(cx: &mut Ctx) -> Result<Section> {
    if !util::succeeds("sh", &["-c", "command -v bpftool"]) {
        bail!("bpftool not found: run `cargo xtask setup`");
    }
    let length = cx.length(cx.args.bpf_stats_seconds);
    let hook: &Hook = HOOKS
        .iter()
        .find(|h| h.program == CALIBRATION_HOOK)
        .with_context(|| format!("no hook {CALIBRATION_HOOK} in wirespan_common::hooks"))?;
    let stats = StatsEnabled::new()?;
    let empty = Floor::on_hook(hook)?;
    let cmd = agent::traced(cx.bin, cx.nginx_pid, None, cx.args);
    let (pid, lines) = agent::start(cx.guard, cmd)?;
    let before = programs_of(pid)?;
    let empty_before = empty.run_stats()?;
    if before.is_empty() {
        agent::stop(cx.guard, pid, &lines)?;
        bail!("the agent (pid {pid}) holds no BPF program fds (/proc/{pid}/fdinfo)");
    }
    note(format!(
        "{} programs held by the agent; {RATE} req/s for {} s",
        before.len(),
        length.as_secs()
    ));
    let load = cx.fixed_rate(RATE, length, &mut || {})?;
    let after = programs_of(pid)?;
    let empty_after = empty.run_stats()?;
    let exit = agent::stop(cx.guard, pid, &lines)?;
    drop(empty);
    drop(stats);
    let empty_runs = empty_after.0.saturating_sub(empty_before.0);
    let overhead_ns = (empty_runs > 0)
        .then(|| empty_after.1.saturating_sub(empty_before.1) as f64 / empty_runs as f64);

    let mut progs: Vec<(u64, Prog)> = after
        .into_iter()
        .map(|(id, a)| {
            let b = before.get(&id).cloned().unwrap_or_default();
            let delta = Prog {
                run_cnt: a.run_cnt.saturating_sub(b.run_cnt),
                run_time_ns: a.run_time_ns.saturating_sub(b.run_time_ns),
                ..a
            };
            (id, delta)
        })
        .collect();
    progs.sort_by_key(|(_, p)| std::cmp::Reverse(p.run_time_ns));
    let total_ns: u64 = progs.iter().map(|(_, p)| p.run_time_ns).sum();
    let total_runs: u64 = progs.iter().map(|(_, p)| p.run_cnt).sum();
    let per_req = (load.completed > 0).then(|| total_ns as f64 / load.completed as f64);
    // The same, less the stats' own cost on each run.
    let per_req_net = per_req
        .zip(overhead_ns)
        .map(|(ns, o)| (ns - o * total_runs as f64 / load.completed as f64).max(0.0));
    let cpu_pct = total_ns as f64 / 1e9 / load.seconds.max(1e-9) * 100.0;
    note(format!(
        "{} requests at {:.0} req/s: {total_runs} program runs, {:.1} ms in the kernel \
         ({cpu_pct:.2}% of a core), {} ns per request",
        load.completed,
        load.achieved_rate,
        total_ns as f64 / 1e6,
        fmt(per_req, |v| format!("{v:.0}"))
    ));
    let ns_per_run = |p: &Prog| (p.run_cnt > 0).then(|| p.run_time_ns as f64 / p.run_cnt as f64);
    let mut rows = vec![Row::new(
        NAME,
        format!(
            "all {} agent programs at {:.0} req/s: kernel time per request ({:.2}% of a core)",
            progs.len(),
            load.achieved_rate,
            cpu_pct
        ),
        fmt(per_req, |v| format!("{v:.0} ns")),
        "—",
    )];
    rows.push(Row::new(
        NAME,
        format!(
            "bpf_stats' own cost per run (an empty program on {}:{}, {empty_runs} runs); per request less that: {} over {:.1} runs",
            hook.category,
            hook.name,
            fmt(per_req_net, |v| format!("{v:.0} ns")),
            total_runs as f64 / load.completed.max(1) as f64
        ),
        fmt(overhead_ns, |v| format!("{v:.0} ns/run")),
        "—",
    ));
    for (_, p) in progs.iter().filter(|(_, p)| p.run_cnt > 0) {
        rows.push(Row::new(
            NAME,
            format!(
                "{} ({}): {} runs, {:.1} ms",
                p.name,
                p.kind,
                p.run_cnt,
                p.run_time_ns as f64 / 1e6
            ),
            fmt(ns_per_run(p), |v| format!("{v:.0} ns/run")),
            "—",
        ));
    }
    let figures = json!({
        "seconds": load.seconds,
        "target_rate": RATE,
        "achieved_rate": load.achieved_rate,
        "requests_completed": load.completed,
        "programs_selected": progs.len(),
        "total_run_cnt": total_runs,
        "total_run_time_ns": total_ns,
        "total_ns_per_request": per_req,
        "kernel_cpu_pct_of_core": cpu_pct,
        "stats_overhead": {
            "what": format!("an empty program on {}:{} beside the agent's, stats on", hook.category, hook.name),
            "run_cnt": empty_runs,
            "ns_per_run": overhead_ns,
        },
        "total_ns_per_request_less_stats_overhead": per_req_net,
        "selection": "the BPF program fds the agent holds (/proc/PID/fdinfo: prog_id, run_cnt, run_time_ns); names from bpftool prog show --json",
        "programs": progs.iter().map(|(id, p)| json!({
            "id": id,
            "name": p.name,
            "type": p.kind,
            "run_cnt": p.run_cnt,
            "run_time_ns": p.run_time_ns,
            "ns_per_run": ns_per_run(p),
        })).collect::<Vec<_>>(),
        "drops": Value::Object(exit.drops()),
    });
    Ok(Section {
        name: NAME,
        figures,
        rows,
        required: [
            "/total_ns_per_request",
            "/stats_overhead/ns_per_run",
            "/programs_selected",
            "/total_run_cnt",
        ]
        .map(String::from)
        .to_vec(),
        problems: exit.problem(NAME).into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_is_read() {
        let text = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_id:\t77\n\
                    run_time_ns:\t12345\nrun_cnt:\t9\nrecursion_misses:\t0\n";
        let (id, p) = parse_fdinfo(text).unwrap();
        assert_eq!((id, p.run_cnt, p.run_time_ns), (77, 9, 12345));
        assert!(parse_fdinfo("pos:\t0\n").is_none());
    }
}
