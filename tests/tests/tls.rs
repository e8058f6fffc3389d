//! TLS (issue 5): HTTPS services and clients are traced from their
//! plaintext, read at OpenSSL (`SSL_read`/`SSL_write` and their `_ex`
//! forms) by uprobes, in `libssl.so.3` and in binaries that link OpenSSL
//! statically and export its symbols (`node`).
//!
//! The contract checked here: a request over TLS gives exactly one span per
//! side, as for plaintext (method, `url.path`, status code, span status,
//! `server.port`, addresses, kind, times inside the client's own wall-clock
//! window), plus `url.scheme=https`; plaintext spans say `url.scheme=http`.
//! Ciphertext on those sockets never becomes a span, is never counted as a
//! malformed HTTP/1 message, and never makes a request count twice.
//!
//! Every test makes its own self-signed certificate (`openssl req`, in a temp
//! dir, `tls::Certs`); clients verify it as their only CA. Servers:
//! nginx with `listen ... ssl` (libssl.so.3), `servers/py_tls_server.py`
//! (py_server.py's handler over Python's `ssl`, libssl.so.3 loaded when the
//! script imports `ssl`), `servers/node_tls_server.js` (node `https`,
//! OpenSSL inside the `node` binary). Clients: curl (libssl.so.3; a new
//! process each time, so always one that started after the agent) and
//! `servers/py_tls_client.py` (urllib, or http.client on one keep-alive
//! connection).
//!
//! | test | proves |
//! |---|---|
//! | `nginx_https_server_spans` | nginx SERVER spans (GET/POST/HEAD, 200/404/500) |
//! | `curl_https_client_spans` | curl CLIENT spans against nginx |
//! | `python_https_server_and_urllib_client` | Python `http.server` + `ssl` and urllib, both sides |
//! | `node_https_server_spans` | node's `https` server (statically linked OpenSSL) |
//! | `keepalive_curl_50_requests_one_tls_connection` | 50 requests on one TLS connection (nginx) |
//! | `keepalive_python_client_and_server` | 50 on one connection, http.client and Python server, both sides |
//! | `https_upload_5mb` | a 5 MB HTTPS POST (sha256 checked): one span |
//! | `https_server_resets_mid_response`, `https_client_sees_reset` | a TLS connection reset mid-response: ERROR spans with `error.type` |
//! | `started_after_agent_{python,node,nginx}` | an HTTPS server that starts after the agent is traced |
//! | `{python,nginx}_plain_and_tls_in_one_process`, `curl_plain_and_tls_in_one_process` | plaintext and TLS in one process: one span per request, the scheme of its port, no garbage, `http1_malformed` 0 |
//!
//! Run as root with `--test-threads=1`. With `CI=true` a missing
//! prerequisite (eBPF, openssl, nginx, node) fails the test instead of
//! skipping it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use wirespan_tests::agent::{Stopped, span_timeout};
use wirespan_tests::clients::{Script, Window, run_with_timeout};
use wirespan_tests::data::{seeded_bytes, sha256_hex};
use wirespan_tests::env;
use wirespan_tests::expect::{self, Expected};
use wirespan_tests::servers::Server;
use wirespan_tests::span::{STATUS_ERROR, Span, describe};
use wirespan_tests::tls::{self, Certs};
use wirespan_tests::{Agent, SpanKind};

/// Requests per server test.
const N: usize = 20;
/// Requests on the one keep-alive connection.
const KEEPALIVE_N: usize = 50;
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
const FIVE_MB: usize = 5 * 1024 * 1024;
/// curl exit code for "failure in receiving network data".
const CURL_RECV_ERROR: i32 = 56;

/// eBPF, the openssl CLI, and `programs`.
fn require(programs: &[&str]) -> bool {
    env::require_ebpf()
        && tls::require_openssl()
        && programs.iter().all(|p| env::require_program(p))
}

