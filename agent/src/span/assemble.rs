//! Turns a paired HTTP/1 exchange into a span with the OpenTelemetry HTTP
//! semantic conventions, following DESIGN.md's status rules.

use std::{borrow::Cow, net::SocketAddr, sync::Arc};

use super::{AttrValue, Span, SpanKind, Status, route};
use crate::{
    clock::BootClock,
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
    let path = target.split(['?', '#']).next().unwrap_or(target);
    match path.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
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

fn ip(ep: SocketAddr) -> AttrValue {
    AttrValue::Str(Cow::Owned(ep.ip().to_string()))
}

pub fn span_from_exchange(
    ex: &Exchange,
    ctx: &ReqCtx,
    ends: Endpoints,
    tls: bool,
    process: Arc<ProcessInfo>,
    clock: &BootClock,
) -> Span {
    let kind = match ex.role {
        Role::Server => SpanKind::Server,
        Role::Client => SpanKind::Client,
    };
    let req = &ex.request;
    let path = split_target(&req.target);
    let known = KNOWN_METHODS.iter().find(|m| **m == req.method);
    let method: &'static str = known.copied().unwrap_or("_OTHER");

    // Keys and the values from a fixed set are static: only what comes
    // from the request or the socket is copied into the span.
    let mut attrs: Vec<(&'static str, AttrValue)> = Vec::with_capacity(12);
    let st = |v: &'static str| AttrValue::Str(Cow::Borrowed(v));
    let s = |v: &str| AttrValue::Str(Cow::Owned(v.to_owned()));
    attrs.push(("http.request.method", st(method)));
    if known.is_none() {
        attrs.push(("http.request.method_original", s(&req.method)));
    }
    attrs.push(("url.path", s(path)));
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
    let host = req.host.as_deref().map(split_host);
    // server.* names the server as the client addressed it (Host header),
    // falling back to the socket's server-side endpoint.
    let server_ep = match kind {
        SpanKind::Server => ends.local,
        SpanKind::Client => ends.remote,
    };
    match host {
        Some((h, _)) if !h.is_empty() => attrs.push(("server.address", s(h))),
        _ => {
            if let Some(ep) = server_ep {
                attrs.push(("server.address", ip(ep)));
            }
        }
    }
    if let Some(port) = host.and_then(|(_, p)| p).or(server_ep.map(|e| e.port())) {
        attrs.push(("server.port", AttrValue::Int(port.into())));
    }
    if let Some(peer) = ends.remote {
        // Formatted once: the client and the peer are the same address.
        let peer_ip = ip(peer);
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
            attrs.push(("error.type", s(&r.status.to_string())));
            Status::Unset.error_for(r.status)
        }
        _ => Status::Unset,
    };

    let mut name = String::with_capacity(method.len() + 1 + path.len() + 8);
    name.push_str(method);
    name.push(' ');
    route::template_into(path, &mut name);
    let start = clock.to_unix_ns(ex.request_start);
    let end = clock.to_unix_ns(ex.response_end).max(start);
    Span {
        trace_id: ctx.ctx.trace_id,
        span_id: ctx.ctx.span_id,
        parent_span_id: ctx.parent,
        trace_state: ctx.tracestate.clone(),
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
}
