//! Selectors narrow what is traced: with none, every process; `--pid`,
//! `--exe-path` and `--open-ports` each select; values within one kind OR,
//! different kinds AND.
//!
//! Each test sends one request to every server, waits for the spans that
//! must come, then stops the agent (which flushes) and checks that the
//! servers that must not be traced gave nothing.
//!
//! The kernel applies what it can of the selection too: `--open-ports` by
//! muting connections, `--exe-path` by untracing processes.
//!
//! Run as root with `--test-threads=1`.

use std::io::Write;
use std::net::TcpStream;

use wirespan_tests::agent::span_timeout;
use wirespan_tests::clients::{curl, read_responses};
use wirespan_tests::env;
use wirespan_tests::expect::{self, Expected};
use wirespan_tests::metrics;
use wirespan_tests::servers::Server;
use wirespan_tests::span::describe;
use wirespan_tests::{Agent, SpanKind};

/// Starts the agent with `args`, sends `/status/200/sel-<name>` to each
/// server, and checks: servers in `traced` give exactly their one SERVER
/// span, the others give none.
fn check(args: &[&str], servers: &[&Server], traced: &[bool]) {
    let agent = Agent::start_ready(args);
    let mut expected = Vec::new();
    for s in servers {
        let path = format!("/status/200/sel-{}-{}", s.name, s.port);
        let run = curl(&[&s.url(&path)]);
        assert_eq!(run.only().http_code, 200);
        expected.push(Expected::new("GET", &path, 200).within(run.window));
    }
    let want_pids: Vec<u32> = servers
        .iter()
        .zip(traced)
        .filter(|(_, t)| **t)
        .map(|(s, _)| s.pid())
        .collect();
    agent.wait_for_spans(
        |s| s.is_server() && s.pid().is_some_and(|p| want_pids.contains(&p)),
        want_pids.len(),
        span_timeout(),
    );
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    for ((server, want), e) in servers.iter().zip(traced).zip(expected) {
        let spans = expect::of_pid(&stopped.spans, server.pid());
        if *want {
            expect::assert_spans_match(
                &format!(
                    "{args:?}: {} pid {} must be traced",
                    server.name,
                    server.pid()
                ),
                &spans,
                &[e],
                SpanKind::Server,
                server.port,
            );
        } else {
            assert!(
                spans.is_empty(),
                "{args:?}: {} pid {} (exe {}, port {}) must not be traced, but gave:\n{}",
                server.name,
                server.pid(),
                server.exe_path().display(),
                server.port,
                describe(&spans)
            );
        }
    }
}

#[test]
fn no_selector_traces_every_process() {
    if !env::require_ebpf() {
        return;
    }
    let server = Server::python();
    let agent = Agent::start_ready(&[]);
    let run = curl(&[&server.url("/status/404/everything")]);
    assert_eq!(run.only().http_code, 404);
    agent.wait_for_spans(
        |s| s.pid() == Some(server.pid()) || s.pid() == Some(run.pid),
        2,
        span_timeout(),
    );
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    let e = [Expected::new("GET", "/status/404/everything", 404).within(run.window)];
    expect::assert_spans_match(
        "server, no selector",
        &expect::of_pid(&stopped.spans, server.pid()),
        &e,
        SpanKind::Server,
        server.port,
    );
    expect::assert_spans_match(
        "curl, no selector",
        &expect::of_pid(&stopped.spans, run.pid),
        &e,
        SpanKind::Client,
        server.port,
    );
}

#[test]
fn pid_values_or() {
    if !env::require_ebpf() {
        return;
    }
    let (a, b, c) = (Server::python(), Server::python(), Server::python());
    let pids = format!("{},{}", a.pid(), b.pid());
    check(&["--pid", &pids], &[&a, &b, &c], &[true, true, false]);
}

#[test]
fn pid_flag_repeated() {
    if !env::require_ebpf() {
        return;
    }
    let (a, b, c) = (Server::python(), Server::python(), Server::python());
    check(
        &["--pid", &a.pid().to_string(), "--pid", &c.pid().to_string()],
        &[&a, &b, &c],
        &[true, false, true],
    );
}

#[test]
fn exe_path_glob() {
    if !env::require_ebpf() || !env::require_program("node") {
        return;
    }
    let (py, node) = (Server::python(), Server::node());
    check(&["--exe-path", "*/node"], &[&py, &node], &[false, true]);
}

#[test]
fn open_ports() {
    if !env::require_ebpf() {
        return;
    }
    let (a, b) = (Server::python(), Server::python());
    check(
        &["--open-ports", &a.port.to_string()],
        &[&a, &b],
        &[true, false],
    );
}

#[test]
fn open_ports_range() {
    if !env::require_ebpf() {
        return;
    }
    let (a, b) = (Server::python(), Server::python());
    let range = format!("{}-{}", a.port, a.port);
    check(
        &["--open-ports", &format!("1,{range}")],
        &[&a, &b],
        &[true, false],
    );
}

