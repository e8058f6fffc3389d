//! Map and program names, shared so that the loader and the kernel agree.

/// Ring buffer carrying every event to userspace.
pub const EVENTS: &str = "EVENTS";
/// Per-CPU counters, indexed by [`crate::event::Counter`].
pub const COUNTERS: &str = "COUNTERS";
/// Read-only global holding the [`crate::config::KernelConfig`], set by the
/// loader with `EbpfLoader::override_global`.
pub const CONFIG: &str = "CONFIG";

/// Capacity of the ring buffer in bytes (power of two, page multiple).
pub const EVENTS_BYTES: u32 = 8 * 1024 * 1024;
/// Syscalls in flight at once (one entry per thread inside a hooked syscall).
pub const INFLIGHT_ENTRIES: u32 = 16 * 1024;
/// Socket fds known to be TCP sockets, so close() is reported for them only.
/// Values are [`SocketEntry`].
pub const SOCKET_FDS: &str = "SOCKET_FDS";
pub const SOCKET_FDS_ENTRIES: u32 = 64 * 1024;

/// A SOCKET_FDS value: what the kernel knows of a socket fd, and what the
/// agent asked of it. The kernel inserts it; after that only the agent
/// writes it, except that the kernel zeroes a `body_end` that has passed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketEntry {
    /// The `struct sock` address (0 until resolved, for a connect()ed
    /// socket), with the agent's mute bits ([`SOCKET_MUTE_BITS`]) in its
    /// low bits.
    pub sk: u64,
    /// Per direction (`event::Direction as usize`): the stream position
    /// (`EventHeader::seq`) where a body the agent skips ends, or 0. A
    /// syscall whose bytes all lie before it sends its length only
    /// (`FLAG_LENGTH_ONLY`): the agent frames a Content-Length body by
    /// counting, and need not see its middle.
    pub body_end: [u32; 2],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SocketEntry {}

/// Low bits of [`SocketEntry::sk`] (a `struct sock` address, so at least
/// 8-aligned) set by the agent once it will not trace the connection:
/// [`SOCKET_MUTED`] stops the socket syscalls' payloads, [`SOCKET_MUTED_TLS`]
/// the TLS library's plaintext too. Separate because a TLS connection's
/// handshake looks like non-HTTP bytes before its plaintext starts.
pub const SOCKET_MUTED: u64 = 1;
pub const SOCKET_MUTED_TLS: u64 = 2;
pub const SOCKET_MUTE_BITS: u64 = SOCKET_MUTED | SOCKET_MUTED_TLS;

/// tgids the agent decided not to trace (`--exe-path`), when
/// `untraced_filter` is set: their syscalls end at one lookup. The kernel
/// drops a tgid's entry when it execs or exits (its next image, or the
/// next process with its number, is judged afresh).
pub const UNTRACED_PIDS: &str = "UNTRACED_PIDS";
pub const UNTRACED_PIDS_ENTRIES: u32 = 16 * 1024;

/// tgids selected with `--pid` (value unused), when `pid_filter` is set.
pub const SELECTED_PIDS: &str = "SELECTED_PIDS";
/// Capacity of [`SELECTED_PIDS`]: more `--pid`s than this are refused.
pub const SELECTED_PIDS_ENTRIES: u32 = 1024;

/// The sock_ops program (trace context in a TCP option).
pub const SOCKOPS_PROGRAM: &str = "wirespan_sockops";
/// Client requests' trace context by socket cookie: what the TCP option on
/// that socket's data segments carries (the latest request's).
pub const TX_CONTEXT_ENTRIES: u32 = 64 * 1024;
/// Trace context read from a TCP option, by the receiving socket's cookie,
/// until the server thread reads the request.
pub const RX_CONTEXT_ENTRIES: u32 = 64 * 1024;
/// Threads serving a request: the trace id their client requests carry.
pub const THREAD_TRACE: &str = "THREAD_TRACE";
pub const THREAD_TRACE_ENTRIES: u32 = 16 * 1024;

/// The sk_msg program (`traceparent` header injection).
pub const SKMSG_PROGRAM: &str = "wirespan_skmsg";
/// Destination ports whose connections get `traceparent` injected.
pub const INJECT_PORTS: &str = "INJECT_PORTS";
pub const INJECT_PORTS_ENTRIES: u32 = 1024;
/// The program array the read programs tail-call into (slot 0: the
/// inbound `tracestate` capture, too big to share their verifier budget).
pub const TAIL_CALLS: &str = "TAIL_CALLS";
pub const TAIL_TRACESTATE: u32 = 0;
/// The tracepoint program in slot [`TAIL_TRACESTATE`]: loaded, never
/// attached.
pub const TRACESTATE_PROGRAM: &str = "wirespan_tracestate";
/// Threads' inbound `tracestate` (536-byte values): sized to one entry
/// unless header injection is on, since LRU maps are preallocated.
pub const THREAD_STATE: &str = "THREAD_STATE";
/// Destination networks whose connections get `traceparent` injected
/// (`--inject-cidrs`): an LPM trie over 16-byte addresses, IPv4 mapped.
pub const INJECT_CIDRS: &str = "INJECT_CIDRS";
pub const INJECT_CIDRS_ENTRIES: u32 = 256;
/// The SockHash of connections whose requests get `traceparent` injected.
pub const INJECT_SOCKS: &str = "INJECT_SOCKS";
pub const INJECT_SOCKS_ENTRIES: u32 = 64 * 1024;
