//! Drives one HTTP/1 connection parser through an arbitrary sequence of
//! feeds and closes, checking that it never panics, keeps its memory bounds
//! and only emits well-formed exchanges.
//!
//! Input: a limits byte (even: defaults, odd: tiny limits), then records of
//! `[op, len, gap, payload[len]...]`:
//! - `op` bit 0: direction (0 Egress, 1 Ingress); `op % 16 == 15`: close
//!   instead of feeding (no `len`/`gap`/payload follow);
//! - `gap`: 0..=191 no gap, else `(gap - 191)^3` uncaptured bytes after the
//!   payload (up to ~262k), to hit body and head gaps alike.
//!
//! `seeds/http1` holds hand-made inputs in this format and `http1.dict`
//! the HTTP tokens; from `agent/fuzz`:
//! `mkdir -p corpus/http1 && WIRESPAN_EBPF_OBJ=none cargo +nightly fuzz run
//! http1 corpus/http1 seeds/http1 -- -dict=http1.dict -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirespan::protocol::http1::{Exchange, Http1Conn, IncompleteReason, Limits, Outcome};
use wirespan_common::event::Direction;

const TINY: Limits = Limits {
    max_head_bytes: 160,
    max_pending: 3,
    max_target_len: 8,
};

fn check(e: &Exchange, limits: &Limits) {
    let r = &e.request;
    assert!(!r.method.is_empty() && r.method.len() <= 20, "{e:?}");
    assert!(
        !r.target.is_empty() || r.head_truncated || limits.max_target_len == 0,
        "{e:?}"
    );
    assert!(r.target.len() <= limits.max_target_len, "{e:?}");
    assert!(r.version_minor <= 1, "{e:?}");
    assert!(e.request_start <= e.request_end, "{e:?}");
    assert!(e.request_start <= e.response_end, "{e:?}");
    if let Some(s) = e.response_start {
        assert!(s <= e.response_end, "{e:?}");
    }
    match e.outcome {
        Outcome::Complete | Outcome::Incomplete(IncompleteReason::ClosedMidResponse) => {
            let resp = e.response.as_ref().expect("a response");
            assert!((100..=599).contains(&resp.status), "{e:?}");
            assert!(e.response_start.is_some(), "{e:?}");
        }
        Outcome::Incomplete(_) => {
            assert!(e.response.is_none() && e.response_start.is_none(), "{e:?}")
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, mut rest)) = data.split_first() else {
        return;
    };
    let limits = if which % 2 == 0 {
        Limits::default()
    } else {
        TINY
    };
    let mut conn = Http1Conn::new(limits);
    let mut out = Vec::new();
    let mut t = 0u64;
    let mut last = conn.counters();
    while let Some((&op, tail)) = rest.split_first() {
        t += 10;
        if op % 16 == 15 {
            conn.close(t, &mut out);
            assert_eq!(
                (conn.pending(), conn.role(), conn.is_opaque()),
                (0, None, false)
            );
            rest = tail;
        } else {
            let [len, gap, tail @ ..] = tail else { break };
            let len = usize::from(*len).min(tail.len());
            let (payload, tail) = tail.split_at(len);
            let gap = match *gap {
                g @ 192.. => usize::from(g - 191).pow(3),
                _ => 0,
            };
            let dir = if op % 2 == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            conn.feed(dir, payload, payload.len() + gap, t, t + 5, &mut out);
            rest = tail;
        }
        assert!(conn.pending() <= limits.max_pending);
        let now = conn.counters();
        assert!(
            now.malformed >= last.malformed && now.gaps >= last.gaps && now.resyncs >= last.resyncs
        );
        last = now;
        for e in out.drain(..) {
            check(&e, &limits);
        }
    }
    conn.close(t + 10, &mut out);
    for e in out.drain(..) {
        check(&e, &limits);
    }
    assert_eq!(conn.pending(), 0);
});
