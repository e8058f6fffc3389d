//! Finds where OpenSSL lives on the node and attaches the TLS uprobes
//! there: each `libssl.so.*` a process maps (plus the standard library
//! paths, so processes started later are covered from their first call),
//! and executables that link OpenSSL statically and export its symbols
//! (node). Files are told apart by (device, inode), so one file is never
//! probed twice however many paths lead to it.
//!
//! Processes using a TLS stack we cannot read (grpcio's BoringSSL, Go's
//! crypto/tls, rustls) are named once per executable and counted.

use std::{
    collections::HashSet,
    fs,
    num::NonZeroU32,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{UProbe, uprobe::UProbeScope},
};
use log::{debug, info, warn};

/// (program, symbol, is return probe).
const PROBES: [(&str, &str, bool); 9] = [
    ("ssl_set_fd", "SSL_set_fd", false),
    ("ssl_read", "SSL_read", false),
    ("ssl_read_ret", "SSL_read", true),
    ("ssl_write", "SSL_write", false),
    ("ssl_write_ret", "SSL_write", true),
    ("ssl_read_ex", "SSL_read_ex", false),
    ("ssl_read_ex_ret", "SSL_read_ex", true),
    ("ssl_write_ex", "SSL_write_ex", false),
    ("ssl_write_ex_ret", "SSL_write_ex", true),
];

/// Where distributions put the system OpenSSL.
const LIB_DIRS: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
];

/// Executables bigger than this are not searched for OpenSSL symbols.
const MAX_EXE_SCAN: u64 = 512 * 1024 * 1024;

#[derive(Default)]
pub struct TlsAttacher {
    /// `--pid`: probe only these processes (a uprobe fires in every process
    /// that runs the probed code, so without this a selected nginx would
    /// still tax every other OpenSSL user on the node, load generators
    /// included). Empty: every process.
    only: Vec<u32>,
    loaded: bool,
    /// (dev, ino) of files already probed, or known to have no OpenSSL.
    seen: HashSet<(u64, u64)>,
    /// (dev, ino) of executables reported as using an unsupported stack.
    unsupported: HashSet<(u64, u64)>,
    pub files_attached: u64,
    pub unsupported_executables: u64,
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Which of `needles` occur in the file. Streams it through a fixed buffer
/// (executables can be hundreds of MB; the agent's memory must not follow),
/// keeping an overlap so a needle split across reads is still found. Done
/// once per distinct executable.
fn file_contains(path: &Path, needles: &[&[u8]]) -> Vec<bool> {
    use std::io::Read;
    const CHUNK: usize = 1 << 20;
    let mut found = vec![false; needles.len()];
    let Ok(mut file) = fs::File::open(path) else {
        return found;
    };
    if file.metadata().map_or(true, |m| m.len() > MAX_EXE_SCAN) {
        return found;
    }
    let overlap = needles
        .iter()
        .map(|n| n.len())
        .max()
        .unwrap_or(1)
        .saturating_sub(1);
    let finders: Vec<_> = needles.iter().map(memchr::memmem::Finder::new).collect();
    let mut buf = vec![0u8; CHUNK + overlap];
    let mut kept = 0;
    loop {
        let n = match file.read(&mut buf[kept..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let filled = kept + n;
        for (f, hit) in finders.iter().zip(found.iter_mut()) {
            *hit = *hit || f.find(&buf[..filled]).is_some();
        }
        if found.iter().all(|&h| h) {
            break;
        }
        kept = overlap.min(filled);
        buf.copy_within(filled - kept..filled, 0);
    }
    found
}

impl TlsAttacher {
    /// An attacher for every process, or only `pids` when not empty.
    pub fn new(pids: &[u32]) -> Self {
        Self {
            only: pids.to_vec(),
            ..Self::default()
        }
    }

    /// Loads the uprobe programs. Failure disables TLS with one warning.
    pub fn load(&mut self, ebpf: &mut Ebpf) {
        for (name, _, _) in PROBES {
            let loaded = ebpf
                .program_mut(name)
                .ok_or_else(|| format!("program {name} missing"))
                .and_then(|p| <&mut UProbe>::try_from(p).map_err(|e| e.to_string()))
                .and_then(|p| p.load().map_err(|e| e.to_string()));
            if let Err(e) = loaded {
                warn!("TLS uprobes unavailable ({e}); lost: plaintext of HTTPS traffic");
                return;
            }
        }
        self.loaded = true;
    }

    /// Attaches to every OpenSSL the node has now.
    pub fn scan_all(&mut self, ebpf: &mut Ebpf) {
        if !self.loaded {
            return;
        }
        if !self.only.is_empty() {
            for pid in self.only.clone() {
                self.scan_process(ebpf, pid);
            }
            info!(
                "TLS: OpenSSL uprobes on {} file(s), for the selected pids only",
                self.files_attached
            );
            return;
        }
        for dir in LIB_DIRS {
            for name in ["libssl.so.3", "libssl.so.1.1"] {
                let path = Path::new(dir).join(name);
                if path.exists() {
                    self.attach_file(ebpf, &path, 0);
                }
            }
        }
        let Ok(procs) = fs::read_dir("/proc") else {
            return;
        };
        for entry in procs.flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            {
                self.scan_process(ebpf, pid);
            }
        }
        info!("TLS: OpenSSL uprobes on {} file(s)", self.files_attached);
    }

    /// Looks at one process: the libssl it maps, and its executable.
    pub fn scan_process(&mut self, ebpf: &mut Ebpf, pid: u32) {
        if !self.loaded
            || pid == std::process::id()
            || (!self.only.is_empty() && !self.only.contains(&pid))
        {
            return;
        }
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let mut grpc = false;
        for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)) {
            let name = path.rsplit('/').next().unwrap_or(path);
            if name.starts_with("libssl.so") {
                // The process's own view of the file (containers).
                self.attach_file(ebpf, &root.join(path.trim_start_matches('/')), pid);
            } else if name.contains("cygrpc") {
                grpc = true;
            }
        }
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let Some(id) = file_id(&exe) else {
            return;
        };
        if grpc {
            self.report_unsupported(
                id,
                pid,
                "grpcio (BoringSSL, statically linked without symbols)",
            );
        }
        if self.seen.contains(&id) {
            return;
        }
        let [ssl, go_tls, rustls]: [bool; 3] = file_contains(
            &exe,
            &[b"SSL_write\0", b"crypto/tls.(*Conn).Write", b"rustls"],
        )
        .try_into()
        .unwrap_or([false; 3]);
        if ssl {
            self.attach_file(ebpf, &exe, pid);
        } else {
            self.seen.insert(id);
            if go_tls {
                self.report_unsupported(id, pid, "Go crypto/tls");
            } else if rustls {
                self.report_unsupported(id, pid, "rustls");
            }
        }
    }

