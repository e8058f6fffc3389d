//! What the table hands to the kernel filter: untraced processes, muted
//! connections, and a mute told again only when the kernel forgot it.

use std::sync::{Arc, Mutex};

use super::*;
use crate::{
    clock::monotonic_now_ns,
    kernel_filter::{KernelFilter, Mute},
};

#[derive(Default)]
struct Calls {
    untraced: Vec<u32>,
    muted: Vec<(u32, i32, u64, Mute)>,
}

/// Records the calls (the real maps are exercised by the integration
/// tests `non_http` and `selectors`).
struct Recorder(Arc<Mutex<Calls>>);

impl KernelFilter for Recorder {
    fn untrace_process(&mut self, tgid: u32) -> bool {
        self.0.lock().unwrap().untraced.push(tgid);
        true
    }

    fn mute(&mut self, tgid: u32, fd: i32, sk: u64, mute: Mute) -> bool {
        self.0.lock().unwrap().muted.push((tgid, fd, sk, mute));
        true
    }
}

fn filtered(sel: Selector) -> (ConnTable, Arc<Mutex<Calls>>) {
    let calls = Arc::new(Mutex::new(Calls::default()));
    let t = table(sel).with_kernel_filter(Box::new(Recorder(calls.clone())));
    (t, calls)
}

#[test]
fn bytes_that_are_not_http_mute_the_socket_once() {
    let (mut t, calls) = filtered(Selector::default());
    // Not HTTP as the first bytes of a connection seen to begin.
    control(&mut t, EventKind::Accept, 7, 5);
    data(
        &mut t,
        7,
        0x1000,
        Direction::Ingress,
        10,
        b"\x16\x03\x01\x02\x00",
    );
    data(
        &mut t,
        7,
        0x1000,
        Direction::Egress,
        20,
        b"\x16\x03\x03\x00\x7a",
    );
    // Sent before the kernel was told: no second mute.
    assert_eq!(
        calls.lock().unwrap().muted,
        vec![(ME, 7, 0x1000, Mute::Socket)]
    );
    // Started after the mute: the kernel forgot (an LRU eviction); told again.
    let later = monotonic_now_ns() + 1_000_000_000;
    data(&mut t, 7, 0x1000, Direction::Ingress, later, b"more");
    assert_eq!(calls.lock().unwrap().muted.len(), 2);
    assert_eq!(
        t.stats
            .conns_muted
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_connection_not_seen_to_begin_is_never_judged_by_its_first_bytes() {
    // Attached mid-stream: these bytes may be the middle of a body.
    let (mut t, calls) = filtered(Selector::default());
    data(
        &mut t,
        7,
        0x1000,
        Direction::Ingress,
        10,
        b"\x16\x03\x01\x02\x00",
    );
    assert!(calls.lock().unwrap().muted.is_empty());
}

#[test]
fn a_partial_start_line_is_not_judged() {
    let (mut t, calls) = filtered(Selector::default());
    control(&mut t, EventKind::Connect, 7, 5);
    data(&mut t, 7, 0x1000, Direction::Egress, 10, b"GE");
    data(
        &mut t,
        7,
        0x1000,
        Direction::Egress,
        20,
        b"T / HTTP/1.1\r\n\r\n",
    );
    let spans = data(
        &mut t,
        7,
        0x1000,
        Direction::Ingress,
        30,
        b"HTTP/1.1 204 No Content\r\n\r\n",
    );
    assert_eq!(spans.len(), 1);
    assert!(calls.lock().unwrap().muted.is_empty());
}

#[test]
fn a_port_outside_open_ports_mutes_everything() {
    let (mut t, calls) = filtered(Selector {
        open_ports: Some("9000".parse().unwrap()),
        ..Default::default()
    });
    data(
        &mut t,
        3,
        0x2000,
        Direction::Ingress,
        10,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    assert_eq!(
        calls.lock().unwrap().muted,
        vec![(ME, 3, 0x2000, Mute::All)]
    );
}

#[test]
fn a_traced_http_connection_is_not_muted() {
    let (mut t, calls) = filtered(Selector::default());
    data(
        &mut t,
        3,
        0x3000,
        Direction::Ingress,
        10,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    let spans = data(
        &mut t,
        3,
        0x3000,
        Direction::Egress,
        20,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(spans.len(), 1);
    assert!(calls.lock().unwrap().muted.is_empty());
}

#[test]
fn an_unselected_process_is_untraced_once() {
    let (mut t, calls) = filtered(Selector {
        pids: vec![ME + 1],
        ..Default::default()
    });
    data(
        &mut t,
        3,
        0x4000,
        Direction::Ingress,
        10,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    data(
        &mut t,
        4,
        0x5000,
        Direction::Ingress,
        20,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    assert_eq!(calls.lock().unwrap().untraced, vec![ME]);
    assert!(calls.lock().unwrap().muted.is_empty());
}

#[test]
fn first_bytes_that_cannot_start_http1() {
    use crate::protocol::http1::cannot_start_stream;
    for not in [
        &b"\x16\x03\x01\x02\x00"[..],
        b"*3\r\n$3\r\nSET\r\n",
        b"GET foo\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        assert!(
            cannot_start_stream(not),
            "{:?}",
            String::from_utf8_lossy(not)
        );
    }
    for maybe in [
        &b""[..],
        b"GE",
        b"GET /x HTTP/1.1\r\n",
        b"\r\nPOST / HTTP/1.0\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.",
    ] {
        assert!(
            !cannot_start_stream(maybe),
            "{:?}",
            String::from_utf8_lossy(maybe)
        );
    }
}
