//! A small HTTP/1.1 keep-alive client inside xtask, for the two loads wrk
//! cannot make:
//! - a fixed request rate (wrk is closed-loop; wrk2 is not packaged by
//!   Debian; `hey -q` and `oha -q` would be one more tool to install and
//!   parse): [`fixed_rate`] paces each connection to its share of the rate
//!   on an open-loop schedule, and measures latency from the time a request
//!   was due, so a stall shows up in the latency instead of silently
//!   lowering the rate;
//! - thousands of connections held open: [`open`] and [`round`];
//! - connection churn at a fixed rate (the `soak`): [`fixed_rate`] with
//!   `reopen_after`, each connection closed after that many requests and a
//!   new one opened in its place.
//!
//! Every request is `GET /bench.json` on loopback; every response is read
//! in full (its Content-Length), so a request counts as completed only once
//! nginx answered it.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::timed::median;
use crate::util;

const REQUEST: &[u8] =
    b"GET /bench.json HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: wirespan-bench\r\n\r\n";
/// A response that takes longer than this is an error (nginx on loopback
/// answers in well under a millisecond when it is not starved).
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One keep-alive connection to nginx.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(port: u16) -> Result<Self> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .context("SO_RCVTIMEO")?;
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .context("SO_SNDTIMEO")?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(1024),
        })
    }

    pub fn send(&mut self) -> Result<()> {
        self.stream.write_all(REQUEST).context("sending a request")
    }

    /// Reads one whole response; returns its status code.
    pub fn recv(&mut self) -> Result<u16> {
        loop {
            if let Some((status, len)) = parse_head(&self.buf)?
                && self.buf.len() >= len
            {
                self.buf.drain(..len);
                return Ok(status);
            }
            let mut chunk = [0u8; 4096];
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                // A signal interrupts a socket read that has a timeout even
                // under SA_RESTART (signal(7)): the soak counted ~2 per 100k
                // requests as errors (EINTR) while xtask's samplers' children
                // came and went. Not an error of nginx's: read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading a response"),
            };
            if n == 0 {
                bail!("nginx closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Status and total length (head + Content-Length body) of the response at
/// the start of `buf`, once its head is complete.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let body = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .with_context(|| format!("no Content-Length in {head:?}"))?;
    Ok(Some((status, end + 4 + body)))
}

/// Opens `n` keep-alive connections.
pub fn open(port: u16, n: u32) -> Result<Vec<Conn>> {
    (0..n)
        .map(|i| Conn::open(port).with_context(|| format!("opening connection {} of {n}", i + 1)))
        .collect()
}

/// One request on every connection (all sent, then all read); returns how
/// many were answered 2xx.
pub fn round(conns: &mut [Conn]) -> Result<u64> {
    for c in conns.iter_mut() {
        c.send()?;
    }
    let mut ok = 0;
    for c in conns.iter_mut() {
        if (200..300).contains(&c.recv()?) {
            ok += 1;
        }
    }
    Ok(ok)
}

/// What one fixed-rate run achieved.
#[derive(Debug, Clone)]
pub struct RateRun {
    /// Requests the schedule held (rate x length).
    pub scheduled: u64,
    pub seconds: f64,
    pub completed: u64,
    pub non_2xx: u64,
    pub errors: u64,
    /// Connections opened, the first ones included.
    pub conns_opened: u64,
    /// Completed requests per second of the run.
    pub achieved_rate: f64,
    /// Latency from the time each request was due, in seconds.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

impl RateRun {
    /// One line: requests, time, achieved rate against `rate`, latency, errors.
    pub fn summary(&self, rate: u32) -> String {
        let ms =
            |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |s| format!("{:.3} ms", s * 1e3));
        format!(
            "{} requests in {:.1} s: {:.0} req/s (target {rate}), {} connections opened, p50 {}, \
             p99 {}, {} errors",
            self.completed,
            self.seconds,
            self.achieved_rate,
            self.conns_opened,
            ms(self.p50),
            ms(self.p99),
            self.errors
        )
    }
}

/// Sends `rate` requests/s for `length` over `connections` keep-alive
/// connections, one thread each (pinned to `cpu` when given), calling
/// `sample` about every 200 ms from this thread while they run. With
/// `reopen_after`, each connection is closed after that many requests and
/// replaced by a new one (churn); without, they are kept for the whole run.
pub fn fixed_rate(
    port: u16,
    rate: u32,
    connections: u32,
    length: Duration,
    cpu: Option<usize>,
    reopen_after: Option<u32>,
    sample: &mut dyn FnMut(),
) -> Result<RateRun> {
    if rate == 0 || connections == 0 {
        bail!("rate and connections must be > 0");
    }
    // Each connection sends every `interval`, offset by its share of it, so
    // the requests are spread evenly over time.
    let interval = Duration::from_secs_f64(f64::from(connections) / f64::from(rate));
    let started = Instant::now() + Duration::from_millis(50);
    let end = started + length;
    // A load that cannot keep up sends its backlog late, but not forever.
    let hard_end = end + (length / 10).max(Duration::from_secs(1));
    let results: Vec<Result<Worker>> = thread::scope(|s| {
        let workers: Vec<_> = (0..connections)
            .map(|i| {
                let first = started + interval.mul_f64(f64::from(i) / f64::from(connections));
                s.spawn(move || worker(port, first, interval, (end, hard_end), cpu, reopen_after))
            })
            .collect();
        while workers.iter().any(|w| !w.is_finished()) {
            sample();
            thread::sleep(Duration::from_millis(200));
        }
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("load thread panicked")))
            })
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let (mut completed, mut non_2xx, mut errors, mut conns_opened) = (0, 0, 0, 0);
    for r in results {
        let w = r?;
        conns_opened += w.conns_opened;
        completed += w.completed;
        non_2xx += w.non_2xx;
        errors += w.errors;
        latencies.extend(w.latencies_us.into_iter().map(f64::from));
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| -> Option<f64> {
        let last = latencies.len().checked_sub(1)?;
        let i = ((last as f64) * p).round() as usize;
        latencies.get(i).map(|us| us / 1e6)
    };
    Ok(RateRun {
        scheduled: (f64::from(rate) * length.as_secs_f64()).round() as u64,
        seconds,
        completed,
        non_2xx,
        errors,
        conns_opened,
        achieved_rate: completed as f64 / seconds.max(1e-9),
        p50: median(latencies.clone()).map(|us| us / 1e6),
        p99: pct(0.99),
    })
}

struct Worker {
    completed: u64,
    non_2xx: u64,
    errors: u64,
    conns_opened: u64,
    latencies_us: Vec<u32>,
}

fn worker(
    port: u16,
    first: Instant,
    interval: Duration,
    (end, hard_end): (Instant, Instant),
    cpu: Option<usize>,
    reopen_after: Option<u32>,
) -> Result<Worker> {
    if let Some(cpu) = cpu {
        pin_this_thread(cpu)?;
    }
    let mut conn = Conn::open(port)?;
    let mut w = Worker {
        completed: 0,
        non_2xx: 0,
        errors: 0,
        conns_opened: 1,
        latencies_us: Vec::new(),
    };
    // Requests on the current connection.
    let mut on_conn = 0;
    let mut due = first;
    while due < end && Instant::now() < hard_end && util::caught_signal().is_none() {
        // Pacing, not synchronization: wait until this request is due. A
        // late request is sent at once (open loop), its lateness counted
        // in its latency.
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        if reopen_after.is_some_and(|n| on_conn >= n) {
            // Churn: the old connection closes (client first, as a browser
            // or a pooled client retiring a connection would).
            conn = Conn::open(port)?;
            w.conns_opened += 1;
            on_conn = 0;
        }
        on_conn += 1;
        let sent = conn.send().and_then(|()| conn.recv());
        match sent {
            Ok(status) => {
                w.completed += 1;
                if !(200..300).contains(&status) {
                    w.non_2xx += 1;
                }
                let us = due.elapsed().as_micros();
                w.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Err(e) => {
                // Counted; a fresh connection carries on.
                // The first few say why (the count alone told nothing).
                if w.errors < 3 {
                    eprintln!("    load: request {on_conn} on its connection failed: {e:#}");
                }
                w.errors += 1;
                conn = Conn::open(port)?;
                w.conns_opened += 1;
                on_conn = 0;
            }
        }
        due += interval;
    }
    Ok(w)
}

/// Pins the calling thread to one CPU.
fn pin_this_thread(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within it, and
    // sched_setaffinity(0, ...) reads it for the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pinning a load thread to CPU {cpu}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads_are_read() {
        let r = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1";
        assert_eq!(parse_head(r).unwrap(), Some((200, r.len() - 8)));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }
}
