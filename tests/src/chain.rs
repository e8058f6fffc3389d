//! Helpers for the trace-context tests: chains of unmodified services
//! (Python and Java forwarders in front of nginx or a leaf), the SDK client's
//! prerequisites, and [`assert_traces`], which checks that every request
//! became exactly one trace with the expected parent links.
//!
//! Spans are matched to requests by `url.path` (distinct per request) and to
//! hops by `process.pid` and span kind.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{Agent, Stopped, span_timeout};
use crate::clients::{self, Window, clock_slack_ns, end_slack_ns};
use crate::expect::must_be_error;
use crate::servers::{self, Server};
use crate::span::{self, STATUS_ERROR, STATUS_UNSET, Span, SpanKind};
use crate::{data, env};

/// PyPI packages the SDK-instrumented client (`servers/py_sdk_client.py`)
/// needs in [`env::otlp_python`]'s venv, next to `opentelemetry-proto`.
pub const SDK_PIP_PACKAGES: &[&str] =
    &["opentelemetry-sdk", "opentelemetry-instrumentation-urllib"];

/// How long `javac` may take to compile the Java forwarder.
const JAVAC_TIMEOUT: Duration = Duration::from_secs(180);

impl Server {
    /// `servers/py_forwarder.py`: a Python `ThreadingHTTPServer` that sends
    /// every request on to `upstream` (`http://127.0.0.1:PORT`) with urllib
    /// and answers with the upstream's status and body.
    pub fn py_forwarder(upstream: &str) -> Server {
        let upstream = upstream.to_string();
        Server::start("py-forwarder", move |port, _dir| {
            let mut cmd = Command::new(env::python());
            cmd.arg(env::server_script("py_forwarder.py"))
                .arg(port.to_string())
                .arg(&upstream);
            clients::no_proxy(&mut cmd);
            cmd
        })
    }

    /// `servers/py_forwarder.py` as a leaf: answers itself (`/status/NNN/...`
    /// gives NNN), with a JSON body of the context headers it received.
    pub fn py_leaf() -> Server {
        Server::start("py-leaf", |port, _dir| {
            let mut cmd = Command::new(env::python());
            cmd.arg(env::server_script("py_forwarder.py"))
                .arg(port.to_string())
                .arg("-");
            cmd
        })
    }

    /// `servers/Forwarder.java`: a JDK `HttpServer` with a fixed thread pool
    /// as its executor, forwarding with `HttpURLConnection`. Compiled with
    /// `javac` on first use (see [`java_forwarder_classes`]); call
    /// [`require_java`] first.
    pub fn java_forwarder(upstream: &str) -> Server {
        let java = env::find_program("java").expect("java is installed");
        let classes = java_forwarder_classes();
        let upstream = upstream.to_string();
        Server::start("java-forwarder", move |port, _dir| {
            let mut cmd = Command::new(&java);
            cmd.args(["-Xmx256m", "-XX:+UseSerialGC", "-cp"])
                .arg(&classes)
                .arg("Forwarder")
                .arg(port.to_string())
                .arg(&upstream)
                .arg("16");
            cmd
        })
    }

    /// `http://127.0.0.1:PORT`, the upstream argument of a forwarder.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// An agent that traces every process but emits only the spans of
/// connections to `servers`' ports (`--open-ports`): curl, the test process
/// and any other client of these servers are traced without knowing their
/// pids in advance, and the spans of unrelated traffic on a shared machine
/// are not built, printed and parsed. Linking still sees every process
/// (`--open-ports` is applied when spans are emitted).
pub fn agent_for(servers: &[&Server]) -> Agent {
    let ports: Vec<String> = servers.iter().map(|s| s.port.to_string()).collect();
    Agent::start_ready(&["--open-ports", &ports.join(",")])
}

/// `java` and `javac` are installed (panics in CI when not).
pub fn require_java() -> bool {
    env::require_program("java") && env::require_program("javac")
}

/// [`env::otlp_python`] can import the OpenTelemetry SDK and its urllib
/// instrumentation ([`SDK_PIP_PACKAGES`]).
pub fn require_sdk_python() -> bool {
    const IMPORT: &str = "import opentelemetry.sdk.trace, opentelemetry.instrumentation.urllib";
    let python = env::otlp_python();
    let works = Command::new(&python)
        .args(["-c", IMPORT])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        return env::skip(&format!(
            "{} cannot `{IMPORT}` (pip-install {} into it, or set WIRESPAN_OTLP_PYTHON)",
            python.display(),
            SDK_PIP_PACKAGES.join(" ")
        ));
    }
    true
}

