//! Inbound W3C trace context (issue 4): a server request with a valid
//! `traceparent` joins that trace; a malformed or duplicated one starts a
//! new trace, and the bad value goes no further (its `tracestate` is dropped
//! with it); an SDK-instrumented client's trace is joined, with no second
//! `traceparent` added.
//!
//! The chain is curl → Python forwarder (`servers/py_forwarder.py`) → Python
//! leaf, which answers with the context headers it received; every response
//! also says which ones the forwarder received, so the tests see the wire as
//! well as the spans.
//!
//! The per-rule tests trace only the forwarder and the leaf (`--pid`): curl's
//! own request is not traced, so the header is the only context the
//! forwarder's server span can take (with curl traced too, same-node linking
//! would make it curl's child; [`malformed_headers_with_the_client_traced`]
//! covers that). Header injection is not built yet, so nothing downstream
//! receives a `traceparent` today; the wire checks still hold once it is: a
//! hop may receive only a context of the new trace, never the bad one.
//!
//! Run as root with `--test-threads=1`.

use std::time::Duration;

use wirespan_tests::chain::{self, ExpectedTrace, Hop, Parent, Received};
use wirespan_tests::clients::{Script, Window, curl, now_ns};
use wirespan_tests::env;
use wirespan_tests::servers::Server;
use wirespan_tests::span::Span;
use wirespan_tests::{Agent, SpanKind};

const CLIENT: SpanKind = SpanKind::Client;
const SERVER: SpanKind = SpanKind::Server;

/// A valid `tracestate` sent with every malformed `traceparent`: it must be
/// dropped with it.
const BAD_RULE_STATE: &str = "wirespan=dropped,congo=t61rcWkgMzE";

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// One request with a malformed context: its `traceparent` header lines, and
/// the ids (lower-case) they mention, which no span may carry.
struct Bad {
    traceparent: Vec<String>,
    trace_ids: Vec<String>,
    parent_ids: Vec<String>,
}

fn bad(traceparent: &[&str]) -> Bad {
    Bad {
        traceparent: traceparent.iter().map(|s| s.to_string()).collect(),
        trace_ids: vec![TRACE.into()],
        parent_ids: vec![PARENT.into()],
    }
}

/// A 200 path for request `i` of `tag`.
fn path(tag: &str, i: usize) -> String {
    format!("/status/200/{tag}-{i}")
}

/// curl with `headers` (as `-H` arguments), `-i` so the response head comes
/// back too. Returns what the forwarder received (its `X-Received-Context`),
/// what the leaf behind it received (the body), and the window.
fn get(url: &str, headers: &[String]) -> (Received, Received, Window, u32) {
    let mut args: Vec<&str> = vec!["-i"];
    for h in headers {
        args.extend(["-H", h.as_str()]);
    }
    args.push(url);
    let run = curl(&args);
    let t = run.only();
    assert_eq!(t.http_code, 200, "{url}: status through the forwarder");
    let text = String::from_utf8_lossy(&t.body).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{url}: no response head in {text:?}"));
    let forwarder = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-received-context")
                .then(|| v.trim())
        })
        .map(Received::parse)
        .unwrap_or_else(|| panic!("{url}: no X-Received-Context in {head:?}"));
    (forwarder, Received::parse(body), run.window, run.pid)
}

/// Forwarder → leaf, and an agent tracing just those two.
fn forwarder_and_leaf() -> (Server, Server, Agent) {
    let leaf = Server::py_leaf();
    let fwd = Server::py_forwarder(&leaf.base_url());
    let pids = format!("{},{}", fwd.pid(), leaf.pid());
    let agent = Agent::start_ready(&["--pid", &pids]);
    (fwd, leaf, agent)
}

/// The trace a request through forwarder → leaf must give; `first` is the
/// forwarder's server span's parent.
fn fwd_leaf_trace(path: &str, fwd: &Server, leaf: &Server, first: Parent) -> ExpectedTrace {
    let mut e = ExpectedTrace::chain(
        path,
        200,
        &[
            ("forwarder SERVER", fwd.pid(), SERVER, fwd.port),
            ("forwarder CLIENT", fwd.pid(), CLIENT, leaf.port),
            ("leaf SERVER", leaf.pid(), SERVER, leaf.port),
        ],
    );
    e.hops[0].parent = first;
    e
}

