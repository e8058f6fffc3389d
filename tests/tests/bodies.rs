//! Bodies: a 5 MB POST (with and without `Expect: 100-continue`) and a
//! chunked response each give exactly one span with the right status, and
//! the client sees exactly the bytes the server sent while the agent runs
//! (the agent must never break traffic).
//!
//! Run as root with `--test-threads=1`.

use wirespan_tests::clients::curl;
use wirespan_tests::data::{seeded_bytes, sha256_hex};
use wirespan_tests::env;
use wirespan_tests::expect::{self, Expected};
use wirespan_tests::servers::Server;
use wirespan_tests::{Agent, SpanKind};

const FIVE_MB: usize = 5 * 1024 * 1024;

/// The body py_server.py sends for /chunked (see CHUNKS there).
fn chunked_body() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..5 {
        out.extend_from_slice(format!("chunk-{i}:").as_bytes());
        for _ in 0..=i {
            out.extend_from_slice(b"abcdefghij");
        }
        out.push(b'\n');
    }
    out
}

/// Writes the 5 MB body to a temp file for `curl --data-binary @file`.
fn body_file(seed: u64) -> (tempfile::NamedTempFile, String) {
    let data = seeded_bytes(seed, FIVE_MB);
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), &data).expect("write body");
    (file, sha256_hex(&data))
}

fn post_5mb(extra_curl_args: &[&str], seed: u64, path_tag: &str) {
    let server = Server::python();
    let pid = server.pid();
    let (file, digest) = body_file(seed);
    let agent = Agent::start_ready(&["--pid", &pid.to_string()]);

    let data_arg = format!("@{}", file.path().display());
    let url = server.url("/upload");
    let mut args = vec![
        "--data-binary",
        &data_arg,
        "-H",
        "Content-Type: application/octet-stream",
        "-H",
    ];
    let tag_header = format!("X-Test: {path_tag}");
    args.push(&tag_header);
    args.extend_from_slice(extra_curl_args);
    args.push(&url);
    let run = curl(&args);
    let t = run.only();
    assert_eq!(t.http_code, 200, "upload status");
    assert_eq!(
        String::from_utf8_lossy(&t.body),
        digest,
        "the server received different bytes than the client sent while the agent ran"
    );

    let (_, spans) = agent.finish(pid, SpanKind::Server, 1);
    expect::assert_spans_match(
        &format!("5 MB POST ({path_tag})"),
        &spans,
        &[Expected::new("POST", "/upload", 200).within(run.window)],
        SpanKind::Server,
        server.port,
    );
}

/// curl's default for a large body: `Expect: 100-continue`, so the server
/// answers `100 Continue` before the final 200 (an interim response the
/// parser must skip).
#[test]
fn post_5mb_with_expect_100_continue() {
    if !env::require_ebpf() {
        return;
    }
    post_5mb(&[], 0x5eed_0001, "expect-100");
}

/// The same upload without `Expect:`: the body follows the head at once.
#[test]
fn post_5mb_without_expect() {
    if !env::require_ebpf() {
        return;
    }
    post_5mb(&["-H", "Expect:"], 0x5eed_0002, "no-expect");
}

#[test]
fn chunked_response() {
    if !env::require_ebpf() {
        return;
    }
    let server = Server::python();
    let pid = server.pid();
    let agent = Agent::start_ready(&["--pid", &pid.to_string()]);

    let run = curl(&[&server.url("/chunked")]);
    let t = run.only();
    assert_eq!(t.http_code, 200);
    assert_eq!(
        t.body,
        chunked_body(),
        "chunked body as the client reassembled it"
    );

    let (_, spans) = agent.finish(pid, SpanKind::Server, 1);
    expect::assert_spans_match(
        "chunked response",
        &spans,
        &[Expected::new("GET", "/chunked", 200).within(run.window)],
        SpanKind::Server,
        server.port,
    );
}

/// A chunked response followed by more requests on the same connection: the
/// end of the chunked body must be found for the next request to pair.
#[test]
fn chunked_response_then_keep_alive() {
    if !env::require_ebpf() {
        return;
    }
    let server = Server::python();
    let pid = server.pid();
    let agent = Agent::start_ready(&["--pid", &pid.to_string()]);

    let expected = [
        Expected::new("GET", "/chunked/first", 200),
        Expected::new("GET", "/status/404/after-chunked", 404),
        Expected::new("GET", "/chunked/second", 200),
        Expected::new("GET", "/status/201/last", 201),
    ];
    let urls: Vec<String> = expected.iter().map(|e| server.url(&e.path)).collect();
    let args: Vec<&str> = urls.iter().map(String::as_str).collect();
    let run = curl(&args);
    for (t, e) in run.on_one_connection(expected.len()).iter().zip(&expected) {
        assert_eq!(t.http_code, e.status, "{}", e.path);
        if e.path.starts_with("/chunked") {
            assert_eq!(t.body, chunked_body(), "{}", e.path);
        }
    }

    let (_, spans) = agent.finish(pid, SpanKind::Server, expected.len());
    let expected: Vec<Expected> = expected.into_iter().map(|e| e.within(run.window)).collect();
    expect::assert_spans_match(
        "chunked then keep-alive",
        &spans,
        &expected,
        SpanKind::Server,
        server.port,
    );
}

