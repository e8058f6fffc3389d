//! The per-connection state machine: two directions ("sides"), each either
//! unsynced, between messages, in a head or in a body; a FIFO of requests
//! waiting for responses; and the response currently being received.

mod message;

use std::collections::VecDeque;

use wirespan_common::event::Direction;

use super::body::{Body, BodyStep};
use super::head::{self, HeadBuf, HeadStep, Kind};
use super::parse;
use super::{
    Exchange, Http1Counters, IncompleteReason, Limits, Outcome, RequestHead, ResponseHead, Role,
};

const EGRESS: usize = Direction::Egress as usize;
const INGRESS: usize = Direction::Ingress as usize;

/// A request waiting for its response. `head: None` is a tombstone for a
/// request given up as malformed: it still takes its response's turn so
/// that the requests after it pair correctly.
#[derive(Debug)]
struct Pending {
    head: Option<RequestHead>,
    start: u64,
    end: u64,
    seq: u64,
}

/// The response whose body is being received. `req: None` for an orphan
/// (or a tombstone's response): framed to stay in sync, never emitted.
#[derive(Debug)]
struct InFlight {
    req: Option<Pending>,
    head: ResponseHead,
    start: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Ignoring bytes until a feed begins with a start line.
    Unsynced,
    /// Between messages.
    Idle,
    /// Receiving a head; `candidate` while the start line of a head begun
    /// by an unsynced side is still unconfirmed (failures are not counted).
    Head {
        candidate: bool,
    },
    Body(Body),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Any,
    Requests,
    Responses,
}

#[derive(Debug)]
struct Side {
    state: State,
    /// Framing is a guess (after a gap) or the peer may switch protocols:
    /// a failed start line goes quietly unsynced, and bytes left in a feed
    /// after a guessed body end are skipped.
    loose: bool,
    /// Lost sync after having had it; the next start line is a resync.
    lost: bool,
    head: HeadBuf,
    /// `t_first` of the feed that carried the current message's first byte.
    msg_start: u64,
    /// `t_last` of the latest feed on this side.
    last_t: u64,
    /// Request side: `seq` of the request whose body is being received.
    body_seq: u64,
}

impl Side {
    fn new() -> Self {
        Self {
            state: State::Unsynced,
            loose: false,
            lost: false,
            head: HeadBuf::new(),
            msg_start: 0,
            last_t: 0,
            body_seq: 0,
        }
    }

    fn lose_sync(&mut self) {
        self.head.reset();
        self.state = State::Unsynced;
        self.lost = true;
    }
}

/// One TCP connection's HTTP/1 parser. See the module docs.
#[derive(Debug)]
pub struct Http1Conn {
    limits: Limits,
    role: Option<Role>,
    http: bool,
    opaque: bool,
    counters: Http1Counters,
    sides: [Side; 2],
    pending: VecDeque<Pending>,
    inflight: Option<InFlight>,
    next_seq: u64,
}

