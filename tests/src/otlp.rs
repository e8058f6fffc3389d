//! The OTLP receiver the export tests send to: `tests/otlp/receiver.py`, run
//! with the venv's Python (PyPI `opentelemetry-proto` + `grpcio`: an OTLP
//! implementation we did not write decodes our protobuf).
//!
//! [`Receiver::start`] spawns it (by default on ports the kernel picks; with
//! fixed ports to start it *after* the agent, as a collector that was down),
//! waits for its ports line, and reads its record file: one JSON object per
//! export call ([`Export`]) and per accepted span ([`Received`], converted to
//! the harness's [`Span`] so the usual assertions apply). Waiting polls that
//! file with a deadline, never a fixed sleep. Dropping it kills the process
//! it started, by pid.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tempfile::TempDir;

use crate::env;
use crate::span::{AttrValue, Attrs, STATUS_ERROR, STATUS_OK, STATUS_UNSET, Span, SpanKind};

/// How long the receiver may take to bind and print its ports (Python and
/// grpcio start in well under a second; a loaded CI machine is slower).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval between reads of the record file (a poll interval, not a wait
/// for an effect).
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// How to start the receiver. `Default`: both ports picked by the kernel,
/// every call accepted, span records on.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// 0: the kernel picks.
    pub grpc_port: u16,
    /// 0: the kernel picks.
    pub http_port: u16,
    /// Refuse the first N export calls (HTTP 503 + Retry-After / gRPC
    /// UNAVAILABLE + RetryInfo).
    pub fail: u32,
    /// Seconds in Retry-After / RetryInfo for refused calls (default 1).
    pub retry_after: Option<u32>,
    /// Accept export calls and never answer them.
    pub hang: bool,
    /// Export records only, no span records (for large volumes).
    pub no_span_records: bool,
}

/// One export call as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Export {
    pub seq: u64,
    /// `grpc` or `http`.
    pub protocol: String,
    /// HTTP request path, or `/opentelemetry.proto.collector.trace.v1.TraceService/Export`.
    pub path: String,
    /// The body (HTTP) or message (gRPC) arrived gzip-compressed.
    pub gzip: bool,
    pub content_type: String,
    /// Request headers / gRPC metadata, names lowercase.
    pub headers: BTreeMap<String, String>,
    /// `ok`, `rejected` (--fail), `hung` (--hang) or `decode_error`.
    pub outcome: String,
    /// Spans in the request.
    pub spans: u64,
    /// Span ids carried, for calls that were not accepted.
    pub span_ids: Vec<String>,
    pub received_ns: u64,
    pub error: Option<String>,
}

/// The end of a hung call.
#[derive(Debug, Clone)]
pub struct HangEnd {
    pub seq: u64,
    pub protocol: String,
    /// `client_gone` (deadline, cancellation, closed connection) or `released`.
    pub how: String,
    pub hung_ns: u64,
}

/// One span of an accepted export call.
#[derive(Debug, Clone)]
pub struct Received {
    /// The export call that carried it.
    pub seq: u64,
    pub protocol: String,
    pub path: String,
    pub gzip: bool,
    pub headers: BTreeMap<String, String>,
    /// Byte lengths of the ids as opentelemetry-proto decoded them.
    pub trace_id_bytes: u64,
    pub span_id_bytes: u64,
    pub scope_version: String,
    /// The span in the harness's form (ids as hex of the decoded bytes,
    /// typed attributes, kind and status as numbers).
    pub span: Span,
    /// The record as written, for messages.
    pub raw: Value,
}

/// Everything the receiver recorded so far.
#[derive(Debug, Clone, Default)]
pub struct Records {
    pub exports: Vec<Export>,
    pub spans: Vec<Received>,
    pub hang_ends: Vec<HangEnd>,
    /// Lines that could not be read as records, with the reason.
    pub bad_lines: Vec<String>,
}

impl Records {
    pub fn calls(&self, outcome: &str) -> Vec<&Export> {
        self.exports
            .iter()
            .filter(|e| e.outcome == outcome)
            .collect()
    }

    /// Accepted spans of process `pid`.
    pub fn spans_of(&self, pid: u32) -> Vec<&Received> {
        self.spans
            .iter()
            .filter(|r| r.span.pid() == Some(pid))
            .collect()
    }

