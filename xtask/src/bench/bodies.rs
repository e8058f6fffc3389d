//! `bodies`: what skipping the middle of long bodies saves. nginx serves a
//! 1 MiB file (`/big.bin`; nginx's default `sendfile off`, so the body goes
//! through its writes, 32 KiB at a time) to wrk at full speed; runs
//! alternate without the agent, with the agent (`--print off`), and with
//! the agent told never to skip (`--skip-bodies-from 0`), `--runs` times
//! each. Reported: requests/s of each side against none, the CPU per
//! request of nginx (the probes run in its syscalls) and of the agent, and
//! the data events per request, with and without a payload.

use serde_json::{Value, json};

use super::{
    agent, procs,
    report::{Row, Section, fmt},
    suite::Ctx,
    timed::{self, Wrk, median},
};
use crate::util::{note, section};

const NAME: &str = "bodies";
/// The file's size; see `load::BIG_BODY_BYTES`.
const BODY_BYTES: usize = super::load::BIG_BODY_BYTES;
/// Fewer connections than the small-response scenarios: each moves 1 MiB.
const CONNECTIONS: u32 = 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    None,
    /// The agent as shipped (`--skip-bodies-from` at its default).
    Skip,
    /// The agent copying every syscall's payload.
    NoSkip,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::None => "none",
            Side::Skip => "skip",
            Side::NoSkip => "no-skip",
        }
    }
}

struct Run {
    index: u32,
    side: Side,
    rps: f64,
    requests: u64,
    nginx_cpu: f64,
    agent_cpu: Option<f64>,
    exit: Option<agent::Exit>,
}

impl Run {
    fn per_request(&self, v: f64) -> Option<f64> {
        (self.requests > 0).then(|| v / self.requests as f64)
    }

    fn counter(&self, k: &str) -> Option<f64> {
        self.exit.as_ref().map(|e| e.counter(k) as f64)
    }
}

