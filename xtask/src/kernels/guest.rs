//! The job a guest runs, and what it leaves in the job directory.
//!
//! The job directory `target/kernels/jobs/<kernel>/` is shared with the guest
//! writable (9p tag `job`) and mounted there at the same path. `run.sh`
//! (written here, run by the guest's init with the host's bash in the
//! chroot) first starts the agent once on its own, to record how it starts
//! on this kernel (the `socket classification: ...` strategy line, any
//! warning, or the load error with the verifier log), then runs each test of
//! the subset on its own, with its output in `out/<test>.out`. It writes:
//!
//! - `agent-start.log`: the agent's stderr; `agent-start.status`: `ready`
//!   or `not-ready <exit code>`;
//! - `results`: one line per test, `<binary>::<name> ok|FAILED <seconds>`;
//! - `exit-code`: last, 0 when everything passed. qemu itself always exits
//!   0, so a missing `exit-code` means the guest died or timed out.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use super::initramfs::sh_quote;

/// How long the agent may take to print `wirespan: ready` in the start-up
/// probe. Loading and verifying the programs under TCG takes a while.
const PROBE_READY_SECS: u32 = 120;

/// The marker the guest's progress lines start with (echoed by xtask).
pub const GUEST_MARKER: &str = "wirespan-guest: ";

/// The environment the tests get in the guest.
pub struct GuestEnv<'a> {
    pub agent_bin: &'a Path,
    pub otlp_python: &'a Path,
    pub span_timeout_secs: u32,
}

/// One test to run: its label (`binary::name`), executable and name.
pub struct Planned {
    pub label: String,
    pub exe: PathBuf,
    pub name: String,
}

/// Writes `run.sh` into the (fresh) job directory; returns its path.
pub fn write_script(job: &Path, env: &GuestEnv, tests: &[Planned]) -> Result<PathBuf> {
    fs::create_dir_all(job.join("out"))?;
    let q = |p: &Path| sh_quote(&p.to_string_lossy());
    let mut runs = String::new();
    for t in tests {
        runs.push_str(&format!(
            "run_test {} {} {}\n",
            sh_quote(&t.label),
            q(&t.exe),
            sh_quote(&t.name)
        ));
    }
    let script = format!(
        r#"#!/bin/bash
# Written by `cargo xtask test --kernels` (xtask/src/kernels/guest.rs);
# runs as root in the guest, in a chroot of the host's root.
set -u
JOB={job}
cd "$JOB" || exit 1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 CI=true
export WIRESPAN_BIN={bin}
export WIRESPAN_OTLP_PYTHON={python}
export WIRESPAN_SPAN_TIMEOUT_SECS={span_timeout}
# Verifying the programs takes 30-60 s emulated (a second on the host).
export WIRESPAN_READY_TIMEOUT_SECS=240
# Emulation (~17x slower) widens the gap between a syscall handing bytes to
# a loopback peer and its exit, where the agent takes its timestamp.
export WIRESPAN_CLOCK_SLACK_MS=50
say() {{ echo "{marker}$*"; }}
now() {{ date +%s.%N; }}
since() {{ awk -v a="$1" -v b="$(now)" 'BEGIN {{ printf "%.1f", b - a }}'; }}
say "kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {{ print int($2 / 1024) }}' /proc/meminfo) MiB"
: > results
rc=0

# How the agent starts on this kernel: strategy, warnings, or why it cannot.
t0=$(now)
"$WIRESPAN_BIN" --print off >/dev/null 2>agent-start.log &
pid=$!
ready=no
exited=no
for _ in $(seq {probe_polls}); do
    if grep -q 'wirespan: ready' agent-start.log; then ready=yes; break; fi
    kill -0 "$pid" 2>/dev/null || {{ exited=yes; break; }}
    sleep 0.5
done
kill -INT "$pid" 2>/dev/null
wait "$pid"
agent_rc=$?
if [ "$ready" = yes ]; then
    echo ready > agent-start.status
    say "agent ready after $(since "$t0")s (exit $agent_rc after SIGINT)"
    grep -E '] kernel |socket classification|programs attached|WARN|ERROR' agent-start.log \
        | sed "s/^/{marker}agent: /"
else
    echo "not-ready $agent_rc" > agent-start.status
    if [ "$exited" = yes ]; then
        say "agent exited (code $agent_rc) before it was ready; its stderr:"
    else
        say "agent did not get ready within {probe_secs}s (exit $agent_rc); its stderr:"
    fi
    cat agent-start.log
    rc=1
fi

run_test() {{
    local label=$1 exe=$2 name=$3 out t verdict code
    out="out/${{label//::/__}}.out"
    t=$(now)
    say "test $label ..."
    "$exe" --exact "$name" --test-threads=1 >"$out" 2>&1
    code=$?
    if [ "$code" -eq 0 ] && grep -q 'test result: ok. 1 passed' "$out"; then
        verdict=ok
    else
        verdict=FAILED
        rc=1
        cat "$out"
    fi
    echo "$label $verdict $(since "$t")" >> results
    say "test $label $verdict ($(since "$t")s)"
}}

if [ "$ready" = yes ]; then
{runs}else
    say "tests skipped: the agent does not start on this kernel"
fi
sync
echo "$rc" > exit-code
sync
say "done (exit $rc)"
"#,
        job = q(job),
        bin = q(env.agent_bin),
        python = q(env.otlp_python),
        span_timeout = env.span_timeout_secs,
        marker = GUEST_MARKER,
        probe_polls = PROBE_READY_SECS * 2,
        probe_secs = PROBE_READY_SECS,
    );
    let path = job.join("run.sh");
    fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// What a finished (or dead) guest left behind.
pub struct Results {
    /// `None` when the job script never finished.
    pub exit_code: Option<i32>,
    /// `(label, ok, seconds)` per test that ran.
    pub tests: Vec<(String, bool, f64)>,
    pub agent_ready: bool,
    /// The agent's `socket classification: ...` line.
    pub strategy: Option<String>,
    /// What the agent found in the kernel (its `kernel <release>: BTF ...`
    /// line) and how many programs it attached.
    pub features: Vec<String>,
    /// The agent's warnings at start (features this kernel lacks).
    pub warnings: Vec<String>,
    pub agent_log: String,
}

pub fn read_results(job: &Path) -> Results {
    let read = |name: &str| fs::read_to_string(job.join(name)).unwrap_or_default();
    let agent_log = read("agent-start.log");
    let tests = read("results")
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let label = f.next()?.to_string();
            let ok = f.next()? == "ok";
            let secs = f.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
            Some((label, ok, secs))
        })
        .collect();
    Results {
        exit_code: read("exit-code").trim().parse().ok(),
        tests,
        agent_ready: read("agent-start.status").trim() == "ready",
        strategy: agent_log
            .lines()
            .find_map(|l| l.split_once("socket classification:"))
            .map(|(_, s)| s.trim().to_string()),
        features: features(&agent_log),
        warnings: agent_log
            .lines()
            .filter(|l| l.contains("WARN"))
            .map(|l| l.trim().to_string())
            .collect(),
        agent_log,
    }
}

