//! Spans as the agent prints them with `--print json`: one OTLP/JSON
//! `ExportTraceServiceRequest` per line, flattened into [`Span`] values.
//!
//! Parsing is tolerant: fields may come in any order, unknown fields are
//! ignored, and int64 values are accepted both as JSON strings (what the
//! OTLP/JSON spec mandates) and as JSON numbers.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// OTLP span kinds (the integer enum of the OTLP/JSON encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
    Other(i64),
}

impl SpanKind {
    pub fn from_i64(v: i64) -> Self {
        match v {
            0 => Self::Unspecified,
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            n => Self::Other(n),
        }
    }
}

/// OTLP status code: 0 unset, 1 ok, 2 error.
pub const STATUS_UNSET: i64 = 0;
pub const STATUS_OK: i64 = 1;
pub const STATUS_ERROR: i64 = 2;

/// An attribute value, reduced to what the tests compare.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    /// Arrays, kvlists, bytes: kept as raw JSON.
    Other(Value),
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Str(s) => write!(f, "{s:?}"),
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Bool(b) => write!(f, "{b}"),
            AttrValue::Double(d) => write!(f, "{d}"),
            AttrValue::Other(v) => write!(f, "{v}"),
        }
    }
}

pub type Attrs = BTreeMap<String, AttrValue>;

