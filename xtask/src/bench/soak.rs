//! `soak`: does the agent stay flat over a long run with connection churn?
//! A fresh agent (`--pid <nginx>`, OTLP to the receiver, `--metrics-addr`
//! on a free port) traces nginx while xtask's open-loop client sends
//! `--soak-rate` requests/s (5,000) for `--soak-seconds` (600) over
//! `--connections` connections, each closed after `--soak-conn-requests`
//! (20) requests and replaced by a new one. Every `--soak-sample-seconds`
//! (10) it samples the agent's RSS, its `/metrics` (connections tracked,
//! connections opened, spans emitted, exported and dropped) and the entries
//! of each of its kernel hash maps ([`super::bpf_maps`]); once more after
//! the load, when the spans have arrived and every connection has closed:
//! a leak shows as entries or connections left over. Reported: the time
//! series, the RSS drift (mean of the last minute against the first),
//! completeness (spans accepted / requests completed) and the drops.
//! Not part of the default suite: it runs for ten minutes.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    agent, bpf_maps, loadgen,
    procs::{self},
    report::{self, Row, Section, fmt},
    scrape::{self, Metrics},
    suite::Ctx,
};
use crate::util::{note, section};

const NAME: &str = "soak";
/// The RSS drift compares the first and the last this-many seconds.
const WINDOW_SECS: f64 = 60.0;

/// One sample of the agent.
struct Sample {
    /// Seconds since the load started (negative: before it).
    t: f64,
    rss_kib: Option<u64>,
    metrics: Option<Metrics>,
    /// Map name -> entries (and max_entries).
    maps: BTreeMap<String, (u64, u64)>,
}

impl Sample {
    fn take(pid: u32, metrics: SocketAddr, t: f64, errors: &mut Vec<String>) -> Self {
        let metrics = scrape::scrape(metrics)
            .map_err(|e| errors.push(format!("t={t:.0} s: /metrics: {e:#}")))
            .ok();
        let maps = bpf_maps::occupancy(pid)
            .map_err(|e| errors.push(format!("t={t:.0} s: maps: {e:#}")))
            .unwrap_or_default()
            .into_values()
            .map(|m| (m.name, (m.entries, m.max_entries)))
            .collect();
        Self {
            t,
            rss_kib: procs::status_kib(pid, "VmRSS"),
            metrics,
            maps,
        }
    }

    fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.as_ref().map(|m| scrape::get(m, name))
    }

    fn json(&self) -> Value {
        let m = |k: &str| self.metric(k);
        json!({
            "t_secs": self.t,
            "rss_kib": self.rss_kib,
            "connections_tracked": m("wirespan_connections_tracked"),
            "conns_opened": m("wirespan_conns_opened_total"),
            "spans_emitted": m("wirespan_spans_emitted_total"),
            "spans_exported": m("wirespan_spans_exported_total"),
            "spans_dropped": m("wirespan_spans_dropped_total"),
            "map_entries": self.maps.iter().map(|(k, (n, _))| (k.clone(), json!(n)))
                .collect::<serde_json::Map<_, _>>(),
        })
    }

    /// One line of the printed time series.
    fn line(&self) -> String {
        let n = |k: &str| fmt(self.metric(k), |v| format!("{v:.0}"));
        let maps: Vec<String> = self
            .maps
            .iter()
            .filter(|(_, (n, _))| *n > 0)
            .map(|(k, (n, _))| format!("{k}={n}"))
            .collect();
        format!(
            "{:>6.0} s  RSS {:>8}  conns {:>6}  opened {:>8}  exported {:>9}  dropped {:>5}  maps {}",
            self.t,
            fmt(self.rss_kib.map(|k| k as f64), |k| format!(
                "{:.1} MiB",
                k / 1024.0
            )),
            n("wirespan_connections_tracked"),
            n("wirespan_conns_opened_total"),
            n("wirespan_spans_exported_total"),
            n("wirespan_spans_dropped_total"),
            if maps.is_empty() {
                "all empty".to_string()
            } else {
                maps.join(" ")
            }
        )
    }
}

