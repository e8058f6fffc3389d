//! The tracepoints the agent attaches its programs to, and what is lost
//! when an optional one cannot be attached. The agent's loader attaches
//! them; the bench attaches empty programs to the same ones, to measure
//! what the hooks alone cost (`cargo xtask bench --scenario saturation`).

/// A tracepoint program and what is lost when it cannot be attached.
pub struct Hook {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
    /// None: required, the agent cannot work without it.
    pub lost: Option<&'static str>,
}

const fn hook(
    program: &'static str,
    category: &'static str,
    name: &'static str,
    lost: Option<&'static str>,
) -> Hook {
    Hook {
        program,
        category,
        name,
        lost,
    }
}

/// The socket classifier's tracepoints, attached only when it is chosen.
pub const SOCK_HOOKS: &[Hook] = &[
    hook("sock_send_len", "sock", "sock_send_length", None),
    hook("sock_recv_len", "sock", "sock_recv_length", None),
];

/// The other tracepoints, attached whichever classifier is chosen.
pub const HOOKS: &[Hook] = &[
    hook(
        "enter_read",
        "syscalls",
        "sys_enter_read",
        Some("bytes read with read()"),
    ),
    hook(
        "exit_read",
        "syscalls",
        "sys_exit_read",
        Some("bytes read with read()"),
    ),
    hook(
        "enter_write",
        "syscalls",
        "sys_enter_write",
        Some("bytes written with write()"),
    ),
    hook(
        "exit_write",
        "syscalls",
        "sys_exit_write",
        Some("bytes written with write()"),
    ),
    hook(
        "enter_readv",
        "syscalls",
        "sys_enter_readv",
        Some("bytes read with readv()"),
    ),
    hook(
        "exit_readv",
        "syscalls",
        "sys_exit_readv",
        Some("bytes read with readv()"),
    ),
    hook(
        "enter_writev",
        "syscalls",
        "sys_enter_writev",
        Some("bytes written with writev()"),
    ),
    hook(
        "exit_writev",
        "syscalls",
        "sys_exit_writev",
        Some("bytes written with writev()"),
    ),
    hook(
        "enter_sendto",
        "syscalls",
        "sys_enter_sendto",
        Some("bytes sent with send()/sendto()"),
    ),
    hook(
        "exit_sendto",
        "syscalls",
        "sys_exit_sendto",
        Some("bytes sent with send()/sendto()"),
    ),
    hook(
        "enter_recvfrom",
        "syscalls",
        "sys_enter_recvfrom",
        Some("bytes received with recv()/recvfrom()"),
    ),
    hook(
        "exit_recvfrom",
        "syscalls",
        "sys_exit_recvfrom",
        Some("bytes received with recv()/recvfrom()"),
    ),
    hook(
        "enter_sendmsg",
        "syscalls",
        "sys_enter_sendmsg",
        Some("bytes sent with sendmsg()"),
    ),
    hook(
        "exit_sendmsg",
        "syscalls",
        "sys_exit_sendmsg",
        Some("bytes sent with sendmsg()"),
    ),
    hook(
        "enter_recvmsg",
        "syscalls",
        "sys_enter_recvmsg",
        Some("bytes received with recvmsg()"),
    ),
    hook(
        "exit_recvmsg",
        "syscalls",
        "sys_exit_recvmsg",
        Some("bytes received with recvmsg()"),
    ),
    hook(
        "enter_sendfile",
        "syscalls",
        "sys_enter_sendfile64",
        Some("response bodies sent with sendfile()"),
    ),
    hook(
        "exit_sendfile",
        "syscalls",
        "sys_exit_sendfile64",
        Some("response bodies sent with sendfile()"),
    ),
    hook(
        "exit_accept",
        "syscalls",
        "sys_exit_accept",
        Some("accept() boundaries (fd reuse detection)"),
    ),
    hook(
        "exit_accept4",
        "syscalls",
        "sys_exit_accept4",
        Some("accept4() boundaries (fd reuse detection)"),
    ),
    hook(
        "enter_connect",
        "syscalls",
        "sys_enter_connect",
        Some("connect() boundaries (fd reuse detection)"),
    ),
    hook(
        "exit_connect",
        "syscalls",
        "sys_exit_connect",
        Some("connect() boundaries (fd reuse detection)"),
    ),
    hook(
        "enter_close",
        "syscalls",
        "sys_enter_close",
        Some("close(): in-flight requests are flushed at process exit instead"),
    ),
    hook(
        "proc_exit",
        "sched",
        "sched_process_exit",
        Some("process exit: connections linger until evicted"),
    ),
    hook(
        "proc_exec",
        "sched",
        "sched_process_exec",
        Some("exec: process names may be stale"),
    ),
];
