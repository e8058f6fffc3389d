//! Userspace decoding of ring-buffer records. Records are read by copying
//! (`read_unaligned`), never by casting the buffer, because ring-buffer
//! memory carries no alignment promise for our structs.

use core::fmt;
use core::mem::size_of;

use super::{
    ContextSource, DATA_PREFIX, Direction, EventHeader, EventKind, Syscall, Tuple, WireContext,
};

/// A decoded ring-buffer record, borrowing its payload.
#[derive(Debug)]
pub struct Event<'a> {
    pub kind: EventKind,
    pub hdr: EventHeader,
    /// Data events only.
    pub data: Option<DataPart<'a>>,
    /// Exec events only: the file name exec'd (without its NUL).
    pub exec_filename: Option<&'a [u8]>,
    /// Request-intent events only: the connection's 4-tuple.
    pub intent_tuple: Option<Tuple>,
    /// Request-intent events: the ids the kernel chose for the client span
    /// (when TCP option propagation is on). Server-context events: the
    /// thread's trace, and the calling client span when `from_peer`.
    pub context: Option<KernelContext>,
}

/// Trace context chosen in the kernel (see `crate::event::WireContext`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelContext {
    pub ctx: WireContext,
    /// The context came in a peer's TCP option (`ctx.span_id` is the
    /// calling client span); else the kernel made a new trace id.
    pub from_peer: bool,
}

