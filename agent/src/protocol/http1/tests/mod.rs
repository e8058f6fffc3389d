//! Unit tests for the HTTP/1 parser, with a small harness that stamps each
//! feed with distinct timestamps.

mod flows;
mod gaps;
mod golden;
mod random;
mod robust;
mod split;

use wirespan_common::event::Direction;

use crate::compact::CompactStr;

use super::{
    Exchange, Http1Conn, IncompleteReason, Limits, Outcome, RequestHead, ResponseHead, Role,
};

pub(super) const IN: Direction = Direction::Ingress;
pub(super) const OUT: Direction = Direction::Egress;

/// A connection plus everything it emitted. Feed `n` (from 1) gets
/// `t_first = 100 n`, `t_last = 100 n + 1`.
pub(super) struct H {
    pub c: Http1Conn,
    pub out: Vec<Exchange>,
    pub t: u64,
}

impl H {
    pub fn new() -> Self {
        Self::with(Limits::default())
    }

    pub fn with(limits: Limits) -> Self {
        Self {
            c: Http1Conn::new(limits),
            out: Vec::new(),
            t: 0,
        }
    }

    /// Feeds `data` whole; returns (t_first, t_last).
    pub fn feed(&mut self, dir: Direction, data: &[u8]) -> (u64, u64) {
        self.feed_gap(dir, data, data.len())
    }

    /// Feeds `data` as the captured prefix of `total` bytes.
    pub fn feed_gap(&mut self, dir: Direction, data: &[u8], total: usize) -> (u64, u64) {
        self.t += 1;
        let (a, b) = (self.t * 100, self.t * 100 + 1);
        self.c.feed(dir, data, total, a, b, &mut self.out);
        (a, b)
    }

    /// Closes at the next tick; returns the close timestamp.
    pub fn close(&mut self) -> u64 {
        self.t += 1;
        let ts = self.t * 100;
        self.c.close(ts, &mut self.out);
        ts
    }

    pub fn take(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.out)
    }

    /// Takes exactly one exchange.
    pub fn one(&mut self) -> Exchange {
        let mut v = self.take();
        assert_eq!(v.len(), 1, "expected one exchange, got {v:#?}");
        v.remove(0)
    }
}

pub(super) fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\n\r\n").into_bytes()
}

/// A response with a Content-Length body.
pub(super) fn ok(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub(super) fn req_head(method: &str, target: &str) -> RequestHead {
    RequestHead {
        method: CompactStr::new(method),
        target: CompactStr::new(target),
        version_minor: 1,
        host: Some("example.com".into()),
        content_length: None,
        chunked: false,
        traceparent: vec![],
        tracestate: vec![],
        head_truncated: false,
    }
}

pub(super) fn resp_head(status: u16, content_length: Option<u64>) -> ResponseHead {
    ResponseHead {
        status,
        version_minor: 1,
        content_length,
        chunked: false,
        head_truncated: false,
    }
}

pub(super) fn status(e: &Exchange) -> u16 {
    e.response.as_ref().map_or(0, |r| r.status)
}

pub(super) fn incomplete(r: IncompleteReason) -> Outcome {
    Outcome::Incomplete(r)
}

#[test]
fn reason_strings() {
    assert_eq!(
        IncompleteReason::ClosedBeforeResponse.as_str(),
        "connection_closed_before_response"
    );
    assert_eq!(
        IncompleteReason::ClosedMidResponse.as_str(),
        "connection_closed_mid_response"
    );
    assert_eq!(
        IncompleteReason::PendingOverflow.as_str(),
        "pending_overflow"
    );
    let l = Limits::default();
    assert_eq!(
        (l.max_head_bytes, l.max_pending, l.max_target_len),
        (16384, 64, 2048)
    );
}

#[test]
fn simple_server_exchange() {
    let mut h = H::new();
    let (a, b) = h.feed(IN, &get("/hello"));
    assert_eq!(h.c.role(), Some(Role::Server));
    assert!(h.c.is_http());
    assert_eq!(h.c.pending(), 1);
    let (c, d) = h.feed(OUT, &ok(200, "hi"));
    let e = h.one();
    assert_eq!(e.role, Role::Server);
    assert_eq!(e.request, req_head("GET", "/hello"));
    assert_eq!(e.response, Some(resp_head(200, Some(2))));
    assert_eq!(
        (
            e.request_start,
            e.request_end,
            e.response_start,
            e.response_end
        ),
        (a, b, Some(c), d)
    );
    assert_eq!(e.outcome, Outcome::Complete);
    assert_eq!(h.c.pending(), 0);
    assert_eq!(h.c.counters(), Default::default());
}
