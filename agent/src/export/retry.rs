//! Retrying one export: exponential backoff with jitter, server-requested
//! delays (gRPC RetryInfo, HTTP Retry-After), a per-attempt timeout, a time
//! budget per batch so the queue keeps draining, and the shutdown deadline.

use std::time::Duration;

// tokio's clock, so that tests can run these timings on paused, virtual
// time instead of racing the wall clock.
use tokio::time::Instant;

use super::ShutdownDeadline;

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Accepted; `rejected` spans were refused in a partial success.
    Done { rejected: u64, message: String },
    /// Worth another try, after `after` if the server asked for it.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Retrying cannot help (bad request, unauthenticated, ...).
    Fatal(String),
}

/// How a batch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Exported {
        rejected: u64,
        message: String,
    },
    /// Still failing when the batch's time budget ran out.
    GaveUp(String),
    Rejected(String),
    Shutdown,
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// First backoff; it doubles per retry up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Time limit of one attempt (OTEL_EXPORTER_OTLP_TIMEOUT).
    pub attempt_timeout: Duration,
    /// Time limit of the whole batch, retries included
    /// (OTEL_BSP_EXPORT_TIMEOUT).
    pub budget: Duration,
}

impl RetryPolicy {
    pub fn new(attempt_timeout: Duration, budget: Duration) -> Self {
        Self {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
            attempt_timeout,
            budget,
        }
    }
}

/// Exponential backoff with "equal jitter": the n-th delay is uniformly
/// random in [d/2, d] with d = initial * 2^n capped at max, so retries of
/// many agents spread out yet never wait longer than the cap.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { next: initial, max }
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next.min(self.max);
        self.next = d.saturating_mul(2).min(self.max);
        let half = d / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// Runs `attempt` until it succeeds, fails for good, the budget runs out
/// or the shutdown deadline passes. `attempt` gets its time limit.
/// `on_failure` sees every failed attempt; `on_retry` every retry.
///
/// `attempt` is a closure returning a future rather than an async closure:
/// the future an `AsyncFnMut` returns borrows the closure for any lifetime,
/// which makes a spawned export "not general enough" to be Send.
pub async fn run<F: Future<Output = Attempt>>(
    policy: &RetryPolicy,
    shutdown: &ShutdownDeadline,
    mut attempt: impl FnMut(Duration) -> F,
    mut on_failure: impl FnMut(&str),
    mut on_retry: impl FnMut(),
) -> Outcome {
    let budget_end = Instant::now() + policy.budget;
    let mut backoff = Backoff::new(policy.initial_backoff, policy.max_backoff);
    let mut first = true;
    // Why the last attempt failed: what giving up reports, also when the
    // budget runs out during the wait after it (the timer wheel rounds a
    // sleep up to the next millisecond, past an end it just fit before).
    let mut last_failure: Option<String> = None;
    loop {
        let end = shutdown
            .get()
            .map_or(budget_end, |d| Instant::from_std(d).min(budget_end));
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let stopping = shutdown
                .get()
                .is_some_and(|d| Instant::now() >= Instant::from_std(d));
            return if stopping {
                Outcome::Shutdown
            } else {
                Outcome::GaveUp(last_failure.unwrap_or_else(|| "no time left to retry".into()))
            };
        }
        if !first {
            on_retry();
        }
        first = false;
        let limit = policy.attempt_timeout.min(left);
        let result = tokio::select! {
            r = tokio::time::timeout(limit, attempt(limit)) => r.unwrap_or_else(|_| Attempt::Retry {
                reason: format!("no answer within {} ms", limit.as_millis()),
                after: None,
            }),
            _ = shutdown.reached() => return Outcome::Shutdown,
        };
        let (reason, after) = match result {
            Attempt::Done { rejected, message } => return Outcome::Exported { rejected, message },
            Attempt::Fatal(reason) => {
                on_failure(&reason);
                return Outcome::Rejected(reason);
            }
            Attempt::Retry { reason, after } => (reason, after),
        };
        on_failure(&reason);
        let wait = after.unwrap_or_else(|| backoff.next_delay());
        if Instant::now() + wait >= budget_end {
            return Outcome::GaveUp(reason);
        }
        last_failure = Some(reason);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.reached() => return Outcome::Shutdown,
        }
    }
}

#[cfg(test)]
mod tests;
