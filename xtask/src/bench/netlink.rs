//! A network namespace joined to the host by a veth pair whose host end
//! sends at a fixed rate (a `tbf` qdisc): a client in the namespace reaches
//! a server on the host as if over a real link, so that responses take
//! milliseconds rather than loopback's microseconds. Made with `ip` and
//! `tc`; removed (namespace and veth pair with it) when dropped.

use std::{net::Ipv4Addr, process::Command};

use anyhow::{Context, Result, bail};

#[derive(Debug)]
pub struct Link {
    /// The namespace's name, for `ip netns exec`.
    pub netns: String,
    /// The host end's address: what a server on the host listens on.
    pub host: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Link {
    /// A namespace and a link at `rate` (a tc rate, e.g. `1gbit`) from the
    /// host to it. Names carry the bench's pid, so parallel benches (and a
    /// leftover of a killed one) do not collide.
    pub fn create(rate: &str) -> Result<Self> {
        let id = std::process::id() % 100_000;
        let link = Self {
            netns: format!("wsbench{id}"),
            host: Ipv4Addr::new(10, 211, 0, 1),
        };
        let (host_if, ns_if) = (format!("wsbh{id}"), format!("wsbn{id}"));
        // A leftover of a killed run with the same pid goes first.
        let _ = ip(&["netns", "del", &link.netns]);
        ip(&["netns", "add", &link.netns])?;
        // From here on, dropping `link` cleans up.
        ip(&[
            "link",
            "add",
            &host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
            "netns",
            &link.netns,
        ])?;
        ip(&["addr", "add", "10.211.0.1/30", "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        let ns = ["-n", link.netns.as_str()];
        ip(&[&ns[..], &["addr", "add", "10.211.0.2/30", "dev", &ns_if]].concat())?;
        ip(&[&ns[..], &["link", "set", &ns_if, "up"]].concat())?;
        ip(&[&ns[..], &["link", "set", "lo", "up"]].concat())?;
        run(
            "tc",
            &[
                "qdisc", "add", "dev", &host_if, "root", "tbf", "rate", rate, "burst", "256kb",
                "latency", "50ms",
            ],
        )?;
        Ok(link)
    }

    /// `program` run inside the namespace, pinned to `cpus` when given
    /// (`ip netns exec` and `taskset` exec it: the pid is the program's).
    pub fn command(&self, cpus: Option<&str>, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]);
        match cpus {
            Some(list) => cmd.args(["taskset", "-c", list, program]),
            None => cmd.arg(program),
        };
        cmd
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        if let Err(e) = ip(&["netns", "del", &self.netns]) {
            eprintln!("bench: removing network namespace {}: {e:#}", self.netns);
        }
    }
}
