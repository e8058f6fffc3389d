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
pub const SOCKET_FDS_ENTRIES: u32 = 64 * 1024;

/// tgids selected with `--pid` (value unused), when `pid_filter` is set.
pub const SELECTED_PIDS: &str = "SELECTED_PIDS";
/// Capacity of [`SELECTED_PIDS`]: more `--pid`s than this are refused.
pub const SELECTED_PIDS_ENTRIES: u32 = 1024;
