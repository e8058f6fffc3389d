//! Reads the kernel's ring buffer on tokio and drives the connection table.

use std::{
    sync::{Arc, atomic::Ordering::Relaxed, mpsc::SyncSender},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use log::warn;
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
    time::MissedTickBehavior,
};
use wirespan_common::event::{EventKind, user::decode};

use crate::{
    conn::ConnTable,
    span::Span,
    stats::{Stats, add},
};

/// How often the ring buffer is drained without a wake-up. The kernel
/// writes records without waking us (an IPI per record costs the traced
/// syscall microseconds; see the eBPF `batched_wakeup`), so this tick is
/// what delivers them, but for a burst that fills a quarter of the ring,
/// an exec, and the head of a long message. Span timing comes from kernel
/// timestamps, so the delay only shifts when a span is exported, not its
/// duration.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Runs until `stop` flips to true, then drains what is left and returns.
pub async fn run(
    ring: RingBuf<MapData>,
    mut table: ConnTable,
    spans: SyncSender<Span>,
    stats: Arc<Stats>,
    execs: mpsc::Sender<u32>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // SAFETY: the RingBuf owns its map fd, keeps it open and never swaps it
    // while the AsyncFd owns the RingBuf.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the ring buffer with tokio: {e}"))?;
    let mut out: Vec<Span> = Vec::with_capacity(64);
    let mut decode_warned = false;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    // A late tick (a long drain) is followed by a full interval, not a burst.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                drain(fd.get_mut(), &mut table, &mut out, &spans, &execs, &stats, &mut decode_warned);
            }
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                // Drain everything before clearing readiness: epoll on a
                // ring buffer is edge-like, and a partial drain would stall.
                drain(guard.get_inner_mut(), &mut table, &mut out, &spans, &execs, &stats, &mut decode_warned);
                guard.clear_ready();
            }
            _ = stop.changed() => break,
        }
    }
    drain(
        fd.get_mut(),
        &mut table,
        &mut out,
        &spans,
        &execs,
        &stats,
        &mut decode_warned,
    );
    table.shutdown();
    Ok(())
}

fn drain(
    ring: &mut RingBuf<MapData>,
    table: &mut ConnTable,
    out: &mut Vec<Span>,
    spans: &SyncSender<Span>,
    execs: &mpsc::Sender<u32>,
    stats: &Stats,
    decode_warned: &mut bool,
) {
    while let Some(item) = ring.next() {
        add(&stats.events, 1);
        match decode(&item) {
            Ok(ev) => {
                // A plain index: every kind's u8 is below EVENT_KIND_SLOTS.
                if let Some(c) = stats.events_by_kind.get(ev.kind as usize) {
                    add(c, 1);
                }
                // New programs may bring their own OpenSSL (see `tls`).
                if ev.kind == EventKind::ProcessExec && execs.try_send(ev.hdr.tgid).is_err() {
                    add(&stats.exec_scans_dropped, 1);
                }
                table.on_event(&ev, out)
            }
            Err(e) => {
                add(&stats.decode_errors, 1);
                if !*decode_warned {
                    warn!("undecodable kernel event ({e}); further ones are only counted");
                    *decode_warned = true;
                }
            }
        }
        for span in out.drain(..) {
            add(&stats.spans_emitted, 1);
            if spans.try_send(span).is_err() {
                add(&stats.spans_dropped_queue_full, 1);
            }
        }
    }
    // Once per wake-up, not per event: a gauge only needs to be current
    // when scraped.
    stats.conns_tracked.store(table.len() as u64, Relaxed);
    table.publish_link_stats();
}
