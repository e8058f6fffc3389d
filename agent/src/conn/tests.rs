//! Connection-table tests with synthetic kernel events: pairing, selection,
//! fd reuse, close and process exit.

use std::sync::Arc;

use wirespan_common::event::{Direction, EventHeader, EventKind, Tuple, user::Event};

use super::ConnTable;
use crate::{
    clock::BootClock,
    select::Selector,
    span::{AttrValue, Span, SpanKind, Status},
    stats::Stats,
};

mod mute;
mod skip;

const ME: u32 = 4242;

fn table(sel: Selector) -> ConnTable {
    ConnTable::new(sel, BootClock::measure(), 64, Arc::new(Stats::default()))
}

fn tuple() -> Tuple {
    Tuple::v4([127, 0, 0, 1], 8080, [127, 0, 0, 2], 40000)
}

fn data(t: &mut ConnTable, fd: i32, sk: u64, dir: Direction, ts: u64, bytes: &[u8]) -> Vec<Span> {
    data_event(t, data_header(fd, sk, dir, ts, bytes), bytes)
}

/// The header `data` sends (whole payload captured, no stream position).
fn data_header(fd: i32, sk: u64, dir: Direction, ts: u64, bytes: &[u8]) -> EventHeader {
    EventHeader {
        kind: EventKind::Data as u8,
        direction: dir as u8,
        tgid: ME,
        tid: ME,
        fd,
        ts_enter_ns: ts,
        ts_exit_ns: ts + 10,
        sk,
        ret: bytes.len() as i64,
        captured: bytes.len() as u32,
        ..Default::default()
    }
}

/// A data event with header `hdr` and captured bytes `bytes`.
fn data_event(t: &mut ConnTable, hdr: EventHeader, bytes: &[u8]) -> Vec<Span> {
    let dir = Direction::try_from(hdr.direction).unwrap();
    let mut out = Vec::new();
    t.on_event(&Event::data(hdr, dir, tuple(), bytes), &mut out);
    out
}

fn control(t: &mut ConnTable, kind: EventKind, fd: i32, ts: u64) -> Vec<Span> {
    let hdr = EventHeader {
        kind: kind as u8,
        tgid: ME,
        tid: ME,
        fd,
        ts_enter_ns: ts,
        ts_exit_ns: ts,
        ..Default::default()
    };
    let mut out = Vec::new();
    t.on_event(
        &Event {
            kind,
            hdr,
            data: None,
            exec_filename: None,
            intent_tuple: None,
            context: None,
        },
        &mut out,
    );
    out
}

fn status(s: &Span) -> i64 {
    match s.attr("http.response.status_code") {
        Some(AttrValue::Int(c)) => *c,
        _ => -1,
    }
}

fn path(s: &Span) -> &str {
    match s.attr("url.path") {
        Some(AttrValue::Str(p)) => p,
        _ => "",
    }
}

#[test]
fn pipelined_server_requests_pair_in_order() {
    let mut t = table(Selector {
        pids: vec![ME],
        ..Default::default()
    });
    let reqs: String = (0..10)
        .map(|i| format!("GET /p{i}?q=1 HTTP/1.1\r\nHost: h:8080\r\n\r\n"))
        .collect();
    assert!(data(&mut t, 5, 1, Direction::Ingress, 1_000, reqs.as_bytes()).is_empty());
    let mut spans = Vec::new();
    for i in 0..10 {
        let code = 200 + i;
        let resp = format!("HTTP/1.1 {code} X\r\nContent-Length: 2\r\n\r\nok");
        spans.extend(data(
            &mut t,
            5,
            1,
            Direction::Egress,
            2_000 + i as u64 * 100,
            resp.as_bytes(),
        ));
    }
    assert_eq!(spans.len(), 10);
    for (i, s) in spans.iter().enumerate() {
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(path(s), format!("/p{i}"));
        assert_eq!(status(s), 200 + i as i64);
        assert_eq!(s.name, format!("GET /p{i}"));
        assert_eq!(s.attr("server.port"), Some(&AttrValue::Int(8080)));
        assert_eq!(
            s.attr("client.address"),
            Some(&AttrValue::Ip([127, 0, 0, 2].into()))
        );
        assert!(s.end_unix_ns > s.start_unix_ns);
        assert_eq!(s.status, Status::Unset);
        assert_eq!(s.process.pid, ME);
    }
}

