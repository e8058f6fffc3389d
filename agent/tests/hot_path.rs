//! CPU per traced HTTP/1 request on the agent's hot path, in process:
//! synthetic kernel data events (as the syscall tracepoints send them for
//! a keep-alive server) go through the connection table (parse, pairing,
//! span assembly), and the spans through the pipeline's batching thread
//! into the OTLP encoder. No kernel, no network: what it measures is the
//! agent's own userspace work, steady enough on a shared machine to A/B a
//! change, where the system bench is decided by the other load.
//!
//! Ignored by default (it runs for tens of seconds and asserts nothing
//! about speed):
//!
//! ```sh
//! WIRESPAN_EBPF_OBJ=none cargo test --release -p wirespan --test hot_path \
//!     -- --ignored --nocapture
//! ```
//!
//! It prints, per workload, the median of several runs of:
//! - `capture`: `ConnTable::on_event` for the request and response events,
//!   spans dropped right away (thread CPU time);
//! - `encode`: `RequestEncoder::encode` of 512-span batches (thread CPU);
//! - `pipeline`: capture on this thread, spans through the bounded channel
//!   to `pipeline::run_batches` on another, which encodes each batch and
//!   drops it as the OTLP exporter does, one batch in flight at a time
//!   (process CPU time, both threads: what the agent pays per request,
//!   minus the ring buffer and the gRPC transport).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
        mpsc,
    },
    time::Duration,
};

use wirespan::{
    clock::BootClock,
    conn::ConnTable,
    export::{ExportError, Exporter, otlp_encode::RequestEncoder},
    pipeline::{BatchConfig, run_batches},
    select::Selector,
    span::Span,
    stats::Stats,
};
use wirespan_common::{
    config::MAX_CAPTURE,
    event::{Direction, EventHeader, Tuple, user::Event},
};

/// Keep-alive connections the requests are spread over (the bench's wrk
/// uses 8).
const CONNS: usize = 8;
const REQUESTS: usize = 100_000;
const RUNS: usize = 7;
const BATCH: usize = 512;

/// What the bench's load client sends, and nginx's answer (head and the
/// 312-byte body, written with one writev).
const BENCH_REQUEST: &str = "GET /bench.json HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
const NGINX_HEAD: &str = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 \
     16:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 312\r\nLast-Modified: \
     Sat, 21 Nov 2026 15:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"6720d8a0-138\"\r\n\
     Accept-Ranges: bytes\r\n\r\n";

/// One request and its response, as the bytes of one read and one write.
struct Exchange {
    request: Vec<u8>,
    response: Vec<u8>,
}

fn bench_workload() -> Vec<Exchange> {
    let mut response = NGINX_HEAD.as_bytes().to_vec();
    response.extend(std::iter::repeat_n(b'x', 312));
    vec![Exchange {
        request: BENCH_REQUEST.as_bytes().to_vec(),
        response,
    }]
}

