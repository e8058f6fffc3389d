//! Our OTLP/JSON, decoded by an implementation we did not write.
//!
//! The agent traces a Python server with `--print json` while curl makes a
//! few requests (200, 404 and one 500, each on a distinct path). Its raw
//! stdout lines then go through `tests/otlp/decode_otlp_json.py`, which
//! parses each with PyPI's `opentelemetry-proto` messages and
//! `google.protobuf.json_format.Parse(..., ignore_unknown_fields=False)`:
//! strict, so a field we emit that the OTLP schema does not have fails the
//! test. The assertions read the decoder's summary, i.e. what that
//! implementation understood: kinds and status codes as enum names, ids as
//! the protobuf bytes (16 and 8 bytes), int attributes as ints.
//!
//! The decoder converts `traceId`/`spanId`/`parentSpanId` from hex to base64
//! before parsing: the OTLP specification's JSON encoding makes ids hex,
//! where protobuf's JSON mapping (all `json_format` knows) reads bytes fields
//! as base64. See the script's docstring.
//!
//! Needs the venv `cargo xtask setup` creates (`target/otlp-venv`), or
//! `WIRESPAN_OTLP_PYTHON`. Run as root with `--test-threads=1`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use wirespan_tests::agent::span_timeout;
use wirespan_tests::clients::{self, Window, clock_slack_ns, end_slack_ns};
use wirespan_tests::env;
use wirespan_tests::servers::Server;
use wirespan_tests::{Agent, span};

/// (path, HTTP status, span name). The agent templates numeric path
/// segments as `{id}`. 404 on a server is not an error; 500 is.
const PLAN: [(&str, u16, &str); 5] = [
    ("/status/200/otlp-a", 200, "GET /status/{id}/otlp-a"),
    ("/status/404/otlp-b", 404, "GET /status/{id}/otlp-b"),
    ("/status/500/otlp-c", 500, "GET /status/{id}/otlp-c"),
    ("/status/200/otlp-d", 200, "GET /status/{id}/otlp-d"),
    ("/status/404/otlp-e", 404, "GET /status/{id}/otlp-e"),
];

/// How long the decoder may take for a handful of lines.
const DECODE_TIMEOUT: Duration = Duration::from_secs(60);

/// Pipes `lines` into the decoder; returns its summary. Panics, with its
/// stderr, unless it exits 0 and prints one JSON object.
fn decode(lines: &[String]) -> Value {
    let python = env::otlp_python();
    let script = env::otlp_script("decode_otlp_json.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot spawn {} {}: {e}",
                python.display(),
                script.display()
            )
        });
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    // A writer thread: the decoder may fail (and stop reading) early.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(DECODE_TIMEOUT) {
        Ok(out) => out.expect("wait for the decoder"),
        Err(_) => {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = waiter.join();
            let _ = writer.join();
            panic!("decoder pid {pid} did not finish within {DECODE_TIMEOUT:?}; killed it");
        }
    };
    let _ = waiter.join();
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "opentelemetry-proto could not decode our OTLP/JSON ({}):\n{stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("decoder printed no JSON summary ({e}):\nstdout:\n{stdout}\nstderr:\n{stderr}")
    })
}

/// An id as the decoder saw it: hex of `bytes` bytes, not all zeros.
fn check_id(problems: &mut Vec<String>, who: &str, span: &Value, field: &str, bytes: u64) {
    let hex = span[field].as_str().unwrap_or_default();
    let len = span[&format!("{field}_bytes")].as_u64();
    if len != Some(bytes) || !span::is_valid_hex_id(hex, 2 * bytes as usize) {
        problems.push(format!(
            "{who}: {field} decodes to {len:?} bytes {hex:?}, want {bytes} bytes, not all zero"
        ));
    }
}

