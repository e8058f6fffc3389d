//! What the table hands to the kernel filter: untraced processes, muted
//! connections, and a mute told again only when the kernel forgot it.

use std::sync::{Arc, Mutex};

use wirespan_common::maps::SocketEntry;

use super::*;
use crate::{
    clock::monotonic_now_ns,
    conn::NOT_HTTP_AFTER,
    kernel_filter::{KernelFilter, Mute, Told},
};

#[derive(Default)]
pub(super) struct Calls {
    pub untraced: Vec<u32>,
    pub muted: Vec<(u32, i32, u64, Mute)>,
    pub skips: Vec<(u32, i32, SocketEntry)>,
}

/// Records the calls (the real maps are exercised by the integration
/// tests `non_http`, `selectors` and `bodies`).
struct Recorder(Arc<Mutex<Calls>>);

impl KernelFilter for Recorder {
    fn untrace_process(&mut self, tgid: u32) -> bool {
        self.0.lock().unwrap().untraced.push(tgid);
        true
    }

    fn mute(&mut self, tgid: u32, fd: i32, sk: u64, mute: Mute) -> Told {
        self.0.lock().unwrap().muted.push((tgid, fd, sk, mute));
        Told::Yes
    }

    fn skip_body(&mut self, tgid: u32, fd: i32, entry: SocketEntry) -> Told {
        self.0.lock().unwrap().skips.push((tgid, fd, entry));
        Told::Yes
    }
}

pub(super) fn filtered(sel: Selector) -> (ConnTable, Arc<Mutex<Calls>>) {
    let calls = Arc::new(Mutex::new(Calls::default()));
    let t = table(sel).with_kernel_filter(Box::new(Recorder(calls.clone())));
    (t, calls)
}

/// `n` non-HTTP socket syscalls on fd 7, alternating directions, from
/// `ts` on.
fn not_http(t: &mut ConnTable, n: u64, ts: u64) {
    for i in 0..n {
        let dir = if i % 2 == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        data(t, 7, 0x1000, dir, ts + i * 10, b"*1\r\n$4\r\nPING\r\n");
    }
}

#[test]
fn a_connection_that_begins_without_http_is_muted_once() {
    let (mut t, calls) = filtered(Selector::default());
    control(&mut t, EventKind::Accept, 7, 5);
    not_http(&mut t, u64::from(NOT_HTTP_AFTER) - 1, 10);
    assert!(calls.lock().unwrap().muted.is_empty(), "judged too early");
    not_http(&mut t, 1, 1_000);
    // Sent before the kernel was told: no second mute.
    not_http(&mut t, 3, 2_000);
    assert_eq!(
        calls.lock().unwrap().muted,
        vec![(ME, 7, 0x1000, Mute::Socket)]
    );
    // Started after the mute: the kernel forgot (an LRU eviction); told again.
    not_http(&mut t, 1, monotonic_now_ns() + 1_000_000_000);
    assert_eq!(calls.lock().unwrap().muted.len(), 2);
    assert_eq!(
        t.stats
            .conns_muted
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_connection_not_seen_to_begin_is_never_judged() {
    // Attached mid-stream: these bytes may be the middle of a long body.
    let (mut t, calls) = filtered(Selector::default());
    not_http(&mut t, 3 * u64::from(NOT_HTTP_AFTER), 10);
    assert!(calls.lock().unwrap().muted.is_empty());
}

#[test]
fn http_after_a_prelude_is_traced() {
    // A SOCKS5 handshake with authentication (six messages), then HTTP.
    let (mut t, calls) = filtered(Selector::default());
    control(&mut t, EventKind::Connect, 7, 5);
    for (i, bytes) in [
        &b"\x05\x02\x00\x02"[..],
        b"\x05\x02",
        b"\x01\x04user\x04pass",
        b"\x01\x00",
        b"\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90",
        b"\x05\x00\x00\x01\x7f\x00\x00\x01\x1f\x90",
    ]
    .into_iter()
    .enumerate()
    {
        let dir = if i % 2 == 0 {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        data(&mut t, 7, 0x1000, dir, 10 + i as u64, bytes);
    }
    data(
        &mut t,
        7,
        0x1000,
        Direction::Egress,
        100,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    let spans = data(
        &mut t,
        7,
        0x1000,
        Direction::Ingress,
        200,
        b"HTTP/1.1 204 No Content\r\n\r\n",
    );
    assert_eq!(spans.len(), 1);
    // Past the judging window now: HTTP was seen, nothing is muted.
    not_http(&mut t, 2 * u64::from(NOT_HTTP_AFTER), 300);
    assert!(calls.lock().unwrap().muted.is_empty());
}

#[test]
fn a_request_line_sent_a_byte_at_a_time_is_not_judged() {
    let (mut t, calls) = filtered(Selector::default());
    control(&mut t, EventKind::Accept, 7, 5);
    let head = b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n";
    for (i, b) in head.iter().enumerate() {
        data(&mut t, 7, 0x1000, Direction::Ingress, 10 + i as u64, &[*b]);
    }
    let spans = data(
        &mut t,
        7,
        0x1000,
        Direction::Egress,
        1_000,
        b"HTTP/1.1 204 No Content\r\n\r\n",
    );
    assert!(calls.lock().unwrap().muted.is_empty());
    assert_eq!(spans.len(), 1);
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
