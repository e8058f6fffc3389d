//! The agent's `--metrics-addr` endpoints: finding the address it logged,
//! plain GETs, and scrapes parsed by PyPI's `prometheus_client`
//! (`tests/metrics/parse_prometheus.py`), a parser we did not write.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Agent, env};

/// How long a single GET may take.
const GET_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The address from the agent's `wirespan: metrics on http://ADDR/metrics`
/// line (printed before the readiness line, so present once it is ready).
pub fn addr(agent: &Agent) -> SocketAddr {
    let lines = agent.stderr_lines();
    lines
        .iter()
        .find_map(|l| {
            l.split_once("wirespan: metrics on http://")
                .and_then(|(_, rest)| rest.strip_suffix("/metrics"))
                .and_then(|a| a.parse().ok())
        })
        .unwrap_or_else(|| {
            panic!(
                "no `wirespan: metrics on http://ADDR/metrics` line on the agent's stderr:\n{}",
                lines.join("\n")
            )
        })
}

/// One raw HTTP/1.1 request; returns the status code and the body.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let reply = try_request(addr, method, path)
        .unwrap_or_else(|e| panic!("{method} {path} to the metrics server {addr}: {e}"));
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no head in {reply:?}"));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line in {reply:?}"));
    (code, body.to_string())
}

/// The raw reply to one request, or why there was none (e.g. the agent
/// has exited and nothing listens any more).
pub fn try_request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, GET_TIMEOUT)?;
    s.set_read_timeout(Some(GET_TIMEOUT))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}

pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path)
}

/// One sample as prometheus_client parsed it.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// One scrape of `/metrics`, parsed.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// Family name (without `_total` for counters, as the parser gives it)
    /// and type.
    pub families: Vec<(String, String)>,
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Scrape {
    /// The value of sample `name` with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    }

    /// [`Scrape::value`] as an integer count; panics (showing the scrape) when
    /// absent.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in the scrape:\n{}", self.text))
            as u64
    }

    /// The sum of every sample named `name`, whatever its labels.
    pub fn sum(&self, name: &str) -> u64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value as u64)
            .sum()
    }

    /// The parser's type for family `name` ("unknown" when it found no TYPE
    /// line that fits its samples).
    pub fn type_of(&self, family: &str) -> Option<&str> {
        self.families
            .iter()
            .find(|(n, _)| n == family)
            .map(|(_, t)| t.as_str())
    }
}

/// `tests/metrics/parse_prometheus.py`.
fn parser_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("metrics")
        .join("parse_prometheus.py")
}

/// GET /metrics (200, the 0.0.4 content type) and parse it with
/// prometheus_client; panics with the text if the parser refuses it.
pub fn scrape(addr: SocketAddr) -> Scrape {
    let (code, text) = get(addr, "/metrics");
    assert_eq!(code, 200, "GET /metrics: {code}\n{text}");
    let mut child = Command::new(env::otlp_python())
        .arg(parser_script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn parse_prometheus.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the exposition to the parser");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "prometheus_client refused our exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("parser JSON");
    let mut families = Vec::new();
    let mut samples = Vec::new();
    for f in parsed["families"].as_array().into_iter().flatten() {
        let name = f["name"].as_str().unwrap_or_default().to_string();
        families.push((name, f["type"].as_str().unwrap_or_default().to_string()));
        for s in f["samples"].as_array().into_iter().flatten() {
            samples.push(Sample {
                name: s["name"].as_str().unwrap_or_default().to_string(),
                labels: s["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect(),
                value: s["value"].as_f64().unwrap_or(f64::NAN),
            });
        }
    }
    Scrape {
        families,
        samples,
        text,
    }
}

/// Scrapes until `done` holds or `timeout` passes; returns the last scrape
/// and whether `done` held.
pub fn scrape_until(
    addr: SocketAddr,
    timeout: Duration,
    mut done: impl FnMut(&Scrape) -> bool,
) -> (Scrape, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let s = scrape(addr);
        if done(&s) {
            return (s, true);
        }
        if Instant::now() >= deadline {
            return (s, false);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Scrapes until exit-line counter `name` (see [`sample_of_counter`])
/// reaches `at_least`, within the span timeout; panics saying `what` never
/// happened, with the last scrape. Returns that scrape.
pub fn wait_for_counter(addr: SocketAddr, name: &str, at_least: u64, what: &str) -> Scrape {
    let (scrape, done) = scrape_until(addr, crate::agent::span_timeout(), |s| {
        s.counter(name).unwrap_or(0) >= at_least
    });
    assert!(
        done,
        "{what}: {name} never reached {at_least}:\n{}",
        scrape.text
    );
    scrape
}

/// The kernel's counters in the exit line (common's `Counter::ALL`).
pub const KERNEL_COUNTERS: [&str; 19] = [
    "ringbuf_full",
    "inflight_full",
    "payload_read_failed",
    "data_events",
    "control_events",
    "socket_fds_full",
    "tcp_options_written",
    "tcp_options_no_room",
    "tcp_options_read",
    "tcp_options_no_cookie",
    "traceparent_injected",
    "traceparent_already_present",
    "traceparent_head_too_long",
    "traceparent_inject_failed",
    "traceparent_sockhash_full",
    "tracestate_injected",
    "tracestate_dropped",
    "payloads_muted",
    "payloads_length_only",
];

/// Where counter `name` of the agent's exit line appears in `/metrics`:
/// sample name and labels. None for the TLS attacher's tallies
/// (`tls_files_probed`, `tls_unsupported_executables`), which only the exit
/// line reports.
pub fn sample_of_counter(name: &str) -> Option<(String, Vec<(&'static str, String)>)> {
    if name.starts_with("tls_files") || name.starts_with("tls_unsupported") {
        return None;
    }
    if KERNEL_COUNTERS.contains(&name) {
        return Some((format!("wirespan_kernel_{name}_total"), Vec::new()));
    }
    if let Some(reason) = name.strip_prefix("http1_") {
        return Some((
            "wirespan_parse_errors_total".into(),
            vec![("protocol", "http1".into()), ("reason", reason.into())],
        ));
    }
    if let Some(reason) = name.strip_prefix("spans_dropped_") {
        return Some((
            "wirespan_spans_dropped_total".into(),
            vec![("reason", reason.into())],
        ));
    }
    Some((format!("wirespan_{name}_total"), Vec::new()))
}

impl Scrape {
    /// The scraped value of exit-line counter `name` (see
    /// [`sample_of_counter`]); None when it is not exposed or absent.
    pub fn counter(&self, name: &str) -> Option<u64> {
        let (sample, labels) = sample_of_counter(name)?;
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.value(&sample, &labels).map(|v| v as u64)
    }

    /// Events the kernel put in the ring buffer (`data_events +
    /// control_events`), and events the agent read from it.
    pub fn events_submitted_and_read(&self) -> (u64, u64) {
        let c = |n| self.counter(n).unwrap_or(0);
        (c("data_events") + c("control_events"), c("events"))
    }
}
