//! `traceparent` header injection (issue 4, "sk_msg header injection"; off
//! by default, `--inject-traceparent PORTS`):
//! - the header a receiver gets carries exactly the client span's ids, and
//!   the receiver's span joins through it;
//! - an instrumented request (its own `traceparent`, any letter case) is
//!   never given a second one;
//! - traffic stays intact on an allowlisted port: 1 MB and 32 MB uploads
//!   (hash-checked), keep-alive, ten pipelined requests in one send, a
//!   101 upgrade followed by raw bytes, and non-HTTP bytes.
//!
//! Every test uses its own child cgroup (`--cgroup`), which the test
//! process and its clients enter; sock_ops and sk_msg never touch the root
//! cgroup. Run as root with `--test-threads=1`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use wirespan_tests::agent::{Stopped, span_timeout};
use wirespan_tests::cgroup::TestCgroup;
use wirespan_tests::chain::Received;
use wirespan_tests::clients::{curl, read_responses, upload_hash_checked};
use wirespan_tests::data::seeded_bytes;
use wirespan_tests::env;
use wirespan_tests::servers::Server;
use wirespan_tests::{Agent, Span};

const N: usize = 5;
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// An agent injecting into connections to `port` from `cg`, with no TCP
/// option, printing the spans of `port`; `extra` arguments appended.
fn injecting_agent(cg: &TestCgroup, port: u16, extra: &[&str]) -> Agent {
    let (dir, port) = (cg.arg(), port.to_string());
    let mut args = vec![
        "--cgroup",
        &dir,
        "--propagation",
        "none",
        "--inject-traceparent",
        &port,
        "--open-ports",
        &port,
    ];
    args.extend(extra);
    Agent::start_ready(&args)
}

/// The `traceparent` lines the leaf received for one curl request to `url`.
fn received_traceparents(url: &str) -> Vec<String> {
    let run = curl(&["-g", url]);
    let t = run.only();
    assert_eq!(t.http_code, 200, "{url}");
    Received::parse(&String::from_utf8_lossy(&t.body)).traceparent
}

fn counter(s: &Stopped, name: &str) -> u64 {
    s.counter(name).unwrap_or(0)
}

fn span_for<'a>(spans: &'a [Span], path: &str, pid: u32, server: bool) -> &'a Span {
    spans
        .iter()
        .find(|s| s.path() == Some(path) && s.pid() == Some(pid) && s.is_server() == server)
        .unwrap_or_else(|| {
            panic!(
                "no {} span for {path} from pid {pid}; spans: {}",
                if server { "SERVER" } else { "CLIENT" },
                wirespan_tests::span::describe(spans)
            )
        })
}

#[test]
fn injected_header_carries_the_client_span_and_links_the_server() {
    if !env::require_ebpf() || !env::require_program("curl") {
        return;
    }
    let leaf = Server::py_leaf();
    let cg = TestCgroup::create("inject-ids");
    let agent = injecting_agent(&cg, leaf.port, &[]);
    cg.enter();
    let mut got = Vec::new();
    for i in 0..N {
        let path = format!("/status/200/inject-{i}");
        let run = curl(&[&leaf.url(&path)]);
        let t = run.only();
        assert_eq!(t.http_code, 200, "{path}");
        got.push((
            path,
            run.pid,
            Received::parse(&String::from_utf8_lossy(&t.body)),
        ));
    }
    cg.leave();
    agent.wait_for_spans(|s| s.pid() == Some(leaf.pid()), N, span_timeout());
    let curl_pids: Vec<u32> = got.iter().map(|g| g.1).collect();
    agent.wait_for_spans(
        |s| s.pid().is_some_and(|p| curl_pids.contains(&p)),
        N,
        span_timeout(),
    );
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    for (path, curl_pid, received) in &got {
        let client = span_for(&stopped.spans, path, *curl_pid, false);
        let server = span_for(&stopped.spans, path, leaf.pid(), true);
        let want = format!("00-{}-{}-01", client.trace_id, client.span_id);
        assert_eq!(
            received.traceparent,
            vec![want],
            "{path}: the leaf must receive exactly the curl span's context"
        );
        assert_eq!(
            (&server.trace_id, &server.parent_span_id),
            (&client.trace_id, &client.span_id),
            "{path}: the leaf's span joins curl's through the header"
        );
    }
    assert_eq!(counter(&stopped, "traceparent_injected"), N as u64);
}

