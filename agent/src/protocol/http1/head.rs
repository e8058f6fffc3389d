//! Heads: an O(1)-per-byte recogniser for start lines and a bounded
//! accumulator for head bytes. `parse` turns the bytes into heads.
//!
//! Start lines are strict on purpose, so that binary data and other text
//! protocols never look like HTTP:
//! - request: `tchar{1,20} SP visible+ SP HTTP/1.[01] [CR] LF`
//! - response: `HTTP/1.[01] SP [1-5] digit{2} [SP reason] [CR] LF`

/// Which start line a head begins with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Request,
    Response,
}

const VERSION_PREFIX: &[u8; 7] = b"HTTP/1.";
const MAX_METHOD_LEN: u8 = 20;

/// RFC 9110 `tchar`.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Visible ASCII or obs-text: what a request-target may contain here.
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Byte `i` (0..8) of `HTTP/1.0` or `HTTP/1.1`.
fn is_version_byte(i: u8, b: u8) -> bool {
    match VERSION_PREFIX.get(usize::from(i)) {
        Some(&v) => b == v,
        None => i == 7 && (b == b'0' || b == b'1'),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Req {
    Dead,
    Method(u8),
    /// In the target; whether at least one byte was seen.
    Target(bool),
    Version(u8),
    Cr,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resp {
    Dead,
    Version(u8),
    Status(u8),
    Reason,
    Cr,
    Done,
}

fn step_req(s: Req, b: u8) -> Req {
    match s {
        Req::Method(n) if n < MAX_METHOD_LEN && is_tchar(b) => Req::Method(n + 1),
        Req::Method(n) if n > 0 && b == b' ' => Req::Target(false),
        Req::Target(_) if is_target_byte(b) => Req::Target(true),
        Req::Target(true) if b == b' ' => Req::Version(0),
        Req::Version(i) if i < 8 && is_version_byte(i, b) => Req::Version(i + 1),
        Req::Version(8) if b == b'\r' => Req::Cr,
        Req::Version(8) | Req::Cr if b == b'\n' => Req::Done,
        _ => Req::Dead,
    }
}

fn step_resp(s: Resp, b: u8) -> Resp {
    match s {
        Resp::Version(i) if i < 8 && is_version_byte(i, b) => Resp::Version(i + 1),
        Resp::Version(8) if b == b' ' => Resp::Status(0),
        Resp::Status(0) if (b'1'..=b'5').contains(&b) => Resp::Status(1),
        Resp::Status(n @ 1..3) if b.is_ascii_digit() => Resp::Status(n + 1),
        Resp::Status(3) if b == b' ' => Resp::Reason,
        Resp::Status(3) | Resp::Reason if b == b'\r' => Resp::Cr,
        Resp::Status(3) | Resp::Reason | Resp::Cr if b == b'\n' => Resp::Done,
        Resp::Reason if b == b'\t' || (b >= 0x20 && b != 0x7f) => Resp::Reason,
        _ => Resp::Dead,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Match {
    Alive,
    Done(Kind),
    Dead,
}

/// Runs the request and response grammars side by side, one byte at a time.
#[derive(Clone, Copy, Debug)]
pub(super) struct StartMatcher {
    req: Req,
    resp: Resp,
}

impl StartMatcher {
    pub(super) fn new(requests: bool, responses: bool) -> Self {
        Self {
            req: if requests { Req::Method(0) } else { Req::Dead },
            resp: if responses {
                Resp::Version(0)
            } else {
                Resp::Dead
            },
        }
    }

    pub(super) fn push(&mut self, b: u8) -> Match {
        self.req = step_req(self.req, b);
        self.resp = step_resp(self.resp, b);
        if self.req == Req::Done {
            Match::Done(Kind::Request)
        } else if self.resp == Resp::Done {
            Match::Done(Kind::Response)
        } else if self.req == Req::Dead && self.resp == Resp::Dead {
            Match::Dead
        } else {
            Match::Alive
        }
    }

    /// A start line cut short that still says enough to go on: a method
    /// and part of a target, or a version and a status code.
    fn partial(&self) -> Option<Kind> {
        if matches!(self.req, Req::Target(true) | Req::Version(_) | Req::Cr) {
            Some(Kind::Request)
        } else if matches!(self.resp, Resp::Status(3) | Resp::Reason | Resp::Cr) {
            Some(Kind::Response)
        } else {
            None
        }
    }
}

/// Whether `data` begins with a complete response start line.
pub(super) fn starts_with_response(data: &[u8]) -> bool {
    let mut m = StartMatcher::new(false, true);
    for &b in data {
        match m.push(b) {
            Match::Alive => {}
            Match::Done(_) => return true,
            Match::Dead => return false,
        }
    }
    false
}

/// How many leading CR/LF bytes (empty lines between messages) `data` has.
pub(super) fn skip_empty_lines(data: &[u8]) -> usize {
    data.iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(data.len())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HeadStep {
    /// All input consumed; the head goes on.
    NeedMore,
    /// The start line just completed (more input may remain).
    StartLine(Kind),
    /// The empty line ending the head was consumed.
    Complete,
    /// The start line cannot be HTTP/1; nothing of the input was kept.
    Invalid,
    /// The head would exceed the limit.
    TooLarge,
}

/// Accumulates one head's bytes (never body bytes) up to a limit. Holds
/// no heap between heads: an idle keep-alive connection costs no buffer.
#[derive(Debug)]
pub(super) struct HeadBuf {
    buf: Vec<u8>,
    matcher: StartMatcher,
    kind: Option<Kind>,
    /// Offset in `buf` of the line being received.
    line_start: usize,
}

/// What a head's buffer starts with, on its first byte: most request and
/// response heads fit, so one allocation per head, none while idle.
const FIRST_CAPACITY: usize = 512;

impl HeadBuf {
    pub(super) fn new() -> Self {
        Self {
            buf: Vec::new(),
            matcher: StartMatcher::new(true, true),
            kind: None,
            line_start: 0,
        }
    }

    /// Starts a new head that may begin with the given start lines.
    pub(super) fn begin(&mut self, requests: bool, responses: bool) {
        self.reset();
        self.matcher = StartMatcher::new(requests, responses);
    }

    /// Forgets the head and gives its buffer back: between heads (and on
    /// an idle keep-alive connection, for as long as it stays open) the
    /// buffer would only hold memory.
    pub(super) fn reset(&mut self) {
        self.buf = Vec::new();
        self.kind = None;
        self.line_start = 0;
    }

    /// The start line's kind once complete, else what a cut-short start
    /// line says (see [`StartMatcher::partial`]).
    pub(super) fn kind_or_partial(&self) -> Option<Kind> {
        self.kind.or_else(|| self.matcher.partial())
    }

    pub(super) fn kind(&self) -> Option<Kind> {
        self.kind
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Takes head bytes from `data`; returns how many were consumed.
    pub(super) fn consume(&mut self, data: &[u8], max: usize) -> (usize, HeadStep) {
        let mut i = 0;
        if self.kind.is_none() {
            while let Some(&b) = data.get(i) {
                if self.buf.len() >= max {
                    return (i, HeadStep::TooLarge);
                }
                match self.matcher.push(b) {
                    Match::Dead => return (i, HeadStep::Invalid),
                    Match::Alive => {}
                    Match::Done(kind) => {
                        self.buf.push(b);
                        self.kind = Some(kind);
                        self.line_start = self.buf.len();
                        return (i + 1, HeadStep::StartLine(kind));
                    }
                }
                // Only bytes that may be a start line allocate: a feed of
                // another protocol dies at its first byte, before this.
                if self.buf.capacity() == 0 {
                    self.buf.reserve(FIRST_CAPACITY.min(max));
                }
                self.buf.push(b);
                i += 1;
            }
            return (i, HeadStep::NeedMore);
        }
        while i < data.len() {
            let rest = &data[i..];
            let (take, eol) = match rest.iter().position(|&b| b == b'\n') {
                Some(k) => (k + 1, true),
                None => (rest.len(), false),
            };
            if self.buf.len() + take > max {
                return (i, HeadStep::TooLarge);
            }
            self.buf.extend_from_slice(&rest[..take]);
            i += take;
            if eol {
                let line = &self.buf[self.line_start..self.buf.len() - 1];
                if strip_cr(line).is_empty() {
                    return (i, HeadStep::Complete);
                }
                self.line_start = self.buf.len();
            }
        }
        (i, HeadStep::NeedMore)
    }
}

pub(super) fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}
