//! The command line: bad input exits 2 with a one-line error, `--help`
//! explains every flag, and SIGINT/SIGTERM flush pending spans, print the
//! counters and exit 0.
//!
//! Run as root with `--test-threads=1`.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

use wirespan_tests::agent::span_timeout;
use wirespan_tests::clients::{curl, run_with_timeout};
use wirespan_tests::env;
use wirespan_tests::expect::{self, Expected};
use wirespan_tests::servers::Server;
use wirespan_tests::{Agent, SpanKind};

/// Bad input must be rejected before anything is loaded, so quickly.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

fn run_agent(args: &[&str]) -> Output {
    run_with_timeout(
        Command::new(env::agent_bin())
            .env(wirespan_tests::agent::PROPAGATION_ENV, "none")
            .args(args),
        CLI_TIMEOUT,
    )
}

/// Exit code 2, nothing on stdout, and exactly one non-empty line on stderr
/// that contains every string of `mentions` (case-insensitive).
fn assert_one_line_error(what: &str, out: &Output, mentions: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: exit status {} (want 2); stderr:\n{stderr}",
        out.status
    );
    assert_eq!(
        lines.len(),
        1,
        "{what}: want a one-line error on stderr, got {} lines:\n{stderr}",
        lines.len()
    );
    for m in mentions {
        assert!(
            lines[0].to_lowercase().contains(&m.to_lowercase()),
            "{what}: the error should mention {m:?}: {:?}",
            lines[0]
        );
    }
    assert!(
        out.stdout.is_empty(),
        "{what}: nothing belongs on stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The agent binary exists and we are root: a non-root run would fail for
/// that reason before reaching the check a test is about.
fn require_agent_bin_as_root() -> bool {
    if !env::require_agent_bin() {
        return false;
    }
    if !env::is_root() {
        return env::skip("not root (a non-root run would fail for that reason first)");
    }
    true
}

#[test]
fn unknown_flag_exits_2_with_one_line() {
    if !env::require_agent_bin() {
        return;
    }
    let out = run_agent(&["--print", "json", "--no-such-flag"]);
    assert_one_line_error("unknown flag", &out, &["--no-such-flag"]);
}

#[test]
fn nonexistent_pid_exits_2_with_one_line() {
    if !require_agent_bin_as_root() {
        return;
    }
    let out = run_agent(&["--print", "json", "--pid", "999999999"]);
    assert_one_line_error("--pid 999999999", &out, &["999999999"]);
}

#[test]
fn bad_ring_buffer_size_exits_2_with_one_line() {
    if !env::require_agent_bin() {
        return;
    }
    for bad in ["5000", "12288", "1024", "lots"] {
        let out = run_agent(&["--print", "json", "--ring-buffer-bytes", bad]);
        assert_one_line_error(
            &format!("--ring-buffer-bytes {bad}"),
            &out,
            &["--ring-buffer-bytes", "power of two"],
        );
    }
}

#[test]
fn bad_inject_cidrs_exit_2_with_one_line() {
    if !env::require_agent_bin() {
        return;
    }
    let with_ports =
        |cidrs: &str| run_agent(&["--inject-traceparent", "80", "--inject-cidrs", cidrs]);
    for (bad, mention) in [
        ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
        ("10.0.0.0/33", "prefix length"),
        ("10.0.0.0", "address/prefix"),
        ("fd00::1/8", "did you mean fd00::/8"),
        (",", "empty"),
    ] {
        let out = with_ports(bad);
        assert_one_line_error(
            &format!("--inject-cidrs {bad}"),
            &out,
            &["--inject-cidrs", mention],
        );
    }
    // Networks mean nothing without the ports to inject into.
    let out = run_agent(&["--inject-cidrs", "10.0.0.0/8"]);
    assert_one_line_error("--inject-cidrs alone", &out, &["--inject-traceparent"]);
}

#[test]
fn metrics_addr_in_use_exits_2_with_one_line() {
    if !require_agent_bin_as_root() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port to take");
    let addr = taken.local_addr().expect("local addr").to_string();
    let out = run_agent(&["--print", "json", "--metrics-addr", &addr]);
    assert_one_line_error("--metrics-addr in use", &out, &["--metrics-addr", &addr]);
    let out = run_agent(&["--print", "json", "--metrics-addr", "localhost"]);
    assert_one_line_error("--metrics-addr without a port", &out, &["--metrics-addr"]);
}

#[test]
fn non_root_exits_2_with_one_line() {
    if !env::require_agent_bin() {
        return;
    }
    if !env::is_root() {
        // Already unprivileged: run it as we are.
        let out = run_agent(&["--print", "json"]);
        assert_one_line_error("non-root", &out, &["root"]);
        return;
    }
    let Some(setpriv) = env::find_program("setpriv") else {
        env::skip("setpriv (util-linux) is not installed");
        return;
    };
    // A copy that user nobody can reach (the workspace may sit in a private
    // directory).
    let dir = tempfile::Builder::new()
        .prefix("wirespan-nonroot-")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = dir.path().join("wirespan");
    std::fs::copy(env::agent_bin(), &bin).expect("copy the agent");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = run_with_timeout(
        Command::new(setpriv)
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--",
            ])
            .arg(&bin)
            .args(["--print", "json"]),
        CLI_TIMEOUT,
    );
    assert_one_line_error("run as user nobody", &out, &["root"]);
}