#[test]
fn instrumented_requests_are_never_given_a_second_traceparent() {
    if !env::require_ebpf() || !env::require_program("curl") {
        return;
    }
    let leaf = Server::py_leaf();
    let cg = TestCgroup::create("inject-sdk");
    let agent = injecting_agent(&cg, leaf.port, &[]);
    cg.enter();
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for (i, name) in ["traceparent", "TraceParent", "TRACEPARENT"]
        .iter()
        .enumerate()
    {
        let header = format!("{name}: {given}");
        let path = format!("/status/200/sdk-{i}");
        let run = curl(&["-H", &header, &leaf.url(&path)]);
        let received = Received::parse(&String::from_utf8_lossy(&run.only().body));
        assert_eq!(
            received.traceparent,
            vec![given.to_string()],
            "{name}: the request's own traceparent, and only it, must arrive"
        );
    }
    cg.leave();
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    assert_eq!(counter(&stopped, "traceparent_injected"), 0);
    assert_eq!(counter(&stopped, "traceparent_already_present"), 3);
}

#[test]
fn traffic_on_an_injected_port_stays_intact() {
    if !env::require_ebpf() || !env::require_program("curl") {
        return;
    }
    let server = Server::python();
    let cg = TestCgroup::create("inject-integrity");
    let agent = injecting_agent(&cg, server.port, &[]);
    cg.enter();

    // Uploads: the head is injected, the body must arrive byte for byte.
    for (seed, size) in [(51u64, 1usize << 20), (52, 32 << 20)] {
        upload_hash_checked(&server.url("/upload"), seed, size);
    }

    // Keep-alive: five requests on one connection.
    let urls: Vec<String> = (0..5).map(|i| server.url(&format!("/ka-{i}"))).collect();
    let args: Vec<&str> = urls.iter().map(String::as_str).collect();
    let run = curl(&args);
    assert_eq!(run.transfers.len(), 5);
    for (i, t) in run.transfers.iter().enumerate() {
        assert_eq!(
            (t.http_code, String::from_utf8_lossy(&t.body).into_owned()),
            (200, format!("path /ka-{i}\n"))
        );
    }

    // Ten pipelined requests in one send: all answered, in order.
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let batch: String = (0..10)
        .map(|i| format!("GET /pipe-{i} HTTP/1.1\r\nHost: x\r\n\r\n"))
        .collect();
    s.write_all(batch.as_bytes()).expect("send the batch");
    let responses = read_responses(&mut s, &["GET"; 10]).expect("ten responses");
    for (i, r) in responses.iter().enumerate() {
        assert_eq!(
            (r.status, String::from_utf8_lossy(&r.body).into_owned()),
            (200, format!("path /pipe-{i}\n")),
            "pipelined response {i}"
        );
    }
    drop(s);

    // Upgrade: after the 101, raw bytes (that even look like a request)
    // pass untouched both ways.
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .expect("send the upgrade");
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade answer: {head:?}");
    let mut frames = b"GET /not-a-request HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    frames.extend(seeded_bytes(53, 64 * 1024));
    s.write_all(&frames).expect("send after the upgrade");
    let mut back = vec![0u8; frames.len()];
    s.read_exact(&mut back).expect("echo after the upgrade");
    assert!(back == frames, "bytes after the 101 came back changed");
    drop(s);
    cg.leave();

    let stopped = agent.stop();
    stopped.assert_clean_exit();
    // 2 uploads + 5 keep-alive + the first of the pipelined batch (one
    // send, one intent) + the upgrade request; nothing after the 101.
    assert_eq!(counter(&stopped, "traceparent_injected"), 9);
    assert_eq!(counter(&stopped, "traceparent_inject_failed"), 0);
}

