//! `bodies`: what skipping the middle of long bodies saves. An nginx of its
//! own serves a 1 MiB file (`/big.bin`; nginx's default `sendfile off`, so
//! the body goes through its writes, 32 KiB at a time) to wrk, in two
//! cases: over loopback (a response takes well under a millisecond, less
//! than the agent may need to hear of its head: the worst case for
//! skipping), and over a 1 Gbit/s link (wrk in a network namespace of the
//! bench's, behind a veth pair whose host end a `tbf` qdisc paces: ~8 ms a
//! response per connection, as behind a real network). Runs alternate without the
//! agent, with the agent (`--print off`), and with the agent told never to
//! skip (`--skip-bodies-from 0`), `--runs` times each. Reported per case:
//! requests/s of each side against none, the CPU per request of nginx (the
//! probes run in its syscalls) and of the agent, and the data events per
//! request, with and without a payload.

use std::{fs, time::Duration};

use anyhow::Context;
use serde_json::{Value, json};

use super::{
    agent, load,
    netlink::Link,
    procs,
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

/// The link's rate (a tc rate).
const LINK_RATE: &str = "1gbit";

/// A way of fetching the file: its name in the report, and how wrk
/// reaches nginx.
struct Case<'a> {
    name: &'static str,
    key: &'static str,
    url: String,
    link: Option<&'a Link>,
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
    let link = Link::create(LINK_RATE).context("making the bench's network namespace")?;
    let dir = cx.guard.path(NAME);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let port = procs::free_port()?;
    let nginx = load::start_nginx_in(
        cx.guard,
        &dir,
        port,
        None,
        cx.nginx_cpus,
        None,
        Some(link.host),
    )?;
    note(format!(
        "nginx pid {nginx} on 127.0.0.1:{port} and {}:{port} (namespace {}, {LINK_RATE})",
        link.host, link.netns
    ));
    let cases = [
        Case {
            name: "over loopback",
            key: "loopback",
            url: format!("http://127.0.0.1:{port}/big.bin"),
            link: None,
        },
        Case {
            name: "over a 1 Gbit/s link",
            key: "link",
            url: format!("http://{}:{port}/big.bin", link.host),
            link: Some(&link),
        },
    ];
    let mut figures = serde_json::Map::new();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for case in &cases {
        let (f, r) = one_case(cx, nginx, case, &mut problems)?;
        figures.insert(case.key.into(), f);
        rows.extend(r);
    }
    cx.guard.stop(nginx, Duration::from_secs(5))?;
    Ok(Section {
        name: NAME,
        figures: Value::Object(figures),
        rows,
        required: cases
            .iter()
            .flat_map(|c| {
                [
                    format!("/{}/skip/throughput_ratio", c.key),
                    format!("/{}/skip/data_events_per_request", c.key),
                ]
            })
            .collect(),
        problems,
    })
}

fn one_case(
    cx: &mut Ctx,
    nginx: u32,
    case: &Case,
    problems: &mut Vec<String>,
) -> Result<(Value, Vec<Row>), anyhow::Error> {
    let runs = if cx.args.short { 1 } else { cx.args.runs };
    let length = cx.length(cx.args.seconds);
    let cpus = cx.load_cpu.map(|c| c.to_string());
    let shape = Wrk {
        threads: cx.args.threads.min(CONNECTIONS),
        connections: CONNECTIONS,
        cpus: cpus.as_deref(),
        cgroup: None,
        link: case.link,
    };
    let mut all = Vec::new();
    for index in 1..=runs {
        for side in [Side::None, Side::Skip, Side::NoSkip] {
            cx.check_time(&format!("{NAME} run {index}"))?;
            section(&format!(
                "bench: {NAME} run {index}/{runs}, {} s, {} MiB responses {}, {}",
                length.as_secs(),
                BODY_BYTES >> 20,
                case.name,
                side.name()
            ));
            let started = if side == Side::None {
                None
            } else {
                let mut cmd = agent::traced(cx.bin, nginx, None, cx.args);
                if side == Side::NoSkip {
                    cmd.args(["--skip-bodies-from", "0"]);
                }
                Some(agent::Timed::start(cx.guard, cmd)?)
            };
            let (wrk, _) = timed::wrk_for(cx.guard, nginx, &case.url, &shape, length)?;
            let (mut exit, mut agent_cpu) = (None, None);
            if let Some(agent) = started {
                let done = agent.finish(cx.guard)?;
                let what = format!("{NAME} {} run {index} {}", case.key, side.name());
                problems.extend(done.exit.problem(&what));
                (exit, agent_cpu) = (Some(done.exit), done.cpu);
            }
            if wrk.non_2xx > 0 {
                problems.push(format!(
                    "{NAME} {} run {index}: {} non-2xx",
                    case.key, wrk.non_2xx
                ));
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
        "case": case.name,
        "url": case.url,
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
                "1 MiB responses, {}: throughput agent/none (no-skip/none {}; median req/s none {})",
                case.name,
                x(ratio(Side::NoSkip)),
                fmt(med(Side::None, &rps), |v| format!("{v:.0}"))
            ),
            x(ratio(Side::Skip)),
            "—",
        ),
        Row::new(
            NAME,
            format!(
                "1 MiB responses, {}: agent CPU µs per request (no-skip {}); nginx's: none {}, \
                 skip {}, no-skip {}",
                case.name,
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
                "1 MiB responses, {}: data events per request with a payload (no-skip {}; events \
                 in all {}, length only {})",
                case.name,
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
    Ok((figures, rows))
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
