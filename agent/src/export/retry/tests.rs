use std::{cell::Cell, time::Duration};

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn policy(budget: u64) -> RetryPolicy {
    RetryPolicy {
        initial_backoff: ms(4),
        max_backoff: ms(16),
        attempt_timeout: ms(200),
        budget: ms(budget),
    }
}

fn retry(after: Option<Duration>) -> Attempt {
    Attempt::Retry {
        reason: "503".into(),
        after,
    }
}

fn done() -> Attempt {
    Attempt::Done {
        rejected: 0,
        message: String::new(),
    }
}

/// Runs a scripted sequence of attempts; returns the outcome, the number
/// of retries and the time taken.
async fn script(
    p: RetryPolicy,
    shutdown: &ShutdownDeadline,
    mut steps: Vec<Attempt>,
) -> (Outcome, u32, u32, Duration) {
    steps.reverse();
    let (failures, retries) = (Cell::new(0), Cell::new(0));
    let t = Instant::now();
    let out = run(
        &p,
        shutdown,
        |_| std::future::ready(steps.pop().unwrap_or_else(|| retry(None))),
        |_| failures.set(failures.get() + 1),
        || retries.set(retries.get() + 1),
    )
    .await;
    (out, failures.get(), retries.get(), t.elapsed())
}

fn no_shutdown() -> ShutdownDeadline {
    let (tx, rx) = ShutdownDeadline::channel();
    std::mem::forget(tx);
    rx
}

#[test]
fn backoff_doubles_with_jitter_up_to_the_cap() {
    let mut b = Backoff::new(ms(100), ms(1000));
    let caps = [100, 200, 400, 800, 1000, 1000, 1000];
    for cap in caps {
        let d = b.next_delay();
        assert!(d >= ms(cap / 2) && d <= ms(cap), "{d:?} vs {cap}");
    }
}

#[tokio::test(start_paused = true)]
async fn retries_until_success() {
    let (out, failures, retries, _) = script(
        policy(5000),
        &no_shutdown(),
        vec![retry(None), retry(None), done()],
    )
    .await;
    assert!(matches!(out, Outcome::Exported { rejected: 0, .. }));
    assert_eq!((failures, retries), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn honours_the_server_delay() {
    let (out, _, retries, took) = script(
        policy(5000),
        &no_shutdown(),
        vec![retry(Some(ms(120))), done()],
    )
    .await;
    assert!(matches!(out, Outcome::Exported { .. }));
    assert_eq!(retries, 1);
    assert!(took >= ms(120), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn server_delay_beyond_the_budget_gives_up_at_once() {
    let (out, _, retries, took) =
        script(policy(100), &no_shutdown(), vec![retry(Some(ms(5000)))]).await;
    assert_eq!(out, Outcome::GaveUp("503".into()));
    assert_eq!(retries, 0);
    assert!(took < ms(1000), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_a_failing_batch() {
    let (out, failures, retries, took) = script(policy(150), &no_shutdown(), vec![]).await;
    assert_eq!(out, Outcome::GaveUp("503".into()));
    assert!(
        failures >= 5 && retries + 1 == failures,
        "{failures} {retries}"
    );
    assert!(took < ms(1000), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn fatal_errors_are_not_retried() {
    let (out, failures, retries, _) = script(
        policy(5000),
        &no_shutdown(),
        vec![Attempt::Fatal("400".into()), done()],
    )
    .await;
    assert_eq!(out, Outcome::Rejected("400".into()));
    assert_eq!((failures, retries), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_attempt_times_out() {
    let p = RetryPolicy {
        attempt_timeout: ms(30),
        ..policy(100)
    };
    let t = Instant::now();
    let out = run(
        &p,
        &no_shutdown(),
        |_| std::future::pending(),
        |_| {},
        || {},
    )
    .await;
    assert!(
        matches!(&out, Outcome::GaveUp(r) if r.contains("no answer")),
        "{out:?}"
    );
    assert!(t.elapsed() < ms(1000));
}

#[tokio::test(start_paused = true)]
async fn shutdown_cuts_retries_short() {
    let (tx, rx) = ShutdownDeadline::channel();
    let _ = tx.send(Some((Instant::now() + ms(60)).into_std()));
    let (out, _, _, took) = script(policy(60_000), &rx, vec![retry(Some(ms(10_000)))]).await;
    assert_eq!(out, Outcome::Shutdown);
    assert!(took >= ms(55) && took < ms(2000), "{took:?}");
    // Past the deadline, nothing is attempted.
    let (out, failures, _, _) = script(policy(60_000), &rx, vec![done()]).await;
    assert_eq!((out, failures), (Outcome::Shutdown, 0));
}