/// The client side of the 5 MB upload: curl, selected by `--exe-path`, gives
/// one CLIENT span (request body and the interim 100 Continue included).
#[test]
fn post_5mb_client_span() {
    if !env::require_ebpf() {
        return;
    }
    let server = Server::python();
    let (file, digest) = body_file(0x5eed_0003);
    let agent = Agent::start_ready(&["--exe-path", "*/curl"]);

    let data_arg = format!("@{}", file.path().display());
    let run = curl(&["--data-binary", &data_arg, &server.url("/upload")]);
    let t = run.only();
    assert_eq!(t.http_code, 200);
    assert_eq!(String::from_utf8_lossy(&t.body), digest);

    let (_, spans) = agent.finish(run.pid, SpanKind::Client, 1);
    expect::assert_spans_match(
        "curl 5 MB POST",
        &spans,
        &[Expected::new("POST", "/upload", 200).within(run.window)],
        SpanKind::Client,
        server.port,
    );
}

/// The body py_server.py sends for `/bytes/N`: byte i is i % 251.
fn pattern_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// curl paced so that the body outlasts the agent's reaction time: the
/// kernel learns where the body ends from the agent, after the head.
const PACE: &str = "10M";

/// Asserts the middle of at least one long body went as lengths only.
fn assert_lengths_only(stopped: &wirespan_tests::agent::Stopped, what: &str) {
    let skipped = stopped.counter("bodies_skipped").unwrap_or(0);
    let lengths = stopped.counter("payloads_length_only").unwrap_or(0);
    let events = stopped.counter("data_events").unwrap_or(0);
    eprintln!(
        "{what}: bodies_skipped {skipped}, payloads_length_only {lengths} of data_events {events}"
    );
    // 5 MiB read at most 64 KiB at a time: 80 reads or more, most of them
    // after the agent told the kernel.
    assert!(
        skipped >= 1 && lengths >= 10,
        "{what}: want a body skipped and at least 10 syscalls sent as lengths only; got bodies_skipped {skipped}, payloads_length_only {lengths}; stderr:\n{}",
        stopped.stderr.join("\n")
    );
}

/// The middle of a long Content-Length upload reaches the agent as lengths
/// only, and the next request on the connection is still paired: the
/// server's parser resumes exactly where the body ended. (curl sends the
/// body with both URLs: two uploads back to back on one connection.)
#[test]
fn long_upload_goes_as_lengths_and_keep_alive_follows() {
    if !env::require_ebpf() {
        return;
    }
    let server = Server::python();
    let pid = server.pid();
    let (file, digest) = body_file(0x5eed_0004);
    let agent = Agent::start_ready(&["--pid", &pid.to_string()]);

    let data_arg = format!("@{}", file.path().display());
    let (upload, after) = (
        server.url("/upload"),
        server.url("/status/201/after-upload"),
    );
    let run = curl(&[
        "-H",
        "Expect:",
        "--limit-rate",
        PACE,
        "--data-binary",
        &data_arg,
        &upload,
        &after,
    ]);
    let t = run.on_one_connection(2);
    assert_eq!(t[0].http_code, 200);
    assert_eq!(String::from_utf8_lossy(&t[0].body), digest);
    assert_eq!(t[1].http_code, 201);

    let (stopped, spans) = agent.finish(pid, SpanKind::Server, 2);
    assert_lengths_only(&stopped, "upload");
    expect::assert_spans_match(
        "long upload, then keep-alive",
        &spans,
        &[
            Expected::new("POST", "/upload", 200).within(run.window),
            Expected::new("POST", "/status/201/after-upload", 201).within(run.window),
        ],
        SpanKind::Server,
        server.port,
    );
}

/// The same for a long response body on the client side (curl reads it),
/// followed by a second request on the connection.
#[test]
fn long_download_goes_as_lengths_and_keep_alive_follows() {
    if !env::require_ebpf() {
        return;
    }
    let server = Server::python();
    let agent = Agent::start_ready(&["--exe-path", "*/curl"]);

    let (big, after) = (
        server.url(&format!("/bytes/{FIVE_MB}")),
        server.url("/status/202/after-download"),
    );
    let run = curl(&["--limit-rate", PACE, &big, &after]);
    let t = run.on_one_connection(2);
    assert_eq!(t[0].http_code, 200);
    assert!(
        t[0].body == pattern_bytes(FIVE_MB),
        "the client received different bytes than the server sent while the agent ran"
    );
    assert_eq!(t[1].http_code, 202);

    let (stopped, spans) = agent.finish(run.pid, SpanKind::Client, 2);
    assert_lengths_only(&stopped, "download");
    expect::assert_spans_match(
        "long download, then keep-alive",
        &spans,
        &[
            Expected::new("GET", &format!("/bytes/{FIVE_MB}"), 200).within(run.window),
            Expected::new("GET", "/status/202/after-download", 202).within(run.window),
        ],
        SpanKind::Client,
        server.port,
    );
}
