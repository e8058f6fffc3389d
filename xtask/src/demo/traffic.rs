//! The demo's traffic: real curl requests and the spans each should yield.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::bail_if_interrupted;
use crate::util;

/// One curl invocation and the spans it should produce.
pub struct Request {
    pub what: String,
    pub args: Vec<String>,
    pub spans: usize,
}

pub fn traffic(py: u16, ng: u16) -> Vec<Request> {
    let py = format!("http://127.0.0.1:{py}");
    let ng = format!("http://127.0.0.1:{ng}");
    let req = |what: &str, args: &[&str], spans| Request {
        what: what.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        spans,
    };
    // Each request through nginx's /api/ makes three spans: nginx SERVER,
    // nginx CLIENT (to python) and python SERVER.
    vec![
        req("python  GET /", &[&format!("{py}/")], 1),
        req("python  GET /hello.txt", &[&format!("{py}/hello.txt")], 1),
        req(
            "python  GET /missing.txt (404)",
            &[&format!("{py}/missing.txt")],
            1,
        ),
        req(
            "python  HEAD /index.html",
            &["--head", &format!("{py}/index.html")],
            1,
        ),
        req(
            "python  POST /submit (501: http.server has no POST)",
            &["--data", "name=wirespan", &format!("{py}/submit")],
            1,
        ),
        req(
            "python  keep-alive: 3 requests, 1 connection",
            &[
                &format!("{py}/index.html"),
                &format!("{py}/hello.txt"),
                &format!("{py}/data.json"),
            ],
            3,
        ),
        req("nginx   GET / (static)", &[&format!("{ng}/")], 1),
        req(
            "nginx   GET /nope.html (404)",
            &[&format!("{ng}/nope.html")],
            1,
        ),
        req(
            "nginx   GET /api/hello.txt -> python",
            &[&format!("{ng}/api/hello.txt")],
            3,
        ),
        req(
            "nginx   GET /api/data.json -> python",
            &[&format!("{ng}/api/data.json")],
            3,
        ),
        req(
            "nginx   POST /api/submit -> python (501)",
            &["--data", "name=wirespan", &format!("{ng}/api/submit")],
            3,
        ),
        req(
            "nginx   keep-alive: / then /api/index.html",
            &[&format!("{ng}/"), &format!("{ng}/api/index.html")],
            4,
        ),
    ]
}

/// Runs curl (HTTP/1.1, bodies discarded) and returns the status codes.
pub fn curl(args: &[String]) -> Result<String> {
    let urls = args.iter().filter(|a| a.starts_with("http://")).count();
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--http1.1", "--max-time", "10"])
        .args(["--write-out", "%{http_code} "]);
    for _ in 0..urls {
        cmd.args(["--output", "/dev/null"]);
    }
    cmd.args(args).stdin(Stdio::null());
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{}`", util::render(&cmd)))?;
    if !out.status.success() {
        bail_if_interrupted()?;
        bail!(
            "`{}` failed ({}): {}",
            util::render(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_plan_counts_proxied_spans() {
        let plan = traffic(1, 2);
        assert_eq!(plan.len(), 12);
        assert_eq!(plan.iter().map(|r| r.spans).sum::<usize>(), 23);
    }
}
