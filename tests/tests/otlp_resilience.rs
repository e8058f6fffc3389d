//! OTLP export when the collector is not well: down at start, refusing with
//! 503 / UNAVAILABLE and a retry delay, hanging. In every case each span the
//! agent produced is either accepted by the collector or counted as dropped
//! (`spans_emitted == spans_exported + spans_dropped_*`), memory stays
//! bounded, and the agent keeps tracing and exits on SIGINT in time.
//!
//! The collector is `tests/otlp/receiver.py` (PyPI opentelemetry-proto +
//! grpcio). Needs root, eBPF and the venv from `cargo xtask setup`. Run with
//! `--test-threads=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use wirespan_tests::agent::span_timeout;
use wirespan_tests::clients;
use wirespan_tests::env;
use wirespan_tests::metrics;
use wirespan_tests::otlp::{self, Options, Receiver, Records};
use wirespan_tests::servers::{Server, free_port};
use wirespan_tests::{Agent, Stopped};

/// Peak RSS (VmHWM) the agent may reach in the down-at-start test, in KiB.
/// Measured on the 6.18 development VM: see tests/README.md ("OTLP export
/// tests"). The bound is fixed, not relative: a queue that grew with the
/// spans produced while the collector was down would cross it long before
/// an hour of downtime.
const RSS_BOUND_KIB: u64 = 150 * 1024;

/// SIGINT to exit, at most, with an export hanging: the agent's default
/// shutdown deadline (5 s) plus its join grace (1 s) plus slack for
/// detaching the probes and a loaded machine (measured: 6.0 to 7.3 s).
const SHUTDOWN_BOUND: Duration = Duration::from_secs(12);

/// Extra time on top of [`span_timeout`] when the exporter is in backoff
/// (its backoff is capped at 5 s).
const BACKOFF_SLACK: Duration = Duration::from_secs(15);

fn counters_of(stopped: &Stopped) -> Map<String, Value> {
    stopped.counters.clone().unwrap_or_default()
}

/// `spans_emitted == spans_exported + dropped (+ rejected by the collector)`,
/// and spans_exported == what the receiver accepted.
fn check_accounting(
    problems: &mut Vec<String>,
    counters: &Map<String, Value>,
    accepted: usize,
    produced: u64,
) {
    let emitted = otlp::counter(counters, "spans_emitted");
    let exported = otlp::counter(counters, "spans_exported");
    let dropped = otlp::spans_dropped(counters);
    let rejected = otlp::counter(counters, "spans_rejected_by_collector");
    if emitted != produced {
        problems.push(format!(
            "spans_emitted {emitted}, want {produced} (one SERVER span per request made)"
        ));
    }
    if exported + dropped + rejected != emitted {
        problems.push(format!(
            "spans_exported {exported} + dropped {dropped} + rejected {rejected} != \
             spans_emitted {emitted}: spans lost without a count"
        ));
    }
    if exported != accepted as u64 {
        problems.push(format!(
            "spans_exported {exported}, but the receiver accepted {accepted}"
        ));
    }
}

/// Stderr lines at level WARN after the readiness line.
fn warnings_after_ready(stopped: &Stopped) -> Vec<String> {
    stopped
        .stderr
        .iter()
        .skip_while(|l| !l.contains("wirespan: ready"))
        .filter(|l| {
            l.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|t| t == "WARN")
        })
        .cloned()
        .collect()
}

/// Every accepted span id once, no duplicates.
fn check_no_duplicates(problems: &mut Vec<String>, records: &Records, pid: u32) {
    let mut seen = BTreeSet::new();
    for r in records.spans_of(pid) {
        if !seen.insert(r.span.span_id.clone()) {
            problems.push(format!(
                "span id {} accepted twice (a retry of a batch that had succeeded?)",
                r.span.span_id
            ));
        }
    }
}

fn fail_with(what: &str, problems: &[String], records: &Records, stopped: &Stopped) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n- {}\nexport calls:\n{}\ncounters: {}\nagent stderr:\n{}",
        problems.len(),
        problems.join("\n- "),
        records.describe_exports(),
        Value::Object(counters_of(stopped)),
        stopped.stderr.join("\n")
    );
}