/// What the leaf received must not be the bad context: any `traceparent` it
/// got must belong to `client` (the forwarder's client span) and no
/// `tracestate` may carry the dropped one.
fn assert_wire_clean(what: &str, leaf_got: &Received, client: &Span, dropped_state: &str) {
    let want = format!("00-{}-{}-", client.trace_id, client.span_id);
    for tp in &leaf_got.traceparent {
        assert!(
            tp.starts_with(&want),
            "{what}: the leaf received traceparent {tp:?}, which is not the forwarder's \
             client span (want {want}..); received {leaf_got:?}"
        );
    }
    assert!(
        leaf_got.traceparent.len() <= 1,
        "{what}: the leaf received {} traceparent lines: {leaf_got:?}",
        leaf_got.traceparent.len()
    );
    if !dropped_state.is_empty() {
        assert!(
            leaf_got
                .tracestate
                .iter()
                .all(|s| !s.contains(dropped_state)),
            "{what}: the dropped tracestate {dropped_state:?} reached the leaf: {leaf_got:?}"
        );
    }
}

/// No span of `spans` carries any id of the bad headers.
fn assert_no_bad_ids(what: &str, spans: &[Span], cases: &[Bad]) {
    for c in cases {
        let leaked: Vec<&Span> = spans
            .iter()
            .filter(|s| {
                c.trace_ids.contains(&s.trace_id) || c.parent_ids.contains(&s.parent_span_id)
            })
            .collect();
        assert!(
            leaked.is_empty(),
            "{what}: spans carry an id of the malformed traceparent {:?}:\n{}",
            c.traceparent,
            chain::show_all(leaked)
        );
    }
}

/// Sends each case (with [`BAD_RULE_STATE`]) through forwarder → leaf while
/// the agent traces those two. Each forwarder server span must start a new
/// trace: no parent, none of the bad ids, no traceState; the forwarder's
/// client span and the leaf's server span must be in that new trace; the
/// forwarder must have received exactly the header lines sent; and the leaf
/// nothing of the bad context.
fn malformed_rule(rule: &str, cases: &[Bad]) {
    if !env::require_ebpf() || !env::require_program("curl") {
        return;
    }
    let (fwd, leaf, agent) = forwarder_and_leaf();
    let mut expected = Vec::new();
    let mut leaf_got = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let p = path(rule, i);
        let mut headers: Vec<String> = c
            .traceparent
            .iter()
            .map(|v| format!("traceparent: {v}"))
            .collect();
        headers.push(format!("tracestate: {BAD_RULE_STATE}"));
        let (fwd_got, got, window, _) = get(&fwd.url(&p), &headers);
        assert_eq!(
            (&fwd_got.traceparent, &fwd_got.tracestate),
            (&c.traceparent, &vec![BAD_RULE_STATE.to_string()]),
            "{rule}: the forwarder did not receive the header lines sent"
        );
        leaf_got.push(got);
        expected.push(fwd_leaf_trace(&p, &fwd, &leaf, Parent::Root).within(window));
    }
    let stopped = chain::collect(agent, &expected);
    let traces = chain::assert_traces(rule, &stopped.spans, &expected);
    assert_no_bad_ids(rule, &stopped.spans, cases);
    let states = chain::trace_states(&stopped.stdout_lines);
    for (i, t) in traces.iter().enumerate() {
        for s in t {
            assert_eq!(
                states.get(&s.span_id).map(String::as_str),
                Some(""),
                "{rule} case {i}: the tracestate of a malformed traceparent must be dropped: {}",
                chain::show(s)
            );
        }
        assert_wire_clean(
            &format!("{rule} case {i}"),
            &leaf_got[i],
            &t[1],
            BAD_RULE_STATE,
        );
    }
}