/// N requests: GET, POST and HEAD, statuses 200 and 404 (and one 500), each
/// on a distinct path; every third with a query string that `url.path` must
/// leave out.
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
                format!("?i={i}&q=tls")
            } else {
                String::new()
            };
            (method, format!("/status/{status}/{tag}-{i}"), status, query)
        })
        .collect()
}

/// Makes the [`plan`] against `https://127.0.0.1:PORT`, one curl each;
/// returns each curl's pid with the request it made (window included).
fn curl_plan(certs: &Certs, port: u16, tag: &str) -> Vec<(u32, Expected)> {
    plan(tag)
        .into_iter()
        .map(|(method, path, status, query)| {
            let run = tls::curl_method(
                certs,
                method,
                &tls::https_url(port, &format!("{path}{query}")),
            );
            assert_eq!(
                run.only().http_code,
                status,
                "{method} https {path}: the client got the wrong status while the agent ran"
            );
            (
                run.pid,
                Expected::new(method, &path, status).within(run.window),
            )
        })
        .collect()
}

fn expected_only(runs: Vec<(u32, Expected)>) -> Vec<Expected> {
    runs.into_iter().map(|(_, e)| e).collect()
}

/// SERVER spans of `server` against `expected` (connections to `port`), all
/// with `url.scheme` = `scheme`, with the process's resource, and no span of
/// another kind from it.
fn check_server(
    what: &str,
    stopped: &Stopped,
    server: &Server,
    port: u16,
    expected: &[Expected],
    scheme: &str,
) {
    let pid = server.pid();
    let spans = expect::of(&stopped.spans, pid, SpanKind::Server);
    expect::assert_spans_match(what, &spans, expected, SpanKind::Server, port);
    tls::assert_scheme(what, &spans, scheme);
    expect::assert_resource(what, &spans, pid);
    let others: Vec<Span> = expect::of_pid(&stopped.spans, pid)
        .into_iter()
        .filter(|s| !s.is_server())
        .collect();
    assert!(
        others.is_empty(),
        "{what}: spans that are not SERVER from the server's pid {pid}:\n{}",
        describe(&others)
    );
}

/// Serves the plan over HTTPS from `server` while an agent traces its pid.
fn serve_https_and_check(server: Server, certs: &Certs, tag: &str) {
    let pid = server.pid();
    let agent = Agent::start_ready(&["--pid", &pid.to_string()]);
    let expected = expected_only(curl_plan(certs, server.port, tag));
    agent.wait_for_spans(|s| s.is_server() && s.pid() == Some(pid), N, span_timeout());
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    check_server(
        &format!("{} pid {pid} over TLS", server.name),
        &stopped,
        &server,
        server.port,
        &expected,
        "https",
    );
}

#[test]
fn nginx_https_server_spans() {
    if !require(&["nginx"]) {
        return;
    }
    let certs = Certs::generate();
    serve_https_and_check(tls::nginx(&certs), &certs, "nginx-tls");
}

/// curl (libssl.so.3), selected by `--exe-path`, against nginx over TLS: one
/// CLIENT span per curl process, and nothing from nginx (not selected).
#[test]
fn curl_https_client_spans() {
    if !require(&["nginx"]) {
        return;
    }
    let certs = Certs::generate();
    let server = tls::nginx(&certs);
    let agent = Agent::start_ready(&["--exe-path", "*/curl"]);
    let runs = curl_plan(&certs, server.port, "curl-tls");
    let pids: Vec<u32> = runs.iter().map(|(p, _)| *p).collect();
    agent.wait_for_spans(
        |s| s.is_client() && s.pid().is_some_and(|p| pids.contains(&p)),
        runs.len(),
        span_timeout(),
    );
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    for (pid, e) in runs {
        let what = format!("curl pid {pid} over TLS");
        let spans = expect::of(&stopped.spans, pid, SpanKind::Client);
        expect::assert_spans_match(&what, &spans, &[e], SpanKind::Client, server.port);
        tls::assert_scheme(&what, &spans, "https");
        let others: Vec<Span> = expect::of_pid(&stopped.spans, pid)
            .into_iter()
            .filter(|s| !s.is_client())
            .collect();
        assert!(
            others.is_empty(),
            "{what}: non-CLIENT spans:\n{}",
            describe(&others)
        );
    }
    let nginx_spans = expect::of_pid(&stopped.spans, server.pid());
    assert!(
        nginx_spans.is_empty(),
        "--exe-path '*/curl' traced nginx too:\n{}",
        describe(&nginx_spans)
    );
}

