//! The exporter side: a thread that batches spans from a bounded queue and
//! hands them to the configured exporter.

use std::{
    sync::{
        Arc,
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::{Duration, Instant},
};

use log::warn;

use crate::{
    export::Exporter,
    span::Span,
    stats::{Stats, add},
};

/// Spans per batch at most.
pub const MAX_BATCH: usize = 512;
/// Longest a span waits in a partial batch.
pub const BATCH_DELAY: Duration = Duration::from_millis(100);

/// Runs until every sender is gone, then flushes and returns.
pub fn run_exporter(
    rx: Receiver<Span>,
    mut exporter: Option<Box<dyn Exporter>>,
    stats: Arc<Stats>,
) {
    let mut batch: Vec<Span> = Vec::with_capacity(MAX_BATCH);
    let mut failing = false;
    let mut deadline = Instant::now() + BATCH_DELAY;
    loop {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let done = match rx.recv_timeout(timeout) {
            Ok(span) => {
                if batch.is_empty() {
                    deadline = Instant::now() + BATCH_DELAY;
                }
                batch.push(span);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if batch.len() >= MAX_BATCH || (!batch.is_empty() && (done || Instant::now() >= deadline)) {
            write_batch(&mut exporter, &batch, &stats, &mut failing);
            batch.clear();
        }
        if batch.is_empty() {
            deadline = Instant::now() + BATCH_DELAY;
        }
        if done {
            break;
        }
    }
    if let Some(e) = exporter.as_mut()
        && let Err(err) = e.flush()
    {
        warn!("exporter flush failed: {err:#}");
    }
}

fn write_batch(
    exporter: &mut Option<Box<dyn Exporter>>,
    batch: &[Span],
    stats: &Stats,
    failing: &mut bool,
) {
    let Some(e) = exporter.as_mut() else {
        // `--print off` and no other exporter: spans are produced and
        // counted, nothing else.
        add(&stats.spans_exported, batch.len() as u64);
        return;
    };
    match e.export(batch) {
        Ok(()) => {
            add(&stats.spans_exported, batch.len() as u64);
            if *failing {
                warn!("span export recovered");
                *failing = false;
            }
        }
        Err(err) => {
            add(&stats.spans_dropped_export_error, batch.len() as u64);
            // One warning when failures start, not one per batch.
            if !*failing {
                warn!("span export failing: {err:#}; dropped spans are counted");
                *failing = true;
            }
        }
    }
}