/// The agent's `kernel <release>: BTF yes, ...` findings and its
/// `N of M programs attached` line, without log prefixes.
fn features(agent_log: &str) -> Vec<String> {
    agent_log
        .lines()
        .filter_map(|l| {
            let msg = l.split_once("] ").map_or(l, |(_, m)| m).trim();
            if let Some(rest) = msg.strip_prefix("kernel ") {
                return rest.split_once(": ").map(|(_, f)| f.to_string());
            }
            msg.contains("programs attached").then(|| msg.to_string())
        })
        .collect()
}

/// The output file of test `label` in `job`.
pub fn test_output(job: &Path, label: &str) -> PathBuf {
    job.join("out")
        .join(format!("{}.out", label.replace("::", "__")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_agent_said_at_start() {
        let log = "[2026-11-21T10:12:08.090Z INFO  wirespan::run] kernel 5.10.0-32-amd64: \
                   BTF yes, ring buffer yes, sock_*_length tracepoints no\n\
                   [2026-11-21T10:12:12.635Z INFO  wirespan::loader] socket classification: \
                   file-table walk with BTF offsets\n\
                   [2026-11-21T10:12:12.637Z INFO  wirespan::loader] 25 of 25 programs attached\n\
                   wirespan: ready (tracing every process)\n";
        assert_eq!(
            features(log),
            [
                "BTF yes, ring buffer yes, sock_*_length tracepoints no",
                "25 of 25 programs attached"
            ]
        );
        let dir = std::env::temp_dir().join(format!("xtask-guest-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        fs::write(dir.join("agent-start.log"), log).expect("write");
        fs::write(dir.join("agent-start.status"), "ready\n").expect("write");
        fs::write(
            dir.join("results"),
            "servers::nginx ok 12.3\nattach::x FAILED 8.5\n",
        )
        .expect("write");
        fs::write(dir.join("exit-code"), "1\n").expect("write");
        let r = read_results(&dir);
        fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(r.exit_code, Some(1));
        assert!(r.agent_ready);
        assert_eq!(
            r.strategy.as_deref(),
            Some("file-table walk with BTF offsets")
        );
        assert_eq!(r.tests.len(), 2);
        assert!(r.tests[0].1 && !r.tests[1].1);
        assert_eq!(r.tests[0].2, 12.3);
    }
}
