//! Events the kernel programs send to the agent through the `EVENTS` ring
//! buffer. Every event starts with an [`EventHeader`]; a
//! [`EventKind::Data`] event continues with a [`Tuple`] and `captured`
//! payload bytes.

use crate::config::MAX_CAPTURE;

/// What an event reports. Sent as a `u8`; decoded with `TryFrom`, never
/// transmuted, so an unknown value is an error rather than UB.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Bytes moved on a TCP socket by a read/write family syscall.
    Data = 1,
    /// accept()/accept4() returned a new fd: the process is the server.
    Accept = 2,
    /// connect() on a TCP socket succeeded or is in progress: the process is the client.
    Connect = 3,
    /// close() of an fd that was seen moving TCP bytes.
    Close = 4,
    /// A process (thread group leader) exited.
    ProcessExit = 5,
    /// A process called exec(): cached metadata for its pid is stale.
    ProcessExec = 6,
    /// A thread entered a send on a known TCP socket with bytes that start
    /// an HTTP request. Sent at syscall *entry*, before the bytes can reach
    /// a peer on this node, so the agent learns of the client request
    /// before the server's read (whose data event may otherwise win the
    /// race to the ring buffer). `sk` identifies the socket.
    RequestIntent = 7,
    /// A thread read bytes that start an HTTP request on a socket, with TCP
    /// option propagation on: the trace context the kernel chose for the
    /// thread (from the peer's TCP option, or a new trace id). Sent just
    /// before the request's data event. See [`ContextEvent`].
    ServerContext = 8,
}

impl TryFrom<u8> for EventKind {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        Ok(match v {
            1 => Self::Data,
            2 => Self::Accept,
            3 => Self::Connect,
            4 => Self::Close,
            5 => Self::ProcessExit,
            6 => Self::ProcessExec,
            7 => Self::RequestIntent,
            8 => Self::ServerContext,
            other => return Err(other),
        })
    }
}

/// Which way the bytes went, seen from the traced process.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// write, writev, sendto, sendmsg.
    Egress = 0,
    /// read, readv, recvfrom, recvmsg.
    Ingress = 1,
}

impl TryFrom<u8> for Direction {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            0 => Ok(Self::Egress),
            1 => Ok(Self::Ingress),
            other => Err(other),
        }
    }
}

/// The syscall that produced a data event (diagnostics only).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    Read = 0,
    Write = 1,
    Readv = 2,
    Writev = 3,
    Sendto = 4,
    Recvfrom = 5,
    Sendmsg = 6,
    Recvmsg = 7,
    /// sendfile(): bytes move from a file to the socket, none are captured.
    Sendfile = 8,
    /// OpenSSL SSL_read/SSL_read_ex returned plaintext (a uretprobe).
    SslRead = 9,
    /// OpenSSL SSL_write/SSL_write_ex took plaintext (a uretprobe).
    SslWrite = 10,
}

impl TryFrom<u8> for Syscall {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        Ok(match v {
            0 => Self::Read,
            1 => Self::Write,
            2 => Self::Readv,
            3 => Self::Writev,
            4 => Self::Sendto,
            5 => Self::Recvfrom,
            6 => Self::Sendmsg,
            7 => Self::Recvmsg,
            8 => Self::Sendfile,
            9 => Self::SslRead,
            10 => Self::SslWrite,
            other => return Err(other),
        })
    }
}

impl Syscall {
    pub const fn direction(self) -> Direction {
        match self {
            Self::Read | Self::Readv | Self::Recvfrom | Self::Recvmsg | Self::SslRead => {
                Direction::Ingress
            }
            Self::Write
            | Self::Writev
            | Self::Sendto
            | Self::Sendmsg
            | Self::Sendfile
            | Self::SslWrite => Direction::Egress,
        }
    }
}

