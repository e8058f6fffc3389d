//! A small, strict HTTP/1.x responder: one request per connection, GET
//! only, a bounded head, a deadline per connection and a cap on concurrent
//! connections. Scrapers (Prometheus, kubelet probes, curl) need no more,
//! and each limit keeps a misbehaving client from holding resources.

use std::{sync::Arc, time::Duration};

use log::{debug, warn};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use super::{Sources, render};

/// Request heads larger than this are refused (431): a scrape's is ~200 bytes.
const MAX_HEAD: usize = 8 * 1024;
/// Everything a connection may take, from accept to the last byte written.
const CONN_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNS: usize = 8;
/// Pause after a failed accept (e.g. out of fds) so the loop cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub async fn serve(listener: std::net::TcpListener, sources: Arc<Sources>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!("metrics server cannot start ({e}); /metrics, /healthz and /readyz are off");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNS));
    let mut accept_warned = false;
    loop {
        // The semaphore is never closed, so acquiring cannot fail.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                if !accept_warned {
                    warn!("metrics server: accept failed ({e}); further failures are not logged");
                    accept_warned = true;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(CONN_DEADLINE, handle(stream, &sources)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!("metrics connection: {e}"),
                Err(_) => debug!("metrics connection timed out"),
            }
        });
    }
}

async fn handle(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let head_end = loop {
        if let Some(end) = find_head_end(&buf[..len]) {
            break end;
        }
        if len == buf.len() {
            return respond(
                &mut stream,
                &Response::status(431, "request head too large"),
            )
            .await;
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            // The client went away before finishing its request.
            return Ok(());
        }
        len += n;
    };
    let response = match route(&buf[..head_end]) {
        Ok(Endpoint::Metrics) => Response {
            code: 200,
            content_type: EXPOSITION,
            body: render(sources),
        },
        Ok(Endpoint::Health) => Response::status(200, "ok"),
        Ok(Endpoint::Ready) if sources.readiness.is_ready() => Response::status(200, "ready"),
        Ok(Endpoint::Ready) => Response::status(503, sources.readiness.describe()),
        Err(refused) => refused,
    };
    respond(&mut stream, &response).await
}

/// Where the head ends: after the first empty line (CRLF or bare LF).
fn find_head_end(b: &[u8]) -> Option<usize> {
    memchr::memmem::find(b, b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| memchr::memmem::find(b, b"\n\n").map(|p| p + 2))
}

#[derive(Debug)]
struct Response {
    code: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn status(code: u16, body: &str) -> Self {
        Response {
            code,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
        }
    }
}

/// The exposition format's content type, version 0.0.4.
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, PartialEq)]
enum Endpoint {
    Metrics,
    Health,
    Ready,
}

/// The endpoint a request head asks for, or the response refusing it.
fn route(head: &[u8]) -> Result<Endpoint, Response> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).unwrap_or_default().trim_end();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::status(400, "bad request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Response::status(505, "HTTP/1.x only"));
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let endpoint = match path {
        "/metrics" => Endpoint::Metrics,
        "/healthz" => Endpoint::Health,
        "/readyz" => Endpoint::Ready,
        _ => {
            return Err(Response::status(
                404,
                "not found: try /metrics, /healthz or /readyz",
            ));
        }
    };
    if method != "GET" {
        return Err(Response::status(405, "GET only"));
    }
    Ok(endpoint)
}

async fn respond(stream: &mut TcpStream, r: &Response) -> std::io::Result<()> {
    let reason = match r.code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "HTTP Version Not Supported",
    };
    let allow = if r.code == 405 { "Allow: GET\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        r.code,
        r.content_type,
        r.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(r.body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_ends_at_the_first_empty_line() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    fn code(head: &str) -> Result<Endpoint, u16> {
        route(head.as_bytes()).map_err(|r| r.code)
    }

    #[test]
    fn routes() {
        assert_eq!(
            code("GET /metrics HTTP/1.1\r\nHost: x"),
            Ok(Endpoint::Metrics)
        );
        assert_eq!(code("GET /metrics?x=1 HTTP/1.0"), Ok(Endpoint::Metrics));
        assert_eq!(code("GET /healthz HTTP/1.1"), Ok(Endpoint::Health));
        assert_eq!(code("GET /readyz HTTP/1.1"), Ok(Endpoint::Ready));
        assert_eq!(code("GET /nope HTTP/1.1"), Err(404));
        assert_eq!(code("POST /metrics HTTP/1.1"), Err(405));
        assert_eq!(code("HEAD /healthz HTTP/1.1"), Err(405));
        assert_eq!(code("GET /metrics HTTP/2.0"), Err(505));
        assert_eq!(code("GET /metrics"), Err(400));
        assert_eq!(code("\u{0}\u{1}garbage"), Err(400));
    }
}
