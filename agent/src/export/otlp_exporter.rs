//! The OTLP exporter: up to `OTEL_BSP_MAX_CONCURRENT_EXPORTS` batches in
//! flight, over gRPC or HTTP/protobuf, each retried per `retry`, with every
//! span's fate counted.
//!
//! It owns a small tokio runtime (one worker, so connections stay serviced
//! between batches) and is driven from its pipeline thread, so nothing it
//! does can stall capture. The pipeline thread encodes a batch and hands it
//! to the runtime; when every slot is taken it waits for one, as it waited
//! for the whole export when one batch was the limit, so a slow collector
//! still backs up into the bounded queue (counted drops), never into memory.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Instant,
};

use log::{debug, warn};
use tokio::{runtime::Runtime, sync::Semaphore};

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
    shared: Arc<Shared>,
    encoder: RequestEncoder,
    /// One permit per batch that may be in flight.
    slots: Arc<Semaphore>,
    max_in_flight: u32,
}

/// What the batches in flight share.
struct Shared {
    transport: Transport,
    policy: RetryPolicy,
    shutdown: ShutdownDeadline,
    stats: Arc<Stats>,
    health: Mutex<Health>,
    partial_warned: AtomicBool,
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
        let max_in_flight = u32::try_from(bsp.max_concurrent_exports.max(1)).unwrap_or(1);
        Ok(Self {
            rt: Some(rt),
            shared: Arc::new(Shared {
                transport,
                policy: RetryPolicy::new(s.timeout, bsp.export_timeout),
                shutdown,
                stats,
                health: Mutex::new(Health::new(format!(
                    "OTLP export ({proto}) to {}",
                    s.endpoint
                ))),
                partial_warned: AtomicBool::new(false),
            }),
            encoder: RequestEncoder::default(),
            slots: Arc::new(Semaphore::new(max_in_flight as usize)),
            max_in_flight,
        })
    }
}

impl Exporter for OtlpExporter {
    /// Encodes the batch and starts its export; the outcome is counted when
    /// it ends. Returns once the batch has a slot.
    fn export(&mut self, batch: &[Span]) -> Result<(), ExportError> {
        let n = batch.len() as u64;
        let shared = &self.shared;
        let Some(rt) = self.rt.as_ref().filter(|_| !shared.shutdown.passed()) else {
            add(&shared.stats.spans_dropped_shutdown, n);
            return Err(ExportError::Shutdown);
        };
        let req = self.encoder.encode(batch);
        let Ok(slot) = rt.block_on(self.slots.clone().acquire_owned()) else {
            // Closed: never, the exporter does not close it.
            add(&shared.stats.spans_dropped_export_failed, n);
            return Err(ExportError::Failed("no export slot".into()));
        };
        let shared = shared.clone();
        rt.spawn(async move {
            let started = Instant::now();
            shared.export(req, n).await;
            shared.stats.export_latency.observe(started.elapsed());
            drop(slot);
        });
        Ok(())
    }

    /// Waits until every batch in flight has ended (they give up at the
    /// shutdown deadline at the latest).
    fn flush(&mut self) -> Result<(), ExportError> {
        if let Some(rt) = &self.rt {
            let _all = rt.block_on(self.slots.acquire_many(self.max_in_flight));
        }
        Ok(())
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

impl Shared {
    async fn export(&self, req: Vec<u8>, n: u64) {
        let on_failure = |reason: &str| {
            debug!("OTLP export attempt failed: {reason}");
            if let Ok(mut h) = self.health.lock() {
                h.failed(&reason);
            }
        };
        let on_retry = || {
            add(&self.stats.export_retries, 1);
            add(&self.stats.spans_retried, n);
        };
        let outcome = match &self.transport {
            Transport::Grpc(g) => {
                let req = EncodedRequest::from(req);
                retry::run(
                    &self.policy,
                    &self.shutdown,
                    |t| g.send(req.clone(), t),
                    on_failure,
                    on_retry,
                )
                .await
            }
            Transport::Http(h) => {
                let body = match h.body(req) {
                    Ok(b) => b,
                    Err(e) => {
                        add(&self.stats.spans_dropped_export_failed, n);
                        warn!("OTLP export: compressing a batch failed: {e}");
                        return;
                    }
                };
                retry::run(
                    &self.policy,
                    &self.shutdown,
                    |t| h.send(body.clone(), t),
                    on_failure,
                    on_retry,
                )
                .await
            }
        };
        self.count(outcome, n);
    }

    fn count(&self, outcome: Outcome, n: u64) {
        let stats = &self.stats;
        match outcome {
            Outcome::Exported { rejected, message } => {
                let rejected = rejected.min(n);
                add(&stats.spans_exported, n - rejected);
                if rejected > 0 {
                    add(&stats.spans_rejected_by_collector, rejected);
                    if !self.partial_warned.swap(true, Relaxed) {
                        warn!(
                            "the collector rejected {rejected} of {n} spans ({message}); further rejections are only counted"
                        );
                    }
                }
                if let Ok(mut h) = self.health.lock() {
                    h.ok();
                }
            }
            Outcome::GaveUp(_) => add(&stats.spans_dropped_export_failed, n),
            Outcome::Rejected(_) => add(&stats.spans_dropped_export_rejected, n),
            Outcome::Shutdown => add(&stats.spans_dropped_shutdown, n),
        }
    }
}

#[cfg(test)]
mod tests;
