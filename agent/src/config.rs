//! Command-line flags (each also an environment variable) and their checks.

use std::{fmt, str::FromStr};

use crate::conn::DEFAULT_SKIP_BODIES_FROM;
use clap::{Parser, ValueEnum};
use wirespan_common::config::MAX_CAPTURE;

/// wirespan traces the HTTP traffic of unmodified services from the kernel
/// and turns it into OpenTelemetry spans.
///
/// With no selector it traces every process on the node. Selectors narrow
/// that: a process must satisfy every kind of selector given, and values
/// within one kind are alternatives.
#[derive(Debug, Parser)]
#[command(name = "wirespan", version, about, long_about)]
pub struct Cli {
    /// Span output on stdout: `text` (one line per span), `json` (one
    /// OTLP/JSON ExportTraceServiceRequest per line) or `off`. The default
    /// is `text`, or `off` when an OTLP endpoint is configured; both can
    /// run at once.
    #[arg(long, env = "WIRESPAN_PRINT", value_enum)]
    pub print: Option<PrintMode>,

    /// Trace only these process ids (repeat the flag or separate with commas).
    #[arg(
        long = "pid",
        env = "WIRESPAN_PID",
        value_delimiter = ',',
        value_name = "PID"
    )]
    pub pids: Vec<u32>,

    /// Trace only processes whose executable path (/proc/PID/exe) matches
    /// this glob, e.g. `*/python3*` or `/usr/sbin/nginx`.
    #[arg(long, env = "WIRESPAN_EXE_PATH", value_name = "GLOB")]
    pub exe_path: Option<glob::Pattern>,

    /// Trace only connections whose server port is in this list, e.g.
    /// `8080,9000-9100`. The server port is the local port of a connection
    /// a process accepted, and the remote port of one it opened.
    #[arg(long, env = "WIRESPAN_OPEN_PORTS", value_name = "LIST")]
    pub open_ports: Option<PortList>,

    /// Payload bytes captured per syscall (1 to 4096). HTTP heads longer
    /// than this are parsed as far as they were captured.
    #[arg(long, env = "WIRESPAN_CAPTURE_BYTES", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=MAX_CAPTURE as i64))]
    pub capture_bytes: u32,

    /// Payload bytes captured per syscall whose bytes start an HTTP/1
    /// message (1 to 4096): long heads and pipelined requests need more
    /// than `--capture-bytes`; bodies and other protocols do not.
    #[arg(long, env = "WIRESPAN_CAPTURE_HEAD_BYTES", default_value_t = MAX_CAPTURE as u32,
          value_parser = clap::value_parser!(u32).range(1..=MAX_CAPTURE as i64))]
    pub capture_head_bytes: u32,

    /// A Content-Length body with at least this many bytes still to come
    /// has its middle sent by the kernel as lengths only: the parser frames
    /// it by counting, and its bytes need not be copied. 0: never.
    #[arg(long, env = "WIRESPAN_SKIP_BODIES_FROM", default_value_t = DEFAULT_SKIP_BODIES_FROM,
          value_name = "BYTES")]
    pub skip_bodies_from: u64,

    /// How the kernel side tells TCP socket fds from files and pipes:
    /// `sock-tracepoints` (the `sock:sock_*_length` tracepoints, Linux
    /// 6.2+), `fd-table` (a walk of the task's file table with offsets from
    /// kernel BTF: the fallback for older kernels), or `auto` (the first
    /// that this kernel supports).
    #[arg(long, env = "WIRESPAN_SOCKET_CLASSIFIER", value_enum, default_value_t = ClassifierChoice::Auto)]
    pub socket_classifier: ClassifierChoice,

    /// Connections tracked at once; the least recently used are evicted
    /// (and counted) beyond this.
    #[arg(long, env = "WIRESPAN_MAX_CONNECTIONS", default_value_t = 16384,
          value_parser = clap::value_parser!(u32).range(16..))]
    pub max_connections: u32,

    /// How trace context crosses the wire between traced services:
    /// `tcp-option` puts the client span's trace id and span id in an
    /// experimental TCP header option (sock_ops; no payload byte changes,
    /// any protocol, TLS too; receivers without the agent ignore it), read
    /// by the agent on the receiving node; `none` links only what one agent
    /// sees (same node, same thread).
    #[arg(long, env = "WIRESPAN_PROPAGATION", value_enum, default_value_t = Propagation::TcpOption)]
    pub propagation: Propagation,

    /// Also write a W3C `traceparent` header into outgoing HTTP/1 requests
    /// on connections to these destination ports (e.g. `80,8080,9000-9100`),
    /// for receivers that do not run the agent. Off by default: sockets
    /// chosen for it read through the kernel's sockmap path, under which a
    /// blocking `recv()` right after a large send can fail with EAGAIN
    /// (see README). Requests that already carry a `traceparent` are left
    /// alone. Only processes in `--cgroup`.
    #[arg(long, env = "WIRESPAN_INJECT_TRACEPARENT", value_name = "PORTS")]
    pub inject_traceparent: Option<PortList>,

    /// With `--inject-traceparent`: only connections whose destination
    /// address is in one of these networks (e.g. `10.0.0.0/8,fd00::/8`; an
    /// IPv4 network also matches IPv4 peers of dual-stack sockets). Default:
    /// any destination.
    #[arg(
        long,
        env = "WIRESPAN_INJECT_CIDRS",
        value_name = "CIDRS",
        requires = "inject_traceparent"
    )]
    pub inject_cidrs: Option<crate::cidr::CidrList>,

    /// The cgroup v2 directory whose processes get the TCP option (default:
    /// the root of the cgroup v2 hierarchy, i.e. the whole node). Outgoing
    /// connections of processes in it have a 28-byte smaller MSS, the room
    /// the option needs on a full segment.
    #[arg(long, env = "WIRESPAN_CGROUP", value_name = "DIR")]
    pub cgroup: Option<std::path::PathBuf>,

    /// Size of the kernel-to-agent ring buffer in bytes: a power of two
    /// and a multiple of the page size. Events that find it full are lost
    /// and counted (`ringbuf_full`); a bigger buffer absorbs longer bursts
    /// at the cost of locked kernel memory.
    #[arg(long, env = "WIRESPAN_RING_BUFFER_BYTES", value_name = "BYTES",
          default_value_t = wirespan_common::maps::EVENTS_BYTES,
          value_parser = parse_ring_buffer_bytes)]
    pub ring_buffer_bytes: u32,

    /// Serve the agent's own metrics (Prometheus text format) on
    /// `GET /metrics`, with `/healthz` and `/readyz`, at this address, e.g.
    /// `127.0.0.1:9464` or `0.0.0.0:9464`. Port 0 picks a free port (logged
    /// on stderr). Off by default.
    #[arg(long, env = "WIRESPAN_METRICS_ADDR", value_name = "ADDR:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Log level for the agent's own messages on stderr (error, warn, info,
    /// debug, trace).
    #[arg(long, env = "WIRESPAN_LOG_LEVEL", default_value = "info")]
    pub log_level: log::LevelFilter,

    #[command(flatten)]
    pub otlp: crate::otel_env::OtlpArgs,
}