pub fn run(cx: &mut Ctx) -> Result<Section> {
    cx.check_time(NAME)?;
    let length = cx.length(cx.args.soak_seconds);
    // A short run (`--short`) still gets samples while the load runs.
    let every = Duration::from_secs(cx.args.soak_sample_seconds)
        .min((length / 4).max(Duration::from_secs(1)));
    let (rate, per_conn) = (cx.args.soak_rate, cx.args.soak_conn_requests);
    section(&format!(
        "bench: {NAME}, {rate} req/s for {} s, {} connections at a time, each closed after \
         {per_conn} requests; a sample every {} s",
        length.as_secs(),
        cx.args.connections,
        every.as_secs()
    ));
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, procs::free_port()?));
    let mut cmd = agent::traced(cx.bin, cx.nginx_pid, Some(cx.receiver), cx.args);
    cmd.args(["--metrics-addr", &metrics.to_string()]);
    let (pid, lines) = agent::start(cx.guard, cmd)?;
    let accepted_before = cx.receiver.spans_accepted()?;

    let mut errors = Vec::new();
    let mut samples = vec![Sample::take(pid, metrics, 0.0, &mut errors)];
    note(samples[0].line());
    let started = Instant::now();
    let mut next = started + every;
    let mut sample = || {
        if Instant::now() >= next {
            next += every;
            let s = Sample::take(pid, metrics, started.elapsed().as_secs_f64(), &mut errors);
            note(s.line());
            samples.push(s);
        }
    };
    let load = loadgen::fixed_rate(
        cx.port,
        rate,
        cx.args.connections,
        length,
        cx.load_cpu,
        Some(per_conn),
        &mut sample,
    )?;
    note(load.summary(rate));
    let (waited, accepted, completeness) = cx.wait_spans(accepted_before, load.completed)?;
    // After the load: every connection closed, every span delivered.
    let after = Sample::take(pid, metrics, started.elapsed().as_secs_f64(), &mut errors);
    note(format!("after the load: {}", after.line()));
    let exit = agent::stop(cx.guard, pid, &lines)?;
    for e in &errors {
        note(format!("sampling: {e}"));
    }
    section(&format!(
        "bench: {NAME}, the samples (t from the load's start; the last one after the load)"
    ));
    for s in samples.iter().chain([&after]) {
        note(s.line());
    }

    let during = &samples[1..];
    let mean_rss = |keep: &dyn Fn(f64) -> bool| {
        let v: Vec<f64> = during
            .iter()
            .filter(|s| keep(s.t))
            .filter_map(|s| s.rss_kib.map(|k| k as f64))
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let load_secs = load.seconds;
    let first = mean_rss(&|t| t <= WINDOW_SECS);
    let last = mean_rss(&|t| t >= load_secs - WINDOW_SECS);
    let drift = first.zip(last).map(|(a, b)| b - a);
    let drops: u64 = exit.drops().values().filter_map(Value::as_u64).sum();
    note(format!(
        "agent RSS first minute {}, last minute {}: drift {}; completeness {} ({accepted} spans \
         of {} requests); drops {drops}",
        report::mib(first.map(|k| k as u64)),
        report::mib(last.map(|k| k as u64)),
        fmt(drift, |d| format!("{:+.1} MiB", d / 1024.0)),
        fmt(completeness, |c| format!("{:.2}%", c * 100.0)),
        load.completed,
    ));

    let mut problems: Vec<String> = exit.problem(NAME).into_iter().collect();
    if load.non_2xx > 0 {
        problems.push(format!("{NAME}: {} non-2xx", load.non_2xx));
    }
    let mut rows = vec![
        Row::new(
            NAME,
            format!(
                "achieved rate ({} s, {} connections opened, {} errors)",
                length.as_secs(),
                load.conns_opened,
                load.errors
            ),
            format!("{:.0} req/s", load.achieved_rate),
            "5000 req/s",
        ),
        Row::new(
            NAME,
            format!(
                "agent RSS drift, last minute - first minute ({} → {})",
                report::mib(first.map(|k| k as u64)),
                report::mib(last.map(|k| k as u64))
            ),
            fmt(drift, |d| format!("{:+.1} MiB", d / 1024.0)),
            "flat",
        ),
        Row::new(
            NAME,
            format!("completeness (spans accepted / requests completed; drops {drops})"),
            fmt(completeness, |c| format!("{:.2}%", c * 100.0)),
            "100%",
        ),
        Row::new(
            NAME,
            "connections tracked after the load (all closed)",
            fmt(after.metric("wirespan_connections_tracked"), |v| {
                format!("{v:.0}")
            }),
            "0",
        ),
    ];
    for (name, (n, max)) in &after.maps {
        let peak = during
            .iter()
            .filter_map(|s| s.maps.get(name).map(|m| m.0))
            .max()
            .unwrap_or(0);
        rows.push(Row::new(
            NAME,
            format!("kernel map {name}: entries after the load (peak during {peak}, max {max})"),
            n.to_string(),
            "—",
        ));
    }
    let figures = json!({
        "target_rate": rate,
        "achieved_rate": load.achieved_rate,
        "seconds": load.seconds,
        "connections": cx.args.connections,
        "requests_per_connection": per_conn,
        "conns_opened_by_client": load.conns_opened,
        "requests_completed": load.completed,
        "request_errors": load.errors,
        "non_2xx": load.non_2xx,
        "latency_p50_ms": load.p50.map(|s| s * 1e3),
        "latency_p99_ms": load.p99.map(|s| s * 1e3),
        "sample_seconds": every.as_secs(),
        "samples": samples.iter().map(Sample::json).collect::<Vec<_>>(),
        "after_load": after.json(),
        "rss_first_minute_kib": first,
        "rss_last_minute_kib": last,
        "rss_drift_kib": drift,
        "spans_accepted": accepted,
        "spans_wait_timed_out": waited.timed_out,
        "completeness": completeness,
        "spans_emitted": exit.counter("spans_emitted"),
        "spans_exported": exit.counter("spans_exported"),
        "drops": Value::Object(exit.drops()),
        "sampling_errors": errors,
        "agent_exit": exit.status,
    });
    Ok(Section {
        name: NAME,
        figures,
        rows,
        required: ["achieved_rate", "completeness", "rss_drift_kib"]
            .iter()
            .map(|k| format!("/{k}"))
            .collect(),
        problems,
    })
}
