//! `scaling`: the agent's memory against open connections. For each count
//! in `--scaling-connections` (1, 100, 10,000) a fresh agent (`--pid
//! <nginx>`, OTLP to the receiver) traces nginx while xtask opens that many
//! keep-alive connections, sends one request on each, reads every answer,
//! keeps them open and sends a second round. Reported: the agent's RSS once
//! ready and after the two rounds (once its CPU time settled), memory per
//! connection ((RSS_N - RSS_ready) / N), and its `conns_opened`,
//! `conns_evicted` and `requests_lost_evicted` counters. The agent's
//! connection table holds `--max-connections` (16,384 by default), above
//! 10,000, so the default is kept.

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    agent, loadgen,
    procs::{self},
    report::{self, Row, Section, fmt},
    suite::Ctx,
    timed,
};
use crate::util::{note, section};

const NAME: &str = "scaling";
/// The connection count the RSS target is stated at.
const TARGET_CONNS: u32 = 10_000;

pub fn run(cx: &mut Ctx) -> Result<Section> {
    let mut runs = Vec::new();
    let mut rows = Vec::new();
    let mut required = Vec::new();
    let mut problems = Vec::new();
    for (i, &n) in cx.args.scaling_connections.iter().enumerate() {
        cx.check_time(&format!("{NAME} {n} connections"))?;
        section(&format!(
            "bench: {NAME}, {n} keep-alive connections, two rounds"
        ));
        let cmd = agent::traced(cx.bin, cx.nginx_pid, Some(cx.receiver), cx.args);
        let (pid, lines) = agent::start(cx.guard, cmd)?;
        timed::cpu_when_settled(pid, timed::SETTLE_MAX);
        let rss_ready = procs::status_kib(pid, "VmRSS");
        let mut conns = loadgen::open(cx.port, n)?;
        let ok = loadgen::round(&mut conns)? + loadgen::round(&mut conns)?;
        timed::cpu_when_settled(pid, timed::SETTLE_MAX);
        let rss_after = procs::status_kib(pid, "VmRSS");
        let peak = procs::status_kib(pid, "VmHWM");
        // Closed before the agent stops, so the agent sees them close.
        drop(conns);
        let exit = agent::stop(cx.guard, pid, &lines)?;
        problems.extend(exit.problem(&format!("{NAME} {n}")));
        if ok != 2 * u64::from(n) {
            problems.push(format!(
                "{NAME} {n}: {ok} of {} requests answered 2xx",
                2 * n
            ));
        }
        let per_conn = match (rss_ready, rss_after) {
            (Some(a), Some(b)) => Some((b as f64 - a as f64) * 1024.0 / f64::from(n)),
            _ => None,
        };
        note(format!(
            "agent RSS ready {}, after {}, peak {}: {} per connection; conns_opened {}, \
             conns_evicted {}",
            report::mib(rss_ready),
            report::mib(rss_after),
            report::mib(peak),
            fmt(per_conn, |b| format!("{b:.0} bytes")),
            exit.counter("conns_opened"),
            exit.counter("conns_evicted"),
        ));
        let at_target = n == TARGET_CONNS;
        rows.push(Row::new(
            NAME,
            format!(
                "{n} connections: agent RSS (ready {}; {} per connection; conns_opened {}, \
                 conns_evicted {})",
                report::mib(rss_ready),
                fmt(per_conn, |b| format!("{b:.0} bytes")),
                exit.counter("conns_opened"),
                exit.counter("conns_evicted"),
            ),
            report::mib(rss_after),
            if at_target { "≤ 40 MB" } else { "—" },
        ));
        for k in ["rss_ready_kib", "rss_after_kib", "bytes_per_connection"] {
            required.push(format!("/runs/{i}/{k}"));
        }
        runs.push(json!({
            "connections": n,
            "requests_ok": ok,
            "rss_ready_kib": rss_ready,
            "rss_after_kib": rss_after,
            "rss_peak_kib": peak,
            "bytes_per_connection": per_conn,
            "conns_opened": exit.counter("conns_opened"),
            "conns_evicted": exit.counter("conns_evicted"),
            "requests_lost_evicted": exit.counter("requests_lost_evicted"),
            "spans_emitted": exit.counter("spans_emitted"),
            "drops": Value::Object(exit.drops()),
        }));
    }
    Ok(Section {
        name: NAME,
        figures: json!({
            "rounds": 2,
            "agent": "--pid <nginx>, OTLP/gRPC to the local receiver, default --max-connections \
                      (16384)",
            "runs": runs,
        }),
        rows,
        required,
        problems,
    })
}
