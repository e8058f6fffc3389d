//! Exporters see finished spans only. The printer writes text or OTLP/JSON
//! lines; the OTLP exporter sends them to a collector over gRPC or HTTP.

pub mod otlp;
pub mod otlp_encode;
pub mod otlp_exporter;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod retry;
pub mod text;

use std::{sync::Arc, time::Instant};

use log::warn;
use tokio::sync::watch;

use crate::{
    span::Span,
    stats::{Stats, add},
};

/// Why a batch was not exported. The exporter has already counted its
/// spans as dropped and logged what needed logging.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing spans: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding spans: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Failed(String),
    #[error("shutdown deadline passed")]
    Shutdown,
}

/// A sink for batches of finished spans, driven by one pipeline thread.
pub trait Exporter: Send {
    /// Writes one batch and counts the outcome in the stats.
    fn export(&mut self, batch: &[Span]) -> Result<(), ExportError>;
    /// Pushes out anything buffered (called at shutdown).
    fn flush(&mut self) -> Result<(), ExportError> {
        Ok(())
    }
}

/// One warning when an output starts failing and one when it recovers,
/// never one per span or batch.
#[derive(Debug)]
pub struct Health {
    what: String,
    failing: bool,
}

impl Health {
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            failing: false,
        }
    }

    pub fn failed(&mut self, reason: &dyn std::fmt::Display) {
        if !self.failing {
            warn!(
                "{} failing: {reason} (spans it drops are counted; no further warning until it recovers)",
                self.what
            );
            self.failing = true;
        }
    }

    pub fn ok(&mut self) {
        if self.failing {
            warn!("{} recovered", self.what);
            self.failing = false;
        }
    }

    pub fn is_failing(&self) -> bool {
        self.failing
    }
}

/// The instant by which pending spans must be flushed, set once the agent
/// is told to stop. Retries and requests give up when it passes.
#[derive(Clone, Debug)]
pub struct ShutdownDeadline(watch::Receiver<Option<Instant>>);

impl ShutdownDeadline {
    pub fn channel() -> (watch::Sender<Option<Instant>>, Self) {
        let (tx, rx) = watch::channel(None);
        (tx, Self(rx))
    }

    pub fn get(&self) -> Option<Instant> {
        *self.0.borrow()
    }

    pub fn passed(&self) -> bool {
        self.get().is_some_and(|d| Instant::now() >= d)
    }

    /// Resolves when the deadline is set and has passed; never if the
    /// agent is not stopping.
    pub async fn reached(&self) {
        let mut rx = self.0.clone();
        let deadline = match rx.wait_for(Option::is_some).await {
            Ok(d) => *d,
            Err(_) => None, // sender gone without a deadline: never
        };
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    }
}

/// Writes each batch as one OTLP/JSON `ExportTraceServiceRequest` line.
pub struct JsonLines<W: std::io::Write + Send> {
    out: W,
    stats: Arc<Stats>,
    health: Health,
}

impl<W: std::io::Write + Send> JsonLines<W> {
    pub fn new(out: W, stats: Arc<Stats>) -> Self {
        Self {
            out,
            stats,
            health: Health::new("the JSON printer"),
        }
    }

    fn write(&mut self, batch: &[Span]) -> Result<(), ExportError> {
        let req = otlp::to_request(batch);
        serde_json::to_writer(&mut self.out, &req)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(())
    }
}

impl<W: std::io::Write + Send> Exporter for JsonLines<W> {
    fn export(&mut self, batch: &[Span]) -> Result<(), ExportError> {
        printed(self.write(batch), batch, &self.stats, &mut self.health)
    }
}

/// Counts and reports a printer's batch.
pub(crate) fn printed(
    r: Result<(), ExportError>,
    batch: &[Span],
    stats: &Stats,
    health: &mut Health,
) -> Result<(), ExportError> {
    match &r {
        Ok(()) => {
            add(&stats.spans_printed, batch.len() as u64);
            health.ok();
        }
        Err(e) => {
            add(&stats.spans_dropped_print_error, batch.len() as u64);
            health.failed(e);
        }
    }
    r
}
