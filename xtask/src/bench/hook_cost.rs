//! `hook-cost`: what nginx's own CPU per request becomes, at a fixed rate,
//! with nothing attached, with the floor ([`super::floor`]: empty programs
//! where the agent attaches its own, and empty raw `sys_enter`/`sys_exit`),
//! and with the agent capturing (`--print off`, no exporter). The probes
//! run inside nginx's syscalls, so their cost is nginx's CPU; at a fixed
//! rate that is steadier than saturation's throughput, which moves with
//! how many requests nginx batches per wake-up. The sides rotate, `--runs`
//! rounds of `--seconds` each, at 10,000 req/s from xtask's open-loop
//! client. Reported: nginx's CPU µs per request for each side (the median
//! of the rounds, and each round), and each side's difference to none.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::{
    agent,
    floor::Floor,
    procs,
    report::{Row, Section, fmt},
    suite::Ctx,
    timed::median,
};
use crate::util::{note, section};

const NAME: &str = "hook-cost";
/// The rate the CPU target is stated at.
const RATE: u32 = 10_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    None,
    Floor,
    FloorRaw,
    Capture,
}

const SIDES: [Side; 4] = [Side::None, Side::Floor, Side::FloorRaw, Side::Capture];

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::None => "none",
            Side::Floor => "floor-tracepoints",
            Side::FloorRaw => "floor-raw-syscalls",
            Side::Capture => "agent-capture-only",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Side::None => "nothing attached",
            Side::Floor => "empty programs on the agent's tracepoints",
            Side::FloorRaw => "empty raw sys_enter/sys_exit programs",
            Side::Capture => "the agent, capture only (--print off)",
        }
    }
}

struct Run {
    round: u32,
    side: Side,
    requests: u64,
    achieved_rate: f64,
    nginx_cpu: f64,
}

impl Run {
    fn us_per_request(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.nginx_cpu * 1e6 / self.requests as f64)
    }
}

pub fn run(cx: &mut Ctx) -> Result<Section> {
    let rounds = if cx.args.short { 1 } else { cx.args.runs };
    let length = cx.length(cx.args.seconds);
    let mut all = Vec::new();
    let mut problems = Vec::new();
    for round in 1..=rounds {
        for side in SIDES {
            cx.check_time(&format!("{NAME} round {round}"))?;
            section(&format!(
                "bench: {NAME} round {round}/{rounds}, {RATE} req/s for {} s, {}",
                length.as_secs(),
                side.label()
            ));
            let run = one(cx, round, side, length, &mut problems)?;
            note(format!(
                "{} requests, {:.0} req/s; nginx CPU {:.2} s, {} µs per request",
                run.requests,
                run.achieved_rate,
                run.nginx_cpu,
                fmt(run.us_per_request(), |v| format!("{v:.2}"))
            ));
            all.push(run);
        }
    }

    let med = |side: Side| {
        median(
            all.iter()
                .filter(|r| r.side == side)
                .filter_map(Run::us_per_request)
                .collect(),
        )
    };
    let none = med(Side::None);
    let added = |side: Side| Some(med(side)? - none?);
    let rounds_of = |side: Side| -> Vec<f64> {
        all.iter()
            .filter(|r| r.side == side)
            .filter_map(Run::us_per_request)
            .collect()
    };
    let sides: Vec<Value> = SIDES
        .iter()
        .map(|&s| {
            json!({
                "side": s.name(),
                "nginx_cpu_us_per_request_median": med(s),
                "nginx_cpu_us_per_request_added": added(s),
                "nginx_cpu_us_per_request_rounds": rounds_of(s),
            })
        })
        .collect();
    let figures = json!({
        "rate": RATE,
        "seconds_per_run": length.as_secs(),
        "rounds": rounds,
        "order": SIDES.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "sides": sides,
        "runs": all.iter().map(|r| json!({
            "round": r.round,
            "side": r.side.name(),
            "requests": r.requests,
            "achieved_rate": r.achieved_rate,
            "nginx_cpu_seconds": r.nginx_cpu,
        })).collect::<Vec<_>>(),
    });
    let us = |v: Option<f64>| fmt(v, |v| format!("{v:.2} µs"));
    let list = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = SIDES
        .iter()
        .map(|&s| {
            let what = if s == Side::None {
                format!(
                    "nginx CPU per request at {RATE} req/s, {} (rounds {})",
                    s.label(),
                    list(&rounds_of(s))
                )
            } else {
                format!(
                    "nginx CPU per request at {RATE} req/s, {}: {} against nothing attached (rounds {})",
                    s.label(),
                    fmt(added(s), |v| format!("{v:+.2} µs")),
                    list(&rounds_of(s))
                )
            };
            Row::new(NAME, what, us(med(s)), "—")
        })
        .collect();
    let required = SIDES
        .iter()
        .enumerate()
        .map(|(i, _)| format!("/sides/{i}/nginx_cpu_us_per_request_median"))
        .collect();
    Ok(Section {
        name: NAME,
        figures,
        rows,
        required,
        problems,
    })
}

/// One side for `length`: attach what it needs, run the load, detach.
fn one(
    cx: &mut Ctx,
    round: u32,
    side: Side,
    length: Duration,
    problems: &mut Vec<String>,
) -> Result<Run> {
    let floor = match side {
        Side::Floor => Some(Floor::agent_tracepoints()?),
        Side::FloorRaw => Some(Floor::raw_syscalls()?),
        _ => None,
    };
    let started = if side == Side::Capture {
        let cmd = agent::traced(cx.bin, cx.nginx_pid, None, cx.args);
        Some(agent::start(cx.guard, cmd)?)
    } else {
        None
    };
    // No figure rather than a zero one if nginx is gone.
    let nginx_cpu_now = || {
        procs::cpu_seconds(cx.nginx_pid)
            .with_context(|| format!("{NAME}: reading nginx's CPU time (pid {})", cx.nginx_pid))
    };
    let before = nginx_cpu_now()?;
    let load = cx.fixed_rate(RATE, length, &mut || {})?;
    let nginx_cpu = nginx_cpu_now()? - before;
    drop(floor);
    if let Some((pid, lines)) = started {
        let exit = agent::stop(cx.guard, pid, &lines)?;
        problems.extend(exit.problem(&format!("{NAME} round {round}")));
    }
    if load.non_2xx > 0 {
        problems.push(format!(
            "{NAME} round {round}, {}: {} non-2xx",
            side.name(),
            load.non_2xx
        ));
    }
    Ok(Run {
        round,
        side,
        requests: load.completed,
        achieved_rate: load.achieved_rate,
        nginx_cpu,
    })
}
