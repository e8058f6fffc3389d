//! OTLP export, decoded by an implementation we did not write.
//!
//! The agent traces a Python server (started with its own
//! `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`) and exports to
//! `tests/otlp/receiver.py`, which decodes every request with PyPI's
//! `opentelemetry-proto` (gRPC served by `grpcio`). Four combinations:
//! gRPC and HTTP/protobuf, each with and without gzip. Each checks, from what
//! the receiver decoded:
//! - transport: the protocol, `/v1/traces` appended to the generic HTTP
//!   endpoint, gzip exactly when asked, `application/x-protobuf`, and the
//!   `OTEL_EXPORTER_OTLP_HEADERS` headers (a percent-encoded value decoded);
//! - spans: one SERVER span per curl request, with the right name, method,
//!   status code (an int), span status, addresses and port, 16-byte trace
//!   and 8-byte span ids, and times inside that request's curl window;
//! - resource: every attribute of the contract, the server's own
//!   `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` and the agent's
//!   `OTEL_RESOURCE_ATTRIBUTES`; scope `wirespan` with the agent's version;
//! - accounting: nothing on stdout (an endpoint turns the printer off by
//!   default), exit 0, and the exit counters agree with the receiver.
//!
//! Needs root, eBPF and the venv `cargo xtask setup` creates
//! (`target/otlp-venv`, with grpcio). Run with `--test-threads=1`.

use std::collections::BTreeMap;
use std::process::Command;

use wirespan_tests::agent::span_timeout;
use wirespan_tests::clients::{self, Window};
use wirespan_tests::env;
use wirespan_tests::expect::{self, Expected};
use wirespan_tests::otlp::{self, Options, Received, Receiver};
use wirespan_tests::servers::Server;
use wirespan_tests::span::{AttrValue, Span, SpanKind};
use wirespan_tests::{Agent, span};

/// (path, HTTP status, span name). Numeric path segments are templated.
const PLAN: [(&str, u16, &str); 4] = [
    ("/status/200/export-a", 200, "GET /status/{id}/export-a"),
    ("/status/404/export-b", 404, "GET /status/{id}/export-b"),
    ("/status/500/export-c", 500, "GET /status/{id}/export-c"),
    ("/status/201/export-d", 201, "GET /status/{id}/export-d"),
];

/// `OTEL_EXPORTER_OTLP_HEADERS`; the OTel spec percent-decodes values.
const HEADERS_ENV: &str = "x-wirespan-test=otlp-export,authorization=Bearer%20t0ken";
const HEADERS_WANT: [(&str, &str); 2] = [
    ("x-wirespan-test", "otlp-export"),
    ("authorization", "Bearer t0ken"),
];

/// The agent's own OTEL_RESOURCE_ATTRIBUTES: node-wide facts for every resource.
const AGENT_RESOURCE_ENV: &str = "k8s.cluster.name=wirespan-ci";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    Grpc,
    Http,
}

