//! Which processes and connections are traced (`--pid`, `--exe-path`,
//! `--open-ports`). Kinds combine with AND; values within a kind with OR.

use crate::{config::PortList, process::ProcessInfo};

#[derive(Debug, Default, Clone)]
pub struct Selector {
    pub pids: Vec<u32>,
    pub exe_path: Option<glob::Pattern>,
    pub open_ports: Option<PortList>,
}

impl Selector {
    /// Whether a process is traced at all.
    pub fn process(&self, p: &ProcessInfo) -> bool {
        if !self.pids.is_empty() && !self.pids.contains(&p.pid) {
            return false;
        }
        if let Some(glob) = &self.exe_path {
            let Some(path) = &p.exe_path else {
                return false;
            };
            if !glob.matches_path(path) {
                return false;
            }
        }
        true
    }

    /// Whether a connection of a traced process is traced, given its
    /// server-side port (None while unknown: traced until proven otherwise).
    pub fn server_port(&self, port: Option<u16>) -> bool {
        match (&self.open_ports, port) {
            (Some(list), Some(port)) => list.contains(port),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, exe: &str) -> ProcessInfo {
        ProcessInfo {
            pid,
            exe_path: Some(exe.into()),
            exe_name: exe.rsplit('/').next().unwrap_or(exe).into(),
            service_name: "s".into(),
            ..Default::default()
        }
    }

    #[test]
    fn kinds_and_values_combine() {
        let mut s = Selector::default();
        assert!(s.process(&proc(1, "/usr/bin/curl")));
        s.pids = vec![1, 2];
        assert!(s.process(&proc(2, "/usr/bin/curl")));
        assert!(!s.process(&proc(3, "/usr/bin/curl")));
        s.exe_path = Some(glob::Pattern::new("*/python3*").unwrap());
        assert!(!s.process(&proc(2, "/usr/bin/curl")));
        assert!(s.process(&proc(2, "/usr/bin/python3.11")));
        s.open_ports = Some("8000-8080".parse().unwrap());
        assert!(s.server_port(Some(8000)) && !s.server_port(Some(9000)) && s.server_port(None));
    }
}
