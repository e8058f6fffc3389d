//! Skipping the middle of long Content-Length bodies: what the table tells
//! the kernel, and that the length-only events the kernel then sends keep
//! the parser in step.

use std::sync::atomic::Ordering::Relaxed;

use wirespan_common::{
    event::{FLAG_LENGTH_ONLY, FLAG_SEQ, FLAG_TLS},
    maps::SocketEntry,
};

use super::{mute::filtered, *};

const FD: i32 = 7;
const SK: u64 = 0x1000;
const BODY: u64 = 1 << 20;

fn selector() -> Selector {
    Selector {
        pids: vec![ME],
        ..Default::default()
    }
}

/// A socket syscall in `dir` that moved `ret` bytes from stream position
/// `seq`, of which `bytes` were captured.
fn moved(
    t: &mut ConnTable,
    dir: Direction,
    ts: u64,
    seq: u32,
    ret: u64,
    bytes: &[u8],
    flags: u8,
) -> Vec<Span> {
    let mut hdr = data_header(FD, SK, dir, ts, bytes);
    hdr.seq = seq;
    hdr.ret = ret as i64;
    hdr.flags = flags;
    data_event(t, hdr, bytes)
}

/// The SOCKET_FDS value that skips ingress bytes up to `end`.
fn ingress_end(end: u32) -> SocketEntry {
    SocketEntry {
        sk: SK,
        body_end: [0, end],
    }
}

fn upload_head(len: u64) -> String {
    format!("POST /up HTTP/1.1\r\nHost: h:8080\r\nContent-Length: {len}\r\n\r\n")
}

#[test]
fn a_long_body_is_told_once_and_its_lengths_keep_the_parser_in_step() {
    let (mut t, calls) = filtered(selector());
    let head = upload_head(BODY);
    let h = head.len() as u64;
    // The head and the body's first 16 KiB, of which 512 bytes captured;
    // the stream position wraps inside the body.
    let seq0 = u32::MAX - 20_000;
    let mut first = head.clone().into_bytes();
    first.resize(512, b'x');
    moved(
        &mut t,
        Direction::Ingress,
        100,
        seq0,
        h + 16_384,
        &first,
        FLAG_SEQ,
    );
    let end = seq0.wrapping_add((h + BODY) as u32);
    assert_eq!(
        calls.lock().unwrap().skips,
        vec![(ME, FD, ingress_end(end))]
    );

    // Sent before the kernel knew: full payloads, the same end, no retelling.
    let mut at = seq0.wrapping_add((h + 16_384) as u32);
    let mut left = BODY - 16_384;
    moved(
        &mut t,
        Direction::Ingress,
        200,
        at,
        16_384,
        &[b'x'; 512],
        FLAG_SEQ,
    );
    at = at.wrapping_add(16_384);
    left -= 16_384;
    // Then lengths only, up to the last 100 bytes.
    let mut ts = 300;
    while left > 100 {
        let n = (left - 100).min(65_536);
        moved(
            &mut t,
            Direction::Ingress,
            ts,
            at,
            n,
            &[],
            FLAG_SEQ | FLAG_LENGTH_ONLY,
        );
        at = at.wrapping_add(n as u32);
        left -= n;
        ts += 10;
    }
    moved(
        &mut t,
        Direction::Ingress,
        ts,
        at,
        100,
        &[b'x'; 100],
        FLAG_SEQ,
    );
    assert_eq!(calls.lock().unwrap().skips.len(), 1, "told once");
    assert_eq!(t.stats.bodies_skipped.load(Relaxed), 1);

    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let spans = moved(
        &mut t,
        Direction::Egress,
        ts + 100,
        5,
        ok.len() as u64,
        ok,
        FLAG_SEQ,
    );
    assert_eq!(spans.len(), 1);
    assert_eq!(status(&spans[0]), 200);
    assert_eq!(path(&spans[0]), "/up");

    // The next request on the connection, right after the body, is traced.
    let get = b"GET /next HTTP/1.1\r\nHost: h:8080\r\n\r\n";
    let at = end;
    moved(
        &mut t,
        Direction::Ingress,
        ts + 200,
        at,
        get.len() as u64,
        get,
        FLAG_SEQ,
    );
    let spans = moved(
        &mut t,
        Direction::Egress,
        ts + 300,
        100,
        ok.len() as u64,
        ok,
        FLAG_SEQ,
    );
    assert_eq!(spans.len(), 1);
    assert_eq!(path(&spans[0]), "/next");
    assert_eq!(t.stats.http1_gaps.load(Relaxed), 0);
}

#[test]
fn a_response_body_is_skipped_on_the_client_side() {
    let (mut t, calls) = filtered(selector());
    control(&mut t, EventKind::Connect, FD, 1);
    let get = b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n";
    moved(
        &mut t,
        Direction::Egress,
        10,
        0,
        get.len() as u64,
        get,
        FLAG_SEQ,
    );
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
    let h = head.len() as u64;
    moved(
        &mut t,
        Direction::Ingress,
        20,
        77,
        h,
        head.as_bytes(),
        FLAG_SEQ,
    );
    let end = 77 + (h + BODY) as u32;
    assert_eq!(
        calls.lock().unwrap().skips,
        vec![(ME, FD, ingress_end(end))]
    );
    let at = 77 + h as u32;
    let flags = FLAG_SEQ | FLAG_LENGTH_ONLY;
    assert!(moved(&mut t, Direction::Ingress, 30, at, BODY - 2, &[], flags).is_empty());
    let spans = moved(&mut t, Direction::Ingress, 40, end - 2, 2, b"ok", FLAG_SEQ);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].kind, SpanKind::Client);
    assert_eq!(status(&spans[0]), 200);
}

