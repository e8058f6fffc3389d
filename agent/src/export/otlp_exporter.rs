//! The OTLP exporter: one batch at a time, over gRPC or HTTP/protobuf,
//! retried per `retry`, with every span's fate counted.
//!
//! It owns a small tokio runtime (one worker, so connections stay serviced
//! between batches) and is driven from its pipeline thread, so nothing it
//! does can stall capture.

use std::{sync::Arc, time::Instant};

use log::{debug, warn};
use tokio::runtime::Runtime;

use super::{
    ExportError, Exporter, Health, ShutdownDeadline,
    otlp_encode::RequestEncoder,
    otlp_grpc::{EncodedRequest, GrpcSetupError, GrpcTransport},
    otlp_http::{HttpSetupError, HttpTransport},
    retry::{self, Outcome, RetryPolicy},
};
use crate::{
    otel_env::{BspSettings, OtlpSettings, Protocol},
    span::Span,
    stats::{Stats, add},
};

#[derive(Debug, thiserror::Error)]
pub enum OtlpSetupError {
    #[error("starting the OTLP exporter's runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Grpc(#[from] GrpcSetupError),
    #[error(transparent)]
    Http(#[from] HttpSetupError),
}

enum Transport {
    Grpc(GrpcTransport),
    Http(HttpTransport),
}

pub struct OtlpExporter {
    /// Some until dropped; see `Drop`.
    rt: Option<Runtime>,
    inner: Inner,
}

struct Inner {
    transport: Transport,
    policy: RetryPolicy,
    shutdown: ShutdownDeadline,
    stats: Arc<Stats>,
    health: Health,
    partial_warned: bool,
    encoder: RequestEncoder,
}

impl OtlpExporter {
    /// Builds the client; no connection is made until the first batch.
    pub fn new(
        s: &OtlpSettings,
        bsp: &BspSettings,
        stats: Arc<Stats>,
        shutdown: ShutdownDeadline,
    ) -> Result<Self, OtlpSetupError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .thread_name("wirespan-otlp-io")
            .enable_all()
            .build()
            .map_err(OtlpSetupError::Runtime)?;
        let transport = {
            let _in_rt = rt.enter();
            match s.protocol {
                Protocol::Grpc => Transport::Grpc(GrpcTransport::new(s)?),
                Protocol::HttpProtobuf => Transport::Http(HttpTransport::new(s)?),
            }
        };
        let proto = match s.protocol {
            Protocol::Grpc => "gRPC",
            Protocol::HttpProtobuf => "HTTP",
        };
        Ok(Self {
            rt: Some(rt),
            inner: Inner {
                transport,
                policy: RetryPolicy::new(s.timeout, bsp.export_timeout),
                shutdown,
                stats,
                health: Health::new(format!("OTLP export ({proto}) to {}", s.endpoint)),
                partial_warned: false,
                encoder: RequestEncoder::default(),
            },
        })
    }
}

impl Exporter for OtlpExporter {
    fn export(&mut self, batch: &[Span]) -> Result<(), ExportError> {
        let n = batch.len() as u64;
        let inner = &mut self.inner;
        match &self.rt {
            Some(rt) if !inner.shutdown.passed() => {
                let started = Instant::now();
                let result = rt.block_on(inner.export(batch));
                inner.stats.export_latency.observe(started.elapsed());
                result
            }
            _ => {
                add(&inner.stats.spans_dropped_shutdown, n);
                Err(ExportError::Shutdown)
            }
        }
    }
}