#[test]
fn otlp_json_decodes_with_pypi_opentelemetry_proto() {
    if !env::require_ebpf() || !env::require_otlp_python() {
        return;
    }
    let server = Server::python();
    let pid = server.pid();
    let agent = Agent::start_ready(&["--pid", &pid.to_string()]);

    let test_start = clients::now_ns();
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
    let test_end = clients::now_ns();

    agent.wait_for_spans(
        |s| s.is_server() && s.pid() == Some(pid),
        PLAN.len(),
        span_timeout(),
    );
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    assert!(
        !stopped.stdout_lines.is_empty(),
        "the agent printed nothing on stdout"
    );

    let summary = decode(&stopped.stdout_lines);
    eprintln!(
        "[test] decoded {} line(s) with {} (ignore_unknown_fields={})",
        stopped.stdout_lines.len(),
        summary["versions"],
        summary["ignore_unknown_fields"]
    );
    let shown = serde_json::to_string_pretty(&summary).unwrap_or_default();

    let mut problems = Vec::new();
    if summary["ignore_unknown_fields"] != Value::Bool(false) {
        problems.push("the decoder did not parse strictly (ignore_unknown_fields)".to_string());
    }
    if summary["requests"].as_u64() != Some(stopped.stdout_lines.len() as u64) {
        problems.push(format!(
            "decoded {} requests from {} stdout lines",
            summary["requests"],
            stopped.stdout_lines.len()
        ));
    }
    let spans = summary["spans"].as_array().cloned().unwrap_or_default();

    // The same spans as our own parser saw: same (trace id, span id) pairs.
    let theirs: Vec<(String, String)> = spans
        .iter()
        .map(|s| {
            (
                s["trace_id"].as_str().unwrap_or_default().to_string(),
                s["span_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let mut ours: Vec<(String, String)> = stopped
        .spans
        .iter()
        .map(|s| (s.trace_id.to_lowercase(), s.span_id.to_lowercase()))
        .collect();
    let mut theirs_sorted = theirs.clone();
    theirs_sorted.sort();
    ours.sort();
    if theirs_sorted != ours {
        problems.push(format!(
            "opentelemetry-proto decoded ids {theirs_sorted:?}, our parser {ours:?}"
        ));
    }
    let mut span_ids: Vec<&str> = theirs.iter().map(|(_, s)| s.as_str()).collect();
    span_ids.sort_unstable();
    span_ids.dedup();
    if span_ids.len() != theirs.len() {
        problems.push(format!("span ids are not distinct: {theirs:?}"));
    }

    // Only the server is traced, and it makes no outgoing calls: every span
    // is a SERVER span of its pid, one per request.
    let exe = server.exe_name();
    let mut by_path: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for s in &spans {
        let path = s["attributes"]["url.path"]
            .as_str()
            .unwrap_or("<no url.path>")
            .to_string();
        let who = format!("span for {path}");
        if s["kind"] != "SPAN_KIND_SERVER" {
            problems.push(format!("{who}: kind {}, want SPAN_KIND_SERVER", s["kind"]));
        }
        let res = &s["resource"];
        if res["process.pid"].as_i64() != Some(i64::from(pid)) {
            problems.push(format!(
                "{who}: resource process.pid {}, want the int {pid}",
                res["process.pid"]
            ));
        }
        if res["service.name"].as_str().is_none_or(str::is_empty) {
            problems.push(format!(
                "{who}: resource service.name {}, want a non-empty string",
                res["service.name"]
            ));
        }
        if res["process.executable.name"].as_str() != Some(exe.as_str()) {
            problems.push(format!(
                "{who}: resource process.executable.name {}, want {exe:?}",
                res["process.executable.name"]
            ));
        }
        check_id(&mut problems, &who, s, "trace_id", 16);
        check_id(&mut problems, &who, s, "span_id", 8);
        let start = s["start_time_unix_nano"].as_u64();
        let end = s["end_time_unix_nano"].as_u64();
        match (start, end) {
            (Some(start), Some(end)) => {
                if start > end {
                    problems.push(format!("{who}: start {start} > end {end}"));
                }
                if start + clock_slack_ns() < test_start || end > test_end + end_slack_ns() {
                    problems.push(format!(
                        "{who}: [{start}, {end}] outside the test's window [{test_start}, \
                         {test_end}] ({} ns slack at the start, {} at the end)",
                        clock_slack_ns(),
                        end_slack_ns()
                    ));
                }
            }
            _ => problems.push(format!(
                "{who}: start/end {} / {} are not integers",
                s["start_time_unix_nano"], s["end_time_unix_nano"]
            )),
        }
        by_path.entry(path).or_default().push(s);
    }

    for (path, status, name) in PLAN {
        let who = format!("GET {path}");
        let found = by_path.remove(path).unwrap_or_default();
        let [s] = found.as_slice() else {
            problems.push(format!("{who}: {} spans, want exactly 1", found.len()));
            continue;
        };
        if s["name"] != name {
            problems.push(format!("{who}: name {}, want {name:?}", s["name"]));
        }
        let attrs = &s["attributes"];
        if attrs["http.request.method"] != "GET" {
            problems.push(format!(
                "{who}: http.request.method {}, want \"GET\"",
                attrs["http.request.method"]
            ));
        }
        // An int attribute must come back as an int, not a string.
        if attrs["http.response.status_code"].as_i64() != Some(i64::from(status)) {
            problems.push(format!(
                "{who}: http.response.status_code {}, want the int {status}",
                attrs["http.response.status_code"]
            ));
        }
        if attrs["server.port"].as_i64() != Some(i64::from(server.port)) {
            problems.push(format!(
                "{who}: server.port {}, want the int {}",
                attrs["server.port"], server.port
            ));
        }
        let want_status = if status >= 500 {
            "STATUS_CODE_ERROR"
        } else {
            "STATUS_CODE_UNSET"
        };
        if s["status_code"] != want_status {
            problems.push(format!(
                "{who}: status code {}, want {want_status}",
                s["status_code"]
            ));
        }
        // The tighter window: the one measured around this request alone.
        let w = windows[path];
        if let (Some(start), Some(end)) = (
            s["start_time_unix_nano"].as_u64(),
            s["end_time_unix_nano"].as_u64(),
        ) && (start + clock_slack_ns() < w.start_ns || end > w.end_ns + end_slack_ns())
        {
            problems.push(format!(
                "{who}: [{start}, {end}] outside its curl window [{}, {}] ({} ns slack at the \
                 start, {} at the end)",
                w.start_ns,
                w.end_ns,
                clock_slack_ns(),
                end_slack_ns()
            ));
        }
    }
    for (path, extra) in by_path {
        problems.push(format!("{} unexpected span(s) for {path:?}", extra.len()));
    }

    assert!(
        problems.is_empty(),
        "{} problem(s) in what opentelemetry-proto decoded from our OTLP/JSON:\n- {}\n\
         decoder summary:\n{shown}\nour stdout:\n{}",
        problems.len(),
        problems.join("\n- "),
        stopped.stdout_lines.join("\n")
    );
}
