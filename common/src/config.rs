//! Runtime configuration the agent hands to the kernel programs.

/// Largest payload prefix the kernel can copy per event. The configured cap
/// (`--capture-bytes`) must not exceed it. A power of two so that the kernel
/// can bound lengths with a mask, which the verifier understands.
pub const MAX_CAPTURE: usize = 4096;

/// Offsets into kernel structs, read at start from /sys/kernel/btf/vmlinux.
///
/// Rust eBPF programs get no CO-RE relocations from aya, so the agent
/// resolves these itself and passes them in. A value of `u32::MAX` means
/// "not found"; the kernel then skips whatever needs it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    /// `struct sock_common.skc_family` (u16).
    pub skc_family: u32,
    /// `struct sock_common.skc_daddr` (IPv4 remote, network order).
    pub skc_daddr: u32,
    /// `struct sock_common.skc_rcv_saddr` (IPv4 local, network order).
    pub skc_rcv_saddr: u32,
    /// `struct sock_common.skc_dport` (u16, network order).
    pub skc_dport: u32,
    /// `struct sock_common.skc_num` (u16, host order local port).
    pub skc_num: u32,
    /// `struct sock_common.skc_v6_daddr` (16 bytes).
    pub skc_v6_daddr: u32,
    /// `struct sock_common.skc_v6_rcv_saddr` (16 bytes).
    pub skc_v6_rcv_saddr: u32,
    /// `struct sock_common.skc_cookie` (atomic64_t): the socket cookie, the
    /// key sock_ops programs use (`bpf_get_socket_cookie`). 0 until a
    /// program or the kernel asked for it.
    pub skc_cookie: u32,
    /// `struct tcp_sock.copied_seq` (u32): the position of the next byte
    /// the application reads.
    pub tcp_copied_seq: u32,
    /// `struct tcp_sock.write_seq` (u32): the position after the last byte
    /// the application wrote.
    pub tcp_write_seq: u32,
}

impl SockOffsets {
    /// Every offset unknown: the kernel reads no 4-tuple.
    pub const UNKNOWN: Self = Self {
        skc_family: u32::MAX,
        skc_daddr: u32::MAX,
        skc_rcv_saddr: u32::MAX,
        skc_dport: u32::MAX,
        skc_num: u32::MAX,
        skc_v6_daddr: u32::MAX,
        skc_v6_rcv_saddr: u32::MAX,
        skc_cookie: u32::MAX,
        tcp_copied_seq: u32::MAX,
        tcp_write_seq: u32::MAX,
    };
}

/// Offsets for walking a task's file table to the `struct sock` behind an
/// fd: task_struct.files -> files_struct.fdt -> fdtable.fd[fd] -> file
/// -> private_data (struct socket) -> sk. Used where the
/// `sock:sock_*_length` tracepoints are missing (kernels before 6.2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdTableOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_private_data: u32,
    pub file_f_inode: u32,
    pub inode_i_mode: u32,
    pub socket_sk: u32,
    /// `struct socket.type` (short): SOCK_STREAM for TCP.
    pub socket_type: u32,
    pub _pad: u32,
}

impl FdTableOffsets {
    /// Every offset unknown: the file-table walk is disabled.
    pub const UNKNOWN: Self = Self {
        task_files: u32::MAX,
        files_fdt: u32::MAX,
        fdtable_max_fds: u32::MAX,
        fdtable_fd: u32::MAX,
        file_private_data: u32::MAX,
        file_f_inode: u32::MAX,
        inode_i_mode: u32::MAX,
        socket_sk: u32::MAX,
        socket_type: u32::MAX,
        _pad: 0,
    };

    /// Whether the walk has every offset it needs.
    pub fn complete(&self) -> bool {
        [
            self.task_files,
            self.files_fdt,
            self.fdtable_max_fds,
            self.fdtable_fd,
            self.file_private_data,
            self.file_f_inode,
            self.inode_i_mode,
            self.socket_sk,
            self.socket_type,
        ]
        .iter()
        .all(|&v| v != u32::MAX)
    }
}

/// How the kernel programs tell INET TCP socket fds from everything else.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classifier {
    /// `sock:sock_{send,recv}_length` tracepoints (Linux 6.2+) mark the
    /// syscall in flight and give its `struct sock`.
    SockTracepoints = 0,
    /// Walk current->files->fdt->fd[fd] to the file, check the inode is a
    /// socket, and read `struct socket.sk`, with offsets from BTF.
    FdTable = 1,
}

/// Configuration read by every kernel program from the `CONFIG` global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// The agent's own tgid: its syscalls are never traced.
    pub agent_tgid: u32,
    /// Payload bytes to copy per event, at most [`MAX_CAPTURE`].
    pub capture_bytes: u32,
    /// Non-zero when `--pid` was given: only tgids in the `SELECTED_PIDS`
    /// map are traced, so unselected processes cost the ring buffer
    /// nothing. Userspace still applies the full selection.
    pub pid_filter: u32,
    /// Payload bytes to copy when the bytes start like an HTTP/1 message
    /// (a method or `HTTP/1.`), at most [`MAX_CAPTURE`]: heads, and batches
    /// of pipelined requests, are often longer than `capture_bytes`.
    pub head_capture_bytes: u32,
    pub sock: SockOffsets,
    pub fdtable: FdTableOffsets,
    /// A [`Classifier`] value.
    pub classifier: u32,
    /// `PROPAGATE_*` bits: how trace context crosses the wire.
    pub propagation: u32,
    /// Non-zero when the agent selects processes by something the kernel
    /// cannot see (`--exe-path`): tgids in the `UNTRACED_PIDS` map, which
    /// the agent fills as it judges them, are not traced.
    pub untraced_filter: u32,
    pub _pad: u32,
}

/// Trace context travels in a TCP header option (sock_ops): client
/// requests get kernel-generated ids, which the option carries.
pub const PROPAGATE_TCP_OPTION: u32 = 1;
/// Trace context is written into outgoing HTTP/1 requests as a
/// `traceparent` header (sk_msg), on sockets to allowlisted ports.
pub const PROPAGATE_HEADER: u32 = 2;
/// With [`PROPAGATE_HEADER`]: only connections whose destination address
/// is in the INJECT_CIDRS trie (`--inject-cidrs`) get the header.
pub const PROPAGATE_HEADER_CIDRS: u32 = 4;

/// The experimental TCP option (RFC 6994, kind 254) that carries trace
/// context: kind, length, the 16-bit ExID, then trace id (16 bytes) and
/// span id (8 bytes).
pub const TCP_OPT_KIND: u8 = 254;
pub const TCP_OPT_EXID: [u8; 2] = [0x57, 0x53]; // "WS"
pub const TCP_OPT_LEN: usize = 28;

#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelConfig {}
