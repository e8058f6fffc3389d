//! Finished spans, the one type exporters see.

pub mod assemble;
pub mod context;
pub mod recycle;
pub mod route;

use std::{net::IpAddr, sync::Arc};

use crate::{compact::CompactStr, process::ProcessInfo};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrValue {
    /// Static for values from a fixed set (methods, schemes, versions,
    /// error types), inline when short: no allocation per span for those.
    Str(CompactStr),
    Int(i64),
    /// An IP address, exported as its string: kept as the address so that
    /// assembly allocates nothing for it (the peer's address is two
    /// attributes of every server span).
    Ip(IpAddr),
}

impl std::fmt::Display for AttrValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Str(s) => f.write_str(s),
            Self::Int(i) => write!(f, "{i}"),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Unset,
    Error(String),
}

#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// W3C tracestate carried with the trace (empty when none).
    pub trace_state: String,
    pub name: CompactStr,
    pub kind: SpanKind,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub attributes: Vec<(&'static str, AttrValue)>,
    pub status: Status,
    /// The process that served or made the request; it becomes the
    /// span's OpenTelemetry Resource.
    pub process: Arc<ProcessInfo>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_unix_ns.saturating_sub(self.start_unix_ns)
    }
}

#[cfg(test)]
impl Span {
    /// A bare SERVER span `GET /` of an unknown process, for tests of what
    /// carries spans (queues, exporters) rather than what is in them.
    pub fn bare() -> Self {
        Self {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            trace_state: String::new(),
            name: "GET /".into(),
            kind: SpanKind::Server,
            start_unix_ns: 1,
            end_unix_ns: 2,
            attributes: Vec::new(),
            status: Status::Unset,
            process: Arc::new(ProcessInfo::default()),
        }
    }
}

/// Random, non-zero trace and span ids (W3C forbids all-zero ids).
pub fn new_ids() -> ([u8; 16], [u8; 8]) {
    let mut trace = [0u8; 16];
    let mut span = [0u8; 8];
    while trace == [0; 16] {
        rand::fill(&mut trace);
    }
    while span == [0; 8] {
        rand::fill(&mut span);
    }
    (trace, span)
}
