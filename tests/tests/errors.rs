//! A connection that ends mid-response is never silently lost: the server
//! that resets the connection, and the client that sees the reset, each get
//! one span with status ERROR and an `error.type` attribute.
//!
//! `/reset` on py_server.py sends a response head announcing
//! `Content-Length: 100000`, 1000 body bytes, then closes with SO_LINGER 0
//! (a TCP RST). curl reports it as exit code 56 (receive failure).
//!
//! Run as root with `--test-threads=1`.

use wirespan_tests::clients::{Window, curl};
use wirespan_tests::env;
use wirespan_tests::expect;
use wirespan_tests::servers::Server;
use wirespan_tests::span::{STATUS_ERROR, Span, describe};
use wirespan_tests::{Agent, SpanKind};

/// curl exit code for "failure in receiving network data".
const CURL_RECV_ERROR: i32 = 56;

fn assert_error_span(what: &str, spans: &[Span], port: u16, window: Window) {
    assert_eq!(
        spans.len(),
        1,
        "{what}: want exactly one span for the reset request, got:\n{}",
        describe(spans)
    );
    let s = &spans[0];
    let problems: Vec<String> = [
        (s.path() != Some("/reset")).then(|| format!("url.path {:?}, want \"/reset\"", s.path())),
        (s.method() != Some("GET"))
            .then(|| format!("http.request.method {:?}, want GET", s.method())),
        (s.status_code != STATUS_ERROR)
            .then(|| format!("status.code {}, want {STATUS_ERROR} (ERROR)", s.status_code)),
        s.attr_str("error.type")
            .is_none_or(str::is_empty)
            .then(|| format!("error.type missing or empty: {:?}", s.attr("error.type"))),
        (s.attr_int("server.port") != Some(i64::from(port)))
            .then(|| format!("server.port {:?}, want {port}", s.attr("server.port"))),
        (!window.contains(s)).then(|| {
            format!(
                "span [{}, {}] outside the client's window [{}, {}]",
                s.start_ns, s.end_ns, window.start_ns, window.end_ns
            )
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(problems.is_empty(), "{what}: {problems:#?}\n  span: {s}");
}

#[test]
fn server_resets_mid_response() {
    if !env::require_ebpf() {
        return;
    }
    let server = Server::python();
    let pid = server.pid();
    let agent = Agent::start_ready(&["--pid", &pid.to_string()]);

    let run = curl(&[&server.url("/reset")]);
    assert_eq!(
        run.exit_code(),
        Some(CURL_RECV_ERROR),
        "test premise: curl must see the reset; stderr: {}",
        run.stderr
    );
    // A normal request afterwards: the server still works, and it is the
    // second span to wait for.
    let ok = curl(&[&server.url("/status/200/after-reset")]);
    assert_eq!(ok.only().http_code, 200);

    let (_, spans) = agent.finish(pid, SpanKind::Server, 2);
    let reset: Vec<Span> = spans
        .iter()
        .filter(|s| s.path() != Some("/status/200/after-reset"))
        .cloned()
        .collect();
    assert_error_span("server side of /reset", &reset, server.port, run.window);
    expect::assert_spans_match(
        "request after the reset",
        &spans
            .iter()
            .filter(|s| s.path() == Some("/status/200/after-reset"))
            .cloned()
            .collect::<Vec<_>>(),
        &[expect::Expected::new("GET", "/status/200/after-reset", 200).within(ok.window)],
        SpanKind::Server,
        server.port,
    );
}

#[test]
fn client_sees_reset_mid_response() {
    if !env::require_ebpf() {
        return;
    }
    let server = Server::python();
    let agent = Agent::start_ready(&["--exe-path", "*/curl"]);

    let run = curl(&[&server.url("/reset")]);
    assert_eq!(
        run.exit_code(),
        Some(CURL_RECV_ERROR),
        "test premise: curl must see the reset; stderr: {}",
        run.stderr
    );

    let (_, spans) = agent.finish(run.pid, SpanKind::Client, 1);
    assert_error_span(
        "curl (client side of /reset)",
        &spans,
        server.port,
        run.window,
    );
}