/// Runs `py_tls_client.py MODE` against `port` for `paths` (path, status);
/// `before_go` gets the client's pid before it makes any request. Returns
/// the pid, the window around all requests, and the local port of each.
fn run_py_client(
    mode: &str,
    port: u16,
    certs: &Certs,
    paths: &[(String, u16)],
    before_go: impl FnOnce(u32),
) -> (u32, Window, Vec<String>) {
    let port_arg = port.to_string();
    let cert_arg = certs.cert_arg();
    let mut args = vec![mode, "127.0.0.1", port_arg.as_str(), cert_arg.as_str()];
    args.extend(paths.iter().map(|(p, _)| p.as_str()));
    let mut client = Script::python("py_tls_client.py", &args);
    let pid = client.pid();
    assert_eq!(client.read_line(SCRIPT_TIMEOUT), "WAITING");
    before_go(pid);
    let (local_ports, window) = Window::measure(|| {
        client.send_line("go");
        paths
            .iter()
            .map(|(path, status)| {
                let line = client.read_line(SCRIPT_TIMEOUT);
                let f: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(
                    f.get(..2),
                    Some(&[path.as_str(), status.to_string().as_str()][..]),
                    "py_tls_client.py {mode}: output {line:?} (want path and status)"
                );
                f.get(2).map(|p| p.to_string()).unwrap_or_default()
            })
            .collect::<Vec<_>>()
    });
    assert!(
        client.wait(SCRIPT_TIMEOUT).success(),
        "py_tls_client.py {mode} failed"
    );
    (pid, window, local_ports)
}

/// Python `http.server` wrapped with `ssl`, called by Python urllib over
/// HTTPS (a new TLS connection per request): SERVER and CLIENT spans.
#[test]
fn python_https_server_and_urllib_client() {
    if !require(&[]) {
        return;
    }
    let certs = Certs::generate();
    let server = tls::py_server(&certs);
    let paths: Vec<(String, u16)> = [
        ("/status/200/urllib-tls-0", 200),
        ("/status/404/urllib-tls-1", 404),
        ("/status/201/urllib-tls-2", 201),
        ("/status/503/urllib-tls-3", 503),
        ("/plain/urllib-tls-4", 200),
    ]
    .iter()
    .map(|(p, s)| (p.to_string(), *s))
    .collect();
    let mut agent = None;
    let (client_pid, window, _) = run_py_client("urllib", server.port, &certs, &paths, |pid| {
        agent = Some(Agent::start_ready(&[
            "--pid",
            &format!("{},{pid}", server.pid()),
        ]));
    });
    let agent = agent.expect("agent started");
    agent.wait_for_spans(
        |s| s.is_server() && s.pid() == Some(server.pid()),
        paths.len(),
        span_timeout(),
    );
    agent.wait_for_spans(
        |s| s.is_client() && s.pid() == Some(client_pid),
        paths.len(),
        span_timeout(),
    );
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    let expected: Vec<Expected> = paths
        .iter()
        .map(|(p, s)| Expected::new("GET", p, *s).within(window))
        .collect();
    check_server(
        "python https server",
        &stopped,
        &server,
        server.port,
        &expected,
        "https",
    );
    let client = expect::of(&stopped.spans, client_pid, SpanKind::Client);
    expect::assert_spans_match(
        "python urllib https client",
        &client,
        &expected,
        SpanKind::Client,
        server.port,
    );
    tls::assert_scheme("python urllib https client", &client, "https");
}

/// node's `https` server: OpenSSL is inside the `node` binary, not a
/// shared library.
#[test]
fn node_https_server_spans() {
    if !require(&["node"]) {
        return;
    }
    let certs = Certs::generate();
    serve_https_and_check(tls::node(&certs), &certs, "node-tls");
}

