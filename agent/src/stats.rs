//! The agent's own counters: every drop is counted somewhere here or in the
//! kernel's per-CPU COUNTERS map. All are atomics bumped on the hot path;
//! formatting (the exit line, `/metrics`) happens only when they are read.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::metrics::histogram::Histogram;

/// Slots in [`Stats::events_by_kind`]: one per `EventKind` value (1 to 8),
/// indexed by the kind's `u8`.
pub const EVENT_KIND_SLOTS: usize = 9;

macro_rules! counters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        #[derive(Debug, Default)]
        pub struct Stats {
            $(#[doc = $doc] pub $name: AtomicU64,)*
            /// Decoded ring-buffer records per `EventKind` (index: its `u8`).
            pub events_by_kind: [AtomicU64; EVENT_KIND_SLOTS],
            /// Connections in the table now (a gauge, set by capture).
            pub conns_tracked: AtomicU64,
            /// How long each OTLP export call took, retries included.
            pub export_latency: Histogram,
        }

        impl Stats {
            /// The counters, for the exit line: name and value.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Relaxed)),)*]
            }

            /// The counters with their descriptions, for `/metrics`.
            pub fn described(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $doc, self.$name.load(Relaxed)),)*]
            }
        }
    };
}

counters! {
    events: "ring-buffer records read",
    decode_errors: "records that failed to decode",
    spans_emitted: "spans handed to the exporter",
    spans_exported: "spans the OTLP collector accepted",
    spans_printed: "spans written by the printer",
    spans_dropped_queue_full: "spans dropped because the export queue (OTEL_BSP_MAX_QUEUE_SIZE; the printer's when it is the only output) was full",
    spans_dropped_print_queue_full: "spans the printer missed because its queue was full (printer and OTLP both on)",
    spans_dropped_print_error: "spans in batches the printer failed to write",
    spans_dropped_export_failed: "spans in OTLP batches that still failed when their retry time (OTEL_BSP_EXPORT_TIMEOUT) ran out",
    spans_dropped_export_rejected: "spans in OTLP batches the collector refused with a non-retryable error",
    spans_rejected_by_collector: "spans the collector reported as rejected in a partial success",
    spans_dropped_shutdown: "spans still pending when the shutdown deadline passed",
    export_retries: "OTLP export attempts that were retries",
    spans_retried: "spans sent again by those retries",
    conns_opened: "connections tracked",
    tls_connections: "connections whose plaintext came from the TLS library",
    exec_scans_dropped: "new processes not inspected for OpenSSL (queue full)",
    conns_evicted: "connections evicted because the table was full",
    requests_lost_evicted: "in-flight requests lost with evicted connections",
    requests_lost_shutdown: "in-flight requests still open at shutdown",
    http1_malformed: "HTTP/1 messages abandoned as malformed",
    http1_head_too_large: "HTTP/1 heads over the size limit",
    http1_pending_overflow: "requests beyond the per-connection pipelining limit",
    http1_gaps: "heads cut short by the capture limit",
    http1_orphan_responses: "responses seen without a request (attached mid-stream)",
    process_cache_evictions: "process metadata entries evicted",
    traceparents_invalid: "inbound traceparent headers rejected by the W3C rules (a new trace was started)",
    trace_option_mismatches: "client requests whose TCP-option trace differed from the trace their thread serves (the request left before the agent decided the thread's trace)",
    trace_link_resets: "times the linker's bounded thread or peer maps were cleared",
    conns_muted: "connections the kernel was told to stop sending payload of (not HTTP, TLS ciphertext, or outside --open-ports)",
    processes_untraced: "processes the kernel was told to stop tracing (left out by --exe-path)",
    bodies_skipped: "Content-Length bodies whose middle the kernel was told to send as lengths only",
    kernel_filter_refused: "mutes, body skips and process exclusions the kernel maps refused (full): those keep costing CPU, no span is lost",
}

pub fn add(c: &AtomicU64, n: u64) {
    // Most calls add nothing (the parser's per-feed deltas): skip the
    // locked read-modify-write then.
    if n != 0 {
        c.fetch_add(n, Relaxed);
    }
}