/// Hex digits must be lower-case: upper-case ids are invalid.
#[test]
fn malformed_upper_case_hex() {
    malformed_rule(
        "upper-case-hex",
        &[
            bad(&["00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"]),
            // One upper-case digit is enough.
            bad(&["00-4bf92f3577b34da6a3ce929d0e0e473A-00f067aa0ba902b7-01"]),
            bad(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A"]),
        ],
    );
}

/// An all-zero trace id is invalid.
#[test]
fn malformed_all_zero_trace_id() {
    malformed_rule(
        "zero-trace-id",
        &[Bad {
            traceparent: vec!["00-00000000000000000000000000000000-00f067aa0ba902b7-01".into()],
            trace_ids: vec!["00000000000000000000000000000000".into()],
            parent_ids: vec![PARENT.into()],
        }],
    );
}

/// An all-zero parent id is invalid.
#[test]
fn malformed_all_zero_parent_id() {
    malformed_rule(
        "zero-parent-id",
        &[Bad {
            traceparent: vec!["00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".into()],
            trace_ids: vec![TRACE.into()],
            parent_ids: vec![],
        }],
    );
}

/// Version ff is forbidden.
#[test]
fn malformed_version_ff() {
    malformed_rule(
        "version-ff",
        &[bad(&[
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ])],
    );
}

/// Version 00 is exactly 55 characters: longer (even by a well-formed
/// `-suffix`, which only a higher version may carry) or shorter is invalid.
#[test]
fn malformed_wrong_length_for_version_00() {
    malformed_rule(
        "length-v00",
        &[
            bad(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future"]),
            bad(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-010"]),
            bad(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"]),
            bad(&["00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"]),
            bad(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01"]),
        ],
    );
}

/// Two `traceparent` header lines, each valid alone: the request's context
/// is ambiguous, so neither is used.
#[test]
fn malformed_duplicated_header() {
    malformed_rule(
        "duplicated",
        &[Bad {
            traceparent: vec![
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            ],
            trace_ids: vec![TRACE.into(), "0af7651916cd43dd8448eb211c80319c".into()],
            parent_ids: vec![PARENT.into(), "b7ad6b7169203331".into()],
        }],
    );
}

/// Fields are separated by single dashes, nothing else.
#[test]
fn malformed_bad_separators() {
    malformed_rule(
        "separators",
        &[
            bad(&["00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01"]),
            bad(&["00-4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7-01"]),
            bad(&["00 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 01"]),
        ],
    );
}

/// Only hex digits: anything else in an id or the flags is invalid.
#[test]
fn malformed_non_hex_characters() {
    malformed_rule(
        "non-hex",
        &[
            bad(&["00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"]),
            bad(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01"]),
            bad(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x"]),
        ],
    );
}

/// With curl traced too (every process traced), a malformed header at curl's side is
/// ignored there as well: curl's client span is the root of a new trace, the
/// forwarder's server span is its child (same-node linking), and no span of
/// the chain carries the bad context. One request per rule.
#[test]
fn malformed_headers_with_the_client_traced() {
    if !env::require_ebpf() || !env::require_program("curl") {
        return;
    }
    let leaf = Server::py_leaf();
    let fwd = Server::py_forwarder(&leaf.base_url());
    let agent = chain::agent_for(&[&fwd, &leaf]);
    let cases = [
        bad(&["00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"]),
        bad(&["00-00000000000000000000000000000000-00f067aa0ba902b7-01"]),
        bad(&["00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"]),
        bad(&["ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]),
        bad(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"]),
        bad(&[
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ]),
        bad(&["00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01"]),
    ];
    let mut expected = Vec::new();
    let mut leaf_got = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let p = path("traced-client", i);
        let mut headers: Vec<String> = c
            .traceparent
            .iter()
            .map(|v| format!("traceparent: {v}"))
            .collect();
        headers.push(format!("tracestate: {BAD_RULE_STATE}"));
        let (fwd_got, got, window, curl_pid) = get(&fwd.url(&p), &headers);
        assert_eq!(fwd_got.traceparent, c.traceparent, "case {i}: header lines");
        leaf_got.push(got);
        let mut e = fwd_leaf_trace(&p, &fwd, &leaf, Parent::Hop(0));
        e.hops.insert(
            0,
            Hop::new("curl CLIENT", curl_pid, CLIENT, fwd.port, Parent::Root).exe("curl"),
        );
        for h in &mut e.hops[2..] {
            if let Parent::Hop(j) = h.parent {
                h.parent = Parent::Hop(j + 1);
            }
        }
        expected.push(e.within(window));
    }
    let stopped = chain::collect(agent, &expected);
    let traces = chain::assert_traces("malformed, client traced", &stopped.spans, &expected);
    assert_no_bad_ids("malformed, client traced", &stopped.spans, &cases);
    let states = chain::trace_states(&stopped.stdout_lines);
    for (i, t) in traces.iter().enumerate() {
        for s in t {
            assert_eq!(
                states.get(&s.span_id).map(String::as_str),
                Some(""),
                "case {i}: the tracestate of a malformed traceparent must be dropped: {}",
                chain::show(s)
            );
        }
        assert_wire_clean(&format!("case {i}"), &leaf_got[i], &t[2], BAD_RULE_STATE);
    }
}

/// Trace and parent ids unique to this run, lower-case hex.
fn fresh_ids(i: usize) -> (String, String) {
    let n = now_ns();
    (
        format!("{n:016x}{:016x}", 0x7e57_0000_u64 + i as u64),
        format!("{:016x}", n.rotate_left(17) ^ (i as u64 + 1)),
    )
}

/// A valid inbound context: the forwarder's server span joins the header's
/// trace with the header's parent-id as its parent; the forwarder's client
/// span and the leaf's server span follow in that trace. A valid
/// `tracestate` is kept on the server span (and on its descendants, which
/// carry their trace's state); an invalid one is dropped alone, the
/// `traceparent` still honoured. Several `tracestate` lines combine into one
/// list. A higher version with a `-`-introduced suffix is parsed as version
/// 00, as the spec says.
#[test]
fn valid_traceparent_joins_the_trace() {
    if !env::require_ebpf() || !env::require_program("curl") {
        return;
    }
    let (fwd, leaf, agent) = forwarder_and_leaf();
    // (version prefix and suffix, tracestate lines, traceState expected)
    let cases: [(&str, &str, &[&str], &str); 5] = [
        (
            "00",
            "01",
            &["congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"],
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        ),
        ("00", "01", &[], ""),
        (
            "cc",
            "01-what-the-future-will-be-like",
            &["vendor@tenant=x"],
            "vendor@tenant=x",
        ),
        ("00", "01", &["Upper=invalid-key"], ""),
        (
            "00",
            "01",
            &["congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7"],
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        ),
    ];
    let mut expected = Vec::new();
    let mut wants = Vec::new();
    for (i, (version, tail, states, want_state)) in cases.iter().enumerate() {
        let (trace, parent) = fresh_ids(i);
        let tp = format!("{version}-{trace}-{parent}-{tail}");
        let mut headers = vec![format!("traceparent: {tp}")];
        headers.extend(states.iter().map(|s| format!("tracestate: {s}")));
        let p = path("valid", i);
        let (fwd_got, got, window, _) = get(&fwd.url(&p), &headers);
        assert_eq!(
            fwd_got.traceparent,
            vec![tp.clone()],
            "case {i}: header sent"
        );
        let mut e = fwd_leaf_trace(&p, &fwd, &leaf, Parent::Remote(parent.clone())).within(window);
        e.trace_id = Some(trace.clone());
        expected.push(e);
        wants.push((tp, got, *want_state));
    }
    let stopped = chain::collect(agent, &expected);
    let traces = chain::assert_traces("valid traceparent", &stopped.spans, &expected);
    let states = chain::trace_states(&stopped.stdout_lines);
    let mut problems = Vec::new();
    for (t, (tp, leaf_got, want_state)) in traces.iter().zip(&wants) {
        for s in t {
            let got = states.get(&s.span_id).map(String::as_str);
            if got != Some(*want_state) {
                problems.push(format!(
                    "traceparent {tp}: traceState {got:?}, want {want_state:?}: {}",
                    chain::show(s)
                ));
            }
        }
        assert_wire_clean(tp, leaf_got, &t[1], "");
    }
    assert!(problems.is_empty(), "traceState:\n{}", problems.join("\n"));
}

/// How long the SDK client may take to import the SDK and make its requests.
const SDK_TIMEOUT: Duration = Duration::from_secs(90);

/// An OpenTelemetry-SDK-instrumented client (Python `opentelemetry-sdk` with
/// `opentelemetry-instrumentation-urllib`, from PyPI) calls the traced
/// Python forwarder, which calls nginx. The forwarder's server span joins
/// the SDK's trace with the SDK client span as its parent, its client span
/// and nginx's server span follow; the agent's own client span for the SDK
/// process is in the SDK's trace too, as a child of the SDK's client span;
/// and the forwarder received exactly the one `traceparent` the SDK sent.
#[test]
fn sdk_instrumented_client_is_joined() {
    if !env::require_ebpf() || !env::require_program("nginx") || !chain::require_sdk_python() {
        return;
    }
    let nginx = Server::nginx();
    let fwd = Server::py_forwarder(&nginx.base_url());
    let agent = chain::agent_for(&[&fwd, &nginx]);
    let paths: Vec<String> = (0..5).map(|i| path("sdk", i)).collect();
    let urls: Vec<String> = paths.iter().map(|p| fwd.url(p)).collect();
    let mut cmd = std::process::Command::new(env::otlp_python());
    cmd.arg(env::server_script("py_sdk_client.py")).args(&urls);
    let mut client = Script::spawn(cmd);
    let sdk_pid = client.pid();
    assert_eq!(client.read_line(SDK_TIMEOUT), "WAITING");
    client.send_line("go");
    let mut expected = Vec::new();
    for p in &paths {
        let line = client.read_line(SDK_TIMEOUT);
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("SDK client said {line:?}: {e}"));
        assert!(v.get("error").is_none(), "SDK client: {line}");
        assert_eq!(v["url"].as_str(), Some(fwd.url(p).as_str()), "{line}");
        assert_eq!(v["status"].as_i64(), Some(200), "{line}");
        let trace = v["trace_id"].as_str().expect("trace_id").to_string();
        let sdk_span = v["client_span_id"]
            .as_str()
            .expect("client_span_id")
            .to_string();
        assert!(
            !v["client_parent_id"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "the SDK's client span has its sdk-request span as parent: {line}"
        );
        // Flags as the SDK set them (recent SDKs add the Level 2
        // random-trace-id bit: 03).
        let flags = v["trace_flags"].as_str().expect("trace_flags");
        let got = Received::from_value(&v["received"]);
        assert_eq!(
            got.traceparent,
            vec![format!("00-{trace}-{sdk_span}-{flags}")],
            "{p}: the forwarder must receive exactly the SDK's one traceparent"
        );
        let mut e = ExpectedTrace::chain(
            p,
            200,
            &[
                ("agent's SDK-process CLIENT", sdk_pid, CLIENT, fwd.port),
                ("python SERVER", fwd.pid(), SERVER, fwd.port),
                ("python CLIENT", fwd.pid(), CLIENT, nginx.port),
                ("nginx SERVER", nginx.pid(), SERVER, nginx.port),
            ],
        );
        e.trace_id = Some(trace);
        e.hops[0].parent = Parent::Remote(sdk_span.clone());
        e.hops[1].parent = Parent::Remote(sdk_span);
        expected.push(e);
    }
    let status = client.wait(SDK_TIMEOUT);
    assert!(status.success(), "SDK client exited with {status}");
    let stopped = chain::collect(agent, &expected);
    chain::assert_traces("SDK client -> python -> nginx", &stopped.spans, &expected);
}
