//! The load: nginx serving a small static file, driven by wrk with
//! keep-alive for a fixed number of requests.

use std::{
    fs,
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    cgroup::Cgroup,
    procs::{self, Guard},
};
use crate::util;

pub const NGINX: &str = "/usr/sbin/nginx";

/// The static file nginx serves (about the size of a small JSON answer).
pub const BODY: &str = concat!(
    "{\"service\":\"wirespan-bench\",\"items\":[",
    "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,",
    "31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50],",
    "\"text\":\"lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod ",
    "tempor incididunt ut labore et dolore magna aliqua\"}\n"
);

/// Stops each wrk thread after its share of responses and says so on
/// stdout; xtask then sends wrk SIGINT, which ends its main thread's sleep
/// (`-d`) so it prints its summary at once. A run thus makes a fixed number
/// of requests (plus at most one in flight per other connection of the
/// thread, which nginx still serves).
const WRK_LUA: &str = r#"-- wirespan bench: stop after a fixed number of responses per thread
local limit = 0
local done = 0
function init(args)
  limit = tonumber(args[1])
end
function response(status, headers, body)
  done = done + 1
  if done == limit then
    io.stdout:write("wirespan-bench: thread done\n")
    io.stdout:flush()
    wrk.thread:stop()
  end
end
"#;

/// What the Lua script prints when a thread has made its share.
const THREAD_DONE: &str = "wirespan-bench: thread done";

/// A certificate and its key, for nginx to listen with TLS.
pub struct Tls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// Connections nginx accepts at once: room for the 10,000 of the scaling
/// scenario, plus the bench's own. Its fd limit is raised to match
/// (`worker_rlimit_nofile`; nginx runs as root, so it may).
pub const NGINX_CONNECTIONS: u32 = 12_000;

/// Size of `/big.bin`, the `bodies` scenario's response.
pub const BIG_BODY_BYTES: usize = 1 << 20;

fn big_body() -> Vec<u8> {
    (0..BIG_BODY_BYTES).map(|i| (i % 251) as u8).collect()
}

/// `program`, pinned to `cpus` (`taskset -c LIST program`: taskset execs
/// it, so the pid is the program's) when given.
pub fn pinned(cpus: Option<&str>, program: &str) -> Command {
    match cpus {
        Some(list) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", list, program]);
            cmd
        }
        None => Command::new(program),
    }
}

/// Starts nginx (one process: `master_process off; daemon off;`, access
/// log off) on `port`, serving [`BODY`] as `/bench.json`, over TLS when
/// `tls` is given, pinned to `cpus` when given. Returns its pid.
pub fn start_nginx(
    guard: &mut Guard,
    port: u16,
    tls: Option<&Tls>,
    cpus: Option<&str>,
) -> Result<u32> {
    let dir = guard.dir.clone();
    start_nginx_in(guard, &dir, port, tls, cpus, None, None)
}

/// [`start_nginx`] with its files under `dir` (a second nginx next to the
/// first), born in `cgroup` when given, listening on `also_on` too.
pub fn start_nginx_in(
    guard: &mut Guard,
    dir: &Path,
    port: u16,
    tls: Option<&Tls>,
    cpus: Option<&str>,
    cgroup: Option<&Cgroup>,
    also_on: Option<std::net::Ipv4Addr>,
) -> Result<u32> {
    let d = dir.display().to_string();
    let root = dir.join("www");
    fs::create_dir_all(&root).context("creating the nginx root")?;
    fs::write(root.join("bench.json"), BODY).context("writing bench.json")?;
    fs::write(root.join("big.bin"), big_body()).context("writing big.bin")?;
    fs::create_dir_all(dir.join("nginx-tmp")).context("creating nginx temp dir")?;
    let (listen, keepalive_requests) = match tls {
        None => (format!("listen 127.0.0.1:{port};"), 10_000_000),
        Some(t) => (
            format!(
                "listen 127.0.0.1:{port} ssl;\n        ssl_certificate {};\n        \
                 ssl_certificate_key {};",
                t.cert.display(),
                t.key.display()
            ),
            100_000,
        ),
    };
    let listen = match also_on {
        Some(addr) => format!("{listen}\n        listen {addr}:{port};"),
        None => listen,
    };
    let nofile = NGINX_CONNECTIONS * 2 + 100;
    let conf = format!(
        r#"# wirespan bench: one process, everything under {d}
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections {NGINX_CONNECTIONS}; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx-tmp/body;
    proxy_temp_path {d}/nginx-tmp/proxy;
    fastcgi_temp_path {d}/nginx-tmp/fastcgi;
    uwsgi_temp_path {d}/nginx-tmp/uwsgi;
    scgi_temp_path {d}/nginx-tmp/scgi;
    keepalive_requests {keepalive_requests};
    keepalive_timeout 300s;
    types {{ application/json json; }}
    default_type application/octet-stream;
    server {{
        {listen}
        root {d}/www;
    }}
}}
"#
    );
    let conf_path = dir.join("nginx.conf");
    fs::write(&conf_path, conf).context("writing nginx.conf")?;
    let log = fs::File::create(dir.join("nginx.log")).context("nginx log")?;
    let mut cmd = pinned(cpus, NGINX);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .stdout(log.try_clone().context("dup log")?)
        .stderr(log);
    if let Some(cg) = cgroup {
        cg.place(&mut cmd);
    }
    let pid = guard.spawn("nginx", cmd, libc::SIGTERM)?;
    let started = procs::wait_listening(guard.child(pid)?, "nginx", port, Duration::from_secs(15));
    if let Err(e) = started {
        bail!(
            "{e:#}; nginx log:\n{}{}",
            procs::read_log(&dir.join("nginx.log")),
            procs::read_log(&dir.join("nginx-error.log"))
        );
    }
    Ok(pid)
}

