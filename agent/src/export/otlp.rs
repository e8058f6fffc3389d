//! Conversion of spans to the OTLP protobuf model (opentelemetry-proto),
//! shared by the JSON printer and the OTLP exporters. One Resource per
//! traced process.

use std::collections::HashMap;

pub(super) use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind as PKind, status::StatusCode,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span as PSpan, Status as PStatus},
};

use crate::{
    process::{ProcessInfo, agent_resource_attributes, host_name},
    span::{AttrValue, Span, SpanKind, Status},
};

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.to_string())
}

/// The resource of one traced process. Precedence, highest first: the
/// process's own OTEL_SERVICE_NAME (for `service.name`), the process's own
/// OTEL_RESOURCE_ATTRIBUTES (it knows itself best), the agent's
/// OTEL_RESOURCE_ATTRIBUTES (node- or cluster-wide facts), then what the
/// agent detected. `ProcessInfo::service_name` already follows this order.
pub(super) fn resource(p: &ProcessInfo) -> Resource {
    let mut attributes = vec![
        kv("service.name", s(&p.service_name)),
        kv("service.instance.id", s(&p.instance_id)),
        kv("process.pid", any_value::Value::IntValue(p.pid.into())),
        kv("process.executable.name", s(&p.exe_name)),
        kv("host.name", s(host_name())),
        kv("os.type", s("linux")),
        kv("telemetry.sdk.name", s("wirespan")),
        kv("telemetry.sdk.language", s("rust")),
        kv("telemetry.sdk.version", s(env!("CARGO_PKG_VERSION"))),
    ];
    if let Some(path) = &p.exe_path {
        attributes.push(kv("process.executable.path", s(&path.to_string_lossy())));
    }
    if !p.command_line.is_empty() {
        attributes.push(kv("process.command_line", s(&p.command_line)));
    }
    let given = agent_resource_attributes()
        .iter()
        .chain(&p.resource_attributes)
        .filter(|(k, _)| k != "service.name");
    for (k, v) in given {
        match attributes.iter_mut().find(|a| &a.key == k) {
            Some(a) => *a = kv(k, s(v)),
            None => attributes.push(kv(k, s(v))),
        }
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

fn span(sp: &Span) -> PSpan {
    let attributes = sp
        .attributes
        .iter()
        .map(|(k, v)| match v {
            AttrValue::Str(v) => kv(k, s(v)),
            AttrValue::Int(i) => kv(k, any_value::Value::IntValue(*i)),
            AttrValue::Ip(ip) => kv(k, s(&ip.to_string())),
        })
        .collect();
    // Always present: some OTLP/JSON consumers reject `"status": null`.
    let status = Some(match &sp.status {
        Status::Unset => PStatus {
            message: String::new(),
            code: StatusCode::Unset as i32,
        },
        Status::Error(msg) => PStatus {
            message: msg.clone(),
            code: StatusCode::Error as i32,
        },
    });
    PSpan {
        trace_id: sp.trace_id.to_vec(),
        span_id: sp.span_id.to_vec(),
        parent_span_id: sp.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        trace_state: sp.trace_state.clone(),
        name: sp.name.to_string(),
        kind: match sp.kind {
            SpanKind::Server => PKind::Server as i32,
            SpanKind::Client => PKind::Client as i32,
        },
        start_time_unix_nano: sp.start_unix_ns,
        end_time_unix_nano: sp.end_unix_ns,
        attributes,
        status,
        ..Default::default()
    }
}

/// The instrumentation scope of every span: the agent.
pub(super) fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "wirespan".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// Groups a batch by process into one request.
pub fn to_request(batch: &[Span]) -> ExportTraceServiceRequest {
    let mut by_pid: HashMap<u32, usize> = HashMap::new();
    let mut out: Vec<ResourceSpans> = Vec::new();
    for sp in batch {
        let idx = *by_pid.entry(sp.process.pid).or_insert_with(|| {
            out.push(ResourceSpans {
                resource: Some(resource(&sp.process)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    ..Default::default()
                }],
                ..Default::default()
            });
            out.len() - 1
        });
        if let Some(scope) = out.get_mut(idx).and_then(|r| r.scope_spans.first_mut()) {
            scope.spans.push(span(sp));
        }
    }
    ExportTraceServiceRequest {
        resource_spans: out,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{compact::CompactStr, process::ProcessInfo};

    /// Also the spans of `otlp_encode`'s tests.
    pub(in crate::export) fn span(pid: u32, name: &str, status: Status) -> Span {
        Span {
            trace_id: [0xab; 16],
            span_id: [0xcd; 8],
            parent_span_id: None,
            trace_state: String::new(),
            name: CompactStr::new(name),
            kind: SpanKind::Server,
            start_unix_ns: 1_700_000_000_000_000_000,
            end_unix_ns: 1_700_000_000_000_001_000,
            attributes: vec![
                ("http.response.status_code", AttrValue::Int(200)),
                ("url.path", AttrValue::Str("/x".into())),
            ],
            status,
            process: Arc::new(ProcessInfo {
                pid,
                exe_path: Some("/usr/bin/python3".into()),
                exe_name: "python3".into(),
                service_name: format!("svc{pid}"),
                command_line: "python3 -m http.server".into(),
                instance_id: "i".into(),
                resource_attributes: vec![
                    ("team".into(), "web".into()),
                    ("service.name".into(), "ignored here".into()),
                    ("process.pid".into(), "overridden".into()),
                ],
            }),
        }
    }

    #[test]
    fn groups_by_process_and_encodes_otlp_json() {
        let batch = [
            span(1, "GET /a", Status::Unset),
            span(2, "GET /b", Status::Error("HTTP 500".into())),
            span(1, "GET /c", Status::Unset),
        ];
        let req = to_request(&batch);
        assert_eq!(req.resource_spans.len(), 2);
        assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), 2);
        let json = serde_json::to_value(&req).unwrap();
        let sp = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(sp["traceId"], "ab".repeat(16));
        assert_eq!(sp["spanId"], "cd".repeat(8));
        assert_eq!(sp["kind"], 2);
        assert_eq!(sp["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(sp["attributes"][0]["value"]["intValue"], "200");
        assert_eq!(sp["status"]["code"], 0);
        let err = &json["resourceSpans"][1]["scopeSpans"][0]["spans"][0];
        assert_eq!(err["status"]["code"], 2);
        let res = &json["resourceSpans"][1]["resource"]["attributes"];
        assert!(
            res.as_array()
                .unwrap()
                .iter()
                .any(|kv| kv["key"] == "service.name" && kv["value"]["stringValue"] == "svc2")
        );
        assert_eq!(
            json["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"],
            "wirespan"
        );
        let attr = |k: &str| {
            res.as_array()
                .unwrap()
                .iter()
                .filter(|kv| kv["key"] == k)
                .map(|kv| kv["value"].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(attr("team"), [serde_json::json!({"stringValue": "web"})]);
        assert_eq!(
            attr("process.pid"),
            [serde_json::json!({"stringValue": "overridden"})]
        );
        assert_eq!(
            attr("os.type"),
            [serde_json::json!({"stringValue": "linux"})]
        );
        assert_eq!(attr("service.instance.id").len(), 1);
    }
}
