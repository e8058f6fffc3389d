//! A server that peeks at a connection's first bytes before reading them
//! (`MSG_PEEK`, as protocol sniffers do: TLS or plaintext, HTTP/1 or 2)
//! reads those bytes twice. The agent must see them once: a peek leaves
//! them queued, so only the read that consumes them counts.
//!
//! Run as root with `--test-threads=1`.

use wirespan_tests::clients::curl;
use wirespan_tests::env;
use wirespan_tests::expect::{self, Expected};
use wirespan_tests::servers::Server;
use wirespan_tests::{Agent, SpanKind};

/// py_server peeks at each connection with recvmsg(MSG_PEEK) (16 bytes)
/// and recv(MSG_PEEK) (the recvfrom syscall, for as much as came: usually
/// the whole request, which the parser would count twice) before handling
/// it. The first curl sends
/// `Connection: close`, so that it opens one connection per request and
/// every request follows two peeks; the second keeps its connection, so
/// that more than one request follows them.
#[test]
fn peeked_bytes_are_parsed_once() {
    if !env::require_ebpf() {
        return;
    }
    let server = Server::python_with_env(&[("PY_SERVER_PEEK", "1")]);
    let pid = server.pid();
    let agent = Agent::start_ready(&["--pid", &pid.to_string()]);

    let statuses = [200, 404, 201, 500, 200];
    let mut expected = Vec::new();
    for (run, n, close) in [("close", 8, true), ("keep", 3, false)] {
        let wanted: Vec<Expected> = (0..n)
            .map(|i| {
                let status = statuses[i % statuses.len()];
                Expected::new("GET", &format!("/status/{status}/peek-{run}-{i}"), status)
            })
            .collect();
        let urls: Vec<String> = wanted.iter().map(|e| server.url(&e.path)).collect();
        let mut args: Vec<&str> = Vec::new();
        if close {
            args.extend(["-H", "Connection: close"]);
        }
        args.extend(urls.iter().map(String::as_str));
        let done = curl(&args);
        assert!(done.status.success(), "curl failed: {}", done.stderr);
        assert_eq!(done.transfers.len(), n, "curl transfers");
        for (t, e) in done.transfers.iter().zip(&wanted) {
            assert_eq!(t.http_code, e.status, "client status for {}", e.path);
        }
        let connects: u32 = done.transfers.iter().map(|t| t.num_connects).sum();
        let want = if close { n as u32 } else { 1 };
        assert_eq!(connects, want, "test premise: connections of the {run} run");
        expected.extend(wanted.into_iter().map(|e| e.within(done.window)));
    }

    let (stopped, spans) = agent.finish(pid, SpanKind::Server, expected.len());
    expect::assert_spans_match(
        "python, peeking",
        &spans,
        &expected,
        SpanKind::Server,
        server.port,
    );
    assert_eq!(
        stopped.counter("http1_malformed"),
        Some(0),
        "peeked bytes parsed as a request"
    );
}