/// Collector down at start, then up.
///
/// With `OTEL_BSP_MAX_QUEUE_SIZE=50`, batches of 10 and two batches in
/// flight at once, the agent traces 120 requests while nothing listens on
/// the collector's port, then the receiver starts on that port. What
/// arrives is what the queue held plus the batches being retried and the
/// one waiting for a slot: between 50 and 80 spans. The rest is counted as
/// dropped, and peak RSS stays under [`RSS_BOUND_KIB`].
#[test]
fn collector_down_at_start_then_up_delivers_queue_and_counts_the_rest() {
    if !env::require_ebpf() || !env::require_otlp_receiver() {
        return;
    }
    const QUEUE: u64 = 50;
    const BATCH: u64 = 10;
    const REQUESTS: u64 = 120;
    const IN_FLIGHT: u64 = 2;
    // Out of the queue: the batches in flight, and the one that waits for
    // a slot.
    const HELD: u64 = (IN_FLIGHT + 1) * BATCH;

    let server = Server::python();
    let pid = server.pid();
    let grpc_port = free_port();
    let http_port = free_port();
    let mut envs = otlp::exporter_env(&format!("http://127.0.0.1:{grpc_port}"), "grpc");
    envs.extend([
        ("OTEL_BSP_MAX_QUEUE_SIZE".to_string(), QUEUE.to_string()),
        (
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE".to_string(),
            BATCH.to_string(),
        ),
        (
            "OTEL_BSP_MAX_CONCURRENT_EXPORTS".to_string(),
            IN_FLIGHT.to_string(),
        ),
    ]);
    let agent = Agent::start_with_env(&["--pid", &pid.to_string()], &envs);
    agent.wait_ready();
    let rss_ready = agent.status_kib("VmRSS").unwrap_or(0);

    // One curl process, one connection, REQUESTS requests: all traced while
    // the collector is down.
    let urls: Vec<String> = (0..REQUESTS)
        .map(|i| server.url(&format!("/status/200/down-{i}")))
        .collect();
    let url_refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let run = clients::curl(&url_refs);
    assert!(
        run.status.success() && run.transfers.len() == REQUESTS as usize,
        "curl: {} with {} transfers: {}",
        run.status,
        run.transfers.len(),
        run.stderr
    );
    let rss_down = agent.status_kib("VmRSS").unwrap_or(0);

    // Spans reach the exporter within milliseconds of each response; the
    // receiver takes longer than that to start (Python + grpcio imports),
    // so everything above was produced while the collector was down.
    let receiver = Receiver::start(&Options {
        grpc_port,
        http_port,
        ..Options::default()
    });
    let started = Instant::now();
    let (records, arrived) = receiver.wait_until(span_timeout() + BACKOFF_SLACK, |r| {
        r.spans_of(pid).len() as u64 >= QUEUE
    });
    eprintln!(
        "[test] {} spans arrived {:?} after the receiver started (arrived={arrived})",
        records.spans_of(pid).len(),
        started.elapsed()
    );
    let peak_kib = agent.status_kib("VmHWM").unwrap_or(0);
    let rss_end = agent.status_kib("VmRSS").unwrap_or(0);
    let stopped = agent.stop();
    let records = receiver.records();
    eprintln!(
        "[test] agent RSS: {rss_ready} KiB at ready, {rss_down} KiB after {REQUESTS} spans \
         with the collector down, {rss_end} KiB at the end; peak (VmHWM) {peak_kib} KiB; \
         bound {RSS_BOUND_KIB} KiB"
    );

    stopped.assert_clean_exit();
    let counters = counters_of(&stopped);
    let accepted = records.spans_of(pid).len();
    let mut problems = Vec::new();
    check_accounting(&mut problems, &counters, accepted, REQUESTS);
    check_no_duplicates(&mut problems, &records, pid);
    if !(QUEUE..=QUEUE + HELD).contains(&(accepted as u64)) {
        problems.push(format!(
            "the receiver accepted {accepted} spans; want the queue's {QUEUE} plus at most \
             the batches in flight or waiting for a slot ({HELD}): [{QUEUE}, {}]",
            QUEUE + HELD
        ));
    }
    let queue_full = otlp::counter(&counters, "spans_dropped_queue_full");
    if queue_full < REQUESTS - QUEUE - HELD {
        problems.push(format!(
            "spans_dropped_queue_full {queue_full}, want at least {} ({REQUESTS} produced, \
             queue {QUEUE}, held out of it {HELD})",
            REQUESTS - QUEUE - HELD
        ));
    }
    if peak_kib == 0 {
        problems.push("could not read the agent's VmHWM".into());
    } else if peak_kib > RSS_BOUND_KIB {
        problems.push(format!(
            "agent peak RSS {peak_kib} KiB exceeds the bound {RSS_BOUND_KIB} KiB"
        ));
    }
    // One warning when export starts failing, one when it recovers, maybe
    // one about the full queue: never one per span or per attempt.
    let warnings = warnings_after_ready(&stopped);
    if warnings.len() > 4 {
        problems.push(format!(
            "{} WARN lines after ready (want a few, not one per span or attempt):\n{}",
            warnings.len(),
            warnings.join("\n")
        ));
    }
    fail_with("collector down at start", &problems, &records, &stopped);
}

