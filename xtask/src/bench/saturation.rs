//! `saturation`: nginx at full speed under wrk (keep-alive, `--latency`),
//! runs alternating without and with the agent (exporting over OTLP/gRPC
//! to the receiver), `--runs` times each, so drift on a shared machine hits
//! both sides alike. Reported: requests/s and wrk's p50/p99 latency, each
//! as agent/none of the medians, and per pair.

use serde_json::{Value, json};

use super::{
    agent,
    report::{Row, Section, fmt},
    suite::Ctx,
    timed::{self, Latency, Wrk, median},
};
use crate::util::{note, section};

const NAME: &str = "saturation";
/// A first wrk run whose figures are thrown away (nginx and the machine settle).
const WARMUP_SECS: u64 = 2;

struct Run {
    index: u32,
    agent: bool,
    rps: f64,
    requests: u64,
    latency: Latency,
    nginx_cpu: f64,
    exit: Option<agent::Exit>,
    agent_cpu: Option<f64>,
    peak_rss_kib: Option<u64>,
}

pub fn run(cx: &mut Ctx) -> Result<Section, anyhow::Error> {
    let runs = if cx.args.short { 1 } else { cx.args.runs };
    let length = cx.length(cx.args.seconds);
    let cpus = cx.load_cpu.map(|c| c.to_string());
    let shape = Wrk {
        threads: cx.args.threads,
        connections: cx.args.connections,
        cpus: cpus.as_deref(),
        cgroup: None,
    };
    let url = cx.url();
    let (warm, _) = timed::wrk_for(
        cx.guard,
        cx.nginx_pid,
        &url,
        &shape,
        std::time::Duration::from_secs(WARMUP_SECS),
    )?;
    note(format!(
        "warm-up: {} requests, {:.0} req/s (not reported)",
        warm.requests, warm.rps
    ));

    let mut all: Vec<Run> = Vec::new();
    let mut problems = Vec::new();
    for index in 1..=runs {
        for with_agent in [false, true] {
            cx.check_time(&format!("{NAME} run {index}"))?;
            section(&format!(
                "bench: {NAME} run {index}/{runs}, {} s, {}",
                length.as_secs(),
                if with_agent {
                    "agent (OTLP)"
                } else {
                    "no agent"
                }
            ));
            let started = if with_agent {
                let cmd = agent::traced(cx.bin, cx.nginx_pid, Some(cx.receiver), cx.args);
                Some(agent::start(cx.guard, cmd)?)
            } else {
                None
            };
            let cpu_before = started
                .as_ref()
                .and_then(|(pid, _)| super::procs::cpu_seconds(*pid));
            let (wrk, latency) = timed::wrk_for(cx.guard, cx.nginx_pid, &url, &shape, length)?;
            let (mut exit, mut agent_cpu, mut peak) = (None, None, None);
            if let Some((pid, lines)) = started {
                let cpu = timed::cpu_when_settled(pid, timed::SETTLE_MAX);
                agent_cpu = cpu_before.map(|b| cpu - b);
                peak = super::procs::status_kib(pid, "VmHWM");
                let e = agent::stop(cx.guard, pid, &lines)?;
                problems.extend(e.problem(&format!("{NAME} run {index}")));
                exit = Some(e);
            }
            if wrk.non_2xx > 0 {
                problems.push(format!(
                    "{NAME} run {index}: {} non-2xx responses",
                    wrk.non_2xx
                ));
            }
            note(format!(
                "{} requests, {:.0} req/s, {}",
                wrk.requests,
                wrk.rps,
                latency.text()
            ));
            all.push(Run {
                index,
                agent: with_agent,
                rps: wrk.rps,
                requests: wrk.requests,
                latency,
                nginx_cpu: wrk.nginx_cpu,
                exit,
                agent_cpu,
                peak_rss_kib: peak,
            });
        }
    }

    let med = |agent: bool, f: &dyn Fn(&Run) -> Option<f64>| {
        median(
            all.iter()
                .filter(|r| r.agent == agent)
                .filter_map(f)
                .collect(),
        )
    };
    let ratio = |f: &dyn Fn(&Run) -> Option<f64>| Some(med(true, f)? / med(false, f)?);
    let throughput = ratio(&|r| Some(r.rps));
    let p50_ms = |r: &Run| r.latency.p50_ms();
    let p99_ms = |r: &Run| r.latency.p99_ms();
    let p50 = ratio(&p50_ms);
    let p99 = ratio(&p99_ms);
    let pairs: Vec<f64> = all
        .iter()
        .filter(|a| a.agent)
        .filter_map(|a| {
            let b = all.iter().find(|b| !b.agent && b.index == a.index)?;
            (b.rps > 0.0).then(|| a.rps / b.rps)
        })
        .collect();
    let figures = json!({
        "seconds_per_run": length.as_secs(),
        "runs_per_side": runs,
        "order": "alternating, no agent first",
        "wrk_threads": cx.args.threads,
        "wrk_connections": cx.args.connections,
        "warmup_requests_per_sec": warm.rps,
        "agent": "--pid <nginx>, OTLP/gRPC to the local receiver",
        "none_requests_per_sec_median": med(false, &|r| Some(r.rps)),
        "agent_requests_per_sec_median": med(true, &|r| Some(r.rps)),
        "throughput_ratio": throughput,
        "pair_throughput_ratios": pairs,
        "latency_p50_ratio": p50,
        "latency_p99_ratio": p99,
        "none_latency_p50_ms_median": med(false, &p50_ms),
        "none_latency_p99_ms_median": med(false, &p99_ms),
        "agent_latency_p50_ms_median": med(true, &p50_ms),
        "agent_latency_p99_ms_median": med(true, &p99_ms),
        "runs": all.iter().map(run_json).collect::<Vec<_>>(),
    });
    let x = |v: Option<f64>| fmt(v, |v| format!("{v:.3}"));
    // One latency percentile: agent/none of the medians, the medians beside.
    let latency_row = |which: &str, ms: &dyn Fn(&Run) -> Option<f64>, ratio: Option<f64>| {
        let median_ms = |agent| fmt(med(agent, ms), |v| format!("{v:.3} ms"));
        Row::new(
            NAME,
            format!(
                "{which} latency agent/none ({} / {})",
                median_ms(true),
                median_ms(false)
            ),
            x(ratio),
            "—",
        )
    };
    let rows = vec![
        Row::new(
            NAME,
            format!(
                "throughput agent/none (median req/s: {} / {}; per pair {})",
                fmt(med(true, &|r| Some(r.rps)), |v| format!("{v:.0}")),
                fmt(med(false, &|r| Some(r.rps)), |v| format!("{v:.0}")),
                pairs
                    .iter()
                    .map(|r| format!("{r:.3}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            x(throughput),
            "≥ 0.95 (goal 0.98)",
        ),
        latency_row("p50", &p50_ms, p50),
        latency_row("p99", &p99_ms, p99),
    ];
    Ok(Section {
        name: NAME,
        figures,
        rows,
        required: [
            "/throughput_ratio",
            "/latency_p50_ratio",
            "/latency_p99_ratio",
            "/none_requests_per_sec_median",
            "/agent_requests_per_sec_median",
        ]
        .map(String::from)
        .to_vec(),
        problems,
    })
}

fn run_json(r: &Run) -> Value {
    json!({
        "run": r.index,
        "side": if r.agent { "agent" } else { "none" },
        "requests": r.requests,
        "requests_per_sec": r.rps,
        "latency_p50_ms": r.latency.p50_ms(),
        "latency_p99_ms": r.latency.p99_ms(),
        "nginx_cpu_seconds": r.nginx_cpu,
        "agent_cpu_seconds": r.agent_cpu,
        "agent_peak_rss_kib": r.peak_rss_kib,
        "spans_emitted": r.exit.as_ref().map(|e| e.counter("spans_emitted")),
        "spans_exported": r.exit.as_ref().map(|e| e.counter("spans_exported")),
        "drops": r.exit.as_ref().map(|e| Value::Object(e.drops())),
    })
}