#[test]
fn non_http_bytes_on_an_injected_port_are_unchanged() {
    if !env::require_ebpf() {
        return;
    }
    let echo = Server::echo();
    let cg = TestCgroup::create("inject-echo");
    let agent = injecting_agent(&cg, echo.port, &[]);
    cg.enter();
    let mut s = TcpStream::connect(echo.addr()).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let data = seeded_bytes(54, 1 << 20);
    let reader = {
        let mut r = s.try_clone().expect("clone");
        let len = data.len();
        std::thread::spawn(move || {
            let mut back = vec![0u8; len];
            r.read_exact(&mut back).map(|_| back)
        })
    };
    s.write_all(&data).expect("send");
    let back = reader.join().expect("reader").expect("echo");
    cg.leave();
    assert!(back == data, "non-HTTP bytes changed on an injected port");
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    assert_eq!(counter(&stopped, "traceparent_injected"), 0);
}

/// Reads up to the end of a response head, as clients do: into a buffer,
/// not byte by byte (the kernel side notices a 101 from a read that holds
/// the status code; see README). The server sends nothing after the head
/// until we do, so nothing past it is consumed.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut buf).expect("response head");
        assert!(n > 0, "connection closed before the response head ended");
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// `--inject-cidrs`: only connections to those networks get the header.
/// The leaf listens on 127.0.0.1. With 10.0.0.0/8 alone nothing is
/// injected; adding 127.0.0.0/8 injects, both for curl's IPv4 socket and
/// for a dual-stack IPv6 socket connected to `::ffff:127.0.0.1` (the
/// kernel reports that peer in its IPv4-mapped form, which is how the
/// agent stores IPv4 networks).
#[test]
fn injection_is_scoped_by_destination_network() {
    if !env::require_ebpf() || !env::require_program("curl") {
        return;
    }
    let leaf = Server::py_leaf();
    let cg = TestCgroup::create("inject-cidrs");
    let mapped = format!(
        "http://[::ffff:127.0.0.1]:{}/status/200/cidr-mapped",
        leaf.port
    );
    for (cidrs, want) in [("10.0.0.0/8", 0), ("10.0.0.0/8,127.0.0.0/8", 2)] {
        let agent = injecting_agent(&cg, leaf.port, &["--inject-cidrs", cidrs]);
        cg.enter();
        let v4 = received_traceparents(&leaf.url("/status/200/cidr-v4"));
        let v6 = received_traceparents(&mapped);
        cg.leave();
        let stopped = agent.stop();
        stopped.assert_clean_exit();
        assert_eq!(
            (v4.len(), v6.len()),
            (want / 2, want / 2),
            "--inject-cidrs {cidrs}: traceparent lines received over IPv4 and mapped IPv6"
        );
        assert_eq!(
            counter(&stopped, "traceparent_injected"),
            want as u64,
            "--inject-cidrs {cidrs}"
        );
    }
}