pub fn run(cx: &mut Ctx) -> Result<Section, anyhow::Error> {
    let runs = if cx.args.short { 1 } else { cx.args.runs };
    let length = cx.length(cx.args.seconds);
    let cpus = cx.load_cpu.map(|c| c.to_string());
    let shape = Wrk {
        threads: cx.args.threads.min(CONNECTIONS),
        connections: CONNECTIONS,
        cpus: cpus.as_deref(),
        cgroup: None,
    };
    let url = format!("http://127.0.0.1:{}/big.bin", cx.port);
    let mut all = Vec::new();
    let mut problems = Vec::new();
    for index in 1..=runs {
        for side in [Side::None, Side::Skip, Side::NoSkip] {
            cx.check_time(&format!("{NAME} run {index}"))?;
            section(&format!(
                "bench: {NAME} run {index}/{runs}, {} s, {} MiB responses, {}",
                length.as_secs(),
                BODY_BYTES >> 20,
                side.name()
            ));
            let started = if side == Side::None {
                None
            } else {
                let mut cmd = agent::traced(cx.bin, cx.nginx_pid, None, cx.args);
                if side == Side::NoSkip {
                    cmd.args(["--skip-bodies-from", "0"]);
                }
                Some(agent::start(cx.guard, cmd)?)
            };
            let cpu_before = started
                .as_ref()
                .and_then(|(pid, _)| procs::cpu_seconds(*pid));
            let (wrk, _) = timed::wrk_for(cx.guard, cx.nginx_pid, &url, &shape, length)?;
            let (mut exit, mut agent_cpu) = (None, None);
            if let Some((pid, lines)) = started {
                let cpu = timed::cpu_when_settled(pid, timed::SETTLE_MAX);
                agent_cpu = cpu_before.map(|b| cpu - b);
                let e = agent::stop(cx.guard, pid, &lines)?;
                problems.extend(e.problem(&format!("{NAME} run {index} {}", side.name())));
                exit = Some(e);
            }
            if wrk.non_2xx > 0 {
                problems.push(format!("{NAME} run {index}: {} non-2xx", wrk.non_2xx));
            }
            let run = Run {
                index,
                side,
                rps: wrk.rps,
                requests: wrk.requests,
                nginx_cpu: wrk.nginx_cpu,
                agent_cpu,
                exit,
            };
            note(format!(
                "{} requests, {:.0} req/s; CPU µs per request: nginx {}, agent {}; data events per \
                 request {} (length only {})",
                run.requests,
                run.rps,
                us(run.per_request(run.nginx_cpu * 1e6)),
                us(run.agent_cpu.and_then(|c| run.per_request(c * 1e6))),
                one(run.counter("data_events").and_then(|v| run.per_request(v))),
                one(run
                    .counter("payloads_length_only")
                    .and_then(|v| run.per_request(v))),
            ));
            all.push(run);
        }
    }

    let med = |side: Side, f: &dyn Fn(&Run) -> Option<f64>| {
        median(
            all.iter()
                .filter(|r| r.side == side)
                .filter_map(f)
                .collect(),
        )
    };
    let rps = |r: &Run| Some(r.rps);
    let ratio = |side: Side| Some(med(side, &rps)? / med(Side::None, &rps)?);
    let nginx_us = |side| med(side, &|r| r.per_request(r.nginx_cpu * 1e6));
    let agent_us = |side| med(side, &|r| r.per_request(r.agent_cpu? * 1e6));
    let events = |side| med(side, &|r| r.per_request(r.counter("data_events")?));
    let lengths = |side| med(side, &|r| r.per_request(r.counter("payloads_length_only")?));
    let side_json = |side: Side| {
        json!({
            "requests_per_sec_median": med(side, &rps),
            "throughput_ratio": ratio(side),
            "nginx_cpu_us_per_request": nginx_us(side),
            "agent_cpu_us_per_request": agent_us(side),
            "data_events_per_request": events(side),
            "length_only_events_per_request": lengths(side),
        })
    };
    let figures = json!({
        "seconds_per_run": length.as_secs(),
        "runs_per_side": runs,
        "order": "no agent, agent, agent with --skip-bodies-from 0, repeated",
        "response_bytes": BODY_BYTES,
        "wrk_threads": shape.threads,
        "wrk_connections": CONNECTIONS,
        "agent": "--pid <nginx> --print off",
        "none": side_json(Side::None),
        "skip": side_json(Side::Skip),
        "no_skip": side_json(Side::NoSkip),
        "runs": all.iter().map(run_json).collect::<Vec<_>>(),
    });
    let x = |v: Option<f64>| fmt(v, |v| format!("{v:.3}"));
    let rows = vec![
        Row::new(
            NAME,
            format!(
                "1 MiB responses: throughput agent/none (no-skip/none {}; median req/s none {})",
                x(ratio(Side::NoSkip)),
                fmt(med(Side::None, &rps), |v| format!("{v:.0}"))
            ),
            x(ratio(Side::Skip)),
            "—",
        ),
        Row::new(
            NAME,
            format!(
                "1 MiB responses: agent CPU µs per request (no-skip {}); nginx's: none {}, skip {}, \
                 no-skip {}",
                us(agent_us(Side::NoSkip)),
                us(nginx_us(Side::None)),
                us(nginx_us(Side::Skip)),
                us(nginx_us(Side::NoSkip)),
            ),
            us(agent_us(Side::Skip)),
            "—",
        ),
        Row::new(
            NAME,
            format!(
                "1 MiB responses: data events per request with a payload (no-skip {}; events in \
                 all {}, length only {})",
                one(events(Side::NoSkip)),
                one(events(Side::Skip)),
                one(lengths(Side::Skip)),
            ),
            one(events(Side::Skip)
                .zip(lengths(Side::Skip))
                .map(|(e, l)| e - l)),
            "—",
        ),
    ];
    Ok(Section {
        name: NAME,
        figures,
        rows,
        required: ["/skip/throughput_ratio", "/skip/data_events_per_request"]
            .map(String::from)
            .to_vec(),
        problems,
    })
}

fn us(v: Option<f64>) -> String {
    fmt(v, |v| format!("{v:.1}"))
}

fn one(v: Option<f64>) -> String {
    fmt(v, |v| format!("{v:.1}"))
}

fn run_json(r: &Run) -> Value {
    json!({
        "run": r.index,
        "side": r.side.name(),
        "requests": r.requests,
        "requests_per_sec": r.rps,
        "nginx_cpu_seconds": r.nginx_cpu,
        "agent_cpu_seconds": r.agent_cpu,
        "data_events": r.counter("data_events"),
        "payloads_length_only": r.counter("payloads_length_only"),
        "bodies_skipped": r.counter("bodies_skipped"),
        "drops": r.exit.as_ref().map(|e| Value::Object(e.drops())),
    })
}
