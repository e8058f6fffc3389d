//! Conversion of spans to the OTLP protobuf model (opentelemetry-proto),
//! shared by the JSON printer and the OTLP exporters. One Resource per
//! traced process.

use std::collections::HashMap;

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{
        ResourceSpans, ScopeSpans, Span as PSpan, Status as PStatus, span::SpanKind as PKind,
        status::StatusCode,
    },
};

use crate::{
    process::ProcessInfo,
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

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn resource(p: &ProcessInfo, host: &str) -> Resource {
    let mut attributes = vec![
        kv("service.name", s(&p.service_name)),
        kv("process.pid", any_value::Value::IntValue(p.pid.into())),
        kv("process.executable.name", s(&p.exe_name)),
        kv("host.name", s(host)),
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
        })
        .collect();
    let status = match &sp.status {
        Status::Unset => None,
        Status::Error(msg) => Some(PStatus {
            message: msg.clone(),
            code: StatusCode::Error as i32,
        }),
    };
    PSpan {
        trace_id: sp.trace_id.to_vec(),
        span_id: sp.span_id.to_vec(),
        parent_span_id: sp.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        name: sp.name.clone(),
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

/// Groups a batch by process into one request.
pub fn to_request(batch: &[Span]) -> ExportTraceServiceRequest {
    let host = host_name();
    let mut by_pid: HashMap<u32, usize> = HashMap::new();
    let mut out: Vec<ResourceSpans> = Vec::new();
    for sp in batch {
        let idx = *by_pid.entry(sp.process.pid).or_insert_with(|| {
            out.push(ResourceSpans {
                resource: Some(resource(&sp.process, &host)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "wirespan".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
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