/// The directory holding `Forwarder.class`, compiled from
/// `servers/Forwarder.java` at most once per test process, and cached under
/// `<workspace>/target/wirespan-tests/java/forwarder-<sha256 of the source>`
/// (so an edited source is recompiled, an unchanged one is not).
pub fn java_forwarder_classes() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(compile_java_forwarder).clone()
}

fn compile_java_forwarder() -> PathBuf {
    let src = env::server_script("Forwarder.java");
    let text = fs::read(&src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    let hash = data::sha256_hex(&text);
    let root = env::workspace_root().join("target/wirespan-tests/java");
    let dir = root.join(format!("forwarder-{}", &hash[..16]));
    if dir.join("Forwarder.class").is_file() {
        return dir;
    }
    fs::create_dir_all(&root).expect("create the javac output root");
    // Compile next to the final directory, then rename: test binaries that
    // run at the same time never see a half-written class.
    let tmp = root.join(format!("tmp-{}-{}", std::process::id(), &hash[..16]));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).expect("create the javac output dir");
    let javac = env::find_program("javac").expect("javac is installed");
    let started = Instant::now();
    let out = clients::run_with_timeout(
        Command::new(javac).arg("-d").arg(&tmp).arg(&src),
        JAVAC_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "javac {} failed ({}):\n{}{}",
        src.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "[harness] compiled {} in {:?}",
        src.display(),
        started.elapsed()
    );
    if fs::rename(&tmp, &dir).is_err() {
        // Another test process got there first.
        let _ = fs::remove_dir_all(&tmp);
        assert!(
            dir.join("Forwarder.class").is_file(),
            "cannot move the compiled forwarder to {}",
            dir.display()
        );
    }
    dir
}

/// What one hop received, from its `X-Received-Context` header (or a leaf's
/// body): every `traceparent` and `tracestate` header line, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    pub path: String,
    pub traceparent: Vec<String>,
    pub tracestate: Vec<String>,
}

impl Received {
    /// Parses the JSON the forwarders write.
    pub fn parse(json: &str) -> Received {
        let v: Value = serde_json::from_str(json.trim())
            .unwrap_or_else(|e| panic!("received-context JSON {json:?}: {e}"));
        Received::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Received {
        let list = |key: &str| -> Vec<String> {
            v.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        Received {
            path: v
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            traceparent: list("traceparent"),
            tracestate: list("tracestate"),
        }
    }
}

/// `traceState` of every span the agent printed, by span id (the harness's
/// [`Span`] does not carry it).
pub fn trace_states(stdout_lines: &[String]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in stdout_lines {
        let Ok(root) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let spans = root
            .get("resourceSpans")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|rs| rs.get("scopeSpans").and_then(Value::as_array))
            .flatten()
            .filter_map(|ss| ss.get("spans").and_then(Value::as_array))
            .flatten();
        for s in spans {
            let id = s.get("spanId").and_then(Value::as_str).unwrap_or_default();
            let state = s
                .get("traceState")
                .and_then(Value::as_str)
                .unwrap_or_default();
            out.insert(id.to_string(), state.to_string());
        }
    }
    out
}

/// One line per span with its ids: for link failures.
pub fn show(s: &Span) -> String {
    let kind = match s.kind {
        SpanKind::Server => "SERVER".to_string(),
        SpanKind::Client => "CLIENT".to_string(),
        k => format!("{k:?}"),
    };
    format!(
        "{kind} pid={} exe={} path={} status={} trace={} span={} parent={} start={} end={}",
        s.pid().map_or("?".into(), |p| p.to_string()),
        s.resource_str("process.executable.name").unwrap_or("?"),
        s.path().unwrap_or("?"),
        s.http_status().map_or("?".into(), |c| c.to_string()),
        s.trace_id,
        s.span_id,
        if s.parent_span_id.is_empty() {
            "-"
        } else {
            &s.parent_span_id
        },
        s.start_ns,
        s.end_ns,
    )
}

/// [`show`] for many spans, one per line, indented.
pub fn show_all<'a>(spans: impl IntoIterator<Item = &'a Span>) -> String {
    let mut out = String::new();
    for s in spans {
        let _ = writeln!(out, "    {}", show(s));
    }
    if out.is_empty() {
        out.push_str("    (no spans)\n");
    }
    out
}