/// What one wrk run measured.
#[derive(Debug, Clone)]
pub struct WrkRun {
    /// Responses wrk completed.
    pub requests: u64,
    /// wrk's own run time.
    pub seconds: f64,
    /// wrk's Requests/sec.
    pub rps: f64,
    pub non_2xx: u64,
    pub socket_errors: String,
    /// Wall-clock time of the whole wrk process.
    pub wall: Duration,
    /// nginx's CPU seconds during the run.
    pub nginx_cpu: f64,
}

/// Load shape for wrk.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub requests: u64,
    pub threads: u32,
    pub connections: u32,
    /// wrk's own duration bound (`-d`): the run stops then even if short.
    pub max_duration: Duration,
}

/// Runs wrk against nginx for `load.requests` requests (rounded up to a
/// multiple of the threads).
pub fn run_wrk(guard: &Guard, nginx_pid: u32, port: u16, load: &Load) -> Result<WrkRun> {
    let script = guard.path("stop-after.lua");
    fs::write(&script, WRK_LUA).context("writing the wrk script")?;
    let per_thread = load.requests.div_ceil(u64::from(load.threads));
    let mut cmd = Command::new("wrk");
    cmd.arg("-t")
        .arg(load.threads.to_string())
        .arg("-c")
        .arg(load.connections.to_string())
        .arg("-d")
        .arg(format!("{}s", load.max_duration.as_secs().max(1)))
        .arg("-s")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/bench.json"))
        .arg("--")
        .arg(per_thread.to_string())
        .stdin(Stdio::null());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    println!("    $ {}", util::render(&cmd));
    let cpu_before = procs::cpu_seconds(nginx_pid).unwrap_or(0.0);
    let started = Instant::now();
    let mut child = KillOnDrop(
        cmd.spawn()
            .context("cannot run wrk (run `cargo xtask setup`)")?,
    );
    let pid = child.0.id();
    let stdout = child.0.stdout.take().context("wrk stdout")?;
    let stderr = child.0.stderr.take().context("wrk stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    // Every thread done: SIGINT (by pid, to our own unreaped child) ends
    // wrk's sleep, and it prints its summary.
    let mut text = String::new();
    let mut done = 0;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.trim() == THREAD_DONE {
            done += 1;
            if done == load.threads {
                util::signal(pid, libc::SIGINT)?;
            }
            continue;
        }
        text.push_str(&line);
        text.push('\n');
    }
    let status = child.0.wait().context("waiting for wrk")?;
    let wall = started.elapsed();
    let nginx_cpu = procs::cpu_seconds(nginx_pid).unwrap_or(0.0) - cpu_before;
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        bail!("wrk failed ({status}):\n{text}{err}");
    }
    let mut run =
        parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}{err}"))?;
    if done < load.threads {
        bail!(
            "wrk stopped after {:.0} s (its -d bound) before making {} requests:\n{text}",
            run.seconds,
            load.requests
        );
    }
    run.wall = wall;
    run.nginx_cpu = nginx_cpu;
    Ok(run)
}

/// A child that is killed (by its pid, std's `Child::kill`) and reaped when
/// dropped before it exited: wrk on an early return.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// `1.50s`, `500.00ms`, `1.20m`, `10us` -> seconds.
pub fn parse_duration(s: &str) -> Option<f64> {
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

pub fn parse_wrk(out: &str) -> Result<WrkRun> {
    let mut requests = None;
    let mut seconds = None;
    let mut rps = None;
    let mut non_2xx = 0;
    let mut socket_errors = String::new();
    for line in out.lines().map(str::trim) {
        // "100000 requests in 1.50s, 80.00MB read"
        if let Some((n, rest)) = line.split_once(" requests in ") {
            requests = n.trim().parse::<u64>().ok();
            seconds = rest
                .split(',')
                .next()
                .and_then(|d| parse_duration(d.trim()));
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            socket_errors = v.trim().to_string();
        }
    }
    Ok(WrkRun {
        requests: requests.context("no `N requests in T` line")?,
        seconds: seconds.context("no run time")?,
        rps: rps.context("no Requests/sec line")?,
        non_2xx,
        socket_errors,
        wall: Duration::ZERO,
        nginx_cpu: 0.0,
    })
}

/// Checks the prerequisites the load needs.
pub fn check_tools() -> Result<()> {
    if !Path::new(NGINX).is_file() {
        bail!("{NGINX} not found: run `cargo xtask setup` (it installs nginx-light)");
    }
    if !util::succeeds("sh", &["-c", "command -v wrk"]) {
        bail!("wrk not found: run `cargo xtask setup` (it installs wrk)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let out = "Running 1m test @ http://127.0.0.1:1/bench.json\n  \
            1 threads and 8 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    \
            Latency   120.00us   30.00us   2.00ms   90.00%\n    Req/Sec    40.00k     1.00k   42.00k    70.00%\n  \
            100000 requests in 2.50s, 40.00MB read\n  Socket errors: connect 0, read 1, write 0, timeout 0\n\
            Requests/sec:  40000.00\nTransfer/sec:     16.00MB\n";
        let run = parse_wrk(out).unwrap();
        assert_eq!(run.requests, 100_000);
        assert!((run.seconds - 2.5).abs() < 1e-9);
        assert!((run.rps - 40_000.0).abs() < 1e-9);
        assert_eq!(run.non_2xx, 0);
        assert_eq!(run.socket_errors, "connect 0, read 1, write 0, timeout 0");
        assert_eq!(parse_duration("500.00ms"), Some(0.5));
        assert_eq!(parse_duration("1.00m"), Some(60.0));
    }
}
