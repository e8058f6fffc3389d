//! Selectors narrow what is traced: with none, every process; `--pid`,
//! `--exe-path` and `--open-ports` each select; values within one kind OR,
//! different kinds AND.
//!
//! Each test sends one request to every server, waits for the spans that
//! must come, then stops the agent (which flushes) and checks that the
//! servers that must not be traced gave nothing.
//!
//! Run as root with `--test-threads=1`.

use wirespan_tests::agent::span_timeout;
use wirespan_tests::clients::curl;
use wirespan_tests::env;
use wirespan_tests::expect::{self, Expected};
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