#[test]
fn close_mid_response_yields_error_span() {
    let mut t = table(Selector::default());
    data(
        &mut t,
        7,
        1,
        Direction::Ingress,
        10,
        b"GET /reset HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    data(
        &mut t,
        7,
        1,
        Direction::Egress,
        20,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial",
    );
    let spans = control(&mut t, EventKind::Close, 7, 30);
    assert_eq!(spans.len(), 1);
    assert!(matches!(spans[0].status, Status::Error(_)));
    assert!(spans[0].attr("error.type").is_some());
    assert!(t.is_empty());
}

#[test]
fn process_exit_flushes_and_unselected_pids_are_ignored() {
    let mut t = table(Selector {
        pids: vec![ME + 1],
        ..Default::default()
    });
    data(
        &mut t,
        7,
        1,
        Direction::Ingress,
        10,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    assert!(t.is_empty(), "pid not selected");

    let mut t = table(Selector::default());
    data(
        &mut t,
        7,
        1,
        Direction::Ingress,
        10,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    let spans = control(&mut t, EventKind::ProcessExit, -1, 50);
    assert_eq!(spans.len(), 1);
    assert!(matches!(spans[0].status, Status::Error(_)));
    assert!(t.is_empty());
}

#[test]
fn fd_reuse_with_new_socket_starts_a_new_connection() {
    let mut t = table(Selector::default());
    data(
        &mut t,
        7,
        1,
        Direction::Ingress,
        10,
        b"GET /old HTTP/1.1\r\n\r\n",
    );
    // Same fd, different struct sock: the old connection is over.
    let spans = data(
        &mut t,
        7,
        2,
        Direction::Ingress,
        20,
        b"GET /new HTTP/1.1\r\n\r\n",
    );
    assert_eq!(spans.len(), 1);
    assert_eq!(path(&spans[0]), "/old");
    let spans = data(
        &mut t,
        7,
        2,
        Direction::Egress,
        30,
        b"HTTP/1.1 204 No Content\r\n\r\n",
    );
    assert_eq!(spans.len(), 1);
    assert_eq!(path(&spans[0]), "/new");
    assert_eq!(status(&spans[0]), 204);
}

#[test]
fn client_role_and_status_rules() {
    let mut t = table(Selector::default());
    data(
        &mut t,
        3,
        1,
        Direction::Egress,
        10,
        b"GET /missing HTTP/1.1\r\nHost: api:9000\r\n\r\n",
    );
    let spans = data(
        &mut t,
        3,
        1,
        Direction::Ingress,
        20,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s.kind, SpanKind::Client);
    assert!(
        matches!(s.status, Status::Error(_)),
        "4xx is an error on clients"
    );
    assert_eq!(
        s.attr("server.address"),
        Some(&AttrValue::Str("api".into()))
    );
    assert_eq!(s.attr("server.port"), Some(&AttrValue::Int(9000)));
}

#[test]
fn open_ports_filter_uses_the_server_port() {
    let sel = Selector {
        open_ports: Some("9000".parse().unwrap()),
        ..Default::default()
    };
    let mut t = table(sel);
    data(
        &mut t,
        3,
        1,
        Direction::Ingress,
        10,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    let spans = data(
        &mut t,
        3,
        1,
        Direction::Egress,
        20,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(spans.is_empty(), "local port 8080 is not in the list");
}

#[test]
fn table_is_bounded() {
    let stats = Arc::new(Stats::default());
    let mut t = ConnTable::new(Selector::default(), BootClock::measure(), 16, stats.clone());
    for fd in 0..100 {
        data(
            &mut t,
            fd,
            fd as u64 + 1,
            Direction::Ingress,
            fd as u64,
            b"GET / HTTP/1.1\r\n\r\n",
        );
    }
    assert!(t.len() <= 16);
    let evicted = stats
        .conns_evicted
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(evicted >= 84, "evicted {evicted}");
}

/// Builders shared by the linking tests.
mod linking_support {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    pub fn ev(
        tgid: u32,
        tid: u32,
        fd: i32,
        local: u16,
        remote: u16,
        dir: Direction,
        ts: u64,
        bytes: &[u8],
    ) -> Ev<'_> {
        Ev {
            tgid,
            tid,
            fd,
            local,
            remote,
            dir,
            ts,
            bytes,
        }
    }

    pub struct Ev<'a> {
        pub tgid: u32,
        pub tid: u32,
        pub fd: i32,
        pub local: u16,
        pub remote: u16,
        pub dir: Direction,
        pub ts: u64,
        pub bytes: &'a [u8],
    }

    pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

    pub fn send(t: &mut ConnTable, e: Ev<'_>) -> Vec<Span> {
        let tuple = Tuple::v4([127, 0, 0, 1], e.local, [127, 0, 0, 1], e.remote);
        let hdr = EventHeader {
            tgid: e.tgid,
            tid: e.tid,
            fd: e.fd,
            ts_enter_ns: e.ts,
            ts_exit_ns: e.ts + 5,
            sk: e.fd as u64 + 100,
            ret: e.bytes.len() as i64,
            captured: e.bytes.len() as u32,
            ..Default::default()
        };
        let mut out = Vec::new();
        t.on_event(&Event::data(hdr, e.dir, tuple, e.bytes), &mut out);
        out
    }
}

mod linking {
    use super::linking_support::{Ev, OK, send};
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const TRACE: [u8; 16] = [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ];
    const PARENT: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
    #[test]
    fn inbound_traceparent_sets_trace_and_parent() {
        let mut t = table(Selector::default());
        let req = format!("GET /a HTTP/1.1\r\ntraceparent: {TP}\r\ntracestate: k=v\r\n\r\n");
        let ev = |dir, ts, bytes| Ev {
            tgid: 1,
            tid: 1,
            fd: 5,
            local: 8080,
            remote: 40000,
            dir,
            ts,
            bytes,
        };
        send(&mut t, ev(Direction::Ingress, 10, req.as_bytes()));
        let spans = send(&mut t, ev(Direction::Egress, 20, OK));
        assert_eq!(spans[0].trace_id, TRACE);
        assert_eq!(spans[0].parent_span_id, Some(PARENT));
        assert_ne!(spans[0].span_id, PARENT);
        assert_eq!(spans[0].trace_state, "k=v");
    }

    #[test]
    fn malformed_or_duplicated_traceparent_starts_a_new_trace() {
        for bad in [
            format!("traceparent: {}\r\n", TP.to_uppercase()),
            format!("traceparent: {TP}\r\ntraceparent: {TP}\r\n"),
            "traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01\r\n".to_string(),
        ] {
            let mut t = table(Selector::default());
            let req = format!("GET /a HTTP/1.1\r\n{bad}tracestate: k=v\r\n\r\n");
            let ev = |dir, ts, bytes| Ev {
                tgid: 1,
                tid: 1,
                fd: 5,
                local: 8080,
                remote: 40000,
                dir,
                ts,
                bytes,
            };
            send(&mut t, ev(Direction::Ingress, 10, req.as_bytes()));
            let spans = send(&mut t, ev(Direction::Egress, 20, OK));
            assert_ne!(spans[0].trace_id, TRACE, "{bad}");
            assert_eq!(spans[0].parent_span_id, None, "{bad}");
            assert_eq!(
                spans[0].trace_state, "",
                "a bad context is not propagated: {bad}"
            );
        }
    }

    #[test]
    fn client_call_from_the_serving_thread_is_a_child() {
        let mut t = table(Selector::default());
        // Thread 7 of process 1 reads a server request on fd 5...
        let srv = |dir, ts, bytes| Ev {
            tgid: 1,
            tid: 7,
            fd: 5,
            local: 8080,
            remote: 40000,
            dir,
            ts,
            bytes,
        };
        send(
            &mut t,
            srv(Direction::Ingress, 10, b"GET /front HTTP/1.1\r\n\r\n"),
        );
        // ...and, while serving it, calls a backend on fd 6.
        let cli = |dir, ts, bytes| Ev {
            tgid: 1,
            tid: 7,
            fd: 6,
            local: 50000,
            remote: 9000,
            dir,
            ts,
            bytes,
        };
        send(
            &mut t,
            cli(Direction::Egress, 20, b"GET /back HTTP/1.1\r\n\r\n"),
        );
        let client = send(&mut t, cli(Direction::Ingress, 30, OK));
        let server = send(&mut t, srv(Direction::Egress, 40, OK));
        assert_eq!(client[0].kind, SpanKind::Client);
        assert_eq!(client[0].trace_id, server[0].trace_id);
        assert_eq!(client[0].parent_span_id, Some(server[0].span_id));
        assert_eq!(server[0].parent_span_id, None);
        // Another thread's call is not a child.
        let other = |dir, ts, bytes| Ev {
            tgid: 1,
            tid: 8,
            fd: 9,
            local: 50001,
            remote: 9000,
            dir,
            ts,
            bytes,
        };
        send(
            &mut t,
            other(Direction::Egress, 50, b"GET /x HTTP/1.1\r\n\r\n"),
        );
        let lone = send(&mut t, other(Direction::Ingress, 60, OK));
        assert_eq!(lone[0].parent_span_id, None);
        // Nor is a call after the server request ended.
        send(
            &mut t,
            cli(Direction::Egress, 70, b"GET /late HTTP/1.1\r\n\r\n"),
        );
        let late = send(&mut t, cli(Direction::Ingress, 80, OK));
        assert_eq!(late[0].parent_span_id, None);
    }

    #[test]
    fn same_node_peer_links_without_headers() {
        let mut t = table(Selector::default());
        // Process 1 calls 127.0.0.1:9000 from port 50000; process 2 serves it.
        let cli = |dir, ts, bytes| Ev {
            tgid: 1,
            tid: 1,
            fd: 6,
            local: 50000,
            remote: 9000,
            dir,
            ts,
            bytes,
        };
        let srv = |dir, ts, bytes| Ev {
            tgid: 2,
            tid: 2,
            fd: 4,
            local: 9000,
            remote: 50000,
            dir,
            ts,
            bytes,
        };
        send(
            &mut t,
            cli(Direction::Egress, 10, b"GET /api HTTP/1.1\r\n\r\n"),
        );
        send(
            &mut t,
            srv(Direction::Ingress, 20, b"GET /api HTTP/1.1\r\n\r\n"),
        );
        let server = send(&mut t, srv(Direction::Egress, 30, OK));
        let client = send(&mut t, cli(Direction::Ingress, 40, OK));
        assert_eq!(server[0].trace_id, client[0].trace_id);
        assert_eq!(server[0].parent_span_id, Some(client[0].span_id));
    }

    #[test]
    fn chain_of_three_is_one_trace() {
        let mut t = table(Selector::default());
        // curl (pid 1) -> front (pid 2, thread 20) -> back (pid 3).
        let curl = |dir, ts, bytes| Ev {
            tgid: 1,
            tid: 1,
            fd: 3,
            local: 40000,
            remote: 8080,
            dir,
            ts,
            bytes,
        };
        let front_in = |dir, ts, bytes| Ev {
            tgid: 2,
            tid: 20,
            fd: 4,
            local: 8080,
            remote: 40000,
            dir,
            ts,
            bytes,
        };
        let front_out = |dir, ts, bytes| Ev {
            tgid: 2,
            tid: 20,
            fd: 5,
            local: 41000,
            remote: 9090,
            dir,
            ts,
            bytes,
        };
        let back = |dir, ts, bytes| Ev {
            tgid: 3,
            tid: 30,
            fd: 6,
            local: 9090,
            remote: 41000,
            dir,
            ts,
            bytes,
        };
        let req = b"GET /x HTTP/1.1\r\n\r\n";
        send(&mut t, curl(Direction::Egress, 1, req));
        send(&mut t, front_in(Direction::Ingress, 2, req));
        send(&mut t, front_out(Direction::Egress, 3, req));
        send(&mut t, back(Direction::Ingress, 4, req));
        let s_back = send(&mut t, back(Direction::Egress, 5, OK));
        let c_front = send(&mut t, front_out(Direction::Ingress, 6, OK));
        let s_front = send(&mut t, front_in(Direction::Egress, 7, OK));
        let c_curl = send(&mut t, curl(Direction::Ingress, 8, OK));
        let all = [&c_curl[0], &s_front[0], &c_front[0], &s_back[0]];
        assert!(
            all.iter().all(|s| s.trace_id == c_curl[0].trace_id),
            "one trace"
        );
        assert_eq!(c_curl[0].parent_span_id, None);
        assert_eq!(s_front[0].parent_span_id, Some(c_curl[0].span_id));
        assert_eq!(c_front[0].parent_span_id, Some(s_front[0].span_id));
        assert_eq!(s_back[0].parent_span_id, Some(c_front[0].span_id));
    }
}

mod event_loop {
    use super::linking_support::*;
    use super::*;

    #[test]
    fn a_thread_serving_two_requests_links_neither() {
        let mut t = table(Selector::default());
        // One thread (an event loop) reads two requests on two connections...
        let a = |dir, ts, bytes| ev(1, 7, 5, 8080, 40000, dir, ts, bytes);
        let b = |dir, ts, bytes| ev(1, 7, 6, 8080, 40001, dir, ts, bytes);
        send(
            &mut t,
            a(Direction::Ingress, 10, b"GET /a HTTP/1.1\r\n\r\n"),
        );
        send(
            &mut t,
            b(Direction::Ingress, 11, b"GET /b HTTP/1.1\r\n\r\n"),
        );
        // ...then calls upstream: which request caused it is unknowable.
        let up = |dir, ts, bytes| ev(1, 7, 9, 50000, 9000, dir, ts, bytes);
        send(
            &mut t,
            up(Direction::Egress, 12, b"GET /up HTTP/1.1\r\n\r\n"),
        );
        let call = send(&mut t, up(Direction::Ingress, 13, OK));
        assert_eq!(call[0].parent_span_id, None, "no guessing on an event loop");
        // Once /b is answered, a call made while only /a is in flight links to /a.
        send(&mut t, b(Direction::Egress, 14, OK));
        send(
            &mut t,
            up(Direction::Egress, 15, b"GET /up2 HTTP/1.1\r\n\r\n"),
        );
        let call = send(&mut t, up(Direction::Ingress, 16, OK));
        let server_a = send(&mut t, a(Direction::Egress, 17, OK));
        assert_eq!(call[0].parent_span_id, Some(server_a[0].span_id));
    }
}

mod intent_race {
    use super::linking_support::{OK, ev as ev_at, send};
    use super::*;

    fn intent(t: &mut ConnTable, tgid: u32, tid: u32, fd: i32, ts: u64) {
        let hdr = EventHeader {
            kind: EventKind::RequestIntent as u8,
            tgid,
            tid,
            fd,
            ts_enter_ns: ts,
            ts_exit_ns: ts,
            sk: fd as u64 + 100,
            ..Default::default()
        };
        let mut out = Vec::new();
        t.on_event(
            &Event {
                kind: EventKind::RequestIntent,
                hdr,
                data: None,
                exec_filename: None,
                intent_tuple: None,
                context: None,
            },
            &mut out,
        );
        assert!(out.is_empty());
    }

    /// On a keep-alive loopback connection the server's read can reach the
    /// ring buffer before the client's write (data events go at syscall
    /// exit). The intent, sent at the write's entry, still comes first.
    #[test]
    fn server_read_before_client_write_event_still_links() {
        let mut t = table(Selector::default());
        let cli = |dir, ts, bytes| ev_at(1, 1, 6, 50000, 9000, dir, ts, bytes);
        let srv = |dir, ts, bytes| ev_at(2, 2, 4, 9000, 50000, dir, ts, bytes);
        // A first exchange makes the connection known on both sides.
        send(
            &mut t,
            cli(Direction::Egress, 1, b"GET /one HTTP/1.1\r\n\r\n"),
        );
        send(
            &mut t,
            srv(Direction::Ingress, 2, b"GET /one HTTP/1.1\r\n\r\n"),
        );
        send(&mut t, srv(Direction::Egress, 3, OK));
        send(&mut t, cli(Direction::Ingress, 4, OK));
        // Second request: intent, then the server's read wins the race.
        intent(&mut t, 1, 1, 6, 10);
        send(
            &mut t,
            srv(Direction::Ingress, 12, b"GET /two HTTP/1.1\r\n\r\n"),
        );
        send(
            &mut t,
            cli(Direction::Egress, 11, b"GET /two HTTP/1.1\r\n\r\n"),
        );
        let server = send(&mut t, srv(Direction::Egress, 13, OK));
        let client = send(&mut t, cli(Direction::Ingress, 14, OK));
        assert_eq!(server[0].parent_span_id, Some(client[0].span_id));
        assert_eq!(server[0].trace_id, client[0].trace_id);
    }

    /// A brand-new connection (urllib opens one per request): the intent
    /// carries the 4-tuple, so the agent can register the request before
    /// it has seen any data on the connection.
    #[test]
    fn first_request_on_a_new_connection_links_too() {
        let mut t = table(Selector::default());
        let tuple = Tuple::v4([127, 0, 0, 1], 50000, [127, 0, 0, 1], 9000);
        let hdr = EventHeader {
            kind: EventKind::RequestIntent as u8,
            tgid: 1,
            tid: 1,
            fd: 6,
            sk: 106,
            ..Default::default()
        };
        let mut out = Vec::new();
        let ev = Event {
            kind: EventKind::RequestIntent,
            hdr,
            data: None,
            exec_filename: None,
            intent_tuple: Some(tuple),
            context: None,
        };
        t.on_event(&ev, &mut out);
        let cli = |dir, ts, bytes| ev_at(1, 1, 6, 50000, 9000, dir, ts, bytes);
        let srv = |dir, ts, bytes| ev_at(2, 2, 4, 9000, 50000, dir, ts, bytes);
        send(
            &mut t,
            srv(Direction::Ingress, 12, b"GET /new HTTP/1.1\r\n\r\n"),
        );
        send(
            &mut t,
            cli(Direction::Egress, 11, b"GET /new HTTP/1.1\r\n\r\n"),
        );
        let server = send(&mut t, srv(Direction::Egress, 13, OK));
        let client = send(&mut t, cli(Direction::Ingress, 14, OK));
        assert_eq!(server[0].parent_span_id, Some(client[0].span_id));
    }

    #[test]
    fn an_instrumented_request_overrides_its_intent() {
        let mut t = table(Selector::default());
        let cli = |dir, ts, bytes| ev_at(1, 1, 6, 50000, 9000, dir, ts, bytes);
        send(
            &mut t,
            cli(Direction::Egress, 1, b"GET /one HTTP/1.1\r\n\r\n"),
        );
        send(&mut t, cli(Direction::Ingress, 2, OK));
        intent(&mut t, 1, 1, 6, 10);
        let req = "GET /two HTTP/1.1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n";
        send(&mut t, cli(Direction::Egress, 11, req.as_bytes()));
        let client = send(&mut t, cli(Direction::Ingress, 14, OK));
        assert_eq!(
            client[0].parent_span_id,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
    }
}

/// TCP option propagation: the kernel chooses ids and the agent must report
/// exactly those (they are on the wire).
mod kernel_context {
    use std::sync::Mutex;

    use wirespan_common::event::{WireContext, user::KernelContext};

    use super::linking_support::{OK, ev, send};
    use super::*;
    use crate::link::Linker;

    const OPT: WireContext = WireContext {
        trace_id: [7; 16],
        span_id: [9; 8],
    };

    fn control(t: &mut ConnTable, kind: EventKind, tid: u32, fd: i32, ctx: KernelContext) {
        let hdr = EventHeader {
            kind: kind as u8,
            tgid: 1,
            tid,
            fd,
            sk: fd as u64 + 100,
            ..Default::default()
        };
        let mut out = Vec::new();
        t.on_event(
            &Event {
                kind,
                hdr,
                data: None,
                exec_filename: None,
                intent_tuple: None,
                context: Some(ctx),
            },
            &mut out,
        );
    }

    /// Server on fd 4 (port 9000), client call on fd 6 by the same thread.
    #[test]
    fn option_parent_and_kernel_client_ids_are_reported() {
        let mut t = table(Selector::default());
        let srv = |dir, ts, bytes| ev(1, 1, 4, 9000, 50000, dir, ts, bytes);
        let up = |dir, ts, bytes| ev(1, 1, 6, 50001, 9100, dir, ts, bytes);
        let from_peer = KernelContext {
            ctx: OPT,
            from_peer: true,
        };
        control(&mut t, EventKind::ServerContext, 1, 4, from_peer);
        send(
            &mut t,
            srv(Direction::Ingress, 1, b"GET /a HTTP/1.1\r\n\r\n"),
        );
        let call = WireContext {
            trace_id: OPT.trace_id,
            span_id: [5; 8],
        };
        control(
            &mut t,
            EventKind::RequestIntent,
            1,
            6,
            KernelContext {
                ctx: call,
                from_peer: false,
            },
        );
        send(
            &mut t,
            up(Direction::Egress, 2, b"GET /up HTTP/1.1\r\n\r\n"),
        );
        let client = send(&mut t, up(Direction::Ingress, 3, OK));
        let server = send(&mut t, srv(Direction::Egress, 4, OK));
        assert_eq!(server[0].trace_id, OPT.trace_id);
        assert_eq!(server[0].parent_span_id, Some(OPT.span_id));
        assert_eq!(client[0].trace_id, OPT.trace_id);
        assert_eq!(client[0].span_id, [5; 8], "the id on the wire");
        assert_eq!(client[0].parent_span_id, Some(server[0].span_id));
    }

    /// An inbound traceparent wins over the kernel's new trace, and the
    /// kernel is told the thread's real trace.
    #[test]
    fn traceparent_wins_and_corrects_the_kernel() {
        type Told = Vec<(u64, [u8; 16])>;
        let told: Arc<Mutex<Told>> = Arc::default();
        let sink = told.clone();
        let linker = Linker::with_thread_trace(Box::new(move |k, tr| {
            if let Ok(mut v) = sink.lock() {
                v.push((k, tr));
            }
        }));
        let mut t = ConnTable::with_linker(
            Selector::default(),
            BootClock::measure(),
            64,
            Arc::new(Stats::default()),
            linker,
        );
        let new_trace = KernelContext {
            ctx: WireContext {
                trace_id: [3; 16],
                span_id: [0; 8],
            },
            from_peer: false,
        };
        control(&mut t, EventKind::ServerContext, 2, 4, new_trace);
        let req = "GET /a HTTP/1.1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n";
        let srv = |dir, ts, bytes| ev(1, 2, 4, 9000, 50000, dir, ts, bytes);
        send(&mut t, srv(Direction::Ingress, 1, req.as_bytes()));
        let server = send(&mut t, srv(Direction::Egress, 2, OK));
        assert_eq!(server[0].trace_id[0], 0x4b);
        let told = told.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(told, vec![((1u64 << 32) | 2, server[0].trace_id)]);
    }

    /// No option and no peer: the server span is a root in the kernel's new
    /// trace, which the thread's calls carry.
    #[test]
    fn new_trace_from_the_kernel_is_used() {
        let mut t = table(Selector::default());
        let srv = |dir, ts, bytes| ev(1, 1, 4, 9000, 50000, dir, ts, bytes);
        let new_trace = KernelContext {
            ctx: WireContext {
                trace_id: [3; 16],
                span_id: [0; 8],
            },
            from_peer: false,
        };
        control(&mut t, EventKind::ServerContext, 1, 4, new_trace);
        send(
            &mut t,
            srv(Direction::Ingress, 1, b"GET /a HTTP/1.1\r\n\r\n"),
        );
        let server = send(&mut t, srv(Direction::Egress, 2, OK));
        assert_eq!(server[0].trace_id, [3; 16]);
        assert_eq!(server[0].parent_span_id, None);
    }
}
