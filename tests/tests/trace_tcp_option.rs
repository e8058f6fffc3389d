//! Trace context in the TCP header option (issue 4, "Propagation on the
//! wire"), the default-on path:
//! - two agents that cannot see each other's processes (each is its own
//!   "node": kernel-side `--pid` filter, its own child cgroup) still make
//!   one trace of a request through python (agent A) → java → nginx
//!   (agent B): the only thing that crosses from A to B is the option;
//! - a receiver without the agent (a server outside the cgroup: its kernel
//!   never parses the option) gets every byte intact: 1 MB and 32 MB
//!   uploads, hash-checked, and keep-alive requests.
//!
//! The sock_ops programs are attached only to child cgroups the tests
//! create (never the root cgroup). Run as root with `--test-threads=1`.

use wirespan_tests::SpanKind;
use wirespan_tests::agent::Stopped;
use wirespan_tests::cgroup::TestCgroup;
use wirespan_tests::chain::{self, ExpectedTrace};
use wirespan_tests::clients::{curl, upload_hash_checked};
use wirespan_tests::env;
use wirespan_tests::servers::Server;
use wirespan_tests::{Agent, agent::span_timeout};

const CLIENT: SpanKind = SpanKind::Client;
const SERVER: SpanKind = SpanKind::Server;
const N: usize = 10;

/// `expected` with only the hops of `pids`: what one of two agents sees.
fn hops_of(expected: &[ExpectedTrace], pids: &[u32]) -> Vec<ExpectedTrace> {
    expected
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.hops.retain(|h| pids.contains(&h.pid));
            e
        })
        .collect()
}

fn counter(s: &Stopped, name: &str) -> u64 {
    s.counter(name).unwrap_or(0)
}

#[test]
fn option_alone_links_two_agents_that_see_nothing_of_each_other() {
    if !env::require_ebpf() || !env::require_program("nginx") || !chain::require_java() {
        return;
    }
    let node_a = TestCgroup::create("node-a");
    let node_b = TestCgroup::create("node-b");
    node_b.enter();
    let nginx = Server::nginx();
    let java = Server::java_forwarder(&nginx.base_url());
    node_a.enter();
    let py = Server::py_forwarder(&java.base_url());
    node_a.leave();

    let (a_dir, b_dir) = (node_a.arg(), node_b.arg());
    let (py_pid, java_pid, nginx_pid) = (
        py.pid().to_string(),
        java.pid().to_string(),
        nginx.pid().to_string(),
    );
    let agent_a = Agent::start_ready(&["--pid", &py_pid, "--cgroup", &a_dir]);
    let agent_b =
        Agent::start_ready(&["--pid", &java_pid, "--pid", &nginx_pid, "--cgroup", &b_dir]);

    let mut expected = Vec::new();
    for i in 0..N {
        let path = format!("/status/200/two-nodes-{i}");
        // curl runs outside both cgroups and is traced by neither agent.
        let run = curl(&[&py.url(&path)]);
        let t = run.only();
        assert_eq!(
            (t.http_code, String::from_utf8_lossy(&t.body).into_owned()),
            (200, format!("status 200 {path}\n")),
            "{path}: wrong answer through the chain"
        );
        expected.push(ExpectedTrace::chain(
            &path,
            200,
            &[
                ("python SERVER (agent A)", py.pid(), SERVER, py.port),
                ("python CLIENT (agent A)", py.pid(), CLIENT, java.port),
                ("java SERVER (agent B)", java.pid(), SERVER, java.port),
                ("java CLIENT (agent B)", java.pid(), CLIENT, nginx.port),
                ("nginx SERVER (agent B)", nginx.pid(), SERVER, nginx.port),
            ],
        ));
    }

    // Each agent is waited for with its own hops only.
    let only = |pids: &[u32]| hops_of(&expected, pids);
    let stopped_a = chain::collect(agent_a, &only(&[py.pid()]));
    let stopped_b = chain::collect(agent_b, &only(&[java.pid(), nginx.pid()]));
    let mut spans = stopped_a.spans_where(|s| s.pid() == Some(py.pid()));
    spans.extend(
        stopped_b.spans_where(|s| s.pid() == Some(java.pid()) || s.pid() == Some(nginx.pid())),
    );
    let traces = chain::assert_traces(
        "python (agent A) -> java -> nginx (agent B)",
        &spans,
        &expected,
    );
    eprintln!(
        "[test] {} traces across two agents, e.g.:\n{}",
        traces.len(),
        chain::show_all(&traces[0])
    );
    // B saw nothing of python: the java SERVER's parent came from the wire.
    assert!(
        stopped_b.spans.iter().all(|s| s.pid() != Some(py.pid())),
        "agent B traced the python forwarder; the test would not prove the option"
    );
    let (written_a, read_b) = (
        counter(&stopped_a, "tcp_options_written"),
        counter(&stopped_b, "tcp_options_read"),
    );
    assert!(
        written_a >= N as u64 && read_b >= 2 * N as u64,
        "TCP options: agent A wrote {written_a}, agent B read {read_b} (want >= {N} and >= {})",
        2 * N
    );
    drop((py, java, nginx));
}

