//! Garbage, other protocols, malformed messages, limits and mid-stream attach.

use super::*;

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed.max(1);
    move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_bytes_never_parse() {
    for seed in 1..200 {
        let mut next = rng(seed);
        let mut h = H::new();
        for _ in 0..50 {
            let len = (next() % 700) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let dir = if next().is_multiple_of(2) { IN } else { OUT };
            let total = len
                + if next().is_multiple_of(4) {
                    (next() % 5000) as usize
                } else {
                    0
                };
            h.feed_gap(dir, &data, total);
        }
        h.close();
        assert!(h.out.is_empty(), "seed {seed}");
        assert_eq!(h.c.role(), None, "seed {seed}");
    }
}

#[test]
fn random_bytes_between_http_messages() {
    // Binary noise on a live HTTP connection: counted, never panics, and a
    // later request at a feed start resyncs.
    let mut next = rng(7);
    let mut h = H::new();
    h.feed(IN, &get("/a"));
    h.feed(OUT, &ok(200, "a"));
    for _ in 0..100 {
        let data: Vec<u8> = (0..(next() % 300 + 1)).map(|_| next() as u8).collect();
        h.feed(if next().is_multiple_of(2) { IN } else { OUT }, &data);
    }
    h.take();
    let before = h.c.pending();
    h.feed(IN, &get("/b"));
    assert_eq!(h.c.pending(), before + 1);
}