#[test]
fn help_explains_every_flag() {
    if !env::require_agent_bin() {
        return;
    }
    let out = run_agent(&["--help"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "--help exited with {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for flag in [
        "--print",
        "--pid",
        "--exe-path",
        "--open-ports",
        "--capture-bytes",
        "--ring-buffer-bytes",
        "--metrics-addr",
        "--inject-traceparent",
        "--inject-cidrs",
    ] {
        assert!(
            stdout.contains(flag),
            "--help does not mention {flag}:\n{stdout}"
        );
    }
    for value in ["text", "json", "off"] {
        assert!(
            stdout.contains(value),
            "--help does not mention the --print value {value:?}:\n{stdout}"
        );
    }
}

/// A request that completed before the stop signal must be in the output:
/// the agent drains what the kernel already reported and flushes pending
/// spans before it exits. No waiting for the span before the signal.
fn flushes_on(signal: libc::c_int, tag: &str) {
    let server = Server::python();
    let pid = server.pid();
    let agent = Agent::start_ready(&["--pid", &pid.to_string()]);
    let path = format!("/status/200/flush-{tag}");
    let run = curl(&[&server.url(&path)]);
    assert_eq!(run.only().http_code, 200);
    let stopped = agent.stop_with(signal);
    stopped.assert_clean_exit();
    expect::assert_spans_match(
        &format!("span of a request completed before {tag}"),
        &expect::of(&stopped.spans, pid, SpanKind::Server),
        &[Expected::new("GET", &path, 200).within(run.window)],
        SpanKind::Server,
        server.port,
    );
}

/// A signal the moment "ready" is printed is a clean stop, not a kill:
/// the handlers are installed before the line (a DaemonSet's probe or an
/// operator may act on it at once). Once with each signal.
#[test]
fn signal_right_at_ready_is_a_clean_stop() {
    if !env::require_ebpf() {
        return;
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        Agent::start_ready(&[])
            .stop_with(signal)
            .assert_clean_exit();
    }
}

#[test]
fn sigint_flushes_and_exits_0() {
    if !env::require_ebpf() {
        return;
    }
    flushes_on(libc::SIGINT, "sigint");
}

#[test]
fn sigterm_flushes_and_exits_0() {
    if !env::require_ebpf() {
        return;
    }
    flushes_on(libc::SIGTERM, "sigterm");
}

/// The agent keeps running and keeps tracing while processes come and go:
/// a second request after a first one was seen still gives a span.
#[test]
fn spans_arrive_while_running() {
    if !env::require_ebpf() {
        return;
    }
    let server = Server::python();
    let pid = server.pid();
    let agent = Agent::start_ready(&["--pid", &pid.to_string()]);
    let mut expected = Vec::new();
    for i in 0..3 {
        let path = format!("/status/200/again-{i}");
        let run = curl(&[&server.url(&path)]);
        assert_eq!(run.only().http_code, 200);
        let got = agent.wait_for_spans(
            |s| s.is_server() && s.pid() == Some(pid),
            i + 1,
            span_timeout(),
        );
        assert_eq!(
            got.len(),
            i + 1,
            "span {i} did not arrive while the agent ran"
        );
        expected.push(Expected::new("GET", &path, 200).within(run.window));
    }
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    expect::assert_spans_match(
        "three requests, one at a time",
        &expect::of(&stopped.spans, pid, SpanKind::Server),
        &expected,
        SpanKind::Server,
        server.port,
    );
}
