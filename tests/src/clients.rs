//! Real clients: curl, Python scripts, and raw TCP for what no client does
//! on purpose (pipelining). Each request is timed with the wall clock
//! (`SystemTime`) just before the client starts and just after it finishes,
//! giving a window that the matching span must lie in.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::env;
use crate::span::Span;

/// Slack allowed when comparing span times with a client-measured window.
///
/// The agent converts kernel monotonic timestamps to Unix time with a boot
/// offset measured once at its start; reading the two clocks is not atomic
/// and the wall clock may be slewed by NTP afterwards, so the converted
/// times can be off by a small amount. 2 ms is far above that error and far
/// below the windows' resolution that matters (a span outside its window by
/// more than 2 ms is a real timing bug, e.g. a span paired with the wrong
/// request, or timestamps from the wrong event).
pub const DEFAULT_CLOCK_SLACK_NS: u64 = 2_000_000;

/// The slack for comparing span times with each other and with the test's
/// clock: [`DEFAULT_CLOCK_SLACK_NS`], or `WIRESPAN_CLOCK_SLACK_MS`. The
/// agent takes timestamps at syscall exit; a thread preempted between
/// handing bytes to a loopback peer and returning can end its span after
/// the peer's. Under emulation (the qemu kernel matrix, ~17x slower) that
/// gap reaches milliseconds, so the matrix raises the slack there.
pub fn clock_slack_ns() -> u64 {
    std::env::var("WIRESPAN_CLOCK_SLACK_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(DEFAULT_CLOCK_SLACK_NS, |ms| ms * 1_000_000)
}

/// What a thread can take, on a busy host, to return from the syscall that
/// ended a span once its loopback peer already has the bytes (and may have
/// finished): preempted on the way out, as the peer it woke runs.
/// Measured: 2.08 ms past the client's end, for a server span that took
/// 6.5 ms against the usual 0.3 (`servers::python_threading_http_server`,
/// 2026-11-22, with the host at load average 3).
const PREEMPTED_EXIT_NS: u64 = 3_000_000;

/// The slack for a span's end against a later event (the client's finish,
/// its parent's end): [`clock_slack_ns`] plus [`PREEMPTED_EXIT_NS`]. A span
/// ends at a syscall's exit (a server's at its response write's), which a
/// preempted thread reaches late. Starts need no such allowance: a late
/// exit only moves a start later, further inside its window.
pub fn end_slack_ns() -> u64 {
    clock_slack_ns() + PREEMPTED_EXIT_NS
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// A wall-clock interval measured by the test around a request.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Window {
    /// Times `f`.
    pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Window) {
        let start_ns = now_ns();
        let out = f();
        let end_ns = now_ns();
        (out, Window { start_ns, end_ns })
    }

    /// `start <= end` and `[start, end]` lies inside this window, give or take
    /// [`clock_slack_ns`] at the start and [`end_slack_ns`] at the end.
    pub fn contains(&self, span: &Span) -> bool {
        span.start_ns <= span.end_ns
            && span.start_ns + clock_slack_ns() >= self.start_ns
            && span.end_ns <= self.end_ns + end_slack_ns()
    }

    /// Panics with details unless [`Window::contains`] holds.
    pub fn assert_contains(&self, span: &Span, what: &str) {
        assert!(
            self.contains(span),
            "{what}: span [{}, {}] (duration {} ns) is not inside the client's window \
             [{}, {}] ({} ns slack at the start, {} at the end): starts {} ns after \
             the window start, ends {} ns after the window end.\n  span: {span}",
            span.start_ns,
            span.end_ns,
            span.duration_ns(),
            self.start_ns,
            self.end_ns,
            clock_slack_ns(),
            end_slack_ns(),
            i128::from(span.start_ns) - i128::from(self.start_ns),
            i128::from(span.end_ns) - i128::from(self.end_ns),
        );
    }
}

/// Drops proxy settings so clients talk to 127.0.0.1 directly.
pub fn no_proxy(cmd: &mut Command) -> &mut Command {
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("no_proxy", "*").env("NO_PROXY", "*")
}

/// One transfer of a curl run.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub http_code: u16,
    /// New connections curl opened for this transfer (0 = reused).
    pub num_connects: u32,
    pub body: Vec<u8>,
}

/// The result of one curl process.
#[derive(Debug)]
pub struct CurlRun {
    pub pid: u32,
    pub status: ExitStatus,
    pub stderr: String,
    /// One per URL, in order.
    pub transfers: Vec<Transfer>,
    pub window: Window,
}

impl CurlRun {
    pub fn exit_code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The single transfer; panics unless curl exited 0 with exactly one.
    pub fn only(&self) -> &Transfer {
        assert!(
            self.status.success() && self.transfers.len() == 1,
            "curl failed ({}), {} transfers; stderr: {}",
            self.status,
            self.transfers.len(),
            self.stderr
        );
        &self.transfers[0]
    }

