//! Message flows: keep-alive, pipelining, bodiless responses, interim and
//! upgrade responses, close handling, roles and limits.

use super::*;
use IncompleteReason::*;

#[test]
fn keep_alive_hundred_exchanges() {
    let mut h = H::new();
    for i in 0..100 {
        let (a, _) = h.feed(IN, &get(&format!("/item/{i}")));
        let (_, d) = h.feed(OUT, &ok(200 + (i % 3) as u16, &"x".repeat(i)));
        let e = h.one();
        assert_eq!(e.request.target, format!("/item/{i}"));
        assert_eq!(status(&e), 200 + (i % 3) as u16);
        assert_eq!((e.request_start, e.response_end), (a, d));
    }
    assert_eq!(h.c.counters(), Default::default());
}

fn ten_requests() -> Vec<u8> {
    (0..10).flat_map(|i| get(&format!("/p{i}"))).collect()
}

fn check_fifo(v: &[Exchange]) {
    assert_eq!(v.len(), 10);
    for (i, e) in v.iter().enumerate() {
        assert_eq!(e.request.target, format!("/p{i}"));
        assert_eq!(status(e), 200 + 10 * i as u16);
    }
}

#[test]
fn pipelining_all_responses_in_one_feed() {
    let mut h = H::new();
    h.feed(IN, &ten_requests());
    assert_eq!(h.c.pending(), 10);
    let resps: Vec<u8> = (0..10)
        .flat_map(|i| ok(200 + 10 * i, &format!("body{i}")))
        .collect();
    h.feed(OUT, &resps);
    check_fifo(&h.take());
    assert_eq!(h.c.pending(), 0);
}

#[test]
fn pipelining_one_response_per_feed() {
    let mut h = H::new();
    h.feed(IN, &ten_requests());
    for i in 0..10 {
        h.feed(OUT, &ok(200 + 10 * i, "b"));
        assert_eq!(h.c.pending(), 9 - i as usize);
    }
    check_fifo(&h.take());
    assert_eq!(h.c.counters(), Default::default());
}

