//! Incremental HTTP/1.x connection parser: one [`Http1Conn`] per TCP
//! connection, fed one syscall's worth of bytes at a time per direction. It
//! learns the role (which direction carries requests) from the bytes, frames
//! requests and responses (Content-Length, chunked, until-close, bodiless
//! statuses and HEAD), pairs them FIFO (pipelining included) and emits an
//! [`Exchange`] when a response completes or the connection closes.
//!
//! Pure and allocation-light: only head bytes are buffered (at most
//! `max_head_bytes` per direction), body bytes are counted and skipped, and
//! at most `max_pending` requests wait for their responses.
//!
//! Layout: `head` recognises start lines and buffers heads, `parse` reads
//! them, `body` frames bodies, `conn` holds the per-connection state
//! machine and `conn::message` the framing and pairing decisions.

mod body;
mod conn;
mod head;
mod parse;
#[cfg(test)]
mod tests;

pub use conn::Http1Conn;

use crate::compact::CompactStr;

/// Per-connection bounds; memory per connection is bounded by them.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest head (start line + header fields + empty line) kept, per direction.
    pub max_head_bytes: usize,
    /// Most requests waiting for a response before the oldest is given up.
    pub max_pending: usize,
    /// Request targets longer than this are truncated (on a char boundary).
    pub max_target_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: 16384,
            max_pending: 64,
            max_target_len: 2048,
        }
    }
}

/// Which side of the exchange the traced process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The traced process reads requests (Ingress carries requests).
    Server,
    /// The traced process writes requests (Egress carries requests).
    Client,
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// As sent, e.g. "GET".
    pub method: CompactStr,
    /// Raw request-target, truncated (on a char boundary) to `max_target_len`.
    pub target: CompactStr,
    /// 0 or 1.
    pub version_minor: u8,
    pub host: Option<CompactStr>,
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// Every value seen, in order (duplicates matter to trace context).
    pub traceparent: Vec<String>,
    pub tracestate: Vec<String>,
    /// The head was cut by a capture gap; some headers may be missing.
    pub head_truncated: bool,
}

/// A parsed response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub version_minor: u8,
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// The head was cut by a capture gap; some headers may be missing.
    pub head_truncated: bool,
}

/// Why an exchange ended without a complete response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncompleteReason {
    ClosedBeforeResponse,
    ClosedMidResponse,
    PendingOverflow,
}

impl IncompleteReason {
    /// The span's `error.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClosedBeforeResponse => "connection_closed_before_response",
            Self::ClosedMidResponse => "connection_closed_mid_response",
            Self::PendingOverflow => "pending_overflow",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    Incomplete(IncompleteReason),
}

/// A request paired with its response (or with the reason it has none).
///
/// `Complete` always carries a response; `ClosedMidResponse` carries the
/// response head seen so far; `ClosedBeforeResponse` and `PendingOverflow`
/// carry none.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub role: Role,
    /// The request's sequence number on this connection (see
    /// [`Http1Conn::requests_from`]): lets the caller attach state to a
    /// request when it starts and find it again here.
    pub seq: u64,
    pub request: RequestHead,
    pub response: Option<ResponseHead>,
    /// `t_first` of the feed that carried the request's first byte.
    pub request_start: u64,
    /// `t_last` of the feed that completed the request (head + body); if
    /// the response arrived before the request body ended, the last request
    /// feed seen by then.
    pub request_end: u64,
    /// `t_first` of the feed carrying the response's first byte.
    pub response_start: Option<u64>,
    /// `t_last` of the feed that completed the response. A response ended by
    /// close (until-close or unknown length) ends at the last response feed.
    /// Incomplete exchanges end at the `close()` timestamp, or for
    /// `PendingOverflow` at the `t_last` of the feed that overflowed.
    pub response_end: u64,
    pub outcome: Outcome,
}

/// What the parser gave up on or worked around; cumulative over the
/// parser's life (not reset by `close()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Http1Counters {
    /// Messages abandoned: bad header line, bad Content-Length, bad chunk
    /// framing, or a start line that was not HTTP on a synced direction.
    pub malformed: u64,
    /// Heads over `max_head_bytes`.
    pub head_too_large: u64,
    /// Requests given up because more than `max_pending` were waiting.
    pub pending_overflow: u64,
    /// Times a synced direction resumed at a feed that began a start line
    /// after losing sync (malformed, too large, or a gap).
    pub resyncs: u64,
    /// Heads cut short by a capture gap: finished from a prefix, or lost
    /// entirely because a gap swallowed a message boundary.
    pub gaps: u64,
    /// Final responses with no request to pair with.
    pub orphan_responses: u64,
}
