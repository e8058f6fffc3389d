//! Capture gaps: a feed whose `total` exceeds its captured `data`.

use super::*;

const CAP: usize = 512;

#[test]
fn large_request_body_in_one_syscall() {
    let mut h = H::new();
    let head = b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5000000\r\n\r\n";
    let stream = [&head[..], &[b'a'; CAP]].concat();
    let (a, b) = h.feed_gap(IN, &stream[..CAP], head.len() + 5_000_000);
    assert_eq!(h.c.pending(), 1);
    let (_, d) = h.feed(OUT, &ok(201, ""));
    let e = h.one();
    assert_eq!(
        (e.request.content_length, e.request.head_truncated),
        (Some(5_000_000), false)
    );
    assert_eq!((e.request_start, e.request_end, e.response_end), (a, b, d));
    h.feed(IN, &get("/next"));
    h.feed(OUT, &ok(200, "x"));
    assert_eq!(h.one().request.target, "/next");
    assert_eq!(h.c.counters(), Default::default());
}

#[test]
fn large_response_body_over_many_syscalls() {
    let mut h = H::new();
    h.feed(OUT, &get("/download"));
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n";
    let first = [&head[..], &[b'z'; CAP]].concat();
    let mut left = head.len() + 5_000_000;
    let (c, _) = h.feed_gap(IN, &first[..CAP], 100_000);
    left -= 100_000;
    let mut last = (0, 0);
    while left > 0 {
        assert!(h.out.is_empty());
        let n = left.min(100_000);
        last = h.feed_gap(IN, &[b'z'; CAP][..n.min(CAP)], n);
        left -= n;
    }
    let e = h.one();
    assert_eq!(
        (status(&e), e.response_start, e.response_end),
        (200, Some(c), last.1)
    );
    h.feed(OUT, &get("/again"));
    h.feed(IN, &ok(200, "x"));
    assert_eq!(h.one().request.target, "/again");
    assert_eq!(h.c.counters(), Default::default());
}

fn cookie_request(len: usize) -> Vec<u8> {
    format!(
        "GET /page HTTP/1.1\r\nHost: example.com\r\nCookie: {}\r\nContent-Length: 3\r\n\r\nabc",
        "c".repeat(len)
    )
    .into_bytes()
}

#[test]
fn request_head_truncated() {
    let mut h = H::new();
    let r = cookie_request(1000);
    let (_, b) = h.feed_gap(IN, &r[..CAP], r.len());
    assert_eq!((h.c.pending(), h.c.counters().gaps), (1, 1));
    let (_, d) = h.feed(OUT, &ok(200, "fine"));
    let e = h.one();
    let rq = &e.request;
    assert!(rq.head_truncated);
    assert_eq!(
        (rq.target.as_str(), rq.host.as_deref(), rq.content_length),
        ("/page", Some("example.com"), None)
    );
    assert_eq!((e.request_end, e.response_end), (b, d));
    // The next request starts a feed: back in sync.
    h.feed(IN, &get("/next"));
    h.feed(OUT, &ok(200, "x"));
    assert_eq!(h.one().request.target, "/next");
    assert_eq!(h.c.counters().resyncs, 1);
}

#[test]
fn request_start_line_cut_on_synced_side() {
    let mut h = H::new();
    h.feed(IN, &get("/first"));
    h.feed(OUT, &ok(200, ""));
    h.take();
    let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "q".repeat(2000));
    h.feed_gap(IN, &long.as_bytes()[..CAP], long.len());
    h.feed(OUT, &ok(414, ""));
    let e = h.one();
    assert!(e.request.head_truncated);
    assert_eq!(
        (e.request.target.len(), e.request.version_minor, status(&e)),
        (CAP - 4, 1, 414)
    );
    // On an unsynced side a cut start line is not enough to sync.
    let mut h = H::new();
    h.feed_gap(IN, &long.as_bytes()[..CAP], long.len());
    assert_eq!((h.c.role(), h.c.pending(), h.c.is_http()), (None, 0, false));
}

