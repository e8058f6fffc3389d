//! The demo's services: a small site, Python's http.server and nginx.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{Demo, SERVER_START_TIMEOUT, bail_if_interrupted, supervise};
use crate::util;

pub const NGINX: &str = "/usr/sbin/nginx";

/// Debian's python3 when present (unmodified system software), else PATH's.
pub fn python3() -> Result<PathBuf> {
    let system = Path::new("/usr/bin/python3");
    if system.is_file() {
        return Ok(system.to_path_buf());
    }
    if util::succeeds("python3", &["--version"]) {
        return Ok(PathBuf::from("python3"));
    }
    bail!("python3 not found")
}

/// A port that was free a moment ago on 127.0.0.1 (the kernel picked it).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr().context("local_addr")?.port())
}

impl Demo {
    pub(super) fn write_site(&self) -> Result<()> {
        let files: &[(&str, &str)] = &[
            (
                "www/index.html",
                "<!doctype html><title>wirespan demo</title><p>Served by Python http.server.</p>\n",
            ),
            ("www/hello.txt", "hello from python\n"),
            (
                "www/data.json",
                "{\"service\": \"python\", \"items\": [1, 2, 3]}\n",
            ),
            (
                "nginx-root/index.html",
                "<!doctype html><title>wirespan demo</title><p>Served by nginx.</p>\n",
            ),
        ];
        for (rel, content) in files {
            let path = self.dir.join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    fn log_file(&self, name: &str) -> Result<(fs::File, fs::File)> {
        let path = self.dir.join(name);
        let f = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let g = f.try_clone().context("cloning log file handle")?;
        Ok((f, g))
    }

    /// Spawns a server, records it for cleanup, and waits until it listens.
    fn start_server(
        &mut self,
        name: &'static str,
        mut cmd: Command,
        port: u16,
        log: &str,
    ) -> Result<u32> {
        let (out, err) = self.log_file(log)?;
        supervise(&mut cmd, libc::SIGKILL);
        cmd.stdout(out).stderr(err);
        println!("    $ {}", util::render(&cmd));
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let pid = child.id();
        self.servers.push((name, child));
        let child = &mut self.servers.last_mut().context("server list")?.1;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            bail_if_interrupted()?;
            if let Some(st) = child.try_wait().context("waiting for server")? {
                let log_text = fs::read_to_string(self.dir.join(log)).unwrap_or_default();
                bail!("{name} exited at start ({st}); its log:\n{log_text}");
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                let log_text = fs::read_to_string(self.dir.join(log)).unwrap_or_default();
                bail!(
                    "{name} did not listen on {addr} within {SERVER_START_TIMEOUT:?}; its log:\n{log_text}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub(super) fn start_python(&mut self, python: &Path, port: u16) -> Result<u32> {
        let www = self.dir.join("www");
        let mut cmd = Command::new(python);
        cmd.current_dir(&www)
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .args(["--protocol", "HTTP/1.1", "--directory"])
            .arg(&www)
            .arg(port.to_string());
        self.start_server("python3 http.server", cmd, port, "python.log")
    }

    pub(super) fn start_nginx(&mut self, port: u16, upstream: u16) -> Result<u32> {
        let d = self.dir.display();
        let conf = format!(
            r#"# wirespan demo: one process, everything under {d}
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log notice;
events {{ worker_connections 64; }}
http {{
    access_log {d}/nginx-access.log;
    client_body_temp_path {d}/nginx-tmp/body;
    proxy_temp_path {d}/nginx-tmp/proxy;
    fastcgi_temp_path {d}/nginx-tmp/fastcgi;
    uwsgi_temp_path {d}/nginx-tmp/uwsgi;
    scgi_temp_path {d}/nginx-tmp/scgi;
    types {{ text/html html; text/plain txt; application/json json; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {d}/nginx-root;
        location / {{ }}
        location /api/ {{
            proxy_pass http://127.0.0.1:{upstream}/;
            proxy_http_version 1.1;
        }}
    }}
}}
"#
        );
        let conf_path = self.dir.join("nginx.conf");
        fs::create_dir_all(self.dir.join("nginx-tmp")).context("creating nginx temp dir")?;
        fs::write(&conf_path, conf).context("writing nginx.conf")?;
        let mut cmd = Command::new(NGINX);
        cmd.arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(self.dir.join("nginx-error.log"));
        self.start_server("nginx", cmd, port, "nginx.log")
    }
}
