use std::sync::{Mutex, atomic::Ordering::Relaxed};

use super::*;
use crate::export::ExportError;

fn span() -> Span {
    Span::bare()
}

/// Records batch sizes and when they came; each export first waits for
/// the gate, if any, to let it through.
struct Recorder {
    batches: Arc<Mutex<Vec<(usize, Instant)>>>,
    gate: Option<Receiver<()>>,
}

impl Exporter for Recorder {
    fn export(&mut self, batch: &[Span]) -> Result<(), ExportError> {
        if let Some(g) = &self.gate {
            let _ = g.recv();
        }
        if let Ok(mut b) = self.batches.lock() {
            b.push((batch.len(), Instant::now()));
        }
        Ok(())
    }
}

type Batches = Arc<Mutex<Vec<(usize, Instant)>>>;

fn output(
    queue: usize,
    batch: BatchConfig,
    gate: Option<Receiver<()>>,
    dropped: fn(&Stats) -> &AtomicU64,
) -> (Output, Batches) {
    let batches = Batches::default();
    let b = batches.clone();
    let o = Output {
        name: "test",
        queue,
        batch,
        dropped,
        make: Box::new(move |_| Ok(Box::new(Recorder { batches: b, gate }))),
    };
    (o, batches)
}

fn sizes(b: &Batches) -> Vec<usize> {
    b.lock().unwrap().iter().map(|(n, _)| *n).collect()
}

const SLOW: BatchConfig = BatchConfig {
    max_batch: 100,
    delay: Duration::from_secs(3600),
};

#[test]
fn full_batches_go_at_once_and_the_rest_at_exit() {
    let (o, batches) = output(1000, SLOW, None, |s| &s.spans_dropped_queue_full);
    let (tx, p) = Pipeline::start(vec![o], Arc::default()).unwrap();
    for _ in 0..250 {
        tx.send(span()).unwrap();
    }
    let t = Instant::now();
    while sizes(&batches).len() < 2 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(sizes(&batches), [100, 100]);
    drop(tx);
    assert!(p.join(Instant::now() + Duration::from_secs(5)));
    assert_eq!(sizes(&batches), [100, 100, 50]);
}

#[test]
fn a_partial_batch_goes_after_the_delay() {
    let cfg = BatchConfig {
        max_batch: 100,
        delay: Duration::from_millis(80),
    };
    let (o, batches) = output(1000, cfg, None, |s| &s.spans_dropped_queue_full);
    let (tx, p) = Pipeline::start(vec![o], Arc::default()).unwrap();
    let first = Instant::now();
    for _ in 0..3 {
        tx.send(span()).unwrap();
    }
    // Wait for the batch (a condition, not a fixed sleep) while the sender
    // is still open: only the delay can have sent it.
    let t = Instant::now();
    while sizes(&batches).is_empty() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    {
        let b = batches.lock().unwrap();
        assert_eq!(b.len(), 1, "one batch while the sender is still open");
        assert_eq!(b[0].0, 3);
        let waited = b[0].1 - first;
        // It went while the sender was open: by the delay, not at exit.
        assert!(waited >= cfg.delay, "{waited:?}");
    }
    drop(tx);
    assert!(p.join(Instant::now() + Duration::from_secs(5)));
}

#[test]
fn a_stalled_output_bounds_its_queue_and_capture_counts_drops() {
    let (gate_tx, gate) = mpsc::channel();
    let cfg = BatchConfig {
        max_batch: 5,
        delay: Duration::ZERO,
    };
    let (o, batches) = output(10, cfg, Some(gate), |s| &s.spans_dropped_queue_full);
    let (tx, p) = Pipeline::start(vec![o], Arc::default()).unwrap();
    // What capture does: try_send, count what does not fit.
    let mut dropped = 0;
    for _ in 0..1000 {
        if tx.try_send(span()).is_err() {
            dropped += 1;
        }
        std::thread::sleep(Duration::from_micros(20));
    }
    // Held: the queue (10) and at most one batch (5) being exported.
    assert!(dropped >= 1000 - 15, "{dropped}");
    drop(tx);
    for _ in 0..1000 {
        let _ = gate_tx.send(());
    }
    assert!(p.join(Instant::now() + Duration::from_secs(5)));
    assert_eq!(sizes(&batches).iter().sum::<usize>() + dropped, 1000);
}

