//! What the agent knows about a traced process: read once from /proc when
//! the process is first seen (or execs), dropped when it exits.

use std::{collections::HashMap, fs, path::PathBuf, sync::Arc};

/// Longest command line kept (bytes).
const MAX_CMDLINE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// /proc/PID/exe, when readable.
    pub exe_path: Option<PathBuf>,
    /// Executable file name, or the kernel's comm when exe is unreadable.
    pub exe_name: String,
    /// The process's own OTEL_SERVICE_NAME, else `exe_name`.
    pub service_name: String,
    pub command_line: String,
}

impl ProcessInfo {
    /// Reads /proc/PID. Never fails: a process that already exited gets
    /// a placeholder name, so its spans are still reported.
    pub fn read(pid: u32) -> Self {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let exe_path = fs::read_link(dir.join("exe")).ok();
        let comm = fs::read_to_string(dir.join("comm"))
            .ok()
            .map(|s| s.trim_end().to_string());
        let exe_name = exe_path
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
            .or(comm)
            .unwrap_or_else(|| format!("pid-{pid}"));
        let service_name = fs::read(dir.join("environ"))
            .ok()
            .and_then(|env| env_var(&env, b"OTEL_SERVICE_NAME"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| exe_name.clone());
        let command_line = fs::read(dir.join("cmdline"))
            .map(|raw| {
                let raw = &raw[..raw.len().min(MAX_CMDLINE)];
                String::from_utf8_lossy(raw)
                    .replace('\0', " ")
                    .trim_end()
                    .to_string()
            })
            .unwrap_or_default();
        Self {
            pid,
            exe_path,
            exe_name,
            service_name,
            command_line,
        }
    }
}

/// Finds `NAME=value` in a NUL-separated environment block.
fn env_var(environ: &[u8], name: &[u8]) -> Option<String> {
    environ.split(|&b| b == 0).find_map(|kv| {
        let rest = kv.strip_prefix(name)?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(rest).into_owned())
    })
}

/// Cache of [`ProcessInfo`] by pid, bounded: when full it is cleared and
/// refilled from /proc, which is cheap compared with unbounded growth.
pub struct ProcessCache {
    map: HashMap<u32, Arc<ProcessInfo>>,
    cap: usize,
    pub evictions: u64,
}

impl ProcessCache {
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            cap,
            evictions: 0,
        }
    }

    pub fn get(&mut self, pid: u32) -> Arc<ProcessInfo> {
        if let Some(p) = self.map.get(&pid) {
            return p.clone();
        }
        if self.map.len() >= self.cap {
            self.evictions += self.map.len() as u64;
            self.map.clear();
        }
        let info = Arc::new(ProcessInfo::read(pid));
        self.map.insert(pid, info.clone());
        info
    }

    /// The process exec'd: its name and environment changed.
    pub fn refresh(&mut self, pid: u32) -> Arc<ProcessInfo> {
        self.map.remove(&pid);
        self.get(pid)
    }

    pub fn remove(&mut self, pid: u32) {
        self.map.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = ProcessInfo::read(std::process::id());
        assert!(me.exe_path.is_some());
        assert!(!me.exe_name.is_empty());
        assert!(!me.command_line.is_empty());
    }

    #[test]
    fn dead_pid_gets_placeholder() {
        let p = ProcessInfo::read(u32::MAX - 1);
        assert_eq!(p.exe_name, format!("pid-{}", u32::MAX - 1));
        assert_eq!(p.service_name, p.exe_name);
    }

    #[test]
    fn env_lookup() {
        let env = b"A=1\0OTEL_SERVICE_NAME=checkout\0OTEL_SERVICE_NAMEX=no\0";
        assert_eq!(
            env_var(env, b"OTEL_SERVICE_NAME").as_deref(),
            Some("checkout")
        );
        assert_eq!(env_var(env, b"B"), None);
    }
}
