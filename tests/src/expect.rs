//! Assertions that compare the spans the agent printed with the requests a
//! test made. They collect every mismatch before failing, so one failure
//! message shows the whole picture (expected requests and spans seen).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::clients::Window;
use crate::servers;
use crate::span::{self, STATUS_ERROR, STATUS_UNSET, Span, SpanKind};

/// A request the test made and the span it must give.
#[derive(Debug, Clone)]
pub struct Expected {
    pub method: String,
    /// Distinct per request: this is how spans are matched to requests.
    pub path: String,
    pub status: u16,
    /// Wall-clock window the span must lie in, when measured per request.
    pub window: Option<Window>,
}

impl Expected {
    pub fn new(method: &str, path: &str, status: u16) -> Expected {
        Expected {
            method: method.to_string(),
            path: path.to_string(),
            status,
            window: None,
        }
    }

    pub fn within(mut self, window: Window) -> Expected {
        self.window = Some(window);
        self
    }
}

/// Whether a span of `kind` with HTTP status `status` must have status ERROR:
/// 5xx on servers, 4xx and 5xx on clients (DESIGN.md's interface contract).
pub fn must_be_error(kind: SpanKind, status: u16) -> bool {
    match kind {
        SpanKind::Client => status >= 400,
        _ => status >= 500,
    }
}

/// Checks `spans` (already narrowed to one process and kind) against
/// `expected`: exactly one span per expected request (matched by `url.path`)
/// and nothing else; method, status code, span status, `server.port`, valid
/// ids, and the time window. Panics listing every problem.
pub fn assert_spans_match(
    what: &str,
    spans: &[Span],
    expected: &[Expected],
    kind: SpanKind,
    server_port: u16,
) {
    let mut problems = Vec::new();
    let mut by_path: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    for s in spans {
        if s.kind != kind {
            problems.push(format!("span of kind {:?}, want {kind:?}: {s}", s.kind));
        }
        by_path
            .entry(s.path().unwrap_or("<no url.path>"))
            .or_default()
            .push(s);
    }
    for e in expected {
        let found = by_path.remove(e.path.as_str()).unwrap_or_default();
        match found.as_slice() {
            [] => problems.push(format!(
                "no span for {} {} (want status {})",
                e.method, e.path, e.status
            )),
            [s] => check_one(&mut problems, s, e, kind, server_port),
            many => problems.push(format!(
                "{} spans for {} {} (want exactly 1):\n{}",
                many.len(),
                e.method,
                e.path,
                many.iter()
                    .map(|s| format!("    {s}\n"))
                    .collect::<String>()
            )),
        }
    }
    for (path, extra) in by_path {
        for s in extra {
            problems.push(format!("unexpected span for path {path:?}: {s}"));
        }
    }
    if !problems.is_empty() {
        let mut msg = format!(
            "{what}: {} problem(s) with {} span(s) for {} request(s)\n",
            problems.len(),
            spans.len(),
            expected.len()
        );
        for p in &problems {
            let _ = writeln!(msg, "- {p}");
        }
        let _ = writeln!(msg, "expected requests:");
        for e in expected {
            let _ = writeln!(msg, "  {} {} -> {}", e.method, e.path, e.status);
        }
        let _ = writeln!(msg, "spans seen:\n{}", span::describe(spans));
        panic!("{msg}");
    }
}

fn check_one(problems: &mut Vec<String>, s: &Span, e: &Expected, kind: SpanKind, port: u16) {
    let who = format!("{} {}", e.method, e.path);
    if s.method() != Some(e.method.as_str()) {
        problems.push(format!(
            "{who}: http.request.method {:?}, want {:?}: {s}",
            s.method(),
            e.method
        ));
    }
    if s.http_status() != Some(i64::from(e.status)) {
        problems.push(format!(
            "{who}: http.response.status_code {:?}, want {}: {s}",
            s.http_status(),
            e.status
        ));
    }
    let want_code = if must_be_error(kind, e.status) {
        STATUS_ERROR
    } else {
        STATUS_UNSET
    };
    if s.status_code != want_code {
        problems.push(format!(
            "{who}: status.code {}, want {want_code}: {s}",
            s.status_code
        ));
    }
    if !s.name.starts_with(e.method.as_str()) {
        problems.push(format!(
            "{who}: span name {:?} does not start with the method: {s}",
            s.name
        ));
    }
    if s.attr_int("server.port") != Some(i64::from(port)) {
        problems.push(format!(
            "{who}: server.port {:?}, want {port}: {s}",
            s.attr("server.port")
        ));
    }
    // Every request in these tests goes to 127.0.0.1 from 127.0.0.1.
    let mut want_str = vec![
        ("server.address", "127.0.0.1"),
        ("network.peer.address", "127.0.0.1"),
    ];
    if kind == SpanKind::Server {
        want_str.push(("client.address", "127.0.0.1"));
    }
    for (key, want) in want_str {
        if s.attr_str(key) != Some(want) {
            problems.push(format!(
                "{who}: {key} {:?}, want {want:?}: {s}",
                s.attr(key)
            ));
        }
    }
    if kind == SpanKind::Client && s.attr_int("network.peer.port") != Some(i64::from(port)) {
        problems.push(format!(
            "{who}: network.peer.port {:?}, want {port}: {s}",
            s.attr("network.peer.port")
        ));
    }
    if !span::is_valid_hex_id(&s.trace_id, 32) || !span::is_valid_hex_id(&s.span_id, 16) {
        problems.push(format!(
            "{who}: invalid ids traceId={:?} spanId={:?}",
            s.trace_id, s.span_id
        ));
    }
    if let Some(w) = e.window
        && !w.contains(s)
    {
        problems.push(format!(
            "{who}: span [{}, {}] not inside the client's window [{}, {}] ({} ns slack at \
             the start, {} at the end): starts {:+} ns from the window start, ends {:+} ns \
             from the window end: {s}",
            s.start_ns,
            s.end_ns,
            w.start_ns,
            w.end_ns,
            crate::clients::clock_slack_ns(),
            crate::clients::end_slack_ns(),
            i128::from(s.start_ns) - i128::from(w.start_ns),
            i128::from(s.end_ns) - i128::from(w.end_ns),
        ));
    }
}

/// Resource attributes of every span: `process.pid` is `pid`,
/// `process.executable.name` is the file name of /proc/PID/exe, and
/// `service.name` is set. Call while the process is still alive.
pub fn assert_resource(what: &str, spans: &[Span], pid: u32) {
    let exe = servers::exe_name(pid);
    for s in spans {
        assert_eq!(s.pid(), Some(pid), "{what}: process.pid: {s}");
        assert_eq!(
            s.resource_str("process.executable.name"),
            Some(exe.as_str()),
            "{what}: process.executable.name (want the name of /proc/{pid}/exe): {s}; resource {:?}",
            s.resource
        );
        assert!(
            s.resource_str("service.name")
                .is_some_and(|n| !n.is_empty()),
            "{what}: service.name missing or empty; resource {:?}",
            s.resource
        );
    }
}

/// Spans of `kind` from process `pid`.
pub fn of(spans: &[Span], pid: u32, kind: SpanKind) -> Vec<Span> {
    spans
        .iter()
        .filter(|s| s.pid() == Some(pid) && s.kind == kind)
        .cloned()
        .collect()
}

/// Spans from process `pid`, any kind.
pub fn of_pid(spans: &[Span], pid: u32) -> Vec<Span> {
    spans
        .iter()
        .filter(|s| s.pid() == Some(pid))
        .cloned()
        .collect()
}
