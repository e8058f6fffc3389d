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

/// RFC 9110 `tchar`, by table: it is asked for every byte of every
/// method and header field name.
pub(super) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// Visible ASCII or obs-text: what a request-target may contain here.
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// `HTTP/1.0` or `HTTP/1.1`.
fn is_version(v: &[u8]) -> bool {
    matches!(v, [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'0' | b'1'])
}

/// Whether `line` (through its first `\n`) is a request line: what the
/// byte-wise grammar (`step_req`) accepts, checked a line at a time.
fn is_request_line(line: &[u8]) -> bool {
    let Some(l) = line.strip_suffix(b"\n") else {
        return false;
    };
    let l = strip_cr(l);
    let Some(sp) = l.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (method, rest) = (&l[..sp], &l[sp + 1..]);
    // The target holds no space, so the version is the last 8 bytes and
    // the space before them ends the target.
    let Some(target_len) = rest.len().checked_sub(9).filter(|&n| n > 0) else {
        return false;
    };
    let (target, version) = rest.split_at(target_len);
    (1..=usize::from(MAX_METHOD_LEN)).contains(&method.len())
        && method.iter().all(|&b| is_tchar(b))
        && target.iter().all(|&b| is_target_byte(b))
        && version[0] == b' '
        && is_version(&version[1..])
}

/// Whether `line` (through its first `\n`) is a response status line:
/// what `step_resp` accepts, a line at a time.
fn is_response_line(line: &[u8]) -> bool {
    let Some(l) = line.strip_suffix(b"\n") else {
        return false;
    };
    let l = strip_cr(l);
    let status_ok = |s: &[u8]| matches!(s, [b'1'..=b'5', b'0'..=b'9', b'0'..=b'9']);
    l.len() >= 12
        && is_version(&l[..8])
        && l[8] == b' '
        && status_ok(&l[9..12])
        && match l.get(12) {
            None => true,
            Some(b' ') => l[13..]
                .iter()
                .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
            Some(_) => false,
        }
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

    /// What this matcher, fresh, would end `Done` with after the bytes of
    /// `line` (through its first `\n`); `None` when it would not (it may
    /// die earlier: the byte-wise path then says where).
    fn whole_line(&self, line: &[u8]) -> Option<Kind> {
        if self.req != Req::Dead && is_request_line(line) {
            Some(Kind::Request)
        } else if self.resp != Resp::Dead && is_response_line(line) {
            Some(Kind::Response)
        } else {
            None
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

    /// The head's bytes, taken out; the buffer is left reset (see
    /// [`HeadBuf::reset`]).
    pub(super) fn take(&mut self) -> Vec<u8> {
        let buf = std::mem::take(&mut self.buf);
        self.reset();
        buf
    }

    /// When nothing of this head was taken yet and `data` begins with the
    /// whole of it, within `max` bytes: its kind, the length of its start
    /// line and its whole length. What [`HeadBuf::consume`] would find
    /// (`StartLine`, then `Complete`), without copying the bytes: a head
    /// usually arrives in one read, and then it is parsed where it lies.
    pub(super) fn whole(&self, data: &[u8], max: usize) -> Option<(Kind, usize, usize)> {
        if !self.buf.is_empty() || self.kind.is_some() {
            return None;
        }
        // `consume` takes a head of `n` bytes iff `n <= max`.
        let data = &data[..data.len().min(max)];
        let line_len = memchr::memchr(b'\n', data)? + 1;
        let kind = self.matcher.whole_line(&data[..line_len])?;
        // The first empty line (`\n` or `\r\n`) after the start line: the
        // line after a `\n` at `i` is empty when `i + 1` holds `\n` or
        // `\r\n`. One scan for the newlines rather than one per line.
        let from = line_len - 1;
        memchr::memchr_iter(b'\n', &data[from..]).find_map(|i| {
            let next = from + i + 1;
            match data.get(next..) {
                Some([b'\n', ..]) => Some((kind, line_len, next + 1)),
                Some([b'\r', b'\n', ..]) => Some((kind, line_len, next + 2)),
                _ => None,
            }
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the byte-wise matcher ends with after `line`'s bytes.
    fn bytewise(mut m: StartMatcher, line: &[u8]) -> Option<Kind> {
        for &b in line {
            match m.push(b) {
                Match::Alive => {}
                Match::Done(k) => return Some(k),
                Match::Dead => return None,
            }
        }
        None
    }

    /// The line-at-a-time check says exactly what the byte-wise grammar
    /// says, on start lines and on every one-byte change to them.
    #[test]
    fn whole_lines_match_the_bytewise_grammar() {
        let lines: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n",
            b"GET /a?b=c HTTP/1.0\n",
            b"M-SEARCH * HTTP/1.1\r\n",
            b"ABCDEFGHIJKLMNOPQRST /x HTTP/1.1\r\n",
            b"ABCDEFGHIJKLMNOPQRSTU /x HTTP/1.1\r\n",
            b"GET  HTTP/1.1\r\n",
            b"GET /\xc3\xa9 HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.0 404\n",
            b"HTTP/1.1 503 \r\n",
            b"HTTP/1.1 200 A \tb\xff\r\n",
            b"HTTP/1.1 600 X\r\n",
            b"HTTP/1.1 20 X\r\n",
            b"\r\n",
        ];
        let alphabet = b" \t\r\nHTP/1.0259AaZ-*\x7f\x80\x00";
        let mut checked = 0;
        for line in lines {
            let mut variants = vec![line.to_vec()];
            for i in 0..line.len() {
                for &b in alphabet {
                    let mut v = line.to_vec();
                    v[i] = b;
                    variants.push(v.clone());
                    v.insert(i, b);
                    variants.push(v.clone());
                    v.remove(i);
                    v.remove(i);
                    variants.push(v);
                }
            }
            for v in variants {
                let Some(eol) = v.iter().position(|&b| b == b'\n') else {
                    continue;
                };
                let v = &v[..=eol];
                for (req, resp) in [(true, true), (true, false), (false, true)] {
                    let m = StartMatcher::new(req, resp);
                    assert_eq!(
                        m.whole_line(v),
                        bytewise(m, v),
                        "{:?} requests {req} responses {resp}",
                        String::from_utf8_lossy(v)
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn whole_heads_only_when_complete_and_within_the_limit() {
        let head = b"GET / HTTP/1.1\r\nHost: h\r\n\r\nbody";
        let mut h = HeadBuf::new();
        h.begin(true, true);
        assert_eq!(h.whole(head, 1000), Some((Kind::Request, 16, 27)));
        assert_eq!(h.whole(head, 27), Some((Kind::Request, 16, 27)));
        assert_eq!(h.whole(head, 26), None);
        assert_eq!(h.whole(&head[..26], 1000), None);
        assert_eq!(
            h.whole(b"HTTP/1.1 204 No\n\n", 1000),
            Some((Kind::Response, 16, 17))
        );
        h.begin(false, true);
        assert_eq!(h.whole(head, 1000), None);
        // Once bytes were buffered, the head is finished byte-wise.
        h.begin(true, true);
        assert_eq!(h.consume(b"GET", 1000), (3, HeadStep::NeedMore));
        assert_eq!(h.whole(head, 1000), None);
    }
}