    /// One line per export call, for messages.
    pub fn describe_exports(&self) -> String {
        if self.exports.is_empty() {
            return "  (no export calls)".into();
        }
        self.exports
            .iter()
            .map(|e| {
                format!(
                    "  #{} {} {} gzip={} outcome={} spans={} at {}{}\n",
                    e.seq,
                    e.protocol,
                    e.path,
                    e.gzip,
                    e.outcome,
                    e.spans,
                    e.received_ns,
                    e.error
                        .as_ref()
                        .map_or(String::new(), |m| format!(" error={m}"))
                )
            })
            .collect()
    }
}

#[derive(Default)]
struct Reader {
    offset: u64,
    partial: Vec<u8>,
    records: Records,
}

/// A running receiver.
pub struct Receiver {
    child: Option<Child>,
    pid: u32,
    pub grpc_port: u16,
    pub http_port: u16,
    /// opentelemetry-proto, protobuf and grpcio versions, as it reported them.
    pub versions: Value,
    dir: TempDir,
    reader: Mutex<Reader>,
}

impl Receiver {
    /// Starts `receiver.py` with `opts` and waits until it listens on both
    /// ports. Panics (with its stderr) if it exits or does not get there in
    /// [`START_TIMEOUT`].
    pub fn start(opts: &Options) -> Receiver {
        let dir = tempfile::Builder::new()
            .prefix("wirespan-otlp-receiver-")
            .tempdir()
            .expect("temp dir");
        let records = dir.path().join("records.jsonl");
        let stdout = dir.path().join("stdout.log");
        let stderr = dir.path().join("stderr.log");
        let mut cmd = Command::new(env::otlp_python());
        cmd.arg(env::otlp_script("receiver.py"))
            .arg("--grpc-port")
            .arg(opts.grpc_port.to_string())
            .arg("--http-port")
            .arg(opts.http_port.to_string())
            .arg("--output")
            .arg(&records)
            .arg("--fail")
            .arg(opts.fail.to_string())
            .arg("--retry-after")
            .arg(opts.retry_after.unwrap_or(1).to_string());
        if opts.hang {
            cmd.arg("--hang");
        }
        if opts.no_span_records {
            cmd.arg("--no-span-records");
        }
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("receiver stdout file"))
            .stderr(fs::File::create(&stderr).expect("receiver stderr file"));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn the OTLP receiver ({cmd:?}): {e}"));
        let pid = child.id();
        let deadline = Instant::now() + START_TIMEOUT;
        let ports: Value = loop {
            let text = fs::read_to_string(&stdout).unwrap_or_default();
            if let Some(line) = text.lines().next().filter(|_| text.contains('\n')) {
                break serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("receiver pid {pid} printed {line:?}, not its ports as JSON: {e}")
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the OTLP receiver ({cmd:?}) exited with {status} before listening:\n{}",
                    fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the OTLP receiver did not print its ports within {START_TIMEOUT:?}:\n{}",
                    fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        };
        let port = |key: &str| {
            ports[key]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_else(|| panic!("receiver ports line without {key}: {ports}"))
        };
        let receiver = Receiver {
            child: Some(child),
            pid,
            grpc_port: port("grpc_port"),
            http_port: port("http_port"),
            versions: ports["versions"].clone(),
            dir,
            reader: Mutex::new(Reader::default()),
        };
        eprintln!(
            "[harness] OTLP receiver pid {pid}: gRPC 127.0.0.1:{}, HTTP 127.0.0.1:{} ({}){}",
            receiver.grpc_port,
            receiver.http_port,
            receiver.versions,
            describe_options(opts)
        );
        receiver
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `http://127.0.0.1:<grpc port>`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// `http://127.0.0.1:<http port>`: the generic endpoint, to which an
    /// HTTP exporter appends `/v1/traces`.
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The receiver's stderr.
    pub fn logs(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Everything recorded so far (reads what was appended since last time).
    pub fn records(&self) -> Records {
        let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.dir.path().join("records.jsonl");
        if let Ok(mut f) = fs::File::open(&path) {
            let mut buf = Vec::new();
            if f.seek(SeekFrom::Start(reader.offset)).is_ok() && f.read_to_end(&mut buf).is_ok() {
                reader.offset += buf.len() as u64;
                let mut data = std::mem::take(&mut reader.partial);
                data.extend_from_slice(&buf);
                let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
                reader.partial = data.split_off(complete);
                for line in data.split(|&b| b == b'\n') {
                    let line = String::from_utf8_lossy(line);
                    if !line.trim().is_empty() {
                        parse_record(&mut reader.records, &line);
                    }
                }
            }
        }
        reader.records.clone()
    }

    /// Polls the records until `done` holds or `timeout` passes; returns the
    /// last records read and whether `done` held. Panics if the receiver
    /// exits meanwhile.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Records) -> bool,
    ) -> (Records, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.records();
            if done(&records) {
                return (records, true);
            }
            self.assert_alive();
            if Instant::now() >= deadline {
                return (records, false);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits until at least `count` accepted spans satisfy `pred`.
    pub fn wait_for_spans(
        &self,
        pred: impl Fn(&Received) -> bool,
        count: usize,
        timeout: Duration,
    ) -> Records {
        self.wait_until(timeout, |r| {
            r.spans.iter().filter(|s| pred(s)).count() >= count
        })
        .0
    }

    /// Panics, with its stderr, if the receiver process has exited.
    pub fn assert_alive(&self) {
        // /proc/PID exists while the (unreaped) child lives; a zombie's
        // state is Z.
        let state = fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let zombie = state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if state.is_empty() || zombie {
            panic!(
                "the OTLP receiver pid {} exited; its stderr:\n{}",
                self.pid,
                self.logs()
            );
        }
    }

    /// Kills the receiver (the collector goes away mid-run); what it
    /// recorded stays readable through [`Receiver::records`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Kills exactly the process we spawned (std uses its pid).
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `GET /_receiver/stats`: the receiver's counters.
    pub fn stats(&self) -> Value {
        self.control_request("GET", "/_receiver/stats", "")
    }

    /// `POST /_receiver/control` with `change`, e.g. `{"hang": false}`;
    /// returns the counters after the change.
    pub fn control(&self, change: &Value) -> Value {
        self.control_request("POST", "/_receiver/control", &change.to_string())
    }

    fn control_request(&self, method: &str, path: &str, body: &str) -> Value {
        let mut stream = TcpStream::connect(("127.0.0.1", self.http_port))
            .unwrap_or_else(|e| panic!("connect to the receiver's HTTP port: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set_read_timeout");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write control request");
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .expect("read control reply");
        let json = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("receiver control reply is not JSON ({e}): {reply:?}"))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

fn describe_options(opts: &Options) -> String {
    let mut out = Vec::new();
    if opts.fail > 0 {
        out.push(format!(
            "refusing the first {} calls, retry after {} s",
            opts.fail,
            opts.retry_after.unwrap_or(1)
        ));
    }
    if opts.hang {
        out.push("hanging every call".to_string());
    }
    if out.is_empty() {
        String::new()
    } else {
        format!("; {}", out.join(", "))
    }
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or_default()
}

fn headers_of(v: &Value) -> BTreeMap<String, String> {
    v.get("headers")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Typed attribute values as the receiver writes them: JSON int for
/// int_value, float for double_value, string, bool.
fn attrs_of(v: Option<&Value>) -> Attrs {
    let Some(Value::Object(m)) = v else {
        return Attrs::new();
    };
    m.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => AttrValue::Str(s.clone()),
                Value::Bool(b) => AttrValue::Bool(*b),
                Value::Number(n) if n.is_i64() || n.is_u64() => n
                    .as_i64()
                    .map_or(AttrValue::Other(v.clone()), AttrValue::Int),
                Value::Number(n) => AttrValue::Double(n.as_f64().unwrap_or(f64::NAN)),
                other => AttrValue::Other(other.clone()),
            };
            (k.clone(), value)
        })
        .collect()
}

fn kind_of(name: &str) -> SpanKind {
    match name {
        "SPAN_KIND_UNSPECIFIED" => SpanKind::Unspecified,
        "SPAN_KIND_INTERNAL" => SpanKind::Internal,
        "SPAN_KIND_SERVER" => SpanKind::Server,
        "SPAN_KIND_CLIENT" => SpanKind::Client,
        "SPAN_KIND_PRODUCER" => SpanKind::Producer,
        "SPAN_KIND_CONSUMER" => SpanKind::Consumer,
        _ => SpanKind::Other(-1),
    }
}

fn status_of(name: &str) -> i64 {
    match name {
        "STATUS_CODE_UNSET" => STATUS_UNSET,
        "STATUS_CODE_OK" => STATUS_OK,
        "STATUS_CODE_ERROR" => STATUS_ERROR,
        _ => -1,
    }
}

fn parse_record(records: &mut Records, line: &str) {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            records.bad_lines.push(format!("not JSON ({e}): {line}"));
            return;
        }
    };
    match v.get("record").and_then(Value::as_str) {
        Some("export") => records.exports.push(Export {
            seq: u64_of(&v, "seq"),
            protocol: str_of(&v, "protocol"),
            path: str_of(&v, "path"),
            gzip: v.get("gzip").and_then(Value::as_bool).unwrap_or(false),
            content_type: str_of(&v, "content_type"),
            headers: headers_of(&v),
            outcome: str_of(&v, "outcome"),
            spans: u64_of(&v, "spans"),
            span_ids: v
                .get("span_ids")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            received_ns: u64_of(&v, "received_unix_nano"),
            error: v.get("error").and_then(Value::as_str).map(str::to_string),
        }),
        Some("hang_end") => records.hang_ends.push(HangEnd {
            seq: u64_of(&v, "seq"),
            protocol: str_of(&v, "protocol"),
            how: str_of(&v, "how"),
            hung_ns: u64_of(&v, "hung_ns"),
        }),
        Some("span") => {
            let (Some(start_ns), Some(end_ns)) = (
                v.get("start_time_unix_nano").and_then(Value::as_u64),
                v.get("end_time_unix_nano").and_then(Value::as_u64),
            ) else {
                records
                    .bad_lines
                    .push(format!("span record without integer times: {line}"));
                return;
            };
            let span = Span {
                trace_id: str_of(&v, "trace_id"),
                span_id: str_of(&v, "span_id"),
                parent_span_id: str_of(&v, "parent_span_id"),
                name: str_of(&v, "name"),
                kind: kind_of(&str_of(&v, "kind")),
                start_ns,
                end_ns,
                attrs: attrs_of(v.get("attributes")),
                status_code: status_of(&str_of(&v, "status_code")),
                status_message: str_of(&v, "status_message"),
                resource: attrs_of(v.get("resource")),
                scope_name: v
                    .get("scope")
                    .map(|s| str_of(s, "name"))
                    .unwrap_or_default(),
            };
            records.spans.push(Received {
                seq: u64_of(&v, "seq"),
                protocol: str_of(&v, "protocol"),
                path: str_of(&v, "path"),
                gzip: v.get("gzip").and_then(Value::as_bool).unwrap_or(false),
                headers: headers_of(&v),
                trace_id_bytes: u64_of(&v, "trace_id_bytes"),
                span_id_bytes: u64_of(&v, "span_id_bytes"),
                scope_version: v
                    .get("scope")
                    .map(|s| str_of(s, "version"))
                    .unwrap_or_default(),
                span,
                raw: v,
            });
        }
        _ => records.bad_lines.push(format!("unknown record: {line}")),
    }
}

/// The environment that points the agent at a collector: endpoint and
/// protocol (`grpc` or `http/protobuf`), plus a short batch delay so tests
/// do not wait for the 5 s default.
pub fn exporter_env(endpoint: &str, protocol: &str) -> Vec<(String, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.into()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
    ]
}

/// Counter `name` of the agent's exit counters; 0 when absent.
pub fn counter(counters: &Map<String, Value>, name: &str) -> u64 {
    counters.get(name).and_then(Value::as_u64).unwrap_or(0)
}

/// Every `spans_dropped*` counter (dropped spans, by reason), summed.
pub fn spans_dropped(counters: &Map<String, Value>) -> u64 {
    counters
        .iter()
        .filter(|(k, _)| k.starts_with("spans_dropped"))
        .filter_map(|(_, v)| v.as_u64())
        .sum()
}

/// The counters whose name mentions retries (`spans_retried`,
/// `export_retries`, ...), for messages and "did it retry" checks.
pub fn retry_counters(counters: &Map<String, Value>) -> Vec<(String, u64)> {
    counters
        .iter()
        .filter(|(k, _)| k.contains("retr"))
        .filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n)))
        .collect()
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`), while `pid` lives.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}