/// The inbound `tracestate` travels with the injected `traceparent`: curl
/// (with its own context) → Python forwarder (injection into its calls to
/// the leaf) → leaf, which reports the header lines it received.
///
/// - a short and a 300-byte `tracestate` arrive once each, with the value
///   curl sent (the kernel pads the line with trailing spaces, which are
///   not part of a header's value, RFC 9110 5.5: hence the trim), next to
///   a `traceparent` in curl's trace;
/// - a request without `tracestate` gets none;
/// - one in two header lines, and one of 600 bytes, are not passed on and
///   are counted (`tracestate_dropped`).
#[test]
fn tracestate_travels_with_the_injected_traceparent() {
    if !env::require_ebpf() || !env::require_program("curl") {
        return;
    }
    let cg = TestCgroup::create("inject-state");
    // The forwarder's calls are injected: it must be born in the cgroup.
    cg.enter();
    let leaf = Server::py_leaf();
    let fwd = Server::py_forwarder(&leaf.base_url());
    let agent = injecting_agent(&cg, leaf.port, &[]);
    let long: Vec<String> = (0..20)
        .map(|i| format!("vendor{i:02}=value{i:06}x"))
        .collect();
    let long = long.join(",");
    assert!(long.len() > 256 && long.len() < 512, "{}", long.len());
    let too_long: Vec<String> = (0..40)
        .map(|i| format!("vendor{i:02}=value{i:06}x"))
        .collect();
    let too_long = too_long.join(",");
    assert!(too_long.len() > 512);
    let short = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".to_string();
    let cases: [(&str, Vec<String>, Option<&str>); 5] = [
        ("short", vec![short.clone()], Some(&short)),
        ("long", vec![long.clone()], Some(&long)),
        ("none", vec![], None),
        (
            "two-lines",
            vec!["congo=t61rcWkgMzE".into(), "rojo=00f067aa0ba902b7".into()],
            None,
        ),
        ("too-long", vec![too_long], None),
    ];
    for (i, (name, states, want)) in cases.iter().enumerate() {
        let trace = format!("4bf92f3577b34da6a3ce929d0e0e47{i:02x}");
        let mut args = vec![
            "-H".to_string(),
            format!("traceparent: 00-{trace}-00f067aa0ba902b7-01"),
        ];
        for st in states {
            args.extend(["-H".to_string(), format!("tracestate: {st}")]);
        }
        args.push(fwd.url(&format!("/status/200/state-{name}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = curl(&args);
        let t = run.only();
        assert_eq!(t.http_code, 200, "{name}");
        let got = Received::parse(&String::from_utf8_lossy(&t.body));
        assert_eq!(got.traceparent.len(), 1, "{name}: {:?}", got.traceparent);
        assert!(
            got.traceparent[0].starts_with(&format!("00-{trace}-")),
            "{name}: the leaf's traceparent continues curl's trace: {:?}",
            got.traceparent
        );
        let got_state: Vec<&str> = got.tracestate.iter().map(|s| s.trim_end()).collect();
        assert_eq!(
            got_state,
            want.iter().copied().collect::<Vec<_>>(),
            "{name}: the tracestate lines the leaf received"
        );
    }
    cg.leave();
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    assert_eq!(counter(&stopped, "tracestate_injected"), 2);
    assert_eq!(counter(&stopped, "tracestate_dropped"), 2);
}

/// Issue 4, item 4: a keep-alive connection opened before the agent
/// started is traced from then on and never touched. sock_ops sees a
/// socket only as it is established, so the old connection never joins
/// the SockHash: its requests get no header (and their bytes arrive as
/// sent), while a connection opened afterwards does get one, which proves
/// injection was on.
///
/// The server thread of the old connection sits in `recv()` while the
/// agent attaches; that one read has no syscall entry for the agent, so
/// the first request after the start may go untraced (README, known
/// limitations): four of the five server spans are required.
#[test]
fn a_connection_opened_before_the_agent_is_traced_and_never_injected() {
    if !env::require_ebpf() {
        return;
    }
    let server = Server::python();
    let cg = TestCgroup::create("inject-old");
    cg.enter();
    let mut old = TcpStream::connect(server.addr()).expect("connect");
    old.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let ask = |s: &mut TcpStream, path: &str| {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .expect("send");
        let r = read_responses(s, &["GET"]).expect("one response");
        assert_eq!(
            (
                r[0].status,
                String::from_utf8_lossy(&r[0].body).into_owned()
            ),
            (200, format!("path {path}\n")),
            "{path}"
        );
    };
    ask(&mut old, "/old-before");

    let agent = injecting_agent(&cg, server.port, &[]);
    for i in 0..5 {
        ask(&mut old, &format!("/old-{i}"));
    }
    let mut new = TcpStream::connect(server.addr()).expect("connect");
    new.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    ask(&mut new, "/new-0");
    cg.leave();

    let old_span = |s: &Span| {
        s.is_server()
            && s.pid() == Some(server.pid())
            && s.path()
                .is_some_and(|p| p.starts_with("/old-") && p != "/old-before")
    };
    agent.wait_for_spans(old_span, 4, span_timeout());
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    let traced = stopped.spans.iter().filter(|s| old_span(s)).count();
    assert!(
        (4..=5).contains(&traced),
        "{traced} server spans of the old connection"
    );
    assert_eq!(
        counter(&stopped, "traceparent_injected"),
        1,
        "only the connection opened after the start gets the header"
    );
}