/// Paths for keep-alive: `/status/{200|404|201}/TAG-i`.
fn keepalive_paths(tag: &str) -> Vec<(String, u16)> {
    (0..KEEPALIVE_N)
        .map(|i| {
            let status = match i % 5 {
                1 => 404,
                3 => 201,
                _ => 200,
            };
            (format!("/status/{status}/{tag}-{i}"), status)
        })
        .collect()
}

/// 50 requests from one curl process on one TLS connection to nginx: 50
/// SERVER spans.
#[test]
fn keepalive_curl_50_requests_one_tls_connection() {
    if !require(&["nginx"]) {
        return;
    }
    let certs = Certs::generate();
    let server = tls::nginx(&certs);
    let pid = server.pid();
    let agent = Agent::start_ready(&["--pid", &pid.to_string()]);

    let paths = keepalive_paths("ka-curl-tls");
    let urls: Vec<String> = paths
        .iter()
        .map(|(p, _)| tls::https_url(server.port, p))
        .collect();
    let args: Vec<&str> = urls.iter().map(String::as_str).collect();
    let run = tls::curl(&certs, &args);
    assert!(run.status.success(), "curl: {}", run.stderr);
    assert_eq!(run.transfers.len(), KEEPALIVE_N, "curl transfers");
    assert_eq!(
        run.transfers.iter().map(|t| t.num_connects).sum::<u32>(),
        1,
        "test premise: all {KEEPALIVE_N} requests on one connection"
    );
    for (t, (path, status)) in run.transfers.iter().zip(&paths) {
        assert_eq!(t.http_code, *status, "{path}");
    }

    agent.wait_for_spans(
        |s| s.is_server() && s.pid() == Some(pid),
        KEEPALIVE_N,
        span_timeout(),
    );
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    let expected: Vec<Expected> = paths
        .iter()
        .map(|(p, s)| Expected::new("GET", p, *s).within(run.window))
        .collect();
    check_server(
        "nginx, 50 requests on one TLS connection",
        &stopped,
        &server,
        server.port,
        &expected,
        "https",
    );
}

/// 50 requests on one TLS connection from Python's http.client to the
/// Python server: 50 CLIENT and 50 SERVER spans.
#[test]
fn keepalive_python_client_and_server() {
    if !require(&[]) {
        return;
    }
    let certs = Certs::generate();
    let server = tls::py_server(&certs);
    let paths = keepalive_paths("ka-py-tls");
    let mut agent = None;
    let (client_pid, window, local_ports) =
        run_py_client("keepalive", server.port, &certs, &paths, |pid| {
            agent = Some(Agent::start_ready(&[
                "--pid",
                &format!("{},{pid}", server.pid()),
            ]));
        });
    let agent = agent.expect("agent started");
    assert!(
        local_ports.windows(2).all(|w| w[0] == w[1]),
        "test premise: one connection, but the local ports were {local_ports:?}"
    );
    agent.wait_for_spans(
        |s| s.is_server() && s.pid() == Some(server.pid()),
        KEEPALIVE_N,
        span_timeout(),
    );
    agent.wait_for_spans(
        |s| s.is_client() && s.pid() == Some(client_pid),
        KEEPALIVE_N,
        span_timeout(),
    );
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    let expected: Vec<Expected> = paths
        .iter()
        .map(|(p, s)| Expected::new("GET", p, *s).within(window))
        .collect();
    check_server(
        "python server, 50 requests on one TLS connection",
        &stopped,
        &server,
        server.port,
        &expected,
        "https",
    );
    let client = expect::of(&stopped.spans, client_pid, SpanKind::Client);
    expect::assert_spans_match(
        "python http.client, 50 requests on one TLS connection",
        &client,
        &expected,
        SpanKind::Client,
        server.port,
    );
    tls::assert_scheme("python http.client keep-alive", &client, "https");
}

