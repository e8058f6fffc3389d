//! What happens when a start line, head or body completes, or a gap hits:
//! framing decisions, FIFO pairing and emitting exchanges.

use super::{Expect, Http1Conn, INGRESS, InFlight, Pending, State, is_interim};
use crate::protocol::http1::body::Body;
use crate::protocol::http1::head::Kind;
use crate::protocol::http1::parse;
use crate::protocol::http1::{
    Exchange, IncompleteReason, Outcome, RequestHead, ResponseHead, Role,
};

impl Http1Conn {
    pub(super) fn on_start_line(&mut self, d: usize, kind: Kind, candidate: bool) {
        self.http = true;
        match (self.expect(d), kind) {
            (Expect::Any, Kind::Request) => {
                self.role = Some(if d == INGRESS {
                    Role::Server
                } else {
                    Role::Client
                });
            }
            (Expect::Any, Kind::Response) => {
                self.counters.orphan_responses += 1;
                let side = &mut self.sides[d];
                side.head.reset();
                side.state = State::Unsynced;
                return;
            }
            (Expect::Requests, Kind::Request) | (Expect::Responses, Kind::Response) => {}
            // The other side claimed the role while this head was arriving.
            _ => {
                if !candidate {
                    self.counters.malformed += 1;
                }
                self.sides[d].lose_sync();
                return;
            }
        }
        let side = &mut self.sides[d];
        if std::mem::take(&mut side.lost) {
            self.counters.resyncs += 1;
        }
        side.loose = false;
        side.state = State::Head { candidate: false };
    }

    /// Gives up the message whose head is being received, keeping pairing
    /// right: a request leaves a tombstone, a final response uses up the
    /// oldest request.
    pub(super) fn abandon(&mut self, d: usize, t_last: u64, out: &mut Vec<Exchange>) {
        let head = &self.sides[d].head;
        let (kind, status) = (head.kind(), parse::response_status(head.bytes()));
        self.abandon_as(d, kind, status, t_last, out);
    }

    /// [`Http1Conn::abandon`] for a head whose start line was `kind`
    /// (`None`: never complete) and, for a response, said `status`.
    fn abandon_as(
        &mut self,
        d: usize,
        kind: Option<Kind>,
        status: u16,
        t_last: u64,
        out: &mut Vec<Exchange>,
    ) {
        match kind {
            Some(Kind::Request) => {
                let start = self.sides[d].msg_start;
                self.push_pending(None, start, t_last, out);
            }
            Some(Kind::Response) if !is_interim(status) => {
                let answered = self.pending.pop_front();
                self.counters.orphan_responses += u64::from(answered.is_none());
            }
            _ => {}
        }
        self.sides[d].lose_sync();
    }

    /// The head in the side's buffer is complete (`gap: None`) or was cut
    /// by a gap of `gap` bytes.
    pub(super) fn on_head(
        &mut self,
        d: usize,
        gap: Option<u64>,
        t_last: u64,
        out: &mut Vec<Exchange>,
    ) {
        let head = &mut self.sides[d].head;
        let (kind, started) = (head.kind_or_partial(), head.kind());
        let bytes = head.take();
        self.on_head_bytes(d, kind, started, &bytes, gap, t_last, out);
    }

