//! What the running kernel offers, probed once at start. The agent picks
//! its strategy from this and says so in one line; what a kernel cannot do
//! is refused (below the minimum) or disabled with a warning.

use std::{fmt, path::Path};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
};

use crate::loader::has_tracepoint;

/// The kernel's release string (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[derive(Clone, Debug)]
pub struct KernelFeatures {
    pub release: String,
    /// /sys/kernel/btf/vmlinux: struct offsets for the 4-tuple and the
    /// file-table walk.
    pub btf: bool,
    /// BPF_MAP_TYPE_RINGBUF (Linux 5.8).
    pub ring_buffer: bool,
    /// BPF_PROG_TYPE_TRACEPOINT.
    pub tracepoint_programs: bool,
    /// sock:sock_send_length and sock:sock_recv_length (Linux 6.2).
    pub sock_length_tracepoints: bool,
}

/// Why the agent cannot run on this kernel at all.
#[derive(Debug, thiserror::Error)]
pub enum Unsupported {
    #[error(
        "kernel {0} has no BPF ring buffer: wirespan needs Linux 5.8 or newer with BTF \
         (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF=y)"
    )]
    NoRingBuffer(String),
    #[error(
        "kernel {0} has no BTF (/sys/kernel/btf/vmlinux): wirespan needs Linux 5.8 or newer \
         built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf(String),
    #[error("kernel {0} cannot load BPF tracepoint programs")]
    NoTracepoints(String),
}

impl KernelFeatures {
    /// Probes the running kernel (needs the privileges the agent runs with,
    /// and tracefs mounted for the tracepoint checks).
    pub fn probe() -> Self {
        Self {
            release: kernel_release(),
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            ring_buffer: is_map_supported(MapType::RingBuf).unwrap_or(false),
            tracepoint_programs: is_program_supported(ProgramType::TracePoint).unwrap_or(false),
            sock_length_tracepoints: has_tracepoint("sock", "sock_send_length")
                && has_tracepoint("sock", "sock_recv_length"),
        }
    }

    /// Refuses kernels below the supported minimum (5.8 with BTF).
    pub fn check_minimum(&self) -> Result<(), Unsupported> {
        if !self.tracepoint_programs {
            return Err(Unsupported::NoTracepoints(self.release.clone()));
        }
        if !self.ring_buffer {
            return Err(Unsupported::NoRingBuffer(self.release.clone()));
        }
        if !self.btf {
            return Err(Unsupported::NoBtf(self.release.clone()));
        }
        Ok(())
    }
}

impl fmt::Display for KernelFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "kernel {}: BTF {}, ring buffer {}, sock_*_length tracepoints {}",
            self.release,
            yes(self.btf),
            yes(self.ring_buffer),
            yes(self.sock_length_tracepoints)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features() -> KernelFeatures {
        KernelFeatures {
            release: "5.4.0".into(),
            btf: true,
            ring_buffer: true,
            tracepoint_programs: true,
            sock_length_tracepoints: false,
        }
    }

    #[test]
    fn minimum_is_ring_buffer_and_btf() {
        assert!(features().check_minimum().is_ok());
        let no_rb = KernelFeatures {
            ring_buffer: false,
            ..features()
        };
        assert!(
            no_rb
                .check_minimum()
                .unwrap_err()
                .to_string()
                .contains("5.8")
        );
        let no_btf = KernelFeatures {
            btf: false,
            ..features()
        };
        assert!(
            no_btf
                .check_minimum()
                .unwrap_err()
                .to_string()
                .contains("BTF")
        );
    }

    #[test]
    fn release_is_read() {
        assert!(!kernel_release().is_empty());
    }
}
