//! W3C Trace Context Level 1: parsing an inbound `traceparent` and
//! `tracestate` exactly as the spec says, and formatting them for the wire.
//! Anything invalid means "start a new trace", and the bad value is never
//! propagated.

use std::fmt::Write as _;

/// A span's identity and its place in a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

/// A valid inbound context: the remote parent, and its tracestate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub parent: SpanContext,
    /// Validated, re-joined list members (empty when absent or invalid).
    pub tracestate: String,
}

/// Why an inbound traceparent was rejected (for counting and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    Missing,
    Duplicated,
    Length,
    Version,
    Format,
    ZeroTraceId,
    ZeroParentId,
}

fn hex_lower(s: &[u8], out: &mut [u8]) -> bool {
    if s.len() != out.len() * 2 {
        return false;
    }
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let nib = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None, // upper-case hex is invalid per the spec
        };
        match (nib(pair[0]), nib(pair[1])) {
            (Some(h), Some(l)) => out[i] = h << 4 | l,
            _ => return false,
        }
    }
    true
}

/// Parses the `traceparent` header values of one request.
pub fn parse_traceparent(values: &[String]) -> Result<SpanContext, Invalid> {
    let v = match values {
        [] => return Err(Invalid::Missing),
        [one] => one.trim_matches([' ', '\t']).as_bytes(),
        _ => return Err(Invalid::Duplicated),
    };
    if v.len() < 55 {
        return Err(Invalid::Length);
    }
    let mut version = [0u8; 1];
    if !hex_lower(&v[0..2], &mut version) {
        return Err(Invalid::Version);
    }
    match version[0] {
        0xff => return Err(Invalid::Version),
        // Version 00 is exactly 55 characters.
        0x00 if v.len() != 55 => return Err(Invalid::Length),
        // A future version: parse what version 00 defines; anything after
        // must be introduced by a dash.
        _ if v.len() > 55 && v[55] != b'-' => return Err(Invalid::Format),
        _ => {}
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return Err(Invalid::Format);
    }
    let mut ctx = SpanContext {
        trace_id: [0; 16],
        span_id: [0; 8],
        flags: 0,
    };
    let mut flags = [0u8; 1];
    if !hex_lower(&v[3..35], &mut ctx.trace_id)
        || !hex_lower(&v[36..52], &mut ctx.span_id)
        || !hex_lower(&v[53..55], &mut flags)
    {
        return Err(Invalid::Format);
    }
    if ctx.trace_id == [0; 16] {
        return Err(Invalid::ZeroTraceId);
    }
    if ctx.span_id == [0; 8] {
        return Err(Invalid::ZeroParentId);
    }
    // Only the sampled bit is defined in version 00; keep just that.
    ctx.flags = flags[0] & 0x01;
    Ok(ctx)
}

/// tracestate limits from the spec.
const MAX_MEMBERS: usize = 32;
const MAX_LEN: usize = 512;

fn valid_key(k: &str) -> bool {
    let simple = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && (s.as_bytes()[0].is_ascii_lowercase() || s.as_bytes()[0].is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(&b))
    };
    match k.split_once('@') {
        None => simple(k, 256) && k.as_bytes()[0].is_ascii_lowercase(),
        Some((tenant, system)) => {
            simple(tenant, 241) && simple(system, 14) && system.as_bytes()[0].is_ascii_lowercase()
        }
    }
}

fn valid_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && v.bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        && !v.ends_with(' ')
}

/// Combines and validates the `tracestate` header values. An invalid list
/// is dropped whole (the spec allows discarding it); duplicated keys are
/// invalid too. Over-long lists lose members from the end.
pub fn parse_tracestate(values: &[String]) -> String {
    let mut out = String::new();
    let mut keys: Vec<&str> = Vec::new();
    for member in values.iter().flat_map(|v| v.split(',')) {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue; // empty list members are allowed and ignored
        }
        let Some((k, v)) = member.split_once('=') else {
            return String::new();
        };
        if !valid_key(k) || !valid_value(v) || keys.contains(&k) {
            return String::new();
        }
        keys.push(k);
        if keys.len() > MAX_MEMBERS || out.len() + member.len() + 1 > MAX_LEN {
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(member);
    }
    out
}

/// Parses a request's context headers.
pub fn parse_inbound(traceparent: &[String], tracestate: &[String]) -> Result<Inbound, Invalid> {
    let parent = parse_traceparent(traceparent)?;
    Ok(Inbound {
        parent,
        tracestate: parse_tracestate(tracestate),
    })
}

/// `00-<trace>-<span>-<flags>` for the wire.
pub fn format_traceparent(ctx: &SpanContext) -> String {
    let mut s = String::with_capacity(55);
    s.push_str("00-");
    ctx.trace_id.iter().for_each(|b| {
        let _ = write!(s, "{b:02x}");
    });
    s.push('-');
    ctx.span_id.iter().for_each(|b| {
        let _ = write!(s, "{b:02x}");
    });
    let _ = write!(s, "-{:02x}", ctx.flags);
    s
}

#[cfg(test)]
mod tests;