/// The collector refuses the first two calls with a retry delay of 1 s,
/// then accepts. Nothing is lost (20 spans, far below the queue limit),
/// nothing is duplicated, and each retry of a refused batch waits at least
/// the delay the collector asked for.
fn refused_twice_then_accepted(protocol: &str) {
    if !env::require_ebpf() || !env::require_otlp_receiver() {
        return;
    }
    const REQUESTS: usize = 20;
    const RETRY_AFTER_NS: u64 = 1_000_000_000;
    // Clock reading on both sides is by the same receiver; 100 ms covers
    // its own scheduling.
    const SLACK_NS: u64 = 100_000_000;

    let receiver = Receiver::start(&Options {
        fail: 2,
        retry_after: Some(1),
        ..Options::default()
    });
    let server = Server::python();
    let pid = server.pid();
    let endpoint = match protocol {
        "grpc" => receiver.grpc_endpoint(),
        _ => receiver.http_endpoint(),
    };
    let agent = Agent::start_with_env(
        &["--pid", &pid.to_string()],
        &otlp::exporter_env(&endpoint, protocol),
    );
    agent.wait_ready();

    let paths: Vec<String> = (0..REQUESTS)
        .map(|i| format!("/status/200/retry-{i}"))
        .collect();
    for p in &paths {
        assert_eq!(clients::curl(&[&server.url(p)]).only().http_code, 200);
    }
    receiver.wait_for_spans(
        |r| r.span.pid() == Some(pid),
        REQUESTS,
        span_timeout() + BACKOFF_SLACK,
    );
    let stopped = agent.stop();
    let records = receiver.records();
    stopped.assert_clean_exit();
    let counters = counters_of(&stopped);

    let mut problems = Vec::new();
    check_accounting(
        &mut problems,
        &counters,
        records.spans_of(pid).len(),
        REQUESTS as u64,
    );
    check_no_duplicates(&mut problems, &records, pid);
    let accepted_paths: BTreeMap<String, usize> =
        records
            .spans_of(pid)
            .iter()
            .fold(BTreeMap::new(), |mut m, r| {
                *m.entry(r.span.path().unwrap_or("<none>").to_string())
                    .or_default() += 1;
                m
            });
    for p in &paths {
        if accepted_paths.get(p) != Some(&1) {
            problems.push(format!(
                "{p}: accepted {} time(s), want exactly once",
                accepted_paths.get(p).copied().unwrap_or(0)
            ));
        }
    }
    let dropped = otlp::spans_dropped(&counters);
    if dropped != 0 {
        problems.push(format!(
            "{dropped} spans dropped; want none within the queue limit"
        ));
    }
    let rejected = records.calls("rejected");
    if rejected.len() != 2 {
        problems.push(format!("{} refused calls, want 2", rejected.len()));
    }
    // Each refused batch comes back no sooner than the collector asked.
    for r in &rejected {
        let ids: BTreeSet<&String> = r.span_ids.iter().collect();
        let next = records.exports.iter().filter(|e| e.seq > r.seq).find(|e| {
            e.span_ids.iter().any(|id| ids.contains(id))
                || records
                    .spans
                    .iter()
                    .any(|s| s.seq == e.seq && ids.contains(&s.span.span_id))
        });
        match next {
            None => problems.push(format!(
                "the spans of refused call #{} never came back",
                r.seq
            )),
            Some(n) if n.received_ns < r.received_ns + RETRY_AFTER_NS - SLACK_NS => {
                problems.push(format!(
                    "call #{} retried the batch of refused call #{} after {} ms; the \
                     collector asked for {} ms (Retry-After / RetryInfo)",
                    n.seq,
                    r.seq,
                    (n.received_ns - r.received_ns) / 1_000_000,
                    RETRY_AFTER_NS / 1_000_000
                ))
            }
            Some(_) => {}
        }
    }
    let retries = otlp::retry_counters(&counters);
    if !retries.iter().any(|(_, n)| *n > 0) {
        problems.push(format!(
            "no retry counter above 0 after two refused calls: {retries:?}"
        ));
    }
    fail_with(
        &format!("{protocol}: refused twice, then accepted"),
        &problems,
        &records,
        &stopped,
    );
}

#[test]
fn http_503_with_retry_after_then_200_loses_nothing() {
    refused_twice_then_accepted("http/protobuf");
}

