//! Client spans (kind CLIENT): curl selected by `--exe-path`, and Python's
//! urllib selected by `--pid` and by `--exe-path` (a process that starts
//! after the agent).
//!
//! Run as root with `--test-threads=1`.

use std::time::Duration;

use wirespan_tests::agent::span_timeout;
use wirespan_tests::clients::{Script, Window, curl_method};
use wirespan_tests::env;
use wirespan_tests::expect::{self, Expected};
use wirespan_tests::servers::Server;
use wirespan_tests::span::describe;
use wirespan_tests::{Agent, SpanKind};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn curl_client_spans() {
    if !env::require_ebpf() {
        return;
    }
    let server = Server::python();
    let agent = Agent::start_ready(&["--exe-path", "*/curl"]);

    let plan = [
        ("GET", "/status/200/curl-0", 200),
        ("GET", "/status/404/curl-1", 404),
        ("POST", "/status/201/curl-2", 201),
        ("GET", "/status/500/curl-3", 500),
        ("HEAD", "/status/200/curl-4", 200),
        ("DELETE", "/status/403/curl-5", 403),
    ];
    let mut runs = Vec::new();
    for (method, path, status) in plan {
        let run = curl_method(method, &server.url(path));
        assert_eq!(run.only().http_code, status, "{method} {path}");
        runs.push((run, Expected::new(method, path, status)));
    }

    let pids: Vec<u32> = runs.iter().map(|(r, _)| r.pid).collect();
    agent.wait_for_spans(
        |s| s.is_client() && s.pid().is_some_and(|p| pids.contains(&p)),
        plan.len(),
        span_timeout(),
    );
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    for (run, e) in runs {
        let spans = expect::of(&stopped.spans, run.pid, SpanKind::Client);
        expect::assert_spans_match(
            &format!("curl pid {}", run.pid),
            &spans,
            &[e.within(run.window)],
            SpanKind::Client,
            server.port,
        );
        let others: Vec<_> = expect::of_pid(&stopped.spans, run.pid)
            .into_iter()
            .filter(|s| !s.is_client())
            .collect();
        assert!(
            others.is_empty(),
            "non-CLIENT spans from curl:\n{}",
            describe(&others)
        );
    }
    // The server is python, not curl: --exe-path must leave it out.
    let server_spans = expect::of_pid(&stopped.spans, server.pid());
    assert!(
        server_spans.is_empty(),
        "--exe-path '*/curl' traced the python server too:\n{}",
        describe(&server_spans)
    );
}

/// Requests of the urllib client: path and status.
const URLLIB_PLAN: [(&str, u16); 5] = [
    ("/status/200/urllib-0", 200),
    ("/status/404/urllib-1", 404),
    ("/status/200/urllib-2", 200),
    ("/status/503/urllib-3", 503),
    ("/plain/urllib-4", 200),
];

/// Runs py_client.py against `server` once the test says go; returns the
/// client's pid and the window around its requests.
fn run_urllib_client(server: &Server, before_go: impl FnOnce(u32)) -> (u32, Window) {
    let base = server.url("");
    let mut args = vec![base.as_str()];
    args.extend(URLLIB_PLAN.iter().map(|(p, _)| *p));
    let mut client = Script::python("py_client.py", &args);
    let pid = client.pid();
    assert_eq!(client.read_line(SCRIPT_TIMEOUT), "WAITING");
    before_go(pid);
    let (_, window) = Window::measure(|| {
        client.send_line("go");
        for (path, status) in URLLIB_PLAN {
            let line = client.read_line(SCRIPT_TIMEOUT);
            let mut f = line.split_whitespace();
            assert_eq!(f.next(), Some(path), "client output {line:?}");
            assert_eq!(
                f.next().and_then(|s| s.parse::<u16>().ok()),
                Some(status),
                "client status for {path}: {line:?}"
            );
        }
    });
    assert!(client.wait(SCRIPT_TIMEOUT).success(), "py_client.py failed");
    (pid, window)
}

fn urllib_expected(window: Window) -> Vec<Expected> {
    URLLIB_PLAN
        .iter()
        .map(|(p, s)| Expected::new("GET", p, *s).within(window))
        .collect()
}

#[test]
fn python_urllib_client_by_pid() {
    if !env::require_ebpf() {
        return;
    }
    let server = Server::python();
    let mut agent = None;
    let (pid, window) = run_urllib_client(&server, |pid| {
        agent = Some(Agent::start_ready(&["--pid", &pid.to_string()]));
    });
    let agent = agent.expect("agent started");
    let (stopped, spans) = agent.finish(pid, SpanKind::Client, URLLIB_PLAN.len());
    expect::assert_spans_match(
        "python urllib client (--pid)",
        &spans,
        &urllib_expected(window),
        SpanKind::Client,
        server.port,
    );
    let server_spans = expect::of_pid(&stopped.spans, server.pid());
    assert!(
        server_spans.is_empty(),
        "--pid of the client traced the server too:\n{}",
        describe(&server_spans)
    );
}

/// The client process starts after the agent; `--exe-path` must pick it up
/// from its exec.
#[test]
fn python_urllib_client_by_exe_path_started_after_agent() {
    if !env::require_ebpf() {
        return;
    }
    let server = Server::python();
    let agent = Agent::start_ready(&["--exe-path", "*/python3*"]);
    let (pid, window) = run_urllib_client(&server, |_| {});
    let (stopped, spans) = agent.finish(pid, SpanKind::Client, URLLIB_PLAN.len());
    expect::assert_spans_match(
        "python urllib client (--exe-path, started after the agent)",
        &spans,
        &urllib_expected(window),
        SpanKind::Client,
        server.port,
    );
    // The server is python too, so it is traced as well: one SERVER span per
    // request.
    expect::assert_spans_match(
        "python server (--exe-path)",
        &expect::of(&stopped.spans, server.pid(), SpanKind::Server),
        &urllib_expected(window),
        SpanKind::Server,
        server.port,
    );
}
