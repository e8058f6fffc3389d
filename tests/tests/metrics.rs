//! `--metrics-addr`: `/metrics` in the Prometheus text format, parsed by
//! PyPI's `prometheus_client` (a parser we did not write), agrees with the
//! traffic the agent saw and with its exit counters; `/healthz` and
//! `/readyz` answer 200 once ready; other paths 404, other methods 405.
//!
//! Needs root, eBPF and `prometheus-client` in the venv of
//! `WIRESPAN_OTLP_PYTHON` (`cargo xtask setup`). Run with `--test-threads=1`.

use serde_json::Value;
use wirespan_tests::agent::span_timeout;
use wirespan_tests::clients;
use wirespan_tests::env;
use wirespan_tests::metrics::{self, KERNEL_COUNTERS};
use wirespan_tests::servers::Server;
use wirespan_tests::{Agent, SpanKind};

const KINDS: [&str; 8] = [
    "data",
    "accept",
    "connect",
    "close",
    "process_exit",
    "process_exec",
    "request_intent",
    "server_context",
];

#[test]
fn metrics_match_traffic_and_exit_counters() {
    if !env::require_ebpf() || !env::require_prometheus_client() {
        return;
    }
    const REQUESTS: u64 = 20;
    let server = Server::python();
    let pid = server.pid();
    let agent = Agent::start(&["--pid", &pid.to_string(), "--metrics-addr", "127.0.0.1:0"]);
    agent.wait_ready();
    let addr = metrics::addr(&agent);

    assert_eq!(metrics::get(addr, "/healthz").0, 200, "/healthz");
    assert_eq!(
        metrics::get(addr, "/readyz"),
        (200, "ready\n".into()),
        "/readyz"
    );
    assert_eq!(metrics::get(addr, "/nope").0, 404, "unknown path");
    assert_eq!(metrics::request(addr, "POST", "/metrics").0, 405, "POST");

    clients::curl_numbered(&server, "/status/200/metrics-", REQUESTS);
    let is_ours = |s: &wirespan_tests::Span| {
        s.kind == SpanKind::Server
            && s.path()
                .is_some_and(|p| p.starts_with("/status/200/metrics-"))
    };
    let spans = agent.wait_for_spans(is_ours, REQUESTS as usize, span_timeout());
    assert_eq!(spans.len() as u64, REQUESTS, "one SERVER span per request");

    // The counters converge: every span printed, every event the kernel
    // submitted read by the agent, and the per-kind counts adding up.
    let (scrape, converged) = metrics::scrape_until(addr, span_timeout(), |s| {
        let (submitted, read) = s.events_submitted_and_read();
        let by_kind = s.sum("wirespan_events_received_total");
        s.counter("spans_printed") == Some(REQUESTS)
            && submitted == read
            && by_kind + s.counter("decode_errors").unwrap_or(0) == read
    });
    assert!(
        converged,
        "the scrape never showed {REQUESTS} spans printed, events read == \
         data_events + control_events, and the per-kind counts summing to events:\n{}",
        scrape.text
    );
    assert_eq!(scrape.counter("spans_emitted"), Some(REQUESTS));
    assert_eq!(scrape.count("wirespan_ready", &[]), 1);
    for kind in KINDS {
        assert!(
            scrape
                .value("wirespan_events_received_total", &[("kind", kind)])
                .is_some(),
            "no events counter for kind {kind}"
        );
    }
    let data = scrape.count("wirespan_events_received_total", &[("kind", "data")]);
    assert!(
        data >= 2 * REQUESTS,
        "{data} data events for {REQUESTS} requests and responses"
    );
    assert!(scrape.count("process_resident_memory_bytes", &[]) > 1 << 20);
    assert!(
        scrape
            .value("process_cpu_seconds_total", &[])
            .unwrap_or(0.0)
            > 0.0
    );
    // The parser gives `unknown` to samples whose TYPE line does not fit.
    for (family, want) in [
        ("wirespan_events", "counter"),
        ("wirespan_events_received", "counter"),
        ("wirespan_spans_dropped", "counter"),
        ("wirespan_parse_errors", "counter"),
        ("wirespan_kernel_ringbuf_full", "counter"),
        ("wirespan_connections_tracked", "gauge"),
        ("wirespan_otlp_export_duration_seconds", "histogram"),
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(scrape.type_of(family), Some(want), "type of {family}");
    }
    let untyped: Vec<&String> = scrape
        .families
        .iter()
        .filter(|(_, t)| t == "unknown")
        .map(|(n, _)| n)
        .collect();
    assert!(
        untyped.is_empty(),
        "families without a fitting TYPE: {untyped:?}"
    );

    // While the agent shuts down, /readyz goes from 200 to 503 (once the
    // signal is handled) and never back; then nothing listens. How long the
    // 503 phase lasts depends on how fast the kernel detaches the probes,
    // so only the order is asserted.
    let poller = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while let Ok(reply) = metrics::try_request(addr, "GET", "/readyz") {
            let status = reply.split(' ').nth(1).unwrap_or("?").to_string();
            if seen.last() != Some(&status) {
                seen.push(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        seen
    });
    let stopped = agent.stop();
    let phases = poller.join().expect("readyz poller");
    eprintln!("[test] /readyz during shutdown: {phases:?}, then connection refused");
    assert!(
        matches!(
            phases.iter().map(String::as_str).collect::<Vec<_>>()[..],
            [] | ["200"] | ["503"] | ["200", "503"]
        ),
        "/readyz during shutdown went {phases:?}; want 200 then 503, never back"
    );
    stopped.assert_clean_exit();
    let counters = stopped.counters.clone().unwrap_or_default();
    let mut problems = Vec::new();
    for (name, v) in &counters {
        let fin = v.as_u64().unwrap_or(0);
        let Some(scraped) = scrape.counter(name) else {
            if metrics::sample_of_counter(name).is_some() {
                problems.push(format!("exit counter {name} is not in /metrics"));
            }
            continue;
        };
        // Spans cannot change without requests; events can (the server
        // closing an idle connection after the scrape), but never go back.
        let exact = name.starts_with("spans_") || name.starts_with("http1_");
        if (exact && scraped != fin) || scraped > fin {
            problems.push(format!(
                "{name}: scraped {scraped}, exit line {fin} (want {})",
                if exact { "equal" } else { "scraped <= exit" }
            ));
        }
    }
    for k in KERNEL_COUNTERS {
        if !counters.contains_key(k) {
            problems.push(format!("exit line lacks kernel counter {k}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\nexit counters: {}\nscrape:\n{}",
        problems.join("\n"),
        Value::Object(counters),
        scrape.text
    );
}