#[test]
fn grpc_unavailable_with_retry_info_then_ok_loses_nothing() {
    refused_twice_then_accepted("grpc");
}

/// The collector accepts calls and never answers. With
/// `OTEL_EXPORTER_OTLP_TIMEOUT=1000` each attempt is abandoned after about
/// a second (the receiver sees the client give up), the agent keeps
/// tracing (a second round of requests is counted), and then either
/// - `release`: the collector recovers, and the second round arrives; or
/// - not: SIGINT while the export hangs, and the agent exits within
///   [`SHUTDOWN_BOUND`] with every span counted as dropped.
fn hanging_collector(protocol: &str, release: bool) {
    if !env::require_ebpf() || !env::require_otlp_receiver() {
        return;
    }
    const ROUND: usize = 10;
    const TIMEOUT_MS: u64 = 1000;

    let receiver = Receiver::start(&Options {
        hang: true,
        ..Options::default()
    });
    let server = Server::python();
    let pid = server.pid();
    let endpoint = match protocol {
        "grpc" => receiver.grpc_endpoint(),
        _ => receiver.http_endpoint(),
    };
    let mut envs = otlp::exporter_env(&endpoint, protocol);
    envs.extend([
        (
            "OTEL_EXPORTER_OTLP_TIMEOUT".to_string(),
            TIMEOUT_MS.to_string(),
        ),
        // A batch is given up after 4 s of attempts.
        ("OTEL_BSP_EXPORT_TIMEOUT".to_string(), "4000".to_string()),
    ]);
    let agent = Agent::start_with_env(&["--pid", &pid.to_string()], &envs);
    agent.wait_ready();

    let round = |name: &str| -> Vec<String> {
        (0..ROUND)
            .map(|i| {
                let path = format!("/status/200/hang-{name}-{i}");
                let run = clients::curl(&[&server.url(&path)]);
                assert_eq!(
                    run.only().http_code,
                    200,
                    "{path}: the traced server must not notice a hanging collector"
                );
                path
            })
            .collect()
    };
    let _first = round("first");
    // Two attempts that the client abandoned: the timeout works, repeatedly.
    let (records, timed_out) = receiver.wait_until(span_timeout(), |r| {
        r.hang_ends
            .iter()
            .filter(|h| h.how == "client_gone")
            .count()
            >= 2
    });
    let mut problems = Vec::new();
    if !timed_out {
        problems.push(format!(
            "fewer than 2 hung export calls were abandoned by the agent within {:?} \
             (OTEL_EXPORTER_OTLP_TIMEOUT={TIMEOUT_MS}); hang ends: {:?}",
            span_timeout(),
            records.hang_ends
        ));
    }
    for h in records.hang_ends.iter().filter(|h| h.how == "client_gone") {
        let ms = h.hung_ns / 1_000_000;
        if !(TIMEOUT_MS * 8 / 10..=TIMEOUT_MS * 3).contains(&ms) {
            problems.push(format!(
                "hung call #{} was abandoned after {ms} ms; want about {TIMEOUT_MS} ms \
                 (OTEL_EXPORTER_OTLP_TIMEOUT)",
                h.seq
            ));
        }
    }

    // Tracing goes on while exports hang.
    let second = round("second");
    let stopped = if release {
        receiver.control(&json!({"hang": false}));
        receiver.wait_for_spans(
            |r| r.span.pid() == Some(pid) && second.iter().any(|p| r.span.path() == Some(p)),
            ROUND,
            span_timeout() + BACKOFF_SLACK,
        );
        agent.stop()
    } else {
        let sigint = Instant::now();
        let stopped = agent.stop();
        let took = sigint.elapsed();
        eprintln!("[test] agent exited {took:?} after SIGINT with exports hanging");
        if took > SHUTDOWN_BOUND {
            problems.push(format!(
                "the agent took {took:?} to exit after SIGINT with a hanging collector; \
                 want at most {SHUTDOWN_BOUND:?}"
            ));
        }
        stopped
    };
    let records = receiver.records();
    stopped.assert_clean_exit();
    let counters = counters_of(&stopped);
    let accepted = records.spans_of(pid).len();
    check_accounting(&mut problems, &counters, accepted, 2 * ROUND as u64);
    check_no_duplicates(&mut problems, &records, pid);
    if release {
        let arrived: BTreeSet<&str> = records
            .spans_of(pid)
            .iter()
            .filter_map(|r| r.span.path())
            .collect();
        let missing: Vec<&String> = second
            .iter()
            .filter(|p| !arrived.contains(p.as_str()))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "after the collector recovered, the second round's spans are missing: {missing:?}"
            ));
        }
    } else if accepted != 0 {
        problems.push(format!(
            "the receiver accepted {accepted} spans though it never answered"
        ));
    }
    let warnings = warnings_after_ready(&stopped);
    if warnings.len() > 4 {
        problems.push(format!(
            "{} WARN lines after ready (want a few, not one per attempt):\n{}",
            warnings.len(),
            warnings.join("\n")
        ));
    }
    fail_with(
        &format!(
            "{protocol}: hanging collector{}",
            if release {
                ", then released"
            } else {
                ", SIGINT"
            }
        ),
        &problems,
        &records,
        &stopped,
    );
}