/// One span together with the attributes of the resource that carried it.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub kind: SpanKind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attrs: Attrs,
    pub status_code: i64,
    pub status_message: String,
    pub resource: Attrs,
    pub scope_name: String,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attrs.get(key)
    }

    pub fn attr_str(&self, key: &str) -> Option<&str> {
        match self.attrs.get(key) {
            Some(AttrValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn attr_int(&self, key: &str) -> Option<i64> {
        match self.attrs.get(key) {
            Some(AttrValue::Int(i)) => Some(*i),
            // Be lenient with an int carried as a string value.
            Some(AttrValue::Str(s)) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn resource_str(&self, key: &str) -> Option<&str> {
        match self.resource.get(key) {
            Some(AttrValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn resource_int(&self, key: &str) -> Option<i64> {
        match self.resource.get(key) {
            Some(AttrValue::Int(i)) => Some(*i),
            Some(AttrValue::Str(s)) => s.parse().ok(),
            _ => None,
        }
    }

    /// `process.pid` of the resource.
    pub fn pid(&self) -> Option<u32> {
        self.resource_int("process.pid")
            .and_then(|p| u32::try_from(p).ok())
    }

    pub fn method(&self) -> Option<&str> {
        self.attr_str("http.request.method")
    }

    pub fn path(&self) -> Option<&str> {
        self.attr_str("url.path")
    }

    pub fn http_status(&self) -> Option<i64> {
        self.attr_int("http.response.status_code")
    }

    pub fn is_server(&self) -> bool {
        self.kind == SpanKind::Server
    }

    pub fn is_client(&self) -> bool {
        self.kind == SpanKind::Client
    }

    pub fn is_error(&self) -> bool {
        self.status_code == STATUS_ERROR
    }

    pub fn duration_ns(&self) -> i128 {
        i128::from(self.end_ns) - i128::from(self.start_ns)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            SpanKind::Server => "SERVER".to_string(),
            SpanKind::Client => "CLIENT".to_string(),
            k => format!("{k:?}"),
        };
        write!(
            f,
            "{kind} pid={} {:?} status={} start={} end={} dur={}us",
            self.pid().map_or("?".into(), |p| p.to_string()),
            self.name,
            self.status_code,
            self.start_ns,
            self.end_ns,
            self.duration_ns() / 1000,
        )?;
        if !self.status_message.is_empty() {
            write!(f, " status_message={:?}", self.status_message)?;
        }
        for (k, v) in &self.attrs {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// Renders spans one per line, for assertion messages.
pub fn describe(spans: &[Span]) -> String {
    if spans.is_empty() {
        return "  (no spans)".into();
    }
    let mut out = String::new();
    for s in spans {
        out.push_str("  ");
        out.push_str(&s.to_string());
        out.push('\n');
    }
    out
}

/// Parses one stdout line of `wirespan --print json`.
pub fn parse_export_line(line: &str) -> Result<Vec<Span>> {
    let root: Value = serde_json::from_str(line).context("stdout line is not JSON")?;
    let Some(resource_spans) = root.get("resourceSpans") else {
        bail!("no resourceSpans in the ExportTraceServiceRequest");
    };
    let resource_spans = resource_spans
        .as_array()
        .context("resourceSpans is not an array")?;
    let mut out = Vec::new();
    for rs in resource_spans {
        let resource = match rs.get("resource").and_then(|r| r.get("attributes")) {
            Some(a) => parse_attrs(a).context("resource attributes")?,
            None => Attrs::new(),
        };
        let Some(scope_spans) = rs.get("scopeSpans") else {
            continue;
        };
        for ss in scope_spans
            .as_array()
            .context("scopeSpans is not an array")?
        {
            let scope_name = ss
                .get("scope")
                .and_then(|s| s.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let Some(spans) = ss.get("spans") else {
                continue;
            };
            for span in spans.as_array().context("spans is not an array")? {
                out.push(
                    parse_span(span, &resource, &scope_name)
                        .with_context(|| format!("span {span}"))?,
                );
            }
        }
    }
    Ok(out)
}

fn parse_span(v: &Value, resource: &Attrs, scope_name: &str) -> Result<Span> {
    let s = |key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let status = v.get("status");
    Ok(Span {
        trace_id: s("traceId"),
        span_id: s("spanId"),
        parent_span_id: s("parentSpanId"),
        name: s("name"),
        kind: SpanKind::from_i64(v.get("kind").map(int_of).transpose()?.unwrap_or(0)),
        start_ns: uint_of(v.get("startTimeUnixNano").context("no startTimeUnixNano")?)?,
        end_ns: uint_of(v.get("endTimeUnixNano").context("no endTimeUnixNano")?)?,
        attrs: match v.get("attributes") {
            Some(a) => parse_attrs(a)?,
            None => Attrs::new(),
        },
        status_code: match status.and_then(|s| s.get("code")) {
            Some(c) => int_of(c)?,
            None => STATUS_UNSET,
        },
        status_message: status
            .and_then(|s| s.get("message"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        resource: resource.clone(),
        scope_name: scope_name.to_string(),
    })
}

fn parse_attrs(v: &Value) -> Result<Attrs> {
    let mut out = Attrs::new();
    for kv in v.as_array().context("attributes is not an array")? {
        let key = kv
            .get("key")
            .and_then(Value::as_str)
            .context("attribute without key")?;
        let value = match kv.get("value") {
            Some(val) => parse_any_value(val)?,
            None => AttrValue::Other(Value::Null),
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

fn parse_any_value(v: &Value) -> Result<AttrValue> {
    if let Some(s) = v.get("stringValue") {
        return Ok(AttrValue::Str(
            s.as_str().context("stringValue is not a string")?.into(),
        ));
    }
    if let Some(i) = v.get("intValue") {
        return Ok(AttrValue::Int(int_of(i)?));
    }
    if let Some(b) = v.get("boolValue") {
        return Ok(AttrValue::Bool(
            b.as_bool().context("boolValue is not a bool")?,
        ));
    }
    if let Some(d) = v.get("doubleValue") {
        let d = match d {
            Value::String(s) => s.parse().context("doubleValue")?,
            other => other.as_f64().context("doubleValue is not a number")?,
        };
        return Ok(AttrValue::Double(d));
    }
    Ok(AttrValue::Other(v.clone()))
}

/// An int64 per OTLP/JSON: a decimal string, tolerated as a number too.
fn int_of(v: &Value) -> Result<i64> {
    match v {
        Value::String(s) => s.parse().with_context(|| format!("bad int64 {s:?}")),
        Value::Number(n) => n.as_i64().with_context(|| format!("bad int64 {n}")),
        other => bail!("expected an int64, got {other}"),
    }
}

fn uint_of(v: &Value) -> Result<u64> {
    match v {
        Value::String(s) => s.parse().with_context(|| format!("bad uint64 {s:?}")),
        Value::Number(n) => n.as_u64().with_context(|| format!("bad uint64 {n}")),
        other => bail!("expected a uint64, got {other}"),
    }
}

/// True when `s` is `len` lowercase-or-uppercase hex digits and not all zeros,
/// as a valid W3C trace or span id must be.
pub fn is_valid_hex_id(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"python3"}},{"key":"process.pid","value":{"intValue":"1234"}},{"key":"process.executable.name","value":{"stringValue":"python3.11"}}]},"scopeSpans":[{"scope":{"name":"wirespan","version":"0.1.0"},"spans":[{"traceId":"0123456789abcdef0123456789abcdef","spanId":"0123456789abcdef","name":"GET /path","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000000500000","attributes":[{"key":"http.request.method","value":{"stringValue":"GET"}},{"key":"url.path","value":{"stringValue":"/path"}},{"key":"http.response.status_code","value":{"intValue":"503"}},{"key":"server.port","value":{"intValue":8080}}],"status":{"code":2,"message":"boom"}},{"kind":"3","name":"x","startTimeUnixNano":1,"endTimeUnixNano":2,"unknownField":{"a":1}}]}]},{"resource":{"attributes":[{"key":"process.pid","value":{"intValue":"7"}}]},"scopeSpans":[{"spans":[{"name":"y","kind":3,"startTimeUnixNano":"5","endTimeUnixNano":"6"}]}]}]}"#;

    #[test]
    fn parses_the_contract_example() {
        let spans = parse_export_line(LINE).unwrap();
        assert_eq!(spans.len(), 3);
        let s = &spans[0];
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(s.pid(), Some(1234));
        assert_eq!(s.method(), Some("GET"));
        assert_eq!(s.path(), Some("/path"));
        assert_eq!(s.http_status(), Some(503));
        assert_eq!(s.attr_int("server.port"), Some(8080));
        assert_eq!(s.status_code, STATUS_ERROR);
        assert_eq!(s.status_message, "boom");
        assert_eq!(s.duration_ns(), 500_000);
        assert_eq!(
            s.resource_str("process.executable.name"),
            Some("python3.11")
        );
        assert!(is_valid_hex_id(&s.trace_id, 32));
        assert!(is_valid_hex_id(&s.span_id, 16));
        assert_eq!(spans[1].kind, SpanKind::Client);
        assert_eq!(spans[1].status_code, STATUS_UNSET);
        assert_eq!(spans[2].pid(), Some(7));
    }

    #[test]
    fn rejects_non_json() {
        assert!(parse_export_line("GET /x 200").is_err());
        assert!(parse_export_line("{}").is_err());
    }
}
