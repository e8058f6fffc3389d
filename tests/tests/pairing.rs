//! Request/response pairing on one connection: keep-alive (100 requests on
//! one connection) and HTTP/1.1 pipelining (several requests written in one
//! `send`, answered in order). Every request has a distinct path and a status
//! of its own, so a span paired with the wrong response shows up as a
//! path/status mismatch.
//!
//! Run as root with `--test-threads=1`.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use wirespan_tests::clients::{Window, curl, read_responses};
use wirespan_tests::env;
use wirespan_tests::expect::{self, Expected};
use wirespan_tests::servers::Server;
use wirespan_tests::span::describe;
use wirespan_tests::{Agent, SpanKind};

/// curl with 100 URLs on one command line reuses one connection; the server
/// must give 100 SERVER spans, one per path, in request order.
fn keep_alive_100(server: Server, statuses: &[u16]) {
    const N: usize = 100;
    let pid = server.pid();
    let agent = Agent::start_ready(&["--pid", &pid.to_string()]);

    let expected: Vec<Expected> = (0..N)
        .map(|i| {
            let status = statuses[i % statuses.len()];
            Expected::new("GET", &format!("/status/{status}/ka-{i}"), status)
        })
        .collect();
    let urls: Vec<String> = expected.iter().map(|e| server.url(&e.path)).collect();
    let args: Vec<&str> = urls.iter().map(String::as_str).collect();
    let run = curl(&args);
    assert!(run.status.success(), "curl failed: {}", run.stderr);
    assert_eq!(run.transfers.len(), N, "curl transfers");
    for (t, e) in run.transfers.iter().zip(&expected) {
        assert_eq!(t.http_code, e.status, "client status for {}", e.path);
    }
    let connects: u32 = run.transfers.iter().map(|t| t.num_connects).sum();
    assert_eq!(
        connects, 1,
        "test premise: curl must reuse one connection for all {N} requests"
    );
    let expected: Vec<Expected> = expected.into_iter().map(|e| e.within(run.window)).collect();

    let (_, spans) = agent.finish(pid, SpanKind::Server, N);
    expect::assert_spans_match(
        &format!("{} keep-alive", server.name),
        &spans,
        &expected,
        SpanKind::Server,
        server.port,
    );
    // The client sends request i+1 only after reading response i, so the
    // server spans cannot overlap, and they follow the request order.
    let mut ordered = spans.clone();
    ordered.sort_by_key(|s| {
        let p = s.path().unwrap_or_default();
        p.rsplit('-').next().and_then(|n| n.parse::<usize>().ok())
    });
    for pair in ordered.windows(2) {
        assert!(
            pair[1].start_ns >= pair[0].end_ns,
            "{}: keep-alive spans overlap or are out of order:\n  {}\n  {}",
            server.name,
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn keep_alive_100_requests_python() {
    if !env::require_ebpf() {
        return;
    }
    keep_alive_100(Server::python(), &[200, 404, 201, 200, 503]);
}

#[test]
fn keep_alive_100_requests_nginx() {
    if !env::require_ebpf() || !env::require_program("nginx") {
        return;
    }
    keep_alive_100(Server::nginx(), &[200, 404, 201, 200, 500]);
}

#[test]
fn keep_alive_100_requests_node() {
    if !env::require_ebpf() || !env::require_program("node") {
        return;
    }
    keep_alive_100(Server::node(), &[200, 404, 201, 200, 503]);
}

/// A request to pipeline: method, path, body, expected status.
struct Req {
    method: &'static str,
    path: String,
    body: &'static [u8],
    status: u16,
}

fn req(method: &'static str, path: &str, status: u16) -> Req {
    Req {
        method,
        path: path.to_string(),
        body: b"",
        status,
    }
}

/// Writes every request with ONE `send` on a fresh connection, reads all the
/// responses, and checks the server's spans. `agent_args` come after
/// `--pid PID`.
fn pipeline(server: Server, reqs: Vec<Req>, agent_args: &[&str]) {
    let pid = server.pid();
    let pid_arg = pid.to_string();
    let mut args = vec!["--pid", pid_arg.as_str()];
    args.extend_from_slice(agent_args);
    let agent = Agent::start_ready(&args);

    let mut wire = Vec::new();
    for r in &reqs {
        wire.extend_from_slice(
            format!(
                "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: wirespan-tests\r\nAccept: */*\r\n",
                r.method, r.path, server.port
            )
            .as_bytes(),
        );
        if !r.body.is_empty() || r.method == "POST" {
            wire.extend_from_slice(format!("Content-Length: {}\r\n", r.body.len()).as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(r.body);
    }
    let methods: Vec<&str> = reqs.iter().map(|r| r.method).collect();

    let (responses, window) = Window::measure(|| {
        let mut stream = TcpStream::connect(server.addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let sent = stream.write(&wire).expect("send the pipelined requests");
        assert_eq!(
            sent,
            wire.len(),
            "test premise: all requests must go out in one send"
        );
        let responses = read_responses(&mut stream, &methods).expect("read pipelined responses");
        let _ = stream.shutdown(Shutdown::Both);
        responses
    });
    assert_eq!(responses.len(), reqs.len());
    eprintln!(
        "[harness] {} pipelined requests, {} bytes in one send",
        reqs.len(),
        wire.len()
    );
    for (r, resp) in reqs.iter().zip(&responses) {
        assert_eq!(
            resp.status, r.status,
            "{} {}: the client got the wrong status while the agent ran",
            r.method, r.path
        );
    }

    let (_, spans) = agent.finish(pid, SpanKind::Server, reqs.len());
    let expected: Vec<Expected> = reqs
        .iter()
        .map(|r| Expected::new(r.method, &r.path, r.status).within(window))
        .collect();
    expect::assert_spans_match(
        &format!("{} pipelined", server.name),
        &spans,
        &expected,
        SpanKind::Server,
        server.port,
    );
    // Responses go out in request order, so span end times follow it too.
    let ends: Vec<(String, u64)> = reqs
        .iter()
        .filter_map(|r| {
            spans
                .iter()
                .find(|s| s.path() == Some(r.path.as_str()))
                .map(|s| (r.path.clone(), s.end_ns))
        })
        .collect();
    assert!(
        ends.windows(2).all(|w| w[0].1 <= w[1].1),
        "{}: pipelined span end times do not follow the request order: {ends:?}\n{}",
        server.name,
        describe(&spans)
    );
}

/// Ten GETs, each path with its own status.
fn ten_gets(statuses: &[u16]) -> Vec<Req> {
    (0..10)
        .map(|i| {
            let status = statuses[i % statuses.len()];
            req("GET", &format!("/status/{status}/pipe-{i}"), status)
        })
        .collect()
}

#[test]
fn pipelined_10_requests_python() {
    if !env::require_ebpf() {
        return;
    }
    pipeline(
        Server::python(),
        ten_gets(&[200, 404, 201, 500, 202, 410, 203, 503, 418, 206]),
        &[],
    );
}

/// The same with a capture size that holds the whole send: separates the
/// pairing logic from the per-syscall capture limit (default 512 bytes; the
/// ten requests take about 900).
#[test]
fn pipelined_10_requests_python_capture_4096() {
    if !env::require_ebpf() {
        return;
    }
    pipeline(
        Server::python(),
        ten_gets(&[200, 404, 201, 500, 202, 410, 203, 503, 418, 206]),
        &["--capture-bytes", "4096"],
    );
}

#[test]
fn pipelined_10_requests_nginx() {
    if !env::require_ebpf() || !env::require_program("nginx") {
        return;
    }
    pipeline(Server::nginx(), ten_gets(&[200, 404, 201, 500]), &[]);
}

#[test]
fn pipelined_10_requests_node() {
    if !env::require_ebpf() || !env::require_program("node") {
        return;
    }
    pipeline(
        Server::node(),
        ten_gets(&[200, 404, 201, 500, 202, 410, 203, 503, 418, 206]),
        &[],
    );
}

/// Pipelined requests whose responses are framed differently: HEAD (headers
/// announce a body that never comes), 204 and 304 (no body), a POST with a
/// body, a chunked response. Mis-framing any of them would shift the pairing
/// of every later request.
#[test]
fn pipelined_mixed_framing_python() {
    if !env::require_ebpf() {
        return;
    }
    pipeline(Server::python(), mixed_framing(), &[]);
}

/// The same with a capture size that holds the whole send.
#[test]
fn pipelined_mixed_framing_python_capture_4096() {
    if !env::require_ebpf() {
        return;
    }
    pipeline(
        Server::python(),
        mixed_framing(),
        &["--capture-bytes", "4096"],
    );
}

fn mixed_framing() -> Vec<Req> {
    vec![
        req("GET", "/status/200/mix-0", 200),
        req("HEAD", "/status/200/mix-1", 200),
        req("GET", "/status/204/mix-2", 204),
        Req {
            method: "POST",
            path: "/status/201/mix-3".into(),
            body: b"hello=world&pipelined=yes",
            status: 201,
        },
        req("GET", "/chunked/mix-4", 200),
        req("GET", "/status/304/mix-5", 304),
        req("HEAD", "/status/404/mix-6", 404),
        req("GET", "/status/500/mix-7", 500),
        req("DELETE", "/status/202/mix-8", 202),
        req("GET", "/status/404/mix-9", 404),
    ]
}