/// Common head of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// [`EventKind`].
    pub kind: u8,
    /// [`Direction`] for data events.
    pub direction: u8,
    /// [`Syscall`] for data events.
    pub syscall: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    pub tgid: u32,
    pub tid: u32,
    /// The fd the syscall acted on (the new fd for accept).
    pub fd: i32,
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns) at syscall entry; for a socket
    /// read's data event, and a send's that the kernel saw start with
    /// `HTTP` (a response head), its exit: the kernel does not read the
    /// clock at their entry (a read's exit says when the bytes came; a
    /// response's timing is its end, `ts_exit_ns`).
    pub ts_enter_ns: u64,
    /// CLOCK_MONOTONIC at syscall exit.
    pub ts_exit_ns: u64,
    /// Kernel address of the `struct sock`, an identity for the connection
    /// (0 when unknown).
    pub sk: u64,
    /// Syscall return value: bytes moved for data events.
    pub ret: i64,
    /// Payload bytes that follow the tuple (data events only).
    pub captured: u32,
    /// With [`FLAG_SEQ`]: the TCP stream position of the syscall's first
    /// byte in its direction (the socket's `write_seq` or `copied_seq`, a
    /// sequence number that wraps), so that the agent can name a point of
    /// the stream to the kernel (see `maps::SocketEntry::body_end`).
    pub seq: u32,
}

/// The payload is TLS plaintext, read at the TLS library (the socket
/// carries ciphertext, which the agent must ignore).
pub const FLAG_TLS: u8 = 1;
/// [`EventHeader::seq`] holds the stream position.
pub const FLAG_SEQ: u8 = 2;
/// The syscall moved only bytes of a body the agent skips: its data event
/// carries the length (`ret`) and no payload.
pub const FLAG_LENGTH_ONLY: u8 = 4;

/// Address family values as the kernel reports them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// A TCP connection's endpoints, seen from the traced process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// `AF_INET`, `AF_INET6`, or 0 when unknown.
    pub family: u16,
    /// Local port, host order.
    pub sport: u16,
    /// Remote port, host order.
    pub dport: u16,
    pub _pad: u16,
    /// Local address: IPv4 in the first 4 bytes, or IPv6.
    pub saddr: [u8; 16],
    /// Remote address: IPv4 in the first 4 bytes, or IPv6.
    pub daddr: [u8; 16],
}

/// A data event as built by the kernel in per-CPU scratch memory. Only
/// `size_of::<EventHeader>() + size_of::<Tuple>() + captured` bytes of it
/// are sent.
#[repr(C)]
pub struct DataEvent {
    pub hdr: EventHeader,
    pub tuple: Tuple,
    pub payload: [u8; MAX_CAPTURE],
}

/// Bytes of a data event before its payload.
pub const DATA_PREFIX: usize = core::mem::size_of::<EventHeader>() + core::mem::size_of::<Tuple>();

/// Trace context as the kernel chose it and as the TCP option carries it.
/// All zero when unknown (propagation off, or no cookie yet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl WireContext {
    pub fn is_valid(&self) -> bool {
        self.trace_id != [0; 16] && self.span_id != [0; 8]
    }
}

/// The trace a thread serves, as the kernel tracks it (map THREAD_TRACE,
/// keyed by tgid << 32 | tid): set when the thread reads a request, idle
/// (`in_flight` 0) once it has answered every request it read. The entry
/// stays between requests and leaves with its thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadTrace {
    pub trace_id: [u8; 16],
    /// Requests read and not yet answered by the thread.
    pub in_flight: u32,
    /// Non-zero when the thread had several requests in flight at once (an
    /// event loop): which one a client call serves is unknown, so client
    /// calls get a new trace instead of a guess, until all are answered.
    pub ambiguous: u32,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for ThreadTrace {}

/// A [`EventKind::RequestIntent`] event: the header (with `sk`) and the
/// connection's 4-tuple, so that the agent can offer the request to a
/// same-node server even on a connection it has not seen yet. With TCP
/// option propagation, `ctx` holds the ids the kernel generated for the
/// client span (trace id, span id), which the option on the wire carries:
/// the agent must report the span with exactly these.
#[repr(C)]
pub struct IntentEvent {
    pub hdr: EventHeader,
    pub tuple: Tuple,
    pub ctx: WireContext,
}

