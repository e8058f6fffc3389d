//! A fixed-bucket histogram of durations, lock-free: recording is three
//! relaxed atomic adds, so exporters can time every call without contention.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Upper bounds in seconds. An OTLP export is a few milliseconds to a
/// collector nearby and up to `OTEL_BSP_EXPORT_TIMEOUT` (30 s by default)
/// when retried, so the buckets span that range.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket, not cumulative; the last slot is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

/// What a scrape reads: cumulative counts per bound (ending with `+Inf`,
/// which is the total count) and the sum in seconds.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub cumulative: Vec<(f64, u64)>,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Cumulative counts. Buckets are read one by one while exporters may
    /// record, so a scrape can see an observation in a bucket but not yet in
    /// the sum: each value is still monotonic, which is what Prometheus needs.
    pub fn snapshot(&self) -> Snapshot {
        let mut total = 0;
        let cumulative = BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.counts)
            .map(|(le, c)| {
                total += c.load(Relaxed);
                (le, total)
            })
            .collect();
        Snapshot {
            cumulative,
            sum_seconds: self.sum_ns.load(Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], (0.001, 1));
        assert_eq!(s.cumulative[4], (0.05, 2));
        assert_eq!(s.cumulative[BUCKETS.len() - 1], (30.0, 2));
        assert_eq!(s.cumulative[BUCKETS.len()], (f64::INFINITY, 3));
        assert!((s.sum_seconds - 60.031).abs() < 1e-9);
        assert!(BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }
}