/// A more varied API: ids in paths, a traceparent, bodies both ways, an
/// unknown method, chunked and error responses.
fn mixed_workload() -> Vec<Exchange> {
    let mut w = Vec::new();
    for i in 0..64u32 {
        let tp = format!("00-{:032x}-{:016x}-01", u128::from(i) + 1, u64::from(i) + 7);
        w.push(Exchange {
            request: format!(
                "GET /users/{i}/orders?page=2 HTTP/1.1\r\nHost: api.example.com:8080\r\n\
                 User-Agent: curl/8.5.0\r\nAccept: */*\r\ntraceparent: {tp}\r\n\
                 tracestate: vendor=abc\r\n\r\n"
            )
            .into_bytes(),
            response: b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n7\r\n{\"a\":1}\r\n0\r\n\r\n"
                .to_vec(),
        });
        w.push(Exchange {
            request: b"POST /api/v1/items HTTP/1.1\r\nHost: api.example.com\r\n\
                Content-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"name\":\"x\"}\n"
                .to_vec(),
            response: b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
        });
        w.push(Exchange {
            request: format!(
                "DELETE /items/550e8400-e29b-41d4-a716-{i:012x} HTTP/1.1\r\nHost: [::1]:9000\r\n\r\n"
            )
            .into_bytes(),
            response: b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_vec(),
        });
        w.push(Exchange {
            request: b"PURGE /cache/all HTTP/1.0\r\n\r\n".to_vec(),
            response: b"HTTP/1.0 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found".to_vec(),
        });
    }
    w
}

fn table() -> ConnTable {
    ConnTable::new(
        Selector {
            pids: vec![me()],
            ..Default::default()
        },
        BootClock::measure(),
        16_384,
        Arc::new(Stats::default()),
    )
}

/// One data event as the kernel sends it: the payload capped at the
/// capture limit, `ret` the whole syscall's byte count.
fn feed(
    t: &mut ConnTable,
    conn: usize,
    dir: Direction,
    ts: u64,
    bytes: &[u8],
    out: &mut Vec<Span>,
) {
    let tuple = Tuple::v4([127, 0, 0, 1], 8080, [127, 0, 0, 1], 40_000 + conn as u16);
    let captured = bytes.len().min(MAX_CAPTURE);
    let hdr = EventHeader {
        tgid: me(),
        tid: me() + conn as u32,
        fd: 10 + conn as i32,
        ts_enter_ns: ts,
        ts_exit_ns: ts + 2_000,
        sk: 0x1000 + conn as u64,
        ret: bytes.len() as i64,
        captured: captured as u32,
        ..Default::default()
    };
    t.on_event(&Event::data(hdr, dir, tuple, &bytes[..captured]), out);
}

/// The traced "process": this one, so that the process cache finds it.
fn me() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Feeds `n` exchanges round-robin over the connections, starting at
/// request `first`; `sink` gets every span.
fn replay(
    t: &mut ConnTable,
    w: &[Exchange],
    first: usize,
    n: usize,
    out: &mut Vec<Span>,
    mut sink: impl FnMut(Span),
) {
    for i in first..first + n {
        let ex = &w[i % w.len()];
        let conn = i % CONNS;
        let ts = 1_000_000 + i as u64 * 100_000;
        feed(t, conn, Direction::Ingress, ts, &ex.request, out);
        feed(t, conn, Direction::Egress, ts + 50_000, &ex.response, out);
        out.drain(..).for_each(&mut sink);
    }
}

fn cpu_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to write into.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(r, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `HOT_PATH_CPUS=a,b` pins the pipeline's capture thread to CPU `a` and
/// its batching thread to CPU `b` (the same CPU, or two: the cost of the
/// spans crossing between caches), so that runs do not depend on where
/// the scheduler put the threads.
fn pin(which: usize) {
    let Ok(cpus) = std::env::var("HOT_PATH_CPUS") else {
        return;
    };
    let Some(cpu) = cpus
        .split(',')
        .nth(which)
        .and_then(|c| c.trim().parse::<usize>().ok())
    else {
        return;
    };
    // SAFETY: a zeroed cpu_set_t is valid, and CPU_SET/sched_setaffinity
    // get a pointer to it with its size.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(r, 0, "pinning to CPU {cpu}");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn capture_ns(w: &[Exchange]) -> f64 {
    let mut t = table();
    let mut out = Vec::with_capacity(64);
    let mut spans = 0usize;
    // Warm up: the process cache, connections, allocator.
    replay(&mut t, w, 0, 10_000, &mut out, drop);
    let runs = (0..RUNS)
        .map(|r| {
            let t0 = cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID);
            replay(&mut t, w, (r + 1) * REQUESTS, REQUESTS, &mut out, |s| {
                spans += 1;
                drop(s)
            });
            (cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID) - t0) as f64 / REQUESTS as f64
        })
        .collect();
    assert_eq!(spans, RUNS * REQUESTS, "one span per request");
    median(runs)
}

