//! Every map the kernel programs share, with names from `wirespan_common::maps`.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use wirespan_common::{
    event::{COUNTER_SLOTS, DataEvent},
    maps::{
        EVENTS_BYTES, INFLIGHT_ENTRIES, SELECTED_PIDS_ENTRIES, SOCKET_FDS_ENTRIES, SocketEntry,
        UNTRACED_PIDS_ENTRIES,
    },
};

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// The last forced wake-up of the agent from this CPU for an urgent
/// record, in ktime ns.
#[map(name = "WAKE_AT")]
pub static WAKE_AT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Urgent wake-ups per CPU are at least this far apart (see
/// [`urgent_wakeup`]).
const WAKE_URGENT_EVERY_NS: u64 = 1_000_000;

/// Wake-up flags for a record of `len` bytes about to go into EVENTS.
///
/// The default (adaptive) wake-up costs an irq_work, i.e. a self-IPI, for
/// every record the agent has not yet caught up with: with the agent idle
/// between events that is every record, and in a VM the IPI is an APIC MSR
/// write that traps to the hypervisor (measured: most of exit_writev's
/// 5.8 us per run). So records do not wake the agent: it drains on a timer
/// (`capture::POLL_INTERVAL`), and crossing a quarter of the ring wakes it
/// at once so that a burst cannot fill the ring between two ticks.
/// Crossing, not being above: a lagging agent must not bring the IPI back
/// for every record.
///
/// Until 2026-11 a CPU also woke the agent once per 5 ms: at saturation
/// those IPIs were ~2% of the probes' time (perf: `native_write_msr` under
/// `irq_work_queue`), and each record read the clock to decide. The tick
/// delivers the same records at most 10 ms later, and span times come from
/// the records.
#[inline(always)]
pub fn batched_wakeup(len: u64) -> u64 {
    if crosses_mark(len) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// [`batched_wakeup`] for a record whose answer from the agent saves work
/// if it comes soon (the head of a long message: the agent then tells the
/// kernel to skip its body): at most one wake-up per CPU per
/// `WAKE_URGENT_EVERY_NS`, so that a service whose every response is long
/// costs at most a thousand wake-ups a second per CPU, not one each. `now`
/// is the record's own `bpf_ktime_get_ns()`: the clock is not cheap to read
/// (~100 ns here; perf: `read_tsc`).
#[inline(always)]
pub fn urgent_wakeup(len: u64, now: u64) -> u64 {
    if crosses_mark(len) {
        return BPF_RB_FORCE_WAKEUP as u64;
    }
    let Some(last) = WAKE_AT.get_ptr_mut(0) else {
        return BPF_RB_NO_WAKEUP as u64;
    };
    // SAFETY: `last` is this CPU's slot, ours while this program runs.
    unsafe {
        if now.wrapping_sub(*last) >= WAKE_URGENT_EVERY_NS {
            *last = now;
            return BPF_RB_FORCE_WAKEUP as u64;
        }
    }
    BPF_RB_NO_WAKEUP as u64
}

/// Whether a record of `len` bytes takes the ring's unread bytes across a
/// quarter of its size.
#[inline(always)]
fn crosses_mark(len: u64) -> bool {
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let mark = EVENTS.query(BPF_RB_RING_SIZE as u64) / 4;
    avail < mark && avail + len >= mark
}

#[map(name = "SELECTED_PIDS")]
pub static SELECTED_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(SELECTED_PIDS_ENTRIES, 0);

#[map(name = "UNTRACED_PIDS")]
pub static UNTRACED_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(UNTRACED_PIDS_ENTRIES, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Per thread: its current syscall, from sys_enter to sys_exit, and what
/// the TLS probes need of it. LRU so that threads that die unseen cannot
/// fill it.
#[map(name = "INFLIGHT")]
pub static INFLIGHT: LruHashMap<u64, Thread> = LruHashMap::with_max_entries(INFLIGHT_ENTRIES, 0);

/// A thread's entry in INFLIGHT. One entry, looked up once per program,
/// rather than one map per purpose (each lookup costs ~50 ns).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Thread {
    pub sys: Inflight,
    /// The TCP socket this thread read last, for TLS stacks that do their
    /// own I/O through memory BIOs (see `tls::resolve_socket`).
    pub last_read_sk: u64,
    pub last_read_fd: i32,
    /// Non-zero while the thread is inside an SSL_* call: only then can a
    /// syscall's bytes be ciphertext that `tls` accounts for.
    pub in_tls: u8,
    pub _pad: [u8; 3],
}

/// (tgid << 32 | fd) -> the socket of fds seen moving TCP bytes, so that
/// close() is reported only for those, and the 4-tuple is read only once
/// per socket. The agent sets the sk's low bits to mute a connection it
/// will not trace (`wirespan_common::maps::SOCKET_MUTED`), and `body_end`
/// to skip the middle of a body.
#[map(name = "SOCKET_FDS")]
pub static SOCKET_FDS: LruHashMap<u64, SocketEntry> =
    LruHashMap::with_max_entries(SOCKET_FDS_ENTRIES, 0);

/// Scratch space for building a data event: far beyond the 512-byte stack.
/// Twice the payload cap so that a bounded offset plus a bounded length
/// always stays inside the value, which the verifier can prove.
#[repr(C)]
pub struct Scratch {
    pub ev: DataEvent,
    pub overflow: [u8; wirespan_common::config::MAX_CAPTURE],
    /// A value parked in map memory so that the verifier forgets what it
    /// knew of it (see [`forget`]).
    pub stash: u64,
    /// The inbound `traceparent` parsed by `inbound`: written here, in map
    /// memory, rather than on the stack, where the verifier would track
    /// every byte on every path.
    pub inbound: wirespan_common::event::WireContext,
    /// What a read program hands to the program it tail-calls (the
    /// scratch itself stays: same CPU, no preemption in between).
    pub tail: TailArgs,
}

#[repr(C)]
pub struct TailArgs {
    /// pid_tgid of the reading thread.
    pub id: u64,
    /// Payload bytes in `ev.payload`.
    pub got: u64,
    /// What `inbound::count` found: lines, and the first one's value offset.
    pub lines: u64,
    pub first: u64,
}

#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// One syscall in flight.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Inflight {
    /// bpf_ktime_get_ns at entry; 0 for a socket read and a response head's
    /// send, whose entry times are of no use (see `syscalls::on_enter`).
    pub ts_enter: u64,
    /// Buffer (read/write/sendto/recvfrom), iovec array (readv/writev) or
    /// user_msghdr (sendmsg/recvmsg).
    pub buf: u64,
    /// iovcnt for readv/writev.
    pub iovcnt: u64,
    /// Filled by sock:sock_*_length when the fd is an INET TCP socket.
    pub sk: u64,
    pub fd: i32,
    pub syscall: u8,
    /// 1 when the entry tracks connect().
    pub is_connect: u8,
    /// 1 from sys_enter to sys_exit. A thread's entry stays in the map
    /// between its syscalls and is rewritten in place (see [`put_inflight`]).
    pub live: u8,
    /// What the first bytes of an egress buffer are, read once at sys_enter
    /// and reused at sys_exit: one of the `START_*` values.
    pub start: u8,
}

/// `Inflight::start` values.
pub const START_UNKNOWN: u8 = 0;
pub const START_NONE: u8 = 1;
pub const START_REQUEST: u8 = 2;
pub const START_RESPONSE: u8 = 3;

impl Inflight {
    /// No syscall in flight.
    pub const IDLE: Inflight = Inflight {
        ts_enter: 0,
        buf: 0,
        iovcnt: 0,
        sk: 0,
        fd: -1,
        syscall: 0,
        is_connect: 0,
        live: 0,
        start: START_UNKNOWN,
    };
}

/// Thread `id`'s entry, created when missing (None when the map refused).
#[inline(always)]
pub fn thread_entry(id: u64) -> Option<*mut Thread> {
    if let Some(p) = INFLIGHT.get_ptr_mut(id) {
        return Some(p);
    }
    let t = Thread {
        sys: Inflight::IDLE,
        last_read_sk: 0,
        last_read_fd: -1,
        in_tls: 0,
        _pad: [0; 3],
    };
    INFLIGHT.insert(id, t, 0).ok()?;
    INFLIGHT.get_ptr_mut(id)
}

/// Records the syscall `inf` of thread `id`. The thread's entry from its
/// previous syscall is overwritten in place: an LRU insert and delete per
/// syscall cost ~4x a lookup (bpf_stats: enter_recvfrom 740 ns per run with
/// them). Entries leave with their thread (`proc_exit`) or by LRU eviction.
#[inline(always)]
pub fn put_inflight(id: u64, inf: &Inflight) -> bool {
    if let Some(p) = INFLIGHT.get_ptr_mut(id) {
        // SAFETY: this thread's own entry; only this thread writes it.
        unsafe { (*p).sys = *inf };
        return true;
    }
    let t = Thread {
        sys: *inf,
        last_read_sk: 0,
        last_read_fd: -1,
        in_tls: 0,
        _pad: [0; 3],
    };
    INFLIGHT.insert(id, t, 0).is_ok()
}

/// The syscall thread `id` entered, marked finished: what sys_exit_* reads,
/// with the thread's entry.
#[inline(always)]
pub fn take_inflight(id: u64) -> Option<(Inflight, *mut Thread)> {
    let p = INFLIGHT.get_ptr_mut(id)?;
    // SAFETY: this thread's own entry; only this thread writes it.
    unsafe {
        let inf = (*p).sys;
        if inf.live == 0 {
            return None;
        }
        (*p).sys.live = 0;
        Some((inf, p))
    }
}

/// `v`, stored in map memory (`slot`) and read back: the verifier keeps no
/// bounds or value for what it loads from a map, so the paths that reach
/// here with different knowledge of `v` (one per exit of a scan loop, say)
/// go on as one state, verified once instead of once per path ("BPF
/// program is too large. Processed 1000001 insn"). Callers bound the
/// result again with their masks and checks.
#[inline(always)]
pub fn forget(slot: &mut u64, v: usize) -> usize {
    // SAFETY: plain accesses to a map value the caller holds exclusively.
    unsafe {
        core::ptr::write_volatile(slot, v as u64);
        core::ptr::read_volatile(slot) as usize
    }
}
