//! Turns a paired HTTP/1 exchange into a span with the OpenTelemetry HTTP
//! semantic conventions, following DESIGN.md's status rules.

use std::{net::SocketAddr, ops::Range, sync::Arc};

use super::{AttrValue, Span, SpanKind, Status, recycle::Spare, route};
use crate::{
    clock::BootClock,
    compact::CompactStr,
    link::ReqCtx,
    process::ProcessInfo,
    protocol::http1::{Exchange, Outcome, Role},
};

/// Endpoints of the connection, seen from the traced process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Endpoints {
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
}

/// Methods the semantic conventions name; anything else is `_OTHER`.
const KNOWN_METHODS: [&str; 9] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

fn split_target(target: &str) -> &str {
    // origin-form `/p?q`, absolute-form `http://h/p?q` (proxies), or `*`.
    // By bytes (all the delimiters are ASCII, so every cut is on a char
    // boundary): str's multi-char and substring searches cost more to set
    // up than these short targets take to scan.
    let end = memchr::memchr2(b'?', b'#', target.as_bytes()).unwrap_or(target.len());
    let path = target.get(..end).unwrap_or(target);
    let b = path.as_bytes();
    // The first "://".
    match memchr::memchr_iter(b':', b).find(|&i| b[i + 1..].starts_with(b"//")) {
        Some(i) => {
            let rest = path.get(i + 3..).unwrap_or_default();
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        None => path,
    }
}

/// `Host: example.com:8080` -> ("example.com", Some(8080)); IPv6 aware.
fn split_host(host: &str) -> (&str, Option<u16>) {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[')
        && let Some((h, tail)) = rest.split_once(']')
    {
        return (h, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (host, None),
    }
}

/// `sub`, a slice of `owner`, as its own string (see
/// [`CompactStr::into_sub`]: short ones inline, a long one that starts
/// `owner` in `owner`'s allocation).
fn into_sub(owner: CompactStr, sub: Range<usize>) -> AttrValue {
    AttrValue::Str(owner.into_sub(sub))
}

/// Where `sub`, a subslice of `owner`, lies in it.
fn range_in(owner: &str, sub: &str) -> Range<usize> {
    let start = (sub.as_ptr() as usize).wrapping_sub(owner.as_ptr() as usize);
    start..start + sub.len()
}

/// What span assembly reuses from span to span, kept by the caller.
#[derive(Default)]
pub struct Scratch {
    /// Where the name is put together, so that only the finished name is
    /// stored.
    name: String,
    /// Attribute lists (see `recycle`).
    attrs: Spare,
}

/// Takes the exchange and the context by value: their strings move into
/// the span.
pub fn span_from_exchange(
    ex: Exchange,
    ctx: ReqCtx,
    ends: Endpoints,
    tls: bool,
    process: Arc<ProcessInfo>,
    clock: &BootClock,
    scratch: &mut Scratch,
) -> Span {
    let kind = match ex.role {
        Role::Server => SpanKind::Server,
        Role::Client => SpanKind::Client,
    };
    let mut req = ex.request;
    let path = split_target(&req.target);
    let known = KNOWN_METHODS.iter().find(|m| **m == req.method.as_str());
    let method: &'static str = known.copied().unwrap_or("_OTHER");
    let buf = &mut scratch.name;
    buf.clear();
    buf.push_str(method);
    buf.push(' ');
    route::template_into(path, buf);
    let name = CompactStr::new(buf);
    let path = range_in(&req.target, path);

    // Keys and the values from a fixed set are static; the request's own
    // strings move in (see `into_sub`), addresses stay addresses: for a
    // successful request with short strings nothing is allocated.
    let mut attrs = scratch.attrs.take();
    let st = |v: &'static str| AttrValue::Str(CompactStr::from_static(v));
    attrs.push(("http.request.method", st(method)));
    if known.is_none() {
        let original = std::mem::take(&mut req.method);
        attrs.push(("http.request.method_original", AttrValue::Str(original)));
    }
    attrs.push(("url.path", into_sub(std::mem::take(&mut req.target), path)));
    attrs.push(("url.scheme", st(if tls { "https" } else { "http" })));
    attrs.push((
        "network.protocol.version",
        st(if req.version_minor == 0 { "1.0" } else { "1.1" }),
    ));
    if let Some(resp) = &ex.response {
        attrs.push((
            "http.response.status_code",
            AttrValue::Int(resp.status.into()),
        ));
    }
    let host = req.host.as_deref().map(|h| {
        let (name, port) = split_host(h);
        (range_in(h, name), port)
    });
    // server.* names the server as the client addressed it (Host header),
    // falling back to the socket's server-side endpoint.
    let server_ep = match kind {
        SpanKind::Server => ends.local,
        SpanKind::Client => ends.remote,
    };
    match (req.host.take(), &host) {
        (Some(h), Some((name, _))) if !name.is_empty() => {
            attrs.push(("server.address", into_sub(h, name.clone())))
        }
        _ => {
            if let Some(ep) = server_ep {
                attrs.push(("server.address", AttrValue::Ip(ep.ip())));
            }
        }
    }
    if let Some(port) = host.and_then(|(_, p)| p).or(server_ep.map(|e| e.port())) {
        attrs.push(("server.port", AttrValue::Int(port.into())));
    }
    if let Some(peer) = ends.remote {
        let peer_ip = AttrValue::Ip(peer.ip());
        if kind == SpanKind::Server {
            attrs.push(("client.address", peer_ip.clone()));
            attrs.push(("client.port", AttrValue::Int(peer.port().into())));
        }
        attrs.push(("network.peer.address", peer_ip));
        attrs.push(("network.peer.port", AttrValue::Int(peer.port().into())));
    }

    let status = match (&ex.outcome, &ex.response) {
        (Outcome::Incomplete(reason), _) => {
            attrs.push(("error.type", st(reason.as_str())));
            Status::Error(format!(
                "connection ended before the response completed ({})",
                reason.as_str()
            ))
        }
        (Outcome::Complete, Some(r))
            if r.status >= 500 || (kind == SpanKind::Client && r.status >= 400) =>
        {
            attrs.push(("error.type", AttrValue::Str(r.status.to_string().into())));
            Status::Unset.error_for(r.status)
        }
        _ => Status::Unset,
    };

    let start = clock.to_unix_ns(ex.request_start);
    let end = clock.to_unix_ns(ex.response_end).max(start);
    Span {
        trace_id: ctx.ctx.trace_id,
        span_id: ctx.ctx.span_id,
        parent_span_id: ctx.parent,
        trace_state: ctx.tracestate,
        name,
        kind,
        start_unix_ns: start,
        end_unix_ns: end,
        attributes: attrs,
        status,
        process,
    }
}

impl Status {
    fn error_for(self, status: u16) -> Status {
        Status::Error(format!("HTTP {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_hosts() {
        assert_eq!(split_target("/a/b?x=1"), "/a/b");
        assert_eq!(split_target("http://h:1/p?q"), "/p");
        assert_eq!(split_target("http://h"), "/");
        assert_eq!(split_target("*"), "*");
        assert_eq!(split_host("example.com:8080"), ("example.com", Some(8080)));
        assert_eq!(split_host("example.com"), ("example.com", None));
        assert_eq!(split_host("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host("::1"), ("::1", None));
    }

    /// The rule as first written, with str's searches.
    fn split_target_by_str(target: &str) -> &str {
        let path = target.split(['?', '#']).next().unwrap_or(target);
        match path.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => path,
        }
    }

    #[test]
    fn targets_split_as_by_str_searches() {
        let targets = [
            "",
            "/",
            "*",
            "/a/b?x=1#f",
            "/a#f?x",
            "http://h",
            "http://h/",
            "https://h:1/p/q?r",
            "/r?u=http://x/y",
            "/a://b",
            "/a://b/c",
            "a:/b",
            "a:",
            "a://",
            ":://x/y",
            "/é?é",
            "é://é/é",
        ];
        for t in targets {
            assert_eq!(split_target(t), split_target_by_str(t), "{t:?}");
        }
    }

    #[test]
    fn substrings_move_or_copy_out_of_their_owner() {
        let sub = |owner: &str, part: fn(&str) -> &str| {
            let range = range_in(owner, part(owner));
            into_sub(CompactStr::new(owner), range).to_string()
        };
        assert_eq!(sub("/a/b?x=1", split_target), "/a/b");
        assert_eq!(sub("http://h:1/p?q", split_target), "/p");
        assert_eq!(sub("example.com:8080", |h| split_host(h).0), "example.com");
        assert_eq!(sub(" [::1]:80", |h| split_host(h).0), "::1");
        assert_eq!(sub("", |h| split_host(h).0), "");
    }
}
