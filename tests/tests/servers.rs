//! Real HTTP servers (Python ThreadingHTTPServer, nginx, node `http`) each
//! serve N curl requests while the agent traces them by pid. Exactly N SERVER
//! spans must come from that pid, matched to the requests by their distinct
//! paths, each with the right method, status and span status, and each lying
//! inside the wall-clock window the test measured around its own curl run
//! (with `clients::clock_slack_ns()` of slack for the kernel-to-Unix clock
//! conversion, and `clients::end_slack_ns()` at the end: a span ends at a
//! syscall's exit, which a preempted server thread reaches late).
//!
//! Run as root with `--test-threads=1`.

use wirespan_tests::clients::curl_method;
use wirespan_tests::env;
use wirespan_tests::expect::{self, Expected};
use wirespan_tests::servers::Server;
use wirespan_tests::{Agent, SpanKind};

const N: usize = 20;
/// In query strings only: must not show up in any span attribute.
const SECRET: &str = "s3cr3t-query-value";

/// N requests: GET, POST and HEAD, statuses 200 and 404 (and one 500), each
/// on a distinct path; every third carries a query string, which `url.path`
/// must leave out (and no attribute may carry, by default).
fn plan(tag: &str) -> Vec<(&'static str, String, u16, String)> {
    (0..N)
        .map(|i| {
            let method = match i % 4 {
                1 => "POST",
                3 => "HEAD",
                _ => "GET",
            };
            let status = match i % 5 {
                2 | 4 => 404,
                3 if i == 13 => 500,
                _ => 200,
            };
            let query = if i % 3 == 0 {
                format!("?token={SECRET}&i={i}")
            } else {
                String::new()
            };
            (method, format!("/status/{status}/{tag}-{i}"), status, query)
        })
        .collect()
}

/// Serves the plan from `server` while an agent traces its pid, then checks
/// the spans.
fn serve_and_check(server: Server, tag: &str) {
    serve_and_check_with(server, tag, &[]);
}

/// As [`serve_and_check`], with extra agent flags.
fn serve_and_check_with(server: Server, tag: &str, extra: &[&str]) {
    let pid = server.pid();
    let pid_arg = pid.to_string();
    let mut args = vec!["--pid", pid_arg.as_str()];
    args.extend_from_slice(extra);
    let agent = Agent::start_ready(&args);

    let mut expected = Vec::new();
    for (method, path, status, query) in plan(tag) {
        let run = curl_method(method, &server.url(&format!("{path}{query}")));
        let t = run.only();
        assert_eq!(
            t.http_code, status,
            "{method} {path}: the client got the wrong status while the agent ran"
        );
        expected.push(Expected::new(method, &path, status).within(run.window));
    }

    let (stopped, spans) = agent.finish(pid, SpanKind::Server, N);
    expect::assert_spans_match(
        &format!("{} pid {pid}", server.name),
        &spans,
        &expected,
        SpanKind::Server,
        server.port,
    );
    expect::assert_resource(&server.name, &spans, pid);
    let leaks: Vec<_> = spans
        .iter()
        .filter(|s| {
            s.name.contains(SECRET) || s.attrs.values().any(|v| v.to_string().contains(SECRET))
        })
        .cloned()
        .collect();
    assert!(
        leaks.is_empty(),
        "{}: query strings must not be exported by default:\n{}",
        server.name,
        wirespan_tests::span::describe(&leaks)
    );
    let others = expect::of_pid(&stopped.spans, pid)
        .into_iter()
        .filter(|s| !s.is_server())
        .collect::<Vec<_>>();
    assert!(
        others.is_empty(),
        "{}: spans that are not SERVER from the server's pid:\n{}",
        server.name,
        wirespan_tests::span::describe(&others)
    );
}

#[test]
fn python_threading_http_server() {
    if !env::require_ebpf() {
        return;
    }
    serve_and_check(Server::python(), "py");
}

#[test]
fn nginx() {
    if !env::require_ebpf() || !env::require_program("nginx") {
        return;
    }
    serve_and_check(Server::nginx(), "nginx");
}

#[test]
fn node_http() {
    if !env::require_ebpf() || !env::require_program("node") {
        return;
    }
    serve_and_check(Server::node(), "node");
}

/// The fallback socket classifier (the file-table walk with BTF offsets,
/// for kernels without sock:sock_*_length) must give the same spans.
#[test]
fn python_with_fd_table_classifier() {
    if !env::require_ebpf() {
        return;
    }
    serve_and_check_with(
        Server::python(),
        "pyfd",
        &["--socket-classifier", "fd-table"],
    );
}

#[test]
fn nginx_with_fd_table_classifier() {
    if !env::require_ebpf() || !env::require_program("nginx") {
        return;
    }
    serve_and_check_with(
        Server::nginx(),
        "nginxfd",
        &["--socket-classifier", "fd-table"],
    );
}