/// Where a hop's span must point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parent {
    /// No parent: the trace's root.
    Root,
    /// A span id from outside the hops (an inbound `traceparent`'s parent-id).
    Remote(String),
    /// The span of hop `i` of the same trace.
    Hop(usize),
}

/// One span a request must cause.
#[derive(Debug, Clone)]
pub struct Hop {
    /// For messages: "python SERVER", "curl CLIENT", ...
    pub label: String,
    pub pid: u32,
    pub kind: SpanKind,
    /// `server.port` of the span: the port the server listens on.
    pub port: u16,
    /// `process.executable.name`, when it must be checked.
    pub exe: Option<String>,
    pub parent: Parent,
}

impl Hop {
    pub fn new(label: &str, pid: u32, kind: SpanKind, port: u16, parent: Parent) -> Hop {
        Hop {
            label: label.to_string(),
            pid,
            kind,
            port,
            exe: None,
            parent,
        }
    }

    pub fn exe(mut self, exe: &str) -> Hop {
        self.exe = Some(exe.to_string());
        self
    }
}

/// A request and the trace it must become.
#[derive(Debug, Clone)]
pub struct ExpectedTrace {
    pub method: String,
    /// Distinct per request: how spans are matched to it.
    pub path: String,
    /// The HTTP status every hop must report (a forwarder passes its
    /// upstream's status back).
    pub status: u16,
    /// The trace id it must have, when known in advance (an inbound header).
    pub trace_id: Option<String>,
    pub hops: Vec<Hop>,
    /// Wall-clock window every span must lie in.
    pub window: Option<Window>,
}

impl ExpectedTrace {
    /// A chain: hop 0 is the root, every later hop the child of the one
    /// before.
    pub fn chain(path: &str, status: u16, hops: &[(&str, u32, SpanKind, u16)]) -> ExpectedTrace {
        ExpectedTrace {
            method: "GET".into(),
            path: path.to_string(),
            status,
            trace_id: None,
            hops: hops
                .iter()
                .enumerate()
                .map(|(i, &(label, pid, kind, port))| {
                    let parent = if i == 0 {
                        Parent::Root
                    } else {
                        Parent::Hop(i - 1)
                    };
                    Hop::new(label, pid, kind, port, parent)
                })
                .collect(),
            window: None,
        }
    }

    pub fn within(mut self, window: Window) -> ExpectedTrace {
        self.window = Some(window);
        self
    }

    fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.hops.iter().map(|h| h.pid)
    }
}

/// Every pid any hop of `expected` names.
pub fn pids_of(expected: &[ExpectedTrace]) -> HashSet<u32> {
    expected.iter().flat_map(ExpectedTrace::pids).collect()
}

/// Waits until the agent printed a span for every hop of `expected` (or the
/// span timeout passes), then stops it and checks that it exited cleanly.
pub fn collect(agent: Agent, expected: &[ExpectedTrace]) -> Stopped {
    let pids = pids_of(expected);
    let paths: HashSet<&str> = expected.iter().map(|e| e.path.as_str()).collect();
    let want: usize = expected.iter().map(|e| e.hops.len()).sum();
    let started = Instant::now();
    let got = agent.wait_for_spans(
        |s| {
            s.pid().is_some_and(|p| pids.contains(&p))
                && s.path().is_some_and(|p| paths.contains(p))
        },
        want,
        span_timeout(),
    );
    eprintln!(
        "[harness] {} of {want} expected spans after {:?}",
        got.len(),
        started.elapsed()
    );
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    stopped
}

