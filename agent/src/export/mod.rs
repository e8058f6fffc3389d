//! Exporters see finished spans only. The printer writes text or OTLP/JSON
//! lines; OTLP network exporters plug in behind the same trait.

pub mod otlp;
pub mod text;

use crate::span::Span;

/// A sink for batches of finished spans.
pub trait Exporter: Send {
    /// Writes one batch. An error is logged by the caller and the batch is
    /// counted as dropped.
    fn export(&mut self, batch: &[Span]) -> anyhow::Result<()>;
    /// Pushes out anything buffered (called at shutdown).
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Writes each batch as one OTLP/JSON `ExportTraceServiceRequest` line.
pub struct JsonLines<W: std::io::Write + Send> {
    out: W,
}

impl<W: std::io::Write + Send> JsonLines<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: std::io::Write + Send> Exporter for JsonLines<W> {
    fn export(&mut self, batch: &[Span]) -> anyhow::Result<()> {
        let req = otlp::to_request(batch);
        serde_json::to_writer(&mut self.out, &req)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(())
    }
}