#[test]
fn selector_kinds_and() {
    if !env::require_ebpf() || !env::require_program("node") {
        return;
    }
    let (py_a, py_b, node) = (Server::python(), Server::python(), Server::node());
    let pids = format!("{},{},{}", py_a.pid(), py_b.pid(), node.pid());
    // All three pass --pid; only py_a also passes --open-ports; node fails
    // --exe-path. Result: py_a only.
    check(
        &[
            "--pid",
            &pids,
            "--open-ports",
            &format!("{},{}", py_a.port, node.port),
            "--exe-path",
            "*/python3*",
        ],
        &[&py_a, &py_b, &node],
        &[true, false, false],
    );
}

/// A keep-alive connection to `server` from this test process.
fn keep_alive(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream
        .set_read_timeout(Some(span_timeout()))
        .expect("read timeout");
    stream
}

/// `GET path` on the keep-alive `stream`; the response must be a 200.
fn get_on(stream: &mut TcpStream, server: &Server, path: &str) {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        server.port
    );
    stream.write_all(req.as_bytes()).expect("write request");
    let resp = read_responses(stream, &["GET"]).expect("read response");
    assert_eq!(resp[0].status, 200, "GET {path}: {:?}", resp[0]);
}

/// `--open-ports` is applied in the kernel too: once the agent has seen a
/// connection to another port, the kernel stops sending its payload
/// (`payloads_muted`), while the traffic itself goes on untouched.
#[test]
fn open_ports_mutes_other_connections_in_the_kernel() {
    if !env::require_ebpf() {
        return;
    }
    let (a, b) = (Server::python(), Server::python());
    let pids = format!("{},{}", a.pid(), b.pid());
    let agent = Agent::start_ready(&[
        "--pid",
        &pids,
        "--open-ports",
        &a.port.to_string(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let addr = metrics::addr(&agent);
    let mut stream = keep_alive(&b);
    get_on(&mut stream, &b, "/status/200/first");
    metrics::wait_for_counter(
        addr,
        "conns_muted",
        1,
        "the connection to the unselected port",
    );
    for i in 0..5 {
        get_on(&mut stream, &b, &format!("/status/200/after-{i}"));
    }
    drop(stream);
    // Ordering barrier: a traced request whose span we wait for.
    let run = curl(&[&a.url("/status/200/barrier")]);
    assert_eq!(run.only().http_code, 200);
    agent.wait_for_spans(|s| s.pid() == Some(a.pid()), 1, span_timeout());
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    assert!(expect::of_pid(&stopped.spans, b.pid()).is_empty());
    // Five requests read and five responses written, at least, left out.
    let left_out = stopped.counter("payloads_muted").unwrap_or(0);
    assert!(
        left_out >= 10,
        "payloads_muted {left_out}, want at least 10; stderr:\n{}",
        stopped.stderr.join("\n")
    );
    assert_eq!(stopped.counter("kernel_filter_refused"), Some(0));
}

/// `--exe-path` is applied in the kernel too: a process the agent judged
/// untraced costs it no more events, and the judgement goes with the
/// process (a traced process started afterwards is traced).
#[test]
fn exe_path_untraces_processes_in_the_kernel() {
    if !env::require_ebpf() || !env::require_program("node") {
        return;
    }
    let (py, node) = (Server::python(), Server::node());
    let agent = Agent::start_ready(&["--exe-path", "*/node", "--metrics-addr", "127.0.0.1:0"]);
    let addr = metrics::addr(&agent);
    // From this test process (untraced too): its first request gets both
    // it and the Python server judged.
    let mut stream = keep_alive(&py);
    get_on(&mut stream, &py, "/status/200/first");
    let before = metrics::wait_for_counter(
        addr,
        "processes_untraced",
        2,
        "the Python server and the test process",
    );
    for i in 0..20 {
        get_on(&mut stream, &py, &format!("/status/200/after-{i}"));
    }
    drop(stream);
    let after = metrics::scrape(addr);
    let grew =
        after.counter("data_events").unwrap_or(0) - before.counter("data_events").unwrap_or(0);
    // Traced, the 20 requests would be at least 80 data events (a read
    // and a write on each side). Other processes on the machine may add a
    // few before the agent judges them.
    assert!(
        grew < 20,
        "{grew} data events during 20 requests between untraced processes"
    );
    let run = curl(&[&node.url("/status/200/traced")]);
    assert_eq!(run.only().http_code, 200);
    agent.wait_for_spans(|s| s.pid() == Some(node.pid()), 1, span_timeout());
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    assert!(expect::of_pid(&stopped.spans, py.pid()).is_empty());
    assert_eq!(stopped.counter("kernel_filter_refused"), Some(0));
}
