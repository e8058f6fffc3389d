//! The exporter against collectors that refuse, and one that holds every
//! request until several are waiting at once.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::{Condvar, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use super::*;
use crate::otel_env::Compression;

fn batch(n: usize) -> Vec<Span> {
    vec![Span::bare(); n]
}

type Setup = (
    OtlpExporter,
    Arc<Stats>,
    tokio::sync::watch::Sender<Option<Instant>>,
);

/// An exporter aimed at `port`, `concurrent` batches at once, each attempt
/// given `timeout` and each batch twice that; short backoffs.
fn exporter(protocol: Protocol, port: u16, concurrent: usize, timeout: Duration) -> Setup {
    let s = OtlpSettings {
        protocol,
        endpoint: format!("http://127.0.0.1:{port}/v1/traces")
            .parse()
            .unwrap(),
        headers: Vec::new(),
        timeout,
        compression: Compression::Gzip,
        ca_pem: None,
    };
    let bsp = BspSettings {
        export_timeout: timeout * 3 / 2,
        max_concurrent_exports: concurrent,
        ..BspSettings::default()
    };
    let stats = Arc::new(Stats::default());
    let (tx, deadline) = ShutdownDeadline::channel();
    let mut e = OtlpExporter::new(&s, &bsp, stats.clone(), deadline).unwrap();
    let shared = Arc::get_mut(&mut e.shared).unwrap();
    shared.policy.initial_backoff = Duration::from_millis(20);
    shared.policy.max_backoff = Duration::from_millis(40);
    (e, stats, tx)
}

/// An exporter aimed at a port nobody listens on.
fn refused(protocol: Protocol) -> Setup {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    exporter(protocol, port, 4, Duration::from_millis(200))
}

#[test]
fn a_down_collector_costs_retries_then_counted_drops() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let (mut e, stats, _tx) = refused(protocol);
        let t = Instant::now();
        e.export(&batch(7)).unwrap();
        e.flush().unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{protocol:?}");
        assert!(e.shared.health.lock().unwrap().is_failing());
        assert_eq!(stats.spans_dropped_export_failed.load(Relaxed), 7);
        let retries = stats.export_retries.load(Relaxed);
        assert!(retries >= 2, "{protocol:?}: {retries}");
        assert_eq!(stats.spans_retried.load(Relaxed), 7 * retries);
        assert_eq!(stats.spans_exported.load(Relaxed), 0);
    }
}

#[test]
fn after_the_shutdown_deadline_batches_are_dropped_at_once() {
    let (mut e, stats, tx) = refused(Protocol::Grpc);
    let _ = tx.send(Some(Instant::now()));
    assert!(matches!(e.export(&batch(5)), Err(ExportError::Shutdown)));
    assert_eq!(stats.spans_dropped_shutdown.load(Relaxed), 5);
    assert_eq!(stats.export_retries.load(Relaxed), 0);
}

/// Requests held by [`Gate`], the most held at once, and whether it opened.
#[derive(Default)]
struct Held {
    now: usize,
    most: usize,
    open: bool,
}

/// An OTLP/HTTP collector that answers no request until `want` are waiting
/// at once (or `HOLD` passed), then answers them all, and every later one
/// at once.
struct Gate {
    want: usize,
    held: Mutex<Held>,
    changed: Condvar,
}

const HOLD: Duration = Duration::from_secs(5);

impl Gate {
    fn serve(self: Arc<Self>, listener: TcpListener) {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let gate = self.clone();
            std::thread::spawn(move || gate.connection(conn));
        }
    }

    fn connection(&self, conn: TcpStream) {
        let mut w = conn.try_clone().unwrap();
        let mut r = BufReader::new(conn);
        loop {
            let mut len = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let l = line.to_ascii_lowercase();
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            self.hold();
            let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
            w.write_all(ok.as_bytes()).unwrap();
        }
    }

    fn hold(&self) {
        let mut h = self.held.lock().unwrap();
        h.now += 1;
        h.most = h.most.max(h.now);
        if h.now >= self.want {
            h.open = true;
            self.changed.notify_all();
        }
        let (mut h, _) = self
            .changed
            .wait_timeout_while(h, HOLD, |h| !h.open)
            .unwrap();
        h.now -= 1;
    }
}

#[test]
fn batches_are_exported_concurrently() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let gate = Arc::new(Gate {
        want: 3,
        held: Mutex::default(),
        changed: Condvar::new(),
    });
    let server = gate.clone();
    std::thread::spawn(move || server.serve(listener));

    // Attempts outlast the gate's hold: only a gate that never opened
    // would make a batch fail.
    let (mut e, stats, _tx) = exporter(Protocol::HttpProtobuf, port, 3, HOLD * 2);
    for _ in 0..3 {
        e.export(&batch(10)).unwrap();
    }
    e.flush().unwrap();
    let held = gate.held.lock().unwrap();
    assert_eq!(held.most, 3, "batches in flight at once");
    assert_eq!(stats.spans_exported.load(Relaxed), 30);
    assert_eq!(stats.spans_dropped_export_failed.load(Relaxed), 0);
}
