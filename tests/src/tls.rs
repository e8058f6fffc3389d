//! HTTPS for the TLS tests: a self-signed certificate made at test time (no
//! network, nothing checked in), HTTPS servers started with
//! [`Server::start`], and curl over TLS.
//!
//! The certificate names `localhost` and `127.0.0.1` (subjectAltName), so
//! clients verify it properly against it as their only CA (`curl --cacert`,
//! Python's `ssl.create_default_context(cafile=...)`) when they connect to
//! `https://127.0.0.1:PORT`. Every HTTPS client here asks for HTTP/1.1 only
//! (`curl --http1.1`; no server offers h2 in ALPN anyway).
//!
//! Servers:
//! - [`py_server`]: `servers/py_tls_server.py`, py_server.py's routes and
//!   handler over `ssl.SSLContext.wrap_socket` (the system's libssl.so.3).
//!   [`py_dual_server`]: the same process serving plain HTTP on a second port.
//! - [`nginx`]: Debian's nginx with `listen ... ssl` (libssl.so.3);
//!   [`nginx_dual`] adds a plain listener in the same server block.
//! - [`node`]: `servers/node_tls_server.js` on node's `https` module (OpenSSL
//!   linked statically into the `node` binary, its `SSL_*` symbols exported).

use std::cell::Cell;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::clients::{self, CurlRun};
use crate::env;
use crate::servers::{self, Server};
use crate::span::{self, Span};

/// How long `openssl req` may take.
const OPENSSL_TIMEOUT: Duration = Duration::from_secs(60);

