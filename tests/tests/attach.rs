//! A keep-alive connection opened BEFORE the agent started: the agent must
//! find the already-open socket (from the task's file table) and trace the
//! requests made on it afterwards.
//!
//! py_keepalive_client.py makes one request, waits for a line on stdin
//! (meanwhile the test starts the agent on both pids), then makes 5 more on
//! the same connection, each with its own status.
//!
//! Client side: the client is blocked reading stdin, not the socket, when
//! the agent attaches, so all 5 later requests must give CLIENT spans.
//!
//! Server side: the server's handler thread is already blocked inside
//! recv() on that connection when the probes attach. The syscall-exit of
//! that recv (which returns the first later request) has no matching
//! syscall-entry, so its buffer cannot be read from a tracepoint: the first
//! later request may be missed on the server side. The other 4 must give
//! SERVER spans, and nothing may be mispaired (for instance the orphan
//! response of the missed request with the next request).
//!
//! Run as root with `--test-threads=1`.

use std::time::Duration;

use wirespan_tests::agent::span_timeout;
use wirespan_tests::clients::{Script, Window};
use wirespan_tests::env;
use wirespan_tests::expect::{self, Expected};
use wirespan_tests::servers::Server;
use wirespan_tests::span::describe;
use wirespan_tests::{Agent, SpanKind};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

const LATER: [(&str, u16); 5] = [
    ("/status/200/after-0", 200),
    ("/status/404/after-1", 404),
    ("/status/201/after-2", 201),
    ("/status/500/after-3", 500),
    ("/status/202/after-4", 202),
];

#[test]
fn connection_opened_before_the_agent() {
    if !env::require_ebpf() {
        return;
    }
    let server = Server::python();
    let port = server.port.to_string();
    let mut args = vec!["127.0.0.1", port.as_str(), "/status/200/before"];
    args.extend(LATER.iter().map(|(p, _)| *p));
    let mut client = Script::python("py_keepalive_client.py", &args);
    let first = client.read_line(SCRIPT_TIMEOUT);
    let mut f = first.split_whitespace();
    assert_eq!(f.next(), Some("FIRST"), "client said {first:?}");
    assert_eq!(f.next(), Some("200"), "client said {first:?}");
    let local_port = f.next().expect("local port").to_string();

    let pids = format!("{},{}", server.pid(), client.pid());
    let agent = Agent::start_ready(&["--pid", &pids]);

    let (_, window) = Window::measure(|| {
        client.send_line("go");
        for (path, status) in LATER {
            let line = client.read_line(SCRIPT_TIMEOUT);
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(
                f,
                [path, &status.to_string(), &local_port],
                "client output (path, status, local port: the connection must be reused)"
            );
        }
    });
    let client_pid = client.pid();
    assert!(client.wait(SCRIPT_TIMEOUT).success(), "client failed");

    agent.wait_for_spans(
        |s| s.is_client() && s.pid() == Some(client_pid),
        LATER.len(),
        span_timeout(),
    );
    agent.wait_for_spans(
        |s| s.is_server() && s.pid() == Some(server.pid()),
        LATER.len() - 1,
        span_timeout(),
    );
    let stopped = agent.stop();
    stopped.assert_clean_exit();

    let expected: Vec<Expected> = LATER
        .iter()
        .map(|(p, s)| Expected::new("GET", p, *s).within(window))
        .collect();
    expect::assert_spans_match(
        "client on a connection opened before the agent",
        &expect::of(&stopped.spans, client_pid, SpanKind::Client),
        &expected,
        SpanKind::Client,
        server.port,
    );

    let server_spans = expect::of(&stopped.spans, server.pid(), SpanKind::Server);
    let first_later = LATER[0].0;
    let has_first = server_spans.iter().any(|s| s.path() == Some(first_later));
    let server_expected: Vec<Expected> = if has_first {
        expected.clone()
    } else {
        eprintln!(
            "note: no server span for {first_later} (its recv() began before the probes attached)"
        );
        expected[1..].to_vec()
    };
    expect::assert_spans_match(
        "server on a connection accepted before the agent",
        &server_spans,
        &server_expected,
        SpanKind::Server,
        server.port,
    );
    let before: Vec<_> = stopped
        .spans
        .iter()
        .filter(|s| s.path() == Some("/status/200/before"))
        .cloned()
        .collect();
    assert!(
        before.is_empty(),
        "a span for the request made before the agent started:\n{}",
        describe(&before)
    );
}