/// Checks that every request of `expected` became exactly one trace:
/// - exactly one span per hop (by pid, kind and `url.path`), and no other
///   span with that path from those pids;
/// - all of a request's spans share one valid trace id (the expected one
///   when given), and no two requests share a trace id;
/// - each hop's parent is what [`Parent`] says (root: no parent);
/// - the trace holds nothing but these spans (no span of any process, e.g.
///   another request's, joined it), and no span id appears twice;
/// - method, status code, span status (ERROR for 4xx/5xx on clients, 5xx on
///   servers), `server.port`, the executable name when given; a child span
///   lies inside its parent span (+/- [`clock_slack_ns`]), and every span in
///   the request's window when measured.
///
/// Panics listing every problem with the spans involved; returns each
/// request's spans in hop order.
pub fn assert_traces(what: &str, spans: &[Span], expected: &[ExpectedTrace]) -> Vec<Vec<Span>> {
    let pids = pids_of(expected);
    let mut problems: Vec<String> = Vec::new();
    let mut bad_paths: Vec<String> = Vec::new();

    let mut by_path: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    for s in spans {
        if s.pid().is_some_and(|p| pids.contains(&p)) {
            by_path
                .entry(s.path().unwrap_or("<no url.path>"))
                .or_default()
                .push(s);
        }
    }
    let mut by_trace: HashMap<&str, Vec<&Span>> = HashMap::new();
    let mut span_ids: HashMap<&str, usize> = HashMap::new();
    for s in spans {
        by_trace.entry(s.trace_id.as_str()).or_default().push(s);
        *span_ids.entry(s.span_id.as_str()).or_default() += 1;
    }

    let mut out = Vec::with_capacity(expected.len());
    let mut trace_of: HashMap<String, &str> = HashMap::new();
    for e in expected {
        let before = problems.len();
        let mut cands = by_path.remove(e.path.as_str()).unwrap_or_default();
        let mut found: Vec<Option<&Span>> = Vec::with_capacity(e.hops.len());
        for hop in &e.hops {
            let (mine, rest): (Vec<&Span>, Vec<&Span>) = cands
                .into_iter()
                .partition(|s| s.pid() == Some(hop.pid) && s.kind == hop.kind);
            cands = rest;
            match mine.as_slice() {
                [one] => found.push(Some(*one)),
                [] => {
                    problems.push(format!(
                        "{}: no {} span (pid {})",
                        e.path, hop.label, hop.pid
                    ));
                    found.push(None);
                }
                many => {
                    problems.push(format!(
                        "{}: {} {} spans (want 1):\n{}",
                        e.path,
                        many.len(),
                        hop.label,
                        show_all(many.iter().copied())
                    ));
                    found.push(None);
                }
            }
        }
        for s in cands {
            problems.push(format!("{}: unexpected span: {}", e.path, show(s)));
        }
        let root_trace = found
            .iter()
            .flatten()
            .next()
            .map(|s| s.trace_id.clone())
            .unwrap_or_default();
        if let Some(want) = &e.trace_id
            && !root_trace.is_empty()
            && &root_trace != want
        {
            problems.push(format!(
                "{}: trace id {root_trace}, want {want} (from the inbound traceparent)",
                e.path
            ));
        }
        if !root_trace.is_empty() {
            if !span::is_valid_hex_id(&root_trace, 32)
                || root_trace.bytes().any(|b| b.is_ascii_uppercase())
            {
                problems.push(format!("{}: invalid trace id {root_trace:?}", e.path));
            }
            if let Some(other) = trace_of.insert(root_trace.clone(), e.path.as_str()) {
                problems.push(format!(
                    "{}: shares trace id {root_trace} with request {other}",
                    e.path
                ));
            }
        }
        for (hop, s) in e.hops.iter().zip(&found) {
            let Some(s) = s else { continue };
            let who = format!("{} {}", e.path, hop.label);
            if s.trace_id != root_trace {
                problems.push(format!(
                    "{who}: trace id {}, but the request's first span has {root_trace}",
                    s.trace_id
                ));
            }
            if !span::is_valid_hex_id(&s.span_id, 16) {
                problems.push(format!("{who}: invalid span id {:?}", s.span_id));
            }
            if span_ids.get(s.span_id.as_str()).copied().unwrap_or(0) > 1 {
                problems.push(format!("{who}: span id {} is not unique", s.span_id));
            }
            match &hop.parent {
                Parent::Root => {
                    if !s.parent_span_id.is_empty() {
                        problems.push(format!(
                            "{who}: has parent {}, want none (a trace root)",
                            s.parent_span_id
                        ));
                    }
                }
                Parent::Remote(want) => {
                    if &s.parent_span_id != want {
                        problems.push(format!(
                            "{who}: parent {:?}, want {want} (the remote parent)",
                            s.parent_span_id
                        ));
                    }
                }
                Parent::Hop(j) => {
                    if let Some(p) = found.get(*j).copied().flatten() {
                        if s.parent_span_id != p.span_id {
                            problems.push(format!(
                                "{who}: parent {:?}, want {} ({})",
                                s.parent_span_id, p.span_id, e.hops[*j].label
                            ));
                        }
                        if s.start_ns + clock_slack_ns() < p.start_ns
                            || s.end_ns > p.end_ns + end_slack_ns()
                        {
                            problems.push(format!(
                                "{who}: span [{}, {}] is not inside its parent {} [{}, {}] \
                                 (starts {:+} ns from the parent's start, ends {:+} ns from its end)",
                                s.start_ns,
                                s.end_ns,
                                e.hops[*j].label,
                                p.start_ns,
                                p.end_ns,
                                i128::from(s.start_ns) - i128::from(p.start_ns),
                                i128::from(s.end_ns) - i128::from(p.end_ns),
                            ));
                        }
                    }
                }
            }
            if s.method() != Some(e.method.as_str()) {
                problems.push(format!("{who}: method {:?}, want {}", s.method(), e.method));
            }
            if s.http_status() != Some(i64::from(e.status)) {
                problems.push(format!(
                    "{who}: status {:?}, want {}",
                    s.http_status(),
                    e.status
                ));
            }
            let want_code = if must_be_error(hop.kind, e.status) {
                STATUS_ERROR
            } else {
                STATUS_UNSET
            };
            if s.status_code != want_code {
                problems.push(format!(
                    "{who}: status.code {}, want {want_code}",
                    s.status_code
                ));
            }
            if s.attr_int("server.port") != Some(i64::from(hop.port)) {
                problems.push(format!(
                    "{who}: server.port {:?}, want {}",
                    s.attr("server.port"),
                    hop.port
                ));
            }
            if let Some(exe) = &hop.exe
                && s.resource_str("process.executable.name") != Some(exe.as_str())
            {
                problems.push(format!(
                    "{who}: process.executable.name {:?}, want {exe:?}",
                    s.resource_str("process.executable.name")
                ));
            }
            if let Some(w) = e.window
                && !w.contains(s)
            {
                problems.push(format!(
                    "{who}: span [{}, {}] not inside the client's window [{}, {}] (+/- {} ns)",
                    s.start_ns,
                    s.end_ns,
                    w.start_ns,
                    w.end_ns,
                    clock_slack_ns()
                ));
            }
        }
        // Nothing else may have joined this trace.
        if !root_trace.is_empty() {
            let mine: HashSet<&str> = found.iter().flatten().map(|s| s.span_id.as_str()).collect();
            for s in by_trace.get(root_trace.as_str()).into_iter().flatten() {
                if !mine.contains(s.span_id.as_str()) {
                    problems.push(format!(
                        "{}: a span that is not one of its hops is in its trace: {}",
                        e.path,
                        show(s)
                    ));
                }
            }
        }
        if problems.len() > before {
            bad_paths.push(e.path.clone());
        }
        out.push(found.into_iter().flatten().cloned().collect());
    }
    for (path, extra) in &by_path {
        for s in extra {
            problems.push(format!(
                "span for no expected request (path {path:?}): {}",
                show(s)
            ));
        }
    }
    if !problems.is_empty() {
        const SHOW_PROBLEMS: usize = 80;
        const SHOW_PATHS: usize = 12;
        let mut msg = format!(
            "{what}: {} problem(s) with the traces of {} request(s) ({} of them affected)\n",
            problems.len(),
            expected.len(),
            bad_paths.len()
        );
        for p in problems.iter().take(SHOW_PROBLEMS) {
            let _ = writeln!(msg, "- {p}");
        }
        if problems.len() > SHOW_PROBLEMS {
            let _ = writeln!(msg, "- ... {} more", problems.len() - SHOW_PROBLEMS);
        }
        let all: Vec<&Span> = spans.iter().collect();
        for path in bad_paths.iter().take(SHOW_PATHS) {
            let e = expected
                .iter()
                .find(|e| &e.path == path)
                .expect("expected path");
            let _ = writeln!(msg, "request {path}, hops:");
            for (i, h) in e.hops.iter().enumerate() {
                let _ = writeln!(
                    msg,
                    "    #{i} {} pid {} parent {:?}",
                    h.label, h.pid, h.parent
                );
            }
            let _ = writeln!(msg, "  spans with this path (any process):");
            msg.push_str(&show_all(
                all.iter()
                    .copied()
                    .filter(|s| s.path() == Some(path.as_str())),
            ));
        }
        panic!("{msg}");
    }
    out
}

