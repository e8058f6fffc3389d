//! `fixed-rate`: nginx at fixed request rates (`--rates`, 10,000 and 1,000
//! req/s by default) for `--rate-seconds` each, from xtask's own open-loop
//! client ([`super::loadgen`]), with a fresh agent per rate exporting over
//! OTLP/gRPC to the receiver. Reported per rate: the agent's CPU as % of
//! one core while the load ran (utime + stime deltas from /proc/PID/stat),
//! also per 10k req/s; its peak and steady RSS (VmRSS sampled every 200 ms;
//! steady = the median of the second half of the samples); the achieved
//! rate; completeness = spans the receiver accepted / requests completed
//! (waiting for the spans to arrive until their count stalls); the agent's
//! drop counters.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    agent,
    procs::{self},
    report::{self, Row, Section, fmt},
    suite::Ctx,
    timed::median,
};
use crate::util::{note, section};

const NAME: &str = "fixed-rate";
/// The rate the targets are stated at.
const TARGET_RATE: u32 = 10_000;

pub fn run(cx: &mut Ctx) -> Result<Section> {
    let length = cx.length(cx.args.rate_seconds);
    let mut runs = Vec::new();
    let mut rows = Vec::new();
    let mut required = Vec::new();
    let mut problems = Vec::new();
    for (i, &rate) in cx.args.rates.iter().enumerate() {
        cx.check_time(&format!("{NAME} {rate} req/s"))?;
        section(&format!(
            "bench: {NAME}, {rate} req/s for {} s with the agent (OTLP)",
            length.as_secs()
        ));
        let (figures, problem) = one_rate(cx, rate, length)?;
        problems.extend(problem);
        let key = format!("/runs/{i}");
        for k in [
            "achieved_rate",
            "agent_cpu_pct_of_core",
            "agent_cpu_pct_per_10k_rps",
            "completeness",
            "agent_rss_peak_kib",
            "agent_rss_steady_kib",
        ] {
            required.push(format!("{key}/{k}"));
        }
        rows.extend(rows_for(&figures, rate));
        runs.push(figures);
    }
    Ok(Section {
        name: NAME,
        figures: json!({
            "seconds_per_rate": length.as_secs(),
            "client": "xtask open-loop keep-alive client (bench/loadgen.rs), latency from the \
                       time each request was due",
            "connections": cx.args.connections,
            "agent": "--pid <nginx>, OTLP/gRPC to the local receiver",
            "runs": runs,
        }),
        rows,
        required,
        problems,
    })
}

fn one_rate(cx: &mut Ctx, rate: u32, length: Duration) -> Result<(Value, Option<String>)> {
    let cmd = agent::traced(cx.bin, cx.nginx_pid, Some(cx.receiver), cx.args);
    let (pid, lines) = agent::start(cx.guard, cmd)?;
    let accepted_before = cx.receiver.spans_accepted()?;
    let cpu_before = procs::cpu_seconds(pid).unwrap_or(0.0);
    let mut rss: Vec<u64> = Vec::new();
    let mut sample = || rss.extend(procs::status_kib(pid, "VmRSS"));
    let load = cx.fixed_rate(rate, length, &mut sample)?;
    // CPU while the load ran; what the agent spends draining afterwards is
    // in `agent_cpu_seconds_total`.
    let cpu_load = procs::cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
    note(load.summary(rate));
    let (waited, accepted, completeness) = cx.wait_spans(accepted_before, load.completed)?;
    let cpu_total = procs::cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
    let peak = procs::status_kib(pid, "VmHWM");
    let exit = agent::stop(cx.guard, pid, &lines)?;
    let cpu_pct = cpu_load / load.seconds.max(1e-9) * 100.0;
    let per_10k = (load.achieved_rate > 0.0).then(|| cpu_pct * 10_000.0 / load.achieved_rate);
    let steady = median(rss[rss.len() / 2..].iter().map(|&k| k as f64).collect()).map(|k| k as u64);
    let peak = peak.or_else(|| rss.iter().copied().max());
    note(format!(
        "agent: CPU {cpu_pct:.1}% of a core ({} per 10k req/s), RSS peak {}, steady {}; spans \
         accepted {accepted} of {} requests ({})",
        fmt(per_10k, |v| format!("{v:.1}%")),
        report::mib(peak),
        report::mib(steady),
        load.completed,
        fmt(completeness, |c| format!("{:.2}%", c * 100.0)),
    ));
    let problem = exit.problem(&format!("{NAME} {rate} req/s")).or_else(|| {
        (load.non_2xx > 0).then(|| format!("{NAME} {rate} req/s: {} non-2xx", load.non_2xx))
    });
    let figures = json!({
        "target_rate": rate,
        "achieved_rate": load.achieved_rate,
        "seconds": load.seconds,
        "requests_scheduled": load.scheduled,
        "requests_completed": load.completed,
        "request_errors": load.errors,
        "non_2xx": load.non_2xx,
        "latency_p50_ms": load.p50.map(|s| s * 1e3),
        "latency_p99_ms": load.p99.map(|s| s * 1e3),
        "agent_cpu_seconds_during_load": cpu_load,
        "agent_cpu_seconds_total": cpu_total,
        "agent_cpu_pct_of_core": cpu_pct,
        "agent_cpu_pct_per_10k_rps": per_10k,
        "agent_rss_peak_kib": peak,
        "agent_rss_steady_kib": steady,
        "agent_rss_samples": rss.len(),
        "spans_accepted": accepted,
        "spans_wait_timed_out": waited.timed_out,
        "completeness": completeness,
        "spans_emitted": exit.counter("spans_emitted"),
        "spans_exported": exit.counter("spans_exported"),
        "drops": Value::Object(exit.drops()),
        "agent_exit": exit.status,
    });
    Ok((figures, problem))
}

fn rows_for(f: &Value, rate: u32) -> Vec<Row> {
    let at_target = rate == TARGET_RATE;
    let num = |k: &str| f[k].as_f64();
    let drops: u64 = f["drops"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let target = |t: &'static str| if at_target { t } else { "—" };
    vec![
        Row::new(
            NAME,
            format!("{rate} req/s: achieved rate"),
            fmt(num("achieved_rate"), |v| format!("{v:.0} req/s")),
            "—",
        ),
        Row::new(
            NAME,
            format!(
                "{rate} req/s: agent CPU per 10k req/s ({} of a core at this rate)",
                fmt(num("agent_cpu_pct_of_core"), |v| format!("{v:.1}%"))
            ),
            fmt(num("agent_cpu_pct_per_10k_rps"), |v| format!("{v:.1}%")),
            "≤ 5% of one core",
        ),
        Row::new(
            NAME,
            format!(
                "{rate} req/s: completeness (spans accepted / requests completed; drops {drops})"
            ),
            fmt(num("completeness"), |c| format!("{:.2}%", c * 100.0)),
            target("100%"),
        ),
        Row::new(
            NAME,
            format!(
                "{rate} req/s: agent RSS steady (peak {})",
                report::mib(f["agent_rss_peak_kib"].as_u64())
            ),
            report::mib(f["agent_rss_steady_kib"].as_u64()),
            target("≤ 40 MB"),
        ),
    ]
}