#[test]
fn response_head_truncated_unknown_length_ends_at_next_response() {
    let mut h = H::new();
    h.feed(IN, &[get("/1"), get("/2")].concat());
    let big = format!(
        "HTTP/1.1 200 OK\r\nSet-Cookie: {}\r\nContent-Length: 4000\r\n\r\n",
        "s".repeat(800)
    );
    let (c, _) = h.feed_gap(OUT, &big.as_bytes()[..CAP], big.len() + 100);
    let (_, body_end) = h.feed_gap(OUT, &[b'b'; CAP], 3900);
    assert!(h.out.is_empty());
    let (c2, d2) = h.feed(OUT, &ok(202, "two"));
    let v = h.take();
    assert_eq!(v.len(), 2);
    let r0 = v[0].response.as_ref().unwrap();
    assert_eq!(
        (r0.status, r0.head_truncated, r0.content_length),
        (200, true, None)
    );
    assert_eq!(
        (v[0].response_start, v[0].response_end),
        (Some(c), body_end)
    );
    assert_eq!(
        (status(&v[1]), v[1].response_start, v[1].response_end),
        (202, Some(c2), d2)
    );
    assert_eq!(h.c.counters().gaps, 1);
}

#[test]
fn response_head_truncated_unknown_length_ends_at_close() {
    let mut h = H::new();
    h.feed(OUT, &get("/1"));
    let big = format!(
        "HTTP/1.1 200 OK\r\nX-Pad: {}\r\nContent-Length: 10\r\n\r\n0123456789",
        "p".repeat(600)
    );
    h.feed_gap(IN, &big.as_bytes()[..CAP], big.len());
    let ts = h.close();
    let e = h.one();
    assert_eq!((e.outcome, status(&e)), (Outcome::Complete, 200));
    assert!(e.response_end < ts);
}

#[test]
fn gap_in_chunked_response_loses_framing() {
    let mut h = H::new();
    h.feed(IN, &get("/stream"));
    let (c, _) = h.feed_gap(
        OUT,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\nxx",
        5000,
    );
    let (_, d) = h.feed(OUT, b"more bytes of the stream\r\n0\r\n\r\n");
    assert!(h.out.is_empty());
    h.feed(IN, &get("/next"));
    h.feed(OUT, &ok(200, "n"));
    let v = h.take();
    assert_eq!(v.len(), 2);
    assert_eq!(
        (v[0].response_start, v[0].response_end, v[0].outcome),
        (Some(c), d, Outcome::Complete)
    );
    assert_eq!(v[1].request.target, "/next");
}

#[test]
fn gap_in_chunked_request_ends_it() {
    let mut h = H::new();
    let (_, b) = h.feed_gap(
        IN,
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfff\r\nab",
        8000,
    );
    h.feed(IN, b"chunk tail that is not a start line\r\n0\r\n\r\n");
    h.feed(IN, &get("/next"));
    h.feed(OUT, &[ok(200, "1"), ok(200, "2")].concat());
    let v = h.take();
    assert_eq!(
        v.iter()
            .map(|e| e.request.target.as_str())
            .collect::<Vec<_>>(),
        ["/c", "/next"]
    );
    assert_eq!(v[0].request_end, b);
    assert_eq!(h.c.counters().malformed, 0);
}

#[test]
fn gap_at_message_boundary_loses_sync_until_a_feed_starts_a_request() {
    let mut h = H::new();
    let r = get("/a");
    h.feed_gap(IN, &r, r.len() + 300);
    assert_eq!(h.c.counters().gaps, 1);
    h.feed(IN, b"rest of an unseen request GET /x HTTP/1.1\r\n\r\n");
    assert_eq!(h.c.pending(), 1);
    h.feed(IN, &get("/b"));
    assert_eq!(h.c.pending(), 2);
    assert_eq!(h.c.counters().resyncs, 1);
}

#[test]
fn gap_beyond_content_length_body() {
    let mut h = H::new();
    let r = b"PUT /p HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123";
    let (_, b) = h.feed_gap(IN, r, r.len() + 6 + 40);
    assert_eq!(h.c.counters().gaps, 1);
    h.feed(OUT, &ok(200, ""));
    assert_eq!(h.one().request_end, b);
}

#[test]
fn total_smaller_than_data_is_data() {
    let mut h = H::new();
    let r = get("/x");
    h.c.feed(IN, &r, 0, 1, 2, &mut h.out);
    h.feed(OUT, &ok(200, ""));
    assert_eq!(h.one().request.target, "/x");
    assert_eq!(h.c.counters(), Default::default());
}
