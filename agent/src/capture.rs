//! Reads the kernel's ring buffer on tokio and drives the connection table.

use std::sync::{Arc, atomic::Ordering::Relaxed, mpsc::SyncSender};

use aya::maps::{MapData, RingBuf};
use log::warn;
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
};
use wirespan_common::event::{EventKind, user::decode};

use crate::{
    conn::ConnTable,
    span::Span,
    stats::{Stats, add},
};

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
    loop {
        tokio::select! {
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