/// A self-signed certificate and its key (PEM) in a temp dir, removed on
/// drop. The certificate is its own CA.
pub struct Certs {
    _dir: TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    /// `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost
    /// -days 1` with subjectAltName `DNS:localhost,IP:127.0.0.1`. Panics
    /// with openssl's output if it fails.
    pub fn generate() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("wirespan-tls-")
            .tempdir()
            .expect("temp dir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let openssl = env::find_program("openssl").expect("openssl is installed");
        let mut cmd = Command::new(openssl);
        cmd.args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
            .args(["-subj", "/CN=localhost", "-days", "1"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert);
        let out = clients::run_with_timeout(&mut cmd, OPENSSL_TIMEOUT);
        assert!(
            out.status.success() && cert.is_file() && key.is_file(),
            "openssl req failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Certs {
            _dir: dir,
            cert,
            key,
        }
    }

    /// The certificate path as a string (for command lines).
    pub fn cert_arg(&self) -> String {
        self.cert.display().to_string()
    }
}

/// The `openssl` CLI (for [`Certs::generate`]) is installed.
pub fn require_openssl() -> bool {
    env::require_program("openssl")
}

/// `https://127.0.0.1:PORT` + `path`.
pub fn https_url(port: u16, path: &str) -> String {
    format!("https://127.0.0.1:{port}{path}")
}

/// `http://127.0.0.1:PORT` + `path`.
pub fn http_url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// curl with `--http1.1 --cacert CERT` before `args` (see [`clients::curl`]).
pub fn curl(certs: &Certs, args: &[&str]) -> CurlRun {
    let cacert = certs.cert_arg();
    let mut full = vec!["--http1.1", "--cacert", cacert.as_str()];
    full.extend_from_slice(args);
    clients::curl(&full)
}

/// One HTTPS request (see [`clients::curl_method`]): `GET` plain, `POST` with
/// a small form body, `HEAD` with `--head`, anything else with `--request`.
pub fn curl_method(certs: &Certs, method: &str, url: &str) -> CurlRun {
    match method {
        "GET" => curl(certs, &[url]),
        "POST" => curl(certs, &["--data-binary", "field=value", url]),
        "HEAD" => curl(certs, &["--head", url]),
        other => curl(certs, &["--request", other, url]),
    }
}

/// `servers/py_tls_server.py` over TLS only.
pub fn py_server(certs: &Certs) -> Server {
    let (cert, key) = (certs.cert.clone(), certs.key.clone());
    Server::start("python-https", move |port, _dir| {
        let mut cmd = Command::new(env::python());
        cmd.arg(env::server_script("py_tls_server.py"))
            .arg(port.to_string())
            .arg(&cert)
            .arg(&key);
        cmd
    })
}

/// `servers/py_tls_server.py` with TLS on the server's port and plain HTTP
/// on the returned second port, in one process.
pub fn py_dual_server(certs: &Certs) -> (Server, u16) {
    let (cert, key) = (certs.cert.clone(), certs.key.clone());
    let plain = Cell::new(0u16);
    let server = Server::start("python-http-and-https", |port, _dir| {
        plain.set(other_free_port(port));
        let mut cmd = Command::new(env::python());
        cmd.arg(env::server_script("py_tls_server.py"))
            .arg(port.to_string())
            .arg(&cert)
            .arg(&key)
            .arg(plain.get().to_string());
        cmd
    });
    let plain = plain.get();
    // The script binds the plain port before the TLS one; make sure anyway.
    wait_listening(&server, plain);
    (server, plain)
}

/// `servers/node_tls_server.js` on node's `https` module.
pub fn node(certs: &Certs) -> Server {
    let node = env::find_program("node").expect("node is installed");
    let (cert, key) = (certs.cert.clone(), certs.key.clone());
    Server::start("node-https", move |port, _dir| {
        let mut cmd = Command::new(&node);
        cmd.arg(env::server_script("node_tls_server.js"))
            .arg(port.to_string())
            .arg(&cert)
            .arg(&key);
        cmd
    })
}

/// nginx (one process, `daemon off; master_process off;`) serving HTTPS on
/// its port, with the routes of [`Server::nginx`].
pub fn nginx(certs: &Certs) -> Server {
    let nginx = env::find_program("nginx").expect("nginx is installed");
    let (cert, key) = (certs.cert.clone(), certs.key.clone());
    Server::start("nginx-https", move |port, dir| {
        nginx_command(&nginx, dir, &nginx_conf(dir, port, None, &cert, &key))
    })
}

/// [`nginx`] with a plain HTTP listener on the returned second port in the
/// same server block (same worker process, same routes).
pub fn nginx_dual(certs: &Certs) -> (Server, u16) {
    let nginx = env::find_program("nginx").expect("nginx is installed");
    let (cert, key) = (certs.cert.clone(), certs.key.clone());
    let plain = Cell::new(0u16);
    let server = Server::start("nginx-http-and-https", |port, dir| {
        plain.set(other_free_port(port));
        nginx_command(
            &nginx,
            dir,
            &nginx_conf(dir, port, Some(plain.get()), &cert, &key),
        )
    });
    let plain = plain.get();
    wait_listening(&server, plain);
    (server, plain)
}

fn nginx_command(nginx: &Path, dir: &Path, conf_text: &str) -> Command {
    let conf = dir.join("nginx.conf");
    fs::write(&conf, conf_text).expect("write nginx.conf");
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"));
    cmd
}

fn nginx_conf(
    dir: &Path,
    tls_port: u16,
    plain_port: Option<u16>,
    cert: &Path,
    key: &Path,
) -> String {
    let d = dir.display();
    let plain_listen = plain_port
        .map(|p| format!("listen 127.0.0.1:{p};"))
        .unwrap_or_default();
    let (cert, key) = (cert.display(), key.display());
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
        listen 127.0.0.1:{tls_port} ssl;
        {plain_listen}
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location ~ ^/status/404(/|$) {{ return 404 "status 404 $uri\n"; }}
        location ~ ^/status/201(/|$) {{ return 201 "status 201 $uri\n"; }}
        location ~ ^/status/500(/|$) {{ return 500 "status 500 $uri\n"; }}
        location / {{ return 200 "status 200 $uri\n"; }}
    }}
}}
"#
    )
}

/// A free port other than `taken`.
fn other_free_port(taken: u16) -> u16 {
    loop {
        let p = servers::free_port();
        if p != taken {
            return p;
        }
    }
}

/// Polls until `port` accepts a TCP connection (the server's second
/// listener); panics with the server's log after [`servers::START_TIMEOUT`].
fn wait_listening(server: &Server, port: u16) {
    let deadline = Instant::now() + servers::START_TIMEOUT;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} pid {}: second listener {addr} not accepting after {:?}; output:\n{}",
            server.name,
            server.pid(),
            servers::START_TIMEOUT,
            server.logs()
        );
        // A poll interval while the server starts, not a wait for an effect.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every span has `url.scheme` = `scheme`; panics listing those that do not.
pub fn assert_scheme(what: &str, spans: &[Span], scheme: &str) {
    let wrong: Vec<Span> = spans
        .iter()
        .filter(|s| s.attr_str("url.scheme") != Some(scheme))
        .cloned()
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} span(s) without url.scheme={scheme:?}:\n{}",
        wrong.len(),
        spans.len(),
        span::describe(&wrong)
    );
}

/// An unsigned counter of the agent's exit `counters` line; panics if it is
/// missing.
pub fn counter(counters: &serde_json::Map<String, serde_json::Value>, name: &str) -> u64 {
    counters
        .get(name)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no counter {name:?} in the agent's counters: {counters:?}"))
}