#[test]
fn grpc_hanging_collector_times_out_tracing_goes_on_sigint_exits() {
    hanging_collector("grpc", false);
}

#[test]
fn http_hanging_collector_times_out_tracing_goes_on_then_recovers() {
    hanging_collector("http/protobuf", true);
}

/// The collector dies mid-run. Spans made before are exported; spans made
/// after are retried until `OTEL_BSP_EXPORT_TIMEOUT` (1 s here) and then
/// counted as dropped, which `/metrics` shows while the agent runs. At exit
/// every span is accounted for (`spans_emitted == spans_exported +
/// dropped`) and peak RSS stayed under [`RSS_BOUND_KIB`].
#[test]
fn collector_killed_mid_run_drops_are_counted_and_memory_stays_bounded() {
    if !env::require_ebpf() || !env::require_otlp_receiver() || !env::require_prometheus_client() {
        return;
    }
    const BEFORE: u64 = 10;
    const AFTER: u64 = 40;

    let mut receiver = Receiver::start(&Options::default());
    let server = Server::python();
    let pid = server.pid();
    let mut envs = otlp::exporter_env(&receiver.grpc_endpoint(), "grpc");
    envs.extend([
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "100".to_string()),
        ("OTEL_BSP_EXPORT_TIMEOUT".to_string(), "1000".to_string()),
    ]);
    let agent = Agent::start_with_env(
        &["--pid", &pid.to_string(), "--metrics-addr", "127.0.0.1:0"],
        &envs,
    );
    agent.wait_ready();
    let addr = metrics::addr(&agent);

    clients::curl_numbered(&server, "/status/200/alive-", BEFORE);
    let (_, arrived) =
        receiver.wait_until(span_timeout(), |r| r.spans_of(pid).len() as u64 >= BEFORE);
    assert!(
        arrived,
        "the first {BEFORE} spans did not reach the receiver"
    );
    let (before, exported) = metrics::scrape_until(addr, span_timeout(), |s| {
        s.counter("spans_exported") == Some(BEFORE)
    });
    assert!(
        exported,
        "/metrics never showed {BEFORE} spans exported:\n{}",
        before.text
    );
    let dropped_before = before.sum("wirespan_spans_dropped_total");
    let export_calls = before.count("wirespan_otlp_export_duration_seconds_count", &[]);
    assert!(export_calls >= 1, "no export call timed:\n{}", before.text);

    receiver.kill();
    clients::curl_numbered(&server, "/status/200/dead-", AFTER);
    let (after, moved) = metrics::scrape_until(addr, span_timeout() + BACKOFF_SLACK, |s| {
        s.counter("spans_emitted") == Some(BEFORE + AFTER)
            && s.counter("spans_dropped_export_failed").unwrap_or(0) > 0
    });
    let peak_kib = agent.status_kib("VmHWM").unwrap_or(0);
    let stopped = agent.stop();
    let records = receiver.records();

    stopped.assert_clean_exit();
    let counters = counters_of(&stopped);
    let mut problems = Vec::new();
    if !moved {
        problems.push(format!(
            "/metrics never showed spans_dropped_total{{reason=\"export_failed\"}} > 0 after \
             the collector died (dropped before: {dropped_before}):\n{}",
            after.text
        ));
    }
    check_accounting(
        &mut problems,
        &counters,
        records.spans_of(pid).len(),
        BEFORE + AFTER,
    );
    if peak_kib == 0 {
        problems.push("could not read the agent's VmHWM".into());
    } else if peak_kib > RSS_BOUND_KIB {
        problems.push(format!(
            "agent peak RSS {peak_kib} KiB exceeds the bound {RSS_BOUND_KIB} KiB"
        ));
    }
    eprintln!(
        "[test] collector killed: {} spans accepted, dropped at exit {}, peak RSS {peak_kib} KiB",
        records.spans_of(pid).len(),
        otlp::spans_dropped(&counters)
    );
    fail_with("collector killed mid-run", &problems, &records, &stopped);
}