fn export_roundtrip(proto: Proto, gzip: bool) {
    if !env::require_ebpf() || !env::require_otlp_receiver() {
        return;
    }
    let combo = format!(
        "{}-{}",
        match proto {
            Proto::Grpc => "grpc",
            Proto::Http => "http",
        },
        if gzip { "gzip" } else { "none" }
    );
    let receiver = Receiver::start(&Options::default());
    let service = format!("wirespan-otlp-{combo}");
    let own_resource = format!("deployment.environment.name=ci,wirespan.test.combo={combo}");
    let server = Server::python_with_env(&[
        ("OTEL_SERVICE_NAME", &service),
        ("OTEL_RESOURCE_ATTRIBUTES", &own_resource),
    ]);
    let pid = server.pid();

    let (endpoint, protocol, want_protocol) = match proto {
        Proto::Grpc => (receiver.grpc_endpoint(), "grpc", "grpc"),
        Proto::Http => (receiver.http_endpoint(), "http/protobuf", "http"),
    };
    let mut envs = otlp::exporter_env(&endpoint, protocol);
    envs.extend([
        (
            "OTEL_EXPORTER_OTLP_COMPRESSION".to_string(),
            if gzip { "gzip" } else { "none" }.to_string(),
        ),
        ("OTEL_EXPORTER_OTLP_HEADERS".into(), HEADERS_ENV.into()),
        ("OTEL_RESOURCE_ATTRIBUTES".into(), AGENT_RESOURCE_ENV.into()),
    ]);
    let agent = Agent::start_with_env(&["--pid", &pid.to_string()], &envs);
    agent.wait_ready();

    let mut windows: BTreeMap<&str, Window> = BTreeMap::new();
    for (path, status, _) in PLAN {
        let run = clients::curl(&[&server.url(path)]);
        assert_eq!(
            run.only().http_code,
            status,
            "GET {path}: the client got the wrong status while the agent ran"
        );
        windows.insert(path, run.window);
    }

    receiver.wait_for_spans(
        |r| r.span.pid() == Some(pid) && r.span.is_server(),
        PLAN.len(),
        span_timeout(),
    );
    // Resource checks read /proc/PID while the server lives.
    let exe_name = server.exe_name();
    let exe_path = server.exe_path().display().to_string();
    let stopped = agent.stop();
    let records_after = receiver.records();

    // The agent: clean exit, printer off by default once an endpoint is set.
    stopped.assert_clean_exit();
    stopped.assert_no_error_logs();
    assert!(
        stopped.stdout_lines.is_empty(),
        "{combo}: with OTEL_EXPORTER_OTLP_ENDPOINT set, --print must default to off, \
         but the agent printed {} stdout line(s):\n{}",
        stopped.stdout_lines.len(),
        stopped.stdout_lines.join("\n")
    );

    let mut problems = Vec::new();
    if !records_after.bad_lines.is_empty() {
        problems.push(format!(
            "unreadable receiver records:\n{}",
            records_after.bad_lines.join("\n")
        ));
    }

    // Transport, per export call.
    if records_after.exports.is_empty() {
        problems.push("the receiver saw no export call".into());
    }
    for e in &records_after.exports {
        let who = format!("export call #{}", e.seq);
        if e.outcome != "ok" {
            problems.push(format!(
                "{who}: outcome {} ({:?}); want every call decoded and accepted",
                e.outcome, e.error
            ));
        }
        if e.protocol != want_protocol {
            problems.push(format!(
                "{who}: arrived over {}, want {want_protocol}",
                e.protocol
            ));
        }
        if proto == Proto::Http {
            if e.path != "/v1/traces" {
                problems.push(format!(
                    "{who}: HTTP path {:?}, want \"/v1/traces\" appended to the generic endpoint",
                    e.path
                ));
            }
            if e.content_type != "application/x-protobuf" {
                problems.push(format!(
                    "{who}: Content-Type {:?}, want application/x-protobuf",
                    e.content_type
                ));
            }
        }
        if e.gzip != gzip {
            problems.push(format!(
                "{who}: gzip-compressed: {}, want {gzip} (OTEL_EXPORTER_OTLP_COMPRESSION)",
                e.gzip
            ));
        }
        for (k, v) in HEADERS_WANT {
            if e.headers.get(k).map(String::as_str) != Some(v) {
                problems.push(format!(
                    "{who}: header {k} = {:?}, want {v:?} (from OTEL_EXPORTER_OTLP_HEADERS \
                     {HEADERS_ENV:?}); headers: {:?}",
                    e.headers.get(k),
                    e.headers
                ));
            }
        }
    }

    // Spans: only the traced server, one SERVER span per request.
    let received: Vec<&Received> = records_after.spans.iter().collect();
    let ours: Vec<Span> = records_after
        .spans_of(pid)
        .into_iter()
        .map(|r| r.span.clone())
        .collect();
    if ours.len() != received.len() {
        problems.push(format!(
            "{} span(s) from other processes than the traced pid {pid}",
            received.len() - ours.len()
        ));
    }
    let expected: Vec<Expected> = PLAN
        .iter()
        .map(|(path, status, _)| Expected::new("GET", path, *status).within(windows[path]))
        .collect();
    let server_spans = expect::of(&ours, pid, SpanKind::Server);
    // Panics listing every mismatch: method, status code, span status,
    // name, server.port, addresses, hex ids, window.
    expect::assert_spans_match(
        &format!("{combo}: spans decoded by opentelemetry-proto"),
        &server_spans,
        &expected,
        SpanKind::Server,
        server.port,
    );

    let agent_version = agent_version();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    for r in &received {
        let s = &r.span;
        let who = format!("span {:?}", s.name);
        if r.trace_id_bytes != 16 || r.span_id_bytes != 8 {
            problems.push(format!(
                "{who}: ids decode to {} and {} bytes, want 16 and 8",
                r.trace_id_bytes, r.span_id_bytes
            ));
        }
        if let Some((_, _, name)) = PLAN.iter().find(|(p, _, _)| s.path() == Some(*p))
            && s.name != *name
        {
            problems.push(format!("{who}: want the name {name:?}"));
        }
        if !matches!(s.attr("http.response.status_code"), Some(AttrValue::Int(_))) {
            problems.push(format!(
                "{who}: http.response.status_code {:?} is not an int_value",
                s.attr("http.response.status_code")
            ));
        }
        if !matches!(s.attr("server.port"), Some(AttrValue::Int(_))) {
            problems.push(format!(
                "{who}: server.port {:?} is not an int_value",
                s.attr("server.port")
            ));
        }
        if s.scope_name != "wirespan" || r.scope_version.is_empty() {
            problems.push(format!(
                "{who}: scope {:?} version {:?}, want \"wirespan\" and a version",
                s.scope_name, r.scope_version
            ));
        }
        if let Some(v) = &agent_version
            && r.scope_version != *v
        {
            problems.push(format!(
                "{who}: scope version {:?}, want the agent's version {v:?}",
                r.scope_version
            ));
        }
        check_resource(
            &mut problems,
            &who,
            s,
            &ResourceWant {
                pid,
                service: &service,
                exe_name: &exe_name,
                exe_path: &exe_path,
                host: &host,
                combo: &combo,
                agent_version: agent_version.as_deref(),
            },
        );
    }

    // Accounting: the exit counters agree with what the receiver accepted.
    let counters = stopped.counters.clone().unwrap_or_default();
    let exported = otlp::counter(&counters, "spans_exported");
    let accepted = records_after.spans.len() as u64;
    if exported != accepted {
        problems.push(format!(
            "counters say spans_exported={exported}, the receiver accepted {accepted}"
        ));
    }
    let dropped = otlp::spans_dropped(&counters);
    if dropped != 0 {
        problems.push(format!(
            "spans dropped with a healthy collector: {counters:?}"
        ));
    }
    let emitted = otlp::counter(&counters, "spans_emitted");
    if emitted != exported + dropped {
        problems.push(format!(
            "spans_emitted {emitted} != spans_exported {exported} + dropped {dropped}: \
             spans lost without a count"
        ));
    }

    assert!(
        problems.is_empty(),
        "{combo}: {} problem(s) in what the OTLP receiver decoded:\n- {}\n\
         export calls:\n{}\nspans:\n{}\nfirst span record: {}\ncounters: {counters:?}",
        problems.len(),
        problems.join("\n- "),
        records_after.describe_exports(),
        span::describe(&ours),
        received
            .first()
            .map_or("(none)".to_string(), |r| r.raw.to_string()),
    );
}