/// A 5 MB POST over TLS to py_server's /upload, which answers with the
/// sha256 of what it read: the bytes arrive intact while the agent runs,
/// and the upload is one SERVER span with status 200.
#[test]
fn https_upload_5mb() {
    if !require(&[]) {
        return;
    }
    let certs = Certs::generate();
    let server = tls::py_server(&certs);
    let pid = server.pid();
    let data = seeded_bytes(0x7150_0005, FIVE_MB);
    let digest = sha256_hex(&data);
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), &data).expect("write body");
    let agent = Agent::start_ready(&["--pid", &pid.to_string()]);

    let data_arg = format!("@{}", file.path().display());
    let url = tls::https_url(server.port, "/upload");
    let run = tls::curl(
        &certs,
        &[
            "--data-binary",
            &data_arg,
            "-H",
            "Content-Type: application/octet-stream",
            &url,
        ],
    );
    let t = run.only();
    assert_eq!(t.http_code, 200, "upload status");
    assert_eq!(
        String::from_utf8_lossy(&t.body),
        digest,
        "the server received different bytes than the client sent while the agent ran"
    );

    agent.wait_for_spans(|s| s.is_server() && s.pid() == Some(pid), 1, span_timeout());
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    check_server(
        "5 MB HTTPS POST",
        &stopped,
        &server,
        server.port,
        &[Expected::new("POST", "/upload", 200).within(run.window)],
        "https",
    );
}