#[test]
fn short_chunked_unpositioned_tls_or_unwanted_bodies_are_not_skipped() {
    let (mut t, calls) = filtered(selector());
    // Short: under the threshold after this event.
    let head = upload_head(super::super::DEFAULT_SKIP_BODIES_FROM);
    let mut ev = head.clone().into_bytes();
    ev.push(b'x');
    moved(
        &mut t,
        Direction::Ingress,
        10,
        0,
        ev.len() as u64,
        &ev,
        FLAG_SEQ,
    );
    // Chunked: the chunk-size lines must come.
    let (mut t2, calls2) = filtered(selector());
    let chunked = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n";
    moved(
        &mut t2,
        Direction::Ingress,
        10,
        0,
        1 << 20,
        chunked,
        FLAG_SEQ,
    );
    // No stream position (BTF without the offsets).
    let (mut t3, calls3) = filtered(selector());
    let long = upload_head(BODY);
    moved(
        &mut t3,
        Direction::Ingress,
        10,
        0,
        long.len() as u64,
        long.as_bytes(),
        0,
    );
    // TLS plaintext: positions are the socket's, not the plaintext's.
    let (mut t4, calls4) = filtered(selector());
    let flags = FLAG_SEQ | FLAG_TLS;
    moved(
        &mut t4,
        Direction::Ingress,
        10,
        0,
        long.len() as u64,
        long.as_bytes(),
        flags,
    );
    // Turned off.
    let (t5, calls5) = filtered(selector());
    let mut t5 = t5.with_skip_bodies_from(0);
    moved(
        &mut t5,
        Direction::Ingress,
        10,
        0,
        long.len() as u64,
        long.as_bytes(),
        FLAG_SEQ,
    );
    for c in [calls, calls2, calls3, calls4, calls5] {
        assert!(c.lock().unwrap().skips.is_empty());
    }
}

#[test]
fn a_body_beyond_the_longest_skip_is_told_in_parts() {
    let (mut t, calls) = filtered(selector());
    let body = 3 * super::super::SKIP_BODY_MAX;
    let head = upload_head(body);
    let h = head.len() as u64;
    moved(
        &mut t,
        Direction::Ingress,
        10,
        0,
        h,
        head.as_bytes(),
        FLAG_SEQ,
    );
    let max = super::super::SKIP_BODY_MAX as u32;
    let first = h as u32 + max;
    assert_eq!(calls.lock().unwrap().skips[0].2.body_end[1], first);
    // Inside the first part: nothing new to tell.
    let flags = FLAG_SEQ | FLAG_LENGTH_ONLY;
    let n = u64::from(max) - 1000;
    moved(&mut t, Direction::Ingress, 20, h as u32, n, &[], flags);
    assert_eq!(calls.lock().unwrap().skips.len(), 1);
    // Across its end (the kernel sends such a syscall whole): the next part.
    moved(
        &mut t,
        Direction::Ingress,
        30,
        first - 1000,
        2000,
        &[b'x'; 512],
        FLAG_SEQ,
    );
    let skips = &calls.lock().unwrap().skips;
    assert_eq!(skips.len(), 2);
    assert_eq!(
        skips[1].2.body_end[1],
        first.wrapping_add(1000).wrapping_add(max)
    );
}

#[test]
fn a_head_or_not_modified_response_announces_a_length_it_does_not_send() {
    // What the kernel could not know from the response alone: a HEAD's
    // answer and a 304 carry a Content-Length and no body. Skipping it
    // would swallow the next response's head.
    let (mut t, calls) = filtered(selector());
    let ok = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
    let not_modified = format!("HTTP/1.1 304 Not Modified\r\nContent-Length: {BODY}\r\n\r\n");
    let mut seq = 0;
    let mut spans = Vec::new();
    for (i, (req, resp)) in [
        ("HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n", &ok),
        (
            "GET /b HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"x\"\r\n\r\n",
            &not_modified,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let ts = 100 * (i as u64 + 1);
        moved(
            &mut t,
            Direction::Ingress,
            ts,
            0,
            req.len() as u64,
            req.as_bytes(),
            FLAG_SEQ,
        );
        let r = resp.as_bytes();
        spans.extend(moved(
            &mut t,
            Direction::Egress,
            ts + 10,
            seq,
            r.len() as u64,
            r,
            FLAG_SEQ,
        ));
        seq += r.len() as u32;
    }
    assert!(calls.lock().unwrap().skips.is_empty());
    let codes: Vec<i64> = spans.iter().map(status).collect();
    assert_eq!(codes, [200, 304]);
}
