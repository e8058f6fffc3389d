//! Non-HTTP traffic must give no HTTP spans and no agent errors, and must
//! pass through intact: seeded random bytes through a TCP echo server, and
//! redis (redis-cli, raw RESP, and inline commands such as `GET foo`, which
//! start like an HTTP request line but are not one).
//!
//! A connection seen to begin that carries no HTTP/1 start line in its
//! first eight syscalls gets muted in the kernel: the rest of its syscalls
//! send no payload (`payloads_muted`).
//!
//! Ordering without sleeps: after the non-HTTP traffic, each test makes one
//! HTTP request to a traced marker server and waits for its span. The kernel
//! ring buffer is ordered, so by then the agent has consumed every event of
//! the earlier traffic; stopping the agent then flushes anything pending.
//!
//! Run as root with `--test-threads=1`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::Duration;

use wirespan_tests::agent::{Stopped, span_timeout};
use wirespan_tests::clients::{curl, run_with_timeout};
use wirespan_tests::data::seeded_bytes;
use wirespan_tests::env;
use wirespan_tests::expect;
use wirespan_tests::metrics;
use wirespan_tests::servers::Server;
use wirespan_tests::span::describe;
use wirespan_tests::{Agent, SpanKind};

const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Marker request, then stop the agent and return what it printed.
fn barrier_and_stop(agent: Agent, marker: &Server) -> Stopped {
    let run = curl(&[&marker.url("/status/200/barrier")]);
    assert_eq!(run.only().http_code, 200);
    let got = agent.wait_for_spans(
        |s| s.is_server() && s.pid() == Some(marker.pid()),
        1,
        span_timeout(),
    );
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    assert_eq!(
        got.len(),
        1,
        "the HTTP marker request (the ordering barrier) gave no span; all spans:\n{}",
        describe(&stopped.spans)
    );
    stopped
}

fn assert_no_spans_from(stopped: &Stopped, pid: u32, what: &str) {
    let spans = expect::of_pid(&stopped.spans, pid);
    assert!(
        spans.is_empty(),
        "{what} (pid {pid}) is not HTTP but gave {} span(s):\n{}",
        spans.len(),
        describe(&spans)
    );
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    s
}

/// Streams `data` through the echo server (writer thread + reader) and
/// returns what came back.
fn echo_stream(server: &Server, data: &[u8]) -> Vec<u8> {
    let stream = connect(server);
    let mut writer = stream.try_clone().expect("clone socket");
    let out = data.to_vec();
    let sender = std::thread::spawn(move || {
        for chunk in out.chunks(64 * 1024) {
            writer.write_all(chunk).expect("write to echo server");
        }
        writer.shutdown(Shutdown::Write).expect("shutdown write");
    });
    let mut back = Vec::with_capacity(data.len());
    (&stream).read_to_end(&mut back).expect("read echo");
    sender.join().expect("writer thread");
    back
}

#[test]
fn random_bytes_through_echo_server() {
    if !env::require_ebpf() {
        return;
    }
    let echo = Server::echo();
    let marker = Server::python();
    let pids = format!("{},{}", echo.pid(), marker.pid());
    let agent = Agent::start_ready(&["--pid", &pids, "--metrics-addr", "127.0.0.1:0"]);
    let metrics_addr = metrics::addr(&agent);

    // Ping-pong: 200 random messages of random sizes on one connection
    // (first: the only connection the agent judges while the test waits).
    let msgs = seeded_bytes(0xec40_0002, 200 * 1500);
    let sizes = seeded_bytes(0xec40_0003, 200);
    let mut stream = connect(&echo);
    let mut offset = 0;
    for (i, size) in sizes.into_iter().enumerate() {
        if i == 5 {
            // Five messages are ten syscalls of the echo server: the agent
            // has muted the connection. The other 195 must pass untouched
            // with the kernel leaving their payload out.
            metrics::wait_for_counter(metrics_addr, "conns_muted", 1, "the echo connection");
        }
        let len = 1 + usize::from(size) * 5;
        let msg = &msgs[offset..offset + len];
        offset += len;
        stream.write_all(msg).expect("write");
        let mut reply = vec![0u8; len];
        stream.read_exact(&mut reply).expect("read reply");
        assert!(reply == msg, "echo ping-pong corrupted");
    }
    drop(stream);

    // 1 MiB of seeded random bytes in one streamed connection (muted or
    // not by the time it ends, it must come back intact).
    let data = seeded_bytes(0xec40_0001, 1024 * 1024);
    let back = echo_stream(&echo, &data);
    assert!(
        back == data,
        "echo data corrupted while the agent ran: sent {} bytes, got {} back (first difference at {:?})",
        data.len(),
        back.len(),
        data.iter().zip(&back).position(|(a, b)| a != b)
    );

    let stopped = barrier_and_stop(agent, &marker);
    assert_no_spans_from(&stopped, echo.pid(), "the echo server");
    stopped.assert_no_error_logs();
    // 195 messages read and written back by the echo server.
    assert_muted(&stopped, 1, 2 * 195);
}