#[test]
fn receiver_without_the_agent_gets_intact_uploads_and_keepalive() {
    if !env::require_ebpf() || !env::require_program("curl") {
        return;
    }
    // The server is born outside the cgroup: no sock_ops program ever sees
    // its sockets, exactly like a node without the agent.
    let server = Server::python();
    let cg = TestCgroup::create("client-only");
    let dir = cg.arg();
    let port = server.port.to_string();
    let agent = Agent::start_ready(&["--cgroup", &dir, "--open-ports", &port]);
    cg.enter();

    for (seed, size) in [(41u64, 1usize << 20), (42, 32 << 20)] {
        upload_hash_checked(&server.url("/upload"), seed, size);
    }
    // Keep-alive: five requests on one connection, each answered whole.
    let urls: Vec<String> = (0..5).map(|i| server.url(&format!("/ka-{i}"))).collect();
    let args: Vec<&str> = urls.iter().map(String::as_str).collect();
    let run = curl(&args);
    cg.leave();
    assert_eq!(
        run.transfers.len(),
        5,
        "keep-alive transfers: {:?}",
        run.stderr
    );
    for t in &run.transfers {
        assert_eq!(t.http_code, 200, "keep-alive request status");
    }
    assert!(
        run.transfers.iter().map(|t| t.num_connects).sum::<u32>() <= 1,
        "curl reused one connection for the keep-alive requests"
    );

    agent.wait_for_spans(
        |s| s.is_server() && s.pid() == Some(server.pid()),
        7,
        span_timeout(),
    );
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    let written = counter(&stopped, "tcp_options_written");
    let read = counter(&stopped, "tcp_options_read");
    assert!(
        written >= 7,
        "the option was written on {written} segments, want one per request at least"
    );
    assert_eq!(
        read, 0,
        "nothing in the cgroup receives: no option may be read"
    );
}

/// With TLS the option still links: curl (agent A, its own cgroup) calls
/// nginx over HTTPS (agent B, which traces only nginx): the encrypted
/// request's segments carry curl's span ids, and nginx's span, decoded
/// from OpenSSL's plaintext, joins curl's trace as its child.
#[test]
fn option_links_https_across_two_agents() {
    if !env::require_ebpf()
        || !env::require_program("nginx")
        || !env::require_program("curl")
        || !wirespan_tests::tls::require_openssl()
    {
        return;
    }
    let certs = wirespan_tests::tls::Certs::generate();
    let node_a = TestCgroup::create("tls-a");
    let node_b = TestCgroup::create("tls-b");
    node_b.enter();
    let nginx = wirespan_tests::tls::nginx(&certs);
    node_b.leave();
    let (a_dir, b_dir, nginx_pid) = (node_a.arg(), node_b.arg(), nginx.pid().to_string());
    let agent_a = Agent::start_ready(&["--exe-path", "*/curl", "--cgroup", &a_dir]);
    let agent_b = Agent::start_ready(&["--pid", &nginx_pid, "--cgroup", &b_dir]);

    node_a.enter();
    let mut expected = Vec::new();
    for i in 0..N {
        let path = format!("/tls-option-{i}");
        let run = wirespan_tests::tls::curl(
            &certs,
            &[&wirespan_tests::tls::https_url(nginx.port, &path)],
        );
        assert_eq!(run.only().http_code, 200, "{path} over HTTPS");
        expected.push(ExpectedTrace::chain(
            &path,
            200,
            &[
                ("curl CLIENT (agent A)", run.pid, CLIENT, nginx.port),
                ("nginx SERVER (agent B)", nginx.pid(), SERVER, nginx.port),
            ],
        ));
    }
    node_a.leave();

    let curl_pids: Vec<u32> = expected.iter().map(|e| e.hops[0].pid).collect();
    let only = |pids: &[u32]| hops_of(&expected, pids);
    let stopped_a = chain::collect(agent_a, &only(&curl_pids));
    let stopped_b = chain::collect(agent_b, &only(&[nginx.pid()]));
    let mut spans = stopped_a.spans_where(|s| s.pid().is_some_and(|p| curl_pids.contains(&p)));
    spans.extend(stopped_b.spans_where(|s| s.pid() == Some(nginx.pid())));
    let traces = chain::assert_traces("curl (agent A) -> nginx HTTPS (agent B)", &spans, &expected);
    assert_eq!(traces.len(), N);
    assert!(
        counter(&stopped_b, "tcp_options_read") >= N as u64,
        "agent B read {} options",
        counter(&stopped_b, "tcp_options_read")
    );
}

/// The blocking-socket hazard of header injection (a socket in a SockHash
/// reads through `tcp_bpf_recvmsg`, and a blocking `recv()` after a large
/// send and `shutdown(SHUT_WR)` sometimes returns EAGAIN): the configuration
/// we ship, the TCP option, puts no socket in any SockHash, so 20 rounds of
/// 64 MB sends by a blocking Python socket inside the agent's cgroup must
/// all get their answer.
#[test]
fn blocking_recv_after_large_send_is_unaffected() {
    if !env::require_ebpf() {
        return;
    }
    let cg = TestCgroup::create("blocking");
    let dir = cg.arg();
    let agent = Agent::start_ready(&["--cgroup", &dir]);
    cg.enter();
    let mut cmd = std::process::Command::new(env::python());
    cmd.arg(env::server_script("blocking_recv.py"))
        .args(["20", &(64usize << 20).to_string()]);
    let out =
        wirespan_tests::clients::run_with_timeout(&mut cmd, std::time::Duration::from_secs(300));
    cg.leave();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("[test] blocking_recv.py: {}", stdout.trim());
    assert!(
        out.status.success(),
        "blocking recv() failed with the agent's sock_ops attached: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.stop().assert_clean_exit();
}
