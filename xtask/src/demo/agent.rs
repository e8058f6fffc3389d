//! The agent under demo: start it, tee its output, count its spans, stop it.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{AGENT_STOP_GRACE, Demo, READY_MARKER, READY_TIMEOUT, bail_if_interrupted, supervise};
use crate::util::{self, note};

/// What the agent printed so far.
#[derive(Default)]
pub(super) struct AgentOutput {
    pub(super) server_spans: usize,
    pub(super) client_spans: usize,
    pub(super) ready: bool,
    pub(super) stderr: Vec<String>,
    pub(super) stdout_closed: bool,
    pub(super) stderr_closed: bool,
}

impl AgentOutput {
    pub(super) fn spans(&self) -> usize {
        self.server_spans + self.client_spans
    }

    pub(super) fn stderr_tail(&self) -> String {
        let skip = self.stderr.len().saturating_sub(30);
        self.stderr[skip..].join("\n")
    }
}

#[derive(Default)]
pub(super) struct Shared {
    output: Mutex<AgentOutput>,
    changed: Condvar,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, AgentOutput> {
        self.output.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut AgentOutput)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    /// Waits until `done` holds, up to `timeout`. Returns whether it holds.
    pub(super) fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&AgentOutput) -> bool,
    ) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut out = self.lock();
        loop {
            if done(&out) {
                return Ok(true);
            }
            drop(out);
            bail_if_interrupted()?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            out = self.lock();
            let slice = (deadline - now).min(Duration::from_millis(200));
            out = self
                .changed
                .wait_timeout(out, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Reads `pipe` line by line (lossy UTF-8), calling `each` per line.
fn read_lines(pipe: impl Read, mut each: impl FnMut(String)) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                each(line.trim_end_matches(['\n', '\r']).to_string());
            }
        }
    }
}

/// Span kind of a text-printer line (`SERVER GET /x 200 ...`), if it is a span.
fn span_kind(line: &str) -> Option<&'static str> {
    line.split_whitespace().find_map(|tok| match tok {
        "SERVER" => Some("SERVER"),
        "CLIENT" => Some("CLIENT"),
        _ => None,
    })
}

impl Demo {
    /// Starts the agent on `pids` and waits for its `wirespan: ready` line.
    pub(super) fn start_agent(&mut self, bin: &Path, pids: &[u32]) -> Result<()> {
        let pid_list = pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = Command::new(bin);
        cmd.args(["--print", "text", "--pid", &pid_list])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // If xtask dies, the agent still gets to detach and flush.
        supervise(&mut cmd, libc::SIGINT);
        println!("    $ {}", util::render(&cmd));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("agent stdout")?;
        let stderr = child.stderr.take().context("agent stderr")?;
        let agent_pid = child.id();
        self.agent = Some(child);
        note(format!(
            "agent pid {agent_pid}; waiting for `{READY_MARKER}`"
        ));

        let shared = Arc::clone(&self.shared);
        self.readers.push(thread::spawn(move || {
            read_lines(stdout, |line| {
                // Tee: the spans are the show.
                let kind = span_kind(&line);
                let mut term = std::io::stdout().lock();
                let _ = writeln!(term, "{line}");
                let _ = term.flush();
                drop(term);
                shared.update(|o| match kind {
                    Some("SERVER") => o.server_spans += 1,
                    Some(_) => o.client_spans += 1,
                    None => {}
                });
            });
            shared.update(|o| o.stdout_closed = true);
        }));
        let shared = Arc::clone(&self.shared);
        self.readers.push(thread::spawn(move || {
            read_lines(stderr, |line| {
                eprintln!("    [agent] {line}");
                let ready = line.contains(READY_MARKER);
                shared.update(|o| {
                    o.ready |= ready;
                    o.stderr.push(line);
                });
            });
            shared.update(|o| o.stderr_closed = true);
        }));

        let waited = Instant::now();
        let settled = self
            .shared
            .wait_for(READY_TIMEOUT, |o| o.ready || o.stderr_closed)?;
        let out = self.shared.lock();
        if out.ready {
            note(format!(
                "agent ready after {:.1}s",
                waited.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        let tail = out.stderr_tail();
        drop(out);
        if settled {
            let status = match self.agent.as_mut() {
                Some(child) => util::wait_timeout(child, Duration::from_secs(5))?
                    .map_or_else(|| "closed its stderr".to_string(), |s| s.to_string()),
                None => "is gone".to_string(),
            };
            bail!("the agent exited before it was ready ({status}); its stderr:\n{tail}");
        }
        bail!(
            "the agent did not print `{READY_MARKER}` within {READY_TIMEOUT:?}; its stderr:\n{tail}"
        )
    }

    /// SIGINT to the agent, wait for it, then drain its output.
    pub(super) fn stop_agent(&mut self) -> Result<ExitStatus> {
        let mut child = self.agent.take().context("the agent is not running")?;
        let status = util::stop_child(&mut child, libc::SIGINT, AGENT_STOP_GRACE)?;
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_lines_are_classified() {
        assert_eq!(
            span_kind("SERVER GET /index.html 200 1.23ms pid=1 service=python3"),
            Some("SERVER")
        );
        assert_eq!(span_kind("12:00:00 CLIENT GET /x 200 2ms"), Some("CLIENT"));
        assert_eq!(span_kind("wirespan: ready"), None);
    }
}