/// The agent muted at least `conns` connections, and the kernel then left
/// out the payload of at least `payloads` syscalls.
fn assert_muted(stopped: &Stopped, conns: u64, payloads: u64) {
    let muted = stopped.counter("conns_muted").unwrap_or(0);
    let left_out = stopped.counter("payloads_muted").unwrap_or(0);
    assert!(
        muted >= conns && left_out >= payloads,
        "want at least {conns} connections muted and {payloads} payloads left out by the kernel; got conns_muted {muted}, payloads_muted {left_out}; stderr:\n{}",
        stopped.stderr.join("\n")
    );
    assert_eq!(stopped.counter("kernel_filter_refused"), Some(0));
}

#[test]
fn redis_protocol() {
    if !env::require_ebpf()
        || !env::require_program("redis-server")
        || !env::require_program("redis-cli")
    {
        return;
    }
    let redis = Server::redis();
    let marker = Server::python();
    let pids = format!("{},{}", redis.pid(), marker.pid());
    let agent = Agent::start_ready(&["--pid", &pids, "--metrics-addr", "127.0.0.1:0"]);
    let metrics_addr = metrics::addr(&agent);

    // redis-cli, the real client.
    let port = redis.port.to_string();
    let cli = |args: &[&str]| -> String {
        let cli = env::find_program("redis-cli").expect("redis-cli");
        let out = run_with_timeout(
            Command::new(cli)
                .args(["-h", "127.0.0.1", "-p", &port])
                .args(args),
            IO_TIMEOUT,
        );
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "greeting", "hello world"]), "OK");
    assert_eq!(cli(&["GET", "greeting"]), "hello world");
    assert_eq!(cli(&["INCR", "counter"]), "1");
    assert_eq!(cli(&["RPUSH", "list", "a", "b", "c"]), "3");
    assert_eq!(cli(&["LRANGE", "list", "0", "-1"]), "a\nb\nc");
    assert_eq!(cli(&["PING"]), "PONG");

    // Raw RESP and inline commands on one connection, some pipelined in one
    // write. `GET /index.html` and `GET foo` look like the start of an HTTP
    // request line but carry no HTTP version.
    let mut stream = connect(&redis);
    let exchanges: [(&[u8], &[u8]); 5] = [
        (b"*3\r\n$3\r\nSET\r\n$3\r\nfoo\r\n$3\r\nbar\r\n", b"+OK\r\n"),
        (b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n", b"$3\r\nbar\r\n"),
        (b"GET foo\r\n", b"$3\r\nbar\r\n"),
        (
            b"SET /index.html HTTP\r\nGET /index.html\r\nPING\r\n",
            b"+OK\r\n$4\r\nHTTP\r\n+PONG\r\n",
        ),
        (
            b"*3\r\n$3\r\nSET\r\n$3\r\nbin\r\n$16\r\n\x00\x01\x02\xff\xfe\r\n\r\nGET / H\r\n",
            b"+OK\r\n",
        ),
    ];
    for (request, want) in exchanges {
        stream.write_all(request).expect("write RESP");
        let mut reply = vec![0u8; want.len()];
        stream.read_exact(&mut reply).expect("read RESP reply");
        assert_eq!(
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(want),
            "redis reply to {:?}",
            String::from_utf8_lossy(request)
        );
    }
    // Ten syscalls of redis on this connection: the agent has muted it.
    // Ten more PINGs must pass untouched with their payload left out.
    metrics::wait_for_counter(metrics_addr, "conns_muted", 1, "the raw redis connection");
    for _ in 0..10 {
        stream.write_all(b"PING\r\n").expect("write PING");
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).expect("read PONG");
        assert_eq!(&reply, b"+PONG\r\n");
    }
    drop(stream);

    let stopped = barrier_and_stop(agent, &marker);
    assert_no_spans_from(&stopped, redis.pid(), "redis-server");
    stopped.assert_no_error_logs();
    // The ten PINGs, read and answered.
    assert_muted(&stopped, 1, 2 * 10);
    // The marker is the only HTTP traffic of this test.
    assert_eq!(
        expect::of(&stopped.spans, marker.pid(), SpanKind::Server).len(),
        1,
        "marker server spans:\n{}",
        describe(&stopped.spans)
    );
}