    /// A head whose bytes are `head`, read as `kind`; `started` is the
    /// kind of its start line if that line was complete (what pairing
    /// must account for when the head is given up).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_head_bytes(
        &mut self,
        d: usize,
        kind: Option<Kind>,
        started: Option<Kind>,
        head: &[u8],
        gap: Option<u64>,
        t_last: u64,
        out: &mut Vec<Exchange>,
    ) {
        match kind {
            Some(Kind::Request) => self.on_request_head(d, started, head, gap, t_last, out),
            Some(Kind::Response) => self.on_response_head(d, started, head, gap, t_last, out),
            None => self.sides[d].lose_sync(),
        }
    }

    fn on_request_head(
        &mut self,
        d: usize,
        started: Option<Kind>,
        head: &[u8],
        gap: Option<u64>,
        t_last: u64,
        out: &mut Vec<Exchange>,
    ) {
        let parsed = parse::parse_request(head, gap.is_some(), self.limits.max_target_len);
        let Some(p) = parsed else {
            self.counters.malformed += 1;
            return self.abandon_as(d, started, 0, t_last, out);
        };
        let side = &mut self.sides[d];
        let start = side.msg_start;
        let body = if p.head.chunked {
            Some(Body::chunked())
        } else {
            match p.head.content_length {
                Some(n) if n > 0 && !p.unframed => Some(Body::Length(n)),
                _ => None,
            }
        };
        let may_switch = p.upgrade || p.head.method == "CONNECT";
        let seq = self.push_pending(Some(p.head), start, t_last, out);
        let side = &mut self.sides[d];
        side.body_seq = seq;
        side.loose = may_switch || gap.is_some();
        side.state = match (body, gap) {
            (None, None) => State::Idle,
            (Some(b), None) => State::Body(b),
            (Some(Body::Length(n)), Some(g)) if g < n => State::Body(Body::Length(n - g)),
            // Cut head: the request ends with this feed.
            (_, Some(_)) => {
                side.lost = true;
                State::Unsynced
            }
        };
    }

    fn on_response_head(
        &mut self,
        d: usize,
        started: Option<Kind>,
        head: &[u8],
        gap: Option<u64>,
        t_last: u64,
        out: &mut Vec<Exchange>,
    ) {
        let parsed = parse::parse_response(head, gap.is_some());
        let Ok(p) = parsed else {
            self.counters.malformed += 1;
            let status = parse::response_status(head);
            return self.abandon_as(d, started, status, t_last, out);
        };
        let side = &mut self.sides[d];
        let start = side.msg_start;
        side.loose = gap.is_some();
        let status = p.head.status;
        if is_interim(status) {
            side.state = State::Idle;
            return;
        }
        let req = self.pending.pop_front();
        if req.is_none() {
            self.counters.orphan_responses += 1;
        }
        let method = req
            .as_ref()
            .and_then(|r| r.head.as_ref())
            .map(|h| &*h.method);
        if status == 101 || (method == Some("CONNECT") && (200..300).contains(&status)) {
            self.emit(
                req,
                Some(p.head),
                Some(start),
                t_last,
                Outcome::Complete,
                out,
            );
            self.opaque = true;
            self.sides[d].state = State::Idle;
            return;
        }
        let body = if method == Some("HEAD") || status == 204 || status == 304 {
            None
        } else if p.head.chunked {
            Some(Body::chunked())
        } else {
            match p.head.content_length {
                _ if p.unframed => Some(Body::UntilClose),
                Some(0) => None,
                Some(n) => Some(Body::Length(n)),
                None => Some(Body::UntilClose),
            }
        };
        let body = match (body, gap) {
            (b, None) | (b @ None, Some(_)) => b,
            (Some(Body::Length(n)), Some(g)) => (g < n).then(|| Body::Length(n - g)),
            // Chunk framing or the length header lost to the gap.
            (Some(_), Some(_)) => Some(Body::Unknown),
        };
        match body {
            None => {
                self.emit(
                    req,
                    Some(p.head),
                    Some(start),
                    t_last,
                    Outcome::Complete,
                    out,
                );
                self.sides[d].state = State::Idle;
            }
            Some(b) => {
                self.inflight = Some(InFlight {
                    req,
                    head: p.head,
                    start,
                });
                self.sides[d].state = State::Body(b);
            }
        }
    }

    pub(super) fn on_body_done(&mut self, d: usize, t_last: u64, out: &mut Vec<Exchange>) {
        if self.expect(d) == Expect::Responses {
            self.finish_response(t_last, out);
        } else {
            let seq = self.sides[d].body_seq;
            if let Some(p) = self.pending.iter_mut().rev().find(|p| p.seq == seq) {
                p.end = t_last;
            }
        }
        self.sides[d].state = State::Idle;
    }

    pub(super) fn finish_response(&mut self, end: u64, out: &mut Vec<Exchange>) {
        if let Some(f) = self.inflight.take() {
            self.emit(
                f.req,
                Some(f.head),
                Some(f.start),
                end,
                Outcome::Complete,
                out,
            );
        }
    }

    /// Bytes `[data.len(), total)` of the feed were not captured.
    pub(super) fn apply_gap(&mut self, d: usize, gap: u64, t_last: u64, out: &mut Vec<Exchange>) {
        let response_side = self.expect(d) == Expect::Responses;
        match self.sides[d].state {
            State::Unsynced | State::Body(Body::UntilClose | Body::Unknown) => {}
            State::Idle => {
                // The next message began inside the gap.
                self.counters.gaps += 1;
                self.sides[d].lose_sync();
            }
            State::Head { candidate } => {
                let side = &self.sides[d];
                if side.head.kind().is_some()
                    || (!candidate && side.head.kind_or_partial().is_some())
                {
                    self.counters.gaps += 1;
                    self.on_head(d, Some(gap), t_last, out);
                } else if candidate {
                    let side = &mut self.sides[d];
                    side.head.reset();
                    side.state = State::Unsynced;
                } else {
                    self.counters.gaps += 1;
                    self.sides[d].lose_sync();
                }
            }
            State::Body(Body::Length(rem)) => {
                if gap < rem {
                    self.sides[d].state = State::Body(Body::Length(rem - gap));
                } else {
                    self.on_body_done(d, t_last, out);
                    if gap > rem {
                        self.counters.gaps += 1;
                        self.sides[d].lose_sync();
                    }
                }
            }
            State::Body(Body::Chunked(_)) if response_side => {
                self.sides[d].state = State::Body(Body::Unknown);
            }
            State::Body(Body::Chunked(_)) => {
                self.on_body_done(d, t_last, out);
                self.sides[d].lose_sync();
            }
        }
    }

    /// Queues a request, giving up the oldest beyond `max_pending`.
    fn push_pending(
        &mut self,
        head: Option<RequestHead>,
        start: u64,
        end: u64,
        out: &mut Vec<Exchange>,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        // Room for one: without pipelining one request waits at a time
        // (VecDeque would otherwise start at four); pipelining grows it.
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(1);
        }
        self.pending.push_back(Pending {
            head,
            start,
            end,
            seq,
        });
        while self.pending.len() > self.limits.max_pending {
            let oldest = self.pending.pop_front();
            self.counters.pending_overflow += 1;
            let reason = Outcome::Incomplete(IncompleteReason::PendingOverflow);
            self.emit(oldest, None, None, end, reason, out);
        }
        seq
    }

    pub(super) fn emit(
        &self,
        req: Option<Pending>,
        response: Option<ResponseHead>,
        response_start: Option<u64>,
        response_end: u64,
        outcome: Outcome,
        out: &mut Vec<Exchange>,
    ) {
        let (
            Some(role),
            Some(Pending {
                head: Some(request),
                start,
                end,
                seq,
            }),
        ) = (self.role, req)
        else {
            return;
        };
        out.push(Exchange {
            role,
            seq,
            request,
            response,
            request_start: start,
            request_end: end,
            response_start,
            response_end,
            outcome,
        });
    }
}
