//! Connection-table tests with synthetic kernel events: pairing, selection,
//! fd reuse, close and process exit.

use std::sync::Arc;

use wirespan_common::event::{
    AF_INET, Direction, EventHeader, EventKind, Tuple,
    user::{DataPart, Event},
};

use super::ConnTable;
use crate::{
    clock::BootClock,
    select::Selector,
    span::{AttrValue, Span, SpanKind, Status},
    stats::Stats,
};

const ME: u32 = 4242;

fn table(sel: Selector) -> ConnTable {
    ConnTable::new(sel, BootClock::measure(), 64, Arc::new(Stats::default()))
}

fn tuple() -> Tuple {
    let mut t = Tuple {
        family: AF_INET,
        sport: 8080,
        dport: 40000,
        ..Default::default()
    };
    t.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    t.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
    t
}

fn data(t: &mut ConnTable, fd: i32, sk: u64, dir: Direction, ts: u64, bytes: &[u8]) -> Vec<Span> {
    let hdr = EventHeader {
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
    };
    let ev = Event {
        kind: EventKind::Data,
        hdr,
        data: Some(DataPart {
            direction: dir,
            syscall: None,
            tuple: tuple(),
            payload: bytes,
        }),
    };
    let mut out = Vec::new();
    t.on_event(&ev, &mut out);
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
            Some(&AttrValue::Str("127.0.0.2".into()))
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