fn is_interim(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

impl Http1Conn {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            role: None,
            http: false,
            opaque: false,
            counters: Http1Counters::default(),
            sides: [Side::new(), Side::new()],
            pending: VecDeque::new(),
            inflight: None,
            next_seq: 0,
        }
    }

    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// A valid start line was ever seen (since the last `close()`).
    pub fn is_http(&self) -> bool {
        self.http
    }

    /// A side is part-way through what may still be a first start line
    /// (bytes so far match the grammar): not yet HTTP, not yet anything else.
    pub fn start_line_pending(&self) -> bool {
        self.sides
            .iter()
            .any(|s| s.state == State::Head { candidate: true })
    }

    /// Body bytes still to come in `dir` when the message there has a
    /// Content-Length body whose framing is sure (not a guess after a
    /// gap): the bytes a caller may let go uncaptured.
    pub fn body_rest(&self, dir: Direction) -> Option<u64> {
        let side = &self.sides[dir as usize];
        match side.state {
            State::Body(Body::Length(rest)) if !side.loose => Some(rest),
            _ => None,
        }
    }

    /// Switched protocols (101, or 2xx to CONNECT): no more HTTP/1 here.
    pub fn is_opaque(&self) -> bool {
        self.opaque
    }

    pub fn counters(&self) -> Http1Counters {
        self.counters
    }

    /// Requests waiting for a response.
    /// The sequence number the next request will get. Requests are
    /// numbered from 0 in the order they start on the connection.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Requests still waiting for their response whose sequence number is
    /// at least `seq`, oldest first. Together with [`Exchange::seq`] this
    /// tells the caller which requests began during the last feed.
    pub fn requests_from(&self, seq: u64) -> impl Iterator<Item = (u64, &RequestHead)> {
        self.pending
            .iter()
            .filter(move |p| p.seq >= seq)
            .filter_map(|p| p.head.as_ref().map(|h| (p.seq, h)))
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn expect(&self, d: usize) -> Expect {
        match self.role {
            None => Expect::Any,
            Some(Role::Server) if d == INGRESS => Expect::Requests,
            Some(Role::Client) if d == EGRESS => Expect::Requests,
            Some(_) => Expect::Responses,
        }
    }

    /// One syscall's worth of bytes: `data` is the captured prefix of the
    /// `total` bytes moved; the rest is a gap.
    pub fn feed(
        &mut self,
        dir: Direction,
        data: &[u8],
        total: usize,
        t_first: u64,
        t_last: u64,
        out: &mut Vec<Exchange>,
    ) {
        if self.opaque {
            return;
        }
        let d = dir as usize;
        if self.sides[d].state == State::Body(Body::Unknown) && head::starts_with_response(data) {
            self.finish_response(self.sides[d].last_t, out);
            self.sides[d].state = State::Idle;
        }
        self.consume(d, data, t_first, t_last, out);
        self.sides[d].last_t = t_last;
        let gap = total.saturating_sub(data.len()) as u64;
        if gap > 0 && !self.opaque {
            self.apply_gap(d, gap, t_last, out);
        }
        if self.pending.is_empty() && self.pending.capacity() != 0 {
            // Every request answered: an idle keep-alive connection keeps
            // no queue (it may stay open, and idle, for minutes).
            self.pending = VecDeque::new();
        }
    }

    fn consume(
        &mut self,
        d: usize,
        data: &[u8],
        t_first: u64,
        t_last: u64,
        out: &mut Vec<Exchange>,
    ) {
        let mut pos = 0;
        // Only at the very start of a feed may an unsynced side sync.
        let mut fresh = true;
        // Whether the head being received began in this feed.
        let mut began_here = false;
        while pos < data.len() && !self.opaque {
            let at_start = std::mem::replace(&mut fresh, false);
            match self.sides[d].state {
                State::Unsynced => {
                    if !at_start {
                        break;
                    }
                    pos = head::skip_empty_lines(data);
                    if pos < data.len() {
                        self.begin_head(d, true, t_first);
                        began_here = true;
                    }
                }
                State::Idle => {
                    pos += head::skip_empty_lines(&data[pos..]);
                    if pos < data.len() {
                        self.begin_head(d, false, t_first);
                        began_here = true;
                    }
                }
                State::Head { candidate } => {
                    let max = self.limits.max_head_bytes;
                    if let Some((kind, line, len)) = self.sides[d].head.whole(&data[pos..], max) {
                        // The whole head is here: what the byte-wise path
                        // below would do, without buffering it.
                        self.on_start_line(d, kind, candidate);
                        if matches!(self.sides[d].state, State::Head { .. }) {
                            let head = &data[pos..pos + len];
                            self.on_head_bytes(d, Some(kind), Some(kind), head, None, t_last, out);
                            pos += len;
                        } else {
                            pos += line;
                        }
                        continue;
                    }
                    let (n, step) = self.sides[d]
                        .head
                        .consume(&data[pos..], self.limits.max_head_bytes);
                    pos += n;
                    match step {
                        HeadStep::NeedMore => {}
                        HeadStep::StartLine(kind) => self.on_start_line(d, kind, candidate),
                        HeadStep::Complete => self.on_head(d, None, t_last, out),
                        HeadStep::Invalid => {
                            let side = &mut self.sides[d];
                            if candidate {
                                // Never synced: nothing lost.
                                side.head.reset();
                                side.state = State::Unsynced;
                            } else {
                                if !side.loose {
                                    self.counters.malformed += 1;
                                }
                                side.lose_sync();
                            }
                            if !began_here {
                                // The head came from earlier feeds; this
                                // feed's own start may still be a start line.
                                pos = 0;
                                fresh = true;
                            }
                        }
                        HeadStep::TooLarge if candidate => {
                            // An unconfirmed start line this long: not HTTP.
                            let side = &mut self.sides[d];
                            side.head.reset();
                            side.state = State::Unsynced;
                        }
                        HeadStep::TooLarge => {
                            self.counters.head_too_large += 1;
                            self.abandon(d, t_last, out);
                        }
                    }
                }
                State::Body(mut body) => {
                    let (n, step) = body.consume(&data[pos..]);
                    pos += n;
                    self.sides[d].state = State::Body(body);
                    match step {
                        BodyStep::NeedMore => {}
                        BodyStep::Done => {
                            self.on_body_done(d, t_last, out);
                            if self.sides[d].loose && pos < data.len() {
                                // The body's end was a guess: skip the rest.
                                self.sides[d].lose_sync();
                            }
                        }
                        BodyStep::Malformed => {
                            self.counters.malformed += 1;
                            self.on_body_done(d, t_last, out);
                            self.sides[d].lose_sync();
                        }
                    }
                }
            }
        }
    }

    fn begin_head(&mut self, d: usize, candidate: bool, t_first: u64) {
        let expect = self.expect(d);
        let side = &mut self.sides[d];
        side.head
            .begin(expect != Expect::Responses, expect != Expect::Requests);
        side.msg_start = t_first;
        side.state = State::Head { candidate };
    }

    /// The connection ended at `ts`: flush everything in flight, then reset
    /// (counters are kept).
    pub fn close(&mut self, ts: u64, out: &mut Vec<Exchange>) {
        if let Some(role) = self.role {
            let rs = if role == Role::Server {
                EGRESS
            } else {
                INGRESS
            };
            let side = &self.sides[rs];
            if let Some(f) = self.inflight.take() {
                let (end, outcome) = match side.state {
                    State::Body(Body::UntilClose | Body::Unknown) => {
                        (side.last_t, Outcome::Complete)
                    }
                    _ => (ts, Outcome::Incomplete(IncompleteReason::ClosedMidResponse)),
                };
                self.emit(f.req, Some(f.head), Some(f.start), end, outcome, out);
            } else if matches!(side.state, State::Head { .. })
                && side.head.kind() == Some(Kind::Response)
            {
                // Closed inside a response head: keep what it says.
                if let Ok(p) = parse::parse_response(side.head.bytes(), true)
                    && !is_interim(p.head.status)
                {
                    let req = self.pending.pop_front();
                    let reason = Outcome::Incomplete(IncompleteReason::ClosedMidResponse);
                    self.emit(req, Some(p.head), Some(side.msg_start), ts, reason, out);
                }
            }
            while let Some(p) = self.pending.pop_front() {
                let reason = Outcome::Incomplete(IncompleteReason::ClosedBeforeResponse);
                self.emit(Some(p), None, None, ts, reason, out);
            }
        }
        let counters = self.counters;
        *self = Self::new(self.limits);
        self.counters = counters;
    }
}