    fn report_unsupported(&mut self, id: (u64, u64), pid: u32, stack: &str) {
        // A process gone before we looked cannot be named: say nothing.
        let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) else {
            return;
        };
        if self.unsupported.insert(id) {
            self.unsupported_executables += 1;
            warn!(
                "{} (pid {pid}) uses {stack}: its HTTPS traffic cannot be decoded",
                exe.display()
            );
        }
    }

    /// Probes `path`: for every process, or (scoped by `--pid`) for `pid`.
    fn attach_file(&mut self, ebpf: &mut Ebpf, path: &Path, pid: u32) {
        let Some((dev, ino)) = file_id(path) else {
            return;
        };
        let scope = match NonZeroU32::new(pid).filter(|_| !self.only.is_empty()) {
            Some(p) => UProbeScope::OneProcess(p),
            None => UProbeScope::AllProcesses,
        };
        // Scoped probes are per (file, pid); unscoped ones per file.
        let key = if self.only.is_empty() {
            (dev, ino)
        } else {
            (dev ^ (u64::from(pid) << 40), ino)
        };
        if !self.seen.insert(key) {
            return;
        }
        let mut attached = 0;
        for (name, symbol, _) in PROBES {
            let Some(prog) = ebpf
                .program_mut(name)
                .and_then(|p| <&mut UProbe>::try_from(p).ok())
            else {
                continue;
            };
            match prog.attach(symbol, path, scope) {
                Ok(_) => attached += 1,
                // OpenSSL 1.1.0 has no _ex forms; other files lack some.
                Err(e) => debug!("uprobe {symbol} on {}: {e}", path.display()),
            }
        }
        if attached > 0 {
            self.files_attached += 1;
            info!("TLS: {attached} OpenSSL uprobes on {}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::file_contains;

    #[test]
    fn finds_needles_across_chunk_boundaries() {
        let dir = std::env::temp_dir().join(format!("wirespan-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("blob");
        // "SSL_write\0" straddles the 1 MiB read boundary.
        let mut data = vec![b'x'; (1 << 20) - 4];
        data.extend_from_slice(b"SSL_write\0");
        data.extend_from_slice(&vec![b'y'; 4096]);
        std::fs::write(&path, &data).unwrap();
        assert_eq!(
            file_contains(&path, &[b"SSL_write\0", b"rustls"]),
            [true, false]
        );
        assert_eq!(file_contains(&dir.join("missing"), &[b"a"]), [false]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
