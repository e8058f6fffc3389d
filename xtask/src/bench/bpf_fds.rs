//! A process's own BPF objects: its open `bpf-prog` and `bpf-map` fds and
//! what `/proc/PID/fdinfo` says of each (ids, types, sizes, run counters).
//! Exactly that process's objects, whatever else is loaded; bpftool's own
//! `pids` need a bpftool built with BPF skeletons.

use std::fs;

use anyhow::{Context, Result};

/// Which kind of BPF object an fd refers to.
#[derive(Clone, Copy)]
pub enum Kind {
    Prog,
    Map,
}

/// The fdinfo text of each of `pid`'s open fds of `kind`.
pub fn fdinfos(pid: u32, kind: Kind) -> Result<Vec<String>> {
    let link = match kind {
        Kind::Prog => "anon_inode:bpf-prog",
        Kind::Map => "anon_inode:bpf-map",
    };
    let dir = format!("/proc/{pid}/fd");
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(entry) = entry else { continue };
        if !fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy() == link) {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        // The fd may close between the two reads: skip it then.
        if let Ok(text) = fs::read_to_string(&info) {
            out.push(text);
        }
    }
    Ok(out)
}

/// A numeric `key:\tvalue` field of an fdinfo text.
pub fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.trim().parse::<u64>().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_fields_are_read() {
        let t = "pos:\t0\nflags:\t02000002\nmap_type:\t9\nkey_size:\t8\nmax_entries:\t65536\n\
                 map_id:\t412\n";
        assert_eq!(field(t, "map_type"), Some(9));
        assert_eq!(field(t, "max_entries"), Some(65536));
        assert_eq!(field(t, "map_id"), Some(412));
        assert_eq!(field(t, "map_flags"), None);
    }
}
