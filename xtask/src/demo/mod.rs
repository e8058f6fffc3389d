//! `cargo xtask demo`: show the product on real, unmodified services.
//!
//! Starts Python's `http.server` and nginx (proxying `/api/` to Python) on
//! loopback from a temp dir, starts the agent on their pids with the text
//! printer, sends real curl traffic, shows the spans as they arrive, and
//! stops everything it started, by pid, also on error or Ctrl-C.
//!
//! `services` starts the servers, `agent` runs the agent and watches its
//! output, `traffic` is the curl plan; this file holds the guard.

mod agent;
mod services;
mod traffic;

use std::{
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};

use crate::{
    build::{self, Profile},
    setup,
    util::{self, note, section},
};

use self::agent::Shared;

const READY_MARKER: &str = "wirespan: ready";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(15);
const SPANS_TIMEOUT: Duration = Duration::from_secs(30);
const AGENT_STOP_GRACE: Duration = Duration::from_secs(15);
const SERVER_STOP_GRACE: Duration = Duration::from_secs(5);

pub fn demo(agent: Option<PathBuf>) -> Result<()> {
    if !util::is_root() {
        bail!(
            "`cargo xtask demo` must run as root: the agent loads eBPF programs \
             (try `sudo -E env PATH=\"$PATH\" cargo xtask demo`)"
        );
    }
    let bin = match agent {
        Some(path) => fs::canonicalize(&path)
            .with_context(|| format!("agent binary {} not found", path.display()))?,
        None => {
            setup::setup()?;
            build::build(Profile::Release)?
        }
    };
    let python = services::python3()?;
    if !Path::new(services::NGINX).is_file() {
        bail!(
            "{} not found: run `cargo xtask setup` (it installs nginx-light)",
            services::NGINX
        );
    }
    if !util::succeeds("curl", &["--version"]) {
        bail!("curl not found: run `cargo xtask setup`");
    }

    // From here on, Ctrl-C is caught so that the guard can clean up.
    util::catch_interrupts();
    let mut demo = Demo::new()?;
    let result = demo.show(&bin, &python);
    section("demo: stopping everything it started");
    drop(demo);
    result
}

/// Puts a child in its own process group, so the terminal's Ctrl-C reaches
/// only xtask (which then stops children in order), and makes the kernel
/// send it `sig` if xtask dies without cleaning up.
fn supervise(cmd: &mut Command, sig: libc::c_int) {
    cmd.process_group(0).stdin(Stdio::null());
    // SAFETY: the closure calls only prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::c_ulong::try_from(sig).unwrap_or(9),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn bail_if_interrupted() -> Result<()> {
    if let Some(sig) = util::caught_signal() {
        bail!("interrupted (signal {sig})");
    }
    Ok(())
}

/// Everything the demo started; `Drop` stops it all and removes the temp dir.
struct Demo {
    dir: PathBuf,
    servers: Vec<(&'static str, Child)>,
    agent: Option<Child>,
    readers: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Demo {
    fn new() -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("wirespan-demo-{}-{nanos}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir,
            servers: Vec::new(),
            agent: None,
            readers: Vec::new(),
            shared: Arc::default(),
        })
    }

    fn show(&mut self, bin: &Path, python: &Path) -> Result<()> {
        section(&format!(
            "demo: starting services in {}",
            self.dir.display()
        ));
        self.write_site()?;
        let py_port = services::free_port()?;
        let py_pid = self.start_python(python, py_port)?;
        note(format!(
            "python3 -m http.server  pid {py_pid}  http://127.0.0.1:{py_port}/"
        ));
        let ng_port = services::free_port()?;
        let ng_pid = self.start_nginx(ng_port, py_port)?;
        note(format!(
            "nginx                   pid {ng_pid}  http://127.0.0.1:{ng_port}/  (/api/ -> python)"
        ));

        section("demo: starting the agent");
        self.start_agent(bin, &[py_pid, ng_pid])?;

        section("demo: sending traffic with curl (spans print as they arrive)");
        let requests = traffic::traffic(py_port, ng_port);
        let expected: usize = requests.iter().map(|r| r.spans).sum();
        for r in &requests {
            bail_if_interrupted()?;
            let codes = traffic::curl(&r.args)?;
            note(format!("curl  {:<52} -> {codes}", r.what));
        }

        section(&format!("demo: waiting for {expected} spans"));
        let all_arrived = self
            .shared
            .wait_for(SPANS_TIMEOUT, |o| o.spans() >= expected || o.stdout_closed)?;
        if !all_arrived {
            note(format!(
                "only {} of {expected} spans after {SPANS_TIMEOUT:?}; stopping the agent to flush",
                self.shared.lock().spans()
            ));
        }

        section("demo: stopping the agent (SIGINT)");
        let status = self.stop_agent()?;
        let out = self.shared.lock();
        note(format!(
            "{} spans: {} SERVER, {} CLIENT (expected {expected}); agent {status}",
            out.spans(),
            out.server_spans,
            out.client_spans
        ));
        if !status.success() {
            bail!(
                "the agent exited with {status}; its stderr:\n{}",
                out.stderr_tail()
            );
        }
        if out.spans() < expected {
            bail!(
                "the agent printed {} of the {expected} expected spans",
                out.spans()
            );
        }
        Ok(())
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.agent.is_some() {
            match self.stop_agent() {
                Ok(st) => note(format!("agent stopped ({st})")),
                Err(e) => eprintln!("    warning: stopping the agent: {e:#}"),
            }
        }
        for (name, child) in self.servers.iter_mut().rev() {
            let pid = child.id();
            match util::stop_child(child, libc::SIGTERM, SERVER_STOP_GRACE) {
                Ok(_) => note(format!("{name} (pid {pid}) stopped")),
                Err(e) => eprintln!("    warning: stopping {name} (pid {pid}): {e:#}"),
            }
        }
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => note(format!("removed {}", self.dir.display())),
            Err(e) => eprintln!("    warning: removing {}: {e}", self.dir.display()),
        }
    }
}