#[derive(Debug)]
pub struct DataPart<'a> {
    pub direction: Direction,
    pub syscall: Option<Syscall>,
    pub tuple: Tuple,
    pub payload: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Short { need: usize, got: usize },
    UnknownKind(u8),
    UnknownDirection(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short { need, got } => {
                write!(f, "record too short: need {need} bytes, got {got}")
            }
            Self::UnknownKind(k) => write!(f, "unknown event kind {k}"),
            Self::UnknownDirection(d) => write!(f, "unknown direction {d}"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn read<T: Copy>(buf: &[u8], at: usize) -> Result<T, DecodeError> {
    let need = at + size_of::<T>();
    if buf.len() < need {
        return Err(DecodeError::Short {
            need,
            got: buf.len(),
        });
    }
    // SAFETY: bounds checked above; T is a plain-old-data repr(C) struct.
    Ok(unsafe { core::ptr::read_unaligned(buf.as_ptr().add(at).cast::<T>()) })
}

/// Decodes one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<Event<'_>, DecodeError> {
    let hdr: EventHeader = read(buf, 0)?;
    let kind = EventKind::try_from(hdr.kind).map_err(DecodeError::UnknownKind)?;
    let data = if kind == EventKind::Data {
        let tuple: Tuple = read(buf, size_of::<EventHeader>())?;
        let direction =
            Direction::try_from(hdr.direction).map_err(DecodeError::UnknownDirection)?;
        let end = DATA_PREFIX + hdr.captured as usize;
        let payload = buf.get(DATA_PREFIX..end).ok_or(DecodeError::Short {
            need: end,
            got: buf.len(),
        })?;
        Some(DataPart {
            direction,
            syscall: Syscall::try_from(hdr.syscall).ok(),
            tuple,
            payload,
        })
    } else {
        None
    };
    let exec_filename = if kind == EventKind::ProcessExec {
        buf.get(size_of::<EventHeader>()..).map(|rest| {
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            &rest[..end.min(super::EXEC_FILENAME)]
        })
    } else {
        None
    };
    let intent_tuple = if kind == EventKind::RequestIntent {
        Some(read::<Tuple>(buf, size_of::<EventHeader>())?)
    } else {
        None
    };
    let context = match kind {
        EventKind::RequestIntent => {
            let ctx: WireContext = read(buf, size_of::<EventHeader>() + size_of::<Tuple>())?;
            ctx.is_valid().then_some(KernelContext {
                ctx,
                from_peer: false,
            })
        }
        EventKind::ServerContext => {
            let ctx: WireContext = read(buf, size_of::<EventHeader>())?;
            let source: u8 = read(buf, size_of::<EventHeader>() + size_of::<WireContext>())?;
            let from_peer = source == ContextSource::TcpOption as u8 && ctx.is_valid();
            (ctx.trace_id != [0; 16]).then_some(KernelContext { ctx, from_peer })
        }
        _ => None,
    };
    Ok(Event {
        kind,
        hdr,
        data,
        exec_filename,
        intent_tuple,
        context,
    })
}

impl<'a> Event<'a> {
    /// A data event from its parts, as [`decode`] gives it: for what feeds
    /// events without a ring buffer (tests, benchmarks of the agent's own
    /// work). `hdr` gets the kind and `dir`.
    pub fn data(mut hdr: EventHeader, dir: Direction, tuple: Tuple, payload: &'a [u8]) -> Self {
        hdr.kind = EventKind::Data as u8;
        hdr.direction = dir as u8;
        Self {
            kind: EventKind::Data,
            data: Some(DataPart {
                direction: dir,
                syscall: Syscall::try_from(hdr.syscall).ok(),
                tuple,
                payload,
            }),
            hdr,
            exec_filename: None,
            intent_tuple: None,
            context: None,
        }
    }
}

impl Tuple {
    /// An IPv4 4-tuple.
    pub fn v4(local: [u8; 4], sport: u16, remote: [u8; 4], dport: u16) -> Self {
        let mut t = Self {
            family: super::AF_INET,
            sport,
            dport,
            ..Self::default()
        };
        t.saddr[..4].copy_from_slice(&local);
        t.daddr[..4].copy_from_slice(&remote);
        t
    }

    /// Local endpoint.
    pub fn local(&self) -> Option<std::net::SocketAddr> {
        self.addr(&self.saddr, self.sport)
    }

    /// Remote endpoint.
    pub fn remote(&self) -> Option<std::net::SocketAddr> {
        self.addr(&self.daddr, self.dport)
    }

    fn addr(&self, raw: &[u8; 16], port: u16) -> Option<std::net::SocketAddr> {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let ip = match self.family {
            super::AF_INET => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
            super::AF_INET6 => {
                let v6 = Ipv6Addr::from(*raw);
                // Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d.
                match v6.to_ipv4_mapped() {
                    Some(v4) => IpAddr::V4(v4),
                    None => IpAddr::V6(v6),
                }
            }
            _ => return None,
        };
        Some(std::net::SocketAddr::new(ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> &[u8] {
        // SAFETY: test-only view of a repr(C) value as bytes.
        unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
    }

    #[test]
    fn decodes_data_event_with_payload() {
        let hdr = EventHeader {
            kind: 1,
            direction: 1,
            captured: 3,
            tgid: 7,
            ..Default::default()
        };
        let tuple = Tuple {
            family: super::super::AF_INET,
            sport: 80,
            dport: 5000,
            ..Default::default()
        };
        let mut buf = bytes_of(&hdr).to_vec();
        buf.extend_from_slice(bytes_of(&tuple));
        buf.extend_from_slice(b"GET");
        let ev = decode(&buf).unwrap();
        assert_eq!(ev.kind, EventKind::Data);
        let d = ev.data.unwrap();
        assert_eq!(d.payload, b"GET");
        assert_eq!(d.direction, Direction::Ingress);
        assert_eq!(d.tuple.local().unwrap().port(), 80);
    }

    #[test]
    fn rejects_truncated_and_unknown() {
        let hdr = EventHeader {
            kind: 1,
            captured: 10,
            ..Default::default()
        };
        let mut buf = bytes_of(&hdr).to_vec();
        buf.extend_from_slice(bytes_of(&Tuple::default()));
        assert!(matches!(decode(&buf), Err(DecodeError::Short { .. })));
        let hdr = EventHeader {
            kind: 99,
            ..Default::default()
        };
        assert_eq!(
            decode(bytes_of(&hdr)).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
        assert!(matches!(decode(&[1, 2, 3]), Err(DecodeError::Short { .. })));
    }
}