impl Cli {
    /// `--print` as given, else `text` unless spans go out over OTLP.
    pub fn print_mode(&self, otlp_enabled: bool) -> PrintMode {
        self.print.unwrap_or(if otlp_enabled {
            PrintMode::Off
        } else {
            PrintMode::Text
        })
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(page).unwrap_or(4096)
}

/// The kernel takes a ring buffer of a power of two pages only.
fn parse_ring_buffer_bytes(s: &str) -> Result<u32, String> {
    let page = page_size();
    let hint = format!(
        "must be a power of two and a multiple of the page size ({page}), e.g. {} or {}",
        page * 2,
        wirespan_common::maps::EVENTS_BYTES
    );
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of bytes; it {hint}"))?;
    if !n.is_power_of_two() || !n.is_multiple_of(page) {
        return Err(format!("{n} bytes: the ring buffer size {hint}"));
    }
    Ok(n)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClassifierChoice {
    Auto,
    SockTracepoints,
    FdTable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Propagation {
    TcpOption,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrintMode {
    Text,
    Json,
    Off,
}

/// A set of TCP ports given as `80,8080,9000-9100`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortList(Vec<(u16, u16)>);

impl PortList {
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&port))
    }

    /// Every port in the list, ranges expanded.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().flat_map(|&(lo, hi)| lo..=hi)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct PortListError(String);

impl fmt::Display for PortList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            if lo == hi {
                write!(f, "{sep}{lo}")?;
            } else {
                write!(f, "{sep}{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for PortListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid port list: {} (expected e.g. 80,8080,9000-9100)",
            self.0
        )
    }
}

impl std::error::Error for PortListError {}

impl FromStr for PortList {
    type Err = PortListError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str| -> Result<u16, PortListError> {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| PortListError(format!("`{p}` is not a port")))
        };
        let mut out = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let range = match part.split_once('-') {
                Some((lo, hi)) => (port(lo)?, port(hi)?),
                None => (port(part)?, port(part)?),
            };
            if range.0 > range.1 {
                return Err(PortListError(format!("`{part}` is an empty range")));
            }
            out.push(range);
        }
        if out.is_empty() {
            return Err(PortListError("empty".into()));
        }
        Ok(PortList(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists() {
        let l: PortList = "80, 8080,9000-9100".parse().unwrap();
        assert!(l.contains(80) && l.contains(9050) && l.contains(9100));
        assert!(!l.contains(81) && !l.contains(8999));
        assert!("".parse::<PortList>().is_err());
        assert!("0".parse::<PortList>().is_err());
        assert!("9-1".parse::<PortList>().is_err());
        assert!("http".parse::<PortList>().is_err());
        assert!("70000".parse::<PortList>().is_err());
    }

    #[test]
    fn printer_defaults_off_when_otlp_is_on() {
        let cli = Cli::try_parse_from(["wirespan"]).unwrap();
        assert_eq!(cli.print_mode(false), PrintMode::Text);
        assert_eq!(cli.print_mode(true), PrintMode::Off);
        let cli = Cli::try_parse_from(["wirespan", "--print", "json"]).unwrap();
        assert_eq!(cli.print_mode(true), PrintMode::Json);
    }

    #[test]
    fn ring_buffer_sizes() {
        let page = page_size();
        assert_eq!(parse_ring_buffer_bytes(&page.to_string()), Ok(page));
        assert_eq!(parse_ring_buffer_bytes("8388608"), Ok(8 << 20));
        for bad in [
            "0",
            "1000",
            &(page * 3).to_string(),
            &(page / 2).to_string(),
            "8M",
            "-4096",
        ] {
            assert!(parse_ring_buffer_bytes(bad).is_err(), "{bad} accepted");
        }
        let cli = Cli::try_parse_from(["wirespan"]).unwrap();
        assert_eq!(cli.ring_buffer_bytes, wirespan_common::maps::EVENTS_BYTES);
        assert!(cli.metrics_addr.is_none());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
