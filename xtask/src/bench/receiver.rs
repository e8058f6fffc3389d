//! The OTLP receiver of the tests (`tests/otlp/receiver.py`, PyPI
//! opentelemetry-proto + grpcio), run in count-only mode: the bench reads
//! its counters, not its span records.

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::procs::{self, Guard};
use crate::{setup, util};

pub struct Receiver {
    pub pid: u32,
    pub grpc_port: u16,
    pub http_port: u16,
    /// opentelemetry-proto, protobuf and grpcio versions.
    pub versions: Value,
}

pub fn script() -> PathBuf {
    util::workspace_root()
        .join("tests")
        .join("otlp")
        .join("receiver.py")
}

/// The venv has what the receiver imports.
pub fn check() -> Result<()> {
    let python = setup::otlp_python();
    let ok = Command::new(&python)
        .args([
            "-c",
            "import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!(
            "{} cannot import grpcio and opentelemetry-proto: run `cargo xtask setup`",
            python.display()
        );
    }
    Ok(())
}

/// Starts the receiver (kernel-chosen ports, span records off) and waits for
/// its ports line.
pub fn start(guard: &mut Guard) -> Result<Receiver> {
    let stdout = guard.path("receiver.stdout");
    let stderr = guard.path("receiver.stderr");
    let mut cmd = Command::new(setup::otlp_python());
    cmd.arg(script())
        .arg("--no-span-records")
        .arg("--output")
        .arg(guard.path("receiver-records.jsonl"))
        .stdout(fs::File::create(&stdout).context("receiver stdout file")?)
        .stderr(fs::File::create(&stderr).context("receiver stderr file")?);
    let pid = guard.spawn("OTLP receiver", cmd, libc::SIGTERM)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let ports: Value = loop {
        procs::bail_if_interrupted()?;
        let text = fs::read_to_string(&stdout).unwrap_or_default();
        if let Some(line) = text.lines().next().filter(|_| text.contains('\n')) {
            break serde_json::from_str(line)
                .with_context(|| format!("receiver printed {line:?}, not its ports"))?;
        }
        if let Some(st) = guard
            .child(pid)?
            .try_wait()
            .context("waiting for receiver")?
        {
            bail!(
                "the OTLP receiver exited at start ({st}):\n{}",
                procs::read_log(&stderr)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "the OTLP receiver did not print its ports within 30 s:\n{}",
                procs::read_log(&stderr)
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    let port = |key: &str| -> Result<u16> {
        ports[key]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .with_context(|| format!("no {key} in {ports}"))
    };
    Ok(Receiver {
        pid,
        grpc_port: port("grpc_port")?,
        http_port: port("http_port")?,
        versions: ports["versions"].clone(),
    })
}

impl Receiver {
    /// `GET /_receiver/stats`.
    pub fn stats(&self) -> Result<Value> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port))
            .context("connecting to the receiver")?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .context("set_read_timeout")?;
        s.write_all(
            b"GET /_receiver/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .context("asking the receiver for its stats")?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)
            .context("reading the receiver's stats")?;
        let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).with_context(|| format!("receiver stats: {reply:?}"))
    }

    pub fn spans_accepted(&self) -> Result<u64> {
        Ok(self.stats()?["spans_accepted"].as_u64().unwrap_or(0))
    }

    /// Waits until the receiver has accepted `target` spans, or its count
    /// has not moved for `stall`, or `deadline` passed.
    pub fn wait_for(&self, target: u64, stall: Duration, deadline: Instant) -> Result<Waited> {
        let mut last = 0;
        let mut last_change = Instant::now();
        loop {
            procs::bail_if_interrupted()?;
            let stats = self.stats()?;
            let n = stats["spans_accepted"].as_u64().unwrap_or(0);
            let last_accepted_ns = stats["last_accepted_unix_nano"].as_u64().unwrap_or(0);
            if n != last {
                last = n;
                last_change = Instant::now();
            }
            let timed_out = last_change.elapsed() >= stall || Instant::now() >= deadline;
            if n >= target || timed_out {
                return Ok(Waited {
                    accepted: n,
                    last_accepted_ns,
                    timed_out: n < target,
                    stalled_for: last_change.elapsed(),
                });
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What [`Receiver::wait_for`] saw last.
pub struct Waited {
    pub accepted: u64,
    pub last_accepted_ns: u64,
    pub timed_out: bool,
    pub stalled_for: Duration,
}
