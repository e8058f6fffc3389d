//! A ring buffer too small for the traffic: the kernel counts what it
//! loses, the agent keeps running and recovers, and the spans that did come
//! out are consistent with the requests made and the losses counted.
//!
//! What the counters guarantee, and so what is asserted:
//! - every event a kernel program tries to send is either in the ring
//!   buffer (`data_events`, `control_events`) or counted as lost
//!   (`ringbuf_full`); a reservation failure is the only way to lose one;
//! - every event in the ring buffer is read by the agent: once traffic
//!   stops, `events` catches up with `data_events + control_events`;
//! - the burst uses one request per connection (`Connection: close`), so
//!   each event belongs to exactly one request's connection and one lost
//!   event (a request head, a response head, an accept, a close) can cost
//!   at most that one request's span. Hence, for the N requests answered:
//!   spans <= N (nothing invented, no path twice) and N - spans <= the
//!   counted losses (ring buffer full, in-flight map full, payloads
//!   unreadable, undecodable events, requests lost with evicted
//!   connections, spans dropped after they were made).
//!   With keep-alive connections no such bound would hold: a lost body
//!   event can desynchronise the rest of its connection.
//!
//! Needs root, eBPF, nginx and `prometheus-client` in the venv of
//! `WIRESPAN_OTLP_PYTHON`. Run with `--test-threads=1`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use wirespan_tests::agent::span_timeout;
use wirespan_tests::clients;
use wirespan_tests::env;
use wirespan_tests::metrics;
use wirespan_tests::otlp;
use wirespan_tests::servers::Server;
use wirespan_tests::{Agent, SpanKind};

/// One page: the smallest ring buffer the kernel takes.
const RING_BYTES: &str = "4096";
const THREADS: usize = 16;
const PER_THREAD: usize = 100;
/// Rounds of burst at most while waiting for the kernel to report a loss.
const MAX_ROUNDS: usize = 10;
const RECOVERY_REQUESTS: usize = 5;

/// One `Connection: close` request per connection from each of THREADS
/// threads; returns the paths that got a complete HTTP response.
fn burst(addr: SocketAddr, round: usize) -> Vec<String> {
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut answered = Vec::new();
                for i in 0..PER_THREAD {
                    let path = format!("/burst/{round}/{t}/{i}");
                    if request_once(addr, &path) {
                        answered.push(path);
                    }
                }
                answered
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("burst thread"))
        .collect()
}

fn request_once(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut reply = Vec::new();
    s.write_all(req.as_bytes()).is_ok()
        && s.read_to_end(&mut reply).is_ok()
        && reply.starts_with(b"HTTP/1.1 ")
}

#[test]
fn tiny_ring_buffer_counts_losses_and_recovers() {
    if !env::require_ebpf() || !env::require_program("nginx") || !env::require_prometheus_client() {
        return;
    }
    let server = Server::nginx();
    let pid = server.pid();
    let agent = Agent::start(&[
        "--pid",
        &pid.to_string(),
        "--ring-buffer-bytes",
        RING_BYTES,
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    agent.wait_ready();
    let addr = metrics::addr(&agent);

    // Bursts until the kernel reports a full ring buffer.
    let mut sent = Vec::new();
    let mut lost_seen = 0;
    for round in 0..MAX_ROUNDS {
        let started = Instant::now();
        let answered = burst(server.addr(), round);
        let scrape = metrics::scrape(addr);
        lost_seen = scrape.counter("ringbuf_full").unwrap_or(0);
        eprintln!(
            "[test] round {round}: {} of {} requests answered in {:?}; ringbuf_full {lost_seen}",
            answered.len(),
            THREADS * PER_THREAD,
            started.elapsed()
        );
        sent.extend(answered);
        if lost_seen > 0 {
            break;
        }
    }
    assert!(
        lost_seen > 0,
        "{} requests through a {RING_BYTES}-byte ring buffer and the kernel never reported \
         it full",
        sent.len()
    );
    assert_eq!(
        metrics::get(addr, "/healthz").0,
        200,
        "/healthz after the burst"
    );

    // Recovery: sequential requests, each traced.
    let recovery: Vec<String> = (0..RECOVERY_REQUESTS)
        .map(|i| server.url(&format!("/recover/{i}")))
        .collect();
    for url in &recovery {
        let run = clients::curl(&[url]);
        assert!(run.status.success(), "curl {url}: {}", run.stderr);
    }
    let is_recovery = |s: &wirespan_tests::Span| {
        s.kind == SpanKind::Server && s.path().is_some_and(|p| p.starts_with("/recover/"))
    };
    let recovered = agent.wait_for_spans(is_recovery, RECOVERY_REQUESTS, span_timeout());

    // Every event that made it into the ring buffer gets read.
    let (scrape, drained) = metrics::scrape_until(addr, span_timeout(), |s| {
        let (submitted, read) = s.events_submitted_and_read();
        submitted == read
    });
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    let counters = stopped.counters.clone().unwrap_or_default();
    let c = |n: &str| otlp::counter(&counters, n);

    let mut problems = Vec::new();
    let recovered_paths: BTreeSet<&str> = recovered.iter().filter_map(|s| s.path()).collect();
    if recovered_paths.len() != RECOVERY_REQUESTS {
        problems.push(format!(
            "after the burst, {} of {RECOVERY_REQUESTS} sequential requests were traced: {:?}",
            recovered_paths.len(),
            recovered_paths
        ));
    }
    if !drained {
        let (submitted, read) = scrape.events_submitted_and_read();
        problems.push(format!(
            "the kernel submitted {submitted} events but the agent read {read} (never caught up)"
        ));
    }
    if c("ringbuf_full") == 0 {
        problems.push("exit counter ringbuf_full is 0".into());
    }

    let sent_set: BTreeSet<&str> = sent.iter().map(String::as_str).collect();
    let burst_spans = stopped.spans_where(|s| {
        s.kind == SpanKind::Server && s.path().is_some_and(|p| p.starts_with("/burst/"))
    });
    let mut seen = BTreeSet::new();
    for s in &burst_spans {
        let p = s.path().unwrap_or_default();
        if !sent_set.contains(p) {
            problems.push(format!("span for {p}, which was not answered"));
        }
        if !seen.insert(p) {
            problems.push(format!("two spans for {p}"));
        }
    }
    let n = sent.len() as u64;
    let spans = burst_spans.len() as u64;
    let losses = c("ringbuf_full")
        + c("inflight_full")
        + c("payload_read_failed")
        + c("decode_errors")
        + c("requests_lost_evicted")
        + otlp::spans_dropped(&counters);
    if spans > n {
        problems.push(format!("{spans} spans for {n} requests"));
    }
    if n.saturating_sub(spans) > losses {
        problems.push(format!(
            "{n} requests, {spans} spans: {} missing but only {losses} losses counted",
            n - spans
        ));
    }
    eprintln!(
        "[test] {n} requests answered, {spans} spans, {} missing; counted losses {losses} \
         (ringbuf_full {}), events read {}",
        n.saturating_sub(spans),
        c("ringbuf_full"),
        c("events")
    );
    assert!(
        problems.is_empty(),
        "{}\nexit counters: {}",
        problems.join("\n"),
        Value::Object(counters)
    );
}
