//! Between capture and the exporters: one bounded queue and one thread per
//! output (printer, OTLP), batching by size or delay (OTEL_BSP_*
//! semantics), and a fan-out thread when more than one output runs.
//!
//! Capture only ever `try_send`s, so a slow or failing output costs
//! counted drops, never a stalled capture loop, and memory stays bounded
//! by the queue sizes.

use std::{
    sync::{
        Arc,
        atomic::AtomicU64,
        mpsc::{self, Receiver, SyncSender, TryRecvError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use log::warn;
use tokio::sync::watch;

use crate::{
    export::{Exporter, ShutdownDeadline},
    span::{Span, recycle},
    stats::{Stats, add},
};

/// The fan-out's own queue: only a buffer, as the fan-out never blocks.
const FANOUT_QUEUE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Spans per batch at most.
    pub max_batch: usize,
    /// Longest the first span of a batch waits for the batch to fill.
    pub delay: Duration,
}

/// A counter picked from the stats.
pub type Counter = fn(&Stats) -> &AtomicU64;
/// An output's queue and its drop counter, as the fan-out sees it.
type Sink = (SyncSender<Span>, Counter);

pub type SetupError = Box<dyn std::error::Error + Send + Sync>;
/// Builds an output's exporter on its own thread (so a runtime it owns
/// lives and dies there).
pub type MakeExporter =
    Box<dyn FnOnce(ShutdownDeadline) -> Result<Box<dyn Exporter>, SetupError> + Send>;

pub struct Output {
    /// Names the thread: `wirespan-<name>`.
    pub name: &'static str,
    /// Spans waiting for this output at most.
    pub queue: usize,
    pub batch: BatchConfig,
    /// Counts spans this output missed because its queue was full (when
    /// it is the only output, the sender, capture, counts them instead).
    pub dropped: Counter,
    pub make: MakeExporter,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("starting the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
    #[error("{0}")]
    Setup(SetupError),
}

pub struct Pipeline {
    threads: Vec<JoinHandle<()>>,
    deadline: watch::Sender<Option<Instant>>,
}

impl Pipeline {
    /// Starts the outputs; the sender is where capture puts finished spans.
    pub fn start(
        outputs: Vec<Output>,
        stats: Arc<Stats>,
    ) -> Result<(SyncSender<Span>, Self), PipelineError> {
        let (deadline, shutdown) = ShutdownDeadline::channel();
        let mut threads = Vec::new();
        let mut sinks: Vec<Sink> = Vec::new();
        for o in outputs {
            let (tx, rx) = mpsc::sync_channel(o.queue);
            let (ready_tx, ready_rx) = mpsc::channel();
            let shutdown = shutdown.clone();
            let (make, batch) = (o.make, o.batch);
            let handle = std::thread::Builder::new()
                .name(format!("wirespan-{}", o.name))
                .spawn(move || match make(shutdown) {
                    Ok(exporter) => {
                        let _ = ready_tx.send(Ok(()));
                        run_batches(rx, exporter, batch);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(|e| PipelineError::Thread(o.name, e))?;
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(PipelineError::Setup(e)),
                Err(_) => return Err(PipelineError::Setup(format!("{} panicked", o.name).into())),
            }
            threads.push(handle);
            sinks.push((tx, o.dropped));
        }
        let tx = match sinks.pop() {
            Some((tx, _)) if sinks.is_empty() => tx,
            None => {
                // No output at all (`--print off`, no OTLP): spans are
                // produced and counted, then dropped, in batches like an
                // output's, so that capture pays no wake-up per span.
                let (tx, rx) = mpsc::sync_channel(FANOUT_QUEUE);
                let handle = std::thread::Builder::new()
                    .name("wirespan-discard".into())
                    .spawn(move || run_batches(rx, Box::new(Discard), DISCARD_BATCH))
                    .map_err(|e| PipelineError::Thread("discard", e))?;
                threads.push(handle);
                tx
            }
            last => {
                sinks.extend(last);
                let (tx, rx) = mpsc::sync_channel(FANOUT_QUEUE);
                let handle = std::thread::Builder::new()
                    .name("wirespan-fanout".into())
                    .spawn(move || fan_out(rx, &sinks, &stats))
                    .map_err(|e| PipelineError::Thread("fan-out", e))?;
                threads.push(handle);
                tx
            }
        };
        Ok((tx, Self { threads, deadline }))
    }

    /// From now on, exports give up at `deadline`; what is still pending
    /// then is dropped and counted.
    pub fn begin_shutdown(&self, deadline: Instant) {
        let _ = self.deadline.send(Some(deadline));
    }

    /// Waits, until `limit` at most, for the outputs to drain (every span
    /// sender must be gone). False if some output did not finish in time.
    pub fn join(self, limit: Instant) -> bool {
        while !self.threads.iter().all(JoinHandle::is_finished) {
            if Instant::now() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for t in self.threads {
            if t.join().is_err() {
                warn!("an exporter thread panicked");
            }
        }
        true
    }
}

/// Batches of the output that drops every span (see [`Discard`]): a
/// quarter of its queue, at least every 50 ms.
const DISCARD_BATCH: BatchConfig = BatchConfig {
    max_batch: FANOUT_QUEUE / 4,
    delay: Duration::from_millis(50),
};

/// The output when there is none: drops every batch.
struct Discard;

impl Exporter for Discard {
    fn export(&mut self, _batch: &[Span]) -> Result<(), crate::export::ExportError> {
        Ok(())
    }
}

/// Hands each span to every output (at least two) without ever blocking.
fn fan_out(rx: Receiver<Span>, sinks: &[Sink], stats: &Stats) {
    let Some(((last, last_dropped), rest)) = sinks.split_last() else {
        return;
    };
    for span in rx {
        for (tx, dropped) in rest {
            if tx.try_send(span.clone()).is_err() {
                add(dropped(stats), 1);
            }
        }
        if last.try_send(span).is_err() {
            add(last_dropped(stats), 1);
        }
    }
}

/// How long an output sleeps between looks at its queue while a batch is
/// open, at least. A blocking receive returns for every span, so the thread
/// slept and woke once per span, and capture paid a futex wake-up per span:
/// at 10k spans/s those context switches were the agent's largest cost.
/// Polling while a batch fills costs at most 200 wake-ups a second; an idle
/// output still sleeps in a blocking receive.
const BATCH_POLL: Duration = Duration::from_millis(5);
/// How long it sleeps at most: when the batch fills slowly, the next look
/// is when it should be full at the rate seen so far, up to this. Even
/// these 200 wake-ups a second were ~4% of the agent's CPU at 10k spans/s.
/// Bounded so that a jump in the rate cannot overfill the queue: 20 ms of
/// spans is 2,000 at 100k/s, and a rate that high fills a batch in less
/// than `BATCH_POLL`, so it is polled at that.
const BATCH_POLL_MAX: Duration = Duration::from_millis(20);

/// The next sleep while a batch of `len` (at least one) out of `max` has
/// been filling for `open`.
fn poll_interval(len: usize, max: usize, open: Duration) -> Duration {
    let per_span = open / u32::try_from(len.max(1)).unwrap_or(u32::MAX);
    let to_fill =
        per_span.saturating_mul(u32::try_from(max.saturating_sub(len)).unwrap_or(u32::MAX));
    to_fill.clamp(BATCH_POLL, BATCH_POLL_MAX)
}

/// Runs until every sender is gone and the queue is empty, exporting a
/// batch when it is full or its first span has waited `cfg.delay`.
pub fn run_batches(rx: Receiver<Span>, mut exporter: Box<dyn Exporter>, cfg: BatchConfig) {
    let max_batch = cfg.max_batch.max(1);
    let mut batch: Vec<Span> = Vec::with_capacity(max_batch);
    // Idle: block until a span opens the next batch.
    while let Ok(first) = rx.recv() {
        let opened = Instant::now();
        let due = opened + cfg.delay;
        batch.push(first);
        let done = loop {
            let done = take_queued(&rx, &mut batch, max_batch);
            let now = Instant::now();
            if done || batch.len() >= max_batch || now >= due {
                break done;
            }
            let poll = poll_interval(batch.len(), max_batch, now - opened);
            std::thread::sleep(poll.min(due - now));
        };
        // The exporter counts the outcome and warns when it must.
        let _ = exporter.export(&batch);
        recycle::give_back(&mut batch);
        if done {
            break;
        }
    }
    if let Err(e) = exporter.flush() {
        warn!("flushing spans at exit: {e}");
    }
}

/// Moves queued spans into `batch` until it holds `max_batch`. True once
/// every sender is gone and the queue is empty.
fn take_queued(rx: &Receiver<Span>, batch: &mut Vec<Span>, max_batch: usize) -> bool {
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(span) => batch.push(span),
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests;