/// Runs `threads` client threads in this process, each on its own keep-alive
/// connection to `addr`, each making `per_thread` GET requests one after the
/// other, to `path(thread, i)`. Returns (path, status) per request, and the
/// wall time taken. Panics on any I/O error.
pub fn keepalive_load(
    addr: SocketAddr,
    threads: usize,
    per_thread: usize,
    path: impl Fn(usize, usize) -> String + Sync,
) -> (Vec<(String, u16)>, Duration) {
    let started = Instant::now();
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let path = &path;
                scope.spawn(move || {
                    let mut stream = TcpStream::connect(addr)
                        .unwrap_or_else(|e| panic!("thread {t}: connect {addr}: {e}"));
                    stream
                        .set_read_timeout(Some(Duration::from_secs(60)))
                        .expect("read timeout");
                    let mut out = Vec::with_capacity(per_thread);
                    for i in 0..per_thread {
                        let p = path(t, i);
                        let req = format!(
                            "GET {p} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: wirespan-tests\r\n\r\n"
                        );
                        stream
                            .write_all(req.as_bytes())
                            .unwrap_or_else(|e| panic!("thread {t}: send {p}: {e}"));
                        let resp = clients::read_responses(&mut stream, &["GET"])
                            .unwrap_or_else(|e| panic!("thread {t}: response to {p}: {e}"));
                        out.push((p, resp[0].status));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect::<Vec<_>>()
    });
    (results, started.elapsed())
}

/// The file name of /proc/PID/exe (see [`servers::exe_name`]).
pub fn exe_of(server: &Server) -> String {
    servers::exe_name(server.pid())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One span as the agent prints it (parsed by the harness's parser).
    fn span(pid: u32, kind: i64, path: &str, ids: (&str, &str, &str), times: (u64, u64)) -> Span {
        let line = format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"process.pid","value":{{"intValue":"{pid}"}}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"{}","spanId":"{}","parentSpanId":"{}","name":"GET","kind":{kind},"startTimeUnixNano":"{}","endTimeUnixNano":"{}","attributes":[{{"key":"http.request.method","value":{{"stringValue":"GET"}}}},{{"key":"url.path","value":{{"stringValue":"{path}"}}}},{{"key":"http.response.status_code","value":{{"intValue":"200"}}}},{{"key":"server.port","value":{{"intValue":"80"}}}}]}}]}}]}}]}}"#,
            ids.0, ids.1, ids.2, times.0, times.1
        );
        span::parse_export_line(&line).unwrap().remove(0)
    }

    const T1: &str = "11111111111111111111111111111111";
    const T2: &str = "22222222222222222222222222222222";

    fn expected(path: &str) -> ExpectedTrace {
        ExpectedTrace::chain(
            path,
            200,
            &[
                ("a CLIENT", 1, SpanKind::Client, 80),
                ("b SERVER", 2, SpanKind::Server, 80),
                ("b CLIENT", 2, SpanKind::Client, 80),
            ],
        )
    }

    fn good(path: &str, trace: &str, n: u8) -> Vec<Span> {
        let id = |k: u8| format!("{:016x}", u64::from(n) * 16 + u64::from(k));
        vec![
            span(1, 3, path, (trace, &id(1), ""), (100, 400)),
            span(2, 2, path, (trace, &id(2), &id(1)), (110, 390)),
            span(2, 3, path, (trace, &id(3), &id(2)), (120, 380)),
        ]
    }

    fn failure(spans: &[Span], expected: &[ExpectedTrace]) -> String {
        let err = std::panic::catch_unwind(|| assert_traces("unit", spans, expected))
            .expect_err("assert_traces must fail");
        err.downcast_ref::<String>().cloned().unwrap_or_default()
    }

    #[test]
    fn accepts_well_linked_traces() {
        let mut spans = good("/a", T1, 1);
        spans.extend(good("/b", T2, 2));
        let traces = assert_traces("unit", &spans, &[expected("/a"), expected("/b")]);
        assert_eq!(traces.len(), 2);
        assert_eq!(traces[1][2].span_id, format!("{:016x}", 2 * 16 + 3));
    }

    #[test]
    fn reports_a_wrong_parent() {
        let mut spans = good("/a", T1, 1);
        spans[2].parent_span_id = spans[0].span_id.clone();
        let msg = failure(&spans, &[expected("/a")]);
        assert!(msg.contains("/a b CLIENT: parent"), "{msg}");
    }

    #[test]
    fn reports_a_root_with_a_parent_and_a_split_trace() {
        let mut spans = good("/a", T1, 1);
        spans[0].parent_span_id = "00f067aa0ba902b7".into();
        spans[2].trace_id = T2.into();
        let msg = failure(&spans, &[expected("/a")]);
        assert!(msg.contains("want none (a trace root)"), "{msg}");
        assert!(msg.contains("b CLIENT: trace id 2222"), "{msg}");
    }

    #[test]
    fn reports_shared_traces_and_strays() {
        let mut spans = good("/a", T1, 1);
        spans.extend(good("/b", T1, 2));
        let msg = failure(&spans, &[expected("/a"), expected("/b")]);
        assert!(msg.contains("shares trace id"), "{msg}");
        assert!(msg.contains("not one of its hops"), "{msg}");
    }

    #[test]
    fn reports_missing_duplicate_and_unexpected_spans() {
        let mut spans = good("/a", T1, 1);
        spans.remove(1);
        spans.push(spans[1].clone());
        spans.push(span(2, 2, "/zzz", (T2, "0000000000000abc", ""), (1, 2)));
        let msg = failure(&spans, &[expected("/a")]);
        assert!(msg.contains("no b SERVER span"), "{msg}");
        assert!(msg.contains("2 b CLIENT spans"), "{msg}");
        assert!(msg.contains("span for no expected request"), "{msg}");
    }

    #[test]
    fn reports_a_child_outside_its_parent() {
        let mut spans = good("/a", T1, 1);
        spans[2].end_ns = 390 + end_slack_ns() + 1;
        let msg = failure(&spans, &[expected("/a")]);
        assert!(msg.contains("is not inside its parent b SERVER"), "{msg}");
    }

    #[test]
    fn trace_states_by_span_id() {
        let lines = vec![
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"01","traceState":"a=b"},{"spanId":"02"}]}]}]}"#.to_string(),
            "not json".to_string(),
        ];
        let states = trace_states(&lines);
        assert_eq!(states.get("01").map(String::as_str), Some("a=b"));
        assert_eq!(states.get("02").map(String::as_str), Some(""));
    }

    #[test]
    fn received_context() {
        let r = Received::parse(r#"{"path": "/x", "traceparent": ["a", "b"], "tracestate": []}"#);
        assert_eq!(
            (r.path.as_str(), r.traceparent.len(), r.tracestate.len()),
            ("/x", 2, 0)
        );
    }
}