/// Where a [`ContextEvent`]'s context came from.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextSource {
    /// No option arrived: `ctx.trace_id` is a new trace id the kernel chose
    /// (and will put on this thread's client requests); `ctx.span_id` is 0.
    New = 0,
    /// The peer's TCP option: `ctx` is the calling client span.
    TcpOption = 1,
}

/// A [`EventKind::ServerContext`] event.
#[repr(C)]
pub struct ContextEvent {
    pub hdr: EventHeader,
    pub ctx: WireContext,
    /// A [`ContextSource`].
    pub source: u8,
    pub _pad: [u8; 7],
}

/// Bytes of an exec'd file name kept (longer names are cut).
pub const EXEC_FILENAME: usize = 256;

/// A [`EventKind::ProcessExec`] event: the header and the file name the
/// process exec'd, NUL-terminated. The agent uses the name when the
/// process is gone before it can read /proc (short-lived clients).
#[repr(C)]
pub struct ExecEvent {
    pub hdr: EventHeader,
    pub filename: [u8; EXEC_FILENAME],
}

/// Per-CPU counters kept by the kernel programs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Ring buffer full: an event was lost.
    RingbufFull = 0,
    /// The in-flight syscall map was full: a syscall went untraced.
    InflightFull = 1,
    /// Copying the payload from user memory failed (event sent without it).
    PayloadReadFailed = 2,
    /// Data events sent.
    DataEvents = 3,
    /// Control events (accept, connect, close, exit) sent.
    ControlEvents = 4,
    /// The socket-fd map was full: a close() may go unreported.
    SocketFdsFull = 5,
    /// Trace-context TCP options written on outgoing data segments.
    TcpOptWritten = 6,
    /// Segments of a traced request that had no room left for the option
    /// (TCP allows 40 option bytes; SACK blocks can use them).
    TcpOptNoRoom = 7,
    /// Trace-context TCP options read from incoming segments.
    TcpOptRead = 8,
    /// Server requests whose socket had no cookie (opened before the
    /// agent, or outside the sock_ops cgroup): no TCP option context.
    TcpOptNoCookie = 9,
    /// `traceparent` headers injected into outgoing requests.
    HeaderInjected = 10,
    /// Requests left alone because they already carried a `traceparent`.
    HeaderAlreadyPresent = 11,
    /// Requests left alone because their head was not complete within the
    /// first 1024 bytes of the send (a `traceparent` could hide further on).
    HeaderHeadTooLong = 12,
    /// Injections that failed in the kernel (the request left unchanged).
    HeaderInjectFailed = 13,
    /// Connections not added for injection (SockHash full or refused).
    HeaderSockhashFull = 14,
    /// `tracestate` lines injected after the `traceparent` (the inbound
    /// request of the sending thread had one).
    TracestateInjected = 15,
    /// Inbound `tracestate` not propagated: over 512 bytes, in several
    /// header lines, or with bytes outside printable ASCII.
    TracestateDropped = 16,
    /// Syscalls whose payload was not sent because the agent muted their
    /// connection (not HTTP, or outside `--open-ports`).
    PayloadsMuted = 17,
    /// Socket syscalls inside a body the agent skips: their data event
    /// carried the length only.
    PayloadsLengthOnly = 18,
}

/// Number of [`Counter`] slots.
pub const COUNTER_SLOTS: u32 = 32;

