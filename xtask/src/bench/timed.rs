//! Timed wrk runs (`-d`, `--latency`) and the small measurements around
//! them that several scenarios share: latency percentiles, medians, the
//! load average, other agents on the machine, and the agent's CPU time once
//! it has drained its ring buffer.

use std::{
    fs,
    io::Read,
    process::Stdio,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    cgroup::Cgroup,
    load::{self, WrkRun},
    netlink::Link,
    procs::{self, Guard},
    report::fmt,
};
use crate::util;

/// wrk stops by itself after `-d`; if it has not exited this much later, it
/// is stopped and the run fails.
const WRK_SLACK: Duration = Duration::from_secs(30);

/// After a load, the agent's CPU time is read once it stops growing (it
/// may still be draining its ring buffer), or after this long.
pub const SETTLE_MAX: Duration = Duration::from_secs(10);

/// The latency percentiles wrk prints with `--latency`, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

impl Latency {
    pub fn p50_ms(&self) -> Option<f64> {
        self.p50.map(|s| s * 1e3)
    }

    pub fn p99_ms(&self) -> Option<f64> {
        self.p99.map(|s| s * 1e3)
    }

    /// `p50 0.123 ms, p99 4.567 ms` (`n/a` for a missing one).
    pub fn text(&self) -> String {
        let ms = |v: Option<f64>| fmt(v, |v| format!("{v:.3} ms"));
        format!("p50 {}, p99 {}", ms(self.p50_ms()), ms(self.p99_ms()))
    }
}

/// How wrk drives the server.
#[derive(Debug, Clone, Copy)]
pub struct Wrk<'a> {
    pub threads: u32,
    pub connections: u32,
    /// `taskset -c` CPU list for wrk, if pinned.
    pub cpus: Option<&'a str>,
    /// The cgroup wrk is born in, if any.
    pub cgroup: Option<&'a Cgroup>,
    /// The network namespace wrk runs in, if any.
    pub link: Option<&'a Link>,
}

/// wrk for `length` against `url` (`--latency`): its figures and nginx's
/// CPU seconds meanwhile. wrk is started through the guard (stopped by pid
/// on error or Ctrl-C) and bounded by `length` + [`WRK_SLACK`].
pub fn wrk_for(
    guard: &mut Guard,
    nginx_pid: u32,
    url: &str,
    shape: &Wrk,
    length: Duration,
) -> Result<(WrkRun, Latency)> {
    let mut cmd = match shape.link {
        Some(link) => link.command(shape.cpus, "wrk"),
        None => load::pinned(shape.cpus, "wrk"),
    };
    cmd.arg("-t")
        .arg(shape.threads.to_string())
        .arg("-c")
        .arg(shape.connections.to_string())
        .arg("-d")
        .arg(format!("{}s", length.as_secs().max(1)))
        .arg("--latency")
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cg) = shape.cgroup {
        cg.place(&mut cmd);
    }
    let cpu_before = procs::cpu_seconds(nginx_pid).unwrap_or(0.0);
    let started = Instant::now();
    // SIGINT: wrk prints what it has and exits.
    let pid = guard.spawn("wrk", cmd, libc::SIGINT)?;
    let child = guard.child(pid)?;
    let out = read_all(child.stdout.take().context("wrk stdout")?);
    let err = read_all(child.stderr.take().context("wrk stderr")?);
    let bound = started + length + WRK_SLACK;
    let exited = loop {
        procs::bail_if_interrupted()?;
        if let Some(st) = util::wait_timeout(guard.child(pid)?, Duration::from_millis(200))? {
            break Some(st);
        }
        if Instant::now() >= bound {
            break None;
        }
    };
    let status = guard.stop(pid, Duration::from_secs(5))?;
    let wall = started.elapsed();
    let nginx_cpu = procs::cpu_seconds(nginx_pid).unwrap_or(0.0) - cpu_before;
    let text = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if exited.is_none() {
        bail!(
            "wrk did not exit within {:?}:\n{text}{err}",
            length + WRK_SLACK
        );
    }
    if !status.success() {
        bail!("wrk failed ({status}):\n{text}{err}");
    }
    let mut run =
        load::parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}{err}"))?;
    run.wall = wall;
    run.nginx_cpu = nginx_cpu;
    Ok((run, parse_latency(&text)))
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// The agent's CPU seconds once they stop growing after a load (it may
/// still be draining its ring buffer and export queue), or after `max`.
pub fn cpu_when_settled(pid: u32, max: Duration) -> f64 {
    let until = Instant::now() + max;
    let mut cpu = procs::cpu_seconds(pid).unwrap_or(0.0);
    while Instant::now() < until {
        thread::sleep(Duration::from_millis(300));
        let now = procs::cpu_seconds(pid).unwrap_or(cpu);
        let grew = now - cpu;
        cpu = now;
        if grew < 0.02 {
            break;
        }
    }
    cpu
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `pid cmdline` of the processes named `wirespan` (comm), except `ours`.
pub fn other_agents(ours: &[u32]) -> Vec<String> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<(u32, String)> = dir
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            if ours.contains(&pid) {
                return None;
            }
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            if comm.trim() != "wirespan" {
                return None;
            }
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            Some((pid, format!("{pid} {}", cmdline.trim())))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, s)| s).collect()
}

/// The first three fields of /proc/loadavg.
pub fn load_average() -> Option<String> {
    let s = fs::read_to_string("/proc/loadavg").ok()?;
    Some(s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// p50 and p99 from wrk's `Latency Distribution` block.
fn parse_latency(out: &str) -> Latency {
    let mut lat = Latency::default();
    let mut in_block = false;
    for line in out.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            in_block = true;
            continue;
        }
        if !in_block {
            continue;
        }
        let Some((pct, value)) = line.split_once(char::is_whitespace) else {
            break;
        };
        match pct {
            "50%" => lat.p50 = load::parse_duration(value.trim()),
            "99%" => lat.p99 = load::parse_duration(value.trim()),
            p if p.ends_with('%') => {}
            _ => break,
        }
    }
    lat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_distribution_is_read() {
        let out = "Running 10s test @ https://127.0.0.1:1/bench.json\n  \
            1 threads and 8 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    \
            Latency   700.00us   30.00us   2.00ms   90.00%\n    Req/Sec    11.00k     1.00k   12.00k    70.00%\n  \
            Latency Distribution\n     50%  635.00us\n     75%  712.35us\n     90%  800.00us\n     \
            99%    1.20ms\n  110000 requests in 10.00s, 40.00MB read\nRequests/sec:  11000.00\n";
        let lat = parse_latency(out);
        assert!((lat.p50.unwrap() - 635e-6).abs() < 1e-12);
        assert!((lat.p99.unwrap() - 1.2e-3).abs() < 1e-12);
        assert_eq!(load::parse_wrk(out).unwrap().requests, 110_000);
        assert_eq!(parse_latency("no distribution"), Latency::default());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
