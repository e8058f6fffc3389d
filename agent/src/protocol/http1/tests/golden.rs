//! Golden tests: captured-looking syscall payloads in, expected exchanges out.

use super::*;

/// curl -> nginx, as the server's read()/writev() calls saw it.
#[test]
fn golden_curl_to_nginx_server() {
    let read = b"GET /api/v1/users/42?expand=true HTTP/1.1\r\n\
Host: localhost:8080\r\n\
User-Agent: curl/8.5.0\r\n\
Accept: */*\r\n\
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
tracestate: congo=t61rcWkgMzE\r\n\
\r\n";
    let writev = b"HTTP/1.1 200 OK\r\n\
Server: nginx/1.24.0\r\n\
Date: Fri, 21 Nov 2025 09:30:00 GMT\r\n\
Content-Type: application/json\r\n\
Content-Length: 26\r\n\
Connection: keep-alive\r\n\
\r\n\
{\"id\":42,\"name\":\"Ada L.\"}\n";
    let mut h = H::new();
    h.c.feed(IN, read, read.len(), 1_000_000, 1_000_050, &mut h.out);
    h.c.feed(OUT, writev, writev.len(), 1_900_000, 1_900_020, &mut h.out);
    let e = h.one();
    assert_eq!(e.role, Role::Server);
    assert_eq!(
        e.request,
        RequestHead {
            method: "GET".into(),
            target: "/api/v1/users/42?expand=true".into(),
            version_minor: 1,
            host: Some("localhost:8080".into()),
            content_length: None,
            chunked: false,
            traceparent: vec!["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()],
            tracestate: vec!["congo=t61rcWkgMzE".into()],
            head_truncated: false,
        }
    );
    assert_eq!(
        e.response,
        Some(ResponseHead {
            status: 200,
            version_minor: 1,
            content_length: Some(26),
            chunked: false,
            head_truncated: false
        })
    );
    assert_eq!((e.request_start, e.request_end), (1_000_000, 1_000_050));
    assert_eq!(
        (e.response_start, e.response_end),
        (Some(1_900_000), 1_900_020)
    );
    assert_eq!(e.outcome, Outcome::Complete);
}

/// A Python client (requests) posting JSON to a chunked Go backend, seen
/// from the client: sendall() of head then body, recv() in 3 pieces.
#[test]
fn golden_python_client_to_go_backend_chunked() {
    let sends: [&[u8]; 2] = [
        b"POST /v2/orders HTTP/1.1\r\nHost: orders.svc.cluster.local\r\nUser-Agent: python-requests/2.31.0\r\n\
Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\nContent-Length: 18\r\n\
Content-Type: application/json\r\n\r\n",
        b"{\"sku\": \"A-17\"}\r\n\r\n",
    ];
    let recvs: [&[u8]; 3] = [
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nDate: Fri, 21 Nov 2025 09:31:00 GMT\r\n\
Transfer-Encoding: chunked\r\n\r\n1a\r\n{\"order\":\"o-9\",\"ok\":tru",
        b"e}\r\n",
        b"0\r\n\r\n",
    ];
    let mut h = H::new();
    let (a, _) = h.feed(OUT, sends[0]);
    let (_, b) = h.feed(OUT, sends[1]);
    let (c, _) = h.feed(IN, recvs[0]);
    h.feed(IN, recvs[1]);
    assert!(h.out.is_empty());
    let (_, d) = h.feed(IN, recvs[2]);
    let e = h.one();
    assert_eq!(e.role, Role::Client);
    assert_eq!(
        (&*e.request.method, e.request.target.as_str()),
        ("POST", "/v2/orders")
    );
    assert_eq!(e.request.host.as_deref(), Some("orders.svc.cluster.local"));
    assert_eq!(e.request.content_length, Some(18));
    let r = e.response.as_ref().unwrap();
    assert_eq!((r.status, r.chunked, r.content_length), (201, true, None));
    assert_eq!(
        (
            e.request_start,
            e.request_end,
            e.response_start,
            e.response_end
        ),
        (a, b, Some(c), d)
    );
    assert_eq!(h.c.counters(), Default::default());
}