    /// The transfers of a run that must have used one connection for all
    /// `n` URLs (a keep-alive test's premise); panics otherwise.
    pub fn on_one_connection(&self, n: usize) -> &[Transfer] {
        assert!(self.status.success(), "curl: {}", self.stderr);
        assert_eq!(self.transfers.len(), n, "transfers");
        assert_eq!(
            self.transfers.iter().map(|t| t.num_connects).sum::<u32>(),
            1,
            "test premise: one connection"
        );
        &self.transfers
    }
}

const WRITE_OUT_MARK: &str = "\n@@wirespan-transfer ";

/// One curl process GETting `PREFIX0` .. `PREFIX{n-1}` from `server` (one
/// connection, kept alive); panics unless curl succeeds.
pub fn curl_numbered(server: &crate::servers::Server, prefix: &str, n: u64) -> CurlRun {
    let urls: Vec<String> = (0..n)
        .map(|i| server.url(&format!("{prefix}{i}")))
        .collect();
    let url_refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let run = curl(&url_refs);
    assert!(run.status.success(), "curl {prefix}0..{n}: {}", run.stderr);
    run
}

/// POSTs `size` seeded bytes (`seed`) to `url` (py_server's `/upload`,
/// which answers with the sha256 of what it received) with curl, without
/// `Expect: 100-continue`, and asserts the answer matches what was sent.
pub fn upload_hash_checked(url: &str, seed: u64, size: usize) {
    let data = crate::data::seeded_bytes(seed, size);
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), &data).expect("write body");
    let arg = format!("@{}", file.path().display());
    let run = curl(&[
        "--data-binary",
        &arg,
        "-H",
        "Content-Type: application/octet-stream",
        "-H",
        "Expect:",
        url,
    ]);
    let t = run.only();
    assert_eq!(t.http_code, 200, "{size}-byte upload status");
    assert_eq!(
        String::from_utf8_lossy(&t.body),
        crate::data::sha256_hex(&data),
        "the server received other bytes than the {size}-byte body sent"
    );
}

/// Runs `curl -sS --noproxy '*' ARGS...`, timing it. Each transfer's status
/// and connection reuse come from `--write-out`. Panics only if curl cannot
/// be spawned; the caller checks the exit status.
pub fn curl(args: &[&str]) -> CurlRun {
    let curl = env::find_program("curl").expect("curl is installed");
    let mut cmd = Command::new(curl);
    no_proxy(&mut cmd)
        .args(["-sS", "--noproxy", "*", "--max-time", "60"])
        .arg("--write-out")
        .arg(format!(
            "{WRITE_OUT_MARK}code=%{{http_code}} connects=%{{num_connects}}@@\n"
        ))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let ((pid, output), window) = Window::measure(|| {
        let child = cmd.spawn().expect("spawn curl");
        let pid = child.id();
        (pid, child.wait_with_output().expect("wait for curl"))
    });
    CurlRun {
        pid,
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        transfers: parse_write_out(&output.stdout),
        window,
    }
}