#[test]
fn head_request_response_has_no_body() {
    let mut h = H::new();
    h.feed(IN, b"HEAD /big HTTP/1.1\r\nHost: example.com\r\n\r\n");
    h.feed(OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 123456\r\n\r\n");
    let e = h.one();
    assert_eq!(e.request.method, "HEAD");
    assert_eq!(e.response, Some(resp_head(200, Some(123456))));
    h.feed(IN, &get("/after"));
    h.feed(OUT, &ok(200, "ok"));
    assert_eq!(h.one().request.target, "/after");
}

#[test]
fn continue_100_is_skipped() {
    let mut h = H::new();
    h.feed(IN, b"POST /form HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    h.feed(OUT, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(h.out.is_empty());
    let (_, body_end) = h.feed(IN, b"data");
    let (c, d) = h.feed(OUT, &ok(200, "done"));
    let e = h.one();
    assert_eq!(
        (e.request_end, e.response_start, e.response_end),
        (body_end, Some(c), d)
    );
    assert_eq!(status(&e), 200);
    // Interim and final response in one feed, and a 103 before it.
    h.feed(IN, &get("/hints"));
    h.feed(
        OUT,
        &[
            &b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"[..],
            &ok(200, "x"),
        ]
        .concat(),
    );
    assert_eq!(status(&h.one()), 200);
}

#[test]
fn status_204_and_304_have_no_body() {
    let mut h = H::new();
    h.feed(IN, &[get("/a"), get("/b"), get("/c")].concat());
    h.feed(
        OUT,
        b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
    );
    h.feed(OUT, &ok(200, "c"));
    let v = h.take();
    let got: Vec<_> = v
        .iter()
        .map(|e| (e.request.target.as_str(), status(e)))
        .collect();
    assert_eq!(got, [("/a", 204), ("/b", 304), ("/c", 200)]);
}

#[test]
fn switching_protocols_makes_connection_opaque() {
    let mut h = H::new();
    h.feed(IN, b"GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    let (_, d) = h.feed(
        OUT,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
    );
    let e = h.one();
    assert_eq!(
        (status(&e), e.response_end, e.outcome),
        (101, d, Outcome::Complete)
    );
    assert!(h.c.is_opaque());
    h.feed(IN, &get("/not-http-anymore"));
    h.feed(OUT, &ok(200, ""));
    assert!(h.out.is_empty());
    assert_eq!(h.c.pending(), 0);
    h.close();
    assert!(h.out.is_empty());
    assert!(!h.c.is_opaque());
}

#[test]
fn connect_tunnel_is_opaque_after_2xx() {
    let mut h = H::new();
    h.feed(
        OUT,
        b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n",
    );
    assert_eq!(h.c.role(), Some(Role::Client));
    h.feed(IN, b"HTTP/1.1 200 Connection established\r\n\r\n");
    let e = h.one();
    assert_eq!(
        (&*e.request.method, e.request.target.as_str(), status(&e)),
        ("CONNECT", "db.internal:5432", 200)
    );
    assert!(h.c.is_opaque());
    // A refused CONNECT is an ordinary response.
    let mut h = H::new();
    h.feed(OUT, b"CONNECT x:1 HTTP/1.1\r\n\r\n");
    h.feed(IN, &ok(407, "auth"));
    assert_eq!(status(&h.one()), 407);
    assert!(!h.c.is_opaque());
}

#[test]
fn http10_body_until_close() {
    let mut h = H::new();
    h.feed(IN, b"GET /old HTTP/1.0\r\n\r\n");
    let (c, _) = h.feed(OUT, b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\npart one ");
    let (_, d) = h.feed(OUT, b"part two");
    assert!(h.out.is_empty());
    h.close();
    let e = h.one();
    assert_eq!(e.request.version_minor, 0);
    assert_eq!(e.request.host, None);
    assert_eq!(
        e.response.as_ref().map(|r| (r.status, r.version_minor)),
        Some((200, 0))
    );
    assert_eq!(
        (e.response_start, e.response_end, e.outcome),
        (Some(c), d, Outcome::Complete)
    );
}

#[test]
fn close_before_response() {
    let mut h = H::new();
    let (a, b) = h.feed(IN, &[get("/1"), get("/2")].concat());
    let ts = h.close();
    let v = h.take();
    assert_eq!(v.len(), 2);
    for (e, t) in v.iter().zip(["/1", "/2"]) {
        assert_eq!(e.request.target, t);
        assert_eq!(e.outcome, incomplete(ClosedBeforeResponse));
        assert_eq!((e.response.as_ref(), e.response_start), (None, None));
        assert_eq!((e.request_start, e.request_end, e.response_end), (a, b, ts));
    }
    assert_eq!((h.c.pending(), h.c.role(), h.c.is_http()), (0, None, false));
}

#[test]
fn close_mid_response() {
    let mut h = H::new();
    h.feed(IN, &get("/1"));
    let (c, _) = h.feed(
        OUT,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly some",
    );
    let ts = h.close();
    let e = h.one();
    assert_eq!(e.outcome, incomplete(ClosedMidResponse));
    assert_eq!(
        (e.response, e.response_start, e.response_end),
        (Some(resp_head(200, Some(100))), Some(c), ts)
    );
    // Closed inside the response head: the start line still counts.
    let mut h = H::new();
    h.feed(IN, &[get("/1"), get("/2")].concat());
    h.feed(OUT, b"HTTP/1.1 503 Unavailable\r\nRetry-Af");
    h.close();
    let v = h.take();
    assert_eq!(v.len(), 2);
    assert_eq!(
        (status(&v[0]), v[0].outcome),
        (503, incomplete(ClosedMidResponse))
    );
    assert!(v[0].response.as_ref().unwrap().head_truncated);
    assert_eq!(v[1].outcome, incomplete(ClosedBeforeResponse));
}

#[test]
fn client_role_egress_requests() {
    let mut h = H::new();
    let (a, _) = h.feed(OUT, &get("/remote"));
    assert_eq!(h.c.role(), Some(Role::Client));
    let (_, d) = h.feed(IN, &ok(404, "nope"));
    let e = h.one();
    assert_eq!(
        (e.role, status(&e), e.request_start, e.response_end),
        (Role::Client, 404, a, d)
    );
}

#[test]
fn orphan_responses_before_any_request() {
    let mut h = H::new();
    h.feed(IN, &ok(200, "from before attach"));
    h.feed(OUT, &ok(200, "x"));
    assert_eq!(h.c.counters().orphan_responses, 2);
    assert_eq!(h.c.role(), None);
    assert!(h.out.is_empty());
    // Then a request on Egress: client role; Ingress now carries responses.
    h.feed(OUT, &get("/x"));
    h.feed(IN, &ok(200, "y"));
    assert_eq!(h.one().role, Role::Client);
    // A response with nothing pending after the role is known.
    h.feed(IN, &ok(500, "extra"));
    assert_eq!(h.c.counters().orphan_responses, 3);
    assert!(h.out.is_empty());
}

#[test]
fn max_pending_overflow() {
    let limits = Limits {
        max_pending: 3,
        ..Limits::default()
    };
    let mut h = H::with(limits);
    let reqs: Vec<u8> = (0..5).flat_map(|i| get(&format!("/p{i}"))).collect();
    let (_, b) = h.feed(IN, &reqs);
    assert_eq!(h.c.pending(), 3);
    let v = h.take();
    assert_eq!(v.len(), 2);
    for (e, t) in v.iter().zip(["/p0", "/p1"]) {
        assert_eq!(
            (e.request.target.as_str(), e.outcome, e.response_end),
            (t, incomplete(PendingOverflow), b)
        );
    }
    assert_eq!(h.c.counters().pending_overflow, 2);
    h.feed(OUT, &ok(200, ""));
    assert_eq!(h.one().request.target, "/p2");
}

#[test]
fn chunked_request_body_then_pipelined_request() {
    let mut h = H::new();
    let body = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    h.feed(IN, &[&body[..], &get("/next")].concat());
    assert_eq!(h.c.pending(), 2);
    h.feed(OUT, &[ok(200, "1"), ok(201, "2")].concat());
    let v = h.take();
    assert_eq!(
        (
            v[0].request.chunked,
            v[1].request.target.as_str(),
            status(&v[1])
        ),
        (true, "/next", 201)
    );
}

#[test]
fn response_before_request_body_ends() {
    let mut h = H::new();
    let (a, b) = h.feed(
        IN,
        b"PUT /huge HTTP/1.1\r\nContent-Length: 1000000\r\n\r\nxxxx",
    );
    h.feed(OUT, &ok(413, "too big"));
    let e = h.one();
    assert_eq!((status(&e), e.request_start, e.request_end), (413, a, b));
    h.feed(IN, &[b'y'; 1000]); // the rest of the body is still skipped
    h.feed(IN, &vec![b'z'; 1_000_000 - 1004]);
    h.feed(IN, &get("/after"));
    h.feed(OUT, &ok(200, ""));
    assert_eq!(h.one().request.target, "/after");
    assert_eq!(h.c.counters(), Default::default());
}

#[test]
fn header_details() {
    let mut h = H::with(Limits {
        max_target_len: 8,
        ..Limits::default()
    });
    h.feed(
        IN,
        b"OPTIONS /caf\xc3\xa9/\xc3\xa9x HTTP/1.1\nHOST:  api.example:8443 \nX-Fold: a\n  continued\n\
TraceParent: 00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01\ntraceparent: dup\n\
tracestate: k=v\nHost: second\nContent-Length: 2, 2\n\nok",
    );
    h.feed(OUT, b"HTTP/1.1 200\nContent-Length: 0\n\n");
    let e = h.one();
    let r = &e.request;
    assert_eq!(r.target, "/café/"); // 8 bytes would split the second é
    assert_eq!(r.host.as_deref(), Some("api.example:8443"));
    assert_eq!(
        r.traceparent,
        [
            "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01",
            "dup"
        ]
    );
    assert_eq!((r.tracestate.len(), r.content_length), (1, Some(2)));
    assert_eq!(status(&e), 200);
    assert_eq!(h.c.counters(), Default::default());
}