/// Exactly one span in `spans`, for GET /reset: status ERROR, an
/// `error.type`, `url.scheme=https`, `server.port`, inside `window`.
fn assert_reset_span(what: &str, spans: &[Span], port: u16, window: Window) {
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
        (s.attr_str("url.scheme") != Some("https"))
            .then(|| format!("url.scheme {:?}, want \"https\"", s.attr("url.scheme"))),
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

/// py_server's /reset over TLS: the response head and 1000 of the 100000
/// announced body bytes go out through SSL_write, then the socket is closed
/// with SO_LINGER 0 (a TCP RST, no close_notify). The server's span is an
/// ERROR with `error.type`; a request afterwards is traced normally.
#[test]
fn https_server_resets_mid_response() {
    if !require(&[]) {
        return;
    }
    let certs = Certs::generate();
    let server = tls::py_server(&certs);
    let pid = server.pid();
    let agent = Agent::start_ready(&["--pid", &pid.to_string()]);

    let run = tls::curl(&certs, &[&tls::https_url(server.port, "/reset")]);
    assert_eq!(
        run.exit_code(),
        Some(CURL_RECV_ERROR),
        "test premise: curl must see the reset; stderr: {}",
        run.stderr
    );
    let after = "/status/200/after-tls-reset";
    let ok = tls::curl(&certs, &[&tls::https_url(server.port, after)]);
    assert_eq!(ok.only().http_code, 200);

    let (_, spans) = agent.finish(pid, SpanKind::Server, 2);
    let (after_spans, reset): (Vec<Span>, Vec<Span>) =
        spans.into_iter().partition(|s| s.path() == Some(after));
    assert_reset_span(
        "server side of /reset over TLS",
        &reset,
        server.port,
        run.window,
    );
    expect::assert_spans_match(
        "request after the TLS reset",
        &after_spans,
        &[Expected::new("GET", after, 200).within(ok.window)],
        SpanKind::Server,
        server.port,
    );
    tls::assert_scheme("request after the TLS reset", &after_spans, "https");
}

/// The client side of the TLS reset: curl's CLIENT span is an ERROR with
/// `error.type`.
#[test]
fn https_client_sees_reset() {
    if !require(&[]) {
        return;
    }
    let certs = Certs::generate();
    let server = tls::py_server(&certs);
    let agent = Agent::start_ready(&["--exe-path", "*/curl"]);

    let run = tls::curl(&certs, &[&tls::https_url(server.port, "/reset")]);
    assert_eq!(
        run.exit_code(),
        Some(CURL_RECV_ERROR),
        "test premise: curl must see the reset; stderr: {}",
        run.stderr
    );

    let (_, spans) = agent.finish(run.pid, SpanKind::Client, 1);
    assert_reset_span(
        "curl (client side of /reset over TLS)",
        &spans,
        server.port,
        run.window,
    );
}

/// The real path of the Python interpreter the scripts run on (what
/// /proc/PID/exe will say), asked from Python itself: `env::python()` may be
/// a symlink or a version-manager shim.
fn python_real_exe() -> PathBuf {
    let mut cmd = Command::new(env::python());
    cmd.args([
        "-c",
        "import os, sys; print(os.path.realpath(sys.executable))",
    ]);
    let out = run_with_timeout(&mut cmd, SCRIPT_TIMEOUT);
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn program_real_exe(program: &str) -> PathBuf {
    let p = env::find_program(program).unwrap_or_else(|| panic!("{program} is installed"));
    std::fs::canonicalize(&p).unwrap_or(p)
}

/// The agent starts first, selecting by `--exe-path` (the server's
/// executable, exactly); then the HTTPS server starts, and its requests must
/// give SERVER spans.
fn started_after_agent(exe: PathBuf, start: impl FnOnce(&Certs) -> Server, tag: &str) {
    let certs = Certs::generate();
    let glob = exe.display().to_string();
    let agent = Agent::start_ready(&["--exe-path", &glob]);
    let server = start(&certs);
    assert_eq!(
        server.exe_path(),
        exe,
        "test premise: the server runs the executable the agent selects"
    );
    let pid = server.pid();
    let expected = expected_only(curl_plan(&certs, server.port, tag));
    agent.wait_for_spans(|s| s.is_server() && s.pid() == Some(pid), N, span_timeout());
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    check_server(
        &format!(
            "{} pid {pid}, started after the agent, over TLS",
            server.name
        ),
        &stopped,
        &server,
        server.port,
        &expected,
        "https",
    );
}

/// Python loads libssl.so.3 only when the script imports `ssl`, after exec.
#[test]
fn started_after_agent_python() {
    if !require(&[]) {
        return;
    }
    started_after_agent(python_real_exe(), tls::py_server, "late-py-tls");
}

/// node: OpenSSL is in the executable itself.
#[test]
fn started_after_agent_node() {
    if !require(&["node"]) {
        return;
    }
    started_after_agent(program_real_exe("node"), tls::node, "late-node-tls");
}

/// nginx: libssl.so.3 is a DT_NEEDED library, mapped by ld.so after exec.
#[test]
fn started_after_agent_nginx() {
    if !require(&["nginx"]) {
        return;
    }
    started_after_agent(program_real_exe("nginx"), tls::nginx, "late-nginx-tls");
}

/// Counters that must stay 0 when all traffic is valid HTTP/1 on
/// connections opened after the agent: ciphertext parsed as HTTP would show
/// up here.
fn assert_no_parse_trouble(what: &str, stopped: &Stopped) {
    let counters = stopped.counters.clone().unwrap_or_default();
    for name in ["http1_malformed", "http1_orphan_responses"] {
        assert_eq!(
            tls::counter(&counters, name),
            0,
            "{what}: counter {name} grew although every message was valid HTTP/1 \
             (ciphertext parsed as HTTP?); counters: {counters:?}"
        );
    }
}

/// Splits `spans` into those whose path contains `/TAG-tls-` and
/// `/TAG-plain-`; panics listing any other span (garbage, e.g. parsed
/// ciphertext, or a span for no request of the test).
fn split_tls_plain(what: &str, spans: Vec<Span>, tag: &str) -> (Vec<Span>, Vec<Span>) {
    let tls_mark = format!("/{tag}-tls-");
    let plain_mark = format!("/{tag}-plain-");
    let (tls_spans, rest): (Vec<Span>, Vec<Span>) = spans
        .into_iter()
        .partition(|s| s.path().is_some_and(|p| p.contains(&tls_mark)));
    let (plain_spans, garbage): (Vec<Span>, Vec<Span>) = rest
        .into_iter()
        .partition(|s| s.path().is_some_and(|p| p.contains(&plain_mark)));
    assert!(
        garbage.is_empty(),
        "{what}: {} span(s) for no request of the test (garbage paths?):\n{}",
        garbage.len(),
        describe(&garbage)
    );
    (tls_spans, plain_spans)
}

/// A server process with a TLS port and a plain port, traced by pid;
/// requests alternate between the two. Each request gives exactly one
/// SERVER span, with the scheme and `server.port` of its port.
fn plain_and_tls_server(server: Server, plain_port: u16, certs: &Certs, tag: &str) {
    let pid = server.pid();
    let agent = Agent::start_ready(&["--pid", &pid.to_string()]);
    let mut tls_expected = Vec::new();
    let mut plain_expected = Vec::new();
    for i in 0..N {
        let status = if i % 3 == 1 { 404 } else { 200 };
        let tls_path = format!("/status/{status}/{tag}-tls-{i}");
        let run = tls::curl(certs, &[&tls::https_url(server.port, &tls_path)]);
        assert_eq!(run.only().http_code, status, "https {tls_path}");
        tls_expected.push(Expected::new("GET", &tls_path, status).within(run.window));

        let plain_path = format!("/status/{status}/{tag}-plain-{i}");
        let run = tls::curl(certs, &[&tls::http_url(plain_port, &plain_path)]);
        assert_eq!(run.only().http_code, status, "http {plain_path}");
        plain_expected.push(Expected::new("GET", &plain_path, status).within(run.window));
    }
    agent.wait_for_spans(|s| s.pid() == Some(pid), 2 * N, span_timeout());
    let stopped = agent.stop();
    stopped.assert_clean_exit();

    let what = format!(
        "{} pid {pid} (TLS port {}, plain port {plain_port})",
        server.name, server.port
    );
    let (tls_spans, plain_spans) = split_tls_plain(&what, expect::of_pid(&stopped.spans, pid), tag);
    expect::assert_spans_match(
        &format!("{what}: TLS requests"),
        &tls_spans,
        &tls_expected,
        SpanKind::Server,
        server.port,
    );
    tls::assert_scheme(&format!("{what}: TLS requests"), &tls_spans, "https");
    expect::assert_spans_match(
        &format!("{what}: plaintext requests"),
        &plain_spans,
        &plain_expected,
        SpanKind::Server,
        plain_port,
    );
    tls::assert_scheme(&format!("{what}: plaintext requests"), &plain_spans, "http");
    assert_no_parse_trouble(&what, &stopped);
}

/// One Python process: ThreadingHTTPServer over TLS on one port, plain on
/// another (both py_server.py's handler).
#[test]
fn python_plain_and_tls_in_one_process() {
    if !require(&[]) {
        return;
    }
    let certs = Certs::generate();
    let (server, plain_port) = tls::py_dual_server(&certs);
    plain_and_tls_server(server, plain_port, &certs, "dual-py");
}

/// One nginx worker with a `listen ... ssl` and a plain `listen` in the
/// same server block.
#[test]
fn nginx_plain_and_tls_in_one_process() {
    if !require(&["nginx"]) {
        return;
    }
    let certs = Certs::generate();
    let (server, plain_port) = tls::nginx_dual(&certs);
    plain_and_tls_server(server, plain_port, &certs, "dual-nginx");
}

/// One curl process with both kinds of URL, alternating (two connections,
/// each kept alive): one CLIENT span per request, with the scheme and
/// `server.port` of its connection.
#[test]
fn curl_plain_and_tls_in_one_process() {
    if !require(&[]) {
        return;
    }
    let certs = Certs::generate();
    let (server, plain_port) = tls::py_dual_server(&certs);
    let agent = Agent::start_ready(&["--exe-path", "*/curl"]);
    let tag = "dual-curl";
    let mut urls = Vec::new();
    let mut tls_paths = Vec::new();
    let mut plain_paths = Vec::new();
    for i in 0..10 {
        let status = if i % 3 == 1 { 404 } else { 200 };
        let tls_path = format!("/status/{status}/{tag}-tls-{i}");
        let plain_path = format!("/status/{status}/{tag}-plain-{i}");
        urls.push(tls::https_url(server.port, &tls_path));
        urls.push(tls::http_url(plain_port, &plain_path));
        tls_paths.push((tls_path, status));
        plain_paths.push((plain_path, status));
    }
    let args: Vec<&str> = urls.iter().map(String::as_str).collect();
    let run = tls::curl(&certs, &args);
    assert!(run.status.success(), "curl: {}", run.stderr);
    assert_eq!(run.transfers.len(), urls.len(), "curl transfers");
    let statuses: Vec<u16> = run.transfers.iter().map(|t| t.http_code).collect();
    let want: Vec<u16> = tls_paths
        .iter()
        .zip(&plain_paths)
        .flat_map(|((_, a), (_, b))| [*a, *b])
        .collect();
    assert_eq!(statuses, want, "curl statuses");
    assert_eq!(
        run.transfers.iter().map(|t| t.num_connects).sum::<u32>(),
        2,
        "test premise: one TLS and one plain connection, each reused"
    );

    agent.wait_for_spans(
        |s| s.is_client() && s.pid() == Some(run.pid),
        urls.len(),
        span_timeout(),
    );
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    let what = format!("curl pid {} (TLS and plaintext)", run.pid);
    let (tls_spans, plain_spans) =
        split_tls_plain(&what, expect::of_pid(&stopped.spans, run.pid), tag);
    let expected = |paths: &[(String, u16)]| -> Vec<Expected> {
        paths
            .iter()
            .map(|(p, s)| Expected::new("GET", p, *s).within(run.window))
            .collect()
    };
    expect::assert_spans_match(
        &format!("{what}: TLS requests"),
        &tls_spans,
        &expected(&tls_paths),
        SpanKind::Client,
        server.port,
    );
    tls::assert_scheme(&format!("{what}: TLS requests"), &tls_spans, "https");
    expect::assert_spans_match(
        &format!("{what}: plaintext requests"),
        &plain_spans,
        &expected(&plain_paths),
        SpanKind::Client,
        plain_port,
    );
    tls::assert_scheme(&format!("{what}: plaintext requests"), &plain_spans, "http");
    assert_no_parse_trouble(&what, &stopped);
}

/// A TLS stack the agent cannot read (grpcio's statically linked
/// BoringSSL) is named once per executable in the log and counted. The
/// process imports grpc before the agent starts, so the agent's start-up
/// scan sees it (no timing involved).
#[test]
fn unsupported_tls_stack_is_reported_once() {
    if !env::require_ebpf() || !env::require_otlp_receiver() {
        return;
    }
    let python = env::otlp_python();
    // Two processes of the same executable: still one report.
    let mut holders: Vec<std::process::Child> = (0..2)
        .map(|_| {
            Command::new(&python)
                .args([
                    "-c",
                    "import grpc, sys; print('ready', flush=True); sys.stdin.read()",
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start a python that imports grpc")
        })
        .collect();
    for h in &mut holders {
        use std::io::BufRead;
        let out = h.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("read ready");
        assert_eq!(
            line.trim(),
            "ready",
            "the grpc-importing python did not start"
        );
    }
    let pids: Vec<String> = holders.iter().map(|h| h.id().to_string()).collect();
    let agent = Agent::start_ready(&["--pid", &pids.join(",")]);
    let stopped: Stopped = agent.stop();
    for h in &mut holders {
        drop(h.stdin.take()); // EOF ends it
        let _ = h.wait();
    }
    stopped.assert_clean_exit();
    let reports: Vec<&String> = stopped
        .stderr
        .iter()
        .filter(|l| l.contains("uses grpcio") && l.contains("cannot be decoded"))
        .collect();
    assert_eq!(
        reports.len(),
        1,
        "one warning per executable, got:\n{:#?}",
        stopped.stderr
    );
    let counters = stopped.counters.as_ref().expect("exit counters");
    assert!(
        tls::counter(counters, "tls_unsupported_executables") >= 1,
        "{counters:?}"
    );
}