#[test]
fn redis_and_other_text_protocols_are_not_http() {
    let mut h = H::new();
    let feeds: &[(Direction, &[u8])] = &[
        (OUT, b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"),
        (IN, b"+OK\r\n"),
        (OUT, b"GET key\r\n"),
        (OUT, b"SET a b\r\n"),
        (IN, b"$5\r\nvalue\r\n"),
        (IN, b"220 mail.example.com ESMTP Postfix\r\n"),
        (OUT, b"EHLO client.example.com\r\n"),
        (OUT, b"MAIL FROM:<a@b.c> SIZE=100\r\n"),
        (OUT, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        (OUT, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        (OUT, b"GET / HTTP/1.2\r\n\r\n"),
        (IN, b"HTTP/1.1 20 OK\r\n\r\n"),
        (IN, b"HTTP/1.1 011 Low\r\n\r\n"),
        (IN, b"HTTP/1.1 600 High\r\n\r\n"),
        (OUT, b"GET  / HTTP/1.1\r\n\r\n"),
        (OUT, b"get_a_very_long_method_name / HTTP/1.1\r\n\r\n"),
    ];
    for (dir, data) in feeds {
        h.feed(*dir, data);
    }
    h.close();
    assert!(h.out.is_empty());
    assert!(!h.c.is_http());
    assert_eq!(h.c.counters(), Default::default());
}

#[test]
fn malformed_header_line_is_abandoned_but_pairing_holds() {
    let mut h = H::new();
    let bad = b"GET /bad HTTP/1.1\r\nHost: x\r\nthis line has no colon\r\n\r\n";
    h.feed(IN, &[get("/1"), bad.to_vec()].concat());
    h.feed(IN, &get("/3"));
    assert_eq!(h.c.counters().malformed, 1);
    h.feed(OUT, &[ok(200, "1"), ok(400, "bad"), ok(203, "3")].concat());
    let v = h.take();
    let got: Vec<_> = v
        .iter()
        .map(|e| (e.request.target.as_str(), status(e)))
        .collect();
    assert_eq!(got, [("/1", 200), ("/3", 203)]);
}

#[test]
fn malformed_response_uses_up_its_request() {
    let mut h = H::new();
    h.feed(IN, &[get("/1"), get("/2")].concat());
    h.feed(OUT, b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n");
    h.feed(OUT, &ok(201, ""));
    let e = h.one();
    assert_eq!((e.request.target.as_str(), status(&e)), ("/2", 201));
    assert_eq!(h.c.counters().malformed, 1);
}

#[test]
fn conflicting_content_lengths_are_malformed() {
    let mut h = H::new();
    h.feed(
        IN,
        b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    );
    assert_eq!(h.c.counters().malformed, 1);
}

#[test]
fn bad_chunk_framing() {
    let mut h = H::new();
    h.feed(IN, &get("/c"));
    let (_, d) = h.feed(
        OUT,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    );
    let e = h.one();
    assert_eq!((status(&e), e.response_end), (200, d));
    assert_eq!(h.c.counters().malformed, 1);
    h.feed(IN, &get("/d"));
    h.feed(OUT, &ok(200, ""));
    assert_eq!(h.one().request.target, "/d");
    assert_eq!(h.c.counters().resyncs, 1);
}

#[test]
fn head_too_large() {
    let limits = Limits {
        max_head_bytes: 256,
        ..Limits::default()
    };
    let mut h = H::with(limits);
    let big = format!("GET /big HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(300));
    h.feed(IN, &[get("/1"), big.into_bytes()].concat());
    for _ in 0..3 {
        h.feed(IN, &[b'b'; 100]);
    }
    h.feed(IN, &get("/3"));
    assert_eq!(h.c.counters().head_too_large, 1);
    h.feed(OUT, &[ok(200, ""), ok(431, ""), ok(202, "")].concat());
    let got: Vec<_> = h
        .take()
        .iter()
        .map(|e| (e.request.target.to_string(), status(e)))
        .collect();
    assert_eq!(got, [("/1".to_string(), 200), ("/3".to_string(), 202)]);
    // A start line alone beyond the limit, on a synced side.
    let mut h = H::with(Limits {
        max_head_bytes: 60,
        ..Limits::default()
    });
    h.feed(IN, &get("/a"));
    h.feed(OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    h.feed(
        IN,
        format!("GET /{} HTTP/1.1\r\n\r\n", "t".repeat(60)).as_bytes(),
    );
    assert_eq!((h.c.counters().head_too_large, h.c.pending()), (1, 0));
    // Unconfirmed (attach-time) start lines that long are just not HTTP.
    let mut h = H::with(Limits {
        max_head_bytes: 10,
        ..Limits::default()
    });
    h.feed(IN, &get("/longer-than-ten"));
    assert_eq!((h.c.counters(), h.c.role()), (Default::default(), None));
}

#[test]
fn mid_stream_attach_ignores_until_a_feed_starts_with_a_start_line() {
    let mut h = H::new();
    // Tail of a body whose inside looks like HTTP: not at a feed start.
    h.feed(
        IN,
        b"...\"payload\": \"GET /fake HTTP/1.1\r\nHost: x\r\n\r\n\"",
    );
    h.feed(IN, b"}\r\n\r\n");
    assert_eq!((h.c.role(), h.c.pending()), (None, 0));
    h.feed(OUT, b"tail of a response body");
    h.feed(IN, &get("/real"));
    h.feed(OUT, &ok(200, "r"));
    let e = h.one();
    assert_eq!(e.request.target, "/real");
    assert_eq!(h.c.counters().orphan_responses, 0);
}

#[test]
fn split_start_line_while_unsynced() {
    // A start line split across feeds at attach time still syncs; a
    // candidate that dies lets the dying feed's own start be tried.
    let mut h = H::new();
    h.feed(IN, b"GE");
    h.feed(IN, b"T /a HT");
    h.feed(IN, b"TP/1.1\r\n\r\n");
    assert_eq!(h.c.pending(), 1);
    let mut h = H::new();
    h.feed(IN, b"GET /a");
    h.feed(IN, b"GET /b HTTP/1.1\r\n\r\n");
    h.feed(OUT, &ok(200, ""));
    assert_eq!(h.one().request.target, "/b");
    let mut h = H::new();
    h.feed(IN, b"GE");
    h.feed(IN, b"\x00GET /c HTTP/1.1\r\n\r\n");
    h.feed(IN, b"POST /d HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.c.pending(), 1);
}

#[test]
fn unsynced_first_feed_with_leading_empty_lines() {
    let mut h = H::new();
    h.feed(IN, &[&b"\r\n"[..], &get("/x")].concat());
    assert_eq!(h.c.pending(), 1);
}