impl Drop for OtlpExporter {
    fn drop(&mut self) {
        // Do not wait for a DNS lookup or a hung connection at exit.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Inner {
    async fn export(&mut self, batch: &[Span]) -> Result<(), ExportError> {
        let n = batch.len() as u64;
        let req = self.encoder.encode(batch);
        let Self {
            transport,
            policy,
            shutdown,
            stats,
            health,
            ..
        } = self;
        let on_failure = |reason: &str| {
            debug!("OTLP export attempt failed: {reason}");
            health.failed(&reason);
        };
        let on_retry = || {
            add(&stats.export_retries, 1);
            add(&stats.spans_retried, n);
        };
        let outcome = match transport {
            Transport::Grpc(g) => {
                let req = EncodedRequest::from(req);
                retry::run(
                    policy,
                    shutdown,
                    async |t| g.send(req.clone(), t).await,
                    on_failure,
                    on_retry,
                )
                .await
            }
            Transport::Http(h) => {
                let body = match h.body(req) {
                    Ok(b) => b,
                    Err(e) => {
                        add(&stats.spans_dropped_export_failed, n);
                        return Err(e.into());
                    }
                };
                retry::run(
                    policy,
                    shutdown,
                    async |t| h.send(body.clone(), t).await,
                    on_failure,
                    on_retry,
                )
                .await
            }
        };
        self.count(outcome, n)
    }

    fn count(&mut self, outcome: Outcome, n: u64) -> Result<(), ExportError> {
        let stats = &self.stats;
        match outcome {
            Outcome::Exported { rejected, message } => {
                let rejected = rejected.min(n);
                add(&stats.spans_exported, n - rejected);
                if rejected > 0 {
                    add(&stats.spans_rejected_by_collector, rejected);
                    if !self.partial_warned {
                        warn!(
                            "the collector rejected {rejected} of {n} spans ({message}); further rejections are only counted"
                        );
                        self.partial_warned = true;
                    }
                }
                self.health.ok();
                Ok(())
            }
            Outcome::GaveUp(reason) => {
                add(&stats.spans_dropped_export_failed, n);
                Err(ExportError::Failed(reason))
            }
            Outcome::Rejected(reason) => {
                add(&stats.spans_dropped_export_rejected, n);
                Err(ExportError::Failed(reason))
            }
            Outcome::Shutdown => {
                add(&stats.spans_dropped_shutdown, n);
                Err(ExportError::Shutdown)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::Ordering::Relaxed,
        time::{Duration, Instant},
    };

    use super::*;
    use crate::{
        otel_env::Compression,
        process::ProcessInfo,
        span::{SpanKind, Status},
    };

    fn batch(n: usize) -> Vec<Span> {
        let sp = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            trace_state: String::new(),
            name: "GET /".into(),
            kind: SpanKind::Server,
            start_unix_ns: 1,
            end_unix_ns: 2,
            attributes: Vec::new(),
            status: Status::Unset,
            process: Arc::new(ProcessInfo::default()),
        };
        vec![sp; n]
    }

    /// An exporter aimed at a port nobody listens on.
    fn refused(
        protocol: Protocol,
    ) -> (
        OtlpExporter,
        Arc<Stats>,
        tokio::sync::watch::Sender<Option<Instant>>,
    ) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let s = OtlpSettings {
            protocol,
            endpoint: format!("http://127.0.0.1:{port}/v1/traces")
                .parse()
                .unwrap(),
            headers: Vec::new(),
            timeout: Duration::from_millis(200),
            compression: Compression::Gzip,
            ca_pem: None,
        };
        let bsp = BspSettings {
            export_timeout: Duration::from_millis(300),
            ..BspSettings::default()
        };
        let stats = Arc::new(Stats::default());
        let (tx, deadline) = ShutdownDeadline::channel();
        let mut e = OtlpExporter::new(&s, &bsp, stats.clone(), deadline).unwrap();
        e.inner.policy.initial_backoff = Duration::from_millis(20);
        e.inner.policy.max_backoff = Duration::from_millis(40);
        (e, stats, tx)
    }

    #[test]
    fn a_down_collector_costs_retries_then_counted_drops() {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
            let (mut e, stats, _tx) = refused(protocol);
            let t = Instant::now();
            assert!(matches!(e.export(&batch(7)), Err(ExportError::Failed(_))));
            assert!(t.elapsed() < Duration::from_secs(2), "{protocol:?}");
            assert!(e.inner.health.is_failing());
            assert_eq!(stats.spans_dropped_export_failed.load(Relaxed), 7);
            let retries = stats.export_retries.load(Relaxed);
            assert!(retries >= 2, "{protocol:?}: {retries}");
            assert_eq!(stats.spans_retried.load(Relaxed), 7 * retries);
            assert_eq!(stats.spans_exported.load(Relaxed), 0);
        }
    }

    #[test]
    fn after_the_shutdown_deadline_batches_are_dropped_at_once() {
        let (mut e, stats, tx) = refused(Protocol::Grpc);
        let _ = tx.send(Some(Instant::now()));
        assert!(matches!(e.export(&batch(5)), Err(ExportError::Shutdown)));
        assert_eq!(stats.spans_dropped_shutdown.load(Relaxed), 5);
        assert_eq!(stats.export_retries.load(Relaxed), 0);
    }
}