#[test]
fn fan_out_feeds_every_output_and_counts_each_ones_drops() {
    let stats = Arc::new(Stats::default());
    let (gate_tx, gate) = mpsc::channel();
    let cfg = BatchConfig {
        max_batch: 5,
        delay: Duration::ZERO,
    };
    let (stalled, stalled_batches) = output(10, cfg, Some(gate), |s| &s.spans_dropped_queue_full);
    let (fine, fine_batches) = output(2000, cfg, None, |s| &s.spans_dropped_print_queue_full);
    let (tx, p) = Pipeline::start(vec![stalled, fine], stats.clone()).unwrap();
    for _ in 0..1000 {
        tx.send(span()).unwrap();
    }
    drop(tx);
    let t = Instant::now();
    while sizes(&fine_batches).iter().sum::<usize>() < 1000 && t.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    for _ in 0..1000 {
        let _ = gate_tx.send(());
    }
    assert!(p.join(Instant::now() + Duration::from_secs(5)));
    assert_eq!(sizes(&fine_batches).iter().sum::<usize>(), 1000);
    assert_eq!(stats.spans_dropped_print_queue_full.load(Relaxed), 0);
    let got = sizes(&stalled_batches).iter().sum::<usize>() as u64;
    let dropped = stats.spans_dropped_queue_full.load(Relaxed);
    assert_eq!(got + dropped, 1000);
    assert!(got <= 15, "{got}");
}

#[test]
fn no_output_still_drains() {
    let (tx, p) = Pipeline::start(Vec::new(), Arc::default()).unwrap();
    for _ in 0..10_000 {
        tx.send(span()).unwrap();
    }
    drop(tx);
    assert!(p.join(Instant::now() + Duration::from_secs(5)));
}

#[test]
fn a_failing_setup_is_reported() {
    let o = Output {
        name: "broken",
        queue: 1,
        batch: SLOW,
        dropped: |s| &s.spans_dropped_queue_full,
        make: Box::new(|_| Err("no collector config".into())),
    };
    let e = Pipeline::start(vec![o], Arc::default()).err().unwrap();
    assert_eq!(e.to_string(), "no collector config");
}

#[test]
fn join_gives_up_at_its_limit() {
    let (_gate_tx, gate) = mpsc::channel();
    let (o, _) = output(10, SLOW, Some(gate), |s| &s.spans_dropped_queue_full);
    let (tx, p) = Pipeline::start(vec![o], Arc::default()).unwrap();
    tx.send(span()).unwrap();
    drop(tx); // the batch goes at exit, and the exporter hangs
    let t = Instant::now();
    assert!(!p.join(Instant::now() + Duration::from_millis(100)));
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn polls_sooner_the_faster_a_batch_fills() {
    let ms = Duration::from_millis;
    // 10k spans/s, batches of 512: full in ~51 ms.
    assert_eq!(poll_interval(50, 512, ms(5)), BATCH_POLL_MAX);
    assert_eq!(poll_interval(450, 512, ms(45)), Duration::from_micros(6200));
    // 100k spans/s: polled at the floor.
    assert_eq!(poll_interval(500, 512, ms(5)), BATCH_POLL);
    // Slow or just opened: the ceiling.
    assert_eq!(poll_interval(1, 512, ms(0)), BATCH_POLL);
    assert_eq!(poll_interval(1, 512, ms(5)), BATCH_POLL_MAX);
    assert_eq!(poll_interval(512, 512, ms(5)), BATCH_POLL);
}
