//! What the agent knows about a traced process: read once from /proc when
//! the process is first seen (or execs), dropped when it exits. It becomes
//! the process's OpenTelemetry Resource.

use std::{
    fs,
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use crate::{inthash::IntMap, otel_env::parse::kv_list_lenient};

/// Longest command line kept (bytes).
const MAX_CMDLINE: usize = 1024;
/// Longest OTEL_RESOURCE_ATTRIBUTES value read from a process (bytes).
const MAX_RESOURCE_ATTRS: usize = 4096;
/// The semantic conventions' namespace for UUID v5 `service.instance.id`s.
const INSTANCE_ID_NAMESPACE: uuid::Uuid = uuid::uuid!("4d63009a-8d0f-11ee-aad7-4c796ed8e320");

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// /proc/PID/exe, when readable.
    pub exe_path: Option<PathBuf>,
    /// Executable file name, or the kernel's comm when exe is unreadable.
    pub exe_name: String,
    /// `service.name`: the process's own OTEL_SERVICE_NAME, else the
    /// `service.name` of its own OTEL_RESOURCE_ATTRIBUTES, else the agent's,
    /// else `exe_name`.
    pub service_name: String,
    pub command_line: String,
    /// `service.instance.id`: a UUID v5 of host, pid and the process's start
    /// time, so it is stable for the life of the process (and across agent
    /// restarts) and differs for a new process that reuses the pid.
    pub instance_id: String,
    /// The process's own OTEL_RESOURCE_ATTRIBUTES (entries that do not
    /// parse are skipped).
    pub resource_attributes: Vec<(String, String)>,
}

/// The node's host name, read once.
pub fn host_name() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    })
}

static AGENT_ATTRS: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// Sets the agent's own OTEL_RESOURCE_ATTRIBUTES, once, before capture
/// starts. They are global because every resource carries them and the
/// process cache reads /proc deep inside the connection table.
pub fn set_agent_resource_attributes(attrs: Vec<(String, String)>) {
    let _ = AGENT_ATTRS.set(attrs);
}

pub fn agent_resource_attributes() -> &'static [(String, String)] {
    AGENT_ATTRS.get().map(Vec::as_slice).unwrap_or_default()
}

fn attr<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// The process's start time in clock ticks after boot (field 22 of
/// /proc/PID/stat), 0 when unreadable.
fn start_ticks(stat: &str) -> u64 {
    // The comm field (2) may hold spaces and parentheses: skip past its
    // last `)`; field 3 follows, so the start time is the 20th after it.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

fn instance_id(host: &str, pid: u32, start: u64) -> String {
    let name = format!("{host}:{pid}:{start}");
    uuid::Uuid::new_v5(&INSTANCE_ID_NAMESPACE, name.as_bytes()).to_string()
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
        let environ = fs::read(dir.join("environ")).unwrap_or_default();
        let resource_attributes = env_var(&environ, b"OTEL_RESOURCE_ATTRIBUTES")
            .map(|mut v| {
                v.truncate(v.floor_char_boundary(MAX_RESOURCE_ATTRS));
                kv_list_lenient(&v)
            })
            .unwrap_or_default();
        let service_name = env_var(&environ, b"OTEL_SERVICE_NAME")
            .filter(|s| !s.is_empty())
            .or_else(|| attr(&resource_attributes, "service.name").map(str::to_string))
            .or_else(|| attr(agent_resource_attributes(), "service.name").map(str::to_string))
            .unwrap_or_else(|| exe_name.clone());
        let start = fs::read_to_string(dir.join("stat"))
            .map(|s| start_ticks(&s))
            .unwrap_or(0);
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
            instance_id: instance_id(host_name(), pid, start),
            resource_attributes,
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
    map: IntMap<u32, Arc<ProcessInfo>>,
    cap: usize,
    pub evictions: u64,
}

impl ProcessCache {
    pub fn new(cap: usize) -> Self {
        Self {
            map: IntMap::default(),
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

    /// The process exec'd `filename` (from the kernel's exec event). When
    /// it is already gone from /proc (a short-lived client), the file name
    /// still names it, and `--exe-path` can still match it.
    pub fn exec(&mut self, pid: u32, filename: &[u8]) -> Arc<ProcessInfo> {
        self.map.remove(&pid);
        let mut info = ProcessInfo::read(pid);
        if info.exe_path.is_none() && !filename.is_empty() {
            let path = PathBuf::from(String::from_utf8_lossy(filename).into_owned());
            if let Some(name) = path.file_name() {
                let name = name.to_string_lossy().into_owned();
                if info.service_name == info.exe_name {
                    info.service_name = name.clone();
                }
                info.exe_name = name;
            }
            info.exe_path = Some(path);
        }
        if self.map.len() >= self.cap {
            self.evictions += self.map.len() as u64;
            self.map.clear();
        }
        let info = Arc::new(info);
        self.map.insert(pid, info.clone());
        info
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
    fn start_time_and_instance_id() {
        let stat = "42 (a) b) c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_ticks(stat), 987654);
        assert_eq!(start_ticks("garbage"), 0);
        let id = instance_id("h", 42, 987654);
        assert_eq!(id, instance_id("h", 42, 987654));
        assert_ne!(id, instance_id("h", 42, 987655));
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 5);
        let me = ProcessInfo::read(std::process::id());
        assert_eq!(
            me.instance_id,
            ProcessInfo::read(std::process::id()).instance_id
        );
    }

    #[test]
    fn own_resource_attributes_name_the_service() {
        let attrs = kv_list_lenient("service.name=checkout,junk,team=a%2Cb");
        assert_eq!(attr(&attrs, "service.name"), Some("checkout"));
        assert_eq!(attr(&attrs, "team"), Some("a,b"));
        assert_eq!(attr(&attrs, "junk"), None);
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
