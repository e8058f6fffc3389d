//! The Prometheus text exposition format, version 0.0.4: every family with
//! its HELP and TYPE lines and all its samples together. Runs at scrape
//! time only; nothing here touches the hot path.

use std::{fmt::Write, sync::atomic::Ordering::Relaxed};

use wirespan_common::event::{Counter, EventKind};

use super::{Sources, histogram, process::ProcessSample};
use crate::stats::Stats;

/// Names of the ring-buffer event kinds, as the `kind` label gives them.
const EVENT_KINDS: [(EventKind, &str); 8] = [
    (EventKind::Data, "data"),
    (EventKind::Accept, "accept"),
    (EventKind::Connect, "connect"),
    (EventKind::Close, "close"),
    (EventKind::ProcessExit, "process_exit"),
    (EventKind::ProcessExec, "process_exec"),
    (EventKind::RequestIntent, "request_intent"),
    (EventKind::ServerContext, "server_context"),
];

/// One metric family being written.
struct Family {
    name: String,
    help: String,
    kind: &'static str,
    samples: Vec<(String, String)>,
}

/// Families in order of first appearance; samples of one family together.
#[derive(Default)]
struct Families(Vec<Family>);

impl Families {
    fn sample(&mut self, name: &str, help: &str, kind: &'static str, labels: String, v: String) {
        let i = match self.0.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.0.push(Family {
                    name: name.to_string(),
                    help: help.to_string(),
                    kind,
                    samples: Vec::new(),
                });
                self.0.len() - 1
            }
        };
        self.0[i].samples.push((labels, v));
    }

    /// A counter sample; `base` gets the `_total` suffix, which in this
    /// format the TYPE line carries too.
    fn counter(&mut self, base: &str, help: &str, labels: String, v: u64) {
        self.sample(
            &format!("{base}_total"),
            help,
            "counter",
            labels,
            v.to_string(),
        );
    }

    fn write(&self, out: &mut String) {
        for f in &self.0 {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
            for (labels, v) in &f.samples {
                let _ = writeln!(out, "{}{labels} {v}", f.name);
            }
        }
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn label(pairs: &[(&str, &str)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Every `Stats` field: the http1_* ones as `wirespan_parse_errors_total`
/// by reason, the spans_dropped_* ones as `wirespan_spans_dropped_total` by
/// reason, each other one as `wirespan_<field>_total`.
fn stats_families(stats: &Stats, fams: &mut Families) {
    for (field, doc, v) in stats.described() {
        if let Some(reason) = field.strip_prefix("http1_") {
            let labels = label(&[("protocol", "http1"), ("reason", reason)]);
            fams.counter(
                "wirespan_parse_errors",
                "protocol messages the parsers gave up on or could not pair, by protocol and reason",
                labels,
                v,
            );
        } else if let Some(reason) = field.strip_prefix("spans_dropped_") {
            fams.counter(
                "wirespan_spans_dropped",
                "spans produced but not delivered, by reason (see the agent's exit counters)",
                label(&[("reason", reason)]),
                v,
            );
        } else {
            fams.counter(&format!("wirespan_{field}"), doc, String::new(), v);
        }
    }
    for (kind, name) in EVENT_KINDS {
        let v = stats.events_by_kind[kind as usize].load(Relaxed);
        fams.counter(
            "wirespan_events_received",
            "kernel events read from the ring buffer and decoded, by kind",
            label(&[("kind", name)]),
            v,
        );
    }
    fams.sample(
        "wirespan_connections_tracked",
        "connections in the agent's connection table",
        "gauge",
        String::new(),
        stats.conns_tracked.load(Relaxed).to_string(),
    );
}

fn histogram_family(name: &str, help: &str, h: &histogram::Snapshot, out: &mut String) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} histogram");
    for &(le, count) in &h.cumulative {
        let le = if le.is_infinite() {
            "+Inf".to_string()
        } else {
            le.to_string()
        };
        let _ = writeln!(out, "{name}_bucket{} {count}", label(&[("le", &le)]));
    }
    let count = h.cumulative.last().map_or(0, |&(_, c)| c);
    let _ = writeln!(out, "{name}_sum {}", h.sum_seconds);
    let _ = writeln!(out, "{name}_count {count}");
}

/// The whole exposition for one scrape.
pub fn render(src: &Sources) -> String {
    let mut fams = Families::default();
    stats_families(&src.stats, &mut fams);
    for (c, (name, v)) in Counter::ALL.iter().zip(src.kernel.read()) {
        fams.counter(
            &format!("wirespan_kernel_{name}"),
            c.help(),
            String::new(),
            v,
        );
    }
    fams.sample(
        "wirespan_ready",
        "1 once the programs are attached and capture runs, 0 before and during shutdown",
        "gauge",
        String::new(),
        u8::from(src.readiness.is_ready()).to_string(),
    );
    if let Some(p) = ProcessSample::read() {
        fams.sample(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
            String::new(),
            p.cpu_seconds.to_string(),
        );
        fams.sample(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
            String::new(),
            p.resident_bytes.to_string(),
        );
        fams.sample(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            "gauge",
            String::new(),
            p.virtual_bytes.to_string(),
        );
    }
    let mut out = String::with_capacity(8 * 1024);
    fams.write(&mut out);
    histogram_family(
        "wirespan_otlp_export_duration_seconds",
        "duration of OTLP export calls (one batch, retries included)",
        &src.stats.export_latency.snapshot(),
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(stats: &Stats) -> String {
        let mut fams = Families::default();
        stats_families(stats, &mut fams);
        let mut out = String::new();
        fams.write(&mut out);
        out
    }

    #[test]
    fn every_stats_field_is_exposed() {
        let out = exposition(&Stats::default());
        for (field, _) in Stats::default().snapshot() {
            let shown = if let Some(r) = field.strip_prefix("http1_") {
                format!("wirespan_parse_errors_total{{protocol=\"http1\",reason=\"{r}\"}} 0")
            } else if let Some(r) = field.strip_prefix("spans_dropped_") {
                format!("wirespan_spans_dropped_total{{reason=\"{r}\"}} 0")
            } else {
                format!("wirespan_{field}_total 0")
            };
            assert!(
                out.lines().any(|l| l == shown),
                "{field}: no `{shown}` in\n{out}"
            );
        }
    }

    #[test]
    fn families_are_contiguous_with_help_and_type() {
        let stats = Stats::default();
        stats.events_by_kind[EventKind::Close as usize].store(3, Relaxed);
        let out = exposition(&stats);
        assert!(out.contains("wirespan_events_received_total{kind=\"close\"} 3\n"));
        let mut seen = Vec::new();
        let mut current = "";
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap();
                assert!(!seen.contains(&current), "{current} declared twice");
                seen.push(current);
            } else if !line.starts_with('#') {
                assert!(
                    line.starts_with(current),
                    "{line} outside its family {current}"
                );
            }
        }
    }

    #[test]
    fn histogram_lines() {
        let h = histogram::Histogram::default();
        h.observe(std::time::Duration::from_millis(20));
        let mut out = String::new();
        histogram_family("x_seconds", "help", &h.snapshot(), &mut out);
        assert!(out.contains("x_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(out.contains("x_seconds_bucket{le=\"0.01\"} 0\n"));
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(out.contains("x_seconds_count 1\n"));
    }
}
