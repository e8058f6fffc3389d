//! The agent's judgements, handed back to the kernel so that what it will
//! not trace stops costing: processes that `--exe-path` leaves out go into
//! UNTRACED_PIDS (their syscalls then end at one lookup), and connections
//! that are not HTTP, or outside `--open-ports`, get muted in SOCKET_FDS
//! (their syscalls then send no payload). And the middle of a long
//! Content-Length body, which the parser frames by counting, is sent as
//! lengths only. Userspace still applies the whole selection; these only
//! save work, so a refused update (a full map) costs CPU, never a span.

use anyhow::Context;
use aya::{
    maps::{HashMap, MapData, MapError},
    sys::SyscallError,
};
use wirespan_common::maps::{
    SOCKET_FDS, SOCKET_MUTE_BITS, SOCKET_MUTED, SOCKET_MUTED_TLS, SocketEntry, UNTRACED_PIDS,
};

/// BPF_EXIST: update an entry, never create one.
const BPF_EXIST: u64 = 2;

/// What a connection stops sending when muted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mute {
    /// The socket syscalls' bytes (a TLS connection's ciphertext, or bytes
    /// that are not HTTP), not the TLS library's plaintext.
    Socket,
    /// Everything: the connection is not traced at all.
    All,
}

impl Mute {
    /// The bits of `SocketEntry::sk` that say it.
    pub fn bits(self) -> u64 {
        match self {
            Mute::Socket => SOCKET_MUTED,
            Mute::All => SOCKET_MUTED | SOCKET_MUTED_TLS,
        }
    }
}

/// What became of something told about a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Told {
    Yes,
    /// The fd no longer holds that socket (closed, or reused): nothing
    /// left to tell.
    Gone,
    /// The kernel refused the update.
    Refused,
}

/// Where the connection table sends its judgements.
pub trait KernelFilter: Send {
    /// The process `tgid` is not traced. False when the kernel refused.
    fn untrace_process(&mut self, tgid: u32) -> bool;
    /// The connection on `fd` of `tgid`, socket `sk`, sends no more of what
    /// `mute` says.
    fn mute(&mut self, tgid: u32, fd: i32, sk: u64, mute: Mute) -> Told;
    /// The connection on `fd` of `tgid` gets `entry` as its SOCKET_FDS
    /// value, if it has one: its syscalls in a direction whose bytes all
    /// lie before that direction's `body_end` (a stream position, see
    /// `EventHeader::seq`) send their length only. `entry` repeats what
    /// the agent told before (socket, mute bits, the other direction's
    /// end), so that one write does, without reading the value first.
    fn skip_body(&mut self, tgid: u32, fd: i32, entry: SocketEntry) -> Told;
}

/// The kernel maps behind [`KernelFilter`].
pub struct KernelMaps {
    /// Only when the kernel was told to consult it (`untraced_filter`).
    pids: Option<HashMap<MapData, u32, u8>>,
    socks: HashMap<MapData, u64, SocketEntry>,
}

impl KernelMaps {
    /// Takes the maps out of the object. `untraced_filter`: whether the
    /// kernel programs consult UNTRACED_PIDS (the config says so).
    pub fn take(ebpf: &mut aya::Ebpf, untraced_filter: bool) -> anyhow::Result<Self> {
        let pids = if untraced_filter {
            let map = ebpf
                .take_map(UNTRACED_PIDS)
                .context("map UNTRACED_PIDS missing")?;
            Some(HashMap::try_from(map)?)
        } else {
            None
        };
        let socks = ebpf
            .take_map(SOCKET_FDS)
            .context("map SOCKET_FDS missing")?;
        Ok(Self {
            pids,
            socks: HashMap::try_from(socks)?,
        })
    }
}

/// Whether `tgid` runs: it has a /proc entry and is not a zombie (a
/// zombie has already passed the kernel's exit hook).
fn alive(tgid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{tgid}/stat")) else {
        return false;
    };
    // The state follows the command name, which may hold ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

impl KernelFilter for KernelMaps {
    fn untrace_process(&mut self, tgid: u32) -> bool {
        let Some(pids) = &mut self.pids else {
            return true;
        };
        if pids.insert(tgid, 1, 0).is_err() {
            return false;
        }
        // The kernel drops the entry when the process exits; one that
        // exited before the insert would leave it to whoever gets the pid
        // next. Checked after the insert, so that an exit in between is
        // seen either here or by the kernel.
        if !alive(tgid) {
            let _ = pids.remove(&tgid);
        }
        true
    }

    fn mute(&mut self, tgid: u32, fd: i32, sk: u64, mute: Mute) -> Told {
        let key = (u64::from(tgid) << 32) | u64::from(fd as u32);
        // Only the entry of this very socket: the fd may have been closed
        // (entry gone) or reused since. A socket swapped in between the get
        // and the update keeps working: the kernel acts on an entry only
        // when its socket is the one in hand. The kernel itself writes only
        // a `body_end` it has passed: one put back here is passed too, and
        // cleared again.
        let Ok(mut value) = self.socks.get(&key, 0) else {
            return Told::Gone;
        };
        if value.sk & !SOCKET_MUTE_BITS != sk {
            return Told::Gone;
        }
        value.sk |= mute.bits();
        write_existing(&mut self.socks, key, value)
    }

    fn skip_body(&mut self, tgid: u32, fd: i32, entry: SocketEntry) -> Told {
        // Written blind: if the fd now holds another socket, the kernel
        // sees a socket that is not its own and starts the entry afresh
        // at its next syscall (nothing skipped, nothing muted); if the
        // kernel cleared an end that had passed, it clears it again.
        let key = (u64::from(tgid) << 32) | u64::from(fd as u32);
        write_existing(&mut self.socks, key, entry)
    }
}

/// Updates `key` only if present.
fn write_existing(
    socks: &mut HashMap<MapData, u64, SocketEntry>,
    key: u64,
    v: SocketEntry,
) -> Told {
    match socks.insert(key, v, BPF_EXIST) {
        Ok(()) => Told::Yes,
        // Closed meanwhile (BPF_EXIST found none).
        Err(MapError::SyscallError(SyscallError { io_error, .. }))
            if io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Told::Gone
        }
        Err(_) => Told::Refused,
    }
}
