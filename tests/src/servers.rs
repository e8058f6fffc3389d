//! Real servers on 127.0.0.1, each on a free port, each stopped (by the pid
//! we spawned) when dropped.
//!
//! A server counts as started once a TCP connect to its port succeeds; the
//! harness polls for that with a short interval and an overall deadline.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::env;

/// How long a server may take to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Interval between connect attempts while a server starts (a poll interval,
/// not a wait for an effect).
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running server process.
pub struct Server {
    pub name: String,
    pub port: u16,
    child: Child,
    dir: TempDir,
}

/// A port that was free a moment ago (bind to port 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

impl Server {
    /// `tests/servers/py_server.py`: Python `ThreadingHTTPServer`.
    pub fn python() -> Server {
        Server::start("python-http", |port, _dir| {
            let mut cmd = Command::new(env::python());
            cmd.arg(env::server_script("py_server.py"))
                .arg(port.to_string());
            cmd
        })
    }

    /// [`Server::python`] with `envs` in its environment (e.g.
    /// `OTEL_SERVICE_NAME`, which the agent reads from /proc/PID/environ).
    pub fn python_with_env(envs: &[(&str, &str)]) -> Server {
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Server::start("python-http", move |port, _dir| {
            let mut cmd = Command::new(env::python());
            cmd.arg(env::server_script("py_server.py"))
                .arg(port.to_string())
                .envs(envs.iter().map(|(k, v)| (k, v)));
            cmd
        })
    }

    /// `tests/servers/echo_server.py`: a TCP echo server (not HTTP).
    pub fn echo() -> Server {
        Server::start("python-echo", |port, _dir| {
            let mut cmd = Command::new(env::python());
            cmd.arg(env::server_script("echo_server.py"))
                .arg(port.to_string());
            cmd
        })
    }

    /// `tests/servers/node_server.js` on node's `http` module.
    pub fn node() -> Server {
        let node = env::find_program("node").expect("node is installed");
        Server::start("node-http", move |port, _dir| {
            let mut cmd = Command::new(&node);
            cmd.arg(env::server_script("node_server.js"))
                .arg(port.to_string());
            cmd
        })
    }

    /// nginx in the foreground as a single process (`daemon off;
    /// master_process off;`), so the pid we spawn is the one serving.
    /// Routes: `/status/404/...` -> 404, `/status/201/...` -> 201,
    /// `/status/500/...` -> 500, anything else -> 200.
    pub fn nginx() -> Server {
        let nginx = env::find_program("nginx").expect("nginx is installed");
        Server::start("nginx", move |port, dir| {
            let conf = dir.join("nginx.conf");
            fs::write(&conf, nginx_conf(dir, port)).expect("write nginx.conf");
            let mut cmd = Command::new(&nginx);
            cmd.arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.join("error.log"));
            cmd
        })
    }

    /// redis-server with persistence off.
    pub fn redis() -> Server {
        let redis = env::find_program("redis-server").expect("redis-server is installed");
        Server::start("redis", move |port, dir| {
            let mut cmd = Command::new(&redis);
            cmd.args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--daemonize", "no"])
                .arg("--dir")
                .arg(dir);
            cmd
        })
    }

    /// Starts `make(port, dir)` on a free port and waits until it accepts
    /// connections. Retries with another port if the process dies early
    /// (another process may have taken the port in between).
    pub fn start(name: &str, make: impl Fn(u16, &Path) -> Command) -> Server {
        let mut last_failure = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix(&format!("wirespan-{name}-"))
                .tempdir()
                .expect("temp dir");
            let port = free_port();
            let mut cmd = make(port, dir.path());
            let log = fs::File::create(dir.path().join("output.log")).expect("log file");
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {name} ({cmd:?}): {e}"));
            let mut server = Server {
                name: name.to_string(),
                port,
                child,
                dir,
            };
            match server.wait_listening() {
                Ok(()) => {
                    eprintln!(
                        "[harness] {name} pid {} listening on 127.0.0.1:{port}",
                        server.pid()
                    );
                    return server;
                }
                Err(e) => last_failure = e,
            }
        }
        panic!("{name} did not start: {last_failure}");
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = self.addr();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited with {status} before listening on {addr}; output:\n{}",
                    self.name,
                    self.logs()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} not listening on {addr} after {START_TIMEOUT:?}; output:\n{}",
                    self.name,
                    self.logs()
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The server's combined stdout/stderr (and nginx's error log).
    pub fn logs(&self) -> String {
        let mut out = fs::read_to_string(self.dir.path().join("output.log")).unwrap_or_default();
        if let Ok(e) = fs::read_to_string(self.dir.path().join("error.log")) {
            out.push_str(&e);
        }
        out
    }

    /// File name of /proc/PID/exe: what `process.executable.name` should say.
    pub fn exe_name(&self) -> String {
        exe_name(self.pid())
    }

    /// Full path of /proc/PID/exe: what `--exe-path` globs match.
    pub fn exe_path(&self) -> PathBuf {
        fs::read_link(format!("/proc/{}/exe", self.pid())).expect("read /proc/PID/exe")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Kills exactly the process we spawned (std uses its pid).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// File name of /proc/PID/exe.
pub fn exe_name(pid: u32) -> String {
    fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

fn nginx_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 256;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 10000;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/status/404(/|$) {{ return 404 "status 404 $uri\n"; }}
        location ~ ^/status/201(/|$) {{ return 201 "status 201 $uri\n"; }}
        location ~ ^/status/500(/|$) {{ return 500 "status 500 $uri\n"; }}
        location / {{ return 200 "status 200 $uri\n"; }}
    }}
}}
"#
    )
}