struct ResourceWant<'a> {
    pid: u32,
    service: &'a str,
    exe_name: &'a str,
    exe_path: &'a str,
    host: &'a str,
    combo: &'a str,
    agent_version: Option<&'a str>,
}

fn check_resource(problems: &mut Vec<String>, who: &str, s: &Span, want: &ResourceWant<'_>) {
    let res = &s.resource;
    let mut want_str: Vec<(&str, String)> = vec![
        ("service.name", want.service.to_string()),
        ("process.executable.name", want.exe_name.to_string()),
        ("process.executable.path", want.exe_path.to_string()),
        ("os.type", "linux".to_string()),
        ("telemetry.sdk.name", "wirespan".to_string()),
        // The server's own OTEL_RESOURCE_ATTRIBUTES, from its environ.
        ("deployment.environment.name", "ci".to_string()),
        ("wirespan.test.combo", want.combo.to_string()),
        // The agent's OTEL_RESOURCE_ATTRIBUTES.
        ("k8s.cluster.name", "wirespan-ci".to_string()),
    ];
    if !want.host.is_empty() {
        want_str.push(("host.name", want.host.to_string()));
    }
    if let Some(v) = want.agent_version {
        want_str.push(("telemetry.sdk.version", v.to_string()));
    }
    for (key, value) in want_str {
        if s.resource_str(key) != Some(value.as_str()) {
            problems.push(format!(
                "{who}: resource {key} = {:?}, want {value:?}",
                res.get(key)
            ));
        }
    }
    if res.get("process.pid") != Some(&AttrValue::Int(i64::from(want.pid))) {
        problems.push(format!(
            "{who}: resource process.pid = {:?}, want the int {}",
            res.get("process.pid"),
            want.pid
        ));
    }
    for key in [
        "service.instance.id",
        "telemetry.sdk.language",
        "telemetry.sdk.version",
    ] {
        if s.resource_str(key).is_none_or(str::is_empty) {
            problems.push(format!(
                "{who}: resource {key} = {:?}, want a non-empty string",
                res.get(key)
            ));
        }
    }
    if !s
        .resource_str("process.command_line")
        .is_some_and(|c| c.contains("py_server.py"))
    {
        problems.push(format!(
            "{who}: resource process.command_line = {:?}, want the server's command line \
             (with py_server.py)",
            res.get("process.command_line")
        ));
    }
}

/// `wirespan --version` -> `0.1.0` (what scope.version and
/// telemetry.sdk.version should say).
fn agent_version() -> Option<String> {
    let out = Command::new(env::agent_bin())
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).map(str::to_string)
}

#[test]
fn otlp_grpc_export_decodes_with_pypi_receiver() {
    export_roundtrip(Proto::Grpc, false);
}

#[test]
fn otlp_grpc_gzip_export_decodes_with_pypi_receiver() {
    export_roundtrip(Proto::Grpc, true);
}

#[test]
fn otlp_http_export_decodes_with_pypi_receiver() {
    export_roundtrip(Proto::Http, false);
}

#[test]
fn otlp_http_gzip_export_decodes_with_pypi_receiver() {
    export_roundtrip(Proto::Http, true);
}