impl Counter {
    pub const ALL: [Counter; 19] = [
        Counter::RingbufFull,
        Counter::InflightFull,
        Counter::PayloadReadFailed,
        Counter::DataEvents,
        Counter::ControlEvents,
        Counter::SocketFdsFull,
        Counter::TcpOptWritten,
        Counter::TcpOptNoRoom,
        Counter::TcpOptRead,
        Counter::TcpOptNoCookie,
        Counter::HeaderInjected,
        Counter::HeaderAlreadyPresent,
        Counter::HeaderHeadTooLong,
        Counter::HeaderInjectFailed,
        Counter::HeaderSockhashFull,
        Counter::TracestateInjected,
        Counter::TracestateDropped,
        Counter::PayloadsMuted,
        Counter::PayloadsLengthOnly,
    ];

    /// What the counter counts (the metric's HELP text).
    pub const fn help(self) -> &'static str {
        match self {
            Counter::RingbufFull => "kernel events lost because the ring buffer was full",
            Counter::InflightFull => "syscalls not traced because the in-flight map was full",
            Counter::PayloadReadFailed => {
                "data events sent without their payload (user memory unreadable)"
            }
            Counter::DataEvents => "data events the kernel put in the ring buffer",
            Counter::ControlEvents => {
                "control events (accept, connect, close, exit, exec, intent, context) the kernel put in the ring buffer"
            }
            Counter::SocketFdsFull => {
                "socket fds not remembered because the map was full (their close may go unreported)"
            }
            Counter::TcpOptWritten => "trace-context TCP options written on outgoing data segments",
            Counter::TcpOptNoRoom => {
                "segments of traced requests that had no TCP option room left (sent without the option)"
            }
            Counter::TcpOptRead => "trace-context TCP options read from incoming segments",
            Counter::TcpOptNoCookie => {
                "server requests on sockets without a cookie (opened before the agent or outside --cgroup): no TCP option context"
            }
            Counter::HeaderInjected => "traceparent headers injected into outgoing requests",
            Counter::HeaderAlreadyPresent => {
                "requests not injected because they already carried a traceparent"
            }
            Counter::HeaderHeadTooLong => {
                "requests not injected because their head did not end within the first 1024 bytes of the send"
            }
            Counter::HeaderInjectFailed => {
                "injections that failed in the kernel (request unchanged)"
            }
            Counter::HeaderSockhashFull => {
                "connections not chosen for injection because the SockHash refused them"
            }
            Counter::TracestateInjected => {
                "tracestate headers injected after an injected traceparent"
            }
            Counter::TracestateDropped => {
                "inbound tracestate values not propagated (over 512 bytes, several lines, or not printable ASCII)"
            }
            Counter::PayloadsMuted => {
                "socket syscalls whose payload was not sent: their connection is muted (not HTTP, or outside --open-ports)"
            }
            Counter::PayloadsLengthOnly => {
                "socket syscalls inside the body the agent skips (the middle of a large body): their data event carried the length only"
            }
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Counter::RingbufFull => "ringbuf_full",
            Counter::InflightFull => "inflight_full",
            Counter::PayloadReadFailed => "payload_read_failed",
            Counter::DataEvents => "data_events",
            Counter::ControlEvents => "control_events",
            Counter::SocketFdsFull => "socket_fds_full",
            Counter::TcpOptWritten => "tcp_options_written",
            Counter::TcpOptNoRoom => "tcp_options_no_room",
            Counter::TcpOptRead => "tcp_options_read",
            Counter::TcpOptNoCookie => "tcp_options_no_cookie",
            Counter::HeaderInjected => "traceparent_injected",
            Counter::HeaderAlreadyPresent => "traceparent_already_present",
            Counter::HeaderHeadTooLong => "traceparent_head_too_long",
            Counter::HeaderInjectFailed => "traceparent_inject_failed",
            Counter::HeaderSockhashFull => "traceparent_sockhash_full",
            Counter::TracestateInjected => "tracestate_injected",
            Counter::TracestateDropped => "tracestate_dropped",
            Counter::PayloadsMuted => "payloads_muted",
            Counter::PayloadsLengthOnly => "payloads_length_only",
        }
    }
}

#[cfg(feature = "user")]
pub mod user;
