//! Self-metrics: `--metrics-addr` serves the agent's counters in the
//! Prometheus text format on `GET /metrics`, with `/healthz` and `/readyz`.
//!
//! Capture never waits on this: the counters are atomics that the hot path
//! bumps, and everything here (parsing requests, reading the kernel's map,
//! formatting) runs on its own thread with its own runtime, so a slow or
//! hostile scraper costs that thread only.

pub mod histogram;
mod process;
mod render;
mod server;

use std::{
    net::{SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering::Relaxed},
    },
};

use crate::{kernel_counters::KernelCounters, stats::Stats};

pub use render::render;

/// Where the agent is in its life, for `/readyz`.
#[derive(Debug, Default)]
pub struct Readiness(AtomicU8);

const STARTING: u8 = 0;
const READY: u8 = 1;
const STOPPING: u8 = 2;

impl Readiness {
    /// Programs are attached and capture runs.
    pub fn set_ready(&self) {
        self.0.store(READY, Relaxed);
    }

    /// Shutdown began: capture is ending, the process will exit.
    pub fn set_stopping(&self) {
        self.0.store(STOPPING, Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Relaxed) == READY
    }

    fn describe(&self) -> &'static str {
        match self.0.load(Relaxed) {
            STARTING => "starting",
            READY => "ready",
            _ => "stopping",
        }
    }
}

/// What a scrape reads.
pub struct Sources {
    pub stats: Arc<Stats>,
    pub kernel: Arc<KernelCounters>,
    pub readiness: Arc<Readiness>,
}

/// `--metrics-addr` could not be used: a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error(
    "--metrics-addr {addr}: cannot listen there ({source}); give a free ADDR:PORT, or port 0 for any free port"
)]
pub struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds the listener up front, so that a taken port is reported at start
/// rather than found out by the first scrape.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let bound = TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l));
    bound.map_err(|source| BindError { addr, source })
}

/// Starts serving on `listener` in a thread of its own; logs the address
/// (the real port when 0 was asked for) on stderr.
pub fn spawn(listener: TcpListener, sources: Sources) -> anyhow::Result<()> {
    use anyhow::Context;
    let local = listener
        .local_addr()
        .context("reading the metrics listener's address")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the metrics server's runtime")?;
    std::thread::Builder::new()
        .name("wirespan-metrics".into())
        .spawn(move || rt.block_on(server::serve(listener, Arc::new(sources))))
        .context("starting the metrics server's thread")?;
    eprintln!("wirespan: metrics on http://{local}/metrics");
    Ok(())
}