fn parse_write_out(stdout: &[u8]) -> Vec<Transfer> {
    let mark = WRITE_OUT_MARK.as_bytes();
    let mut out = Vec::new();
    let mut rest = stdout;
    while let Some(pos) = find(rest, mark) {
        let body = rest[..pos].to_vec();
        let after = &rest[pos + mark.len()..];
        let end = find(after, b"@@\n").unwrap_or(after.len());
        let meta = String::from_utf8_lossy(&after[..end]).into_owned();
        let field = |name: &str| -> Option<u32> {
            meta.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name))
                .and_then(|v| v.parse().ok())
        };
        out.push(Transfer {
            http_code: field("code=")
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(0),
            num_connects: field("connects=").unwrap_or(0),
            body,
        });
        rest = &after[(end + 3).min(after.len())..];
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A helper process (a Python client script) driven line by line over its
/// stdin/stdout. Dropping it kills the process it started.
pub struct Script {
    child: Option<Child>,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Script {
    /// Runs `python3 tests/servers/<script> ARGS...`.
    pub fn python(script: &str, args: &[&str]) -> Script {
        let mut cmd = Command::new(env::python());
        cmd.arg(env::server_script(script)).args(args);
        Script::spawn(cmd)
    }

    pub fn spawn(mut cmd: Command) -> Script {
        no_proxy(&mut cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Script {
            child: Some(child),
            pid,
            stdin,
            lines,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next stdout line; panics after `timeout` or at EOF.
    pub fn read_line(&self, timeout: Duration) -> String {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("script pid {}: no output line ({e})", self.pid))
    }

    /// Writes `line` and a newline to the script's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to script stdin");
        stdin.flush().expect("flush script stdin");
    }

    /// Closes stdin and waits for the exit; panics after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> ExitStatus {
        self.stdin.take();
        let mut child = self.child.take().expect("not waited yet");
        let pid = self.pid;
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = tx.send(child.wait());
            child
        });
        match rx.recv_timeout(timeout) {
            Ok(status) => {
                let _ = waiter.join();
                status.expect("wait for script")
            }
            Err(_) => {
                // SAFETY: kill(2) on our own child, not yet reaped.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                let _ = waiter.join();
                panic!("script pid {pid} did not exit within {timeout:?}");
            }
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A response read off a raw socket.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one final response per entry of `methods` (the methods of the
/// requests sent, in order, which decide whether a response has a body),
/// skipping interim 1xx responses. Handles Content-Length, chunked, and
/// bodiless responses (HEAD, 204, 304).
pub fn read_responses(
    stream: &mut impl Read,
    methods: &[&str],
) -> std::io::Result<Vec<RawResponse>> {
    let mut reader = ByteReader {
        inner: stream,
        buf: Vec::new(),
    };
    let mut out = Vec::new();
    for method in methods {
        loop {
            let head = reader.read_until_seq(b"\r\n\r\n")?;
            let head = String::from_utf8_lossy(&head).into_owned();
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let status: u16 = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
            let headers: Vec<(String, String)> = lines
                .filter(|l| !l.is_empty())
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            if (100..200).contains(&status) {
                continue;
            }
            let mut resp = RawResponse {
                status,
                headers,
                body: Vec::new(),
            };
            let bodiless = method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304;
            if !bodiless {
                if resp
                    .header("transfer-encoding")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
                {
                    loop {
                        let size_line = reader.read_until_seq(b"\r\n")?;
                        let size_line = String::from_utf8_lossy(&size_line).into_owned();
                        let size_hex = size_line.trim().split(';').next().unwrap_or_default();
                        let size = usize::from_str_radix(size_hex, 16)
                            .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
                        if size == 0 {
                            // Trailers end with an empty line.
                            while !reader.read_until_seq(b"\r\n")?.is_empty() {}
                            break;
                        }
                        resp.body.extend(reader.read_exact_n(size)?);
                        reader.read_until_seq(b"\r\n")?;
                    }
                } else if let Some(len) = resp.header("content-length") {
                    let len: usize = len
                        .parse()
                        .map_err(|_| bad(format!("bad content-length {len:?}")))?;
                    resp.body = reader.read_exact_n(len)?;
                } else {
                    resp.body = reader.read_to_end()?;
                }
            }
            out.push(resp);
            break;
        }
    }
    Ok(out)
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

struct ByteReader<'a, R: Read> {
    inner: &'a mut R,
    buf: Vec<u8>,
}

impl<R: Read> ByteReader<'_, R> {
    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 65536];
        let n = self.inner.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Bytes up to `seq` (exclusive); consumes `seq` too.
    fn read_until_seq(&mut self, seq: &[u8]) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(pos) = find(&self.buf, seq) {
                let out = self.buf[..pos].to_vec();
                self.buf.drain(..pos + seq.len());
                return Ok(out);
            }
            self.fill()?;
        }
    }

    fn read_exact_n(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill()?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn read_to_end(&mut self) -> std::io::Result<Vec<u8>> {
        self.inner.read_to_end(&mut self.buf)?;
        Ok(std::mem::take(&mut self.buf))
    }
}

/// One curl request: `GET` plain, `POST` with a small form body, `HEAD` with
/// `--head`, anything else with `--request METHOD`.
pub fn curl_method(method: &str, url: &str) -> CurlRun {
    match method {
        "GET" => curl(&[url]),
        "POST" => curl(&["--data-binary", "field=value", url]),
        "HEAD" => curl(&["--head", url]),
        other => curl(&["--request", other, url]),
    }
}

/// Runs `cmd` to completion with piped output; kills it (by its pid) and
/// panics if it takes longer than `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => {
            let _ = waiter.join();
            out.expect("wait for command")
        }
        Err(_) => {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = waiter.join();
            panic!("{cmd:?} (pid {pid}) did not finish within {timeout:?}; killed it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_out_parsing() {
        let out = b"hello\n@@wirespan-transfer code=200 connects=1@@\n\n@@wirespan-transfer code=404 connects=0@@\n";
        let t = parse_write_out(out);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].body, b"hello");
        assert_eq!((t[0].http_code, t[0].num_connects), (200, 1));
        assert_eq!(t[1].body, b"");
        assert_eq!((t[1].http_code, t[1].num_connects), (404, 0));
    }

    #[test]
    fn raw_responses() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc\
            HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n\
            HTTP/1.1 204 No Content\r\n\r\n\
            HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3;x=y\r\n!!!\r\n0\r\n\r\n\
            HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\ngone";
        let mut r = &wire[..];
        let resp = read_responses(&mut r, &["POST", "HEAD", "GET", "GET", "GET"]).unwrap();
        let summary: Vec<(u16, &[u8])> = resp.iter().map(|r| (r.status, &r.body[..])).collect();
        assert_eq!(
            summary,
            vec![
                (200, &b"abc"[..]),
                (200, &b""[..]),
                (204, &b""[..]),
                (200, &b"hi!!!"[..]),
                (404, &b"gone"[..]),
            ]
        );
    }
}
