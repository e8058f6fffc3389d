//! Human-readable span lines for the terminal.

use std::{fmt::Write as _, sync::Arc};

use super::{ExportError, Exporter, Health, printed};
use crate::{
    span::{AttrValue, Span, SpanKind, Status},
    stats::Stats,
};

pub struct TextLines<W: std::io::Write + Send> {
    out: W,
    line: String,
    stats: Arc<Stats>,
    health: Health,
}

impl<W: std::io::Write + Send> TextLines<W> {
    pub fn new(out: W, stats: Arc<Stats>) -> Self {
        Self {
            out,
            line: String::new(),
            stats,
            health: Health::new("the text printer"),
        }
    }

    fn write(&mut self, batch: &[Span]) -> Result<(), ExportError> {
        for span in batch {
            format_span(span, &mut self.line);
            self.line.push('\n');
            self.out.write_all(self.line.as_bytes())?;
        }
        self.out.flush()?;
        Ok(())
    }
}

/// `SERVER GET /users/{id} 200 1.234ms pid=12 service=python3 path=/users/7 peer=127.0.0.1:5000 trace=.. span=..`
pub fn format_span(span: &Span, line: &mut String) {
    line.clear();
    let kind = match span.kind {
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
    };
    let status = match span.attr("http.response.status_code") {
        Some(AttrValue::Int(code)) => code.to_string(),
        _ => "---".to_string(),
    };
    let ms = span.duration_ns() as f64 / 1e6;
    let _ = write!(
        line,
        "{kind} {} {status} {ms:.3}ms pid={} service={}",
        span.name, span.process.pid, span.process.service_name
    );
    if let Some(AttrValue::Str(p)) = span.attr("url.path") {
        let _ = write!(line, " path={p}");
    }
    if let (Some(a @ (AttrValue::Str(_) | AttrValue::Ip(_))), Some(AttrValue::Int(p))) = (
        span.attr("network.peer.address"),
        span.attr("network.peer.port"),
    ) {
        let _ = write!(line, " peer={a}:{p}");
    }
    if let Status::Error(msg) = &span.status {
        let _ = write!(line, " ERROR({msg})");
    }
    let _ = write!(
        line,
        " trace={} span={}",
        hex(&span.trace_id),
        hex(&span.span_id)
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl<W: std::io::Write + Send> Exporter for TextLines<W> {
    fn export(&mut self, batch: &[Span]) -> Result<(), ExportError> {
        printed(self.write(batch), batch, &self.stats, &mut self.health)
    }
}