fn encode_ns(w: &[Exchange]) -> f64 {
    let mut t = table();
    let mut out = Vec::new();
    let mut batch = Vec::with_capacity(BATCH);
    replay(&mut t, w, 0, BATCH, &mut out, |s| batch.push(s));
    assert_eq!(batch.len(), BATCH);
    let mut enc = RequestEncoder::default();
    let rounds = REQUESTS / BATCH;
    let mut bytes = 0;
    let runs = (0..RUNS)
        .map(|_| {
            let t0 = cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID);
            for _ in 0..rounds {
                bytes += enc.encode(&batch).len();
            }
            (cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID) - t0) as f64 / (rounds * BATCH) as f64
        })
        .collect();
    assert!(bytes > 0);
    median(runs)
}

/// Encodes and forgets, as the OTLP exporter does before its transport;
/// says so on `done` after each batch.
struct EncodeOnly {
    enc: RequestEncoder,
    spans: Arc<AtomicUsize>,
    done: mpsc::Sender<()>,
}

impl Exporter for EncodeOnly {
    fn export(&mut self, batch: &[Span]) -> Result<(), ExportError> {
        let bytes = self.enc.encode(batch);
        std::hint::black_box(bytes);
        self.spans.fetch_add(batch.len(), Relaxed);
        let _ = self.done.send(());
        Ok(())
    }
}

/// Requests per pipeline run: whole batches.
const PIPELINE_REQUESTS: usize = 100 * BATCH;

fn pipeline_ns(w: &[Exchange]) -> f64 {
    pin(0);
    let mut t = table();
    let mut out = Vec::with_capacity(64);
    replay(&mut t, w, 0, 10_000, &mut out, drop);
    let runs = (0..RUNS)
        .map(|r| {
            // The production queue bound (OTEL_BSP_MAX_QUEUE_SIZE's default).
            let (tx, rx) = mpsc::sync_channel(2048);
            let spans = Arc::new(AtomicUsize::new(0));
            let (done_tx, done) = mpsc::channel();
            let exporter = Box::new(EncodeOnly {
                enc: RequestEncoder::default(),
                spans: spans.clone(),
                done: done_tx,
            });
            let cfg = BatchConfig {
                max_batch: BATCH,
                delay: Duration::from_millis(200),
            };
            let t0 = cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
            let worker = std::thread::spawn(move || {
                pin(1);
                run_batches(rx, exporter, cfg)
            });
            let mut dropped = 0usize;
            let first = (r + 1) * PIPELINE_REQUESTS;
            for chunk in 0..PIPELINE_REQUESTS / BATCH {
                replay(&mut t, w, first + chunk * BATCH, BATCH, &mut out, |s| {
                    dropped += usize::from(tx.try_send(s).is_err())
                });
                // One batch in flight at a time, as at a steady rate the
                // exporter keeps up: the spans' memory goes back and forth
                // between the threads as it does in the agent, rather than
                // piling up in the queue.
                assert!(done.recv().is_ok(), "the batching thread is gone");
            }
            drop(tx);
            assert!(worker.join().is_ok(), "the batching thread panicked");
            let cpu = cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID) - t0;
            assert_eq!(dropped, 0);
            assert_eq!(spans.load(Relaxed), PIPELINE_REQUESTS);
            cpu as f64 / PIPELINE_REQUESTS as f64
        })
        .collect();
    median(runs)
}

#[test]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
fn cpu_per_request() {
    // HOT_PATH_ONLY=capture|encode|pipeline runs one part (for perf).
    let only = std::env::var("HOT_PATH_ONLY").unwrap_or_default();
    let part = |name: &str, f: fn(&[Exchange]) -> f64, w: &[Exchange]| {
        if only.is_empty() || only == name {
            f(w)
        } else {
            f64::NAN
        }
    };
    for (name, w) in [("bench", bench_workload()), ("mixed", mixed_workload())] {
        let capture = part("capture", capture_ns, &w);
        let encode = part("encode", encode_ns, &w);
        let pipeline = part("pipeline", pipeline_ns, &w);
        println!(
            "{name:>6}: capture {capture:7.0} ns/req, encode {encode:6.0} ns/span, \
             pipeline {pipeline:7.0} ns/req (medians of {RUNS} runs)"
        );
    }
}
