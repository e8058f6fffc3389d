//! Turns a finished (or capture-truncated) head's bytes into a
//! [`RequestHead`] or [`ResponseHead`]. The start line was already
//! validated by `head::StartMatcher`.

use super::head::{is_tchar, strip_cr};
use super::{RequestHead, ResponseHead};
use crate::compact::CompactStr;

/// Splits a head into its start line (without line end; possibly partial)
/// and the block of complete header lines after it. A truncated head's
/// last, partial line is left out.
fn split_head(buf: &[u8]) -> (&[u8], &[u8]) {
    match buf.iter().position(|&b| b == b'\n') {
        None => (buf, &[]),
        Some(k) => {
            let rest = &buf[k + 1..];
            let end = rest.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            (strip_cr(&buf[..k]), &rest[..end])
        }
    }
}

/// Header fields the parser cares about.
#[derive(Debug, Default)]
struct Fields {
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    host: Option<CompactStr>,
    traceparent: Vec<String>,
    tracestate: Vec<String>,
    upgrade: bool,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `b` as text (lossy), cut to at most `max` bytes on a char boundary:
/// no allocation when it is valid UTF-8 (checked faster than converted
/// lossily) and short (see `CompactStr`).
fn text(b: &[u8], max: usize) -> CompactStr {
    let cut = |s: &str| {
        let mut n = s.len().min(max);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        n
    };
    match std::str::from_utf8(b) {
        Ok(s) => CompactStr::new(&s[..cut(s)]),
        Err(_) => {
            let mut s = lossy(b);
            s.truncate(cut(&s));
            CompactStr::from(s)
        }
    }
}

/// `None` for anything but digits, a list of equal values (`5, 5`), or overflow.
fn parse_content_length(v: &[u8]) -> Option<u64> {
    let mut result = None;
    for item in v.split(|&b| b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = item.iter().try_fold(0u64, |acc, &d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        if result.is_some_and(|r| r != n) {
            return None;
        }
        result = Some(n);
    }
    result
}

/// The field name of a header line and where its value starts, or
/// `None` for a line without a colon or with a bad name. The name is the
/// tchars before the colon, which may be followed by whitespace: one pass
/// over the name, as every line of every head goes through here.
fn split_field(line: &[u8]) -> Option<(&[u8], usize)> {
    let name_len = line.iter().position(|&b| !is_tchar(b))?;
    let ws = line[name_len..]
        .iter()
        .position(|b| !b.is_ascii_whitespace())?;
    let colon = name_len + ws;
    (name_len > 0 && line[colon] == b':').then_some((&line[..name_len], colon + 1))
}

/// Parses header lines; `None` means malformed (line without a colon, bad
/// field name, bad or conflicting Content-Length).
fn parse_fields(block: &[u8], request: bool) -> Option<Fields> {
    let mut f = Fields::default();
    // One scan for the line ends; a last line without one (never, from
    // `split_head`) is a line too.
    let ends = memchr::memchr_iter(b'\n', block).chain(std::iter::once(block.len()));
    let mut start = 0;
    for end in ends {
        let Some(raw) = block.get(start..end) else {
            break;
        };
        start = end + 1;
        let line = strip_cr(raw);
        let Some(&first) = line.first() else { break };
        if first == b' ' || first == b'\t' {
            continue; // obs-fold continuation: ignored
        }
        let (name, value_at) = split_field(line)?;
        let value = line[value_at..].trim_ascii();
        // By length first: most fields are none of these.
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let n = parse_content_length(value)?;
                if f.content_length.is_some_and(|old| old != n) {
                    return None;
                }
                f.content_length = Some(n);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                f.transfer_encoding = true;
                let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                f.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
            _ if !request => {}
            4 if name.eq_ignore_ascii_case(b"host") => {
                f.host.get_or_insert_with(|| text(value, usize::MAX));
            }
            11 if name.eq_ignore_ascii_case(b"traceparent") => f.traceparent.push(lossy(value)),
            10 if name.eq_ignore_ascii_case(b"tracestate") => f.tracestate.push(lossy(value)),
            7 if name.eq_ignore_ascii_case(b"upgrade") => f.upgrade = true,
            _ => {}
        }
    }
    Some(f)
}

/// Methods spelled as most requests spell them, by their bytes: these
/// need no allocation per request.
const COMMON_METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

fn method(b: &[u8]) -> CompactStr {
    match COMMON_METHODS.iter().find(|m| m.as_bytes() == b) {
        Some(m) => CompactStr::from_static(m),
        None => text(b, usize::MAX),
    }
}

#[derive(Debug)]
pub(super) struct ParsedRequest {
    pub(super) head: RequestHead,
    /// An `Upgrade` header: the connection may switch protocols.
    pub(super) upgrade: bool,
    /// Transfer-Encoding without chunked last: no framing we can follow.
    pub(super) unframed: bool,
}

/// Parses a request head; `None` if malformed.
pub(super) fn parse_request(
    buf: &[u8],
    truncated: bool,
    max_target_len: usize,
) -> Option<ParsedRequest> {
    let (line, block) = split_head(buf);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method_bytes = parts.next()?;
    let target = parts.next()?;
    let version_minor = u8::from(parts.next() != Some(b"HTTP/1.0"));
    let f = parse_fields(block, true)?;
    let head = RequestHead {
        method: method(method_bytes),
        target: text(target, max_target_len),
        version_minor,
        host: f.host,
        content_length: f.content_length,
        chunked: f.chunked,
        traceparent: f.traceparent,
        tracestate: f.tracestate,
        head_truncated: truncated,
    };
    Some(ParsedRequest {
        head,
        upgrade: f.upgrade,
        unframed: f.transfer_encoding && !f.chunked,
    })
}

#[derive(Debug)]
pub(super) struct ParsedResponse {
    pub(super) head: ResponseHead,
    /// Transfer-Encoding without chunked last: the body runs until close.
    pub(super) unframed: bool,
}

/// The status code of a response start line (validated by the matcher).
pub(super) fn response_status(buf: &[u8]) -> u16 {
    buf.get(9..12)
        .filter(|d| d.iter().all(u8::is_ascii_digit))
        .map_or(0, |d| {
            d.iter()
                .fold(0u16, |acc, &b| acc * 10 + u16::from(b - b'0'))
        })
}

/// Parses a response head; `Err(status)` if malformed.
pub(super) fn parse_response(buf: &[u8], truncated: bool) -> Result<ParsedResponse, u16> {
    let (line, block) = split_head(buf);
    let status = response_status(line);
    let version_minor = u8::from(line.get(7) != Some(&b'0'));
    let f = parse_fields(block, false).ok_or(status)?;
    let head = ResponseHead {
        status,
        version_minor,
        content_length: f.content_length,
        chunked: f.chunked,
        head_truncated: truncated,
    };
    Ok(ParsedResponse {
        head,
        unframed: f.transfer_encoding && !f.chunked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field-name rule as first written: the bytes before the first
    /// colon, trailing whitespace trimmed, all tchars and not empty.
    fn by_colon(line: &[u8]) -> Option<(&[u8], usize)> {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = line[..colon].trim_ascii_end();
        (!name.is_empty() && name.iter().all(|&b| is_tchar(b))).then_some((name, colon + 1))
    }

    #[test]
    fn field_names_split_as_by_the_first_colon() {
        let lines: &[&[u8]] = &[
            b"Host: a",
            b"Host : a",
            b"Host\t:a:b",
            b"X-A-B_c~!: v",
            b": v",
            b" Host: a",
            b"Ho st: a",
            b"Host",
            b"Host  ",
            b"Ho\x80st: a",
            b"Host:",
        ];
        for line in lines {
            let mut variants = vec![line.to_vec()];
            for i in 0..line.len() {
                for b in [b' ', b'\t', b':', b'a', b'\x0c', b'\r', b'"', 0x80] {
                    let mut v = line.to_vec();
                    v[i] = b;
                    variants.push(v.clone());
                    v.insert(i, b);
                    variants.push(v);
                }
            }
            for v in variants {
                assert_eq!(
                    split_field(&v),
                    by_colon(&v),
                    "{:?}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
    }

    #[test]
    fn lossy_text_is_valid_utf8_either_way() {
        assert_eq!(text(b"example.com", 99), "example.com");
        assert_eq!(text(b"a\xffb", 99), "a\u{fffd}b");
        assert_eq!(text(b"a\xffb", 3), "a");
        assert_eq!(text("aé".as_bytes(), 2), "a");
        assert_eq!(text(b"abc", 0), "");
    }
}
